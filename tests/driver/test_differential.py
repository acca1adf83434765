#!/usr/bin/python3
"""Differential test: random I/O through hostcache must give exactly what the
same I/O gives on a plain file.

1. QEMU's blkverify driver with test = hostcache over raw file A and raw =
   raw file B (a copy of A): every read is done on both and compared;
   blkverify kills the process on any difference.  Random aligned and
   unaligned reads, writes, FUA writes, flushes and groups of
   concurrent non-overlapping aio requests run over an NBD export of it,
   in every caching mode and block sizes 512, 4k and 64k, with a cache much
   smaller than the working set.  At the end A and B must be equal.
   (No write-zeroes here: QEMU 10.0's blkverify advertises zero flags but
   has no write-zeroes callback, so a write-zeroes request trips the
   assertion '!bs->supported_zero_flags' in bdrv_co_do_pwrite_zeroes.)
2. blkverify does not pass discards on, so a byte-model run adds them: an
   interactive qemu-io on the hostcache node itself, where after every step
   reads through the cache are compared with the model and the origin file
   (os.pread), which is the truth after a discard.  Write-zeroes (with and
   without unmap) are tested here too.

The seed is printed; HC_SEED=<n> repeats a run.
"""

import os
import random
import shutil

from hostcache import KiB, MiB
from hostcache.check import check, check_eq
from hostcache.procs import tmpdir
from hostcache.qemu import (QemuIoSession, StorageDaemon, make_file,
                            nbd_export, pread_file, qemu_io, random_sources,
                            read_dumps)
from hostcache.qmp import node_stats
from hostcache.runner import main

WORK = tmpdir()
SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
SIZE = 8 * MiB
RAM = 256 * KiB
MODES = ('pass-through', 'write-around', 'write-through')
RNG0 = random.Random(SEED)
SRCS = random_sources(WORK, RNG0, 12, 192 * KiB)


