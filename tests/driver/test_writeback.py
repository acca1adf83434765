#!/usr/bin/python3
"""Crash safety and error handling of hostcache's write-back mode (RAM tier).

What a guest may rely on, as with a disk's volatile write cache: a flush (or
a FUA write) completes only once every write acknowledged before it is on
the origin and the origin is flushed; unflushed data may be lost on a crash
but never replaced by older data or garbage; reads see the newest data;
discard / write-zeroes / bypassing writes keep their order with cached
writes; origin errors fail the flush and keep the data dirty; close,
reopen and migration write everything back first.

The client is hostcache.nbd (simple replies, pipelined), so a test
knows exactly which writes were acknowledged and which flushes completed.
Every byte a test writes is a function of (write id, absolute offset)
(Pattern), so each sector of the origin can be attributed to the one write
that put it there, or to the initial content.

Environment: HC_SEED (repeat a run), HC_CRASH_CYCLES (crash cycles, default
7: each configuration once), HC_CRASH_SECONDS (longest run before the kill,
default 2.5), HC_SOAK (a factor for the other long-running parts, default 1;
`make soak` sets it).
"""

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time

from hostcache import KiB, MiB
from hostcache.check import check, check_eq, poll
from hostcache.fio import Fio
from hostcache.lines import complete_text
from hostcache.nbd import NBDClient, NBDError
from hostcache.nbdkit import LoggedNbdkit
from hostcache.paths import QEMU_IMG, QEMU_SYSTEM
from hostcache.procs import PROCS, run, tmpdir
from hostcache.qemu import (HostcacheExport, StorageDaemon, make_file,
                            pread_file, qemu_io, read_dumps)
from hostcache.qmp import QMPError, connect_qmp, node_stats
from hostcache.runner import main

WORK = tmpdir('hcwb-')
SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
CRASH_CYCLES = int(os.environ.get('HC_CRASH_CYCLES', 7))   # each variant
CRASH_SECONDS = float(os.environ.get('HC_CRASH_SECONDS', 2.5))
SOAK = int(os.environ.get('HC_SOAK', 1))
EIO = 5
HOUR_MS = 3600000


def subdir(name):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    return d


def wb_export(d, img=None, origin=None, **hc):
    """HostcacheExport in write-back mode; hc options by QAPI name."""
    return HostcacheExport(d, img, origin=origin, name='qsd0',
                           hc={'mode': 'write-back', **hc})


class IothreadExport(HostcacheExport):
    """HostcacheExport whose NBD export (and so both nodes) runs in an
    iothread: requests, the destager and QMP's main loop in two threads."""

    def __init__(self, workdir, img, hc, name='qsd'):
        self.qsd = StorageDaemon(workdir, name=name)
        self.qmp = self.qsd.qmp
        self.qmp.cmd('object-add', **{'qom-type': 'iothread', 'id': 'io0'})
        self.qmp.cmd('blockdev-add', driver='file', filename=img,
                     discard='unmap', **{'node-name': 'origin'})
        self.hc = {'discard': 'unmap', **hc}
        self.qmp.cmd('blockdev-add', driver='hostcache', file='origin',
                     **{'node-name': 'hc0', **self.hc})
        self.sock = os.path.join(workdir, 'hc0.nbd')
        self.qmp.cmd('nbd-server-start',
                     addr={'type': 'unix', 'data': {'path': self.sock}})
        self.qmp.cmd('block-export-add', type='nbd', id='hc0', name='hc0',
                     writable=True, iothread='io0', **{'node-name': 'hc0'})
        self.opts = (f'driver=nbd,server.type=unix,server.path={self.sock},'
                     f'export=hc0')


def connect(hx):
    return NBDClient(hx.sock, 'hc0')


class Pattern:
    """Data of write `wid` at absolute byte offset x: pad[x] ^ key(wid)[x%8].
    The pad makes misplaced data visible, the key tells writes apart (two
    writes agree on a byte with probability 1/256, on 8 bytes never)."""

    def __init__(self, rng, size):
        self.size = size
        self.pad = rng.randbytes(size)
        self.salt = rng.randbytes(8)

    def key(self, wid):
        k = hashlib.blake2b(wid.to_bytes(8, 'little'), digest_size=8,
                            key=self.salt).digest()
        return k

    def data(self, wid, a, b):
        n = b - a
        if n <= 0:
            return b''
        k = self.key(wid)
        s = a % 8
        mask = (k * (n // 8 + 2))[s:s + n]
        return (int.from_bytes(self.pad[a:b], 'little') ^
                int.from_bytes(mask, 'little')).to_bytes(n, 'little')


def first_diff(a, b):
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]),
                min(len(a), len(b)))


# ---- a. crash oracle: SIGKILL with I/O in flight ---------------------------

# Cache configurations the crash cycles go through, in turn: flush-driven
# (the destager idle), destager and writers over max-dirty busy, small and
# large cache blocks, sequential streams bypassing the cache.
CRASH_VARIANTS = [
    {'ram-size': 8 * MiB, 'max-dirty-age-ms': 5000},
    {'ram-size': 512 * KiB, 'max-dirty': 128 * KiB, 'max-dirty-age-ms': 10},
    {'ram-size': 1 * MiB, 'max-dirty': 256 * KiB, 'max-dirty-age-ms': 100,
     'block-size': 512, 'seq-cutoff': 64 * KiB},
    {'ram-size': 2 * MiB, 'max-dirty': 1 * MiB, 'max-dirty-age-ms': 50,
     'block-size': 64 * KiB, 'seq-cutoff': 128 * KiB},
    {'ram-size': 4 * MiB, 'max-dirty': 64 * KiB, 'max-dirty-age-ms': 1000,
     'block-size': 16 * KiB},
    {'ram-size': 1 * MiB, 'max-dirty': 256 * KiB, 'max-dirty-age-ms': 20,
     'seq-cutoff': 64 * KiB, 'iothread': True},
    {'ram-size': 8 * MiB, 'max-dirty-age-ms': 5000, 'block-size': 8 * KiB,
     'iothread': True},
]


class Write:
    """A write (or, with zero, a write-zeroes) the crash writer sent."""
    __slots__ = ('wid', 'off', 'end', 'fua', 'zero', 'sent', 'ack', 'err')

    def __init__(self, wid, off, end, fua, sent, zero=False):
        self.wid, self.off, self.end, self.fua = wid, off, end, fua
        self.zero = zero
        self.sent, self.ack, self.err = sent, None, None

    def data(self, pat, a, b):
        return bytes(b - a) if self.zero else pat.data(self.wid, a, b)


class Flush:
    __slots__ = ('sent', 'done', 'err')

    def __init__(self, sent):
        self.sent, self.done, self.err = sent, None, None


