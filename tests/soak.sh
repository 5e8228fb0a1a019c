#!/usr/bin/env bash
# The soak (not part of the test command): two sidecars, orders calling
# billing, under steady mixed traffic (valid and invalid callers,
# transactions, egress injection, outbound minting) for MINUTES (default
# 10) while identities rotate every 30 s. Prints the report and writes it
# to target/soak/<time>/report.md; fails unless memory stays flat after
# warm-up, no request gets an unexpected answer and both ledgers verify.
#   tests/soak.sh [MINUTES] [-- ephemera-soak options, e.g. --rate 50]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
shift || true
[ "${1:-}" = "--" ] && shift
tests/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# The shim and the filter as deployed (release); the driver is a test
# helper and runs from the debug build.
cargo build --release -p ephemera-shim
cargo build --release -p ephemera-envoy --target wasm32-wasip1
cargo build -p ephemera-tests --bin ephemera-soak
EPHEMERA_BIN="$PWD/target/release/ephemera" \
  exec target/debug/ephemera-soak --minutes "$minutes" "$@"
