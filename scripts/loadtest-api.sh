#!/usr/bin/env bash
# The stats API under a farm's load, in one command: Redis, the devnet and a pool running only
# its API module on free loopback ports, then `pastella-loadtest api`: WORKERS workers'
# hashrate records written straight into Redis (no sessions), a quiet phase and a phase with
# CLIENTS browsers polling the old frontend's pages, SECONDS each. Prints the figures, writes
# loadtest/reports/<UTC time>-api-<workers>.json and stops everything it started.
# docs/LOADTEST.md ("API") explains the output.
#
#   scripts/loadtest-api.sh [WORKERS=100000] [CLIENTS=1000] [SECONDS=60]
#
# Environment:
#   LOADTEST_PROFILE=debug     use the debug binaries (default release)
#   LOADTEST_POOL=PATH         the pool binary to measure (e.g. one built from an older commit)
#   LOADTEST_API_ARGS="..."    extra flags for `pastella-loadtest api` (--share-interval, --addresses, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=harness.sh
source scripts/harness.sh

workers="${1:-100000}"
clients="${2:-1000}"
seconds="${3:-60}"
profile="${LOADTEST_PROFILE:-release}"
case "$profile" in release | debug) ;; *) echo "LOADTEST_PROFILE must be release or debug, got $profile" >&2; exit 2 ;; esac
pool="${LOADTEST_POOL:-target/$profile/pastella-pool}"
lt=target/$profile/pastella-loadtest
if [[ ! -x $pool || ! -x $lt ]]; then
  echo "building $profile binaries..."
  if [[ $profile == release ]]; then cargo build --release -p pastella-pool -p pastella-loadtest; else
    cargo build -p pastella-pool -p pastella-loadtest; fi
fi

ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/pastella-loadtest-api.XXXXXX)
pids=()
stop() {
  stop_pids "${pids[@]}"
  echo "logs: $work"
}
trap stop EXIT
trap 'exit 130' INT TERM

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --maxclients 10000 >"$work/redis.log" 2>&1 &
pids=("$!")
wait_tcp 127.0.0.1 "$redis_port" 10 redis-server

daemon_port=$(free_port)
wallet_port=$(free_port)
control_port=$(free_port)
"$pool" devnet --daemon-port "$daemon_port" --wallet-port "$wallet_port" --control-port "$control_port" \
  >"$work/devnet.log" 2>&1 &
pids=("$!" "${pids[@]}")
wait_tcp 127.0.0.1 "$control_port" 30 devnet

api_port=$(free_port)
python3 - loadtest/configs/pool-light.json "$work/pool.json" "$api_port" "$daemon_port" "$wallet_port" "$redis_port" <<'EOF'
import json, sys
src, dst, api, daemon, wallet, redis = sys.argv[1:]
c = json.load(open(src))
c["api"]["port"] = int(api)
c["daemon"]["port"] = int(daemon)
c["walletApi"]["port"] = int(wallet)
c["redis"]["port"] = int(redis)
json.dump(c, open(dst, "w"), indent=2)
EOF
"$pool" run --config "$work/pool.json" --module api >"$work/pool.log" 2>&1 &
pool_pid=$!
pids=("$pool_pid" "${pids[@]}")
wait_tcp 127.0.0.1 "$api_port" 60 "the pool's API"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p loadtest/reports
report="loadtest/reports/$stamp-api-$workers.json"
echo "== $workers workers, $clients clients, $seconds s per phase; pool $pool (pid $pool_pid); load $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086
"$lt" api --redis "127.0.0.1:$redis_port" --api "http://127.0.0.1:$api_port" --workers "$workers" \
  --clients "$clients" --seconds "$seconds" --report "$report" ${LOADTEST_API_ARGS:-}
echo "pool RSS: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$pool_pid/status); load $(cut -d' ' -f1-3 /proc/loadavg)"