class CrashWriter:
    """Random pipelined writes, FUA writes, flushes and checked reads over
    [0, size), logged with a logical clock.  In-flight requests never
    overlap, so the writes covering any byte are totally ordered."""

    def __init__(self, client, rng, pat, size, qd, p_flush=0.04,
                 p_read=0.08, p_fua=0.08, p_zero=0.0):
        self.c, self.rng, self.pat, self.size, self.qd = (client, rng, pat,
                                                           size, qd)
        self.p_flush, self.p_read, self.p_fua = p_flush, p_read, p_fua
        self.p_zero = p_zero
        self.clock = 0
        self.writes, self.flushes = [], []
        self.model = bytearray()        # newest acknowledged data
        self.busy = {}                  # handle -> (a, b) of in-flight I/O
        self.ops = {}                   # handle -> Write | Flush | read
        self.stream = None              # [next offset, writes left]
        self.errors = []
        self.reads_checked = 0
        self.stop = threading.Event()
        self.ended = None

    def tick(self):
        self.clock += 1
        return self.clock

    def overlaps(self, a, b):
        return any(a < y and x < b for x, y in self.busy.values())

    def extent(self):
        rng, size = self.rng, self.size
        if self.stream:
            off = self.stream[0]
            n = min(rng.choice([16, 32, 64]) * KiB, size - off)
            self.stream[0] += n
            self.stream[1] -= 1
            if self.stream[1] <= 0 or self.stream[0] >= size:
                self.stream = None
            return off, off + n
        if rng.random() < 0.03:
            self.stream = [rng.randrange(size // 2) // 4096 * 4096,
                           rng.randrange(4, 24)]
            return self.extent()
        n = rng.choice([512, 1024, 4096, 8192, 16384, 65536,
                        rng.randrange(512, 65537)])
        kind = rng.random()
        if kind < 0.35:                 # 4 KiB aligned
            n = max(4096, n // 4096 * 4096)
            off = rng.randrange(0, size - n + 1, 4096)
        elif kind < 0.7:                # sector aligned
            n = max(512, n // 512 * 512)
            off = rng.randrange(0, size - n + 1, 512)
        else:                           # byte unaligned
            off = rng.randrange(0, size - n + 1)
        return off, off + n

    def submit_one(self):
        rng = self.rng
        r = rng.random()
        if r < self.p_flush:
            h = self.c.submit_flush()
            f = Flush(self.tick())
            self.flushes.append(f)
            self.ops[h] = f
            return True
        for _ in range(8):
            a, b = self.extent()
            if not self.overlaps(a, b):
                break
        else:
            return False
        if r < self.p_flush + self.p_read:
            h = self.c.submit_read(a, b - a)
            self.ops[h] = ('read', a, bytes(self.model[a:b]))
        else:
            wid = len(self.writes) + 1
            fua = rng.random() < self.p_fua
            zero = rng.random() < self.p_zero
            w = Write(wid, a, b, fua, self.tick(), zero)
            self.writes.append(w)
            if zero:
                h = self.c.submit_write_zeroes(a, b - a, fua=fua,
                                               no_hole=rng.random() < 0.5)
            else:
                h = self.c.submit_write(a, self.pat.data(wid, a, b), fua=fua)
            self.ops[h] = w
        self.busy[h] = (a, b)
        return True

    def complete_one(self):
        h, err, data = self.c.reply()
        op = self.ops.pop(h)
        self.busy.pop(h, None)
        t = self.tick()
        if isinstance(op, Write):
            op.ack, op.err = t, err
            if err:
                self.errors.append(f'write {op.wid} failed: errno {err}')
            else:
                self.model[op.off:op.end] = op.data(self.pat, op.off, op.end)
        elif isinstance(op, Flush):
            op.done, op.err = t, err
            if err:
                self.errors.append(f'flush failed: errno {err}')
        else:
            _, a, want = op
            self.reads_checked += 1
            if err or data != want:
                i = first_diff(data or b'', want)
                self.errors.append(f'read {a}+{len(want)} returned wrong data'
                                   f' (errno {err}, first bad byte {a + i})')

    def drain(self):
        while self.c.in_flight():
            self.complete_one()

    def run(self):
        try:
            while not self.stop.is_set():
                while self.c.in_flight() < self.qd and self.submit_one():
                    pass
                self.complete_one()
        except (OSError, ConnectionError) as e:
            self.ended = e
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.ended = e
            self.errors.append(f'writer: {e!r}')


def check_crash_image(wr, pat, initial, final):
    """The oracle; returns counters, raises with a description."""
    done = [f for f in wr.flushes if f.done is not None and f.err == 0]
    last_flush = max((f.sent for f in done), default=0)

    def durable(w):
        return w.ack is not None and w.err == 0 and (w.fua or
                                                     w.ack < last_flush)

    size = len(initial)
    nsec = size // 512
    per_sector = [[] for _ in range(nsec)]
    for w in wr.writes:             # in sending order
        for s in range(w.off // 512, (w.end - 1) // 512 + 1):
            per_sector[s].append(w)
    counts = {'durable': 0, 'newer': 0, 'lost': 0, 'untouched': 0}
    problems = []
    for s in range(nsec):
        s0, s1 = s * 512, s * 512 + 512
        ws = per_sector[s]
        cuts = {s0, s1}
        for w in ws:
            cuts.add(max(w.off, s0))
            cuts.add(min(w.end, s1))
        cuts = sorted(cuts)
        for a, b in zip(cuts, cuts[1:]):
            cov = [w for w in ws if w.off <= a and w.end >= b]
            got = final[a:b]
            di = max((i for i, w in enumerate(cov) if durable(w)),
                     default=-1)
            allowed = ([('initial', initial[a:b])] if di < 0 else
                       [(cov[di], cov[di].data(pat, a, b))])
            allowed += [(w, w.data(pat, a, b)) for w in cov[di + 1:]]
            match = next((i for i, (_, d) in enumerate(allowed) if d == got),
                         None)
            if match is not None:
                if not cov:
                    counts['untouched'] += b - a
                elif match == len(allowed) - 1:
                    counts['durable' if match == 0 and di >= 0
                           else 'newer'] += b - a
                else:
                    counts['lost'] += b - a
                continue
            # attribute the bad bytes for the report
            who = 'garbage'
            if got == initial[a:b]:
                who = 'the initial content'
            for w in cov:
                if w.data(pat, a, b) == got:
                    who = (f'write {w.wid} (sent {w.sent}, acked {w.ack}, '
                           f'fua {w.fua}, zero {w.zero})')
            dw = cov[di] if di >= 0 else None
            problems.append(
                f'bytes {a}..{b}: hold {who}; durable: '
                + (f'write {dw.wid} (acked {dw.ack})' if dw else 'initial')
                + f'; {len(cov) - di - 1} later writes allowed')
            if len(problems) >= 10:
                break
        if len(problems) >= 10:
            break
    check(not problems, f'last completed flush sent at {last_flush}; '
          'origin after the crash:\n  ' + '\n  '.join(problems))
    return counts


def crash_cycle(cycle, seed, self_test=False):
    rng = random.Random(seed)
    variant = CRASH_VARIANTS[cycle % len(CRASH_VARIANTS)]
    size = 1 * MiB
    d = subdir(f'crash{cycle}')
    img = os.path.join(d, 'origin.img')
    initial = rng.randbytes(size)
    with open(img, 'wb') as f:
        f.write(initial)
    pat = Pattern(rng, size)
    hc = {k: v for k, v in variant.items() if k != 'iothread'}
    if variant.get('iothread'):
        hx = IothreadExport(d, img, {'mode': 'write-back', **hc})
    else:
        hx = wb_export(d, img, **hc)
    c = connect(hx)
    wr = CrashWriter(c, rng, pat, size, qd=rng.choice([1, 2, 4, 8, 16]),
                     p_zero=0.05)
    wr.model[:] = initial
    th = threading.Thread(target=wr.run, daemon=True)
    kill_after = rng.uniform(0.3, CRASH_SECONDS)
    peak = {'dirty-bytes': 0, 'destaged-blocks': 0, 'sequential-bypasses': 0}
    t0 = time.monotonic()
    th.start()
    try:
        while time.monotonic() - t0 < kill_after and th.is_alive():
            st = hx.stats()
            for k in peak:
                peak[k] = max(peak[k], st[k])
            check(st['dirty-bytes'] <= variant.get('max-dirty',
                                                   variant['ram-size'] // 2),
                  f'dirty-bytes over max-dirty: {st}')
            time.sleep(rng.uniform(0.005, 0.05))
        os.kill(hx.qsd.proc.pid, signal.SIGKILL)
        th.join(30)
        check(not th.is_alive(), 'writer did not stop after the kill')
    finally:
        wr.stop.set()
        hx.stop()
        c.sock.close()
    check(not wr.errors, f'seed {seed}: ' + '; '.join(wr.errors[:5]))
    final = pread_file(img, 0, size)
    try:
        counts = check_crash_image(wr, pat, initial, final)
    except AssertionError as e:
        raise AssertionError(f'seed {seed} (cycle {cycle}, {variant}): {e}')
    acked = sum(1 for w in wr.writes if w.ack is not None)
    flushed = sum(1 for f in wr.flushes if f.done is not None)
    print(f'  cycle {cycle} seed {seed} qd {wr.qd} kill {kill_after:.2f}s: '
          f'{len(wr.writes)} writes ({acked} acked), {flushed}/'
          f'{len(wr.flushes)} flushes, {wr.reads_checked} reads; peak '
          f'{peak}; bytes {counts}')
    tested = self_test and oracle_self_test(wr, pat, initial, final)
    return counts, peak, wr, tested


def oracle_self_test(wr, pat, initial, final):
    """The oracle must catch a durable sector reverted to older data.
    False when the run left no such sector (no flush completed, say)."""
    done = max((f.sent for f in wr.flushes if f.done and f.err == 0),
               default=0)
    for w in reversed(wr.writes):
        a = (w.off + 511) // 512 * 512
        if (w.ack and w.ack < done and a + 512 <= w.end and
                not w.zero and
                final[a:a + 512] == pat.data(w.wid, a, a + 512)):
            bad = final[:a] + initial[a:a + 512] + final[a + 512:]
            try:
                check_crash_image(wr, pat, initial, bad)
            except AssertionError as e:
                check('initial content' in str(e), f'oracle said: {e}')
                return True
            raise AssertionError('the oracle missed a reverted sector')
    return False


def test_crash_sigkill_oracle():
    rng = random.Random(SEED)
    total = {'durable': 0, 'newer': 0, 'lost': 0, 'untouched': 0}
    flushes = dirty = 0
    tested = False
    for cycle in range(CRASH_CYCLES):
        counts, peak, wr, t = crash_cycle(cycle, rng.randrange(1 << 32),
                                          self_test=not tested)
        tested = tested or t
        for k in total:
            total[k] += counts[k]
        flushes += sum(1 for f in wr.flushes if f.done is not None)
        dirty = max(dirty, peak['dirty-bytes'])
    # the runs must have had something at stake
    check(flushes > 0 and dirty > 0,
          f'no flush completed or nothing dirty: {flushes}, {dirty}')
    check(tested, 'no run left a durable sector to test the oracle with')


# ---- b. clean close and reopen write everything back -----------------------

def scatter_writes(c, rng, pat, size, n, first_wid=1):
    """n writes (aligned and not) acknowledged one by one, no flush;
    returns {offset: data} of what was written, in order."""
    out = []
    for i in range(n):
        ln = rng.choice([512, 4096, 3000, 65536, 12345])
        off = rng.randrange(0, size - ln) if i % 2 else \
            rng.randrange(0, size - ln, 4096)
        data = pat.data(first_wid + i, off, off + ln)
        c.write(off, data)
        out.append((off, data))
    return out


def apply(model, writes):
    for off, data in writes:
        model[off:off + len(data)] = data


def check_file(img, model, what):
    got = pread_file(img, 0, len(model))
    if got != model:
        i = first_diff(got, model)
        raise AssertionError(f'{what}: origin differs from the acknowledged '
                             f'writes from byte {i} on')


def dirty_setup(tag, size=4 * MiB, **hc):
    """A write-back export over a random file with dirty data on it."""
    rng = random.Random(f'{SEED}-{tag}')
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), size)
    model = bytearray(pread_file(img, 0, size))
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS, **hc})
    c = connect(hx)
    writes = scatter_writes(c, rng, Pattern(rng, size), size, 24)
    apply(model, writes)
    st = hx.stats()
    check(st['dirty-bytes'] > 0, f'{tag}: nothing dirty: {st}')
    check(pread_file(img, 0, size) != model,
          f'{tag}: the origin has the data before any write-back: the test '
          'proves nothing')
    return hx, c, img, model


def delete_node(hx):
    """Remove the export, then the hostcache node (a clean close)."""
    hx.qmp.cmd('block-export-del', id='hc0')
    poll('export removal', lambda: not hx.qmp.cmd('query-block-exports'))
    try:
        hx.qmp.cmd('blockdev-del', **{'node-name': 'hc0'})
    except ConnectionError:
        hx.qsd.proc.wait(10)
        raise AssertionError(f'qemu-storage-daemon died (status '
                             f'{hx.qsd.proc.returncode}) at blockdev-del: '
                             f'{hx.qsd.log_text()[-2000:]}')


def check_clean_exit(hx, how, timeout=60):
    """Wait for the daemon to exit after `how`; it must exit 0."""
    try:
        rc = hx.qsd.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f'qemu-storage-daemon did not exit on {how}')
    check(rc == 0, f'qemu-storage-daemon exited {rc} on {how}: '
          f'{hx.qsd.log_text()[-2000:]}')


