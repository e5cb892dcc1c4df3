#!/usr/bin/env bash
# Fast-mode RSS across two RandomX epoch changes (docs/PERFORMANCE.md, "Fast-mode memory across
# epoch changes"). Starts its own Redis (port 6391), devnet (21101-21103) and pool (stratum 3401,
# API 8191) on loopback, drives the devnet's chain to each stage and prints the pool's RSS and
# its RandomX seeds/caches/datasets once RSS has settled (dataset builds take 30 s to minutes).
# Needs jq and curl. BIN=path/to/pastella-pool to pick a build (default: target/release, else debug).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$( [ -x target/release/pastella-pool ] && echo target/release/pastella-pool || echo target/debug/pastella-pool )}
work=$(mktemp -d)
jq '.daemon.port=21101 | .walletApi.port=21102 | .redis.port=6391 | .api.port=8191
    | .ports={"3401": {"diff": 1000, "desc": "memory run"}} | .logging.level="info"' \
  loadtest/configs/pool-fast.json > "$work/pool.json"
redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > "$work/redis.log" 2>&1 &
REDIS=$!
"$BIN" devnet --daemon-port 21101 --wallet-port 21102 --control-port 21103 --difficulty 1000 > "$work/devnet.log" 2>&1 &
DEVNET=$!
sleep 2
"$BIN" run --config "$work/pool.json" --module stratum --module api > "$work/pool.log" 2>&1 &
POOL=$!
trap 'kill $POOL $DEVNET $REDIS 2>/dev/null || true' EXIT
until curl -s localhost:8191/metrics > /dev/null; do sleep 1; done
metric() { curl -s localhost:8191/metrics | awk -v m="$1" '$1 == m {print $2}'; }
rss_kib() { ps -o rss= -p $POOL | tr -d ' '; }
count=1
mine_to() {  # template height $1 (= devnet block count), then wait for the pool's template
  local n=$(( $1 - count ))
  if [ "$n" -gt 0 ]; then curl -s -X POST localhost:21103/devnet/mine -d "{\"count\":$n}" > /dev/null; count=$1; fi
  until [ "$(metric pastella_pool_network_height)" = "$1" ]; do sleep 1; done
}
settle() {  # until three samples 10 s apart are within 16 MiB
  local a b c
  a=$(rss_kib); sleep 10; b=$(rss_kib); sleep 10; c=$(rss_kib)
  while [ $(( c - a )) -gt 16384 ] || [ $(( a - c )) -gt 16384 ]; do a=$b; b=$c; sleep 10; c=$(rss_kib); done
}
echo "$(date -u +%FT%TZ) $BIN, load $(cut -d' ' -f1-3 /proc/loadavg)"
for h in 100 2060 2113 2114 4108 4161 4162; do
  mine_to $h
  settle
  echo "template height $h: RSS $(( $(rss_kib) / 1024 )) MiB; seeds $(metric pastella_pool_randomx_seeds)" \
    "caches $(metric pastella_pool_randomx_caches) datasets $(metric pastella_pool_randomx_datasets)" \
    "fast $(metric pastella_pool_randomx_fast_mode); $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
done
grep -E "dataset ready" "$work/pool.log" | sed 's/^/pool: /'
