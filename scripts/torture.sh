#!/usr/bin/env bash
# kill -9 torture test of the real daemon: three `repsite run` processes on loopback (static
# group, ack policy quorum, quick timers), a writer that commits k1=v1, k2=v2, ... on whichever
# site is master, and a nemesis that kill -9s sites (half the time the master, one round in five
# two sites in a row) and restarts them. At the end every acknowledged write must be on every
# site, `repsite check` must find the three databases equal, and no site may have died on its own.
#
#   scripts/torture.sh [N]        N nemesis rounds (kills), default 100
#
# Environment:
#   REPSITE=path     the binary (default target/release/repsite)
#   SEED=n           seeds the nemesis ($RANDOM) so a run can be repeated roughly (default: random)
#   KEEP=1           keep the temporary directory even when the run passes
#   WRITE_GAP_MS=n   pause of the writer between two puts (default 0)
#
# Exit status: 0 when nothing acknowledged was lost, the check passed and no site crashed on its
# own; 1 otherwise (the temporary directory, with every site's log, data and the writer's
# records, is kept and its path printed); 2 for a usage error or a missing binary.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100}
if ! [[ $N =~ ^[0-9]+$ ]] || [[ $N -lt 1 ]]; then
  echo "usage: $0 [N]   (N kills, a positive integer; default 100)" >&2
  exit 2
fi
REPSITE=${REPSITE:-target/release/repsite}
if [[ ! -x $REPSITE ]]; then
  echo "torture: no repsite binary at $REPSITE; build it first:" >&2
  echo "  cargo build --release -p repsim-replication --bin repsite" >&2
  exit 2
fi
REPSITE=$(cd "$(dirname "$REPSITE")" && pwd)/$(basename "$REPSITE")
command -v python3 >/dev/null || { echo "torture: python3 is required" >&2; exit 2; }
# The sites run without an admin token; a token file from the environment would not match.
unset REPSITE_ADMIN_TOKEN_FILE

if [[ -n ${SEED:-} ]]; then
  [[ $SEED =~ ^[0-9]+$ ]] || { echo "torture: SEED must be a non-negative integer" >&2; exit 2; }
else
  SEED=$(( $(date +%s%N) % 1000000007 ))
fi
RANDOM=$SEED
WRITE_GAP_MS=${WRITE_GAP_MS:-0}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/repsite-torture.XXXXXX")
START_US=${EPOCHREALTIME/./}
PID=(0 0 0)     # the current `repsite run` process of each site (0: none)
UP=(0 0 0)      # 1 while the site is meant to be running
WRITER_PID=
VERDICT=1       # the cleanup keeps $DIR unless the run passed

now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
sleep_ms() { local s; printf -v s '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); sleep "$s"; }
say() { echo "torture: $*"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $WRITER_PID ]]; then kill -TERM "$WRITER_PID" 2>/dev/null || true; fi
  local i pid
  for i in 0 1 2; do
    pid=${PID[$i]}
    if [[ $pid != 0 ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  # A clean stop syncs the storage; give it 5 s, then kill -9 what is left.
  local deadline=$(( $(now_us) + 5000000 ))
  for pid in "${PID[@]}" $WRITER_PID; do
    [[ $pid == 0 ]] && continue
    while kill -0 "$pid" 2>/dev/null && [[ $(now_us) -lt $deadline ]]; do sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $rc -eq 0 && $VERDICT -eq 0 && -z ${KEEP:-} ]]; then
    rm -rf "$DIR"
  else
    echo "torture: kept $DIR (site logs site*.log, data site*/, acked, failed, kills, nemesis.log)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# The Python helper: free ports, the writer, the verification of the acknowledged writes and the
# summary. Written into the run's directory so a kept directory holds everything to rerun a step.
cat > "$DIR/helper.py" <<'PY'
import json, os, random, signal, socket, subprocess, sys, time

def now_us():
    return time.time_ns() // 1000

def cmd_ports(n):
    """n free loopback ports below the ephemeral range, so that no outgoing connection (a put,
    a peer) takes a killed site's port while it is down."""
    try:
        lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except Exception:
        lo = 32768
    got, tried = [], 0
    while len(got) < n and tried < 2000:
        tried += 1
        p = random.randint(10000, lo - 1) if lo > 12000 else 0
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            s.listen(1)
            port = s.getsockname()[1]
            if port not in got:
                got.append(port)
        except OSError:
            pass
        finally:
            s.close()
    if len(got) < n:
        sys.exit("no free ports")
    print(" ".join(map(str, got)))

