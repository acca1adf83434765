#!/usr/bin/python3
"""Ordering in hostcache's write-back mode: discard, write-zeroes and writes
that bypass the cache (sequential, past seq-cutoff) keep their order with
the cached writes before them, sequential and pipelined, in several
configurations; a request that goes to the origin directly writes back
only the dirty data it overlaps.

Client, data and set-up: hostcache.writeback (its docstring says how a
test knows which write put each byte of the origin there).

Environment: HC_SEED (repeat a run), HC_SOAK (a factor for the number of
rounds, default 1; `make soak` sets it).
"""

import os
import random

from hostcache import KiB, MiB
from hostcache.check import check, check_eq
from hostcache.qemu import make_file, pread_file
from hostcache.runner import main
from hostcache.writeback import (HOUR_MS, Pattern, SEED, SOAK, check_file,
                                 connect, first_diff, subdir, wb_export)


# ---- f. discard / write-zeroes / bypassing writes keep their order ---------

def check_discarded(got, before, where):
    """After a discard each byte reads as before or as zero."""
    for i, (g, b) in enumerate(zip(got, before)):
        if g != b and g != 0:
            raise AssertionError(f'{where}: byte {i} after a discard is '
                                 f'neither the old data nor zero')


def rand_extent(rng, lo, hi, maxlen):
    n = rng.choice([512, 4096, 8192, rng.randrange(1, maxlen + 1)])
    n = min(n, hi - lo)
    if rng.random() < 0.5:
        off = rng.randrange(lo, hi - n + 1, 512) if n % 512 == 0 else \
            rng.randrange(lo, hi - n + 1)
    else:
        off = rng.randrange(lo, hi - n + 1)
    return off, n


class SeqOps:
    """Acknowledged one by one: the origin must equal the byte model."""

    def __init__(self, c, rng, pat, model, lo, hi):
        self.c, self.rng, self.pat, self.model = c, rng, pat, model
        self.lo, self.hi = lo, hi
        self.wid = 1

    def write(self, off, n):
        data = self.pat.data(self.wid, off, off + n)
        self.wid += 1
        self.c.write(off, data)
        self.model[off:off + n] = data

    def zeroes(self, off, n):
        self.c.write_zeroes(off, n)
        self.model[off:off + n] = bytes(n)

    def discard(self, off, n):
        before = bytes(self.model[off:off + n])
        self.c.trim(off, n)
        got = self.c.read(off, n)
        check_discarded(got, before, f'discard {off}+{n}')
        self.model[off:off + n] = got

    def random(self, count):
        for _ in range(count):
            off, n = rand_extent(self.rng, self.lo, self.hi, 64 * KiB)
            r = self.rng.random()
            if r < 0.55:
                self.write(off, n)
            elif r < 0.7:
                self.zeroes(off, n)
            elif r < 0.85:
                self.discard(off, n)
            else:
                check_eq(self.c.read(off, n), bytes(self.model[off:off + n]),
                         f'read {off}+{n}')


def ordering_export(tag, **hc):
    d = subdir(tag)
    size = 1 * MiB
    img = make_file(os.path.join(d, 'origin.img'), size)
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS,
                              'ram-size': 4 * MiB, **hc})
    return hx, img, bytearray(pread_file(img, 0, size))


ORDER_VARIANTS = [{}, {'seq-cutoff': 16 * KiB},
                  {'block-size': 64 * KiB, 'seq-cutoff': 64 * KiB}]


def test_ordering_sequential():
    for vi, hc in enumerate(ORDER_VARIANTS):
        rng = random.Random(f'{SEED}-oseq{vi}')
        hx, img, model = ordering_export(f'oseq{vi}', **hc)
        try:
            c = connect(hx)
            ops = SeqOps(c, rng, Pattern(rng, len(model)), model, 0,
                         256 * KiB)
            # the brief's sequence: A, discard, partial B, zeroes, flush
            ops.write(0, 64 * KiB)
            ops.discard(16 * KiB, 32 * KiB)
            ops.write(20000, 10000)
            ops.zeroes(8 * KiB + 100, 16 * KiB)
            ops.write(40 * KiB, 4 * KiB)
            ops.discard(36 * KiB, 12 * KiB + 7)
            c.flush()
            check_file(img, model, f'{hc}: after the fixed sequence')
            for rnd in range(4 * SOAK):
                ops.random(40)
                # the writes since the last discard / write-zeroes are
                # still cached: the flush is what writes them back
                ops.write(rng.randrange(0, 200 * KiB), 3000)
                check(hx.stats()['dirty-bytes'] > 0,
                      'nothing dirty before the flush')
                c.flush()
                check_file(img, model, f'{hc} round {rnd}')
                check_eq(c.read(0, len(model)), bytes(model),
                         f'{hc} round {rnd}: reads')
            st = hx.stats()
            check_eq(st['destage-errors'], 0, 'destage-errors')
            c.close()
        finally:
            hx.stop()