def close_case(how):
    hx, c, img, model = dirty_setup(f'close-{how}')
    try:
        if how == 'blockdev-del':
            c.close()
            delete_node(hx)
            check(hx.alive(), 'qemu-storage-daemon died')
        elif how == 'sigterm':
            hx.qsd.proc.send_signal(signal.SIGTERM)
            check_clean_exit(hx, how)
        else:
            try:
                hx.qmp.cmd('quit')
            except ConnectionError:
                pass
            check_clean_exit(hx, how)
        check_file(img, model, f'after {how}')
        check('loses data' not in hx.qsd.log_text(), hx.qsd.log_text())
    finally:
        c.sock.close()
        hx.stop()


def test_close_writes_back():
    # (i) blockdev-del of the node, (ii) SIGTERM and (iii) QMP quit with the
    # client still connected: every acknowledged write reaches the origin
    fails = []
    for how in ('blockdev-del', 'sigterm', 'quit'):
        try:
            close_case(how)
        except AssertionError as e:
            fails.append(f'{how}: {e}')
    check(not fails, '\n'.join(fails))


def test_dirty_node_without_parent_writes_back():
    # The export goes, the node stays (as when a device is unplugged before
    # blockdev-del): its dirty data still ages out to the origin.
    hx, c, img, model = dirty_setup('orphan', **{'max-dirty-age-ms': 300})
    try:
        c.close()
        hx.qmp.cmd('block-export-del', id='hc0')
        poll('export removal', lambda: not hx.qmp.cmd('query-block-exports'))
        poll('dirty data to age out to the origin',
             lambda: not hx.alive() or pread_file(img, 0, len(model)) == model)
        check(hx.alive(), f'qemu-storage-daemon died (status '
              f'{hx.qsd.proc.returncode}): {hx.qsd.log_text()[-2000:]}')
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes')
    finally:
        hx.stop()


