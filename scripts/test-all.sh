#!/usr/bin/env bash
# Runs every test of the project: the engine's unit and property tests (normal build), then the
# simulated tests (built with --cfg madsim in target/sim, the same build `cargo sim` uses).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
echo "== unit and property tests (real build)"
cargo test --workspace --quiet
echo "== simulated tests (--cfg madsim, target/sim)"
cargo sim-test --quiet
echo "== all tests passed in $(( $(date +%s) - start ))s"
