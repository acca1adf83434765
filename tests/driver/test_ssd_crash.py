#!/usr/bin/python3
"""The SSD tier of hostcache after a crash: a warm restart after SIGKILL under
load (reads; writes in each caching mode) serves only the origin's data,
and a write-back journal found at open is recovered: written back through
flush epochs, at once after a reboot, kept across a reopen to pass-through
and across a failed write-back at close.

Checks as in test_ssd_hits.py (hostcache.ssdtier, hostcache.ssdfile).
HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import shutil
import signal
import threading
import time

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq, poll
from hostcache.procs import booted_ago
from hostcache.qemu import StorageDaemon, make_file, pread_file
from hostcache.qmp import QMPError, node_stats
from hostcache.runner import main
from hostcache.ssdtier import (BS, SEED, SsdExport, blank,
                               check_no_wrong_entries, check_reads,
                               crashed_journal, durable_blocks, subdir,
                               warm_pass)


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


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