def parse_sites(spec):
    """"addr=admin,addr=admin,..." -> list of (addr, admin)"""
    return [tuple(s.split("=", 1)) for s in spec.split(",")]

current = None  # the writer's running `repsite put`, killed with the writer

def run(argv, timeout):
    global current
    try:
        current = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = current.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            current.kill()
            current.communicate()
            return None, "", "timed out"
        return current.returncode, out, err
    finally:
        current = None

def status(repsite, admin):
    rc, out, _ = run([repsite, "status", "--admin", admin, "--json", "--timeout", "1"], 5)
    if rc != 0:
        return None
    try:
        return json.loads(out)["status"]
    except Exception:
        return None

def cmd_writer(repsite, sites_spec, d, gap_ms):
    def on_term(*_):
        if current is not None:
            current.kill()
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    sites = parse_sites(sites_spec)
    admin_of = dict(sites)
    acked = open(os.path.join(d, "acked"), "a", buffering=1)
    failed = open(os.path.join(d, "failed"), "a", buffering=1)
    masters = open(os.path.join(d, "writer_masters"), "a", buffering=1)
    stop = os.path.join(d, "stop")
    target, last_master, n, polls = None, None, 0, 0

    def find_master():
        best = None
        for addr, admin in random.sample(sites, len(sites)):
            st = status(repsite, admin)
            if st and st.get("role") == "master":
                if best is None or st.get("generation", 0) > best[0]:
                    best = (st.get("generation", 0), admin)
        return best[1] if best else None

    while not os.path.exists(stop):
        if target is None:
            target = find_master()
            if target is None:
                polls += 1
                time.sleep(0.05)
                continue
        if target != last_master:
            masters.write(f"{now_us()} {target}\n")
            last_master = target
        n += 1
        key, value = f"k{n}", f"v{n}"
        t0 = now_us()
        rc, out, err = run([repsite, "put", key, value, "--admin", target, "--json",
                            "--timeout", "5"], 10)
        t1 = now_us()
        resp = None
        try:
            resp = json.loads(out) if out.strip() else None
        except Exception:
            pass
        if rc == 0 and resp and resp.get("ok"):
            lsn = (resp.get("committed") or {}).get("lsn", "?")
            acked.write(f"{key} {value} {t0} {t1} {target} {lsn}\n")
        else:
            e = (resp or {}).get("error") or {}
            if e.get("kind"):
                kind = e["kind"]
            elif rc is None:
                kind = "timeout"
            elif "cannot reach" in err:
                kind = "unreachable"  # nobody listening: the site is down
            elif "reset by peer" in err or "closed without an answer" in err:
                kind = "connection_lost"  # the site died with the put in flight
            else:
                kind = "other"
            msg = (e.get("message") or err.strip().replace("\n", " "))[:200]
            failed.write(f"{key} {kind} {t0} {t1} {target} {msg}\n")
            if kind == "not_master":
                hint = e.get("master")
                target = admin_of.get(hint) if hint else None
            elif kind != "perm_failed":
                target = None  # the master is gone or stalled: ask the sites again
        if gap_ms:
            time.sleep(gap_ms / 1000)
    open(os.path.join(d, "writer_done"), "w").write(f"{n} {polls}\n")

def bulk_get(admin, keys):
    """{key: value or None} over the admin protocol (the request `repsite get` sends), pipelined;
    raises OSError when the site does not answer."""
    host, port = admin.rsplit(":", 1)
    res = {}
    with socket.create_connection((host, int(port)), timeout=10) as s:
        f = s.makefile("rwb")
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for k in chunk:
                f.write((json.dumps({"op": "get", "key": k}) + "\n").encode())
            f.flush()
            for k in chunk:
                line = f.readline()
                if not line:
                    raise OSError("connection closed")
                r = json.loads(line)
                res[k] = r.get("value") if r.get("ok") else None
    return res

