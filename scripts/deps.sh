#!/usr/bin/env bash
# Installs the system packages the pool needs and that are missing: cmake and g++ (randomx-rs
# builds RandomX with them), redis-server, and with --test also chromium (browser test),
# prometheus (promtool) and haproxy (PROXY protocol test). Debian/Ubuntu; uses sudo when not root.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v redis-server >/dev/null || need+=(redis-server)
if [[ "${1:-}" == "--test" ]]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v haproxy >/dev/null || need+=(haproxy)
fi
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  # The Debian redis-server package starts a system service on 6379; the pool's scripts and
  # tests start their own, so leave the system one alone.
fi
