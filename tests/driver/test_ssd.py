#!/usr/bin/python3
"""The persistent SSD tier of hostcache (the `ssd` child), seen from an NBD
client of a qemu-storage-daemon export.

What a user relies on: clean blocks evicted from RAM go to the SSD and are
served from there (checked against their CRC) after a RAM miss, after a
clean restart and after a crash; no restart ever serves data older than the
origin's (before a block changes on the origin or becomes dirty in RAM its
SSD entry is durably dropped; pass-through, inactivation and activation drop
everything); damage to the SSD file costs hits, never correctness; an SSD
that is not ours, not writable or too small is refused without touching it;
an SSD that belongs to another origin or block size is reformatted; an SSD
I/O error disables the tier and the node goes on with RAM only.

The origin file read with os.pread is the truth throughout.  Reads go
through hostcache.nbd, whose simple replies make every read reach
the cache (qemu-io over NBD would answer holes from block status).  The SSD
file itself is read with hostcache.ssdfile: ssdfile.wrong_entries() lists the
entries a restart would serve with data other than the origin's, which must
always be none.

HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import shutil
import signal
import subprocess
import threading
import time

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq, poll
from hostcache.nbd import NBDClient
from hostcache.procs import booted_ago, tmpdir
from hostcache.qemu import (HostcacheExport, StorageDaemon, make_file,
                            nbd_export, pread_file)
from hostcache.qmp import QMPError, node_stats
from hostcache.runner import main

WORK = tmpdir('hcssd-')
SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
BS = 4096
FAILED_MSG = 'on the SSD tier failed'
REFORMAT_MSG = 'reformatting the SSD tier'


def subdir(name):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    return d


def blank(path, size):
    """A freshly truncated (all-zero) SSD file."""
    with open(path, 'wb') as f:
        f.truncate(size)
    return path


def file_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


class SsdExport(HostcacheExport):
    """qemu-storage-daemon with nodes 'origin' (raw file), 'ssd0' (the SSD
    tier: a raw file unless ssd_node says otherwise) and 'hc0' (hostcache
    over both), and an NBD export 'hc0'.  hc: hostcache options by their
    QAPI names."""

    def __init__(self, d, img, ssd, hc=None, ssd_node=None, name='qsd',
                 export=True, args=(), prefix=()):
        self.d, self.img, self.ssd = d, img, ssd
        self.qsd = StorageDaemon(d, args=args, name=name, prefix=prefix)
        self.qmp = self.qsd.qmp
        self.qmp.cmd('blockdev-add', **{'node-name': 'origin'},
                     driver='file', filename=img, discard='unmap')
        self.qmp.cmd('blockdev-add', **{'node-name': 'ssd0'},
                     **(ssd_node or {'driver': 'file', 'filename': ssd}))
        self.hc = {'discard': 'unmap', 'ssd': 'ssd0', **(hc or {})}
        self.qmp.cmd('blockdev-add', driver='hostcache', file='origin',
                     **{'node-name': 'hc0', **self.hc})
        self.sock = None
        if export:
            self.opts, self.sock = nbd_export(self.qsd, 'hc0', 'hc0', d)

    def client(self):
        return NBDClient(self.sock, 'hc0')

    def ssd_stats(self):
        return {k: v for k, v in self.stats().items() if k.startswith('ssd')}

    def log(self):
        return self.qsd.log_text()

    def kill(self):
        """SIGKILL: a crash of the host process."""
        os.kill(self.qsd.proc.pid, signal.SIGKILL)
        self.qsd.proc.wait(30)
        self.qsd.stop()

    def quit(self):
        """A clean stop (SIGTERM); the daemon must exit 0."""
        self.qsd.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.qsd.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError('qemu-storage-daemon ignored SIGTERM')
        log = self.log()
        self.qsd.stop()
        check(rc == 0, f'qemu-storage-daemon exited {rc}: {log[-2000:]}')
        return log

    def unexport(self):
        self.qmp.cmd('block-export-del', id='hc0')
        poll('export removal', lambda: not self.qmp.cmd('query-block-exports'))

    def reexport(self):
        self.qmp.cmd('block-export-add', type='nbd', id='hc0',
                     **{'node-name': 'hc0'}, name='hc0', writable=True)


def node_names(qmp):
    return sorted(n['node-name'] for n in qmp.cmd('query-named-block-nodes'))


def check_reads(c, img, off, ln, what, chunk=64 * KiB):
    """Read [off, off + ln) through the cache in chunks; each must equal
    the origin file."""
    end = off + ln
    while off < end:
        n = min(chunk, end - off)
        got = c.read(off, n)
        want = pread_file(img, off, n)
        if got != want:
            i = next(i for i in range(n) if got[i] != want[i])
            raise AssertionError(f'{what}: read {off}+{n} differs from the '
                                 f'origin at byte {off + i} (block '
                                 f'{(off + i) // BS})')
        off += n


def check_no_wrong_entries(ssd, img, what):
    bad = ssdfile.wrong_entries(ssd, img)
    check(not bad, f'{what}: the SSD file holds entries a restart would '
          f'serve with data other than the origin\'s: (block, slot) '
          f'{bad[:8]}')


def durable_blocks(ssd):
    return set(ssdfile.entries(ssd))


def settle(hx):
    """Wait until the demoter is idle: what the stats count as on the SSD
    is on disk, and the count stays put."""
    def quiet():
        st = hx.stats()
        time.sleep(0.2)
        return (st == hx.stats() and
                len(durable_blocks(hx.ssd)) * BS == st['ssd-used'])
    poll('the demoter to settle', quiet)


def throttled_ssd(ssd):
    """A throttle node over the SSD file (group tg0, unlimited until
    limit_ssd)."""
    return ({'driver': 'throttle', 'throttle-group': 'tg0',
             'file': {'driver': 'file', 'filename': ssd}},
            ['--object', 'throttle-group,id=tg0'])


def limit_ssd(hx):
    """From now on the SSD lets one request through, then nothing for a
    very long time."""
    hx.qmp.cmd('qom-set', path='/objects/tg0', property='limits',
               value={'bps-total': 1})


def put_on_ssd(hx, c, blocks, filler, ram):
    """Read blocks (a range of block numbers) so they are cached, then read
    filler (an offset) to push them out of RAM, until every block of them
    has a durable entry on the SSD (demotions are dropped when the demoter
    is busy, so this retries)."""
    want = set(blocks)
    for attempt in range(5):
        c.read(blocks.start * BS, len(blocks) * BS)
        for off in range(filler, filler + 3 * ram, 16 * KiB):
            c.read(off, 16 * KiB)
        try:
            poll(f'blocks {blocks} on the SSD',
                 lambda: want <= durable_blocks(hx.ssd), timeout=5)
            return
        except AssertionError:
            continue
    raise AssertionError(f'blocks {blocks} never reached the SSD: '
                         f'{hx.ssd_stats()}')


# ---- 1, 2. demotion, promotion, warm restart after a clean close ----------

def warm_setup(tag, hc=None, size=8 * MiB, ssd_size=8 * MiB):
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), size)
    ssd = blank(os.path.join(d, 'ssd.img'), ssd_size)
    hx = SsdExport(d, img, ssd, hc={'ram-size': 256 * KiB, 'seq-cutoff': 0,
                                    **(hc or {})})
    return d, img, ssd, hx


def warm_pass(c, img, span, chunk=32 * KiB, order=None):
    offs = list(range(0, span, chunk))
    if order is not None:
        order.shuffle(offs)
    for off in offs:
        check_reads(c, img, off, chunk, f'warm read at {off}')


def test_demote_and_promote():
    d, img, ssd, hx = warm_setup('promote')
    try:
        st = hx.ssd_stats()
        nslots, data_off = ssdfile.layout(8 * MiB, BS)
        check_eq((st['ssd-active'], st['ssd-size'], st['ssd-used'],
                  st['ssd-recovered'], st['ssd-hits'], st['ssd-demotions']),
                 (True, nslots * BS, 0, 0, 0, 0),
                 '(active, size, used, recovered, hits, demotions) of a '
                 'freshly formatted SSD')
        sb, copies = ssdfile.read_super(ssd)
        check(sb and all(copies), f'not formatted: {copies}')
        check_eq((sb['state'], sb['block_size'], sb['nslots'],
                  sb['data_offset'], sb['origin_id'], sb['origin_size']),
                 (ssdfile.STATE_OPEN, BS, nslots, data_off, img, 8 * MiB),
                 'superblock of the SSD in use')
        c = hx.client()
        warm_pass(c, img, 4 * MiB, order=random.Random(SEED))
        poll('demotions', lambda: hx.stats()['ssd-used'] > 0)
        # once quiet, what the stats count as on the SSD is on disk
        settle(hx)
        st = hx.ssd_stats()
        ents = ssdfile.entries(ssd)
        check(len(ents) >= 64, f'few blocks demoted: {len(ents)}, {st}')
        with open(ssd, 'rb') as f:
            for blk, (slot, _) in ents.items():
                check(os.pread(f.fileno(), BS, data_off + slot * BS) ==
                      pread_file(img, blk * BS, BS),
                      f'slot {slot} does not hold block {blk}\'s data')
        check_no_wrong_entries(ssd, img, 'after demotion')
        s1 = hx.stats()
        warm_pass(c, img, 4 * MiB, order=random.Random(SEED + 1))
        s2 = hx.stats()
        hits = s2['ssd-hits'] - s1['ssd-hits']
        check(hits > 0 and s2['ssd-hit-bytes'] > s1['ssd-hit-bytes'],
              f'second pass: no SSD hits: {s2}')
        check_eq((s2['ssd-corrupt'], s2['ssd-errors'], s2['ssd-active']),
                 (0, 0, True), '(corrupt, errors, active)')
        c.close()
    finally:
        hx.stop()
    check(FAILED_MSG not in hx.log(), hx.log())


def test_warm_restart_after_clean_close():
    d, img, ssd, hx = warm_setup('clean')
    try:
        c = hx.client()
        warm_pass(c, img, 4 * MiB, order=random.Random(SEED))
        poll('demotions', lambda: hx.stats()['ssd-used'] >= 256 * KiB)
        c.close()
    finally:
        log = hx.quit()
    check(FAILED_MSG not in log, log)
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['state'], ssdfile.STATE_CLEAN, 'superblock state after a '
             'clean close')
    n = len(ssdfile.entries(ssd))
    check(n >= 64, f'only {n} entries on the SSD after a clean close')
    check_no_wrong_entries(ssd, img, 'after a clean close')
    hx = SsdExport(d, img, ssd, name='qsd2',
                   hc={'ram-size': 256 * KiB, 'seq-cutoff': 0})
    try:
        st = hx.stats()
        check_eq((st['ssd-recovered'], st['ssd-used'], st['ssd-active']),
                 (n, n * BS, True), '(recovered, used, active) after a '
                 'clean restart')
        check_eq(st['read-misses'] + st['read-hits'], 0, 'reads so far')
        c = hx.client()
        warm_pass(c, img, 4 * MiB)
        st = hx.stats()
        check(st['ssd-hits'] >= n // 2 and st['ssd-hit-bytes'] > 0,
              f'the recovered blocks were not served from the SSD: {st}')
        check_eq(st['ssd-corrupt'], 0, 'ssd-corrupt')
        c.close()
    finally:
        hx.stop()


# ---- 3. warm restart after a crash under load -------------------------------

class Load:
    """Random pipelined reads and writes (writes only if write_frac) over
    [0, span), in-flight requests never overlapping; reads are checked
    against the model of acknowledged writes.  With flush_every, a flush
    (after draining) every so many requests records `durable`, a copy of
    the model the origin must hold afterwards outside later writes."""

    def __init__(self, c, img, span, rng, write_frac, qd=4,
                 flush_every=0):
        self.c, self.rng, self.span = c, rng, span
        self.write_frac, self.qd, self.flush_every = write_frac, qd, \
            flush_every
        self.model = bytearray(pread_file(img, 0, span))
        self.durable = bytes(self.model)
        self.since = []             # writes sent after `durable`
        self.busy = {}              # handle -> (a, b, data or None)
        self.errors = []
        self.stop = threading.Event()
        self.n = 0
        self.flushes = 0

    def extent(self):
        rng = self.rng
        if rng.random() < 0.5:
            n = BS * rng.choice([1, 2, 4, 8])
            a = rng.randrange(0, self.span - n + 1, BS)
        else:
            n = rng.randrange(1, 3 * BS)
            a = rng.randrange(0, self.span - n + 1)
        return a, a + n

    def submit(self):
        for _ in range(8):
            a, b = self.extent()
            if not any(a < y and x < b for x, y, _ in self.busy.values()):
                break
        else:
            return False
        if self.rng.random() < self.write_frac:
            data = self.rng.randbytes(b - a)
            h = self.c.submit_write(a, data)
            self.since.append((a, b))
        else:
            h, data = self.c.submit_read(a, b - a), None
        self.busy[h] = (a, b, data)
        return True

    def complete(self):
        h, err, got = self.c.reply()
        a, b, data = self.busy.pop(h)
        if err:
            self.errors.append(f'request {a}+{b - a} failed: errno {err}')
        elif data is not None:
            self.model[a:b] = data
        elif got != self.model[a:b]:
            self.errors.append(f'read {a}+{b - a} returned wrong data')

    def flush(self):
        while self.busy:
            self.complete()
        self.c.flush()
        self.durable = bytes(self.model)
        self.since = []
        self.flushes += 1

    def run(self):
        try:
            while not self.stop.is_set():
                while len(self.busy) < self.qd and self.submit():
                    self.n += 1
                    if self.flush_every and self.n % self.flush_every == 0:
                        self.flush()
                self.complete()
        except (OSError, ConnectionError):
            pass                    # the kill
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f'load: {e!r}')

    def in_flight(self):
        return [(a, b) for a, b, _ in self.busy.values()]


def crash_cycle(tag, mode, rng, write_frac, hc=None):
    d = subdir(tag)
    size, span = 4 * MiB, 2 * MiB
    img = make_file(os.path.join(d, 'origin.img'), size)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    hc = {'mode': mode, 'ram-size': 128 * KiB, 'seq-cutoff': 0, **(hc or {})}
    hx = SsdExport(d, img, ssd, hc=hc)
    wb = mode == 'write-back'
    try:
        c = hx.client()
        # a first pass so that the SSD holds much of the span
        warm_pass(c, img, span, chunk=16 * KiB, order=rng)
        poll('demotions', lambda: len(durable_blocks(ssd)) >= 64)
        load = Load(c, img, span, random.Random(rng.random()), write_frac,
                    qd=rng.choice([1, 4, 8]), flush_every=40 if wb else 0)
        th = threading.Thread(target=load.run, daemon=True)
        th.start()
        time.sleep(rng.uniform(0.4, 1.2))
        st = hx.stats()
        load.stop.set()
        hx.kill()
        th.join(30)
        check(not th.is_alive(), 'load did not stop after the kill')
    finally:
        hx.stop()
    what = f'seed {SEED} {tag}'
    check(not load.errors, f'{what}: ' + '; '.join(load.errors[:5]))
    check(load.n > 20, f'{what}: only {load.n} requests before the kill')
    if wb:
        # write-back: flushed data is in the SSD's journal; recovery (an
        # open and a clean close) writes it back to the origin
        sb, _ = ssdfile.read_super(ssd)
        check_eq(sb['state'], ssdfile.STATE_OPEN, f'seed {SEED} {tag}: '
                 'superblock state after a crash')
        hx = SsdExport(d, img, ssd, hc=hc, name='qsd-recover')
        hx.stop()
    origin = pread_file(img, 0, span)
    if wb:
        # write-back: what the last flush covered must be there
        keep = bytearray(load.durable)
        for a, b in load.since:
            keep[a:b] = origin[a:b]
        check(bytes(keep) == origin, f'{what}: flushed data lost')
        check(load.flushes > 0 or not load.since, f'{what}: no flush')
    elif write_frac:
        # write-through/around: every acknowledged write is on the origin
        keep = bytearray(load.model)
        for a, b in load.in_flight():
            keep[a:b] = origin[a:b]
        check(bytes(keep) == origin, f'{what}: acknowledged writes lost')
    check_no_wrong_entries(ssd, img, f'{what}: after the crash')
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['state'], ssdfile.STATE_CLEAN if wb else ssdfile.STATE_OPEN,
             f'{what}: superblock state after a crash (and, write-back, '
             'the recovery)')
    n = len(ssdfile.entries(ssd))
    hx = SsdExport(d, img, ssd, hc=hc, name='qsd2')
    try:
        st = hx.stats()
        check_eq(st['ssd-recovered'], n, f'{what}: ssd-recovered vs the '
                 'entries on disk')
        c = hx.client()
        check_reads(c, img, 0, size, f'{what}: after the restart')
        st = hx.stats()
        # (ssd-corrupt may count slots a crash left with a CLOCK victim's
        # entry and new data: a miss by design)
        # (a cycle whose writes dropped every durable entry recovers
        # nothing, legitimately: the callers check that some cycle did)
        check(st['ssd-hits'] > 0 or n == 0, f'{what}: no SSD hits after the '
              f'restart of {n} entries: {st}')
        c.close()
    finally:
        hx.stop()
    shutil.rmtree(d, ignore_errors=True)
    return n


def crash_cycles(tag, mode, cycles, **kw):
    """crash_cycle() cycles times; at least one must recover entries (a
    single one may legitimately not: its writes may drop every entry made
    durable before, while no origin flush lets new demotions become
    durable)."""
    rng = random.Random(f'{SEED}-{tag}')
    recovered = [crash_cycle(f'{tag}{i}', mode, rng, 0.4, **kw)
                 for i in range(cycles)]
    check(sum(recovered) > 0, f'seed {SEED} {tag}: no cycle recovered '
          f'anything ({recovered})')


def test_crash_during_reads():
    rng = random.Random(f'{SEED}-crash-r')
    for i in range(2):
        n = crash_cycle(f'crash-r{i}', 'write-through', rng, 0.0)
        check(n > 0, f'seed {SEED} crash-r{i}: nothing recovered')


def test_crash_during_writes_write_through():
    crash_cycles('crash-wt', 'write-through', 3)


def test_crash_during_writes_write_around():
    crash_cycles('crash-wa', 'write-around', 2)


def test_crash_during_writes_write_back():
    crash_cycles('crash-wb', 'write-back', 3, hc={'max-dirty-age-ms': 50})


# ---- 4. writes never resurrect old data -------------------------------------

X = range(64, 72)               # blocks 64..71: 32 KiB at 256 KiB
XOFF, XLEN = X.start * BS, len(X) * BS
RAM4 = 128 * KiB


def resurrect_case(mode, op):
    tag = f'res-{mode}-{op}'
    d = subdir(tag)
    size = 4 * MiB
    img = make_file(os.path.join(d, 'origin.img'), size)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    hc = {'mode': mode, 'ram-size': RAM4, 'seq-cutoff': 0}
    hx = SsdExport(d, img, ssd, hc=hc)
    old = pread_file(img, XOFF, XLEN)
    rng = random.Random(f'{SEED}-{tag}')
    try:
        c = hx.client()
        put_on_ssd(hx, c, X, 1 * MiB, RAM4)
        if op == 'write':
            c.write(XOFF, rng.randbytes(XLEN))
        elif op == 'write-unaligned':
            c.write(XOFF + 1000, rng.randbytes(XLEN - 3000))
        elif op == 'write-zeroes':
            c.write_zeroes(XOFF, XLEN)
        elif op == 'discard':
            c.trim(XOFF, XLEN)
        if mode == 'write-back' and op.startswith('write'):
            c.flush()
            # a flush makes the writes durable in the SSD's journal; the
            # destager takes them to the origin in the background
            poll('destaged', lambda: hx.stats()['dirty-bytes'] == 0,
                 timeout=120)
        if op == 'resize':
            c.close()
            hx.resize(XOFF + 512)
            hx.resize(size)
        hx.kill()
    finally:
        hx.stop()
    new = pread_file(img, XOFF, XLEN)
    check(new != old, f'{tag}: the origin did not change: proves nothing')
    if op in ('write-zeroes', 'discard'):
        check_eq(new, bytes(XLEN), f'{tag}: origin after {op}')
    elif op == 'resize':
        check_eq(new, old[:512] + bytes(XLEN - 512), f'{tag}: origin after '
                 'shrink and grow')
    check_no_wrong_entries(ssd, img, f'{tag}: after the kill')
    hx = SsdExport(d, img, ssd, hc=hc, name='qsd2')
    try:
        st = hx.stats()
        # (a resize drops everything past the shorter end: here all)
        check(st['ssd-recovered'] > 0 or op == 'resize',
              f'{tag}: nothing recovered: {st}')
        check(REFORMAT_MSG not in hx.log(), f'{tag}: {hx.log()}')
        c = hx.client()
        check_reads(c, img, XOFF - BS, XLEN + 2 * BS, f'{tag}: X after the '
                    'restart')
        check_reads(c, img, 0, size, f'{tag}: the disk after the restart')
        c.close()
    finally:
        hx.stop()
    shutil.rmtree(d, ignore_errors=True)


def test_writes_never_resurrect_write_through():
    for op in ('write', 'write-unaligned', 'write-zeroes', 'discard',
               'resize'):
        resurrect_case('write-through', op)


def test_writes_never_resurrect_write_around():
    for op in ('write', 'write-unaligned', 'write-zeroes', 'discard',
               'resize'):
        resurrect_case('write-around', op)


def test_writes_never_resurrect_write_back():
    for op in ('write', 'write-unaligned', 'write-zeroes', 'discard',
               'resize'):
        resurrect_case('write-back', op)


def test_write_back_dirty_then_destaged():
    """A block on the SSD made dirty in RAM, then written back by the
    destager (no flush from the client), then the crash: the SSD must not
    hand out the copy older than the origin's."""
    d = subdir('wb-destager')
    img = make_file(os.path.join(d, 'origin.img'), 4 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    hc = {'mode': 'write-back', 'ram-size': RAM4, 'seq-cutoff': 0,
          'max-dirty-age-ms': 20}
    hx = SsdExport(d, img, ssd, hc=hc)
    old = pread_file(img, XOFF, XLEN)
    new = random.Random(f'{SEED}-wbd').randbytes(XLEN)
    try:
        c = hx.client()
        put_on_ssd(hx, c, X, 1 * MiB, RAM4)
        c.write(XOFF, new)
        poll('write-back by the destager',
             lambda: pread_file(img, XOFF, XLEN) == new and
             hx.stats()['dirty-bytes'] == 0)
        hx.kill()
    finally:
        hx.stop()
    check(old != new, 'no change')
    check_no_wrong_entries(ssd, img, 'after the kill')
    hx = SsdExport(d, img, ssd, hc=hc, name='qsd2')
    try:
        c = hx.client()
        check_reads(c, img, 0, 4 * MiB, 'after the restart')
        c.close()
    finally:
        hx.stop()


def test_clock_victim_dropped_before_reuse():
    """A full SSD: a demotion takes the slot of the CLOCK victim V (V
    leaves the index at once) and its data write is slow (a throttle
    node below the SSD); meanwhile V is written through the cache and the
    host crashes.  The SSD file must not still name V's old data in a slot
    that holds it: V's entry has to go (durably) before V changes on the
    origin, in the index or not."""
    d = subdir('clock')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    ssd_size = ssdfile.META_OFFSET + 4096 + 16 * BS
    ssd = blank(os.path.join(d, 'ssd.img'), ssd_size)
    check_eq(ssdfile.layout(ssd_size, BS), (16, ssdfile.META_OFFSET + 4096),
             'layout of the small SSD')
    hc = {'ram-size': 16 * BS, 'seq-cutoff': 0}
    node, args = throttled_ssd(ssd)
    hx = SsdExport(d, img, ssd, hc=hc, ssd_node=node, args=args)
    try:
        c = hx.client()
        # blocks 0..15 go to slots 0..15 (in order), 16..31 stay in RAM;
        # one-block reads look no other block up, so no CLOCK bit is set
        for blk in range(32):
            c.read(blk * BS, BS)
            time.sleep(0.01)
        poll('a full SSD', lambda: len(durable_blocks(ssd)) == 16)
        check_eq(sorted((s, b) for b, (s, _) in ssdfile.entries(ssd).items()),
                 [(b, b) for b in range(16)], '(slot, block) on the SSD')
        # From now on the SSD gets one request through, then nothing for
        # a long time.  That one is the promotion of block 5 (its CLOCK
        # bit set), which evicts block 16 from RAM; its demotion takes
        # the CLOCK victim, slot 0 = block 0, and its write waits.
        limit_ssd(hx)
        check_reads(c, img, 5 * BS, BS, 'block 5')
        check_eq(hx.stats()['ssd-hits'], 1, 'ssd-hits')
        poll('the victim taken', lambda: hx.stats()['ssd-used'] == 15 * BS)
        # The write of block 0 may not reach the origin before the victim's
        # entry is durably gone from the SSD, which is stalled: it waits
        # (its reply is not awaited here).  Then the host crashes.
        new0 = random.Random(f'{SEED}-clock').randbytes(BS)
        c.submit_write(0, new0)
        time.sleep(1.0)
        check(pread_file(img, 0, BS) != new0,
              'block 0 reached the origin while its old SSD entry could '
              'still be on the device')
        hx.kill()
    finally:
        hx.stop()
    restart_check(d, img, ssd, 'clock-2', hc=hc)
    check_no_wrong_entries(ssd, img, 'after the crash')


def test_write_back_drop_durable_before_write_back():
    """Write-back: a write of blocks that are on the SSD, larger than
    max-dirty, so the write itself writes its first blocks back to the
    origin to make room.  Their SSD entries must be durably gone before
    that; here the SSD is slow (throttled) and the host crashes while the
    write is still in progress: the origin holds the new data of the first
    blocks, and the SSD must not hold their old copies."""
    d = subdir('wb-room')
    img = make_file(os.path.join(d, 'origin.img'), 4 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    hc = {'mode': 'write-back', 'ram-size': RAM4, 'seq-cutoff': 0,
          'max-dirty': 4 * BS, 'max-dirty-age-ms': 3600000}
    node, args = throttled_ssd(ssd)
    hx = SsdExport(d, img, ssd, hc=hc, ssd_node=node, args=args)
    new = random.Random(f'{SEED}-wbroom').randbytes(XLEN)
    try:
        c = hx.client()
        put_on_ssd(hx, c, X, 1 * MiB, RAM4)
        # (a demotion's entry is written after an origin flush: wait)
        other = max(poll('a block outside X on the SSD',
                         lambda: durable_blocks(ssd) - set(X)))
        settle(hx)
        limit_ssd(hx)
        # the one request the SSD still serves: a promotion
        c.read(other * BS, BS)
        check_eq(hx.stats()['ssd-hits'], 1, 'promotion')
        # The write makes room by writing its first blocks back; with the
        # SSD stalled their old entries cannot be dropped durably, so they
        # must not reach the origin either.  Then the host crashes.
        c.submit_write(XOFF, new)
        time.sleep(2.0)
        check(pread_file(img, XOFF, BS) != new[:BS],
              'a block was written back while its old SSD entry could still '
              'be on the device')
        hx.kill()
    finally:
        hx.stop()
    check_no_wrong_entries(ssd, img, 'after the crash')
    restart_check(d, img, ssd, 'wb-room-2', hc=hc)


# ---- 5. damage to the SSD file while stopped --------------------------------

def damaged_setup(tag):
    """A warm SSD after a clean close; returns (d, img, ssd, entries)."""
    d, img, ssd, hx = warm_setup(tag, size=4 * MiB, ssd_size=4 * MiB)
    try:
        c = hx.client()
        warm_pass(c, img, 2 * MiB, order=random.Random(f'{SEED}-{tag}'))
        poll('demotions', lambda: len(durable_blocks(ssd)) >= 128)
        c.close()
    finally:
        hx.quit()
    return d, img, ssd, ssdfile.entries(ssd)


def restart_check(d, img, ssd, tag, hc=None):
    """Restart over the SSD, read everything; returns the stats."""
    hx = SsdExport(d, img, ssd, name=f'qsd-{tag}',
                   hc={'ram-size': 256 * KiB, 'seq-cutoff': 0, **(hc or {})})
    try:
        st0 = hx.stats()
        c = hx.client()
        check_reads(c, img, 0, os.path.getsize(img), f'{tag}: after restart')
        c.close()
        st = hx.stats()
        st['recovered-at-open'] = st0['ssd-recovered']
        return st, hx.log()
    finally:
        hx.stop()


def test_damaged_data_slots():
    d, img, ssd, ents = damaged_setup('dmg-data')
    sb, _ = ssdfile.read_super(ssd)
    victims = sorted(ents.items())[::len(ents) // 6][:6]
    for blk, (slot, _) in victims:
        ssdfile.flip(ssd, ssdfile.slot_offset(sb, slot) + 100 + slot % 3000, 3)
    check_eq(len(ssdfile.servable(ssd)), len(ents) - len(victims),
             'entries with a matching data CRC after the damage')
    st, _ = restart_check(d, img, ssd, 'dmg-data')
    check_eq(st['recovered-at-open'], len(ents), 'recovered (the slot '
             'table is intact)')
    check_eq(st['ssd-corrupt'], len(victims), 'ssd-corrupt: one per '
             'damaged slot read')
    check(st['ssd-hits'] >= len(ents) - len(victims) - 8,
          f'the undamaged slots were not served: {st}')


def test_damaged_slot_table():
    d, img, ssd, ents = damaged_setup('dmg-table')
    slots = sorted(s for s, _ in ents.values())
    # (i) a few entries with a flipped byte (blk, seq, crc or flags)
    hit = slots[3::len(slots) // 5][:5]
    for i, s in enumerate(hit):
        ssdfile.flip(ssd, ssdfile.entry_offset(s) + (0, 9, 17, 24, 29)[i % 5])
    # (ii) a torn table sector: its second half reads as zeroes
    torn = slots[-1] // 128
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(2048), ssdfile.META_OFFSET +
                  torn * 4096 + 2048)
    lost = set(hit) | {s for s in slots if s // 128 == torn and
                       s % 128 >= 64}
    left = len(ents) - len(lost)
    check_eq(len(ssdfile.entries(ssd)), left, 'entries left on disk')
    st, _ = restart_check(d, img, ssd, 'dmg-table')
    check_eq(st['recovered-at-open'], left, 'recovered: the damaged entries '
             'are ignored')
    check_eq(st['ssd-corrupt'], 0, 'ssd-corrupt')
    check(st['ssd-hits'] >= left - 8, f'the intact entries were not '
          f'served: {st}')


def test_damaged_journal_entry_fails_the_open():
    """A damaged slot-table entry of a tier holding a write-back journal
    may have been dirty: the open fails and changes nothing (a clean tier's
    damaged entries are misses: test_damaged_slot_table)."""
    d, img, ssd, hc, _ = crashed_journal('dmg-jentry', range(40), 4 * MiB,
                                         1 * MiB)
    sb, _ = ssdfile.read_super(ssd)
    with open(ssd, 'rb') as f:
        table = os.pread(f.fileno(), sb['nslots'] * 32, ssdfile.META_OFFSET)
    dirty = [slot for slot in range(sb['nslots'])
             if (e := ssdfile.decode_entry(table[slot * 32:slot * 32 + 32]))
             and e[4] & 2]
    check(len(dirty) >= 40, f'only {len(dirty)} dirty entries')
    # the entry of one dirty block, damaged: its flags are unknown now
    ssdfile.flip(ssd, ssdfile.entry_offset(dirty[len(dirty) // 2]) + 9)
    err = open_fails(d, img, ssd, 'dmg-jentry', 'slot table is damaged',
                     hc=hc)
    check('zero the ssd node' in err and 'nothing was changed' in err, err)
    # what the message says to do: the tier starts empty, the origin's
    # data is served
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(8192), 0)
    restart_check(d, img, ssd, 'dmg-jentry-zeroed', hc=hc)


def test_damaged_one_superblock_copy():
    d, img, ssd, ents = damaged_setup('dmg-sb')
    pristine = file_bytes(ssd)
    for copy in (0, 1):
        with open(ssd, 'wb') as f:
            f.write(pristine)
        ssdfile.flip(ssd, copy * 4096 + 64, 4)     # cache_gen
        sb, copies = ssdfile.read_super(ssd)
        check(copies[copy] is None and copies[1 - copy] is not None,
              f'copy {copy} not damaged as intended')
        check_eq(len(ssdfile.entries(ssd)), len(ents), 'entries via the '
                 'other copy')
        st, log = restart_check(d, img, ssd, f'dmg-sb{copy}')
        check_eq(st['recovered-at-open'], len(ents), f'copy {copy} damaged: '
                 'recovered through the other copy')
        check(REFORMAT_MSG not in log, f'reformatted: {log}')
        check(st['ssd-hits'] > 0, f'no hits: {st}')


def test_damaged_newest_superblock_after_a_drop():
    """A drop (here: reopen to pass-through) writes one superblock copy
    with a new cache generation; blocks then change on the origin and the
    host crashes; then that newest copy is damaged.  Recovery falls back to
    the older copy, whose cache generation must not bring the dropped
    entries back."""
    d, img, ssd, ents = damaged_setup('dmg-sb-drop')
    hx = SsdExport(d, img, ssd, name='qsd-drop',
                   hc={'ram-size': 256 * KiB, 'seq-cutoff': 0})
    try:
        check_eq(hx.stats()['ssd-recovered'], len(ents), 'recovered')
        hx.reopen(mode='pass-through')
        c = hx.client()
        rng = random.Random(f'{SEED}-sbdrop')
        for blk in sorted(ents):
            c.write(blk * BS, rng.randbytes(BS))
        c.close()
        hx.kill()
    finally:
        hx.stop()
    sb, copies = ssdfile.read_super(ssd)
    newest = copies.index(sb)
    ssdfile.flip(ssd, newest * 4096 + 200, 4)
    check(ssdfile.read_super(ssd)[1][newest] is None, 'not damaged')
    restart_check(d, img, ssd, 'dmg-sb-drop-2')
    check_no_wrong_entries(ssd, img, 'after the fallback')


def open_fails(d, img, ssd, tag, want, ssd_node=None, hc=None):
    """blockdev-add of hc0 must fail with want in the message, leave no
    hostcache node behind and not change the SSD file."""
    before = file_bytes(ssd)
    qsd = StorageDaemon(d, name=f'qsd-{tag}')
    try:
        q = qsd.qmp
        q.cmd('blockdev-add', **{'node-name': 'origin'}, driver='file',
              filename=img)
        q.cmd('blockdev-add', **{'node-name': 'ssd0'},
              **(ssd_node or {'driver': 'file', 'filename': ssd}))
        nodes = node_names(q)
        try:
            q.cmd('blockdev-add', driver='hostcache', file='origin',
                  **{'node-name': 'hc0', 'ssd': 'ssd0', **(hc or {})})
        except QMPError as e:
            err = e.desc
        else:
            raise AssertionError(f'{tag}: blockdev-add succeeded')
        check(want in err, f'{tag}: error {err!r} does not say {want!r}')
        check_eq(node_names(q), nodes, f'{tag}: nodes after the failure')
        # nothing holds the SSD node any more
        q.cmd('blockdev-del', **{'node-name': 'ssd0'})
    finally:
        qsd.stop()
    check(file_bytes(ssd) == before, f'{tag}: the SSD file was changed')
    return err


def test_damaged_both_superblocks():
    d, img, ssd, ents = damaged_setup('dmg-sb2')
    rng = random.Random(f'{SEED}-sb2')
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), rng.randbytes(8192), 0)
    open_fails(d, img, ssd, 'sb2', 'zero its first 8 KiB')
    # what the message says to do makes it usable again, empty
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(8192), 0)
    st, _ = restart_check(d, img, ssd, 'sb2-zeroed')
    check_eq(st['recovered-at-open'], 0, 'recovered after zeroing')
    sb, _ = ssdfile.read_super(ssd)
    check(sb is not None, 'not formatted after zeroing')


def test_foreign_device_refused():
    d = subdir('foreign')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    # a device holding something else: random bytes; then zeroes but for
    # one byte in the second superblock's place
    ssd = make_file(os.path.join(d, 'other.img'), 1 * MiB)
    err = open_fails(d, img, ssd, 'foreign', 'zero its first 8 KiB')
    check('neither a hostcache superblock nor zeroes' in err, err)
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(8192), 0)
        os.pwrite(f.fileno(), b'\x01', 4096 + 17)
    open_fails(d, img, ssd, 'foreign2', 'zero its first 8 KiB')


# ---- 6. identity: another origin, block size, size; unusable devices --------

def expect_reformat(d, img, ssd, tag, why, hc=None):
    st, log = restart_check(d, img, ssd, tag, hc=hc)
    check(REFORMAT_MSG in log and why in log, f'{tag}: no info about '
          f'reformatting ({why!r}): {log!r}')
    check_eq(st['recovered-at-open'], 0, f'{tag}: recovered')
    check_eq(st['ssd-hits'], 0, f'{tag}: SSD hits after a reformat')
    return st


def test_another_origin_id():
    d, img, ssd, _ = damaged_setup('id-origin')
    expect_reformat(d, img, ssd, 'id-b', 'another origin',
                    hc={'origin-id': 'disk-b'})
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['origin_id'], 'disk-b', 'origin id recorded')
    # with the same origin-id again, it is recovered
    st, log = restart_check(d, img, ssd, 'id-b2', hc={'origin-id': 'disk-b'})
    check(st['recovered-at-open'] > 0 and REFORMAT_MSG not in log,
          f'same origin-id: not recovered: {st}')


