#!/usr/bin/python3
"""Power-cut emulation of hostcache with QEMU's blklogwrites driver.

A SIGKILL (test_wb_crash.py) loses only what the process held; a power cut
also loses what the devices had not made durable.  Here every write that
reaches the origin and the SSD tier is logged, in one global order, and the
devices are rebuilt as they could be after a power cut at many points of the
run; hostcache then recovers on each rebuilt pair in a fresh process and
every block is read through it.  The oracle is the SIGKILL test's: a block
holds its value at the last completed guest flush or a later value written
to it, never an older value or garbage.  After the recovery's clean close
the origin must hold what the recovered node served (no block may flip back
to older data once the cache lets go of it).

The stack (two qemu-storage-daemons):

  logger:  file(mlog.data) <- blklogwrites "master" (log mlog.log) <- NBD
           export "m"; its data file has three regions: the origin's log,
           the SSD's log, the writer's flush markers
  cache:   file(origin) <- blklogwrites (log = raw region 0 of an NBD client
           of "m") <- hostcache -> ssd: file(ssd) <- blklogwrites (log = raw
           region 1 of another NBD client of "m"); NBD export "hc0"

Each device has its own blklogwrites node, so a flush (or an emulated FUA
write) of the SSD tier makes durable only the SSD's writes, as on two real
devices.  The two device logs are written through the master blklogwrites,
whose log is the global order: blklogwrites logs a write after it completed
and completes it only after logging it, so a write the cache issued after
another completed comes later in the master log.  (One blklogwrites node
with the two devices as raw regions over it is refused: the SSD child does
not share WRITE; and its flushes would flush both devices.)

The writer (an NBD client of "hc0", pipelined) writes self-identifying 4 KiB
blocks (magic, block number, write id, then bytes derived from them), reads
and checks, sends flushes and FUA writes; after each flush completes it
writes a marker (flush number, its logical clock) to the marker region of
"m" directly, so the master log says which guest flushes had completed at
any point.

Cut points: the entries where a device log records a flush (sampled evenly,
the last one included; HC_SOAK > 1 replays every one), replayed as a prefix
of the log; plus some arbitrary points where each device also loses a
random half of the writes since its last flush (a volatile write cache
persists any subset of unflushed writes).

Cases: write-back with the RAM tier only, write-back with an SSD tier,
write-through with an SSD tier; the cache process ends with a clean stop or
SIGKILL.  Two scripted cases make the worst power cut for one block: it is
demoted to the SSD tier (or destaged) and the origin then loses every write
it had not flushed.

A second oracle checks the origin alone (the SSD tier lost): replayed from
its own log up to each of its flush entries, it must be a crash-consistent
point in time of the guest, i.e. what a disk with a volatile write cache
could hold after a power cut: for some guest flush k, every block holds its
value after flush k or a value written to it between flush k and k+1 (the
exact rule, with writes in flight across a flush: class Epochs).  The
issue promises it for write-back with an SSD tier (destage in completion
order with flush points as epochs); without one, and in write-through, it
holds by construction and is checked too.

A recovery that refuses to open (an SSD tier it finds damaged) fails the
cut: every state replayed here is one a real power cut can leave.

Environment: HC_SEED (repeat a run), HC_SOAK (see above), HC_PC_CUTS
(prefix cut points per run, default 16), HC_PC_LOSSY (lossy cut points per
run, default 6), HC_PC_ORIGIN_CUTS (origin flush points checked by the
second oracle per run, default 0: all), HC_PC_KEEP (a directory: the
devices of every failed cut are copied there; for the second oracle, the
origin at its first failed point).
"""

import bisect
import hashlib
import os
import random
import signal
import struct
import threading
import time

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, poll
from hostcache.nbd import NBDClient
from hostcache.procs import tmpdir
from hostcache.qemu import StorageDaemon, nbd_export
from hostcache.qmp import QMPError, node_stats
from hostcache.runner import main

WORK = tmpdir('hcpc-')
SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
SOAK = int(os.environ.get('HC_SOAK', 1))
CUTS = int(os.environ.get('HC_PC_CUTS', 16))
LOSSY = int(os.environ.get('HC_PC_LOSSY', 6)) * SOAK
KEEP = os.environ.get('HC_PC_KEEP')
ORIGIN_CUTS = int(os.environ.get('HC_PC_ORIGIN_CUTS', 0))   # 0: all

BS = 4096
SECTOR = 512
REGION = 256 * MiB              # each device log's region of the master
MARK_OFF = 2 * REGION
ORIGIN_SIZE = 2 * MiB
SSD_SIZE = 1 * MiB

# blklogwrites' on-disk format (block/blklogwrites.c, from dm-log-writes)
LOG_MAGIC = 0x6a736677736872
LOG_FLUSH, LOG_FUA, LOG_DISCARD, LOG_MARK = 1, 2, 4, 8
BLK_MAGIC = b'PCUTBLK\0'
MARK_MAGIC = b'PCUTMRK\0'


def subdir(name):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    return d


def block_data(salt, blk, wid):
    """The 4 KiB a write `wid` puts in block `blk`: attributable alone."""
    head = BLK_MAGIC + struct.pack('<QQ', blk, wid)
    return head + hashlib.shake_128(salt + head).digest(BS - len(head))


# ---- the two daemons --------------------------------------------------------