def test_reopen_writes_back():
    # QEMU flushes every node before a reopen, so each reopen below writes
    # back; the driver's own prepare must do it too (mode or size change)
    # and the data must then be on the origin, with nothing dirty.
    hx, c, img, model = dirty_setup('reopen', **{'ram-size': 8 * MiB})
    rng = random.Random(f'{SEED}-reopen2')
    pat = Pattern(rng, 4 * MiB)
    try:
        steps = [{'mode': 'write-through'}, {'mode': 'write-back'},
                 {'ram-size': 16 * MiB}, {'ram-size': 4 * MiB},
                 {'mode': 'write-around'}, {'mode': 'write-back'},
                 {'mode': 'pass-through'}, {'mode': 'write-back'},
                 {'max-dirty': 64 * KiB}]
        for i, opts in enumerate(steps):
            hx.reopen(**opts)
            st = hx.stats()
            check_eq(st['dirty-bytes'], 0, f'dirty-bytes after {opts}')
            check_file(img, model, f'after reopen with {opts}')
            if st['mode'] == 'write-back':
                apply(model, scatter_writes(c, rng, pat, 4 * MiB, 12,
                                            100 * (i + 1)))
                check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        check_eq(hx.stats()['ram-limit'], 4 * MiB, 'ram-limit')
        check_eq(c.read(0, 4 * MiB), bytes(model), 'reads after the reopens')
        c.close()
    finally:
        hx.stop()


def test_resize_with_dirty_data():
    # block_resize with dirty blocks on both sides of the new end: the ones
    # past it reach the origin before it is cut (as on a disk), the others
    # stay cached and reach it at the flush
    size = 4 * MiB
    small = 3 * MiB + 1536
    hx, c, img, model = dirty_setup('resize', size=size)
    try:
        rng = random.Random(f'{SEED}-resize2')
        pat = Pattern(rng, size)
        for off in (small - 6000, small + 100, size - 4096):
            data = pat.data(off, off, off + 5000 if off < size - 5000 else
                            size)
            c.write(off, data)
            model[off:off + len(data)] = data
        check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        c.close()
        for n in (small, size):
            try:
                hx.resize(n)
            except ConnectionError:
                hx.qsd.proc.wait(10)
                raise AssertionError(
                    f'qemu-storage-daemon died (status '
                    f'{hx.qsd.proc.returncode}) at block_resize {n}: '
                    f'{hx.qsd.log_text()[-2000:]}')
        model[small:] = bytes(size - small)
        c = connect(hx)
        check_eq(c.read(0, size), bytes(model), 'reads after the resizes')
        c.flush()
        check_file(img, model, 'after the resizes and a flush')
        c.close()
    finally:
        hx.stop()


# ---- c. flushes reach the origin -------------------------------------------
#
# query-blockstats counts operations only for BlockBackends: a child node's
# flush_operations stays 0 (seen on this QEMU).  So the origin here is an
# nbdkit export of the file with its log filter, which records every request
# the origin receives.

def test_flush_reaches_origin():
    rng = random.Random(f'{SEED}-flush')
    size = 4 * MiB
    d = subdir('flush')
    img = make_file(os.path.join(d, 'origin.img'), size)
    model = bytearray(pread_file(img, 0, size))
    origin = LoggedNbdkit(d, 'nbdkit', ('file', f'file={img}'))
    pat = Pattern(rng, size)
    hx = wb_export(d, origin=origin.blockdev,
                   **{'max-dirty-age-ms': HOUR_MS, 'ram-size': 16 * MiB})
    try:
        c = connect(hx)
        n0 = len(origin.requests())
        s0 = hx.stats()
        writes = scatter_writes(c, rng, pat, size, 12)
        apply(model, writes)
        s1 = hx.stats()
        check(s1['dirty-bytes'] > 0 and s1['destage-backlog'] > 0,
              f'nothing dirty or queued: {s1}')
        reqs = origin.requests()[n0:]
        check(not [r for r in reqs if r[0] in ('Write', 'Flush')],
              f'the origin got writes before any flush: {reqs[:5]}')
        check(pread_file(img, 0, size) != model,
              'the origin has the data before the flush')
        check_eq(c.read(0, size), bytes(model), 'reads of dirty data')
        c.flush()
        s2 = hx.stats()
        reqs = origin.requests()[n0:]
        kinds = [k for k, _ in reqs]
        check('Flush' in kinds and 'Write' in kinds,
              f'flush: origin saw {kinds[:20]}')
        check(max(i for i, k in enumerate(kinds) if k == 'Write') <
              max(i for i, k in enumerate(kinds) if k == 'Flush'),
              f'origin flushed before the last write-back: {kinds}')
        check_eq((s2['dirty-bytes'], s2['destage-backlog']), (0, 0),
                 '(dirty-bytes, destage-backlog) after the flush')
        check_eq(s2['flushes'] - s0['flushes'], 1, 'flushes counted')
        check(s2['destaged-blocks'] > s0['destaged-blocks'],
              f'nothing destaged: {s2}')
        check_file(img, model, 'after the flush')
        # a FUA write is on the origin (and flushed) when acknowledged
        n1 = len(reqs) + n0
        off, data = 3 * MiB + 100, pat.data(999, 3 * MiB + 100, 3 * MiB + 9000)
        c.write(off, data, fua=True)
        model[off:off + len(data)] = data
        check_file(img, model, 'after the FUA write')
        kinds = [k for k, ln in origin.requests()[n1:]]
        fua = [ln for k, ln in origin.requests()[n1:]
               if k == 'Write' and 'fua=1' in ln]
        check('Flush' in kinds or fua, f'FUA write: origin saw {kinds}')
        st = hx.stats()
        check(st['flush-latency-avg-ns'] > 0, f'flush latency: {st}')
        # dirty data older than max-dirty-age-ms reaches the origin unasked
        hx.reopen(**{'max-dirty-age-ms': 200})
        n2 = len(origin.requests())
        apply(model, scatter_writes(c, rng, pat, size, 8, 2000))
        check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        poll('dirty data to age out to the origin',
             lambda: pread_file(img, 0, size) == model)
        poll('dirty-bytes to reach 0', lambda: not hx.stats()['dirty-bytes'])
        check([k for k, _ in origin.requests()[n2:]].count('Write') > 0,
              'no writes at the origin')
        c.close()
    finally:
        hx.stop()


def test_flush_latency_stats():
    # One flush writing back 4 MiB, then two with nothing to do (the file's
    # own flush is skipped when nothing was written): p99 of fewer than 100
    # samples is the largest, so never below the average (a histogram
    # bucket is within 1/8 of its values); the average is over all three.
    d = subdir('flushlat')
    img = make_file(os.path.join(d, 'origin.img'), 8 * MiB)
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS,
                              'ram-size': 16 * MiB})
    try:
        c = connect(hx)
        for i in range(64):
            c.write(i * 64 * KiB, bytes([i + 1]) * 64 * KiB)
        for _ in range(3):
            c.flush()
        st = hx.stats()
        check_eq(st['flushes'], 3, 'flushes')
        avg, p99 = st['flush-latency-avg-ns'], st['flush-latency-p99-ns']
        check(avg > 0 and p99 * 2 >= avg,
              f'flush-latency-p99-ns {p99} below half the average {avg} '
              f'of one slow and two fast flushes')
        c.close()
    finally:
        hx.stop()


# ---- d. max-dirty bounds the dirty data ------------------------------------