def test_another_origin_file():
    d, img, ssd, ents = damaged_setup('id-file')
    # another disk of the same size, other content, at another path
    other = make_file(os.path.join(d, 'other.img'), os.path.getsize(img))
    expect_reformat(d, other, ssd, 'id-file-b', 'another origin')
    # the same origin file under another path name is another origin too
    # (the id is the file name): still correct, and never stale
    moved = os.path.join(d, 'moved.img')
    shutil.copyfile(img, moved)
    expect_reformat(d, moved, ssd, 'id-file-c', 'another origin')


def test_another_block_size():
    d, img, ssd, _ = damaged_setup('id-bs')
    expect_reformat(d, img, ssd, 'id-bs-64k', 'block-size',
                    hc={'block-size': 64 * KiB})
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['block_size'], 64 * KiB, 'block size of the reformatted SSD')


def test_origin_size_changed_while_stopped():
    d, img, ssd, _ = damaged_setup('id-size')
    with open(img, 'ab') as f:
        f.write(os.urandom(64 * KiB))
    expect_reformat(d, img, ssd, 'id-size-b', 'size')


def test_ssd_shrunk_while_stopped():
    d, img, ssd, _ = damaged_setup('id-shrink')
    os.truncate(ssd, 1 * MiB)
    st = expect_reformat(d, img, ssd, 'id-shrink-b', 'shrank')
    check_eq(st['ssd-size'], ssdfile.layout(1 * MiB, BS)[0] * BS, 'ssd-size')