class Logger:
    """qemu-storage-daemon with the master blklogwrites, exported as "m"."""

    def __init__(self, d):
        self.data = os.path.join(d, 'mlog.data')
        self.log = os.path.join(d, 'mlog.log')
        for p in (self.data, self.log):
            with open(p, 'wb') as f:
                f.truncate(MARK_OFF + BS if p == self.data else 0)
        self.qsd = StorageDaemon(d, name='logger0')
        q = self.qsd.qmp
        q.cmd('blockdev-add', driver='file', filename=self.data,
              **{'node-name': 'mdata'})
        q.cmd('blockdev-add', driver='file', filename=self.log,
              **{'node-name': 'mlogf'})
        q.cmd('blockdev-add', driver='blklogwrites', file='mdata',
              log='mlogf', **{'node-name': 'master', 'log-sector-size':
                              SECTOR, 'log-append': False})
        _, self.sock = nbd_export(self.qsd, 'master', 'm', d)

    def stop(self):
        """A clean stop: the log is complete on return."""
        self.qsd.proc.send_signal(signal.SIGTERM)
        rc = self.qsd.proc.wait(60)
        log = self.qsd.log_text()
        self.qsd.stop()
        check(rc == 0, f'logger exited {rc}: {log[-2000:]}')


class CacheStack:
    """qemu-storage-daemon with hostcache over logged devices, export hc0."""

    def __init__(self, d, logger, origin, ssd, hc):
        self.qsd = StorageDaemon(d, name='cache0')
        q = self.qmp = self.qsd.qmp
        devs = [('origin', origin, 0)] + ([('ssd', ssd, 1)] if ssd else [])
        for name, path, region in devs:
            q.cmd('blockdev-add', driver='file', filename=path,
                  **{'node-name': f'{name}-file'})
            q.cmd('blockdev-add', driver='nbd', export='m',
                  server={'type': 'unix', 'path': logger.sock},
                  **{'node-name': f'{name}-m'})
            q.cmd('blockdev-add', driver='raw', file=f'{name}-m',
                  offset=region * REGION, size=REGION,
                  **{'node-name': f'{name}-log'})
            q.cmd('blockdev-add', driver='blklogwrites',
                  file=f'{name}-file', log=f'{name}-log',
                  **{'node-name': f'{name}-blw', 'log-sector-size': SECTOR,
                     'log-append': False})
        if ssd:
            hc = {**hc, 'ssd': 'ssd-blw'}
        q.cmd('blockdev-add', driver='hostcache', file='origin-blw',
              **{'node-name': 'hc0', **hc})
        _, self.sock = nbd_export(self.qsd, 'hc0', 'hc0', d)

    def stats(self):
        return node_stats(self.qmp, 'hc0')


# ---- the writer -------------------------------------------------------------

class Write:
    __slots__ = ('wid', 'blk', 'n', 'fua', 'sent', 'ack', 'err')

    def __init__(self, wid, blk, n, fua, sent):
        self.wid, self.blk, self.n, self.fua = wid, blk, n, fua
        self.sent, self.ack, self.err = sent, None, None


class Flush:
    __slots__ = ('num', 'sent', 'done', 'err')

    def __init__(self, num, sent):
        self.num, self.sent, self.done, self.err = num, sent, None, None


class Writer:
    """Pipelined writes of whole blocks (1 to 8), checked reads, flushes and
    FUA writes over the export, in-flight requests never overlapping; after
    each completed flush a marker on the logger's export (synchronous, so
    the marker's clock is below every later request's)."""

    def __init__(self, c, mc, rng, salt, initial, qd):
        self.c, self.mc, self.rng, self.salt, self.qd = c, mc, rng, salt, qd
        self.nblk = len(initial) // BS
        self.model = bytearray(initial)
        self.clock = 0
        self.writes, self.flushes, self.marks = [], [], {}
        self.busy, self.ops = {}, {}
        self.errors = []
        self.reads_checked = 0
        self.stop = threading.Event()
        # a hot set gets most requests, so blocks are cached, evicted,
        # demoted and promoted; the rest touches the whole device
        self.hot = rng.randrange(self.nblk - 64)

    def tick(self):
        self.clock += 1
        return self.clock

    def extent(self):
        rng = self.rng
        n = rng.choice([1, 1, 1, 2, 4, 8])
        if rng.random() < 0.6:
            b = self.hot + rng.randrange(64 - n)
        else:
            b = rng.randrange(self.nblk - n + 1)
        return b, b + n

    def submit_one(self):
        rng = self.rng
        r = rng.random()
        if r < 0.04:
            self.submit_flush()
            return True
        for _ in range(8):
            a, b = self.extent()
            if not any(a < y and x < b for x, y in self.busy.values()):
                break
        else:
            return False
        if r < 0.2:
            self.submit_read(a, b - a)
        else:
            self.submit_write(a, b - a, rng.random() < 0.05)
        return True

    def submit_flush(self):
        f = Flush(len(self.flushes) + 1, self.tick())
        self.flushes.append(f)
        self.ops[self.c.submit_flush()] = f

    def submit_read(self, a, n):
        h = self.c.submit_read(a * BS, n * BS)
        self.ops[h] = ('read', a, bytes(self.model[a * BS:(a + n) * BS]))
        self.busy[h] = (a, a + n)

    def submit_write(self, a, n, fua=False):
        w = Write(len(self.writes) + 1, a, n, fua, self.tick())
        self.writes.append(w)
        data = b''.join(block_data(self.salt, x, w.wid)
                        for x in range(a, a + n))
        h = self.c.submit_write(a * BS, data, fua=fua)
        self.ops[h] = w
        self.busy[h] = (a, a + n)

    # one request at a time, for scripted scenarios
    def write(self, a, n=1, fua=False):
        self.submit_write(a, n, fua)
        self.drain()

    def read(self, a, n=1):
        self.submit_read(a, n)
        self.drain()

    def flush(self):
        self.submit_flush()
        self.drain()

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
                self.model[op.blk * BS:(op.blk + op.n) * BS] = b''.join(
                    block_data(self.salt, x, op.wid)
                    for x in range(op.blk, op.blk + op.n))
        elif isinstance(op, Flush):
            op.done, op.err = t, err
            if err:
                self.errors.append(f'flush failed: errno {err}')
            else:
                mt = self.tick()
                self.mc.write(MARK_OFF, (MARK_MAGIC + struct.pack(
                    '<QQ', op.num, mt)).ljust(SECTOR, b'\0'))
                self.marks[op.num] = mt
        else:
            _, a, want = op
            self.reads_checked += 1
            if err or data != want:
                self.errors.append(f'read of blocks {a}+{len(want) // BS} '
                                   f'returned wrong data (errno {err})')

    def drain(self):
        while self.c.in_flight():
            self.complete_one()

    def run(self):
        try:
            while not self.stop.is_set():
                while self.c.in_flight() < self.qd and self.submit_one():
                    pass
                self.complete_one()
        except (OSError, ConnectionError):
            pass                        # the kill
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f'writer: {e!r}')


