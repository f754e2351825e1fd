#!/usr/bin/env bash
# Berkeley DB 5.3 Replication Manager on this machine, as the anchor for repsim's serial
# quorum-commit throughput and failover figures: three repbench processes (one repmgr site
# each) on loopback, default durability (each commit syncs the log).
#
#   apt-get install libdb5.3-dev
#   bash bench/bdb/run.sh
#
# 1. Serial writer: the master commits WRITES (2000) transactions one after another with
#    quorum acks; prints repbench's JSON line.
# 2. Failover, TRIALS (5) times, each on a fresh group: kill -9 the master once both clients
#    have reported STARTUPDONE and are connected to each other, and time from the kill to
#    DB_EVENT_REP_MASTER on another site. Prints each figure and the median.
#
# NODELAY=1 runs the same with TCP_NODELAY forced on repmgr's sockets (nodelay.c, through
# LD_PRELOAD). Berkeley DB does not set it, and that is not untuned Berkeley DB: it is there
# to show how much of the serial figure is Nagle's algorithm meeting delayed ACKs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
WRITES="${WRITES:-2000}"
TRIALS="${TRIALS:-5}"
NODELAY="${NODELAY:-0}"
KEEP="${KEEP:-0}"   # KEEP=1: leave the sites' homes and event logs behind, and say where

[ -f /usr/include/db.h ] || {
  echo "run.sh: needs Berkeley DB 5.3's headers (apt-get install libdb5.3-dev)" >&2
  exit 2
}

dir=$(mktemp -d /tmp/repbench.XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do timeout 5 tail --pid="$pid" -f /dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "run.sh: logs kept in $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -o "$dir/repbench" "$here/repbench.c" -ldb
if [ "$NODELAY" = 1 ]; then
  cc -O2 -Wall -shared -fPIC -o "$dir/nodelay.so" "$here/nodelay.c" -ldl
  export LD_PRELOAD="$dir/nodelay.so"
fi

# Three loopback ports that are free now (the kernel picks them; a tiny race is acceptable).
free_ports() {
  python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))'
}

# wait_for FILE PATTERN SECONDS: until a line of FILE matches PATTERN (grep -E), or fail.
wait_for() {
  local file=$1 pattern=$2 deadline=$((SECONDS + $3))
  until grep -qE "$pattern" "$file" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run.sh: timed out waiting for /$pattern/ in $file; its stderr:" >&2
      cat "$file" >&2 || true
      exit 1
    fi
    sleep 0.02
  done
}

# connected_n FILE: the site's latest count of connected peers (0 if none printed yet).
connected_n() {
  { grep -oE '^STATUS connected .* n=[0-9]+' "$1" || true; } | tail -n 1 | sed -E 's/.*n=//;s/^$/0/'
}

wait_connected() {
  local file=$1 want=$2 deadline=$((SECONDS + $3))
  until [ "$(connected_n "$file")" = "$want" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run.sh: $file never reported $want connected peers; its stderr:" >&2
      cat "$file" >&2
      exit 1
    fi
    sleep 0.02
  done
}

# start_site TRIAL_DIR NAME PORT PRIORITY PEER_PORT PEER_PORT [EXTRA ARGS...]: starts one
# site in the background with stderr in TRIAL_DIR/NAME.err; its pid goes into $site_pid.
start_site() {
  local tdir=$1 name=$2 port=$3 prio=$4 p1=$5 p2=$6
  shift 6
  mkdir -p "$tdir/$name"
  "$dir/repbench" --home "$tdir/$name" --me "127.0.0.1:$port" \
    --peer "127.0.0.1:$p1" --peer "127.0.0.1:$p2" --priority "$prio" "$@" \
    >"$tdir/$name.out" 2>"$tdir/$name.err" &
  site_pid=$!
  # Out of the job table, so bash prints no "Killed" notice for the kill -9 below; we wait
  # with tail --pid instead of wait.
  disown "$site_pid"
  pids+=("$site_pid")
}

# start_group TRIAL_DIR [CREATOR EXTRA ARGS...]: creator (priority 100) first, then the two
# others (80, 50) one at a time, each once the previous one has reported STARTUPDONE.
# Berkeley DB adds members to its group membership database one at a time; a site that asks
# to join while another join is under way can get DB_REP_UNAVAIL from repmgr_start.
# Leaves the pids in $pa $pb $pc.
start_group() {
  local tdir=$1
  shift
  mkdir -p "$tdir"
  read -r port_a port_b port_c < <(free_ports)
  start_site "$tdir" a "$port_a" 100 "$port_b" "$port_c" --creator "$@"; pa=$site_pid
  wait_for "$tdir/a.err" '^EVENT REP_MASTER ' 30
  start_site "$tdir" b "$port_b" 80 "$port_a" "$port_c"; pb=$site_pid
  wait_for "$tdir/b.err" '^EVENT REP_STARTUPDONE ' 30
  start_site "$tdir" c "$port_c" 50 "$port_a" "$port_b"; pc=$site_pid
  wait_for "$tdir/c.err" '^EVENT REP_STARTUPDONE ' 30
  # An election after the master dies needs the clients to reach each other.
  wait_connected "$tdir/b.err" 2 30
  wait_connected "$tdir/c.err" 2 30
}

# stop PID...: SIGTERM (repbench closes its environment), SIGKILL after 10 s.
stop() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    timeout 10 tail --pid="$pid" -f /dev/null || kill -9 "$pid" 2>/dev/null || true
  done
}