def test_recovery_write_back_goes_through_flush_epochs():
    """After a crash, the recovered journal is written back in flush
    epochs too: block A written in epoch 1 and again in epoch 3, 300 other
    blocks in epoch 2.  The recovery's first destage batch (256 blocks) is
    flushed to an origin whose flushes all fail, so the origin file shows
    exactly that batch: it must be a point in time, i.e. with epoch-2
    data it holds A's epoch-1 version, not its initial one (the older
    journaled version of A must be written before epoch 2)."""
    d = subdir('replay-epochs')
    img = make_file(os.path.join(d, 'origin.img'), 4 * MiB)
    # (301 journaled blocks stay under a quarter of the tier: no destaging)
    ssd = blank(os.path.join(d, 'ssd.img'), 8 * MiB)
    # (an explicit origin-id: the recovery's origin is a blkdebug node)
    hc = {'mode': 'write-back', 'ram-size': 4 * MiB, 'seq-cutoff': 0,
          'max-dirty-age-ms': 3600000, 'origin-id': 'disk-a'}
    rng = random.Random(f'{SEED}-replay-epochs')
    a1, a2 = rng.randbytes(BS), rng.randbytes(BS)
    ys = {y: rng.randbytes(BS) for y in range(8, 308)}
    a0 = pread_file(img, 0, BS)
    hx = SsdExport(d, img, ssd, hc=hc)
    try:
        c = hx.client()
        c.write(0, a1)
        c.flush()
        for y, data in ys.items():
            c.write(y * BS, data)
        c.flush()
        c.write(0, a2)
        c.flush()
        check_eq(hx.stats()['destaged-blocks'], 0, 'destaged before the kill')
        hx.kill()
    finally:
        hx.stop()
    check(pread_file(img, 0, BS) == a0, 'A on the origin before recovery')
    qsd = StorageDaemon(d, name='qsd-replay')
    try:
        q = qsd.qmp
        q.cmd('blockdev-add', **{'node-name': 'origin'}, driver='blkdebug',
              image={'driver': 'file', 'filename': img},
              **{'inject-error': [{'event': 'none', 'iotype': 'flush',
                                   'errno': 5, 'once': False}]})
        q.cmd('blockdev-add', **{'node-name': 'ssd0'}, driver='file',
              filename=ssd)
        q.cmd('blockdev-add', driver='hostcache', file='origin',
              **{'node-name': 'hc0', 'ssd': 'ssd0', **hc})
        poll('a failed origin flush of the replay',
             lambda: node_stats(q, 'hc0')['origin-errors'] > 0)
        a = pread_file(img, 0, BS)
        got = sum(pread_file(img, y * BS, BS) == data
                  for y, data in ys.items())
        check(0 < got < len(ys), f'{got} of {len(ys)} epoch-2 blocks on the '
              'origin after the first batch')
        check(a == a1, 'the origin holds epoch-2 data but A ' +
              ('unwritten (its epoch-1 version was skipped)' if a == a0 else
               'from epoch 3' if a == a2 else 'garbled'))
        os.kill(qsd.proc.pid, signal.SIGKILL)
    finally:
        qsd.stop()