# ---- the logs ---------------------------------------------------------------

def parse_log(path):
    """[(flags, offset, length, data)] of a blklogwrites log, in order."""
    with open(path, 'rb') as f:
        buf = f.read()
    magic, version, nr, ss = struct.unpack_from('<QQQI', buf, 0)
    check(magic == LOG_MAGIC and version == 1, f'{path}: not a log')
    out, pos = [], ss
    while pos + 32 <= len(buf):
        sector, nsec, flags, _ = struct.unpack_from('<QQQQ', buf, pos)
        if flags & ~0xf or (sector, nsec, flags) == (0, 0, 0):
            break
        pos += ss
        n = 0 if flags & LOG_DISCARD else nsec * ss
        out.append((flags, sector * ss, nsec * ss, buf[pos:pos + n]))
        pos += n
    check(len(out) >= nr, f'{path}: {len(out)} entries, super says {nr}')
    return out


def device_events(path):
    """The master log as events in global order:
    ('write', dev, offset, data) (data None: zeroes of length n),
    ('flush', dev), ('mark', flush number, clock), ('skip',)."""
    events, zero_data = [], set()
    used = [0, 0]
    for flags, off, ln, data in parse_log(path):
        region, o = divmod(off, REGION)
        if region == 2 and not flags & (LOG_FLUSH | LOG_DISCARD):
            check(data[:8] == MARK_MAGIC, f'marker at {off}: {data[:16]}')
            num, clock = struct.unpack_from('<QQ', data, 8)
            events.append(('mark', num, clock))
            continue
        if flags & (LOG_FLUSH | LOG_DISCARD) or o == 0 or \
                (region, o) in zero_data:
            # the master's own flushes, a device log's superblock, the
            # data of a logged write-zeroes (taken from its header)
            events.append(('skip',))
            zero_data.discard((region, o))
            continue
        check(region < 2, f'master log entry at {off}')
        sector, nsec, dflags, _ = struct.unpack_from('<QQQQ', data, 0)
        used[region] = max(used[region], o + ln)
        if dflags & LOG_FLUSH:
            events.append(('flush', region))
        elif dflags & LOG_DISCARD:
            # the device files do not discard (discard=ignore)
            events.append(('skip',))
        elif ln == SECTOR and nsec:
            events.append(('write', region, sector * SECTOR, None,
                           nsec * SECTOR))
            zero_data.add((region, o + SECTOR))
        else:
            check(ln == SECTOR * (1 + nsec), f'device log entry at {off}: '
                  f'{ln} bytes for {nsec} sectors')
            events.append(('write', region, sector * SECTOR, data[SECTOR:],
                           nsec * SECTOR))
    check(max(used) < REGION - 8 * MiB, f'device logs nearly full: {used}')
    return events


def replay(events, initial, upto, drop=()):
    """Both devices after events[0..upto] without the indices in drop."""
    devs = [bytearray(x) for x in initial]
    for i in range(upto + 1):
        e = events[i]
        if e[0] == 'write' and i not in drop:
            _, dev, off, data, n = e
            devs[dev][off:off + n] = data if data is not None else bytes(n)
    return devs


def lossy_drop(events, upto, rng):
    """Indices of a random half of each device's writes after its last
    flush at or before upto."""
    drop, flushed = set(), set()
    for i in range(upto, -1, -1):
        e = events[i]
        if e[0] == 'flush':
            flushed.add(e[1])
        elif e[0] == 'write' and e[1] not in flushed and rng.random() < 0.5:
            drop.add(i)
    return drop


# ---- recovery and the oracle ------------------------------------------------

