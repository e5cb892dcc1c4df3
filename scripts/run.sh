#!/usr/bin/env bash
# Runs the pool's main job on one machine: a local Redis (the configured one if it answers,
# otherwise one started here), the devnet (a simulated Pastella daemon and wallet on loopback)
# and the pool with config.json. Ctrl-C stops everything this script started.
#
#   ./scripts/run.sh [config.json]
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-config.json}"
./scripts/deps.sh

cargo build --release --bin pastella-pool
bin=target/release/pastella-pool
"$bin" check-config --config "$config" >/dev/null

mkdir -p run
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

redis_host=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])).get('redis',{}); print(r.get('host','127.0.0.1'))" "$config")
redis_port=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])).get('redis',{}); print(r.get('port',6379))" "$config")
if redis-cli -h "$redis_host" -p "$redis_port" ping >/dev/null 2>&1; then
  echo "using the Redis already running at $redis_host:$redis_port"
else
  echo "starting redis-server on 127.0.0.1:$redis_port (data in run/redis)"
  mkdir -p run/redis
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$PWD/run/redis" --appendonly yes >run/redis.log 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "starting the devnet (daemon 127.0.0.1:21001, wallet 127.0.0.1:21002, control 127.0.0.1:21003; log in run/devnet.log)"
"$bin" devnet --data run/devnet.json --block-time 30 >run/devnet.log 2>&1 &
pids+=($!)
sleep 1

# Transparent huge pages for RandomX's cache, dataset and scratchpads (see docs/PERFORMANCE.md).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
echo "starting the pool (stratum 3333/5555/7777/9999, API and status page http://127.0.0.1:8117/)"
"$bin" run --config "$config" &
pids+=($!)
wait -n "${pids[@]}"
