#!/usr/bin/env bash
# ephemera demo: two workloads, orders and billing, each behind an ephemera
# sidecar (real Envoy + the Wasm filter + the shim). Shows an accepted call, a
# rejected one, an outbound call carrying a minted token, and a revocation
# taking effect without a restart. Everything runs on 127.0.0.1 and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "building ephemera (shim + Envoy filter)"
cargo build -q --release -p ephemera-shim
cargo build -q --release -p ephemera-envoy --target wasm32-wasip1
E="$PWD/target/release/ephemera"
WASM="$PWD/target/wasm32-wasip1/release/ephemera_envoy.wasm"

work="$PWD/.work/demo"
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

say "provisioning identities (spiffile layout) in $work/root"
"$E" identity init "$work/root" --trust-domain example.org
"$E" identity add "$work/root" orders
"$E" identity add "$work/root" billing

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BILLING_APP=$(port); ORDERS_APP=$(port); BILLING_IN=$(port); ORDERS_IN=$(port); ORDERS_OUT=$(port); BAO=$(port)

say "starting OpenBao (dev server) for Identity-Per-Transaction"
bao server -dev -dev-root-token-id=demo-root -dev-listen-address="127.0.0.1:$BAO" > "$work/openbao.log" 2>&1 & pids+=($!)
export BAO_ADDR="http://127.0.0.1:$BAO" BAO_TOKEN=demo-root
for _ in $(seq 100); do curl -sf "$BAO_ADDR/v1/sys/health" >/dev/null && break; sleep 0.1; done
# Transaction tokens come from a token role; the shim's own token may only
# manage ephemera-* policies, create tokens through that role, and revoke.
bao write -f auth/token/roles/ephemera allowed_policies_glob='ephemera-*' orphan=true renewable=false token_no_default_policy=true >/dev/null
cat > "$work/shim-policy.hcl" <<'HCL'
path "sys/policies/acl/ephemera-*" { capabilities = ["create", "update", "delete"] }
path "auth/token/create/ephemera" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
HCL
bao policy write ephemera-shim "$work/shim-policy.hcl" >/dev/null
bao token create -policy=ephemera-shim -no-default-policy -ttl=1h -field=token > "$work/shim-token"
bao kv put secret/billing/db password=demo-db-password >/dev/null
bao kv put secret/billing/payroll password=demo-payroll-password >/dev/null
# The ledger's signing key lives outside the ledger's directory.
mkdir -p "$work/keys" "$work/audit"
"$E" ledger keygen "$work/keys/ledger.key" "$work/keys/ledger.pub" >/dev/null
cat > "$work/ipt.yaml" <<YAML
ledger: { path: "$work/audit/ledger.jsonl", signing_key_file: "$work/keys/ledger.key" }
brokers:
  vault: { kind: openbao, address: "$BAO_ADDR", token_file: "$work/shim-token", ttl_secs: 60, num_uses: 3 }
policy:
  - { callers: ["spiffe://example.org/orders"], resources: ["secret/data/billing/*"], actions: [read], broker: vault }
YAML

python3 tests/peers/echo_app.py "$BILLING_APP" > "$work/billing-app.log" 2>&1 & pids+=($!)
python3 tests/peers/echo_app.py "$ORDERS_APP" > "$work/orders-app.log" 2>&1 & pids+=($!)

