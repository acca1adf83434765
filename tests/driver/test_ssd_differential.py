#!/usr/bin/python3
"""Differential runs of hostcache with an SSD tier: random reads, writes,
write-zeroes, discards and flushes (aligned and not) against a byte model,
with a RAM tier far smaller than the hot region and an SSD tier smaller
than it too (CLOCK evicts), in each caching mode and block size; then a
crash and a restart over the warm SSD.  HC_SSD_OPS: operations per run.

Checks as in test_ssd_hits.py (hostcache.ssdtier, hostcache.ssdfile).
HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import shutil

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq, poll
from hostcache.qemu import make_file, pread_file
from hostcache.runner import main
from hostcache.ssdtier import (BS, SEED, SsdExport, blank,
                               check_no_wrong_entries, subdir)


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
