#!/usr/bin/python3
"""hostcache live-migration benchmarks: figures i and j of `make bench`
(scripts/bench.py runs them; this script runs them alone too).

Plain QEMU migration between two qemu-system-x86_64 processes on this
machine (python/hostcache/migrate.py: TCG, 64 MiB guest RAM, no guest OS, the
disk driven with HMP qemu-io through the device's BlockBackend), the disk on
hostcache over a simulated SAN: nbdkit's file plugin on a local sparse
file behind `--filter=delay` (a fixed latency per request) and
`--filter=noextents`.

  i  downtime added by dirty data, over a 0.5 ms SAN (so that writing
     back 1 GiB of 4 KiB blocks takes seconds, not a minute): 1 GiB dirty
     in write-back, in the RAM tier, and in the SSD journal (RAM + SSD
     tier, flushed), against the same VM clean (write-through, the same
     data cached): goal <= +50 ms.  Total migration time against the
     same clean VM (information).  What the origin sees: bytes written
     back during the migration over its total time, against the SAN's
     own 4 KiB random write rate at QD16 (fio; information).
  j  warm-up over the 2 ms SAN: after the source read a 64 MiB hot set
     twice, the destination's hit ratio on that hot set over time
     after the resume, for warm-up off / hot-set / content (the guest
     reads random hot blocks in batches of 8, the node's counters give
     each batch's hits); time until the hit ratio stays >= 90%, against
     the time the SAN needs to read the hot set once (fio, QD16): goal
     <= 2x; the guest's miss latency (reads of never-read blocks between
     the batches, in the first 2 x that time) against the same misses
     with warm-up off: goal <= 1.2x.  The curves go to the JSON results
     and to a PNG plot (matplotlib, Debian's python3-matplotlib).

A driver without the `warm-up` option (before issue 10) runs every mode
cold and has no migration statistics: the figures then show that
baseline, and the notes say so.

Usage: PYTHONPATH=python scripts/bench_migration.py [--quick] [--runs N]
       [--only i,j] [--out FILE] [--png FILE]
       PYTHONPATH=python scripts/bench_migration.py --replot RESULTS.json
       [--png FILE]
(PYTHONPATH: the project's helpers, python/hostcache, from the source tree.)
Results: build/bench/migration.json, plot build/bench/migration-warmup.png
(scripts/bench.py puts the rows in its own table and results.json).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time

from hostcache import GiB, KiB, MiB, paths
from hostcache.migrate import BS, HOUR_MS, Pair, has_option, new_stat
from hostcache.procs import tmpdir

B = None                # the bench module (scripts/bench.py): table, fio


class MCfg:
    dirty = 1 * GiB         # figure i
    hot = 64 * MiB          # figure j
    duration = 8.0          # seconds measured after each resume (j)
    batch = 8               # hot reads between two counter samples
    cold_per_batch = 2      # never-read blocks read after each batch
    bin_s = 0.25            # curve resolution


M = MCfg()
SAN_DELAY = '2ms'           # j: the 2 ms origin
I_SAN_DELAY = '0.5ms'       # i: 1 GiB of 4 KiB write-backs in ~15 s
SAN_FILE = 4 * GiB          # sparse; i writes [0, DIRTY), j reads [0, 3 GiB)
HOT_REGION = 1 * GiB        # hot set chunks are picked from here
COLD_BASE = 2 * GiB         # never-read blocks for the miss latency
CHUNK = 64 * KiB
DISK0 = {'origin-id': 'disk0'}


def log(msg):
    B.log(msg)


# ---- the simulated SAN ------------------------------------------------------

class San:
    """nbdkit file plugin on a sparse local file, every request delayed."""

    def __init__(self, workdir, name, delay=SAN_DELAY):
        d = B.local_dir()
        self.img = os.path.join(d, f'{name}.img')
        with open(self.img, 'wb') as f:
            f.truncate(SAN_FILE)
        self.srv = B.nbdkit(workdir, name, ['file', f'file={self.img}'],
                            ['noextents', 'delay'], [
                                f'rdelay={delay}', f'wdelay={delay}',
                                f'delay-zero={delay}', f'delay-trim={delay}'])
        self.sock = self.srv.sock
        self.uri = self.srv.uri
        self.blockdev = self.srv.blockdev

    def stop(self):
        self.srv.stop()
        os.unlink(self.img)


def subdir(workdir, name):
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    return d


def fill(vm, size, step=64 * MiB):
    """Write [0, size) in steps (patterns 1, 2, ...)."""
    for i, off in enumerate(range(0, size, step)):
        vm.io_ok(f'write -P {i % 250 + 1} {off} {min(step, size - off)}')


# ---- i: downtime and total time with dirty data -----------------------------

def migrate_filled(workdir, san, tag, mode, ssd):
    """One VM: DIRTY bytes written (write-back: dirty in RAM, or flushed
    into the SSD journal; write-through: clean), then migrated.
    Returns the Hop, with .dirty (bytes dirty at the start)."""
    d = subdir(workdir, tag)
    hc = {**DISK0, 'mode': mode, 'ram-size': 3 * M.dirty,
          'max-dirty': 3 * M.dirty, 'max-dirty-age-ms': HOUR_MS,
          'seq-cutoff': 0}
    pair = Pair(d, san.blockdev, hc,
                ssd_size=(5 * M.dirty if ssd else None))
    try:
        src = pair.start()
        fill(src, M.dirty)
        if ssd and mode == 'write-back':
            src.io_ok('flush')          # into the SSD journal
        st0 = src.stats()
        hop = pair.hop(timeout=1800)
        st1 = hop.src_stats
        hop.dirty = st0['dirty-bytes']
        hop.written = (st1['destaged-blocks'] - st0['destaged-blocks']) * BS
        hop.drained = new_stat(st1, 'migration-drained-bytes')
        pair.vm.quit()
    finally:
        for vm in (pair.vm,):
            if vm and vm.proc.poll() is None:
                vm.stop()
    for p in pair.ssd:
        if p:
            os.unlink(p)
    return hop


def fig_i(workdir):
    log(f'[i] migration downtime with {M.dirty // MiB} MiB dirty, over a '
        f'{I_SAN_DELAY} SAN')
    san = San(workdir, 'msan', I_SAN_DELAY)
    res = {k: [] for k in ('clean', 'wb', 'clean-ssd', 'wb-ssd')}
    rates = []
    for r in range(B.CFG.runs):
        for key, mode, ssd in (('clean', 'write-through', False),
                               ('wb', 'write-back', False),
                               ('clean-ssd', 'write-through', True),
                               ('wb-ssd', 'write-back', True)):
            hop = migrate_filled(workdir, san, f'i-{key}-{r}', mode, ssd)
            res[key].append(hop)
            log(f'    run {r + 1} {key}: {hop.downtime_ms} ms downtime, '
                f'{hop.total_ms} ms total, {hop.dirty // MiB} MiB dirty, '
                f'{hop.written // MiB} MiB written back, drained '
                f'{hop.drained}')
        # the SAN's own write rate for the destager's request shape
        out, _ = B.fio(workdir, [B.job(san.uri, 'randwrite', 16, 256 * MiB,
                                       runtime=3, offset=COLD_BASE)],
                       [san.srv], tag='i-san-write')
        rates.append(out[0].iops * BS / MiB)
    san.stop()
    B.RAW['i'] = {k: [{'downtime_ms': h.downtime_ms, 'total_ms': h.total_ms,
                       'dirty': h.dirty, 'written': h.written,
                       'drained': h.drained, 'info': h.info}
                      for h in v] for k, v in res.items()}
    B.RAW['i.san_write_mib_s'] = rates
    drained = [h.drained for v in res.values() for h in v]
    base = ('driver without migration statistics: everything is written '
            'back in the downtime' if all(x is None for x in drained)
            else '')
    for key, what in (('wb', 'RAM'), ('wb-ssd', 'RAM+SSD journal')):
        s, f = res[key], res['clean' if key == 'wb' else 'clean-ssd']
        note = base or (f'drained in pre-copy: '
                        f'{B.med([h.drained for h in s]) / MiB:.0f} MiB')
        B.add_row('i', f'downtime, {M.dirty // MiB}MiB dirty WB {what}', 'ms',
                  [h.downtime_ms for h in s], [h.downtime_ms for h in f],
                  'same VM clean', 'lower', 50, '<= +50ms', None, note)
        B.add_row('i', f'total time, {M.dirty // MiB}MiB dirty WB {what}',
                  'ms', [h.total_ms for h in s], [h.total_ms for h in f],
                  'same VM clean', 'ratio')
        wr = [h.written / MiB / (h.total_ms / 1000) for h in s if h.total_ms]
        B.add_row('i', f'origin write rate in migration, WB {what}', 'MiB/s',
                  wr, rates, 'SAN 4K randwrite QD16', 'ratio', note='written '
                  'back / total time: the share of the SAN the migration '
                  'uses')


# ---- j: warm-up curves ------------------------------------------------------

def hot_chunks(rng):
    n = M.hot // CHUNK
    return rng.sample(range(HOT_REGION // CHUNK), n)


def warm_source(pair, chunks):
    """The source reads its hot set twice (64 KiB reads, random order)."""
    src = pair.start()
    for _ in range(2):
        for c in random.sample(chunks, len(chunks)):
            src.io_ok(f'read {c * CHUNK} {CHUNK}')
    return src


def measure_after_resume(vm, hot_blocks, t0, rng, cold):
    """The guest's reads after the resume at t0: batches of hot reads (the
    counters before and after give the batch's hits) and cold reads
    (timed).  Returns (batches [(t, hit_bytes, read_bytes, warm-up
    done, warm-up blocks)], cold [(t, seconds)])."""
    batches, colds = [], []
    st = vm.stats()
    while time.monotonic() - t0 < M.duration:
        for b in rng.sample(hot_blocks, M.batch):
            vm.io_ok(f'read {b * BS} {BS}')
        st2 = vm.stats()
        hit = st2['read-hit-bytes'] - st['read-hit-bytes']
        miss = st2['read-miss-bytes'] - st['read-miss-bytes']
        batches.append((time.monotonic() - t0, hit, hit + miss,
                        new_stat(st2, 'warm-up-done'),
                        new_stat(st2, 'warm-up-blocks')))
        for _ in range(M.cold_per_batch):
            b = next(cold)
            t = time.monotonic()
            vm.io_ok(f'read {b * BS} {BS}')
            colds.append((t - t0, time.monotonic() - t))
        st = vm.stats()
    return batches, colds


def curve(batches):
    """[(bin end s, hit ratio)] over bins of M.bin_s (the last, partial
    bin left out)."""
    bins = {}
    for t, hit, total, _, _ in batches:
        k = int(t / M.bin_s)
        if (k + 1) * M.bin_s > M.duration + 1e-9:
            continue
        h, n = bins.get(k, (0, 0))
        bins[k] = (h + hit, n + total)
    return [((k + 1) * M.bin_s, h / n) for k, (h, n) in sorted(bins.items())
            if n]


def t90(points):
    """First bin end from which every bin has >= 90% hits (None: never)."""
    out = None
    for t, r in points:
        if r >= 0.9:
            out = out if out is not None else t
        else:
            out = None
    return out


def warm_run(workdir, san, mode, run, chunks):
    d = subdir(workdir, f'j-{mode}-{run}')
    supported = has_option('warm-up', mode)[0]
    hc = {**DISK0, 'mode': 'write-through', 'seq-cutoff': 0,
          'ram-size': 4 * M.hot}
    if supported:
        hc['warm-up'] = mode
    pair = Pair(d, san.blockdev, hc)
    rng = random.Random(f'{run}-{mode}')
    try:
        warm_source(pair, chunks)
        hop = pair.hop(quit_source=False)
        hot_blocks = [c * (CHUNK // BS) + i for c in chunks
                      for i in range(CHUNK // BS)]
        cold = iter(range(COLD_BASE // BS + run * 100000 + 1, 1 << 40, 7))
        batches, colds = measure_after_resume(pair.vm, hot_blocks,
                                              hop.t_end, rng, cold)
        st = pair.vm.stats()
        hop.src_vm.quit()
        pair.vm.quit()
    finally:
        for vm in (pair.vm,):
            if vm and vm.proc.poll() is None:
                vm.stop()
    return {'mode': mode, 'supported': supported,
            'downtime_ms': hop.downtime_ms, 'total_ms': hop.total_ms,
            'batches': batches, 'cold': colds, 'curve': curve(batches),
            'warm_up_state': new_stat(st, 'warm-up-state'),
            'warm_up_blocks': new_stat(st, 'warm-up-blocks'),
            'warm_up_done': new_stat(st, 'warm-up-done'),
            'warm_up_bytes_received': new_stat(st, 'warm-up-bytes-received')}


def fig_j(workdir, png):
    log(f'[j] warm-up after migration, {M.hot // MiB} MiB hot set, '
        f'{SAN_DELAY} SAN')
    san = San(workdir, 'jsan')
    modes = ('off', 'hot-set', 'content')
    runs = {m: [] for m in modes}
    once = []
    for r in range(B.CFG.runs):
        chunks = hot_chunks(random.Random(r))
        out, _ = B.fio(workdir, [B.job(san.uri, 'randread', 16, M.hot,
                                       io_size=M.hot, randommap=True)],
                       [san.srv], tag='j-san-once')
        once.append(M.hot / BS / out[0].iops)
        for m in modes:
            res = warm_run(workdir, san, m, r, chunks)
            runs[m].append(res)
            c = res['curve']
            log(f'    run {r + 1} {m}: t90 {t90(c)}, last bin '
                f'{100 * c[-1][1] if c else 0:.0f}% hits, warm-up '
                f'{res["warm_up_state"]} {res["warm_up_done"]}/'
                f'{res["warm_up_blocks"]}')
    san.stop()
    B.RAW['j'] = {'once_s': once, 'runs': runs, 'hot_bytes': M.hot,
                  'duration_s': M.duration, 'bin_s': M.bin_s}
    T = statistics.median(once)
    cold_note = ('driver without warm-up: every mode starts cold'
                 if not any(x['supported'] for v in runs.values() for x in v)
                 else '')
    for m in modes:
        t9 = [t90(x['curve']) for x in runs[m]]
        reached = [t if t is not None else M.duration for t in t9]
        note = cold_note or ''
        if any(t is None for t in t9):
            note = (note + '; ' if note else '') + (
                f'90% not reached in {M.duration:.0f}s in '
                f'{sum(t is None for t in t9)} of {len(t9)} runs')
        goal = None if m == 'off' else 2.0
        B.add_row('j', f'warm-up {m}: time to >=90% hot hits', 'ms',
                  [1000 * t for t in reached], [1000 * t for t in once],
                  'SAN reads hot set once', 'atmost' if goal else 'ratio',
                  goal, '<= 2x' if goal else '-', None, note)

    def lat(x):
        v = [s for t, s in x['cold'] if t <= 2 * T]
        return 1e6 * statistics.mean(v) if v else None

    for m in ('hot-set', 'content'):
        s = [lat(x) for x in runs[m]]
        f = [lat(x) for x in runs['off']]
        B.add_row('j', f'guest miss latency in warm-up, {m}', 'us', s, f,
                  'same misses, warm-up off', 'atmost', 1.2, '<= 1.2x', None,
                  cold_note or 'HMP qemu-io reads, QD1, in the first 2x '
                  'the SAN time')
    if png:
        plot(B.RAW['j'], png)


def plot(j, png):
    """Hit ratio on the hot set over time, one line per run and mode."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        log('    no matplotlib (python3-matplotlib): no plot')
        return
    colors = {'off': '#888888', 'hot-set': '#1f77b4', 'content': '#d62728'}
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for m, rs in j['runs'].items():
        for i, x in enumerate(rs):
            pts = x['curve']
            if pts:
                ax.plot([0] + [t for t, _ in pts], [0] + [100 * r for _, r
                                                          in pts],
                        color=colors.get(m), alpha=0.8, linewidth=1.2,
                        label=m if i == 0 else None)
    T = statistics.median(j['once_s'])
    ax.axvline(2 * T, color='black', linestyle='--', linewidth=0.8)
    ax.axhline(90, color='black', linestyle=':', linewidth=0.8)
    ax.text(2 * T, 3, ' 2x SAN time to read\n the hot set once', fontsize=8)
    ax.set_xlim(0, j['duration_s'])
    ax.set_ylim(0, 102)
    ax.set_xlabel('seconds after the migration completed')
    ax.set_ylabel('hits on the source\'s hot set (%)')
    cold = not any(x['supported'] for rs in j['runs'].values() for x in rs)
    ax.set_title(f'Destination warm-up: {j["hot_bytes"] // MiB} MiB hot '
                 f'set, {SAN_DELAY} origin'
                 + (' (driver without warm-up: all cold)' if cold else ''),
                 fontsize=10)
    ax.legend(loc='lower right')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    log(f'    plot: {png}')