def cmd_verify(repsite, sites_spec, d, wait_s):
    sites = parse_sites(sites_spec)
    want = {}
    for line in open(os.path.join(d, "acked")):
        p = line.split()
        want[p[0]] = p[1]
    pending = {admin: sorted(want) for _, admin in sites}
    unreachable = {}
    deadline = time.time() + wait_s
    while True:
        for admin in list(pending):
            try:
                got = bulk_get(admin, pending[admin])
                unreachable.pop(admin, None)
            except (OSError, ValueError) as e:
                unreachable[admin] = str(e)
                continue
            pending[admin] = [k for k in pending[admin] if got.get(k) != want[k]]
        if all(not v for v in pending.values()) or time.time() > deadline:
            break
        time.sleep(1)  # a site still catching up gets until the deadline
    lost = sorted({k for v in pending.values() for k in v}, key=lambda k: int(k[1:]))
    report = {"acked": len(want), "lost": len(lost), "lost_keys": lost[:20],
              "missing_per_site": {a: len(v) for a, v in pending.items()},
              "unreachable": unreachable, "evidence": []}
    # The first few lost keys, asked again with the operator's own tool, for the record.
    for k in lost[:5]:
        for addr, admin in sites:
            if k in pending[admin]:
                rc, out, err = run([repsite, "get", k, "--admin", admin], 10)
                report["evidence"].append(
                    f"repsite get {k} --admin {admin} ({addr}): exit {rc}, "
                    f"stdout {out.strip()!r}, stderr {err.strip()!r}, acknowledged value {want[k]!r}")
    json.dump(report, open(os.path.join(d, "verify.json"), "w"), indent=1)
    for a, v in pending.items():
        if v:
            print(f"torture: site {a}: {len(v)} acknowledged key(s) missing or wrong, "
                  f"first {', '.join(v[:5])}")
    for a, e in unreachable.items():
        print(f"torture: site {a} did not answer the verification: {e}")
    for line in report["evidence"]:
        print("torture:   " + line)
    sys.exit(0 if not lost and not unreachable else 1)

