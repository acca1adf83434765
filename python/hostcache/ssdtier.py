"""The persistent SSD tier of hostcache (its `ssd` child) under test, for
tests/driver/test_ssd_*.py: a qemu-storage-daemon with the origin, the SSD
file and hostcache over both behind an NBD export (SsdExport), and the
checks and set-ups the tests share.

The origin file read with os.pread is the truth; reads go through
hostcache.nbd, whose simple replies make every read reach the cache (qemu-io
over NBD would answer holes from block status); the SSD file is read with
hostcache.ssdfile: check_no_wrong_entries() fails on any entry a restart
would serve with data other than the origin's.

SEED: HC_SEED, or a random seed (the tests print it).
"""

import os
import random
import signal
import subprocess
import time

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq, poll
from hostcache.nbd import NBDClient
from hostcache.procs import WorkDir
from hostcache.qemu import (HostcacheExport, StorageDaemon, make_file,
                            nbd_export, pread_file)
from hostcache.qmp import QMPError


SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
BS = 4096
FAILED_MSG = 'on the SSD tier failed'
REFORMAT_MSG = 'reformatting the SSD tier'


# WORK/name, WORK a private directory of this process
subdir = WorkDir('hcssd-').sub


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


# ---- a warm tier ------------------------------------------------------------

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


# ---- restarts over a tier, a journal left by a crash -------------------------

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
