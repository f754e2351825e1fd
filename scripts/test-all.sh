#!/usr/bin/env bash
# Runs every test of the project: the engine's unit and property tests (normal build), then the
# simulated tests (built with --cfg madsim in target/sim, the same build `cargo sim` uses).
# Ends with one summary line, "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
# The property tests draw their cases from a fixed seed here, so the test command judges every
# commit by the same cases and a failure belongs to the commit, not to the draw. Fresh cases:
# `PROPTEST_CASES=100000 cargo test -p repsim-replication --test properties` (a random seed;
# proptest saves what fails in the test's .proptest-regressions file, which every run replays).
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261129}"
start=$(date +%s)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== unit and property tests (real build)"
cargo test --workspace 2>&1 | tee -a "$out" | grep -E '^(test result|running|error|failures|---- )|panicked' || true
echo "== simulated tests (--cfg madsim, target/sim)"
cargo sim-test 2>&1 | tee -a "$out" | grep -E '^(test result|error|failures|---- )|panicked' || true
echo "== the scenario suite on 3 seeds (cargo sim suite --seeds 3)"
# Counted as one test: it passes when every catalog scenario passes on every seed.
if cargo sim suite --seeds 3 --failures target/sim/failures 2>&1 | tee -a "$out.suite" | tail -20; then
  echo "test result: ok. 1 passed; 0 failed (suite)" >> "$out"
else
  echo "test result: FAILED. 0 passed; 1 failed (suite)" >> "$out"
fi
rm -f "$out.suite"
echo "== kill -9 torture test: three real sites, 10 kills (scripts/torture.sh 10)"
# Counted as one test: every acknowledged write survives, every site agrees, none crashed.
if REPSITE=target/debug/repsite SEED=7 ./scripts/torture.sh 10 2>&1 | tail -12; then
  echo "test result: ok. 1 passed; 0 failed (torture)" >> "$out"
else
  echo "test result: FAILED. 0 passed; 1 failed (torture)" >> "$out"
fi
echo "== deployment files against their schemas (scripts/check-deploy.sh)"
# Counted as one test: the workflow and the Kubernetes manifests of exploring at scale.
if ./scripts/check-deploy.sh; then
  echo "test result: ok. 1 passed; 0 failed (deploy schemas)" >> "$out"
else
  echo "test result: FAILED. 0 passed; 1 failed (deploy schemas)" >> "$out"
fi

passed=$(grep -Eo '[0-9]+ passed' "$out" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$out" | awk '{s+=$1} END {print s+0}')
status=0
if grep -qE '^error(\[|:)' "$out" || [ "$failed" -ne 0 ] || grep -q 'test result: FAILED' "$out"; then
  status=1
fi
echo "== $(( $(date +%s) - start ))s"
echo "tests: ${passed} passed, ${failed} failed"
exit $status
