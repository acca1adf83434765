#!/usr/bin/python3
"""A real Linux guest (Debian cloud kernel, virtio-blk) on a hostcache node:
the guest writes random chunks with O_DIRECT, drops its page cache, reads
them back, re-reads a hot set, patches sectors inside cached blocks, and
checks every read against the sha256 it kept.  Afterwards the host checks
the origin image file against the guest's checksums (the data really reached
the origin), and the node's counters show the cache served the hot reads."""

import os

from hostcache import KiB, MiB
from hostcache.check import check, check_eq
from hostcache.guest import Guest, hostcache_disk, plain_disk, verify_chunks
from hostcache.procs import tmpdir
from hostcache.qemu import make_file
from hostcache.qmp import node_stats
from hostcache.runner import main

WORK = tmpdir()
DISK = 64 * MiB
VERIFY = {'chunks': 16, 'chunk': 64 * KiB, 'hot': 4, 'rounds': 4}


def boot_verify(name, disk_args, seed):
    g = Guest(WORK, disk_args, job='verify',
              params=dict(VERIFY, seed=seed), name=name)
    try:
        res = g.wait_done()
        stats = (node_stats(g.qmp, 'hc0')
                 if any('hc0' in a for a in disk_args) else None)
    finally:
        g.quit()
    print(f'  {name}: guest booted and ran in {g.elapsed:.1f}s '
          f'(userspace at {res.boot.get("uptime")}s guest time)')
    return res, stats


def check_verified(res, origin):
    check_eq(res.status, 'ok', f'guest result ({res.fields}):\n{res!r}')
    for step in ('write', 'readback', 'hot', 'patch', 'final'):
        check(res.steps.get(step, (False,))[0], f'step {step}: {res!r}')
    check_eq(len(res.chunks), VERIFY['chunks'], 'chunks reported')
    bad = verify_chunks(origin, res.chunks)
    check(not bad, f'origin differs from what the guest wrote: {bad}')


def check_common_stats(st, mode):
    n, ch = VERIFY['chunks'], VERIFY['chunk']
    hot_bytes = VERIFY['hot'] * VERIFY['rounds'] * ch
    check_eq(st['mode'], mode, 'mode')
    check_eq(st['origin-errors'], 0, 'origin-errors')
    # N chunk writes + one patch per hot chunk, at least.
    check(st['writes'] >= n + VERIFY['hot'], f'writes {st["writes"]}')
    check(st['write-bytes'] >= n * ch, f'write-bytes {st["write-bytes"]}')
    check(st['read-hits'] > 0, f'no read hits: {st}')
    # The hot set was read (and admitted) before its rounds: all hits.
    check(st['read-hit-bytes'] >= hot_bytes,
          f'read-hit-bytes {st["read-hit-bytes"]} < hot reads {hot_bytes}')


def test_write_through_verified_in_guest_and_on_origin():
    origin = make_file(os.path.join(WORK, 'wt.img'), DISK)
    res, st = boot_verify('write-through',
                          hostcache_disk(origin, mode='write-through',
                                         ram_size=32 * MiB), seed=11)
    check_verified(res, origin)
    check_common_stats(st, 'write-through')
    # Write-through caches what the guest wrote: its read-back hits too.
    n, ch = VERIFY['chunks'], VERIFY['chunk']
    want = (n + VERIFY['hot'] * VERIFY['rounds']) * ch
    check(st['read-hit-bytes'] >= want,
          f'read-hit-bytes {st["read-hit-bytes"]} < {want}: written '
          f'chunks were not served from the cache')


def test_write_around_verified_in_guest_and_on_origin():
    origin = make_file(os.path.join(WORK, 'wa.img'), DISK)
    res, st = boot_verify('write-around',
                          hostcache_disk(origin, mode='write-around',
                                         ram_size=32 * MiB), seed=22)
    check_verified(res, origin)
    check_common_stats(st, 'write-around')
    # Write-around does not cache writes: the first read-back misses.
    n, ch = VERIFY['chunks'], VERIFY['chunk']
    check(st['read-miss-bytes'] >= n * ch,
          f'read-miss-bytes {st["read-miss-bytes"]} < {n * ch}: written '
          f'data was served from the cache in write-around mode')

    # The host-side check can fail: one flipped byte is found.
    off = res.chunks[0][0] + 100
    with open(origin, 'r+b') as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xff]))
    bad = verify_chunks(origin, res.chunks)
    check_eq([b[0] for b in bad], [res.chunks[0][0]], 'corrupted chunks')


def test_tiny_cache_evicts_and_stays_correct():
    # 32 blocks of 4 KiB, smaller than the hot set (4 x 64 KiB).
    origin = make_file(os.path.join(WORK, 'tiny.img'), DISK)
    res, st = boot_verify('tiny', hostcache_disk(origin, ram_size=128 * KiB),
                          seed=33)
    check_verified(res, origin)
    check(st['evictions'] > 0, f'no evictions with a 128 KiB cache: {st}')
    check(st['ram-used'] <= 128 * KiB, f'ram-used {st["ram-used"]}')


def test_guest_check_detects_lost_writes():
    # Control: a disk that drops writes (null-co) must make the guest's own
    # read-back checks fail, or the checks above prove nothing.
    res, _ = boot_verify('lossy', plain_disk(
        {'driver': 'null-co', 'node-name': 'lossy', 'size': DISK,
         'read-zeroes': True}), seed=44)
    check_eq(res.status, 'fail', f'guest result on a lossy disk:\n{res!r}')
    check(not res.steps['readback'][0], 'readback passed on a lossy disk')
    check(res.mismatches, 'no HC-MISMATCH lines')


def test_workload_job_reads_and_writes_through_cache():
    origin = make_file(os.path.join(WORK, 'wl.img'), DISK)
    g = Guest(WORK, hostcache_disk(origin, ram_size=32 * MiB),
              job='workload', name='workload',
              params={'size': 256 * KiB, 'count': 60, 'rounds': 2,
                      'wpct': 20, 'seed': 55})
    try:
        res = g.wait_done()
        st = node_stats(g.qmp, 'hc0')
    finally:
        g.quit()
    check_eq(res.status, 'ok', f'workload result:\n{res!r}')
    check_eq(len(res.workload), 2, 'workload rounds')
    reads = sum(int(r['reads']) for r in res.workload)
    writes = sum(int(r['writes']) for r in res.workload)
    check_eq(reads + writes, 120, 'operations')
    check(writes > 0 and reads > 0, f'reads {reads} writes {writes}')
    check(all(int(r['iops']) > 0 and r['errors'] == '0'
              for r in res.workload), f'round lines: {res.workload}')
    check(st['writes'] >= writes, f'node writes {st["writes"]} < {writes}')
    # 64 blocks, 120 random ops: blocks repeat, repeats hit.
    check(st['read-hits'] > 0, f'no read hits: {st}')


if __name__ == '__main__':
    main(globals())
