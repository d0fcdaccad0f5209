#!/usr/bin/env bash
# Installs Redis (server and tools) from the system's packages when it is missing, for
# the benchmarks that compare ampd with it; and checks for taskset, which they pin
# servers and generators with.
#
#   scripts/ensure-redis.sh NAME    (NAME: the calling script, for its messages)
set -euo pipefail
name=${1:-ensure-redis}
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null \
  || ! command -v redis-benchmark >/dev/null; then
  echo "$name: installing redis from the system's packages" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -q
  $sudo apt-get install -y -q redis-server redis-tools
fi
command -v taskset >/dev/null || { echo "$name: taskset (util-linux) is needed" >&2; exit 2; }