def recover(d, devs, hc, ssd, tag):
    """hostcache over the rebuilt devices in a fresh daemon: every block
    read through it, then a clean stop.  Returns (served, origin after the
    stop, stats, error): error is the open's message if it failed."""
    cut = os.path.join(d, f'cut-{tag}')
    os.makedirs(cut, exist_ok=True)
    paths = [os.path.join(cut, 'origin.img'), os.path.join(cut, 'ssd.img')]
    for p, data in zip(paths, devs):
        with open(p, 'wb') as f:
            f.write(data)
    qsd = StorageDaemon(cut, name='recover0')
    try:
        q = qsd.qmp
        q.cmd('blockdev-add', driver='file', filename=paths[0],
              **{'node-name': 'origin'})
        opts = dict(hc)
        if ssd:
            q.cmd('blockdev-add', driver='file', filename=paths[1],
                  **{'node-name': 'ssd0'})
            opts['ssd'] = 'ssd0'
        try:
            q.cmd('blockdev-add', driver='hostcache', file='origin',
                  **{'node-name': 'hc0', **opts})
        except QMPError as e:
            return None, None, None, str(e)
        _, sock = nbd_export(qsd, 'hc0', 'hc0', cut)
        st = node_stats(q, 'hc0')
        c = NBDClient(sock, 'hc0')
        served = b''.join(c.read(o, 256 * KiB)
                          for o in range(0, ORIGIN_SIZE, 256 * KiB))
        c.close()
        st2 = node_stats(q, 'hc0')
        st = {**st2, 'ssd-recovered': st.get('ssd-recovered')}
        qsd.proc.send_signal(signal.SIGTERM)
        rc = qsd.proc.wait(60)
        log = qsd.log_text()
        check(rc == 0 and 'loses data' not in log,
              f'recovery daemon exited {rc}: {log[-2000:]}')
    finally:
        qsd.stop()
    with open(paths[0], 'rb') as f:
        after = f.read()
    return served, after, st, None


def known_flushes(events, upto, w):
    """(sent clock of the newest flush whose marker is logged by upto, the
    newest logged marker's clock)."""
    flush_sent = mark = 0
    for e in events[:upto + 1]:
        if e[0] == 'mark':
            flush_sent = max(flush_sent, w.flushes[e[1] - 1].sent)
            mark = max(mark, e[2])
    return flush_sent, mark


def describe(w, salt, initial, b, got):
    """Whose data block b holds: (write index in w.writes of b or None,
    text)."""
    if got == initial[b * BS:(b + 1) * BS]:
        return -1, 'the initial content'
    if got[:8] != BLK_MAGIC:
        return None, 'garbage'
    blk, wid = struct.unpack_from('<QQ', got, 8)
    x = w.writes[wid - 1] if 0 < wid <= len(w.writes) else None
    text = f'block {blk} of write {wid}' + (
        f' (sent {x.sent}, acked {x.ack}, fua {x.fua})' if x else '')
    if blk != b or x is None or got != block_data(salt, blk, wid):
        return None, text + ' (misplaced or damaged)'
    return wid, text


