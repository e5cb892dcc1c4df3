#!/usr/bin/env bash
# Installs the system packages the pool needs and that are missing: cmake and g++ (randomx-rs
# builds RandomX with them), redis-server, and with --test also chromium (browser test),
# prometheus (promtool), and for tests/ops.rs nginx, curl, openssl, fail2ban (fail2ban-regex),
# systemd (systemd-analyze), redis-sentinel (tests/sentinel.rs), python3 with jsonschema and yaml, plus the compose-spec JSON schema
# (from the docker-compose package on PyPI, into target/compose-spec/). Debian/Ubuntu; uses
# sudo when not root. Also haproxy (PROXY protocol test).
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v redis-server >/dev/null || need+=(redis-server)
if [[ "${1:-}" == "--test" ]]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v nginx >/dev/null || need+=(nginx)
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  command -v fail2ban-regex >/dev/null || need+=(fail2ban)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
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
if [[ "${1:-}" == "--test" ]] && ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
  # For tests/ops.rs (compose.yml against the compose-spec schema), into the python3 on PATH.
  pip=(python3 -m pip install --quiet --disable-pip-version-check jsonschema pyyaml)
  "${pip[@]}" >&2 || "${pip[@]}" --break-system-packages >&2 ||
    echo "warning: could not install jsonschema/pyyaml; compose.yml will not be validated" >&2
fi
if [[ "${1:-}" == "--test" && ! -f "$(dirname "$0")/../target/compose-spec/compose_spec.json" ]]; then
  # The compose-spec schema that docker-compose 1.29.2 ships (tests/ops.rs validates
  # deploy/docker/compose.yml against it). Best effort: the test says loudly when it is missing.
  dir="$(dirname "$0")/../target/compose-spec"
  mkdir -p "$dir"
  if python3 -m pip download --no-deps --quiet --disable-pip-version-check docker-compose==1.29.2 -d "$dir" >&2; then
    python3 - "$dir" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
wheel = glob.glob(d + "/docker_compose-1.29.2-*.whl")[0]
with open(d + "/compose_spec.json", "wb") as out:
    out.write(zipfile.ZipFile(wheel).read("compose/config/compose_spec.json"))
PY
  else
    echo "warning: could not fetch the compose-spec schema; compose.yml will not be validated" >&2
  fi
fi