def test_max_dirty_bound():
    rng = random.Random(f'{SEED}-maxdirty')
    size, max_dirty = 8 * MiB, 256 * KiB
    d = subdir('maxdirty')
    img = make_file(os.path.join(d, 'origin.img'), size)
    hx = wb_export(d, img, **{'ram-size': 4 * MiB, 'max-dirty': max_dirty,
                              'max-dirty-age-ms': HOUR_MS})
    try:
        c = connect(hx)
        wr = CrashWriter(c, rng, Pattern(rng, size), size, qd=16, p_flush=0,
                         p_read=0.05, p_fua=0)
        wr.model[:] = pread_file(img, 0, size)
        th = threading.Thread(target=wr.run, daemon=True)
        th.start()
        peak, samples = 0, 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3 * SOAK and th.is_alive():
            st = hx.stats()
            samples += 1
            peak = max(peak, st['dirty-bytes'])
            check(st['dirty-bytes'] <= max_dirty,
                  f'dirty-bytes {st["dirty-bytes"]} over max-dirty '
                  f'{max_dirty}')
        wr.stop.set()
        th.join(30)
        check(not wr.ended and not wr.errors, f'{wr.ended} {wr.errors[:3]}')
        wr.drain()
        check(not wr.errors, '; '.join(wr.errors[:3]))
        st = hx.stats()
        print(f'  {len(wr.writes)} writes, {samples} samples, peak dirty '
              f'{peak}, destaged {st["destaged-blocks"]}')
        check(peak > 0 and st['destaged-blocks'] > 0,
              f'nothing dirty or destaged: peak {peak}, {st}')
        check_eq(st['destage-errors'], 0, 'destage-errors')
        c.flush()
        check_file(img, wr.model, 'after the flush')
        c.close()
    finally:
        hx.stop()


# ---- e. origin errors (blkdebug between hostcache and the file) ------------
#
# blkdebug: a rule on event 'none' is active from the open on; 'once'
# removes it after its first error; iotype limits it to writes or flushes.

def blkdebug_setup(tag, rules, size=4 * MiB, **hc):
    rng = random.Random(f'{SEED}-{tag}')
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), size)
    initial = pread_file(img, 0, size)
    origin = {'driver': 'blkdebug', 'inject-error': rules,
              'image': {'driver': 'file', 'filename': img}}
    hx = wb_export(d, origin=origin, **{'max-dirty-age-ms': HOUR_MS,
                                        'ram-size': 8 * MiB, **hc})
    c = connect(hx)
    model = bytearray(initial)
    apply(model, scatter_writes(c, rng, Pattern(rng, size), size, 16))
    check(hx.stats()['dirty-bytes'] > 0, f'{tag}: nothing dirty')
    return hx, c, img, initial, model


def flush_errno(c):
    try:
        c.flush()
    except NBDError as e:
        return e.errno
    return 0


def test_origin_write_error_once():
    hx, c, img, initial, model = blkdebug_setup('err-once', [
        {'event': 'none', 'iotype': 'write', 'once': True, 'errno': EIO}])
    try:
        s0 = hx.stats()
        check_eq(flush_errno(c), EIO, 'first flush (one origin write fails)')
        s1 = hx.stats()
        check_eq(s1['destage-errors'] - s0['destage-errors'], 1,
                 'destage-errors')
        check(s1['dirty-bytes'] > 0, f'the failed block was dropped: {s1}')
        check_eq(c.read(0, len(model)), bytes(model), 'reads after the error')
        check_eq(flush_errno(c), 0, 'second flush')
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes after the retry')
        check_file(img, model, 'after the second flush')
        c.close()
    finally:
        hx.stop()
    # an origin flush error fails the guest's flush too; the next one works
    hx, c, img, initial, model = blkdebug_setup('err-flush', [
        {'event': 'none', 'iotype': 'flush', 'once': True, 'errno': EIO}])
    try:
        check_eq(flush_errno(c), EIO, 'flush (the origin flush fails)')
        check_eq(flush_errno(c), 0, 'second flush')
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes')
        check_file(img, model, 'after the second flush')
        c.close()
    finally:
        hx.stop()


def test_origin_write_error_permanent():
    hx, c, img, initial, model = blkdebug_setup('err-perm', [
        {'event': 'none', 'iotype': 'write', 'errno': EIO}],
        **{'max-dirty-age-ms': 200})
    try:
        for i in range(2):
            check_eq(flush_errno(c), EIO, f'flush {i + 1}')
        st = hx.stats()
        dirty = st['dirty-bytes']
        check(dirty > 0, f'nothing dirty after failed flushes: {st}')
        check_eq(c.read(0, len(model)), bytes(model), 'reads of dirty data')
        # the destager keeps retrying (dirty data older than 200 ms)
        e0 = st['destage-errors']
        poll('destage retries', lambda: hx.stats()['destage-errors'] >= e0 + 3)
        try:
            hx.reopen(mode='write-through')
        except QMPError as e:
            msg = e.desc
        else:
            raise AssertionError('reopen to write-through with undestageable '
                                 'dirty data succeeded')
        print(f'  reopen refused: {msg}')
        check(re.search(r'flush|written back', msg, re.I) and
              'Input/output error' in msg, f'unclear reopen error: {msg}')
        st = hx.stats()
        check_eq((st['mode'], st['dirty-bytes']), ('write-back', dirty),
                 '(mode, dirty-bytes) after the failed reopen')
        check_eq(c.read(0, len(model)), bytes(model), 'reads after reopen')
        check_eq(pread_file(img, 0, len(initial)), initial,
                 'origin (every write to it fails)')
        # removing the node cannot save the data: it must say so
        c.close()
        delete_node(hx)
        log = hx.qsd.log_text()
        print(f'  log: {log.strip()[:300]}')
        check('loses data' in log and 'hc0' in log,
              f'no data-loss error in the log: {log[-2000:]}')
    finally:
        hx.stop()


# ---- f. discard / write-zeroes / bypassing writes keep their order ---------

def check_discarded(got, before, where):
    """After a discard each byte reads as before or as zero."""
    for i, (g, b) in enumerate(zip(got, before)):
        if g != b and g != 0:
            raise AssertionError(f'{where}: byte {i} after a discard is '
                                 f'neither the old data nor zero')


def rand_extent(rng, lo, hi, maxlen):
    n = rng.choice([512, 4096, 8192, rng.randrange(1, maxlen + 1)])
    n = min(n, hi - lo)
    if rng.random() < 0.5:
        off = rng.randrange(lo, hi - n + 1, 512) if n % 512 == 0 else \
            rng.randrange(lo, hi - n + 1)
    else:
        off = rng.randrange(lo, hi - n + 1)
    return off, n


class SeqOps:
    """Acknowledged one by one: the origin must equal the byte model."""

    def __init__(self, c, rng, pat, model, lo, hi):
        self.c, self.rng, self.pat, self.model = c, rng, pat, model
        self.lo, self.hi = lo, hi
        self.wid = 1

    def write(self, off, n):
        data = self.pat.data(self.wid, off, off + n)
        self.wid += 1
        self.c.write(off, data)
        self.model[off:off + n] = data

    def zeroes(self, off, n):
        self.c.write_zeroes(off, n)
        self.model[off:off + n] = bytes(n)

    def discard(self, off, n):
        before = bytes(self.model[off:off + n])
        self.c.trim(off, n)
        got = self.c.read(off, n)
        check_discarded(got, before, f'discard {off}+{n}')
        self.model[off:off + n] = got

    def random(self, count):
        for _ in range(count):
            off, n = rand_extent(self.rng, self.lo, self.hi, 64 * KiB)
            r = self.rng.random()
            if r < 0.55:
                self.write(off, n)
            elif r < 0.7:
                self.zeroes(off, n)
            elif r < 0.85:
                self.discard(off, n)
            else:
                check_eq(self.c.read(off, n), bytes(self.model[off:off + n]),
                         f'read {off}+{n}')


