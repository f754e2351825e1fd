#!/usr/bin/env bash
# etcd 3.4 on this machine, as the anchor for bench/throughput.sh: three members on loopback
# (Debian's etcd-server), then `etcdctl check perf --load=l` (its large workload: many concurrent
# writers for 60 s) and a serial writer through the HTTP gateway (one keep-alive connection,
# one put after another). Run it in the same sitting as bench/throughput.sh and compare.
#
#   sudo apt-get install etcd-server etcd-client
#   bench/etcd.sh
set -euo pipefail
command -v etcd >/dev/null && command -v etcdctl >/dev/null || {
  echo "etcd.sh: needs etcd and etcdctl (apt-get install etcd-server etcd-client)" >&2
  exit 2
}
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cluster="m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "m$i" --data-dir "$dir/m$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
    >"$dir/m$i.log" 2>&1 &
  pids+=($!)
done
endpoints="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
export ETCDCTL_API=3
for _ in $(seq 1 60); do
  etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.5
done
echo "== etcdctl check perf --load=l (3 members, loopback)"
etcdctl --endpoints "$endpoints" check perf --load=l 2>&1 | tr '\r' '\n' | grep -Ev '^ *[0-9]+ \/ [0-9]+|^$' || true
echo "== serial writer through the HTTP gateway (one put after another, 3000 puts)"
python3 - <<'PY'
import base64, http.client, json, time
conn = http.client.HTTPConnection("127.0.0.1", 23791)
n = 3000
start = time.monotonic()
for i in range(n):
    body = json.dumps({"key": base64.b64encode(f"k{i % 100}".encode()).decode(),
                       "value": base64.b64encode(b"v" * 100).decode()})
    conn.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
elapsed = time.monotonic() - start
print(f"serial puts: {n / elapsed:.0f}/s")
PY