# ---- entry points -----------------------------------------------------------

def configure(quick):
    if quick:
        M.dirty = 128 * MiB
        M.hot = 16 * MiB
        M.duration = 4.0


def run(bench, workdir, only, png=None):
    """Figures i and/or j into bench's table (bench: scripts/bench.py as a
    module)."""
    global B
    B = bench
    configure(B.CFG.quick)
    for b in (paths.QEMU_SYSTEM, B.NBDKIT, B.FIO):
        if not os.access(b, os.X_OK):
            raise RuntimeError(f'missing {b}: run make first')
    # measure a copy: a rebuild of build/qemu-build meanwhile changes
    # nothing measured (as bench.py does for qemu-img and the daemon)
    os.makedirs(os.path.join(workdir, 'bin'), exist_ok=True)
    copy = os.path.join(workdir, 'bin', 'qemu-system-x86_64')
    shutil.copy2(paths.QEMU_SYSTEM, copy)
    paths.QEMU_SYSTEM = copy
    if 'i' in only:
        fig_i(workdir)
    if 'j' in only:
        fig_j(workdir, png or os.path.join(B.OUT_DIR,
                                           'migration-warmup.png'))


def main():
    import bench
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--runs', type=int)
    ap.add_argument('--only', default='i,j')
    ap.add_argument('--out', default=os.path.join(bench.OUT_DIR,
                                                  'migration.json'))
    ap.add_argument('--png', default=os.path.join(bench.OUT_DIR,
                                                  'migration-warmup.png'))
    ap.add_argument('--replot', metavar='RESULTS',
                    help='only plot figure j from a results JSON file')
    args = ap.parse_args()
    global B
    B = bench
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f)['raw']['j'], args.png)
        return 0
    bench.CFG.quick = args.quick
    bench.CFG.runs = args.runs or (1 if args.quick else bench.CFG.runs)
    bench.setup_pinning()
    os.makedirs(bench.OUT_DIR, exist_ok=True)
    workdir = tmpdir('hcbench-mig-')
    t0 = time.monotonic()
    run(bench, workdir, set(args.only.split(',')), args.png)
    print(f'\nhostcache migration benchmarks: {bench.CFG.runs} run(s), '
          f'{time.monotonic() - t0:.0f}s\n')
    bench.print_table()
    with open(args.out, 'w') as f:
        json.dump({'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                   'runs': bench.CFG.runs, 'quick': bench.CFG.quick,
                   'rows': [r.as_dict() for r in bench.ROWS],
                   'raw': bench.RAW}, f, indent=1)
    print(f'results: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