def ordering_export(tag, **hc):
    d = subdir(tag)
    size = 1 * MiB
    img = make_file(os.path.join(d, 'origin.img'), size)
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS,
                              'ram-size': 4 * MiB, **hc})
    return hx, img, bytearray(pread_file(img, 0, size))


ORDER_VARIANTS = [{}, {'seq-cutoff': 16 * KiB},
                  {'block-size': 64 * KiB, 'seq-cutoff': 64 * KiB}]


def test_ordering_sequential():
    for vi, hc in enumerate(ORDER_VARIANTS):
        rng = random.Random(f'{SEED}-oseq{vi}')
        hx, img, model = ordering_export(f'oseq{vi}', **hc)
        try:
            c = connect(hx)
            ops = SeqOps(c, rng, Pattern(rng, len(model)), model, 0,
                         256 * KiB)
            # the brief's sequence: A, discard, partial B, zeroes, flush
            ops.write(0, 64 * KiB)
            ops.discard(16 * KiB, 32 * KiB)
            ops.write(20000, 10000)
            ops.zeroes(8 * KiB + 100, 16 * KiB)
            ops.write(40 * KiB, 4 * KiB)
            ops.discard(36 * KiB, 12 * KiB + 7)
            c.flush()
            check_file(img, model, f'{hc}: after the fixed sequence')
            for rnd in range(4 * SOAK):
                ops.random(40)
                # the writes since the last discard / write-zeroes are
                # still cached: the flush is what writes them back
                ops.write(rng.randrange(0, 200 * KiB), 3000)
                check(hx.stats()['dirty-bytes'] > 0,
                      'nothing dirty before the flush')
                c.flush()
                check_file(img, model, f'{hc} round {rnd}')
                check_eq(c.read(0, len(model)), bytes(model),
                         f'{hc} round {rnd}: reads')
            st = hx.stats()
            check_eq(st['destage-errors'], 0, 'destage-errors')
            c.close()
        finally:
            hx.stop()


def test_direct_request_writes_back_only_what_it_overlaps():
    # A discard, write-zeroes or bypassing write writes back the dirty
    # blocks it overlaps first (so the origin sees them in order); dirty
    # data elsewhere stays cached: a guest's small discard must not turn
    # into a write-back of the whole cache.
    hx, img, model = ordering_export('overlap', **{'seq-cutoff': 64 * KiB})
    try:
        c = connect(hx)
        ops = SeqOps(c, random.Random(f'{SEED}-overlap'),
                     Pattern(random.Random(SEED), len(model)), model, 0,
                     1 * MiB)
        stream = 768 * KiB
        for i in range(16):                     # every other block of 128K
            ops.write(i * 8 * KiB, 4 * KiB)

        def bypass():
            ops.write(stream + 100 * KiB, 4 * KiB)  # met by the 4th write
            for i in range(3):                  # 3rd on: longer than cutoff
                ops.write(stream + i * 32 * KiB, 32 * KiB)
            before = hx.stats()
            ops.write(stream + 3 * 32 * KiB, 32 * KiB)
            return before

        fails = []
        for what, fn in (
                ('discard', lambda: ops.discard(512 * KiB, 4 * KiB)),
                ('write-zeroes', lambda: ops.zeroes(600 * KiB, 4 * KiB)),
                ('bypassing write', bypass)):
            if what != 'bypassing write':
                ops.write(int(what != 'discard') * 88 * KiB + 512 * KiB,
                          8 * KiB)              # two dirty blocks, one met
            before = hx.stats()
            before = fn() or before
            after = hx.stats()
            if after['dirty-bytes'] < before['dirty-bytes'] - 4 * KiB:
                fails.append(
                    f'a {what} over one dirty block wrote back '
                    f'{after["destaged-blocks"] - before["destaged-blocks"]}'
                    f' blocks: dirty-bytes {before["dirty-bytes"]} -> '
                    f'{after["dirty-bytes"]}')
        check(hx.stats()['sequential-bypasses'] > 0, 'nothing bypassed')
        c.flush()
        check_file(img, model, 'after the flush')
        check(not fails, '; '.join(fails))
        c.close()
    finally:
        hx.stop()


def attribute(final, prev, batch, lo, hi):
    """Each sector piece of final[lo:hi] must be one op's data, zero (after
    write-zeroes or discard) or, where no write or write-zeroes covers it,
    the previous content.  Returns a list of problems."""
    cuts = set(range(lo, hi + 1, 512))
    for op in batch:
        cuts.update((max(op[1], lo), min(op[2], hi)))
    cuts = sorted(x for x in cuts if lo <= x <= hi)
    bad = []
    for a, b in zip(cuts, cuts[1:]):
        cov = [op for op in batch if op[1] <= a and op[2] >= b]
        cands = [prev[a:b]] if not any(op[0] in ('write', 'zeroes')
                                       for op in cov) else []
        if any(op[0] in ('zeroes', 'trim') for op in cov):
            cands.append(bytes(b - a))
        cands += [op[3][a - op[1]:b - op[1]] for op in cov
                  if op[0] == 'write']
        if final[a:b] not in cands:
            bad.append(f'{a}..{b} ({[op[:3] for op in cov]})')
    return bad


def test_ordering_pipelined():
    for vi, hc in enumerate(ORDER_VARIANTS):
        rng = random.Random(f'{SEED}-opipe{vi}')
        hx, img, model = ordering_export(f'opipe{vi}', **hc)
        pat = Pattern(rng, len(model))
        lo, hi = 0, 128 * KiB
        wid = 1
        try:
            c = connect(hx)
            for rnd in range(25 * SOAK):
                prev = bytes(pread_file(img, 0, len(model)))
                batch, handles = [], []
                for _ in range(rng.randrange(2, 12)):
                    off, n = rand_extent(rng, lo, hi, 32 * KiB)
                    r = rng.random()
                    if r < 0.6:
                        data = pat.data(wid, off, off + n)
                        wid += 1
                        handles.append(c.submit_write(off, data))
                        batch.append(('write', off, off + n, data))
                    elif r < 0.8:
                        handles.append(c.submit_write_zeroes(off, n))
                        batch.append(('zeroes', off, off + n, None))
                    else:
                        handles.append(c.submit_trim(off, n))
                        batch.append(('trim', off, off + n, None))
                errs = [err for _, err, _ in c.replies(len(handles))]
                check(not any(errs), f'errors {errs}')
                cached = c.read(lo, hi - lo)
                c.flush()
                final = pread_file(img, 0, len(model))
                if cached != final[lo:hi]:
                    i = first_diff(cached, final[lo:hi])
                    raise AssertionError(
                        f'{hc} round {rnd}: read before the flush differs '
                        f'from the origin after it at byte {lo + i}; batch '
                        f'{[op[:3] for op in batch]}')
                check_eq(c.read(lo, hi - lo), final[lo:hi],
                         'read after the flush')
                bad = attribute(final, prev, batch, lo, hi)
                check(not bad, f'{hc} round {rnd}: not attributable to an '
                      f'op: {bad[:5]}')
            c.close()
        finally:
            hx.stop()


# ---- g. working set 4x the cache: fio verifies, the destager works ---------