echo "== Berkeley DB $(grep -oE 'DB_VERSION_STRING.*' /usr/include/db.h | cut -d'"' -f2 | cut -d: -f1 | sed 's/Berkeley DB //'), 3 sites on loopback, $(nproc) cores$([ "$NODELAY" = 1 ] && echo ', TCP_NODELAY forced (not untuned)')"
echo "== serial writer: $WRITES commits one after another, --ack quorum"
t="$dir/serial"
start_group "$t" --writes "$WRITES" --ack quorum --go-file "$dir/serial/go"
touch "$t/go"
# 2000 commits at Berkeley DB's untuned ~45 ms each take ~90 s; allow plenty.
if ! timeout -k 5 600 tail --pid="$pa" -f /dev/null; then
  echo "run.sh: the writer did not finish within 600 s" >&2
  exit 1
fi
if ! grep -q '"commits_per_s"' "$t/a.out"; then
  echo "run.sh: the writer printed no result; its stderr:" >&2
  cat "$t/a.err" >&2
  exit 1
fi
cat "$t/a.out"
stop "$pb" "$pc"

echo "== failover: kill -9 the master, time to DB_EVENT_REP_MASTER on another site"
figures=()
for i in $(seq 1 "$TRIALS"); do
  t="$dir/failover$i"
  start_group "$t"
  sleep 0.5   # a few heartbeats in the steady state before the fault
  # $EPOCHREALTIME is bash's own clock read (no fork), the same CLOCK_REALTIME that repbench
  # stamps its event lines with.
  t0=$EPOCHREALTIME
  kill -9 "$pa"
  deadline=$((SECONDS + 60))
  until line=$(grep -hE '^EVENT REP_MASTER ' "$t/b.err" "$t/c.err" | head -n 1) && [ -n "$line" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run.sh: no new master 60 s after the kill (trial $i); the clients' stderr:" >&2
      cat "$t/b.err" "$t/c.err" >&2
      exit 1
    fi
    sleep 0.02
  done
  t1_us=$(sed -E 's/.* real_us=([0-9]+) .*/\1/' <<<"$line")
  case "$line" in
    *" site=127.0.0.1:$port_b"*) winner="b (priority 80)" ;;
    *" site=127.0.0.1:$port_c"*) winner="c (priority 50)" ;;
    *) winner="?" ;;
  esac
  ms=$(python3 -c "print(f'{($t1_us - ${t0//[.,]/}) / 1000:.1f}')")
  failed=$(cat "$t/b.err" "$t/c.err" | grep -c '^EVENT REP_ELECTION_FAILED ' || true)
  echo "trial $i: ${ms} ms (new master $winner, failed election rounds $failed)"
  figures+=("$ms")
  stop "$pb" "$pc"
done
median=$(printf '%s\n' "${figures[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo "failover median of $TRIALS: ${median} ms"
