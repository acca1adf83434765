#!/usr/bin/python3
"""The crash oracle of hostcache's write-back mode (RAM tier): SIGKILL with
I/O in flight, in several configurations; what a guest may rely on, as with
a disk's volatile write cache: a flush (or a FUA write) completes only once
every write acknowledged before it is on the origin and the origin is
flushed; unflushed data may be lost but never replaced by older data or
garbage.  A self-test first shows the oracle catches a wrong image.

Client, data and set-up: hostcache.writeback (its docstring says how a
test knows which write put each byte of the origin there).

Environment: HC_SEED (repeat a run), HC_CRASH_CYCLES (crash cycles, default
7: each configuration once), HC_CRASH_SECONDS (longest run before the kill,
default 2.5).
"""

import os
import random
import signal
import threading
import time

from hostcache import KiB, MiB
from hostcache.check import check
from hostcache.qemu import HostcacheExport, StorageDaemon, pread_file
from hostcache.runner import main
from hostcache.writeback import (CrashWriter, Pattern, SEED, connect, subdir,
                                 wb_export)


CRASH_CYCLES = int(os.environ.get('HC_CRASH_CYCLES', 7))   # each variant
CRASH_SECONDS = float(os.environ.get('HC_CRASH_SECONDS', 2.5))


class IothreadExport(HostcacheExport):
    """HostcacheExport whose NBD export (and so both nodes) runs in an
    iothread: requests, the destager and QMP's main loop in two threads."""

    def __init__(self, workdir, img, hc, name='qsd'):
        self.qsd = StorageDaemon(workdir, name=name)
        self.qmp = self.qsd.qmp
        self.qmp.cmd('object-add', **{'qom-type': 'iothread', 'id': 'io0'})
        self.qmp.cmd('blockdev-add', driver='file', filename=img,
                     discard='unmap', **{'node-name': 'origin'})
        self.hc = {'discard': 'unmap', **hc}
        self.qmp.cmd('blockdev-add', driver='hostcache', file='origin',
                     **{'node-name': 'hc0', **self.hc})
        self.sock = os.path.join(workdir, 'hc0.nbd')
        self.qmp.cmd('nbd-server-start',
                     addr={'type': 'unix', 'data': {'path': self.sock}})
        self.qmp.cmd('block-export-add', type='nbd', id='hc0', name='hc0',
                     writable=True, iothread='io0', **{'node-name': 'hc0'})
        self.opts = (f'driver=nbd,server.type=unix,server.path={self.sock},'
                     f'export=hc0')


# ---- a. crash oracle: SIGKILL with I/O in flight ---------------------------

# Cache configurations the crash cycles go through, in turn: flush-driven
# (the destager idle), destager and writers over max-dirty busy, small and
# large cache blocks, sequential streams bypassing the cache.
CRASH_VARIANTS = [
    {'ram-size': 8 * MiB, 'max-dirty-age-ms': 5000},
    {'ram-size': 512 * KiB, 'max-dirty': 128 * KiB, 'max-dirty-age-ms': 10},
    {'ram-size': 1 * MiB, 'max-dirty': 256 * KiB, 'max-dirty-age-ms': 100,
     'block-size': 512, 'seq-cutoff': 64 * KiB},
    {'ram-size': 2 * MiB, 'max-dirty': 1 * MiB, 'max-dirty-age-ms': 50,
     'block-size': 64 * KiB, 'seq-cutoff': 128 * KiB},
    {'ram-size': 4 * MiB, 'max-dirty': 64 * KiB, 'max-dirty-age-ms': 1000,
     'block-size': 16 * KiB},
    {'ram-size': 1 * MiB, 'max-dirty': 256 * KiB, 'max-dirty-age-ms': 20,
     'seq-cutoff': 64 * KiB, 'iothread': True},
    {'ram-size': 8 * MiB, 'max-dirty-age-ms': 5000, 'block-size': 8 * KiB,
     'iothread': True},
]


