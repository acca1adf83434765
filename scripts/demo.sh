#!/usr/bin/env bash
# make demo-san: hostcache in front of a slow SAN, the driver alone, in about
# a minute (make demo shows the whole product: scripts/demo-manager.py).
#
#   1. A simulated SAN: nbdkit's memory plugin behind its delay filter (every
#      read and write takes 2 ms more), 1 GiB of real data.
#   2. A random-read workload with a hot set (fio, zipf 1.2, 4 KiB, QD8)
#      straight against the SAN: the baseline.
#   3. The same disk behind hostcache: a qemu-storage-daemon whose node
#      "hc0" is the hostcache filter (128 MiB of RAM) over an NBD client of
#      the SAN, exported over NBD.  The same workload twice: while the cache
#      warms up, then warm.
#   4. A short report: IOPS, p50/p99 latency and hit ratio with and without
#      the cache, the cache's own counters, and a check that the data read
#      through the cache is the SAN's data.
#
# Every process started here is stopped by pid on exit (trap).

set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
QB=${HOSTCACHE_QEMU_BUILD:-$SRC/build/qemu-build}
QSD=$QB/storage-daemon/qemu-storage-daemon
QEMU_IO=$QB/qemu-io
PY=/usr/bin/python3
DISK=1G
CACHE_MIB=128
RUNTIME=${DEMO_RUNTIME:-10}

for b in "$QSD" "$QEMU_IO"; do
    [ -x "$b" ] || { echo "demo: missing $b; run make first" >&2; exit 1; }