def crashed_journal(tag, blocks, ssd_size, ram_size, **more_hc):
    """Write-back over a 2 MiB origin and a blank SSD tier: random data to
    each of blocks, one flush (into the journal), then SIGKILL.  Returns
    (d, img, ssd, hc, model): model is what the origin must end up with.
    more_hc: further hostcache options (QAPI names)."""
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), 2 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), ssd_size)
    hc = {'mode': 'write-back', 'ram-size': ram_size, 'seq-cutoff': 0,
          'max-dirty-age-ms': 3600000, **more_hc}
    rng = random.Random(f'{SEED}-{tag}')
    model = bytearray(pread_file(img, 0, 2 * MiB))
    hx = SsdExport(d, img, ssd, hc=hc)
    try:
        c = hx.client()
        for blk in blocks:
            data = rng.randbytes(BS)
            c.write(blk * BS, data)
            model[blk * BS:(blk + 1) * BS] = data
        c.flush()
        check(hx.stats()['ssd-dirty-bytes'] > 0, f'{tag}: nothing in the '
              'journal')
        hx.kill()
    finally:
        hx.stop()
    return d, img, ssd, hc, model


def test_recovered_journal_written_back_at_once_after_a_reboot():
    """A journal recovered after a crash reaches the origin right after
    the open, whatever max-dirty-age-ms and the host's uptime: the
    recovery runs in a time namespace whose clocks say the host booted 20 s
    ago, with max-dirty-age-ms one hour (recovered entries used to be timed
    from the boot, so they waited out max-dirty-age-ms after a power cut)."""
    blocks = list(range(0, 96, 3))
    d, img, ssd, hc, model = crashed_journal('reboot', blocks, 4 * MiB,
                                             1 * MiB)
    check_eq(hc['max-dirty-age-ms'], 3600000, 'the age bound')
    hx = SsdExport(d, img, ssd, hc=hc, name='qsd-reboot', export=False,
                   prefix=booted_ago(20))
    try:
        poll('the recovered journal on the origin',
             lambda: hx.stats()['ssd-dirty-bytes'] == 0, timeout=30)
        check(hx.stats()['destaged-blocks'] >= len(blocks),
              f'{hx.stats()["destaged-blocks"]} blocks destaged')
        check_eq(pread_file(img, 0, 2 * MiB), bytes(model),
                 'the origin after the recovery')
        hx.quit()
    finally:
        hx.stop()


