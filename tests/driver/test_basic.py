#!/usr/bin/python3
"""What a user of the hostcache filter relies on, seen from an NBD client
(qemu-io) of a qemu-storage-daemon export: reads are cached and counted,
every caching mode returns the data the origin holds after writes,
write-zeroes, discards and resizes, flushes and FUA writes reach the origin,
and unaligned, overlapping I/O is byte-exact, also while the cache evicts.

The origin file read with os.pread is the truth throughout.

Note: the NBD server answers the zero ranges of a read from block status,
which a filter passes through to its origin, so an NBD read of a hole never
reaches the cache.  Where stale data would hide in such a hole (after
discard, write-zeroes, resize) the same sequence is also run with qemu-io on
the hostcache node itself, where every read goes through the cache.
"""

import os
import random
import re
import time

from hostcache import KiB, MiB
from hostcache.check import check, check_eq
from hostcache.nbdkit import LoggedNbdkit
from hostcache.procs import tmpdir
from hostcache.qemu import (HostcacheExport, dumps_match_origin,
                            hostcache_opts, make_file, pread_file, qemu_io,
                            random_sources, read_dumps)
from hostcache.runner import main

WORK = tmpdir()
SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))


def image(name, size=8 * MiB):
    return make_file(os.path.join(WORK, name), size)


def fill(path, offset, byte, length):
    with open(path, 'r+b') as f:
        os.pwrite(f.fileno(), bytes([byte]) * length, offset)


def delta(after, before, keys):
    return {k: after[k] - before[k] for k in keys}


READ_KEYS = ('read-hits', 'read-misses', 'read-hit-bytes', 'read-miss-bytes')


def test_read_miss_then_hit():
    img = image('hit.img')
    fill(img, 64 * KiB, 0x42, 8 * KiB)
    hx = HostcacheExport(WORK, img, hc={'ram-size': 4 * MiB})
    try:
        s0 = hx.stats()
        check_eq(s0['ram-blocks'], 0, 'ram-blocks of a new node')
        hx.io(['read -P 0x42 64k 8k'])
        s1 = hx.stats()
        check_eq(delta(s1, s0, READ_KEYS),
                 {'read-hits': 0, 'read-misses': 1, 'read-hit-bytes': 0,
                  'read-miss-bytes': 8 * KiB}, 'first read')
        check_eq(s1['ram-blocks'], 2, 'blocks cached by the first read')
        check_eq(s1['ram-used'], 8 * KiB, 'ram-used')
        hx.io(['read -P 0x42 64k 8k'])
        s2 = hx.stats()
        check_eq(delta(s2, s1, READ_KEYS),
                 {'read-hits': 1, 'read-misses': 0, 'read-hit-bytes': 8 * KiB,
                  'read-miss-bytes': 0}, 'second read')
        # one block missing in front of two cached ones: the NBD server asks
        # block status first (sparse reads), the node answers DATA for the
        # cached blocks without asking the origin, so the server reads the
        # missing block and the cached ones as two requests: 4k from the
        # origin, the rest from the cache
        hx.io(['read -P 0x42 64k 8k', 'read 60k 12k'])
        s3 = hx.stats()
        check_eq(delta(s3, s2, READ_KEYS),
                 {'read-hits': 2, 'read-misses': 1,
                  'read-hit-bytes': 16 * KiB, 'read-miss-bytes': 4 * KiB},
                 'hit, then a read split into a miss and a hit')
        # random data, unaligned, twice: a miss then a hit, both exact
        r = hx.io(['read -v 1000003 5000', 'read -v 1000003 5000'])
        check_eq(len(dumps_match_origin(r, img, 'random data')), 2, 'reads')
        s4 = hx.stats()
        check_eq((s4['read-misses'] - s3['read-misses'],
                  s4['read-hits'] - s3['read-hits']), (1, 1),
                 '(misses, hits) of the unaligned reads')
        check(s4['hit-latency-avg-ns'] > 0 and s4['miss-latency-avg-ns'] > 0,
              f'latencies not recorded: {s4}')
        # a wrong pattern is reported: the check above can fail
        r = hx.io(['read -P 0x43 64k 8k'], check_rc=False)
        check('Pattern verification failed' in r.stdout, r.stdout)
    finally:
        hx.stop()