def test_fio_verify_cache_full():
    d = subdir('fio')
    disk, ram = 16 * MiB * SOAK, 4 * MiB * SOAK
    img = make_file(os.path.join(d, 'origin.img'), disk)
    hx = wb_export(d, img, **{'ram-size': ram})
    seed = SEED % 1000000 + 1
    job = ['--rw=randwrite', '--bs=4k', f'--size={disk}', '--iodepth=16',
           f'--randseed={seed}', '--verify=crc32c', '--verify_fatal=1',
           '--serialize_overlap=1',
           '--verify_state_save=0']
    try:
        Fio(d, 'wb-fill', hx.nbd_uri(),
            job + ['--do_verify=1']).wait(timeout=240)
        st = hx.stats()
        print(f'  destaged {st["destaged-blocks"]}, dirty {st["dirty-bytes"]}'
              f', evictions {st["evictions"]}')
        check(st['destaged-blocks'] > 0, f'nothing destaged: {st}')
        check(st['evictions'] > 0, f'no evictions: {st}')
        check(st['dirty-bytes'] <= ram // 2, f'over max-dirty: {st}')
        check_eq((st['destage-errors'], st['origin-errors']), (0, 0),
                 '(destage-errors, origin-errors)')
        check(hx.alive(), 'qemu-storage-daemon died')
        # flushed here (closing with dirty data is test_close_writes_back's)
        c = connect(hx)
        c.flush()
        c.close()
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes after a flush')
        try:
            hx.qmp.cmd('quit')
        except ConnectionError:
            pass
        check_clean_exit(hx, 'quit')
    finally:
        hx.stop()
    # what fio wrote is on the origin: the same job verifies the raw file
    r = run(['/usr/bin/fio', '--name=wb-fill', '--ioengine=psync',
             f'--filename={img}', '--output-format=json', *job,
             '--verify_only=1'], check_rc=False)
    out = r.stdout[r.stdout.find('{'):]
    try:
        rep = json.loads(out)['jobs'][0]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f'fio verify_only: {r.stdout[-2000:]} '
                             f'{r.stderr[-2000:]}')
    check(r.returncode == 0 and rep['error'] == 0 and
          rep['read']['io_bytes'] >= disk,
          f'verify of the origin failed: rc {r.returncode}, error '
          f'{rep["error"]}, read {rep["read"]["io_bytes"]}: '
          f'{r.stderr[-2000:]}')


# ---- h. block status reports dirty ranges as data --------------------------

def nbd_map(hx):
    r = run([QEMU_IMG, 'map', '--output=json', '--image-opts', hx.opts])
    return json.loads(r.stdout)


def data_bytes(extents, a, b):
    """Bytes of [a, b) that block status reports as data."""
    n = 0
    for e in extents:
        lo, hi = max(a, e['start']), min(b, e['start'] + e['length'])
        if hi > lo and e['data']:
            n += hi - lo
    return n


def test_block_status_reports_dirty_data():
    rng = random.Random(f'{SEED}-bs')
    d = subdir('bstat')
    size = 4 * MiB
    img = os.path.join(d, 'origin.img')
    make_file(img, size, pattern=0)             # sparse: one big hole
    model = bytearray(size)
    pat = Pattern(rng, size)
    ranges = [(1 * MiB, 1 * MiB + 64 * KiB), (2 * MiB + 1000, 2 * MiB + 4000),
              (3 * MiB + 4095, 3 * MiB + 8193)]
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS})
    try:
        c = connect(hx)
        for i, (a, b) in enumerate(ranges):
            data = pat.data(i + 1, a, b)
            c.write(a, data)
            model[a:b] = data
        check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        check_eq(pread_file(img, 0, size), bytes(size),
                 'origin before the flush')
        for when in ('before the flush', 'after the flush'):
            ext = nbd_map(hx)
            for a, b in ranges:
                check_eq(data_bytes(ext, a, b), b - a,
                         f'{when}: data bytes of {a}..{b} in {ext}')
            check_eq(data_bytes(ext, 0, 1 * MiB), 0,
                     f'{when}: data bytes of the hole 0..1M in {ext}')
            # a sparse-aware copy through the export has every byte
            out = os.path.join(d, 'copy.raw')
            run([QEMU_IMG, 'convert', '-O', 'raw', '--image-opts', hx.opts,
                 out])
            got = pread_file(out, 0, size)
            check(got == model, f'{when}: qemu-img convert copy differs from '
                  f'the written data at byte {first_diff(got, model)}')
            os.unlink(out)
            # qemu-io over NBD: structured replies, holes read from status
            r = qemu_io(hx.opts, [f'read -v {a} {b - a}' for a, b in ranges])
            check_eq([bytes(x) for _, x in read_dumps(r)],
                     [bytes(model[a:b]) for a, b in ranges],
                     f'{when}: qemu-io reads')
            c.flush()
            check_file(img, model, 'after the flush')
        c.close()
    finally:
        hx.stop()


# ---- i. live migration with dirty data -------------------------------------

class VM:
    """qemu-system-x86_64 (TCG, no guest OS) with the origin file, hostcache
    in write-back mode and a virtio-blk disk on it; stdout (where HMP
    qemu-io prints) goes to a file.

    Started paused (-S): once the firmware runs it negotiates virtio-blk
    features without a flush command, which turns the disk's write cache
    off (every write then flushed): no dirty data would stay behind."""

    IO = 'qemu-io -d /machine/peripheral/disk0/virtio-backend'

    def __init__(self, d, name, img, extra=(), disk=True, origin=None,
                 ssd=None, ssd_create=True):
        self.qmp_path = os.path.join(d, f'{name}.qmp')
        self.out_path = os.path.join(d, f'{name}.out')
        self.out = open(self.out_path, 'w')
        hc = {'driver': 'hostcache', 'node-name': 'hc0', 'file': 'origin',
              'mode': 'write-back', 'max-dirty-age-ms': HOUR_MS}
        if ssd:
            # this host's own SSD tier (the write-back journal)
            hc['ssd'] = {'driver': 'file', 'filename': ssd}
            hc['ssd-create'] = ssd_create
        argv = [QEMU_SYSTEM, '-M', 'pc', '-accel', 'tcg', '-nodefaults',
                '-display', 'none', '-m', '64', '-S',
                '-qmp', f'unix:{self.qmp_path},server=on,wait=off',
                '-blockdev', json.dumps({'node-name': 'origin', **(origin or {
                    'driver': 'file', 'filename': img})}),
                '-blockdev', json.dumps(hc)]
        if disk:
            argv += ['-device', 'virtio-blk-pci,drive=hc0,id=disk0']
        self.proc = PROCS.start([*argv, *extra], stdout=self.out,
                                stderr=subprocess.STDOUT)
        self.qmp = connect_qmp(self.qmp_path, self.proc)

    def io(self, cmd):
        """Run a qemu-io command on the disk; returns what it printed
        (complete lines: QEMU may still be writing the last one)."""
        before = os.path.getsize(self.out_path)
        self.qmp.hmp(f'{self.IO} "{cmd}"')
        return poll(f'qemu-io output of {cmd!r}',
                    lambda: (lambda t: t if re.search(
                        r'bytes at offset|failed', t) else None)(
                            complete_text(self.out_path, before)))

    def stats(self):
        return node_stats(self.qmp, 'hc0')

    def status(self):
        return self.qmp.cmd('query-status')['status']

    def stop(self):
        self.qmp.close()
        PROCS.stop(self.proc)
        self.out.close()


def migrate(src, dst, d, caps=()):
    sock = os.path.join(d, 'mig.sock')
    for vm in (src, dst):
        if caps:
            vm.qmp.cmd('migrate-set-capabilities', capabilities=[
                {'capability': c, 'state': True} for c in caps])
    dst.qmp.cmd('migrate-incoming', uri=f'unix:{sock}')
    src.qmp.cmd('migrate', uri=f'unix:{sock}')


def migration_end(vm, timeout=60):
    return poll('migration to end', lambda: (lambda st: st if st.get(
        'status') in ('completed', 'failed', 'cancelled') else None)(
            vm.qmp.cmd('query-migrate')), timeout=timeout)


