"""hostcache's write-back mode (RAM tier) under test, for
tests/driver/test_wb_*.py and the write-back migrations of
test_migration.py: an export in write-back mode, an NBD client of it, data
every byte of which tells which write put it there (Pattern), a writer
that keeps I/O in flight and records what was acknowledged (CrashWriter),
and the checks the tests share.

The client is hostcache.nbd (simple replies, pipelined), so a test knows
exactly which writes were acknowledged and which flushes completed; every
byte a test writes is a function of (write id, absolute offset) (Pattern),
so each sector of the origin can be attributed to the one write that put
it there, or to the initial content.

SEED: HC_SEED, or a random seed (the tests print it); SOAK: HC_SOAK, a
factor for the long-running parts (`make soak` sets it).
"""

import hashlib
import os
import random
import threading

from hostcache import KiB
from hostcache.check import poll
from hostcache.nbd import NBDClient
from hostcache.procs import WorkDir
from hostcache.qemu import HostcacheExport, pread_file


SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
SOAK = int(os.environ.get('HC_SOAK', 1))
EIO = 5
HOUR_MS = 3600000


# WORK/name, WORK a private directory of this process
subdir = WorkDir('hcwb-').sub


def wb_export(d, img=None, origin=None, **hc):
    """HostcacheExport in write-back mode; hc options by QAPI name."""
    return HostcacheExport(d, img, origin=origin, name='qsd0',
                           hc={'mode': 'write-back', **hc})


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


# ---- writes, their model, the origin file ------------------------------------

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
