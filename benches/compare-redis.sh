#!/usr/bin/env bash
# ampd side by side with Redis on this machine (see benches/src/bin/compare-redis.rs for
# what is measured and how). Installs Redis from the system's packages when it is
# missing, builds the binaries, runs every comparison (about 18 minutes; `--quick` for
# a short smoke run), prints the tables and issue 12's targets and writes them to
# benches/results/. It starts its own servers on ports 7381-7383 and stops only those.
# The binaries are taken from cargo's target directory, wherever CARGO_TARGET_DIR or
# cargo's configuration puts it.
#
#   benches/compare-redis.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-redis.sh compare-redis

cargo build --release -p ampd -p ampd-loadgen -p ampd-benches --bin ampd --bin ampd-loadgen --bin compare-redis
target=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
release="${target:-target}/release"
exec timeout 1800 "$release/compare-redis" --ampd "$release/ampd" --loadgen "$release/ampd-loadgen" "$@"
