#!/usr/bin/env bash
# Runs the Dockerfile's build stage without a Docker engine: copies exactly what the Dockerfile
# COPYs into an empty directory and runs its cargo command there, then the runtime stage's
# check (the binary runs `check-config` on the config the image ships). A release build: takes
# minutes; not part of the test suite (tests/ops.rs checks the stages' structure).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -E '^COPY ' deploy/docker/Dockerfile | grep -v -- '--from=' | while read -r _ args; do
  read -ra parts <<<"$args"
  for src in "${parts[@]:0:${#parts[@]}-1}"; do
    mkdir -p "$work/$(dirname "$src")"
    cp -r "$src" "$work/$src"
  done
done
build=$(sed -n 's/^RUN \(cargo build [^&]*\).*/\1/p' deploy/docker/Dockerfile)
echo "in $work: $build" >&2
(cd "$work" && CARGO_TARGET_DIR="$work/target" $build)
"$work/target/release/pastella-pool" check-config --config deploy/docker/config.json
echo "build stage OK" >&2