class Gen:
    """Random extents with locality: most land in a hot region a bit larger
    than the cache, the rest anywhere on the disk."""

    def __init__(self, rng, bsize):
        self.rng, self.bsize = rng, bsize
        self.hot = rng.randrange(0, SIZE - 2 * MiB, bsize)
        self.hot_len = RAM * 2

    def extent(self):
        rng, b = self.rng, self.bsize
        base, span = ((self.hot, self.hot_len) if rng.random() < 0.7
                      else (0, SIZE))
        kind = rng.random()
        if kind < 0.4:          # aligned to the cache block
            off = base + rng.randrange(0, span, b)
            ln = b * rng.choice([1, 1, 2, 3])
        elif kind < 0.6:        # aligned to 512
            off = base + rng.randrange(0, span, 512)
            ln = 512 * rng.randrange(1, 3 * max(1, b // 512) + 8)
        else:                   # anything, often across a block boundary
            off = base + rng.randrange(span)
            if rng.random() < 0.5:
                off = off - off % b + rng.choice([b - 1, b - 511, b + 1,
                                                  b - 3000 % b])
            ln = rng.choice([1, 100, 511, 513, 3000, 4097, b + 1,
                             rng.randrange(1, 2 * b + 5000)])
        off = min(max(off, 0), SIZE - 1)
        ln = max(1, min(ln, SIZE - off, 160 * KiB))
        return off, ln

    def disjoint(self, k):
        out = []
        while len(out) < k:
            o, n = self.extent()
            if all(o + n <= a or a + m <= o for a, m in out):
                out.append((o, n))
        return out


def blkverify_ops(rng, bsize, n):
    gen, cmds = Gen(rng, bsize), []
    while len(cmds) < n:
        r = rng.random()
        off, ln = gen.extent()
        if r < 0.30:
            cmds.append(f'read {off} {ln}')
        elif r < 0.45:
            cmds.append(f'write -P {rng.randrange(256)} {off} {ln}')
        elif r < 0.58:
            cmds.append(f'write -s {rng.choice(SRCS)[0]} {off} {ln}')
        elif r < 0.63:
            cmds.append(f'write -f -P {rng.randrange(256)} {off} {ln}')
        elif r < 0.70:
            cmds.append(f'write -P 0 {off} {ln}')
        elif r < 0.74:
            cmds.append('flush')
        else:
            for o, m in gen.disjoint(rng.randrange(2, 7)):
                a = rng.random()
                if a < 0.5:
                    cmds.append(f'aio_read {o} {m}')
                elif a < 0.9:
                    cmds.append(f'aio_write -P {rng.randrange(256)} {o} {m}')
                else:
                    cmds.append(f'aio_write -P 0 {o} {m}')
            cmds.append('aio_flush')
    return cmds


def run_blkverify(mode, bsize, nops, extra=None):
    tag = f'{mode}-{bsize}'
    rng = random.Random(f'{SEED}-{tag}')
    a = make_file(os.path.join(WORK, f'{tag}-a.img'), SIZE)
    b = os.path.join(WORK, f'{tag}-b.img')
    shutil.copyfile(a, b)
    qsd = StorageDaemon(WORK, name=f'qsd-{tag}')
    what = f'seed {SEED} {tag} {extra or ""}'
    try:
        origin = {'driver': 'file', 'filename': a, 'node-name': 'origin'}
        hc = {'driver': 'hostcache', 'node-name': 'hc0', 'mode': mode,
              'block-size': bsize, 'ram-size': RAM, 'file': origin}
        for k, v in (extra or {}).items():
            if k.startswith('file.'):
                origin[k[5:]] = v
            else:
                hc[k] = v
        qsd.qmp.cmd('blockdev-add', driver='blkverify',
                    **{'node-name': 'bv'}, test=hc,
                    raw={'driver': 'file', 'filename': b})
        opts, _ = nbd_export(qsd, 'bv', 'bv', WORK)
        cmds = blkverify_ops(rng, bsize, nops)
        r = qemu_io(opts, cmds + ['read 0 8M'], check_rc=False,
                    extra=['-t', 'writeback'])
        out = r.stdout + r.stderr
        if qsd.proc.poll() is not None or 'blkverify' in qsd.log_text():
            log = qsd.log_text()
            raise AssertionError(f'{what}: blkverify found a difference:\n'
                                 f'{log[-2000:]}\nqemu-io: {out[-1500:]}')
        check(r.returncode == 0 and 'failed' not in out
              and 'error' not in out.lower(), f'{what}: qemu-io: {out[-2000:]}')
        st = node_stats(qsd.qmp, 'hc0')
    finally:
        qsd.stop()
    check(open(a, 'rb').read() == open(b, 'rb').read(),
          f'{what}: origin A and reference B differ after the run')
    check_eq(st['mode'], mode, 'mode')
    if (extra or {}).get('admit-after', 1) > 1:
        # a tiny cache remembers few misses: admission is mostly refused
        check(st['admissions'] > 0 and st['admissions-refused'] > 0,
              f'{what}: admission was not exercised: {st}')
    elif mode != 'pass-through':
        check(st['read-hits'] > 0 and st['evictions'] > 0,
              f'{what}: the cache was not exercised: {st}')
        check(st['ram-used'] <= RAM, f'{what}: ram-used over the limit')
    else:
        check_eq(st['ram-used'], 0, 'pass-through ram-used')
    os.unlink(a)
    os.unlink(b)
    return st


N_BV = int(os.environ.get('HC_DIFF_OPS', 800))


def test_blkverify_pass_through():
    for bsize in (512, 4096, 65536):
        run_blkverify('pass-through', bsize, N_BV // 2)


def test_blkverify_write_around():
    run_blkverify('write-around', 512, N_BV, {'admit-after': 2})
    run_blkverify('write-around', 4096, N_BV, {'seq-cutoff': 64 * KiB})
    run_blkverify('write-around', 65536, N_BV)


def test_blkverify_write_through():
    run_blkverify('write-through', 512, N_BV)
    run_blkverify('write-through', 4096, N_BV,
                  {'file.cache': {'direct': True}, 'seq-cutoff': 128 * KiB})
    run_blkverify('write-through', 65536, N_BV)


def test_blkverify_write_back():
    # small max-dirty and age: blocks are written back during the run too
    wb = {'max-dirty': RAM // 2, 'max-dirty-age-ms': 20}
    for bsize in (512, 4096, 65536):
        st = run_blkverify('write-back', bsize, N_BV, wb)
        check(st['destaged-blocks'] > 0, f'nothing written back: {st}')
        check_eq((st['dirty-bytes'], st['destage-errors']), (0, 0),
                 '(dirty-bytes, destage-errors) after the final flush')


def run_model(mode, bsize, nops, extra=''):
    """Byte model with discards, one step at a time."""
    tag = f'model-{mode}-{bsize}'
    rng = random.Random(f'{SEED}-{tag}')
    img = make_file(os.path.join(WORK, f'{tag}.img'), SIZE)
    model = bytearray(pread_file(img, 0, SIZE))
    gen = Gen(rng, bsize)
    opts = (f'driver=hostcache,discard=unmap,mode={mode},block-size={bsize},'
            f'ram-size={RAM},{extra}file.driver=file,file.discard=unmap,'
            f'file.filename={img}')
    # write-back: the origin only has to hold the data after a flush
    wb = mode == 'write-back'
    io = QemuIoSession(opts, extra=['-t', 'writeback'])
    discards = 0

    def read_check(off, ln, what):
        out = io.run(f'read -v {off} {ln}')
        got = read_dumps(out)
        check(len(got) == 1, f'{what}: read: {out[-500:]}')
        if got[0][1] != model[off:off + ln]:
            bad = next(i for i in range(ln) if got[0][1][i] != model[off + i])
            raise AssertionError(f'{what}: read {off}+{ln} returned data the '
                                 f'disk does not hold at {off + bad} (stale '
                                 f'cache?)')

    try:
        for step in range(nops):
            off, ln = gen.extent()
            r = rng.random()
            what = f'seed {SEED} {tag} step {step}'
            if r < 0.45:
                read_check(off, ln, what)
                continue
            if r < 0.65:
                path, src = rng.choice(SRCS)
                cmd = f'write -s {path} {off} {ln}'
                model[off:off + ln] = src[:ln]
            elif r < 0.75:
                cmd = f'write -z{rng.choice(["", " -u"])} {off} {ln}'
                model[off:off + ln] = bytes(ln)
            elif r < 0.95:
                cmd = f'discard {off} {ln}'
                discards += 1
            else:
                cmd = 'flush'
            out = io.run(cmd)
            check('failed' not in out and 'error' not in out.lower(),
                  f'{what}: {cmd}: {out}')
            if cmd.startswith('discard'):
                # the origin decides what a discarded range reads as, and
                # reads through the cache must agree at once
                model[off:off + ln] = pread_file(img, off, ln)
                read_check(off, ln, f'{what} (after {cmd})')
            elif cmd == 'flush' and wb:
                check(pread_file(img, 0, SIZE) == model,
                      f'{what}: origin after a flush differs from the model')
            elif not wb and cmd != 'flush':
                check(pread_file(img, off, ln) == model[off:off + ln],
                      f'{what}: origin after {cmd} differs from the model')
        # (closing with dirty data is test_basic's business)
        check('failed' not in io.run('flush'), f'{tag}: final flush')
        check(pread_file(img, 0, SIZE) == model,
              f'seed {SEED} {tag}: origin differs from the model after the '
              'final flush')
        rc = io.close()
        check(rc == 0, f'seed {SEED} {tag}: qemu-io exited {rc} at close: '
              f'{io.tail[-2000:]}')
    finally:
        if io.proc.poll() is None:
            io.close()
    check(pread_file(img, 0, SIZE) == model,
          f'seed {SEED} {tag}: origin differs from the model at the end')
    check(discards > 0, 'no discards generated')
    os.unlink(img)


N_MODEL = int(os.environ.get('HC_MODEL_OPS', 400))


def test_model_with_discards():
    for mode in MODES:
        for bsize in (4096, 65536):
            run_model(mode, bsize, N_MODEL)


def test_model_with_discards_write_back():
    # a small max-dirty and age make write-back happen during the run too
    for bsize in (4096, 65536):
        run_model('write-back', bsize, N_MODEL,
                  f'max-dirty={RAM // 2},max-dirty-age-ms=20,')


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