def test_write_through_caches_written_blocks():
    img = image('wt.img')
    hx = HostcacheExport(WORK, img, hc={'mode': 'write-through'})
    try:
        s0 = hx.stats()
        hx.io(['write -P 0x11 128k 8k'])
        s1 = hx.stats()
        check_eq((s1['writes'] - s0['writes'],
                  s1['write-bytes'] - s0['write-bytes'], s1['ram-blocks']),
                 (1, 8 * KiB, 2), '(writes, write-bytes, ram-blocks)')
        check_eq(pread_file(img, 128 * KiB, 8 * KiB), b'\x11' * 8 * KiB,
                 'origin after the write')
        hx.io(['read -P 0x11 128k 8k'])
        s2 = hx.stats()
        check_eq(delta(s2, s1, ('read-hits', 'read-misses')),
                 {'read-hits': 1, 'read-misses': 0}, 'read of written blocks')
        # a partial write drops the block (it is not fully known) ...
        hx.io(['write -P 0x22 132196 1000'])
        s3 = hx.stats()
        check_eq(s3['ram-blocks'], 1, 'ram-blocks after a partial write')
        # ... and reads after it see old and new bytes as the origin has them
        r = hx.io(['read -P 0x22 132196 1000', 'read -v 128k 8k'])
        dumps_match_origin(r, img, 'after partial write')
        check_eq(pread_file(img, 131072, 8192),
                 b'\x11' * 1124 + b'\x22' * 1000 + b'\x11' * 6068,
                 'origin after the partial write')
    finally:
        hx.stop()


def test_write_around_drops_cached_copy():
    img = image('wa.img')
    hx = HostcacheExport(WORK, img, hc={'mode': 'write-around'})
    try:
        r = hx.io(['read -v 256k 16k'])
        dumps_match_origin(r, img, 'first read')
        s1 = hx.stats()
        check_eq(s1['ram-blocks'], 4, 'ram-blocks after reading 16k')
        hx.io(['write -P 0x33 256k 8k'])
        s2 = hx.stats()
        check_eq(s2['ram-blocks'], 2, 'ram-blocks after write-around')
        check_eq(s2['invalidations'] - s1['invalidations'], 2,
                 'invalidations by the write')
        check_eq(s2['admissions'], s1['admissions'],
                 'admissions by a write-around write')
        hx.io(['read -P 0x33 256k 8k'])
        s3 = hx.stats()
        check_eq(s3['read-misses'] - s2['read-misses'], 1,
                 'read after the write misses')
        r = hx.io(['read -P 0x33 256k 8k', 'read -v 256k 16k'])
        dumps_match_origin(r, img, 'after write-around')
        s4 = hx.stats()
        check_eq(s4['read-hits'] - s3['read-hits'], 2, 'then both hit')
        check_eq(pread_file(img, 256 * KiB, 8 * KiB), b'\x33' * 8 * KiB,
                 'origin')
    finally:
        hx.stop()


def test_pass_through_caches_nothing():
    img = image('pt.img')
    hx = HostcacheExport(WORK, img, hc={'mode': 'pass-through'})
    try:
        before = pread_file(img, 0, 64 * KiB)
        r = hx.io(['read -v 0 64k', 'read -v 0 64k', 'write -P 0x44 4k 4k',
                   'read -P 0x44 4k 4k', 'read -v 0 64k'])
        after = pread_file(img, 0, 64 * KiB)
        check_eq(after, before[:4096] + b'\x44' * 4096 + before[8192:],
                 'origin after the write')
        check_eq(read_dumps(r), [(0, before), (0, before), (0, after)],
                 'pass-through reads')
        st = hx.stats()
        check_eq((st['mode'], st['ram-used'], st['ram-blocks'],
                  st['read-hits'], st['admissions']),
                 ('pass-through', 0, 0, 0, 0),
                 '(mode, ram-used, ram-blocks, read-hits, admissions)')
        check_eq(st['read-misses'], 4, 'reads counted as misses')
        check_eq(st['writes'], 1, 'writes counted')
    finally:
        hx.stop()


# Cached blocks 0..15 (64k), then write-zeroes and discards over some:
ZERO_DISCARD_OPS = [
    'write -z 4k 8k',          # blocks 1-2
    'write -z -u 16k 4k',      # block 4, may unmap
    'write -z 25000 3000',     # unaligned, inside block 6
    'discard 32k 8k',          # blocks 8-9
    'discard 48k 4k',          # block 12
]