def test_direct_request_writes_back_only_what_it_overlaps():
    # A discard, write-zeroes or bypassing write writes back the dirty
    # blocks it overlaps first (so the origin sees them in order); dirty
    # data elsewhere stays cached: a guest's small discard must not turn
    # into a write-back of the whole cache.
    hx, img, model = ordering_export('overlap', **{'seq-cutoff': 64 * KiB})
    try:
        c = connect(hx)
        ops = SeqOps(c, random.Random(f'{SEED}-overlap'),
                     Pattern(random.Random(SEED), len(model)), model, 0,
                     1 * MiB)
        stream = 768 * KiB
        for i in range(16):                     # every other block of 128K
            ops.write(i * 8 * KiB, 4 * KiB)

        def bypass():
            ops.write(stream + 100 * KiB, 4 * KiB)  # met by the 4th write
            for i in range(3):                  # 3rd on: longer than cutoff
                ops.write(stream + i * 32 * KiB, 32 * KiB)
            before = hx.stats()
            ops.write(stream + 3 * 32 * KiB, 32 * KiB)
            return before

        fails = []
        for what, fn in (
                ('discard', lambda: ops.discard(512 * KiB, 4 * KiB)),
                ('write-zeroes', lambda: ops.zeroes(600 * KiB, 4 * KiB)),
                ('bypassing write', bypass)):
            if what != 'bypassing write':
                ops.write(int(what != 'discard') * 88 * KiB + 512 * KiB,
                          8 * KiB)              # two dirty blocks, one met
            before = hx.stats()
            before = fn() or before
            after = hx.stats()
            if after['dirty-bytes'] < before['dirty-bytes'] - 4 * KiB:
                fails.append(
                    f'a {what} over one dirty block wrote back '
                    f'{after["destaged-blocks"] - before["destaged-blocks"]}'
                    f' blocks: dirty-bytes {before["dirty-bytes"]} -> '
                    f'{after["dirty-bytes"]}')
        check(hx.stats()['sequential-bypasses'] > 0, 'nothing bypassed')
        c.flush()
        check_file(img, model, 'after the flush')
        check(not fails, '; '.join(fails))
        c.close()
    finally:
        hx.stop()


def attribute(final, prev, batch, lo, hi):
    """Each sector piece of final[lo:hi] must be one op's data, zero (after
    write-zeroes or discard) or, where no write or write-zeroes covers it,
    the previous content.  Returns a list of problems."""
    cuts = set(range(lo, hi + 1, 512))
    for op in batch:
        cuts.update((max(op[1], lo), min(op[2], hi)))
    cuts = sorted(x for x in cuts if lo <= x <= hi)
    bad = []
    for a, b in zip(cuts, cuts[1:]):
        cov = [op for op in batch if op[1] <= a and op[2] >= b]
        cands = [prev[a:b]] if not any(op[0] in ('write', 'zeroes')
                                       for op in cov) else []
        if any(op[0] in ('zeroes', 'trim') for op in cov):
            cands.append(bytes(b - a))
        cands += [op[3][a - op[1]:b - op[1]] for op in cov
                  if op[0] == 'write']
        if final[a:b] not in cands:
            bad.append(f'{a}..{b} ({[op[:3] for op in cov]})')
    return bad


def test_ordering_pipelined():
    for vi, hc in enumerate(ORDER_VARIANTS):
        rng = random.Random(f'{SEED}-opipe{vi}')
        hx, img, model = ordering_export(f'opipe{vi}', **hc)
        pat = Pattern(rng, len(model))
        lo, hi = 0, 128 * KiB
        wid = 1
        try:
            c = connect(hx)
            for rnd in range(25 * SOAK):
                prev = bytes(pread_file(img, 0, len(model)))
                batch, handles = [], []
                for _ in range(rng.randrange(2, 12)):
                    off, n = rand_extent(rng, lo, hi, 32 * KiB)
                    r = rng.random()
                    if r < 0.6:
                        data = pat.data(wid, off, off + n)
                        wid += 1
                        handles.append(c.submit_write(off, data))
                        batch.append(('write', off, off + n, data))
                    elif r < 0.8:
                        handles.append(c.submit_write_zeroes(off, n))
                        batch.append(('zeroes', off, off + n, None))
                    else:
                        handles.append(c.submit_trim(off, n))
                        batch.append(('trim', off, off + n, None))
                errs = [err for _, err, _ in c.replies(len(handles))]
                check(not any(errs), f'errors {errs}')
                cached = c.read(lo, hi - lo)
                c.flush()
                final = pread_file(img, 0, len(model))
                if cached != final[lo:hi]:
                    i = first_diff(cached, final[lo:hi])
                    raise AssertionError(
                        f'{hc} round {rnd}: read before the flush differs '
                        f'from the origin after it at byte {lo + i}; batch '
                        f'{[op[:3] for op in batch]}')
                check_eq(c.read(lo, hi - lo), final[lo:hi],
                         'read after the flush')
                bad = attribute(final, prev, batch, lo, hi)
                check(not bad, f'{hc} round {rnd}: not attributable to an '
                      f'op: {bad[:5]}')
            c.close()
        finally:
            hx.stop()


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