def unwritable_origin(d, img, ssd, hc, name):
    """A qemu-storage-daemon whose origin (blkdebug over img) fails every
    write, with hostcache 'hc0' over it and the SSD tier ssd: whatever is
    dirty stays dirty.  hc needs an explicit origin-id (the blkdebug node's
    filename is not img's)."""
    qsd = StorageDaemon(d, name=name)
    q = qsd.qmp
    q.cmd('blockdev-add', **{'node-name': 'origin'}, driver='blkdebug',
          image={'driver': 'file', 'filename': img},
          **{'inject-error': [{'event': 'none', 'iotype': 'write',
                               'errno': 5, 'once': False}]})
    q.cmd('blockdev-add', **{'node-name': 'ssd0'}, driver='file',
          filename=ssd)
    q.cmd('blockdev-add', driver='hostcache', file='origin',
          **{'node-name': 'hc0', 'ssd': 'ssd0', **hc})
    return qsd


def recover_and_check(d, img, ssd, hc, model, tag):
    """Open the tier over a working origin: its journal must be written
    back and the origin must equal model."""
    hx = SsdExport(d, img, ssd, hc=hc, name=f'qsd-{tag}-ok', export=False)
    try:
        poll(f'{tag}: the journal written back',
             lambda: hx.stats()['ssd-dirty-bytes'] == 0, timeout=30)
        hx.quit()
    finally:
        hx.stop()
    check_eq(pread_file(img, 0, 2 * MiB), bytes(model),
             f'{tag}: the origin after the recovery')


def test_reopen_to_pass_through_keeps_a_recovered_journal():
    """A node opened write-through over a tier that holds a recovered
    journal, then reopened to pass-through: pass-through drops the tier,
    so the journal must be written back first; when the origin refuses it,
    the reopen is refused and the journal kept (it used to be dropped with
    the tier: data the origin never received, lost)."""
    blocks = list(range(1, 64, 4))
    d, img, ssd, hc, model = crashed_journal('reopen-pt', blocks, 4 * MiB,
                                             1 * MiB, **{'origin-id': 'o'})
    wt = dict(hc, mode='write-through')
    qsd = unwritable_origin(d, img, ssd, wt, 'qsd-reopen-pt')
    try:
        q = qsd.qmp
        check(node_stats(q, 'hc0')['ssd-dirty-bytes'] > 0, 'journal recovered')
        try:
            q.cmd('blockdev-reopen', options=[{
                'driver': 'hostcache', 'node-name': 'hc0', 'file': 'origin',
                'ssd': 'ssd0', **dict(wt, mode='pass-through')}])
            raise AssertionError('the reopen to pass-through succeeded '
                                 'with a journal the origin refuses')
        except QMPError as e:
            check('cannot reopen' in str(e) and 'written back' in str(e),
                  f'message: {e}')
        st = node_stats(q, 'hc0')
        check_eq(st['mode'], 'write-through', 'mode after the refusal')
        check(st['ssd-dirty-bytes'] > 0, 'the journal is still there')
        os.kill(qsd.proc.pid, signal.SIGKILL)
    finally:
        qsd.stop()
    recover_and_check(d, img, ssd, hc, model, 'reopen-pt')


