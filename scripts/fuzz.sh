#!/usr/bin/env bash
# Runs every fuzz target of wire/fuzz and engine/fuzz (one per decoder) for SECONDS
# each, default 60: five targets, so about five minutes plus the two builds.
#
#   scripts/fuzz.sh [SECONDS]
#
# Installs cargo-fuzz if it is missing. Runs on the stable toolchain with
# `--sanitizer none` (the decoders are safe Rust: what we look for is panics, aborts,
# stack overflows and runaway allocations, which libFuzzer catches without ASan).
# Each target starts from its seeds in CRATE/fuzz/corpus/<target>/ and every input that
# once crashed it, in CRATE/fuzz/regressions/<target>/; what it discovers goes to
# CRATE/fuzz/target/corpus/<target>/ (not committed). A crash leaves its input in
# CRATE/fuzz/artifacts/<target>/ and makes the script exit non-zero: keep the input in
# regressions/<target>/ once fixed (wire's frame tests replay theirs).
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

# CRATE:TARGET, one per decoder.
targets=(
  wire:frame_request wire:frame_response wire:handshake
  engine:wal_record engine:snapshot_load
)
failed=()
for entry in "${targets[@]}"; do
  crate="${entry%%:*}"
  target="${entry#*:}"
  cd "$root/$crate"
  scratch="fuzz/target/corpus/$target"
  mkdir -p "$scratch"
  corpora=("$scratch")
  for dir in "fuzz/corpus/$target" "fuzz/regressions/$target"; do
    if [ -d "$dir" ]; then
      corpora+=("$dir")
    fi
  done
  echo "fuzz.sh: $crate $target for ${seconds}s" >&2
  if ! cargo fuzz run --sanitizer none "$target" "${corpora[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1; then
    failed+=("$entry")
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in CRATE/fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