def check_crash_image(wr, pat, initial, final):
    """The oracle; returns counters, raises with a description."""
    done = [f for f in wr.flushes if f.done is not None and f.err == 0]
    last_flush = max((f.sent for f in done), default=0)

    def durable(w):
        return w.ack is not None and w.err == 0 and (w.fua or
                                                     w.ack < last_flush)

    size = len(initial)
    nsec = size // 512
    per_sector = [[] for _ in range(nsec)]
    for w in wr.writes:             # in sending order
        for s in range(w.off // 512, (w.end - 1) // 512 + 1):
            per_sector[s].append(w)
    counts = {'durable': 0, 'newer': 0, 'lost': 0, 'untouched': 0}
    problems = []
    for s in range(nsec):
        s0, s1 = s * 512, s * 512 + 512
        ws = per_sector[s]
        cuts = {s0, s1}
        for w in ws:
            cuts.add(max(w.off, s0))
            cuts.add(min(w.end, s1))
        cuts = sorted(cuts)
        for a, b in zip(cuts, cuts[1:]):
            cov = [w for w in ws if w.off <= a and w.end >= b]
            got = final[a:b]
            di = max((i for i, w in enumerate(cov) if durable(w)),
                     default=-1)
            allowed = ([('initial', initial[a:b])] if di < 0 else
                       [(cov[di], cov[di].data(pat, a, b))])
            allowed += [(w, w.data(pat, a, b)) for w in cov[di + 1:]]
            match = next((i for i, (_, d) in enumerate(allowed) if d == got),
                         None)
            if match is not None:
                if not cov:
                    counts['untouched'] += b - a
                elif match == len(allowed) - 1:
                    counts['durable' if match == 0 and di >= 0
                           else 'newer'] += b - a
                else:
                    counts['lost'] += b - a
                continue
            # attribute the bad bytes for the report
            who = 'garbage'
            if got == initial[a:b]:
                who = 'the initial content'
            for w in cov:
                if w.data(pat, a, b) == got:
                    who = (f'write {w.wid} (sent {w.sent}, acked {w.ack}, '
                           f'fua {w.fua}, zero {w.zero})')
            dw = cov[di] if di >= 0 else None
            problems.append(
                f'bytes {a}..{b}: hold {who}; durable: '
                + (f'write {dw.wid} (acked {dw.ack})' if dw else 'initial')
                + f'; {len(cov) - di - 1} later writes allowed')
            if len(problems) >= 10:
                break
        if len(problems) >= 10:
            break
    check(not problems, f'last completed flush sent at {last_flush}; '
          'origin after the crash:\n  ' + '\n  '.join(problems))
    return counts


def crash_cycle(cycle, seed, self_test=False):
    rng = random.Random(seed)
    variant = CRASH_VARIANTS[cycle % len(CRASH_VARIANTS)]
    size = 1 * MiB
    d = subdir(f'crash{cycle}')
    img = os.path.join(d, 'origin.img')
    initial = rng.randbytes(size)
    with open(img, 'wb') as f:
        f.write(initial)
    pat = Pattern(rng, size)
    hc = {k: v for k, v in variant.items() if k != 'iothread'}
    if variant.get('iothread'):
        hx = IothreadExport(d, img, {'mode': 'write-back', **hc})
    else:
        hx = wb_export(d, img, **hc)
    c = connect(hx)
    wr = CrashWriter(c, rng, pat, size, qd=rng.choice([1, 2, 4, 8, 16]),
                     p_zero=0.05)
    wr.model[:] = initial
    th = threading.Thread(target=wr.run, daemon=True)
    kill_after = rng.uniform(0.3, CRASH_SECONDS)
    peak = {'dirty-bytes': 0, 'destaged-blocks': 0, 'sequential-bypasses': 0}
    t0 = time.monotonic()
    th.start()
    try:
        while time.monotonic() - t0 < kill_after and th.is_alive():
            st = hx.stats()
            for k in peak:
                peak[k] = max(peak[k], st[k])
            check(st['dirty-bytes'] <= variant.get('max-dirty',
                                                   variant['ram-size'] // 2),
                  f'dirty-bytes over max-dirty: {st}')
            time.sleep(rng.uniform(0.005, 0.05))
        os.kill(hx.qsd.proc.pid, signal.SIGKILL)
        th.join(30)
        check(not th.is_alive(), 'writer did not stop after the kill')
    finally:
        wr.stop.set()
        hx.stop()
        c.sock.close()
    check(not wr.errors, f'seed {seed}: ' + '; '.join(wr.errors[:5]))
    final = pread_file(img, 0, size)
    try:
        counts = check_crash_image(wr, pat, initial, final)
    except AssertionError as e:
        raise AssertionError(f'seed {seed} (cycle {cycle}, {variant}): {e}')
    acked = sum(1 for w in wr.writes if w.ack is not None)
    flushed = sum(1 for f in wr.flushes if f.done is not None)
    print(f'  cycle {cycle} seed {seed} qd {wr.qd} kill {kill_after:.2f}s: '
          f'{len(wr.writes)} writes ({acked} acked), {flushed}/'
          f'{len(wr.flushes)} flushes, {wr.reads_checked} reads; peak '
          f'{peak}; bytes {counts}')
    tested = self_test and oracle_self_test(wr, pat, initial, final)
    return counts, peak, wr, tested


def oracle_self_test(wr, pat, initial, final):
    """The oracle must catch a durable sector reverted to older data.
    False when the run left no such sector (no flush completed, say)."""
    done = max((f.sent for f in wr.flushes if f.done and f.err == 0),
               default=0)
    for w in reversed(wr.writes):
        a = (w.off + 511) // 512 * 512
        if (w.ack and w.ack < done and a + 512 <= w.end and
                not w.zero and
                final[a:a + 512] == pat.data(w.wid, a, a + 512)):
            bad = final[:a] + initial[a:a + 512] + final[a + 512:]
            try:
                check_crash_image(wr, pat, initial, bad)
            except AssertionError as e:
                check('initial content' in str(e), f'oracle said: {e}')
                return True
            raise AssertionError('the oracle missed a reverted sector')
    return False


def test_crash_sigkill_oracle():
    rng = random.Random(SEED)
    total = {'durable': 0, 'newer': 0, 'lost': 0, 'untouched': 0}
    flushes = dirty = 0
    tested = False
    for cycle in range(CRASH_CYCLES):
        counts, peak, wr, t = crash_cycle(cycle, rng.randrange(1 << 32),
                                          self_test=not tested)
        tested = tested or t
        for k in total:
            total[k] += counts[k]
        flushes += sum(1 for f in wr.flushes if f.done is not None)
        dirty = max(dirty, peak['dirty-bytes'])
    # the runs must have had something at stake
    check(flushes > 0 and dirty > 0,
          f'no flush completed or nothing dirty: {flushes}, {dirty}')
    check(tested, 'no run left a durable sector to test the oracle with')


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