def test_failed_write_back_at_close_keeps_the_tier_open():
    """A clean close whose write-back fails (the origin refuses writes)
    must not mark the tier CLEAN: hostcached takes CLEAN for "clean copies
    only" and may empty it.  The journal is written back by the next open
    over a working origin."""
    blocks = list(range(2, 64, 5))
    d, img, ssd, hc, model = crashed_journal('close-fail', blocks, 4 * MiB,
                                             1 * MiB, **{'origin-id': 'o'})
    qsd = unwritable_origin(d, img, ssd, hc, 'qsd-close-fail')
    try:
        qsd.qmp.cmd('blockdev-del', **{'node-name': 'hc0'})
        log = qsd.log_text()
        check('could not be written back' in log, f'log: {log[-1500:]}')
    finally:
        qsd.stop()
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['state'], ssdfile.STATE_OPEN, 'superblock state after a close '
             'that could not write back')
    recover_and_check(d, img, ssd, hc, model, 'close-fail')


def test_crafted_tier_is_refused_not_obeyed():
    """A tier file is input from disk, and QEMU's user can write it: every
    field read from it is checked against the devices before use.  Each
    crafted tier below (CRCs made right, so only those checks stand in the
    way) fails the open at once with a message, changes nothing, and the
    daemon lives on: a journal entry naming a block past the origin's end
    (the destager would write past the end, and QEMU aborted at every
    start), a sequence number near 2^64 (the next one would wrap), and
    superblocks whose data offset, block size or state are impossible (a
    data offset near 2^64 made the open loop for hours)."""
    blocks = list(range(0, 40, 2))
    d, img, ssd, hc, _ = crashed_journal('crafted', blocks, 4 * MiB,
                                         1 * MiB)
    pristine = file_bytes(ssd)
    sb, _ = ssdfile.read_super(ssd)
    slot = min(s for s, _ in ssdfile.entries(ssd).values())
    cases = [
        ('blk-past-end', lambda: ssdfile.patch_entry(ssd, slot, blk=(2 * MiB) //
                                                     BS + 3),
         'past the origin'),
        ('seq-wraps', lambda: ssdfile.patch_entry(ssd, slot, seq=2**64 - 2),
         'damaged'),
        ('data-offset', lambda: ssdfile.patch_super(ssd,
                                                    data_offset=2**63 + 8192),
         'impossible geometry'),
        ('data-offset-small', lambda: ssdfile.patch_super(
            ssd, data_offset=sb['data_offset'] - 4096), 'impossible geometry'),
        ('block-size', lambda: ssdfile.patch_super(ssd, block_size=1 << 30),
         'impossible geometry'),
        ('nslots', lambda: ssdfile.patch_super(ssd, nslots=2**40),
         'impossible geometry'),
        ('state', lambda: ssdfile.patch_super(ssd, state=9),
         'impossible geometry'),
    ]
    for tag, craft, want in cases:
        with open(ssd, 'wb') as f:
            f.write(pristine)
        craft()
        t0 = time.monotonic()
        open_fails(d, img, ssd, f'crafted-{tag}', want, hc=hc)
        check(time.monotonic() - t0 < 60, f'{tag}: the refusal took '
              f'{time.monotonic() - t0:.0f} s')


def test_missing_tier_refused_with_ssd_create_off():
    """A write-back journal left by a crash, then the tier file lost: with
    ssd-create=off a blank file, or another origin's tier, in its place is
    refused and left as it is; the real file, put back, is recovered and
    every flushed write reaches the origin."""
    blocks = random.Random(f'{SEED}-missing').sample(range(512), 40)
    d, img, ssd, hc, model = crashed_journal('missing', blocks, 2 * MiB,
                                             256 * KiB)
    check(pread_file(img, 0, 2 * MiB) != bytes(model),
          'the origin already has every write: nothing to lose')
    real = ssd + '.real'
    os.rename(ssd, real)
    off = dict(hc, **{'ssd-create': False})
    # a blank file in its place
    blank(ssd, 2 * MiB)
    err = open_fails(d, img, ssd, 'missing-blank', 'ssd-create=off', hc=off)
    check('is blank' in err and 'nothing was changed' in err, err)
    # another origin's (clean) tier in its place
    other = make_file(os.path.join(d, 'other.img'), 2 * MiB)
    hx = SsdExport(d, other, ssd, hc={'mode': 'write-through'},
                   name='qsd-other')
    hx.quit()
    err = open_fails(d, img, ssd, 'missing-other', 'ssd-create=off', hc=off)
    check('belongs to another origin' in err, err)
    # the real tier back: recovered, and written back at the clean close
    os.replace(real, ssd)
    hx = SsdExport(d, img, ssd, hc=off, name='qsd-back')
    try:
        check(hx.stats()['ssd-recovered'] > 0, 'nothing recovered')
        check_eq(hx.stats()['origin-id'], img, 'origin-id in the stats')
    finally:
        hx.quit()
    check(pread_file(img, 0, 2 * MiB) == bytes(model),
          'flushed writes missing on the origin after the recovery')


def test_ssd_too_small():
    d = subdir('small')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    for size in (4 * KiB, 8 * KiB, 12 * KiB):
        ssd = blank(os.path.join(d, f'ssd{size}.img'), size)
        open_fails(d, img, ssd, f'small{size}', 'too small')
    # 64k blocks need more than 4k blocks
    ssd = blank(os.path.join(d, 'ssd-mid.img'), 64 * KiB)
    open_fails(d, img, ssd, 'small64k', 'too small',
               hc={'block-size': 64 * KiB})


def test_read_only_ssd_refused():
    d = subdir('ro')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), 1 * MiB)
    err = open_fails(d, img, ssd, 'ro', 'read-only', ssd_node={
        'driver': 'file', 'filename': ssd, 'read-only': True})
    # the driver has its own message for this; QEMU's generic "Block node
    # is read-only" names neither the node nor the SSD tier
    check('ssd0' in err and 'SSD' in err, f'the message does not say '
          f'which node and why: {err!r}')


