#!/usr/bin/python3
"""fio (nbd ioengine, libnbd) against a qemu-storage-daemon NBD export of
hostcache over a raw file: random mixed I/O with fio's own data verification
(crc32c headers, verified while running and at the end) on a working set
four times the cache, and a sequential scan larger than seq-cutoff that must
neither be cached nor push out the hot blocks."""

import os

from hostcache import KiB, MiB
from hostcache.check import check, check_eq
from hostcache.fio import Fio
from hostcache.procs import tmpdir
from hostcache.qemu import HostcacheExport, make_file
from hostcache.runner import main

WORK = tmpdir()
DISK = 32 * MiB
RAM = 8 * MiB

# serialize_overlap: without it fio may have two writes of one block in
# flight (randrw over io_size = 2 x size starts a second pass), whose order
# is undefined on any storage, and its verify then fails erratically
# (fio's documentation); with it a verify failure means wrong data.
VERIFY = ['--verify=crc32c', '--verify_fatal=1', '--verify_backlog=256',
          '--serialize_overlap=1',
          '--do_verify=1']


def export(tag, **hc):
    img = make_file(os.path.join(WORK, f'{tag}.img'), DISK)
    return HostcacheExport(WORK, img, name=f'qsd-{tag}',
                           hc={'ram-size': RAM, **hc})


def randrw(hx, name, bs_args, mode):
    hx.reopen(mode=mode)
    s0 = hx.stats()
    job = Fio(WORK, name, hx.nbd_uri(),
              ['--rw=randrw', '--rwmixread=60', '--iodepth=16',
               f'--size={DISK}', f'--io_size={2 * DISK}',
               '--random_distribution=zipf:0.8', *bs_args,
               *VERIFY]).wait(timeout=180)
    s1 = hx.stats()
    check(hx.alive(), 'qemu-storage-daemon died')
    check(job['read']['total_ios'] > 0 and job['write']['total_ios'] > 0,
          f'{name}: fio did no I/O')
    return s0, s1


def test_randrw_verify_4k():
    hx = export('rw4k')
    try:
        for mode in ('write-through', 'write-around'):
            s0, s1 = randrw(hx, f'rw4k-{mode}', ['--bs=4k'], mode)
            check(s1['read-hits'] > s0['read-hits'],
                  f'{mode}: no read hits: {s1}')
            check(s1['evictions'] > s0['evictions'],
                  f'{mode}: no evictions with a 4x working set: {s1}')
            check(s1['ram-used'] <= RAM, f'ram-used over the limit: {s1}')
            check_eq(s1['origin-errors'], 0, 'origin-errors')
    finally:
        hx.stop()


def test_randrw_verify_bssplit():
    hx = export('rwsplit', **{'block-size': 16 * KiB})
    try:
        s0, s1 = randrw(hx, 'rwsplit', [
            '--bssplit=4k/30:8k/20:16k/20:64k/20:512/10',
            '--blockalign=512'], 'write-through')
        check(s1['read-hits'] > s0['read-hits'], f'no read hits: {s1}')
        check(s1['evictions'] > s0['evictions'], f'no evictions: {s1}')
        s0, s1 = randrw(hx, 'rwsplit-pt', ['--bssplit=4k/50:64k/50'],
                        'pass-through')
        check_eq((s1['ram-used'], s1['read-hits'] - s0['read-hits']), (0, 0),
                 '(ram-used, new hits) in pass-through')
    finally:
        hx.stop()


def test_sequential_scan_bypasses_cache_and_keeps_hot_blocks():
    cutoff = 1 * MiB
    hot = 2 * MiB
    hx = export('seq', **{'seq-cutoff': cutoff})
    try:
        # a hot set, every block read twice (the hit promotes it)
        Fio(WORK, 'warm', hx.nbd_uri(),
            ['--rw=randread', '--bs=4k', '--iodepth=4', f'--size={hot}',
             '--loops=2']).wait()
        s1 = hx.stats()
        check_eq(s1['ram-blocks'], hot // 4096, 'hot blocks cached')
        check_eq(s1['sequential-bypasses'], 0, 'bypasses of random reads')
        # one sequential pass over the whole disk, 4x the cache
        Fio(WORK, 'scan', hx.nbd_uri(),
            ['--rw=read', '--bs=64k', '--iodepth=1', f'--size={DISK}']).wait()
        s2 = hx.stats()
        check(s2['sequential-bypasses'] > 0, f'no sequential bypasses: {s2}')
        admitted = s2['admissions'] - s1['admissions']
        check(admitted <= (cutoff + 64 * KiB) // 4096,
              f'the scan admitted {admitted} blocks, more than seq-cutoff')
        # the hot set is still cached: reading it again only hits
        Fio(WORK, 'hot', hx.nbd_uri(),
            ['--rw=randread', '--bs=4k', '--iodepth=4',
             f'--size={hot}']).wait()
        s3 = hx.stats()
        check_eq(s3['read-misses'] - s2['read-misses'], 0,
                 'misses re-reading the hot set after the scan')
        check_eq(s3['read-hits'] - s2['read-hits'], hot // 4096,
                 'hits re-reading the hot set after the scan')
    finally:
        hx.stop()


if __name__ == '__main__':
    main(globals())
