#!/usr/bin/python3
"""No restart ever serves data older than the origin's from hostcache's SSD
tier: before a block changes on the origin or becomes dirty in RAM its SSD
entry is durably dropped (in each caching mode, with the demoter stalled,
for CLOCK's victims, before a write-back), and pass-through, inactivation
and activation drop everything.

Checks as in test_ssd_hits.py (hostcache.ssdtier, hostcache.ssdfile).
HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import shutil
import time

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq, poll
from hostcache.qemu import make_file, pread_file
from hostcache.runner import main
from hostcache.ssdtier import (BS, REFORMAT_MSG, SEED, SsdExport, blank,
                               check_no_wrong_entries, check_reads,
                               damaged_setup, durable_blocks, restart_check,
                               settle, subdir, warm_setup)


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


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