def test_write_zeroes_and_discard_leave_no_stale_data():
    img = image('zd.img')
    hx = HostcacheExport(WORK, img, hc={'ram-size': 4 * MiB})
    try:
        dumps_match_origin(hx.io(['read -v 0 64k']), img, 'first read')
        s1 = hx.stats()
        check_eq(s1['ram-blocks'], 16, 'ram-blocks')
        before = pread_file(img, 0, 64 * KiB)
        hx.io(ZERO_DISCARD_OPS)
        s2 = hx.stats()
        check_eq(s2['discards'] - s1['discards'], 2, 'discards counted')
        check_eq(s2['writes'] - s1['writes'], 3, 'write-zeroes counted')
        # blocks 1, 2, 4, 6, 8, 9, 12 are dropped
        check_eq(s2['ram-blocks'], 16 - 7, 'ram-blocks after zeroes/discard')
        after = pread_file(img, 0, 64 * KiB)
        check_eq(after[4 * KiB:12 * KiB], bytes(8 * KiB), 'zeroed origin')
        check(after[32 * KiB:40 * KiB] != before[32 * KiB:40 * KiB],
              'discard did not change the origin: the test proves nothing')
        dumps_match_origin(hx.io(['read -v 0 64k', 'read -v 0 64k']), img,
                           'reads after zeroes/discard')
    finally:
        hx.stop()
    # the same on the node itself: every read goes through the cache
    img = image('zd2.img')
    opts = (hostcache_opts(img, ram_size='4M', discard='unmap')
            .replace('file.filename', 'file.discard=unmap,file.filename'))
    before = pread_file(img, 0, 64 * KiB)
    r = qemu_io(opts, ['read -v 0 64k', *ZERO_DISCARD_OPS, 'read -v 0 64k'])
    reads = read_dumps(r)
    check_eq(reads[0], (0, before), 'read before')
    check_eq(reads[1], (0, pread_file(img, 0, 64 * KiB)),
             'in-process read after zeroes/discard vs origin')
    check(reads[1][1] != before, 'nothing changed: the test proves nothing')


def node_size(qmp, node):
    for n in qmp.cmd('query-named-block-nodes'):
        if n['node-name'] == node:
            return n['image']['virtual-size']
    raise AssertionError(f'no node {node}')


