#!/usr/bin/env bash
# ampd side by side with Redis on this machine (see benches/src/bin/compare-redis.rs for
# what is measured and how). Installs Redis from the system's packages when it is
# missing, builds the binaries, runs every comparison (about 15 minutes; `--quick` for
# a short smoke run), prints the tables and writes them to benches/results/.
# It starts its own servers on ports 7381/7382 and stops only those.
#
#   benches/compare-redis.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "compare-redis: installing redis from the system's packages" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -q
  $sudo apt-get install -y -q redis-server redis-tools
fi
command -v taskset >/dev/null || { echo "compare-redis: taskset (util-linux) is needed" >&2; exit 2; }

cargo build --release -p ampd -p ampd-loadgen -p ampd-benches --bin ampd --bin ampd-loadgen --bin compare-redis
exec timeout 1800 target/release/compare-redis "$@"
