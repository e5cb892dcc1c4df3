# Shell helpers the load-test scripts share (sourced, not run): stopping what they started,
# free loopback ports, waiting for a listener.

# SIGTERM to every pid, then up to 20 s for each to exit before SIGKILL.
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_tcp HOST PORT SECONDS WHAT: until HOST:PORT accepts a connection, or fail naming WHAT.
wait_tcp() {
  python3 - "$@" <<'PY'
import socket, sys, time
host, port, limit, what = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
end = time.time() + limit
while time.time() < end:
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(f"{what} did not listen on {host}:{port} within {limit:.0f} s")
PY
}
