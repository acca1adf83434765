#!/usr/bin/python3
"""blockdev-reopen of a hostcache node while fio verifies data through its
NBD export: the mode (write-back included, whose dirty data must be written
back when it is left) and the RAM size change back and forth (growing and
shrinking a cache full of blocks) under load, fio must find every block it
wrote intact, and the stats must follow each change."""

import itertools
import os
import time

from hostcache import MiB
from hostcache.check import check, check_eq
from hostcache.fio import Fio
from hostcache.procs import tmpdir
from hostcache.qemu import HostcacheExport, make_file
from hostcache.runner import main

WORK = tmpdir()
DISK = 48 * MiB
RUNTIME = int(os.environ.get('HC_REOPEN_RUNTIME', 15))

# (mode, ram-size): grows and shrinks while the cache is full
PLAN = [
    ('write-through', 64 * MiB),
    ('write-back', 1 * MiB),
    ('write-around', 32 * MiB),
    ('pass-through', 32 * MiB),
    ('write-back', 4 * MiB),
    ('write-around', 64 * MiB),
    ('write-through', 2 * MiB),
    ('write-back', 48 * MiB),
    ('pass-through', 1 * MiB),
    ('write-through', 16 * MiB),
]
FINAL = ('write-through', 32 * MiB)


def test_grow_after_shrink():
    """Shrink the cache, then grow it to less than it was at first."""
    img = make_file(os.path.join(WORK, 'grow.img'), 8 * MiB)
    hx = HostcacheExport(WORK, img, hc={'ram-size': 64 * MiB})
    try:
        hx.io(['read 0 4M'])
        for ram in (1 * MiB, 32 * MiB, 2 * MiB, 64 * MiB, 8 * MiB):
            hx.reopen(**{'ram-size': ram})
            check(hx.alive(), f'qemu-storage-daemon died at ram-size {ram}')
            st = hx.stats()
            check_eq(st['ram-limit'], ram, 'ram-limit')
            hx.io(['read 0 4M'])
            check(hx.stats()['ram-used'] == min(ram, 4 * MiB),
                  f'ram-used after re-reading 4M with ram-size {ram}')
    finally:
        hx.stop()


def test_reopen_while_fio_verifies():
    img = make_file(os.path.join(WORK, 'reopen.img'), DISK)
    hx = HostcacheExport(WORK, img, hc={'ram-size': 64 * MiB,
                                        'mode': 'write-through'})
    try:
        fio = Fio(WORK, 'reopen', hx.nbd_uri(),
                  ['--rw=randrw', '--rwmixread=60', '--bs=4k',
                   '--iodepth=16', f'--size={DISK}', '--time_based',
                   f'--runtime={RUNTIME}', '--verify=crc32c',
                   '--verify_fatal=1', '--verify_backlog=128',
                   # no two writes of one block in flight (see
                   # test_fio_nbd.py): a verify failure is wrong data
                   '--serialize_overlap=1'])
        t_end = time.monotonic() + RUNTIME - 3
        done = []
        for mode, ram in itertools.cycle(PLAN):
            if time.monotonic() > t_end or not fio.running():
                break
            hx.reopen(mode=mode, **{'ram-size': ram})
            st = hx.stats()
            check_eq((st['mode'], st['ram-limit']), (mode, ram),
                     f'stats after reopen #{len(done)}')
            check(st['ram-used'] <= ram, f'ram-used over the new limit {st}')
            if mode == 'pass-through':
                check_eq(st['ram-used'], 0, 'ram-used in pass-through')
            done.append((mode, ram, st['ram-used']))
            time.sleep(0.3)
        check(fio.running(), 'fio ended before the reopen loop did')
        hx.reopen(mode=FINAL[0], **{'ram-size': FINAL[1]})
        job = fio.wait(timeout=RUNTIME + 120)
        st = hx.stats()
    finally:
        hx.stop()
    check(len(done) >= 8, f'only {len(done)} reopens under load')
    check(any(used > 1 * MiB for _, _, used in done),
          f'the cache never filled, shrinking was not tested: {done}')
    check_eq((st['mode'], st['ram-limit']), FINAL, 'final mode and ram-limit')
    check(0 < st['ram-used'] <= FINAL[1], f'final ram-used {st["ram-used"]}')
    check(st['read-hits'] > 0, 'no read hits')
    check_eq(st['origin-errors'], 0, 'origin-errors')
    check(job['read']['total_ios'] > 0 and job['write']['total_ios'] > 0,
          'fio did no I/O')


if __name__ == '__main__':
    main(globals())