def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, -(-len(xs) * p // 100) - 1)]

def cmd_summary(d, n, seed, check_rc, crashes, log_errors, elapsed_us, start_gen, end_gen):
    kills = [l.split() for l in open(os.path.join(d, "kills"))] if os.path.exists(
        os.path.join(d, "kills")) else []
    # kills: time_us round site was_master double(0/1)
    procs = len(kills)
    master_kills = [k for k in kills if k[3] == "1"]
    doubles = len({k[1] for k in kills if k[4] == "1"})
    acked = [l.split() for l in open(os.path.join(d, "acked"))]
    failed = [l.split(None, 5) for l in open(os.path.join(d, "failed"))] if os.path.exists(
        os.path.join(d, "failed")) else []
    kinds = {}
    for f in failed:
        kinds[f[1]] = kinds.get(f[1], 0) + 1
    v = json.load(open(os.path.join(d, "verify.json")))
    # Failover: from a master's kill to the first acknowledged write started after it.
    starts = sorted((int(a[2]), int(a[3])) for a in acked)
    fo, unmeasured = [], 0
    import bisect
    keys = [s for s, _ in starts]
    for k in master_kills:
        t = int(k[0])
        i = bisect.bisect_right(keys, t)
        if i < len(starts):
            fo.append((starts[i][1] - t) / 1000)
        else:
            unmeasured += 1
    became = 0
    for i in range(3):
        p = os.path.join(d, f"site{i}.log")
        if os.path.exists(p):
            became += sum(1 for l in open(p, errors="replace") if "event=BecameMaster" in l)
    wm = sum(1 for _ in open(os.path.join(d, "writer_masters"))) if os.path.exists(
        os.path.join(d, "writer_masters")) else 0
    ok = v["lost"] == 0 and not v["unreachable"] and check_rc == 0 and crashes == 0 \
        and log_errors == 0
    fk = ", ".join(f"{c} {k.replace('_', ' ')}" for k, c in sorted(kinds.items(), key=lambda x: -x[1]))
    print(f"== torture summary: {n} kills, seed {seed}")
    print(f"kills          {n} rounds, {procs} processes killed: {len(master_kills)} master(s), "
          f"{doubles} double kill(s)")
    print(f"failovers      {max(became - 1, 0)} new masters elected (BecameMaster in the logs; "
          f"generation {start_gen} -> {end_gen}); the writer switched master {max(wm - 1, 0)} times")
    print(f"writes         {len(acked)} acknowledged, {len(failed)} failed"
          + (f" ({fk})" if fk else "") + f", {v['lost']} lost")
    if fo:
        print(f"failover time  p50 {pct(fo, 50):.0f} ms, p99 {pct(fo, 99):.0f} ms, "
              f"max {max(fo):.0f} ms over {len(fo)} master kills"
              + (f" ({unmeasured} unmeasured)" if unmeasured else ""))
    else:
        print("failover time  no master kill measured")
    print(f"check          {'every site agrees' if check_rc == 0 else f'FAILED (exit {check_rc})'}")
    print(f"crashes        {crashes} site exit(s) on their own, {log_errors} panic/error line(s) in the logs")
    print(f"elapsed        {elapsed_us / 1e6:.1f} s")
    print(f"verdict        {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "ports":
        cmd_ports(int(a[1]))
    elif a[0] == "writer":
        cmd_writer(a[1], a[2], a[3], int(a[4]))
    elif a[0] == "verify":
        cmd_verify(a[1], a[2], a[3], float(a[4]))
    elif a[0] == "summary":
        cmd_summary(a[1], int(a[2]), a[3], int(a[4]), int(a[5]), int(a[6]), int(a[7]), a[8], a[9])
PY

# ---------------------------------------------------------------------------------------------
# The group: three sites of a static group, ack policy quorum, quick timers.
read -r -a PORTS <<<"$(python3 "$DIR/helper.py" ports 6)"
[[ ${#PORTS[@]} -eq 6 ]] || { echo "torture: could not find 6 free loopback ports" >&2; exit 1; }
ADDR=() ADMIN=()
for i in 0 1 2; do
  ADDR[$i]=127.0.0.1:${PORTS[$i]}
  ADMIN[$i]=127.0.0.1:${PORTS[$((i + 3))]}
done
SITES_LIST="\"${ADDR[0]}\", \"${ADDR[1]}\", \"${ADDR[2]}\""
SITES_SPEC="${ADDR[0]}=${ADMIN[0]},${ADDR[1]}=${ADMIN[1]},${ADDR[2]}=${ADMIN[2]}"
ADMINS="${ADMIN[0]},${ADMIN[1]},${ADMIN[2]}"
for i in 0 1 2; do
  cat > "$DIR/site$i.toml" <<EOF
addr = "${ADDR[$i]}"
admin = "${ADMIN[$i]}"
group = "torture"
secret = "torture-$SEED"
data_dir = "site$i"
sites = [$SITES_LIST]
ack_policy = "quorum"

[timeouts]
heartbeat_interval_ms = 100
heartbeat_timeout_ms = 600
election_timeout_ms = 400
election_jitter_ms = 300
EOF
done
: > "$DIR/kills"
: > "$DIR/crashes"
: > "$DIR/acked"
: > "$DIR/failed"

ROUND=0
start_site() {
  local i=$1
  echo "=== torture: $(date -u +%FT%T.%6NZ) starting site$i (round $ROUND)" >> "$DIR/site$i.log"
  RUST_LOG=info "$REPSITE" run --config "$DIR/site$i.toml" >/dev/null 2>>"$DIR/site$i.log" &
  PID[$i]=$!
  UP[$i]=1
}

# A site process that is gone although nobody killed it crashed on its own: record it (with its
# exit status and the tail of its log) and start it again so the run goes on; the verdict fails.
reap_crashed() {
  local i rc
  for i in 0 1 2; do
    if [[ ${UP[$i]} == 1 ]] && ! kill -0 "${PID[$i]}" 2>/dev/null; then
      rc=0; wait "${PID[$i]}" 2>/dev/null || rc=$?
      echo "$(now_us) round $ROUND site$i pid ${PID[$i]} exited on its own with status $rc" \
        | tee -a "$DIR/crashes" >&2
      tail -n 5 "$DIR/site$i.log" | sed 's/^/    /' >&2
      PID[$i]=0; UP[$i]=0
      start_site "$i"
    fi
  done
}

# status_of I: ST_ROLE, ST_MASTER (replication address or empty), ST_GEN of site I; 1 if it does
# not answer.
status_of() {
  local out
  ST_ROLE= ST_MASTER= ST_GEN=
  out=$("$REPSITE" status --admin "${ADMIN[$1]}" --json --timeout 1 2>/dev/null) || return 1
  out=${out%%\"membership\"*} # the site's own fields come first; the counters repeat some
  [[ $out =~ \"role\":\"([a-z_]+)\" ]] && ST_ROLE=${BASH_REMATCH[1]}
  [[ $out =~ \"master\":\"([^\"]+)\" ]] && ST_MASTER=${BASH_REMATCH[1]}
  [[ $out =~ \"generation\":([0-9]+) ]] && ST_GEN=${BASH_REMATCH[1]}
  return 0
}

# MASTER_IDX: the running site that says it is master (-1: none).
find_master() {
  local i best_gen=-1
  MASTER_IDX=-1
  for i in 0 1 2; do
    [[ ${UP[$i]} == 1 ]] || continue
    if status_of "$i" && [[ $ST_ROLE == master && ${ST_GEN:-0} -gt $best_gen ]]; then
      MASTER_IDX=$i; best_gen=${ST_GEN:-0}
    fi
  done
}

print_tails() {
  local i
  for i in 0 1 2; do
    echo "--- site$i (${ADDR[$i]}, admin ${ADMIN[$i]}): last lines of $DIR/site$i.log" >&2
    tail -n 15 "$DIR/site$i.log" >&2 || true
  done
}

# Waits (at most $1 s) until one site is master and every site names it; sets MASTER_IDX, GEN.
wait_for_master() {
  local deadline=$(( $(now_us) + $1 * 1000000 )) i m ok
  while [[ $(now_us) -lt $deadline ]]; do
    m= ok=1
    for i in 0 1 2; do
      if ! status_of "$i" || [[ -z $ST_MASTER ]]; then ok=0; break; fi
      if [[ -z $m ]]; then m=$ST_MASTER; elif [[ $m != "$ST_MASTER" ]]; then ok=0; break; fi
      if [[ ${ADDR[$i]} == "$m" ]]; then
        [[ $ST_ROLE == master ]] || { ok=0; break; }
        MASTER_IDX=$i; GEN=$ST_GEN
      fi
    done
    [[ $ok == 1 ]] && return 0
    sleep 0.1
  done
  echo "torture: FAIL: no master followed by every site within $1 s" >&2
  print_tails
  return 1
}

# kill_site I DOUBLE: kill -9, recording the time, the round, whether it was the master.
kill_site() {
  local i=$1 double=$2 was=0 t rc
  status_of "$i" && [[ $ST_ROLE == master ]] && was=1
  t=$(now_us)
  if kill -KILL "${PID[$i]}" 2>/dev/null; then
    rc=0; wait "${PID[$i]}" 2>/dev/null || rc=$?
    if [[ $rc != 137 ]]; then # it had exited by itself just before
      echo "$t round $ROUND site$i pid ${PID[$i]} exited on its own with status $rc" \
        | tee -a "$DIR/crashes" >&2
    fi
  else
    rc=0; wait "${PID[$i]}" 2>/dev/null || rc=$?
    echo "$t round $ROUND site$i pid ${PID[$i]} exited on its own with status $rc" \
      | tee -a "$DIR/crashes" >&2
  fi
  echo "=== torture: $(date -u +%FT%T.%6NZ) kill -9 site$i (round $ROUND, master=$was)" \
    >> "$DIR/site$i.log"
  echo "$t $ROUND $i $was $double" >> "$DIR/kills"
  PID[$i]=0; UP[$i]=0
  if [[ $was == 1 ]]; then KILLED_DESC+="site$i(master) "; else KILLED_DESC+="site$i "; fi
}

say "$N kills, seed $SEED, directory $DIR"
for i in 0 1 2; do start_site "$i"; done
wait_for_master 30
START_GEN=$GEN
say "site$MASTER_IDX (${ADDR[$MASTER_IDX]}) is master, generation $GEN; starting the writer"

python3 "$DIR/helper.py" writer "$REPSITE" "$SITES_SPEC" "$DIR" "$WRITE_GAP_MS" \
  2>"$DIR/writer.log" &
WRITER_PID=$!

# ---------------------------------------------------------------------------------------------
# The nemesis.
for ((ROUND = 1; ROUND <= N; ROUND++)); do
  sleep_ms $(( 200 + RANDOM % 1301 ))
  reap_crashed
  kill -0 "$WRITER_PID" 2>/dev/null || { echo "torture: the writer died:" >&2; cat "$DIR/writer.log" >&2; exit 1; }
  KILLED_DESC=
  find_master
  if (( RANDOM % 100 < 50 )) && [[ $MASTER_IDX -ge 0 ]]; then
    victim=$MASTER_IDX
  else
    victim=$(( RANDOM % 3 ))
  fi
  double=0
  (( RANDOM % 100 < 20 )) && double=1
  kill_site "$victim" "$double"
  down=("$victim")
  if [[ $double == 1 ]]; then
    sleep_ms $(( RANDOM % 301 ))
    reap_crashed
    # Never more than two down: the second victim is one of the two others, both running.
    other=$(( (victim + 1 + RANDOM % 2) % 3 ))
    kill_site "$other" 1
    down+=("$other")
  fi
  pause=$(( 100 + RANDOM % 1901 ))
  sleep_ms "$pause"
  for i in "${down[@]}"; do
    start_site "$i"
    [[ ${#down[@]} -gt 1 ]] && sleep_ms $(( RANDOM % 301 ))
  done
  printf 'torture: round %d/%d: kill -9 %sback after %d ms; %d writes acknowledged so far\n' \
    "$ROUND" "$N" "$KILLED_DESC" "$pause" "$(wc -l < "$DIR/acked")" | tee -a "$DIR/nemesis.log"
done

# ---------------------------------------------------------------------------------------------
# The end: every site running, one master followed by all, the writer past the last kill.
sleep 0.5
reap_crashed
wait_for_master 30
last_kill=$(tail -n 1 "$DIR/kills" | cut -d' ' -f1)
deadline=$(( $(now_us) + 15000000 ))
while [[ $(now_us) -lt $deadline ]]; do
  last_ack=$(tail -n 1 "$DIR/acked" | cut -d' ' -f3)
  [[ -n $last_ack && $last_ack -gt $last_kill ]] && break
  sleep 0.1
done
touch "$DIR/stop"
deadline=$(( $(now_us) + 15000000 ))
while kill -0 "$WRITER_PID" 2>/dev/null && [[ $(now_us) -lt $deadline ]]; do sleep 0.1; done
if kill -0 "$WRITER_PID" 2>/dev/null; then
  say "the writer did not stop within 15 s; killing it"
  kill -TERM "$WRITER_PID" 2>/dev/null || true
fi
wait "$WRITER_PID" 2>/dev/null || true
WRITER_PID=
[[ -f $DIR/writer_done ]] || { echo "torture: the writer did not finish cleanly:" >&2; cat "$DIR/writer.log" >&2; }
reap_crashed
wait_for_master 30
END_GEN=$GEN
say "writer stopped; site$MASTER_IDX is master, generation $GEN; verifying"

status=0
# (a) every acknowledged key, with its value, on every site (30 s for a site still catching up).
python3 "$DIR/helper.py" verify "$REPSITE" "$SITES_SPEC" "$DIR" 30 || status=1
# (b) the three databases are equal.
check_rc=0
"$REPSITE" check --admin "$ADMINS" --wait 30 > "$DIR/check.out" 2>&1 || check_rc=$?
sed 's/^/torture:   /' "$DIR/check.out"
# (c) no site died on its own, and nothing panicked or failed in storage.
reap_crashed
crashes=$(wc -l < "$DIR/crashes")
for i in 0 1 2; do kill -0 "${PID[$i]}" 2>/dev/null || crashes=$((crashes + 1)); done
log_errors=$(cat "$DIR"/site?.log | grep -cE 'panicked|StorageFailed| ERROR |^repsite: ' || true)
if [[ $log_errors -gt 0 ]]; then
  echo "torture: panics or errors in the site logs:" >&2
  grep -nE 'panicked|StorageFailed| ERROR |^repsite: ' "$DIR"/site?.log | head -n 20 >&2
fi
torn=$(cat "$DIR"/site?.log | grep -c 'storage recovered from a torn' || true)
[[ $torn -gt 0 ]] && say "note: $torn restart(s) dropped a torn log tail (expected after kill -9)"

summary_rc=0
python3 "$DIR/helper.py" summary "$DIR" "$N" "$SEED" "$check_rc" "$crashes" "$log_errors" \
  "$(( $(now_us) - START_US ))" "$START_GEN" "$END_GEN" | tee "$DIR/summary" || summary_rc=$?
[[ $summary_rc -ne 0 ]] && status=1
if [[ $status -eq 0 ]]; then
  VERDICT=0
  exit 0
fi
echo "torture: FAILED (seed $SEED: rerun with SEED=$SEED $0 $N)" >&2
exit 1
