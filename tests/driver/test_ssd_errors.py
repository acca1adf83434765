#!/usr/bin/python3
"""I/O errors of hostcache's SSD tier (blkdebug over the SSD file): an error
disables the tier and the node goes on with RAM only (write-back falls back
to write-through), reads stay correct, and an error at open refuses the
tier.

Checks as in test_ssd_hits.py (hostcache.ssdtier, hostcache.ssdfile).
HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import time

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq
from hostcache.qemu import make_file, pread_file
from hostcache.runner import main
from hostcache.ssdtier import (BS, FAILED_MSG, SEED, SsdExport, blank,
                               check_no_wrong_entries, check_reads,
                               durable_blocks, open_fails, restart_check,
                               subdir, warm_pass)


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


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