cat > "$work/billing.yaml" <<YAML
inbound:
  unauthenticated: ["/healthz"]
  routes:
    - path: /invoices/*
      allow: ["spiffe://example.org/orders"]
    - path: /vault/*
      allow: ["spiffe://example.org/*"]
  transactions:
    - path: /vault/{name}
      resource: secret/data/billing/{name}
      broker: vault
      credential_headers: { token: x-vault-token }
YAML
cat > "$work/orders.yaml" <<YAML
outbound:
  destinations:
    - { host: billing, address: "127.0.0.1:$BILLING_IN", spiffe_id: "spiffe://example.org/billing" }
YAML

start_sidecar() { # name config inbound app [outbound] [extra args...]
  local name=$1 config=$2 inbound=$3 app=$4 outbound=${5:-}
  shift 5 2>/dev/null || shift $#
  local extra=("$@")
  (
    eval "$("$E" identity env "$work/root" "$name")"
    args=(sidecar --app "127.0.0.1:$app" --inbound "127.0.0.1:$inbound" --config "$config" --wasm "$WASM")
    [ -n "$outbound" ] && args+=(--outbound "127.0.0.1:$outbound")
    exec "$E" "${args[@]}" "${extra[@]}"
  ) > "$work/$name-sidecar.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    grep -q "ready" "$work/$name-sidecar.log" && { grep "ready" "$work/$name-sidecar.log"; return; }
    sleep 0.1
  done
  echo "sidecar $name did not start:"; cat "$work/$name-sidecar.log"; exit 1
}
say "starting the billing sidecar (inbound) and the orders sidecar (outbound)"
start_sidecar billing "$work/billing.yaml" "$BILLING_IN" "$BILLING_APP" "" --ipt-config "$work/ipt.yaml"
start_sidecar orders "$work/orders.yaml" "$ORDERS_IN" "$ORDERS_APP" "$ORDERS_OUT"

as_orders() { (eval "$("$E" identity env "$work/root" orders)"; "$E" "$@"); }
TOKEN=$(as_orders token mint --audience spiffe://example.org/billing --ttl 300)
show() { # curl args...: prints status and what the app saw as caller
  local body status
  body=$(curl -s -w '\n%{http_code}' "$@")
  status=${body##*$'\n'}; body=${body%$'\n'*}
  printf '   -> HTTP %s' "$status"
  if [ "$status" = 200 ]; then
    printf ', the app saw x-ephemera-caller: %s' "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["headers"].get("x-ephemera-caller"))' "$body")"
  fi
  echo
}

say "1. orders calls billing with a JWT-SVID minted for billing"
echo "   curl -H 'authorization: Bearer <token>' -H 'x-ephemera-caller: spiffe://example.org/admin' http://127.0.0.1:$BILLING_IN/invoices/42"
show -H "authorization: Bearer $TOKEN" -H "x-ephemera-caller: spiffe://example.org/admin" "http://127.0.0.1:$BILLING_IN/invoices/42"

say "2. calls that are rejected"
echo "   no token:"; show "http://127.0.0.1:$BILLING_IN/invoices/42"
WRONG=$(as_orders token mint --audience spiffe://example.org/somebody-else)
echo "   a token minted for another audience:"; show -H "authorization: Bearer $WRONG" "http://127.0.0.1:$BILLING_IN/invoices/42"

say "3. the orders app calls billing through its outbound sidecar, carrying no token itself"
echo "   curl -H 'host: billing' http://127.0.0.1:$ORDERS_OUT/invoices/7"
show -H "host: billing" "http://127.0.0.1:$ORDERS_OUT/invoices/7"

say "4. Identity-Per-Transaction: a credential for exactly one OpenBao path, for one request"
echo "   curl -H 'authorization: Bearer <token>' http://127.0.0.1:$BILLING_IN/vault/db"
body=$(curl -s -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$BILLING_IN/vault/db")
VT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["headers"]["x-vault-token"])' "$body")
echo "   -> the app received x-vault-token: ${VT:0:6}... (its policy: read secret/data/billing/db, nothing else)"
sleep 0.3
# Asked with the root token (which spends none of the token's uses): a
# revoked token is one OpenBao no longer knows.
lookup=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Vault-Token: $BAO_TOKEN" -d "{\"token\":\"$VT\"}" "$BAO_ADDR/v1/auth/token/lookup")
echo "   after the request: OpenBao looks the token up -> HTTP $lookup ($( [ "$lookup" = 200 ] && echo 'STILL ALIVE' || echo 'revoked when the transaction closed'))"
echo "   a caller the route admits but the shim's IPT policy does not (billing itself):"
SELF=$( (eval "$("$E" identity env "$work/root" billing)"; "$E" token mint --audience spiffe://example.org/billing) )
echo "   -> HTTP $(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $SELF" "http://127.0.0.1:$BILLING_IN/vault/db")"
echo "   the audit ledger (hash-chained; ephemera ledger tail / verify):"
"$E" ledger tail "$work/audit/ledger.jsonl" | sed 's/^/   /'
"$E" ledger verify "$work/audit/ledger.jsonl" --public-key "$work/keys/ledger.pub" | sed 's/^/   /'

say "5. revocation: ephemera identity remove orders"
"$E" identity remove "$work/root" orders >/dev/null
start=$(date +%s%N)
while [ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$BILLING_IN/invoices/42")" != 401 ]; do sleep 0.02; done
echo "   the same token is refused (401) $(( ($(date +%s%N) - start) / 1000000 )) ms after removal, without a restart"

say "stats of billing's filter (Envoy admin /stats)"
# Envoy's admin is a pipe only the sidecar's user can open (mode 0600).
admin=$(grep -o 'admin unix:[^ ]*' "$work/billing-sidecar.log" | cut -d: -f2-)
curl -s --unix-socket "$admin" "http://localhost/stats?filter=%5Ewasmcustom" | grep -v ': 0$' | sed 's/^/   /'
say "done; stopping everything"