def oracle(w, salt, initial, served, flush_sent, mark):
    """Problems with the served blocks (at most 10) and block counters."""
    per_blk = [[] for _ in range(len(initial) // BS)]
    for x in w.writes:                  # in sending order
        for b in range(x.blk, x.blk + x.n):
            per_blk[b].append(x)

    def durable(x):
        return x.ack is not None and x.err == 0 and (
            x.ack < flush_sent or (x.fua and x.ack < mark))

    counts = {'durable': 0, 'newer': 0, 'untouched': 0}
    problems = []
    for b, ws in enumerate(per_blk):
        got = served[b * BS:(b + 1) * BS]
        di = max((i for i, x in enumerate(ws) if durable(x)), default=-1)
        wid, who = describe(w, salt, initial, b, got)
        i = -1 if wid == -1 else next(
            (i for i, x in enumerate(ws) if x.wid == wid), None)
        if i is not None and i >= di:
            counts['untouched' if not ws else
                   'durable' if i == di else 'newer'] += 1
            continue
        dx = ws[di] if di >= 0 else None
        problems.append(f'block {b} holds {who}; durable: ' + (
            f'write {dx.wid} (sent {dx.sent}, acked {dx.ack})' if dx
            else 'the initial content') + f', {len(ws) - di - 1} later')
        if len(problems) >= 10:
            break
    return problems, counts


def oracle_self_test(w, salt, initial, served, flush_sent, mark):
    """The oracle must catch a block reverted to what its durable write
    replaced, and garbage.  False if no block was at stake."""
    for b in range(len(initial) // BS):
        wid, _ = describe(w, salt, initial, b, served[b * BS:(b + 1) * BS])
        ws = [x for x in w.writes if x.blk <= b < x.blk + x.n]
        k = next((k for k, x in enumerate(ws) if x.wid == wid), None)
        if not wid or wid < 0 or k is None or not (
                ws[k].ack and ws[k].ack < flush_sent):
            continue
        older = (block_data(salt, b, ws[k - 1].wid) if k else
                 initial[b * BS:(b + 1) * BS])
        for bad, want in ((older, 'durable'), (os.urandom(BS), 'garbage')):
            img = served[:b * BS] + bad + served[(b + 1) * BS:]
            problems, _ = oracle(w, salt, initial, img, flush_sent, mark)
            check(problems and f'block {b} ' in problems[0] and
                  want in problems[0],
                  f'the oracle missed a bad block {b}: {problems}')
        return True
    return False


def pick(cands, n):
    """n of cands evenly spread, the last one included (all if n >= len)."""
    if n >= len(cands):
        return list(cands)
    return sorted({cands[round(i * (len(cands) - 1) / (n - 1))]
                   for i in range(n)}) if n > 1 else [cands[-1]]


# ---- the origin alone: a crash-consistent point in time ---------------------

class Epochs:
    """The guest-flush epochs of the writer's history, and the second
    oracle: the origin alone (the SSD tier lost) is a crash-consistent point
    in time at each of its own flush points.

    Flushes are numbered 1..F in sending order; epoch k is the writes
    between flush k-1 and flush k (epoch F+1: those after the last flush).
    Write x is in epoch <= hi(x), hi(x) = the first flush sent after x was
    acknowledged (F+1 if none or x was never acknowledged), and in epoch >=
    lo(x), lo(x) = 1 + the highest flush that had completed when x was sent
    (0 if none).  lo(x) < hi(x): x was in flight while flushes lo(x)..
    hi(x)-1 were, and may belong to any epoch between.

    The rule: there is a k in 0..F such that every block b holds either its
    value after epoch k (the last write to b in epoch <= k, or its initial
    content), or the data of a write to b that may be in epoch k+1 (any
    subset of them; of several writes to one block, any one).  That is
    exactly what a disk with a volatile write cache may hold after a power
    cut at a moment when flush k was the newest one completed, so ambiguous
    writes count in whichever epoch suits.  Writes to one block are never
    in flight together (the writer's rule), so each block allows an
    interval of k: holding the data of x_j (the j-th write to b),
    lo(x_j) - 1 <= k (x_j is in epoch k+1 at the latest) and k <
    hi(x_{j+1}) (the write that replaced x_j, if any, is after epoch k);
    holding its initial content, k < hi(x_1); garbage or another block's
    data allows none.  The origin is a point in time if the blocks'
    intervals intersect; a failure names the block that needs the highest
    k, the one that allows only the lowest, and the writes and flush clocks
    that put them there.  Checked per block: a multi-block write may count
    in different epochs for different blocks (weaker than one epoch per
    write, never stricter)."""

    def __init__(self, w, salt, initial):
        self.w, self.salt, self.initial = w, salt, initial
        self.nflush = len(w.flushes)
        sent = [f.sent for f in w.flushes]
        done = sorted((f.done, f.num) for f in w.flushes
                      if f.done is not None and not f.err)
        done_at = [t for t, _ in done]
        newest, top = [], 0
        for _, num in done:
            top = max(top, num)
            newest.append(top)
        self.lo, self.hi = {}, {}
        for x in w.writes:
            n = bisect.bisect_left(done_at, x.sent)
            self.lo[x.wid] = 1 + (newest[n - 1] if n else 0)
            self.hi[x.wid] = (self.nflush + 1 if x.ack is None else
                              bisect.bisect_left(sent, x.ack) + 1)
        self.per_blk = [[] for _ in range(len(initial) // BS)]
        for x in w.writes:              # in sending order
            for b in range(x.blk, x.blk + x.n):
                self.per_blk[b].append(x)

    def allowed(self, b, got):
        """(lowest k, highest k, whose data, index in per_blk[b] or -1 for
        the initial content) for block b holding got; lowest and highest
        None for data that no k allows."""
        wid, who = describe(self.w, self.salt, self.initial, b, got)
        ws = self.per_blk[b]
        j = -1 if wid == -1 else next(
            (j for j, x in enumerate(ws) if x.wid == wid), None)
        if j is None:
            return None, None, who, None
        low = 0 if j < 0 else max(0, self.lo[wid] - 1)
        high = (self.nflush if j + 1 == len(ws) else
                min(self.nflush, self.hi[ws[j + 1].wid] - 1))
        return low, high, who, j

    def what(self, x):
        """Write x with the clocks that place it in its epochs."""
        w = self.w
        lo, hi = self.lo[x.wid], self.hi[x.wid]
        after = (f', sent at {x.sent} after flush {lo - 1} completed at '
                 f'{w.flushes[lo - 2].done}' if lo > 1 else
                 f', sent at {x.sent}')
        before = (f', acked at {x.ack} before flush {hi} was sent at '
                  f'{w.flushes[hi - 1].sent}' if hi <= self.nflush else
                  ', never acknowledged' if x.ack is None else
                  f', acked at {x.ack}, no flush sent after it')
        return (f'write {x.wid} (epoch ' + (f'{lo}' if lo == hi else
                                           f'{lo}..{hi}') + after + before
                + ')')

    def verdict(self, ranges):
        """Problems (at most 4 lines) with the blocks' intervals: empty if
        some k satisfies every block."""
        bad = [(b, r[2]) for b, r in enumerate(ranges) if r[0] is None]
        if bad:
            return [f'block {b} holds {who}' for b, who in bad[:4]]
        a = max(range(len(ranges)), key=lambda b: ranges[b][0])
        z = min(range(len(ranges)), key=lambda b: ranges[b][1])
        k0, k1 = ranges[a][0], ranges[z][1]
        if k0 <= k1:
            return []
        ahead = sum(1 for r in ranges if r[0] > k1)
        behind = sum(1 for r in ranges if r[1] < k0)
        ws, j = self.per_blk[z], ranges[z][3]
        old = 'its initial content' if j < 0 else self.what(ws[j])
        return [f'block {a} holds '
                f'{self.what(self.per_blk[a][ranges[a][3]])}: the origin '
                f'is at least at flush {k0} (plus writes of epoch {k0 + 1})',
                f'block {z} holds {old}, but {self.what(ws[j + 1])} replaced '
                f'it: the origin is at most at flush {k1}',
                f'{ahead} blocks hold data newer than flush {k1} allows, '
                f'{behind} blocks data older than flush {k0} allows']

    def self_test(self):
        """The rule must catch a block from a later epoch next to a block
        still missing a write of an earlier one, and garbage.  False if the
        history has no such pair."""
        y = self.w.writes[0] if self.w.writes else None
        if y is None or self.hi[y.wid] > self.nflush:
            return False
        z = next((x for x in self.w.writes if self.lo[x.wid] >
                  self.hi[y.wid] and (x.blk >= y.blk + y.n or
                                      y.blk >= x.blk + x.n)), None)
        if z is None:
            return False
        nb = len(self.per_blk)
        ranges = [self.allowed(b, self.initial[b * BS:(b + 1) * BS])
                  for b in range(nb)]
        check(not self.verdict(ranges), 'the epoch oracle refuses the '
              f'initial content: {self.verdict(ranges)}')
        ahead = list(ranges)
        ahead[z.blk] = self.allowed(z.blk, block_data(self.salt, z.blk,
                                                      z.wid))
        problems = self.verdict(ahead)
        check(problems and problems[0].startswith(f'block {z.blk} holds '
                                                  f'write {z.wid} '),
              f'the epoch oracle missed write {z.wid} (epoch >= '
              f'{self.lo[z.wid]}) next to the initial content of block '
              f'{y.blk} (write {y.wid}, epoch <= {self.hi[y.wid]}): '
              f'{problems}')
        ranges[y.blk] = self.allowed(y.blk, os.urandom(BS))
        problems = self.verdict(ranges)
        check(problems and problems[0] == f'block {y.blk} holds garbage',
              f'the epoch oracle missed garbage in block {y.blk}: '
              f'{problems}')
        return True


# ---- a run ------------------------------------------------------------------

class Run:
    """Origin (random content) and SSD tier (blank) files, the logger and
    the cache stack, an NBD client of each; then the log as events, and
    recoveries at cut points of it."""

    def __init__(self, tag, hc, ssd, rng, qd=1):
        self.tag, self.ssd, self.rng = tag, ssd, rng
        self.what = f'seed {SEED} {tag}'
        self.d = d = subdir(tag)
        self.salt = rng.randbytes(16)
        self.initial = [rng.randbytes(ORIGIN_SIZE),
                        bytes(SSD_SIZE if ssd else 0)]
        self.origin = os.path.join(d, 'origin.img')
        self.ssd_path = os.path.join(d, 'ssd.img')
        with open(self.origin, 'wb') as f:
            f.write(self.initial[0])
        with open(self.ssd_path, 'wb') as f:
            f.truncate(len(self.initial[1]))
        self.hc = {'origin-id': 'powercut', **hc}
        self.logger = Logger(d)
        self.stack = None
        try:
            self.stack = CacheStack(d, self.logger, self.origin,
                                    ssd and self.ssd_path, self.hc)
            self.c = NBDClient(self.stack.sock, 'hc0')
            self.mc = NBDClient(self.logger.sock, 'm')
        except BaseException:
            self.cleanup()
            raise
        self.w = Writer(self.c, self.mc, rng, self.salt, self.initial[0], qd)
        self.totals = {'durable': 0, 'newer': 0, 'untouched': 0}
        self.recovered = self.hits = self.ncuts = 0
        self.self_tested = self.self_tested_epochs = False

    def cleanup(self):
        if self.stack:
            self.stack.qsd.stop()
        self.logger.qsd.stop()

    def stats(self):
        return self.stack.stats()

    def finish(self, how):
        """End the cache process (kill: SIGKILL now; clean: SIGTERM after
        the client's requests), stop the logger, read the log."""
        try:
            if how == 'kill':
                os.kill(self.stack.qsd.proc.pid, signal.SIGKILL)
                self.stack.qsd.proc.wait(30)
            else:
                self.w.drain()
                self.c.close()
                self.stack.qsd.proc.send_signal(signal.SIGTERM)
                rc = self.stack.qsd.proc.wait(60)
                log = self.stack.qsd.log_text()
                check(rc == 0 and 'loses data' not in log,
                      f'cache daemon exited {rc}: {log[-2000:]}')
            self.stack.qsd.stop()
            self.c.sock.close()
            self.mc.close()
            self.logger.stop()
        finally:
            self.cleanup()
        check(not self.w.errors, f'{self.what}: '
              + '; '.join(self.w.errors[:5]))
        self.events = device_events(self.logger.log)
        os.unlink(self.logger.data)

    def keep(self, n, devs):
        """With HC_PC_KEEP=dir, the devices of a failed cut are kept."""
        if not KEEP:
            return
        d = os.path.join(KEEP, f'{self.tag}-cut{n}')
        os.makedirs(d, exist_ok=True)
        for name, data in zip(('origin.img', 'ssd.img'), devs):
            with open(os.path.join(d, name), 'wb') as f:
                f.write(data)
        print(f'  kept the devices of cut {n} in {d}')

    def who(self, b, image):
        return describe(self.w, self.salt, self.initial[0], b,
                        image[b * BS:(b + 1) * BS])[1]

    def count(self, kind, dev):
        return sum(1 for e in self.events if e[0] == kind and e[1] == dev)

    def cut(self, i, drop=(), label=''):
        """Recover after events[0..i] without drop; returns the problems
        found (the oracle on what the recovered node served and on the
        origin after its clean stop; both must agree)."""
        w, salt, initial = self.w, self.salt, self.initial[0]
        n = self.ncuts
        self.ncuts += 1
        devs = replay(self.events, self.initial, i, drop)
        flush_sent, mark = known_flushes(self.events, i, w)
        served, after, rst, err = recover(self.d, devs, self.hc, self.ssd, n)
        where = (f'{self.what}: cut {n} {label}at log entry {i}/'
                 f'{len(self.events)} ({len(drop)} unflushed device writes '
                 f'dropped), newest marked flush sent at {flush_sent}')
        if err:
            self.keep(n, devs)
            return [('open failed', f'{where}: recovery open failed: {err}')]
        failures = []
        problems, counts = oracle(w, salt, initial, served, flush_sent, mark)
        if problems:
            failures.append(('bad read', f'{where}: read after recovery:'
                             '\n    ' + '\n    '.join(problems)))
        problems, _ = oracle(w, salt, initial, after, flush_sent, mark)
        if problems:
            failures.append(('bad origin', f'{where}: origin after the '
                             'recovered node\'s clean stop:\n    '
                             + '\n    '.join(problems)))
        bad = [b for b in range(ORIGIN_SIZE // BS)
               if after[b * BS:(b + 1) * BS] != served[b * BS:(b + 1) * BS]]
        if bad:
            failures.append(('unstable',
                f'{where}: after the recovered node\'s clean stop the origin '
                f'differs from what it served in {len(bad)} blocks:\n    '
                + '\n    '.join(
                    f'block {b}: served {self.who(b, served)}, origin has '
                    f'{self.who(b, after)}' for b in bad[:4])))
        if failures:
            self.keep(n, devs)
        if not self.self_tested:
            self.self_tested = oracle_self_test(w, salt, initial, served,
                                                flush_sent, mark)
        for k in self.totals:
            self.totals[k] += counts[k]
        self.recovered += rst.get('ssd-recovered') or 0
        self.hits += rst.get('ssd-hits') or 0
        cut = os.path.join(self.d, f'cut-{n}')
        for f in os.listdir(cut):
            if f.endswith('.img'):
                os.unlink(os.path.join(cut, f))
        return failures

    def origin_points(self):
        """The second oracle (Epochs) on the origin alone, replayed from
        its own log up to each of its flush entries (HC_PC_ORIGIN_CUTS
        samples them; all with HC_SOAK > 1): no recovery, the SSD tier is
        lost.  Incremental, so checking every point costs well under a
        second.  Returns (failures, points checked, the lowest k of each
        point that was one)."""
        ep = Epochs(self.w, self.salt, self.initial[0])
        if not self.self_tested_epochs:
            self.self_tested_epochs = ep.self_test()
        points = [i for i, e in enumerate(self.events)
                  if e[0] == 'flush' and e[1] == 0]
        chosen = set(points if SOAK > 1 or not ORIGIN_CUTS else
                     pick(points, ORIGIN_CUTS))
        img = bytearray(self.initial[0])
        nb = len(img) // BS
        ranges = [ep.allowed(b, bytes(img[b * BS:(b + 1) * BS]))
                  for b in range(nb)]
        touched, failures, ks = set(), [], []
        for i, e in enumerate(self.events):
            if e[0] == 'write' and e[1] == 0:
                _, _, off, data, n = e
                img[off:off + n] = data if data is not None else bytes(n)
                touched.update(range(off // BS, min(nb, -(-(off + n) // BS))))
            if i not in chosen:
                continue
            for b in touched:
                ranges[b] = ep.allowed(b, bytes(img[b * BS:(b + 1) * BS]))
            touched.clear()
            problems = ep.verdict(ranges)
            nth = points.index(i) + 1
            if problems:
                failures.append(('origin not a point in time',
                    f'{self.what}: the origin alone at its flush {nth}/'
                    f'{len(points)} (log entry {i}/{len(self.events)}) is '
                    f'no crash-consistent point in time of the guest\'s '
                    f'{ep.nflush} flushes:\n    ' + '\n    '.join(problems)))
                if len(failures) == 1:
                    self.keep(f'-origin-flush{nth}', [bytes(img)])
            else:
                ks.append(max(r[0] for r in ranges))
        return failures, len(chosen), ks


def report(failures, ncuts):
    """Fail with the failures of a run's cuts, counted by kind (the first
    few of each kind shown)."""
    kinds, shown = {}, []
    for k, t in failures:
        kinds[k] = kinds.get(k, 0) + 1
        if kinds[k] <= 3:
            shown.append(t)
    check(not failures, f'{len(failures)} of {ncuts} cuts failed ({kinds}; '
          '"unstable": the origin after the clean stop differs from what '
          'was served):\n  ' + '\n  '.join(shown[:8]))


def powercut_run(tag, hc, ssd, stop, rng, point_in_time=True):
    """The random writer for a second or two, then SIGKILL or a clean stop;
    recoveries at flush points and at lossy points; with point_in_time,
    the origin alone at its flush points (Epochs)."""
    r = Run(tag, hc, ssd, rng, qd=rng.choice([1, 4, 8]))
    w = r.w
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    try:
        time.sleep(rng.uniform(1.0, 2.0) * min(SOAK, 3))
        st = r.stats()
    finally:
        if stop == 'kill':
            os.kill(r.stack.qsd.proc.pid, signal.SIGKILL)
        w.stop.set()
        th.join(30)
    check(not th.is_alive(), 'writer did not stop')
    r.finish(stop)
    events = r.events
    flush_idx = [i for i, e in enumerate(events) if e[0] == 'flush']
    nwrite = [r.count('write', dev) for dev in (0, 1)]
    acked = sum(1 for x in w.writes if x.ack is not None)
    print(f'  {tag}: qd {w.qd}, {len(w.writes)} writes ({acked} acked), '
          f'{len(w.marks)}/{len(w.flushes)} flushes marked, '
          f'{w.reads_checked} reads; log {len(events)} entries: origin '
          f'{nwrite[0]} writes {r.count("flush", 0)} flushes, ssd '
          f'{nwrite[1]} writes {r.count("flush", 1)} flushes; stats: '
          + ', '.join(f'{k} {st.get(k)}' for k in (
              'dirty-bytes', 'destaged-blocks', 'evictions', 'ssd-demotions',
              'ssd-hits') if k in st))
    check(len(w.marks) > 0 and nwrite[0] > 0, f'{r.what}: nothing at stake')
    if ssd:
        check(nwrite[1] > 0 and st['ssd-demotions'] > 0,
              f'{r.what}: nothing demoted to the SSD tier: {st}')
    cuts = [(i, 'prefix') for i in
            (flush_idx if SOAK > 1 else pick(flush_idx, CUTS))]
    cuts += [(rng.randrange(len(events)), 'lossy') for _ in range(LOSSY)]
    failures = []
    for i, kind in cuts:
        drop = lossy_drop(events, i, rng) if kind == 'lossy' else ()
        failures += r.cut(i, drop, f'({kind}) ')
    print(f'  {tag}: {len(cuts)} cuts replayed ({len(flush_idx)} flush '
          f'points); blocks {r.totals}; ssd-recovered {r.recovered}, '
          f'ssd-hits {r.hits} after recovery')
    ncuts = len(cuts)
    if point_in_time:
        ofail, n, ks = r.origin_points()
        failures += ofail
        ncuts += n
        print(f'  {tag}: the origin alone at {n} of its '
              f'{r.count("flush", 0)} flush points: {len(ofail)} not a '
              f'point in time; the others at guest flushes '
              + (f'{min(ks)}..{max(ks)} of {len(w.flushes)}' if ks else '-'))
        check(r.self_tested_epochs, f'{r.what}: the epoch oracle\'s self '
              'test found no write after a flush the first write preceded')
    report(failures, ncuts)
    check(r.totals['durable'] > 0 and r.self_tested,
          f'{r.what}: no block was durable at any cut: the oracle had '
          f'nothing to check')
    return r


WB = {'mode': 'write-back', 'ram-size': 256 * KiB, 'max-dirty': 128 * KiB,
      'max-dirty-age-ms': 50, 'seq-cutoff': 0}
WT = {'mode': 'write-through', 'ram-size': 128 * KiB, 'seq-cutoff': 0}


def test_write_back_ram_only_kill():
    powercut_run('wb-ram', WB, False, 'kill', random.Random(f'{SEED}-wb-ram'))


def test_write_back_ssd_clean_stop():
    r = powercut_run('wb-ssd', WB, True, 'clean',
                     random.Random(f'{SEED}-wb-ssd'))
    check(r.recovered > 0, 'no recovery found an SSD entry')


def test_write_back_ssd_kill():
    powercut_run('wb-ssd-kill', WB, True, 'kill',
                 random.Random(f'{SEED}-wb-ssd-kill'))


def test_write_through_ssd():
    r = powercut_run('wt-ssd', WT, True, 'clean',
                     random.Random(f'{SEED}-wt-ssd'))
    check(r.recovered > 0 and r.hits > 0, f'SSD tier not used after '
          f'recovery: recovered {r.recovered}, hits {r.hits}')


# ---- scripted: a power cut that loses the origin's unflushed writes --------

def origin_loses_unflushed(r):
    """Cut at the end of the log; the origin loses every write after its
    last flush, the SSD tier nothing: the worst an origin with a volatile
    write cache may do."""
    last = len(r.events) - 1
    drop = set()
    for i in range(last, -1, -1):
        e = r.events[i]
        if e[0] == 'flush' and e[1] == 0:
            break
        if e[0] == 'write' and e[1] == 0:
            drop.add(i)
    return last, drop


def demote(r, blk, filler):
    """Read filler blocks one by one until blk has an entry on the SSD
    file (it was evicted from RAM and demoted)."""
    for b in filler:
        r.w.read(b)
        if blk in ssdfile.entries(r.ssd_path):
            return
    poll(f'block {blk} demoted', lambda: blk in ssdfile.entries(r.ssd_path))


def test_write_through_demoted_then_origin_loses_the_write():
    """Write-through: a block written (the origin has it, unflushed), then
    evicted and demoted to the SSD tier, then the power cut drops what the
    origin has not flushed.  The demotion's entry may only become durable
    after an origin flush covering the write, or the recovered node would
    serve the SSD copy while the origin holds older data (a block changing
    without a write once that entry goes)."""
    r = Run('wt-demote', {**WT, 'ram-size': 64 * KiB}, True,
            random.Random(f'{SEED}-wt-demote'))
    try:
        r.w.flush()
        r.w.write(10)
        demote(r, 10, range(100, 200))
    finally:
        r.finish('kill')
    last, drop = origin_loses_unflushed(r)
    # The driver flushes the origin before a demotion's entry is written,
    # so normally nothing unflushed is left to lose here (drop is empty);
    # the cut and the oracle run either way.
    report(r.cut(last, drop), 1)


def test_write_back_destaged_then_origin_loses_the_write():
    """Write-back with an SSD tier: a block written and flushed, then
    destaged to the origin and no longer dirty; the power cut loses the
    origin's unflushed writes.  The block's flushed data must survive:
    nothing may stop being dirty before the origin has flushed it."""
    r = Run('wb-destage', {**WB, 'max-dirty-age-ms': 10}, True,
            random.Random(f'{SEED}-wb-destage'))
    try:
        r.w.write(10)
        r.w.flush()
        poll('the block destaged', lambda: r.stats()['dirty-bytes'] == 0)
        demote(r, 10, range(100, 200))
    finally:
        r.finish('kill')
    last, drop = origin_loses_unflushed(r)
    check(any(e[0] == 'write' and e[1] == 0 and e[2] <= 10 * BS < e[2] + e[4]
              for e in r.events), 'block 10 never reached the origin')
    report(r.cut(last, drop), 1)


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
