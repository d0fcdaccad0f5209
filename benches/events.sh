#!/usr/bin/env bash
# Events against the events issue's targets (see benches/src/bin/events-bench.rs):
# delivery throughput of one subscription, set latency with and without three
# subscriptions, commit-to-handler latency. About a minute (`--quick`: seconds).
#
#   benches/events.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v taskset >/dev/null || { echo "events.sh: taskset (util-linux) is needed" >&2; exit 2; }
cargo build --release -p ampd -p ampd-loadgen -p ampd-benches --bin ampd --bin ampd-loadgen --bin events-bench
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec timeout 600 "$target/release/events-bench" --ampd "$target/release/ampd" --loadgen "$target/release/ampd-loadgen" "$@"
