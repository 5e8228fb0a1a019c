#!/usr/bin/env bash
# Side-by-side cost in real Envoy (one worker): no filter, Envoy's native
# jwt_authn, and ephemera inbound (native crypto / pure Rust, with and without
# its verified-token cache); then ephemera outbound minting a token per
# request (native `sign` in the filter) and reusing one per audience. Same
# token, same direct 200 response, wrk load. Prints req/s, Envoy CPU µs per
# request, and the req/s ratio to jwt_authn with the same caching (no cache
# vs no cache, cache vs cache), outbound to no filter.
#   usage: [VARIANTS="none ephemera-out-mint …"] [WASM=other.wasm] tests/bench/envoy_bench.sh [SECONDS]
#          (default 5 s per variant; the ratios need their base variant in the run)
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/setup.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
export PATH="$PWD/.venv/bin:$PATH"
secs=${1:-5}
cargo build -q --release -p ephemera-shim
cargo build -q --release -p ephemera-envoy --target wasm32-wasip1
E="$PWD/target/release/ephemera"
WASM=${WASM:-"$PWD/target/wasm32-wasip1/release/ephemera_envoy.wasm"}
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$E" identity init "$work/root" --trust-domain example.org >/dev/null
"$E" identity add "$work/root" orders >/dev/null
"$E" identity add "$work/root" billing >/dev/null
SHIM="$work/run/shim.sock"
(eval "$("$E" identity env "$work/root" billing)"; exec "$E" serve --listen "unix:$SHIM") 2>/dev/null &
TOKEN=$(eval "$("$E" identity env "$work/root" orders)"; "$E" token mint --audience spiffe://example.org/billing --ttl 3600)
JWK=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(json.dumps({"keys": b["identities"]["spiffe://example.org/orders"]["keys"]}))' "$work/root/bundle.json")

config() { # variant -> envoy bootstrap on :19000 (admin :19001)
  local filters
  case $1 in
    none) filters='' ;;
    jwt_authn*) filters=$(python3 - "$JWK" "$1" <<'PY'
import json, sys
provider = {"audiences": ["spiffe://example.org/billing"],
            "local_jwks": {"inline_string": sys.argv[1]}, "forward": False}
if sys.argv[2] == "jwt_authn-cache":
    provider["jwt_cache_config"] = {"jwt_cache_size": 1024}
cfg = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
  "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
  "providers": {"spiffile": provider},
  "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "spiffile"}}]}}
print(json.dumps(cfg) + ",")
PY
) ;;
    ephemera-*) local crypto=${1#ephemera-}; crypto=${crypto%%-*}; local cache=1024
      [[ $1 == *-nocache ]] && cache=0
      local plugin="{\\\"direction\\\":\\\"inbound\\\",\\\"crypto\\\":\\\"$crypto\\\",\\\"inbound\\\":{\\\"cache_size\\\":$cache}}"
      [[ $1 == ephemera-out-* ]] && { root=ephemera_outbound; reuse=30; [[ $1 == *-mint ]] && reuse=0
        plugin="{\\\"direction\\\":\\\"outbound\\\",\\\"outbound\\\":{\\\"hosts\\\":{\\\"127.0.0.1\\\":\\\"spiffe://example.org/orders\\\"},\\\"reuse_secs\\\":$reuse}}"; } || root=ephemera_inbound
      filters="{\"name\":\"ephemera\",\"typed_config\":{\"@type\":\"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\",\"config\":{\"root_id\":\"$root\",\"configuration\":{\"@type\":\"type.googleapis.com/google.protobuf.StringValue\",\"value\":\"$plugin\"},\"vm_config\":{\"vm_id\":\"ephemera\",\"runtime\":\"envoy.wasm.runtime.v8\",\"code\":{\"local\":{\"filename\":\"$WASM\"}}}}}}," ;;
  esac
  cat <<JSON
{"admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":19001}}},
 "static_resources":{"listeners":[{"address":{"socket_address":{"address":"127.0.0.1","port_value":19000}},
  "filter_chains":[{"filters":[{"name":"hcm","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
   "stat_prefix":"bench","route_config":{"virtual_hosts":[{"name":"a","domains":["*"],"routes":[{"match":{"prefix":"/"},"direct_response":{"status":200,"body":{"inline_string":"ok"}}}]}]},
   "http_filters":[$filters {"name":"envoy.filters.http.router","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
 "clusters":[{"name":"ephemera_shim","type":"STATIC","connect_timeout":"1s","load_assignment":{"cluster_name":"ephemera_shim","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"pipe":{"path":"$SHIM"}}}}]}]}}]}}
JSON
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
printf '%-26s %10s %12s %14s\n' variant req/s cpu_us/req vs_jwt_authn
declare -A rps
for variant in ${VARIANTS:-none jwt_authn jwt_authn-cache ephemera-auto-nocache ephemera-rust-nocache ephemera-auto ephemera-out-mint ephemera-out-reuse}; do
  header="authorization: Bearer $TOKEN"
  [[ $variant == ephemera-out-* ]] && header="x-bench: outbound"  # to 127.0.0.1, mapped to orders
  config "$variant" > "$work/$variant.json"
  envoy -c "$work/$variant.json" --concurrency 1 --disable-hot-restart -l error > "$work/$variant.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$header" 127.0.0.1:19000/)" = 200 ] && break
    sleep 0.1
  done
  wrk -t1 -c16 -d1s -H "$header" http://127.0.0.1:19000/ >/dev/null  # warm-up
  before=$(cpu_ticks $pid)
  out=$(wrk -t1 -c16 -d"${secs}s" -H "$header" http://127.0.0.1:19000/)
  after=$(cpu_ticks $pid)
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  [ -z "$non2xx" ] || { echo "$variant: $non2xx non-2xx responses"; exit 1; }
  rps[$variant]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  cpu=$(( (after - before) * 1000000 / $(getconf CLK_TCK) / reqs ))
  case $variant in
    none) base= ;;
    ephemera-auto) base=jwt_authn-cache ;;
    ephemera-out-*) base=none ;;
    *) base=jwt_authn ;;
  esac
  ratio=$( [ -n "$base" ] && python3 -c "print(f'{${rps[$variant]}/${rps[$base]}:.2f} ({\"$base\"})')" || echo -)
  printf '%-26s %10s %12s %14s\n' "$variant" "${rps[$variant]}" "$cpu" "$ratio"
  kill $pid; wait $pid 2>/dev/null || true
done
