#!/usr/bin/env bash
# ephemera's whole test suite: installs what it needs, builds every artifact,
# checks formatting and lints, and runs every test against real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "build (native; the Envoy filter for wasm32-wasip1; the component for wasm32-wasip2)"
cargo build --workspace --exclude ephemera-component --all-targets
cargo build -p ephemera-core --target wasm32-wasip1
cargo build --release -p ephemera-envoy --target wasm32-wasip1
cargo build --release -p ephemera-component --target wasm32-wasip2
step "clippy"
cargo clippy --workspace --exclude ephemera-component --all-targets -- -D warnings
cargo clippy -p ephemera-envoy --target wasm32-wasip1 -- -D warnings
cargo clippy -p ephemera-component --target wasm32-wasip2 -- -D warnings
step "tests"
cargo test --workspace --exclude ephemera-component
