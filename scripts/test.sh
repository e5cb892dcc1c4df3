#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and property tests, and the integration
# tests (real redis-server on free loopback ports, the devnet, real TCP miners, headless
# chromium, promtool). Installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests each start Redis, a devnet and a pool: two at a time fit two cores.
cargo test --workspace --lib --bins --tests -- --test-threads=2
# The benchmarks once each, quickly (criterion's test mode), so they keep building and running.
cargo test --workspace --benches
