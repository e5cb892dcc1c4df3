#!/usr/bin/env bash
# A complete load test in one command: Redis, the devnet and the pool on free loopback ports,
# then pastella-loadtest with N simulated miners (ramp, idle-session memory, job fan-out, a
# per-miner share-rate phase, raw RandomX rate, verified-share ceiling and latency at 50 % and
# 90 % of it). Prints the summary, writes the JSON report under loadtest/reports/ and stops
# everything it started. docs/LOADTEST.md explains the output.
#
#   scripts/loadtest.sh [MINERS=10000] [SECONDS=20]
#
# SECONDS is the length of each share phase. Environment:
#   LOADTEST_MODE=light|fast   RandomX mode of pool and harness (default light: no 2 GiB datasets)
#   LOADTEST_RAMP=2000         connects per second
#   LOADTEST_POOL_PROCS=N      pool processes (default: one per 19,000 miners; the fd limit is 20,000)
#   LOADTEST_BUILD=1           rebuild the release binaries even if present
#   LOADTEST_PROFILE=debug     use the debug binaries (cargo build; for small smoke runs only)
#   LOADTEST_ARGS="..."        extra flags for `pastella-loadtest run`
#   LOADTEST_TLS=1             the pool port serves TLS too (`"tls": "auto"`, self-signed certificate
#                              generated on the first start) and every miner connects over TLS,
#                              pinning the certificate's SHA-256 (`--tls --tls-fingerprint`)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=harness.sh
source scripts/harness.sh

miners="${1:-10000}"
seconds="${2:-20}"
mode="${LOADTEST_MODE:-light}"
ramp="${LOADTEST_RAMP:-2000}"
per_process=19000
procs=$(((miners + per_process - 1) / per_process))
pool_procs="${LOADTEST_POOL_PROCS:-$procs}"
case "$mode" in light | fast) ;; *) echo "LOADTEST_MODE must be light or fast, got $mode" >&2; exit 2 ;; esac
tls="${LOADTEST_TLS:-}"
case "$tls" in "" | 0 | 1) ;; *) echo "LOADTEST_TLS must be 1 (TLS) or empty/0 (plain), got $tls" >&2; exit 2 ;; esac
variant=$mode
if [[ $tls == 1 ]]; then variant="$mode-tls"; fi

profile="${LOADTEST_PROFILE:-release}"
case "$profile" in release | debug) ;; *) echo "LOADTEST_PROFILE must be release or debug, got $profile" >&2; exit 2 ;; esac
pool=target/$profile/pastella-pool
lt=target/$profile/pastella-loadtest
if [[ ! -x $pool || ! -x $lt || -n "${LOADTEST_BUILD:-}" ]]; then
  echo "building $profile binaries (several minutes the first time)..."
  if [[ $profile == release ]]; then
    cargo build --release -p pastella-pool -p pastella-loadtest
  else
    cargo build -p pastella-pool -p pastella-loadtest
  fi
fi
if ! command -v redis-server >/dev/null; then
  if [[ $EUID -eq 0 ]]; then apt-get install -y redis-server; else
    echo "redis-server is not installed: sudo apt-get install -y redis-server" >&2; exit 2
  fi
fi

# Every process started here inherits the hard open-file limit.
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/pastella-loadtest.XXXXXX)
pool_pids=()
other_pids=()
# Pools first (they write their pending shares to Redis on SIGTERM), then devnet and Redis.
stop() {
  stop_pids "${pool_pids[@]}"
  stop_pids "${other_pids[@]}"
  echo "logs: $work"
}
trap stop EXIT
trap 'exit 130' INT TERM

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --maxclients 10000 >"$work/redis.log" 2>&1 &
redis_pid=$!
other_pids+=("$redis_pid")
wait_tcp 127.0.0.1 "$redis_port" 10 redis-server

daemon_port=$(free_port)
wallet_port=$(free_port)
control_port=$(free_port)
# A network difficulty no share reaches: a share-found block would make every job stale.
"$pool" devnet --daemon-port "$daemon_port" --wallet-port "$wallet_port" --control-port "$control_port" \
  --difficulty 1000000000000 >"$work/devnet.log" 2>&1 &
devnet_pid=$!
other_pids+=("$devnet_pid")
wait_tcp 127.0.0.1 "$control_port" 30 devnet

stratum_ports=()
api_ports=()
for k in $(seq 0 $((pool_procs - 1))); do
  stratum_ports+=("$(free_port)")
  api_ports+=("$(free_port)")
  python3 - "loadtest/configs/pool-$mode.json" "$work/pool$k.json" "${stratum_ports[$k]}" "${api_ports[$k]}" \
    "$daemon_port" "$wallet_port" "$redis_port" "$tls" "$work/tls" <<'EOF'