def test_read_only_node_with_ssd():
    """A read-only hostcache node (a golden image) still uses its SSD
    tier, which stays writable."""
    d = subdir('ro-node')
    img = make_file(os.path.join(d, 'origin.img'), 4 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    before = file_bytes(img)
    for run in range(2):
        qsd = StorageDaemon(d, name=f'qsd-ro{run}')
        try:
            q = qsd.qmp
            q.cmd('blockdev-add', **{'node-name': 'origin'}, driver='file',
                  filename=img, **{'read-only': True})
            q.cmd('blockdev-add', **{'node-name': 'ssd0'}, driver='file',
                  filename=ssd)
            try:
                q.cmd('blockdev-add', driver='hostcache', file='origin',
                      ssd='ssd0', **{'node-name': 'hc0', 'read-only': True,
                                     'ram-size': 128 * KiB,
                                     'seq-cutoff': 0})
            except ConnectionError:
                qsd.proc.wait(30)
                raise AssertionError(
                    f'qemu-storage-daemon died (status '
                    f'{qsd.proc.returncode}) adding a read-only node with '
                    f'an SSD: {qsd.log_text()[-1000:]}')
            _, sock = nbd_export(qsd, 'hc0', 'hc0', d, writable=False)
            c = NBDClient(sock, 'hc0')
            warm_pass(c, img, 2 * MiB, chunk=16 * KiB,
                      order=random.Random(f'{SEED}-ro{run}'))
            poll('demotions', lambda: len(durable_blocks(ssd)) >= 32)
            st = node_stats(q, 'hc0')
            check(st['ssd-active'] and (run == 0 or st['ssd-hits'] > 0),
                  f'run {run}: the SSD tier was not used: {st}')
            c.close()
        finally:
            qsd.stop()
    check(file_bytes(img) == before, 'the read-only origin changed')


def test_ssd_not_shared():
    """One SSD tier serves one cache: a second hostcache node on the same
    SSD node, or another process on the same SSD file, is refused and the
    first cache goes on unharmed."""
    d, img, ssd, hx = warm_setup('shared', size=2 * MiB, ssd_size=1 * MiB)
    other = make_file(os.path.join(d, 'other.img'), 2 * MiB)
    try:
        q = hx.qmp
        q.cmd('blockdev-add', **{'node-name': 'origin2'}, driver='file',
              filename=other)
        try:
            q.cmd('blockdev-add', driver='hostcache', file='origin2',
                  ssd='ssd0', **{'node-name': 'hc1'})
        except QMPError as e:
            check('hc1' not in node_names(q), f'hc1 left behind ({e})')
        else:
            raise AssertionError('a second cache on the same SSD node')
        qsd = StorageDaemon(d, name='qsd-second')
        try:
            qsd.qmp.cmd('blockdev-add', **{'node-name': 'origin'},
                        driver='file', filename=other)
            qsd.qmp.cmd('blockdev-add', **{'node-name': 'ssd0'},
                        driver='file', filename=ssd)
            try:
                qsd.qmp.cmd('blockdev-add', driver='hostcache',
                            file='origin', ssd='ssd0',
                            **{'node-name': 'hc0'})
            except QMPError as e:
                check('lock' in e.desc, f'not a lock error: {e.desc}')
            else:
                raise AssertionError('a second process on the same SSD '
                                     'file')
        finally:
            qsd.stop()
        c = hx.client()
        warm_pass(c, img, 2 * MiB)
        warm_pass(c, img, 2 * MiB)
        st = hx.ssd_stats()
        check(st['ssd-active'] and st['ssd-hits'] > 0 and
              not st['ssd-errors'], f'the first cache suffered: {st}')
        c.close()
    finally:
        hx.stop()


def test_inline_ssd_failure_leaves_no_node():
    """ssd given inline (ssd.driver=file,...): a failed open removes the
    SSD node it created too."""
    d = subdir('inline')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    small = blank(os.path.join(d, 'small.img'), 8 * KiB)
    good = blank(os.path.join(d, 'ssd.img'), 1 * MiB)
    qsd = StorageDaemon(d, name='qsd-inline')
    try:
        q = qsd.qmp
        q.cmd('blockdev-add', **{'node-name': 'origin'}, driver='file',
              filename=img)
        for ssd, ro in ((small, False), (good, True)):
            try:
                q.cmd('blockdev-add', driver='hostcache', file='origin',
                      **{'node-name': 'hc0'}, ssd={
                          'driver': 'file', 'filename': ssd,
                          'node-name': 'inl', 'read-only': ro})
            except QMPError:
                pass
            else:
                raise AssertionError(f'blockdev-add with {ssd} succeeded')
            check_eq(node_names(q), ['origin'], 'nodes after the failure')
        # and a good one works, with the inline node as its child
        q.cmd('blockdev-add', driver='hostcache', file='origin',
              **{'node-name': 'hc0'}, ssd={'driver': 'file',
                                           'filename': good})
        check(ssdfile.read_super(good)[0] is not None, 'inline SSD not '
              'formatted')
        q.cmd('blockdev-del', **{'node-name': 'hc0'})
        check_eq(node_names(q), ['origin'], 'nodes after blockdev-del')
        check_eq(ssdfile.read_super(good)[0]['state'], ssdfile.STATE_CLEAN,
                 'state after blockdev-del')
    finally:
        qsd.stop()


# ---- 7. pass-through, reopen, inactivation ----------------------------------

def test_reopen_pass_through_drops_the_ssd():
    d, img, ssd, hx = warm_setup('reopen', size=4 * MiB, ssd_size=2 * MiB)
    rng = random.Random(f'{SEED}-reopen')
    try:
        c = hx.client()
        put_on_ssd(hx, c, X, 1 * MiB, 256 * KiB)
        cgen = ssdfile.read_super(ssd)[0]['cache_gen']
        c.close()
        hx.reopen(mode='pass-through')
        st = hx.ssd_stats()
        check_eq((st['ssd-active'], st['ssd-used']), (False, 0),
                 '(active, used) in pass-through')
        check(ssdfile.read_super(ssd)[0]['cache_gen'] != cgen and
              not durable_blocks(ssd), 'pass-through did not drop the SSD '
              'content on disk')
        c = hx.client()
        c.write(XOFF, rng.randbytes(XLEN))
        c.write(XOFF + XLEN + 100, rng.randbytes(5000))
        c.close()
        hx.reopen(mode='write-through')
        st = hx.ssd_stats()
        check_eq(st['ssd-active'], True, 'active after leaving pass-through')
        c = hx.client()
        check_reads(c, img, 0, 4 * MiB, 'after pass-through writes')
        # and it works as a tier again
        put_on_ssd(hx, c, range(300, 304), 2 * MiB, 256 * KiB)
        check_reads(c, img, 300 * BS, 4 * BS, 'after warming again')
        check(hx.stats()['ssd-hits'] > 0, 'no SSD hits after the reopen')
        c.close()
        hx.kill()
    finally:
        hx.stop()
    check_no_wrong_entries(ssd, img, 'after the kill')
    st, _ = restart_check(d, img, ssd, 'reopen-2')
    check(st['recovered-at-open'] > 0, f'nothing recovered: {st}')


def test_open_in_pass_through_drops_the_ssd():
    """A warm SSD, then the node opened in pass-through and written, then a
    crash, then opened in write-through: nothing from before may be served
    (the open in pass-through dropped it)."""
    d, img, ssd, ents = damaged_setup('pt-open')
    hx = SsdExport(d, img, ssd, hc={'mode': 'pass-through'}, name='qsd-pt')
    try:
        st = hx.ssd_stats()
        check_eq((st['ssd-active'], st['ssd-recovered'], st['ssd-used']),
                 (False, 0, 0), '(active, recovered, used) in pass-through')
        c = hx.client()
        rng = random.Random(f'{SEED}-pt')
        for blk in sorted(ents)[::3]:
            c.write(blk * BS, rng.randbytes(BS))
        c.close()
        hx.kill()
    finally:
        hx.stop()
    check_no_wrong_entries(ssd, img, 'after pass-through writes')
    st, _ = restart_check(d, img, ssd, 'pt-open-2')
    check_eq(st['recovered-at-open'], 0, 'recovered after a pass-through '
             'open')


def test_inactivation_hands_the_ssd_off():
    """Migration source: inactivation hands the tier off (state 3, the
    VM's lineage and tenure) and keeps its entries: a destination the VM
    comes back to may keep them (test_migration).  An activation that is no
    migration's arrival (no write sets) empties it, and so does a cold open:
    the origin written elsewhere meanwhile (here: directly) is what reads
    return after the activation and after a restart."""
    d, img, ssd, hx = warm_setup('inact', size=4 * MiB, ssd_size=2 * MiB)
    rng = random.Random(f'{SEED}-inact')
    try:
        c = hx.client()
        put_on_ssd(hx, c, X, 1 * MiB, 256 * KiB)
        c.close()
        hx.unexport()
        kept = set(ssdfile.entries(ssd))
        hx.qmp.cmd('blockdev-set-active', **{'node-name': 'hc0'},
                   active=False)
        sb, _ = ssdfile.read_super(ssd)
        check_eq(sb['state'], ssdfile.STATE_HANDED_OFF,
                 'state after inactivation')
        check_eq(set(ssdfile.entries(ssd, handed_off=True)), kept,
                 'entries after inactivation')
        check(not durable_blocks(ssd), 'a cold open would load entries of '
              'a handed-off tier')
        check_eq(hx.ssd_stats()['ssd-active'], False, 'active while '
                 'inactive')
        # the destination writes the origin
        with open(img, 'r+b') as f:
            os.pwrite(f.fileno(), rng.randbytes(XLEN), XOFF)
        hx.qmp.cmd('blockdev-set-active', **{'node-name': 'hc0'},
                   active=True)
        check_eq(hx.ssd_stats()['ssd-active'], True, 'active after '
                 'activation')
        check(not ssdfile.entries(ssd, handed_off=True), 'an activation '
              'without write sets kept the tier')
        hx.reexport()
        c = hx.client()
        check_reads(c, img, 0, 4 * MiB, 'after activation')
        put_on_ssd(hx, c, X, 1 * MiB, 256 * KiB)
        c.close()
        hx.unexport()
        hx.qmp.cmd('blockdev-set-active', **{'node-name': 'hc0'},
                   active=False)
        hx.kill()
    finally:
        hx.stop()
    with open(img, 'r+b') as f:
        os.pwrite(f.fileno(), rng.randbytes(XLEN), XOFF)
    check_no_wrong_entries(ssd, img, 'after inactivation and a kill')
    st, _ = restart_check(d, img, ssd, 'inact-2')
    check_eq(st['recovered-at-open'], 0, 'recovered after inactivation')


# ---- 8. SSD I/O errors (blkdebug) -------------------------------------------

def blkdebug_ssd(ssd, iotype, offset, once=True):
    return {'driver': 'blkdebug', 'image': {'driver': 'file',
                                             'filename': ssd},
            'inject-error': [{'event': 'none', 'iotype': iotype,
                              'sector': offset // 512, 'once': once,
                              'errno': 5}]}


def ssd_error_case(tag, iotype, where):
    """where: 'data' (slot 8's data) or 'table' (the slot table's second
    sector, slots 128..255).  The SSD is formatted (and the slot offsets
    known) first."""
    d = subdir(tag)
    size = 4 * MiB
    img = make_file(os.path.join(d, 'origin.img'), size)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    hc = {'ram-size': 128 * KiB, 'seq-cutoff': 0}
    SsdExport(d, img, ssd, hc=hc, name='qsd-fmt', export=False).quit()
    sb, _ = ssdfile.read_super(ssd)
    off = (ssdfile.slot_offset(sb, 8) if where == 'data'
           else ssdfile.META_OFFSET + 4096)
    hx = SsdExport(d, img, ssd, hc=hc, ssd_node=blkdebug_ssd(ssd, iotype,
                                                              off))
    rng = random.Random(f'{SEED}-{tag}')
    try:
        c = hx.client()
        # demotions until the bad spot is written (or, for reads, found
        # on the SSD and read); the demoter drops work when busy, so pass
        # after pass, a little at a time
        for rnd in range(40):
            warm_pass(c, img, 2 * MiB, chunk=16 * KiB, order=rng)
            if hx.stats()['ssd-errors']:
                break
            time.sleep(0.1)
        st = hx.ssd_stats()
        check(st['ssd-errors'] > 0 and not st['ssd-active'],
              f'{tag}: the error did not disable the tier: {st}')
        log = hx.log()
        check(FAILED_MSG in log and 'continuing with the RAM tier' in log,
              f'{tag}: the log does not say the tier failed: {log!r}')
        # the node goes on: reads and writes are right, from RAM and
        # origin; every block the SSD file still holds is overwritten
        on_disk = sorted(durable_blocks(ssd))
        for blk in on_disk:
            c.write(blk * BS, rng.randbytes(BS))
        for i in range(16):
            a = rng.randrange(0, 2 * MiB - 8 * KiB)
            c.write(a, rng.randbytes(rng.choice([512, 4096, 8192])))
        check_reads(c, img, 0, size, f'{tag}: after the SSD error')
        st2 = hx.ssd_stats()
        check_eq((st2['ssd-active'], st2['ssd-hits']),
                 (False, st['ssd-hits']), f'{tag}: (active, hits) after '
                 'the error')
        c.close()
    finally:
        log = hx.quit()
    # A restart with the device working again must not serve anything the
    # origin changed while the tier was off.
    st, _ = restart_check(d, img, ssd, f'{tag}-2')
    check_no_wrong_entries(ssd, img, f'{tag}: after the SSD error')
    check_eq(st['ssd-errors'], 0, f'{tag}: errors after the restart')
    return st


def test_ssd_write_error_write_back_falls_back_to_write_through():
    """Write-back whose SSD tier fails (a journal or demotion write):
    what was journaled is written back, and writes then go through to the
    origin, as in write-through (the durable half of the cache is gone)."""
    tag = 'ssd-err-wb'
    d = subdir(tag)
    size = 4 * MiB
    img = make_file(os.path.join(d, 'origin.img'), size)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    hc = {'mode': 'write-back', 'ram-size': 128 * KiB, 'seq-cutoff': 0,
          'max-dirty-age-ms': 3600000}
    SsdExport(d, img, ssd, hc=hc, name='qsd-fmt', export=False).quit()
    sb, _ = ssdfile.read_super(ssd)
    hx = SsdExport(d, img, ssd, hc=hc, ssd_node=blkdebug_ssd(
        ssd, 'write', ssdfile.slot_offset(sb, 8)))
    rng = random.Random(f'{SEED}-{tag}')
    model = bytearray(pread_file(img, 0, size))
    try:
        c = hx.client()
        for rnd in range(200):
            a = rng.randrange(0, 1 * MiB // BS) * BS
            data = rng.randbytes(BS)
            c.write(a, data)
            model[a:a + BS] = data
            if rnd % 8 == 7:
                c.flush()       # also the one the SSD fails under
            if hx.stats()['ssd-errors']:
                break
        st = hx.ssd_stats()
        check(st['ssd-errors'] > 0 and not st['ssd-active'],
              f'{tag}: the error did not disable the tier: {st}')
        c.flush()
        check(pread_file(img, 0, size) == bytes(model),
              f'{tag}: the origin after a flush lacks written data')
        # now write-through: a write is on the origin when it completes
        a = 2 * MiB
        data = rng.randbytes(BS)
        c.write(a, data)
        model[a:a + BS] = data
        check_eq(pread_file(img, a, BS), data, f'{tag}: a write after the '
                 'SSD failed did not go through to the origin')
        check_eq(hx.stats()['dirty-bytes'], 0, f'{tag}: dirty bytes')
        check_reads(c, img, 0, size, f'{tag}: reads after the fallback')
        c.close()
    finally:
        hx.quit()
    check(pread_file(img, 0, size) == bytes(model), f'{tag}: origin at the '
          'end')


def test_ssd_write_error_on_data():
    ssd_error_case('err-wdata', 'write', 'data')


def test_ssd_write_error_on_slot_table():
    ssd_error_case('err-wtable', 'write', 'table')


def test_ssd_read_error_on_data():
    ssd_error_case('err-rdata', 'read', 'data')


def test_ssd_error_at_open():
    """The slot table unreadable at open: a clear error, no node left."""
    d = subdir('err-open')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), 1 * MiB)
    SsdExport(d, img, ssd, name='qsd-fmt', export=False).quit()
    err = open_fails(d, img, ssd, 'err-open', 'slot table',
                     ssd_node=blkdebug_ssd(ssd, 'read', ssdfile.META_OFFSET))
    check('Input/output error' in err, err)


