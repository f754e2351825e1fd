#!/usr/bin/env bash
# Quorum commits per second of a 3-site group on loopback (repsite bench: real TCP, real files,
# real fsync), for 1 to 500 concurrent writers. With two binaries, runs them alternately at each
# writer count, so both see the same machine at the same time and the ratio means something.
#
#   bench/throughput.sh                          # the repsite of this tree (built if needed)
#   bench/throughput.sh OLD_REPSITE NEW_REPSITE  # side by side
#
# Prints one line per (binary, writers): commits/s and p50/p99 commit latency.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  cargo build --release -q -p repsim-replication --bin repsite
  set -- target/release/repsite
fi
WRITERS="${WRITERS:-1 8 64 256 500}"
printf '%-40s %8s %12s %10s %10s\n' binary writers commits/s p50_ms p99_ms
for writers in $WRITERS; do
  # Enough writes that each writer commits a few dozen, and at least 3,000 in all.
  writes=$(( writers * 40 > 3000 ? writers * 40 : 3000 ))
  for bin in "$@"; do
    json=$("$bin" bench --sites 3 --writes "$writes" --clients "$writers" --policy quorum --json)
    python3 - "$bin" "$writers" "$json" <<'PY'
import json, sys
bin_, writers, text = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.loads(text)
print(f"{bin_:<40} {writers:>8} {r['commits_per_s']:>12.0f} {r['p50_ms']:>10.1f} {r['p99_ms']:>10.1f}")
PY
  done
done
