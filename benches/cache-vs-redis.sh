#!/usr/bin/env bash
# The cache tier side by side with Redis at one budget (see
# benches/src/bin/cache-vs-redis.rs for what is measured and how). Installs Redis from
# the system's packages when it is missing, builds the binaries and runs the
# comparison (hours at full size: 10 M + 10 M requests per run; `--quick`: minutes).
# It starts its own servers on ports 7394-7395 and stops only those.
#
#   benches/cache-vs-redis.sh [--quick] [--rows 0.99,0.7,1.2,scan] [--keys N] [--room N]
#                             [--warmup-requests N] [--requests N]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-redis.sh cache-vs-redis

cargo build --release -p ampd -p ampd-loadgen -p ampd-benches --bin ampd --bin ampd-loadgen --bin cache-vs-redis
target=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
release="${target:-target}/release"
exec timeout 14400 "$release/cache-vs-redis" --ampd "$release/ampd" --loadgen "$release/ampd-loadgen" "$@"