# ---- 9. differential run ----------------------------------------------------

def diff_run(mode, nops, rng, bsize=BS, ram=64 * KiB, ssd_size=1 * MiB,
             direct=False):
    """Random reads, writes, write-zeroes, discards and flushes (aligned
    and not) against a byte model, with a RAM tier far smaller than the
    hot region and an SSD tier smaller than it too (CLOCK evicts); then
    a crash and a restart over the warm SSD."""
    tag = f'diff-{mode}-{bsize}'
    d = subdir(tag)
    size = 4 * MiB
    img = make_file(os.path.join(d, 'origin.img'), size)
    ssd = blank(os.path.join(d, 'ssd.img'), ssd_size)
    nslots = ssdfile.layout(ssd_size, bsize)[0]
    hc = {'mode': mode, 'ram-size': ram, 'seq-cutoff': 0,
          'block-size': bsize}
    if mode == 'write-back':
        hc.update({'max-dirty': ram // 2, 'max-dirty-age-ms': 20})
    node = {'driver': 'file', 'filename': ssd,
            'cache': {'direct': direct}}
    hx = SsdExport(d, img, ssd, hc=hc, ssd_node=node)
    model = bytearray(pread_file(img, 0, size))
    wb = mode == 'write-back'
    hot = rng.randrange(0, size - 1536 * KiB, bsize)
    what = f'seed {SEED} {tag}'

    def extent():
        base, span = (hot, 1536 * KiB) if rng.random() < 0.8 else (0, size)
        if rng.random() < 0.5:
            n = bsize * rng.choice([1, 1, 2, 3, 8])
            a = base + rng.randrange(0, span - n, bsize)
        else:
            n = rng.choice([1, 511, 512, 3000, 4097, 9000,
                            rng.randrange(1, 20000)])
            a = base + rng.randrange(0, span - n)
        return a, n

    try:
        c = hx.client()
        for step in range(nops):
            a, n = extent()
            r = rng.random()
            if r < 0.5:
                got = c.read(a, n)
                if got != model[a:a + n]:
                    i = next(i for i in range(n) if got[i] != model[a + i])
                    raise AssertionError(
                        f'{what} step {step}: read {a}+{n} wrong at byte '
                        f'{a + i} (block {(a + i) // bsize}); stats '
                        f'{hx.ssd_stats()}')
                continue
            if r < 0.75:
                data = rng.randbytes(n)
                c.write(a, data)
                model[a:a + n] = data
            elif r < 0.85:
                c.write_zeroes(a, n)
                model[a:a + n] = bytes(n)
            elif r < 0.95:
                c.trim(a, n)
                # the origin decides what a discarded range reads as
                model[a:a + n] = pread_file(img, a, n)
            else:
                c.flush()
                if wb:
                    # durable in the SSD's journal; on the origin once the
                    # destager has written it back
                    poll('destaged', lambda: hx.stats()['dirty-bytes'] == 0,
                         timeout=120)
                    check(pread_file(img, 0, size) == model,
                          f'{what} step {step}: origin after a flush')
            if not wb:
                check(pread_file(img, a, n) == model[a:a + n],
                      f'{what} step {step}: origin after a write')
        c.flush()
        if wb:
            poll('destaged', lambda: hx.stats()['dirty-bytes'] == 0,
                 timeout=120)
        check(pread_file(img, 0, size) == model, f'{what}: origin at the end')
        st = hx.stats()
        check(st['ssd-demotions'] > nslots and st['ssd-hits'] > 0,
              f'{what}: the SSD (and its CLOCK) was not exercised: {st}')
        check_eq((st['ssd-errors'], st['ssd-corrupt'], st['ssd-active']),
                 (0, 0, True), f'{what}: (errors, corrupt, active)')
        c.close()
        hx.kill()
    finally:
        hx.stop()
    check_no_wrong_entries(ssd, img, f'{what}: after the kill')
    hx = SsdExport(d, img, ssd, hc=hc, ssd_node=node, name='qsd2')
    try:
        check(hx.stats()['ssd-recovered'] > 0, f'{what}: nothing recovered')
        c = hx.client()
        got = b''.join(c.read(a, 64 * KiB) for a in range(0, size, 64 * KiB))
        check(got == model, f'{what}: the disk after the restart')
        c.close()
    finally:
        hx.stop()
    shutil.rmtree(d, ignore_errors=True)


N_DIFF = int(os.environ.get('HC_SSD_OPS', 3000))


def test_differential_write_through():
    diff_run('write-through', N_DIFF, random.Random(f'{SEED}-dwt'))


def test_differential_write_around():
    diff_run('write-around', N_DIFF, random.Random(f'{SEED}-dwa'))


def test_differential_write_back():
    diff_run('write-back', N_DIFF, random.Random(f'{SEED}-dwb'))


def test_differential_block_sizes_direct():
    """512-byte and 64 KiB cache blocks, the SSD opened with O_DIRECT."""
    diff_run('write-through', N_DIFF // 2, random.Random(f'{SEED}-d512'),
             bsize=512, ram=16 * KiB, ssd_size=256 * KiB, direct=True)
    diff_run('write-back', N_DIFF // 2, random.Random(f'{SEED}-d64k'),
             bsize=64 * KiB, ram=256 * KiB, ssd_size=2 * MiB, direct=True)


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
