#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, outside the workspace) for SECONDS each
# (default 60) and fails on the first crash. Not part of the test command.
#   tests/fuzz.sh [SECONDS] [TARGET ...]
#   tests/fuzz.sh 600                  # ten minutes per target
#   tests/fuzz.sh 3600 token_signed    # one target for an hour
# A crash stops the run and leaves its input in fuzz/artifacts/<target>/;
# add it to the target's regression test (plugin/core/tests/fuzz_regressions.rs)
# and fix the cause. Each target's corpus (fuzz/corpus/<target>/) starts
# from seeds made out of the test fixtures (fuzz/seed.py) and is kept
# minimized by `cargo fuzz cmin` after the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
# cargo fuzz builds with nightly flags (sanitizers, coverage): the pinned
# stable toolchain takes them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
cd fuzz
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
    python3 seed.py "$target" "$corpus"
  fi
  echo "== $target: ${seconds} s"
  cargo fuzz run --release "$target" "$corpus" -- \
    -max_total_time="$seconds" -dict=json.dict -print_final_stats=1 -close_fd_mask=3
  cargo fuzz cmin --release "$target" "$corpus" -- -dict=json.dict >/dev/null 2>&1
done