def test_resize_shrink_then_grow():
    size, small = 8 * MiB, 6 * MiB + 1536
    img = image('rs.img', size)
    hx = HostcacheExport(WORK, img, hc={'ram-size': 4 * MiB})
    try:
        # cache the last 2 MiB + 32k of the disk
        start = small - 32 * KiB - 512
        r = hx.io([f'read -v {start} {size - start}'])
        dumps_match_origin(r, img, 'read of the tail')
        s1 = hx.stats()
        check_eq(s1['ram-blocks'], 520, 'tail blocks cached')
        hx.resize(small)
        check_eq(node_size(hx.qmp, 'hc0'), small, 'size after shrink')
        check_eq(os.path.getsize(img), small, 'origin size after shrink')
        s2 = hx.stats()
        # blocks from the new (partial) last block on are dropped
        check_eq(s2['ram-blocks'], (small // 4096) - (small - 33280) // 4096,
                 'blocks left after shrink')
        r = hx.io(['length', f'read -v {small - 8192} 8192',
                   f'read {small - 512} 1024'], check_rc=False)
        check('Request out of range' in r.stdout + r.stderr
              or 'failed' in r.stdout + r.stderr,
              f'read past the new end accepted: {r.stdout}')
        dumps_match_origin(r, img, 'after shrink')
        hx.resize(size)
        check_eq(node_size(hx.qmp, 'hc0'), size, 'size after grow')
        check_eq(pread_file(img, small, size - small), bytes(size - small),
                 'origin past the old end')
        r = hx.io([f'read -v {small - 8192} 16384', f'read -P 0 {small} '
                   f'{size - small}'])
        dumps_match_origin(r, img, 'after grow')
    finally:
        hx.stop()
    # in-process: reads of the regrown tail go through the cache
    img = image('rs2.img', size)
    tail = f'read -v {small - 8192} 16384'
    r = qemu_io(hostcache_opts(img, ram_size='4M'),
                [tail, f'truncate {small}', 'length', f'truncate {size}',
                 tail, f'read -P 0 {small} {size - small}'])
    reads = read_dumps(r)
    check_eq(len(reads), 2, 'dumps')
    check(reads[0][1] != reads[1][1], 'tail unchanged: test proves nothing')
    check_eq(reads[1][1], pread_file(img, small - 8192, 16384),
             'regrown tail vs origin')


def log_requests(origin, n_before=0, want=None, timeout=10):
    """Request lines the LoggedNbdkit origin logged after the first
    n_before."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for _, ln in origin.requests()]
        reqs = lines[n_before:]
        if want is None or any(want in ln for ln in reqs) \
                or time.monotonic() > deadline:
            return lines, reqs
        time.sleep(0.05)


def test_flush_and_fua_reach_the_origin():
    # query-blockstats has no per-node flush_operations (only BlockBackends
    # count operations), so the origin is an nbdkit export with its log
    # filter: it records each request the origin receives, with its flags.
    img = image('fl.img')
    origin = LoggedNbdkit(WORK, 'flush', ('file', f'file={img}'))
    hx = HostcacheExport(WORK, hc={'ram-size': 4 * MiB},
                         origin=origin.blockdev)
    wb = ['-t', 'writeback']   # qemu-io's default would make every write FUA
    try:
        for mode in ('write-through', 'write-around', 'pass-through'):
            hx.reopen(mode=mode)
            s0 = hx.stats()
            lines, _ = log_requests(origin)
            hx.io(['write -P 0x55 0 4k', 'flush', 'write -f -P 0x66 8k 4k'],
                  extra=wb)
            lines, reqs = log_requests(origin, len(lines), 'offset=0x2000')
            kinds = [re.search(r' (\w+) id=', ln).group(1) for ln in reqs]
            check(kinds[:3] == ['Write', 'Flush', 'Write'],
                  f'{mode}: origin saw {reqs}, want write, flush, write')
            check('offset=0x0 ' in reqs[0] and 'fua=0' in reqs[0],
                  f'{mode}: plain write reached the origin as {reqs[0]}')
            check('offset=0x2000 ' in reqs[2] and 'fua=1' in reqs[2],
                  f'{mode}: FUA write reached the origin as {reqs[2]}')
            s1 = hx.stats()
            check(s1['flushes'] > s0['flushes'], f'{mode}: flush not counted')
            check_eq(pread_file(img, 8 * KiB, 4 * KiB), b'\x66' * 4 * KiB,
                     f'{mode}: origin after the FUA write')
    finally:
        hx.stop()


class Model:
    """The disk as a byte array, and a generator of unaligned I/O."""

    def __init__(self, data, rng, srcs, bsize):
        self.data = bytearray(data)
        self.rng = rng
        self.srcs = srcs
        self.bsize = bsize

    def extent(self, span):
        rng, b = self.rng, self.bsize
        off = rng.choice([rng.randrange(span), rng.randrange(span // b) * b,
                          rng.randrange(1, span // b) * b - rng.choice(
                              [1, 511, 512, 513]), 511, b - 1, b + 1])
        ln = rng.choice([1, 511, 3000, 4096, 8191, b, b + 3000, 3 * b - 1,
                         rng.randrange(1, 3 * b)])
        return off, max(1, min(ln, len(self.data) - off, 256 * KiB))

    def ops(self, n, span):
        """n qemu-io commands; returns (commands, expected read data)."""
        cmds, want = [], []
        for _ in range(n):
            off, ln = self.extent(span)
            if self.rng.random() < 0.45:
                path, src = self.rng.choice(self.srcs)
                cmds.append(f'write -s {path} {off} {ln}')
                self.data[off:off + ln] = src[:ln]
            else:
                cmds.append(f'read -v {off} {ln}')
                want.append((off, bytes(self.data[off:off + ln])))
        return cmds, want


def run_model(bsize, ram, size, nops, span, tag):
    rng = random.Random(SEED)
    img = image(f'{tag}.img', size)
    model = Model(pread_file(img, 0, size), rng,
                  random_sources(WORK, rng, 8), bsize)
    hx = HostcacheExport(WORK, img, hc={'block-size': bsize, 'ram-size': ram,
                                        'seq-cutoff': 0})
    try:
        for rnd in range(2):
            cmds, want = model.ops(nops, span)
            got = read_dumps(hx.io(cmds))
            check_eq(len(got), len(want), 'number of reads')
            for i, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    raise AssertionError(
                        f'seed {SEED}: {tag} round {rnd} read {i} at '
                        f'{w[0]}+{len(w[1])} returned wrong data')
        check(pread_file(img, 0, size) == model.data,
              f'seed {SEED}: {tag}: origin differs from the model')
        return hx.stats()
    finally:
        hx.stop()


def test_unaligned_overlapping_io_4k():
    st = run_model(4 * KiB, 4 * MiB, 2 * MiB, 150, 512 * KiB, 'ua4k')
    check(st['read-hits'] > 0 and st['read-misses'] > 0, f'no hits: {st}')


def test_unaligned_overlapping_io_64k():
    st = run_model(64 * KiB, 4 * MiB, 2 * MiB, 150, 1 * MiB, 'ua64k')
    check(st['read-hits'] > 0 and st['read-misses'] > 0, f'no hits: {st}')


def test_unaligned_io_with_evictions_4k():
    st = run_model(4 * KiB, 64 * KiB, 2 * MiB, 150, 512 * KiB, 'ev4k')
    check(st['evictions'] > 0, f'no evictions: {st}')
    check(st['read-hits'] > 0, f'no hits: {st}')
    check(st['ram-used'] <= 64 * KiB, f'ram-used over the limit: {st}')


def test_unaligned_io_with_evictions_64k():
    st = run_model(64 * KiB, 256 * KiB, 2 * MiB, 150, 1 * MiB, 'ev64k')
    check(st['evictions'] > 0, f'no evictions: {st}')
    check(st['ram-used'] <= 256 * KiB, f'ram-used over the limit: {st}')


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