import json, sys
src, dst, stratum, api, daemon, wallet, redis, tls, tls_dir = sys.argv[1:]
c = json.load(open(src))
port = next(iter(c["ports"].values()))
if tls == "1":
    # auto: the start-up timing (and an abuse flood) stay plain on the same port.
    port["tls"] = "auto"
    c["poolServer"]["tlsSelfSignedDir"] = tls_dir
c["ports"] = {stratum: port}
c["api"]["port"] = int(api)
c["daemon"]["port"] = int(daemon)
c["walletApi"]["port"] = int(wallet)
c["redis"]["port"] = int(redis)
json.dump(c, open(dst, "w"), indent=2)
EOF
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p loadtest/reports
report="loadtest/reports/$stamp-$miners-$variant.json"

# Fast mode: one try, also timing the switch to fast-mode verification (dataset build).
startup=(--repeat 3 --timeout 60)
if [[ $mode == fast ]]; then startup=(--repeat 1 --timeout 600 --metrics "http://127.0.0.1:${api_ports[0]}/metrics"); fi
echo "== start-up: process start -> first job served"
"$lt" startup --pool "127.0.0.1:${stratum_ports[0]}" "${startup[@]}" --log "$work/startup-pool.log" \
  --report "loadtest/reports/$stamp-startup-$variant.json" -- "$pool" run --config "$work/pool0.json"

echo "== starting $pool_procs pool process(es) ($mode mode)"
for k in $(seq 0 $((pool_procs - 1))); do
  if [[ $k -eq 0 ]]; then
    "$pool" run --config "$work/pool$k.json" >"$work/pool$k.log" 2>&1 &
  else
    "$pool" run --config "$work/pool$k.json" --module stratum >"$work/pool$k.log" 2>&1 &
  fi
  pool_pids+=("$!")
done
for k in $(seq 0 $((pool_procs - 1))); do wait_tcp 127.0.0.1 "${stratum_ports[$k]}" 60 "pool $k"; done

# The per-miner phase offers about a quarter of what the machine verifies in total.
total_rate=$([[ $mode == fast ]] && echo 100 || echo 20)
rate_per_miner=$(python3 -c "print($total_rate / $miners)")
args=(run --miners "$miners" --processes "$procs" --ramp-rate "$ramp"
  --control "http://127.0.0.1:$control_port" --fanout-rounds 5
  --watch-pid "redis=$redis_pid" --watch-pid "devnet=$devnet_pid"
  --hash-mode "$mode" --hash-threads 2
  --rate-per-miner "$rate_per_miner" --rate-seconds "$seconds"
  --ceiling-seconds "$seconds" --level-seconds "$seconds"
  --pool-metrics "http://127.0.0.1:${api_ports[0]}/metrics"
  --report "$report" --label "scripts/loadtest.sh $miners miners, $variant")
for k in $(seq 0 $((pool_procs - 1))); do
  args+=(--pool "127.0.0.1:${stratum_ports[$k]}" --pool-pid "${pool_pids[$k]}")
done
if [[ $mode == fast ]]; then args+=(--wait-fast 600); fi
if [[ $tls == 1 ]]; then
  # The start-up timing's first start generated the certificate; every pool serves the same one.
  fingerprint=$(python3 -c 'import hashlib, ssl, sys; print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest())' "$work/tls/cert.pem")
  echo "== TLS: pool certificate SHA-256 $fingerprint"
  args+=(--tls --tls-fingerprint "$fingerprint")
fi
# shellcheck disable=SC2206
extra=(${LOADTEST_ARGS:-})
echo "== $lt ${args[*]} ${extra[*]}"
status=0
"$lt" "${args[@]}" "${extra[@]}" || status=$?

# No accepted share lost: once the pools have stopped (and flushed), the round's scores in Redis
# (sum of job difficulties, 1 per share here) must equal the shares the harness saw accepted.
stop_pids "${pool_pids[@]}"
pool_pids=()
if [[ -f $report ]]; then
  python3 - "$report" "$redis_port" <<'EOF'
import json, subprocess, sys
path, port = sys.argv[1], sys.argv[2]
cli = lambda *a: subprocess.run(["redis-cli", "-p", port, *a], capture_output=True, text=True).stdout.split()
keys = cli("--scan", "--pattern", "*scores:prop:roundCurrent")
recorded = sum(int(v) for k in keys for v in cli("hvals", k))
r = json.load(open(path))
accepted = sum(p["accepted"] for p in r["phases"])
r["redis_check"] = {"accepted_by_pool": accepted, "recorded_in_redis": recorded, "keys": keys}
json.dump(r, open(path, "w"), indent=2)
verdict = "OK" if recorded == accepted else "MISMATCH"
print(f"redis: {recorded} shares recorded in {' '.join(keys) or '(no round key)'}; the harness saw {accepted} accepted: {verdict}")
EOF
fi
exit "$status"