done
for b in fio nbdkit; do
    command -v "$b" >/dev/null || {
        echo "demo: $b not installed; run make first" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hcdemo-XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each up to 5 s, then SIGKILL that pid only.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() {   # wait_for PATH PID
    for _ in $(seq 300); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || {
            echo "demo: process $2 died; log:" >&2
            cat "$WORK"/*.log >&2
            exit 1
        }
        sleep 0.1
    done
    echo "demo: timed out waiting for $1" >&2
    exit 1
}

stats() {      # stats OUT.json: driver-specific counters of hc0
    PYTHONPATH="$SRC/python" "$PY" - "$WORK/qsd.qmp" "$1" <<EOF
import json, sys
from hostcache.qmp import QMP, node_stats
q = QMP(sys.argv[1])
json.dump(node_stats(q, 'hc0'), open(sys.argv[2], 'w'))
q.close()
EOF
}

workload() {   # workload NAME URI
    fio --name="$1" --ioengine=nbd --uri="$2" --rw=randread --bs=4k \
        --iodepth=8 --size="$DISK" --random_distribution=zipf:1.2 \
        --norandommap --randrepeat=0 --time_based --runtime="$RUNTIME" \
        --output-format=json --output="$WORK/$1.json" >/dev/null
}

echo "== hostcache demo (work dir $WORK)"

echo "-- starting the simulated SAN: nbdkit memory $DISK, +2 ms per read/write"
nbdkit -f -U "$WORK/san.sock" --filter=delay memory "$DISK" \
    rdelay=2ms wdelay=2ms >"$WORK/san.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/san.sock" "${PIDS[-1]}"
SAN_URI="nbd+unix:///?socket=$WORK/san.sock"

echo "-- writing $DISK of data (pattern 0x5a) to the SAN"
"$QEMU_IO" -f raw -c "write -P 0x5a 0 $DISK" "$SAN_URI" >/dev/null

echo "-- workload 1: ${RUNTIME}s of zipf(1.2) 4 KiB random reads, QD8, straight to the SAN"
workload san "$SAN_URI"

echo "-- starting qemu-storage-daemon: hostcache (${CACHE_MIB} MiB RAM) over an NBD client of the SAN"
"$QSD" \
    --chardev "socket,id=qmp0,path=$WORK/qsd.qmp,server=on,wait=off" \
    --monitor chardev=qmp0 \
    --blockdev "{\"driver\": \"nbd\", \"node-name\": \"san\", \"server\": {\"type\": \"unix\", \"path\": \"$WORK/san.sock\"}}" \
    --blockdev "{\"driver\": \"hostcache\", \"node-name\": \"hc0\", \"file\": \"san\", \"ram-size\": $((CACHE_MIB << 20))}" \
    --nbd-server "addr.type=unix,addr.path=$WORK/hc.sock" \
    --export type=nbd,id=exp0,node-name=hc0,name=disk,writable=on \
    >"$WORK/qsd.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/hc.sock" "${PIDS[-1]}"
wait_for "$WORK/qsd.qmp" "${PIDS[-1]}"
HC_URI="nbd+unix:///disk?socket=$WORK/hc.sock"

stats "$WORK/stats0.json"
echo "-- workload 2: the same through hostcache, cold cache (${RUNTIME}s)"
workload cold "$HC_URI"
stats "$WORK/stats1.json"
echo "-- workload 3: the same again, warm cache (${RUNTIME}s)"
workload warm "$HC_URI"
stats "$WORK/stats2.json"

echo "-- checking the data read through the cache (first 256 MiB, cached and not)"
if "$QEMU_IO" -f raw -c "read -P 0x5a 0 256M" "$HC_URI" >"$WORK/verify.log" 2>&1 \
        && ! grep -q -i -E 'fail|error|mismatch' "$WORK/verify.log"; then
    VERIFY="ok: 256 MiB read through hostcache match what was written to the SAN"
else
    VERIFY="FAILED: $(head -3 "$WORK/verify.log")"
fi
stats "$WORK/stats3.json"

"$PY" - "$WORK" "$VERIFY" <<'EOF'
import json, os, sys

work, verify = sys.argv[1], sys.argv[2]


def fio(name):
    j = json.load(open(os.path.join(work, name + '.json')))['jobs'][0]['read']
    pct = j['clat_ns']['percentile']
    return {'iops': j['iops'], 'ios': j['total_ios'],
            'p50': pct['50.000000'] / 1000, 'p99': pct['99.000000'] / 1000}


def st(i):
    return json.load(open(os.path.join(work, f'stats{i}.json')))


runs = [('SAN alone (no cache)', fio('san'), None),
        ('hostcache, cold start', fio('cold'), (st(0), st(1))),
        ('hostcache, warm', fio('warm'), (st(1), st(2)))]
base = runs[0][1]
print()
print('                           IOPS   speed-up   p50 (us)   p99 (us)   hit ratio')
for name, r, s in runs:
    hr = '-'
    if s:
        h = s[1]['read-hits'] - s[0]['read-hits']
        m = s[1]['read-misses'] - s[0]['read-misses']
        hr = f'{100 * h / (h + m):.1f}%' if h + m else '-'
    print(f'  {name:<22} {r["iops"]:>8.0f} {r["iops"] / base["iops"]:>9.1f}x '
          f'{r["p50"]:>10.0f} {r["p99"]:>10.0f} {hr:>11}')

s = st(3)
print()
print('  hostcache counters (query-blockstats, node hc0):')
print(f'    mode {s["mode"]}, block size {s["block-size"]} B, '
      f'RAM {s["ram-used"] >> 20} of {s["ram-limit"] >> 20} MiB used '
      f'({s["ram-blocks"]} blocks), metadata {s["metadata-bytes"] >> 10} KiB')
print(f'    reads: {s["read-hits"]} hits, {s["read-misses"]} misses; '
      f'admissions {s["admissions"]}, evictions {s["evictions"]}, '
      f'sequential bypasses {s["sequential-bypasses"]}')
print(f'    latency inside the driver: hit avg {s["hit-latency-avg-ns"] / 1000:.1f} us '
      f'(p99 {s["hit-latency-p99-ns"] / 1000:.1f}), miss avg '
      f'{s["miss-latency-avg-ns"] / 1000:.0f} us '
      f'(p99 {s["miss-latency-p99-ns"] / 1000:.0f})')
print(f'    origin errors {s["origin-errors"]}, stale fills {s["stale-fills"]}')
print(f'  data check: {verify}')
ok = verify.startswith('ok') and s['origin-errors'] == 0
sys.exit(0 if ok else 1)
EOF
echo "== demo done; stopping everything"