def read_ok(vm, cmd):
    out = vm.io(cmd)
    check('Pattern verification failed' not in out and 'failed' not in out
          and 'bytes at offset' in out, f'{cmd}: {out}')


def test_migration_with_dirty_data():
    migration_case('mig', False)


def test_migration_with_journaled_data():
    """Write-back with an SSD tier on each host: the written data is
    flushed into the source's SSD journal (not on the origin yet) when the
    migration starts."""
    migration_case('mig-ssd', True)


def test_migration_same_host_same_ssd_file():
    """Both QEMUs on one host with one SSD tier file (or a tier on shared
    storage): the incoming node must not lock the file against the
    source, which still writes it until it hands over."""
    migration_case('mig-ssd-shared', True, shared=True)


def migration_case(tag, ssd, shared=False):
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), 16 * MiB)
    ssds = [None, None]
    if ssd:
        ssds = [os.path.join(d, f'{n}.ssd') for n in ('src', 'dst')]
        if shared:
            ssds[1] = ssds[0]
        for p in set(ssds):
            with open(p, 'wb') as f:
                f.truncate(8 * MiB)             # blank: formatted at open
    src = VM(d, 'src', img, ssd=ssds[0])
    dst = None
    try:
        src.io('write -P 0x5a 0 1M')
        src.io('write -P 0x3c 4000 5000')        # unaligned, inside the MiB
        if ssd:
            src.qmp.hmp(f'{VM.IO} "flush"')      # prints nothing
            poll('the flush', lambda: src.stats()['flushes'] > 0)
            st = src.stats()
            check(st['ssd-used'] > 0 and st['destaged-blocks'] == 0,
                  f'the flush did not go to the journal: {st}')
        check(src.stats()['dirty-bytes'] > 0, 'nothing dirty on the source')
        check(pread_file(img, 0, 4) != b'\x5a' * 4,
              'data on the origin before the migration')
        # ssd-create=off does not apply to an activation: a blank tier
        # on the destination is fine, the data comes from the source
        dst = VM(d, 'dst', img, ['-incoming', 'defer'], ssd=ssds[1],
                 ssd_create=False)
        migrate(src, dst, d)
        st = migration_end(src)
        check_eq(st['status'], 'completed', f'migration: {st}')
        want = bytearray(b'\x5a' * MiB)
        want[4000:9000] = b'\x3c' * 5000
        check(pread_file(img, 0, MiB) == want,
              'origin after the migration lacks the written data')
        poll('destination to leave inmigrate',
             lambda: dst.status() != 'inmigrate')
        check_eq(src.status(), 'postmigrate', 'source status')
        dst.qmp.cmd('cont')
        check_eq(dst.status(), 'running', 'destination status')
        read_ok(dst, 'read -P 0x5a 0 4000')
        read_ok(dst, 'read -P 0x3c 4000 5000')
        read_ok(dst, 'read -P 0x5a 9000 1039576')
        # the destination caches and writes back in its turn
        dst.io('write -P 0x77 2M 64k')
        read_ok(dst, 'read -P 0x77 2M 64k')
        dst.qmp.cmd('quit')
        dst.proc.wait(30)
        check_eq(pread_file(img, 2 * MiB, 64 * KiB), b'\x77' * 64 * KiB,
                 'origin after the destination quit')
    finally:
        src.stop()
        if dst:
            dst.stop()


def test_migration_cancelled_or_failed():
    d = subdir('migfail')
    img = make_file(os.path.join(d, 'origin.img'), 16 * MiB)
    src = VM(d, 'src', img)
    try:
        # cancelled during pre-copy (slowed down so it cannot finish)
        src.io('write -P 0x11 0 256k')
        dst = VM(d, 'dst1', img, ['-incoming', 'defer'])
        src.qmp.cmd('migrate-set-parameters', **{'max-bandwidth': 64 * KiB})
        migrate(src, dst, d)
        time.sleep(0.3)
        src.qmp.cmd('migrate_cancel')
        st = migration_end(src)
        check_eq(st['status'], 'cancelled', f'migration: {st}')
        dst.stop()
        check(src.status() in ('prelaunch', 'paused'), src.status())
        check(src.qmp.cmd('query-block')[0]['inserted']['active'],
              'source node not active')
        read_ok(src, 'read -P 0x11 0 256k')
        # failed after the switchover: the destination has no disk device,
        # so it rejects the device state after the source wrote back and
        # inactivated; the source then activates its nodes again
        src.qmp.cmd('migrate-set-parameters', **{'max-bandwidth': 1 << 30})
        src.io('write -P 0x22 1M 256k')
        check(src.stats()['dirty-bytes'] > 0, 'nothing dirty on the source')
        dst = VM(d, 'dst2', img, ['-incoming', 'defer'], disk=False)
        migrate(src, dst, d, caps=['return-path'])
        st = migration_end(src)
        check_eq(st['status'], 'failed', f'migration: {st}')
        dst.stop()
        check(src.status() in ('prelaunch', 'paused'), src.status())
        check(src.qmp.cmd('query-block')[0]['inserted']['active'],
              'source node not active again')
        check_eq(pread_file(img, 1 * MiB, 256 * KiB), b'\x22' * 256 * KiB,
                 'origin after the failed migration')
        read_ok(src, 'read -P 0x11 0 256k')
        read_ok(src, 'read -P 0x22 1M 256k')
        # the source still writes (back)
        src.io('write -P 0x33 2M 256k')
        read_ok(src, 'read -P 0x33 2M 256k')
        check(src.stats()['dirty-bytes'] > 0, 'write-back after reactivation')
        src.qmp.cmd('cont')
        check_eq(src.status(), 'running', 'source status after cont')
        read_ok(src, 'read -P 0x22 1M 256k')
        src.qmp.cmd('quit')
        src.proc.wait(30)
        check_eq(pread_file(img, 2 * MiB, 256 * KiB), b'\x33' * 256 * KiB,
                 'origin after the source quit')
    finally:
        src.stop()



def test_migration_fails_when_origin_cannot_be_written():
    # The origin refuses every write: the source cannot write back, so the
    # migration must fail (a destination would read old data) and the
    # source keeps the data, readable
    d = subdir('migerr')
    img = make_file(os.path.join(d, 'origin.img'), 16 * MiB)
    before = pread_file(img, 0, 64 * KiB)
    origin = {'driver': 'blkdebug', 'image': {'driver': 'file',
                                              'filename': img},
              'inject-error': [{'event': 'none', 'iotype': 'write',
                                'errno': EIO}]}
    src = VM(d, 'src', img, origin=origin)
    dst = None
    try:
        src.io('write -P 0x5a 0 64k')
        check(src.stats()['dirty-bytes'] > 0, 'nothing dirty on the source')
        dst = VM(d, 'dst', img, ['-incoming', 'defer'])
        migrate(src, dst, d, caps=['return-path'])
        st = migration_end(src)
        check(st['status'] != 'completed', 'migration completed although '
              'the dirty data could not be written back')
        print(f'  migration: {st["status"]}: {st.get("error-desc")}')
        dst.stop()
        check(src.qmp.cmd('query-block')[0]['inserted']['active'],
              'source node not active after the failed migration')
        check(src.stats()['dirty-bytes'] > 0, 'dirty data gone')
        read_ok(src, 'read -P 0x5a 0 64k')
        check_eq(pread_file(img, 0, 64 * KiB), before, 'origin')
    finally:
        src.stop()
        if dst:
            dst.stop()


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
