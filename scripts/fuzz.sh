#!/usr/bin/env bash
# Runs every fuzz target of wire/fuzz (one per decoder) for SECONDS each, default 60.
#
#   scripts/fuzz.sh [SECONDS]
#
# Installs cargo-fuzz if it is missing. Runs on the stable toolchain with
# `--sanitizer none` (the decoders are safe Rust: what we look for is panics, aborts,
# stack overflows and runaway allocations, which libFuzzer catches without ASan).
# Each target starts from its seeds in wire/fuzz/corpus/<target>/ and every input that
# once crashed it, in wire/fuzz/regressions/<target>/; what it discovers goes to
# wire/fuzz/target/corpus/<target>/ (not committed). A crash leaves its input in
# wire/fuzz/artifacts/<target>/ and makes the script exit non-zero: keep the input in
# regressions/<target>/ once fixed (frame.rs's fuzz_regressions_pass replays them).
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cd "$root/wire"
targets=(frame_request frame_response handshake)
failed=()
for target in "${targets[@]}"; do
  scratch="fuzz/target/corpus/$target"
  mkdir -p "$scratch"
  corpora=("$scratch" "fuzz/corpus/$target")
  if [ -d "fuzz/regressions/$target" ]; then
    corpora+=("fuzz/regressions/$target")
  fi
  echo "fuzz.sh: $target for ${seconds}s" >&2
  if ! cargo fuzz run --sanitizer none "$target" "${corpora[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in wire/fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
