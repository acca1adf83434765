#!/usr/bin/python3
"""hostcache benchmarks (`make bench`): every figure next to its floor.

Each figure is measured RUNS times (default 5) interleaved with its floor
(floor, subject, floor, subject, ...), so load from other work on the
machine falls on both; the table shows min/median/max of both and the
median of the per-pair ratios, with the goal and PASS/SHORT.  Servers are
pinned to the last CPU and clients (fio) to the first when there are two.

Figures (docs/BENCHMARKS.md explains each, its floor and its goal):
  a  RAM hits in-process: qemu-img bench on hostcache over null-co, vs
     null-co alone
  b  through a qemu-storage-daemon NBD export with fio: RAM hits vs the
     same daemon exporting null-co; misses and write-through writes vs a
     simulated 2 ms SAN (null-co latency-ns, read-zeroes=off)
  c  nbdkit's cache filter over the same SAN, side by side
  d  scan resistance: hot-set hit ratio during a one-time scan (driver),
     SLRU vs plain LRU (engine simulation), engine micro benchmarks
  e  metadata bytes per cached block
  f  write-back 4 KiB random writes in-process (qemu-img bench -w), the
     destager running against null-co, vs null-co alone
  g  a flush after every write (fio fsync=1) over the simulated SAN:
     hostcache write-back with an SSD tier vs a local file behind the same
     NBD hop, vs the SAN without a cache
  h  SSD-tier hits (tiny RAM tier) vs reads of a local file of the same
     size, both through an NBD export
  i  live migration with 1 GiB dirty in write-back (RAM tier, SSD journal):
     downtime and total time vs the same VM clean, the origin's write rate
     (scripts/bench_migration.py)
  j  warm-up after a live migration: the destination's hit ratio on the
     source's hot set over time (off / hot-set / content), time to 90%
     hits vs the origin reading the hot set once, the guest's miss latency
     during the warm-up vs without; a PNG of the curves

Usage: PYTHONPATH=python scripts/bench.py [--quick] [--only a,b,...]
       [--runs N] [--out FILE]
(make bench; PYTHONPATH: the project's helpers, python/hostcache, from the
source tree.)  Results also go to build/bench/results.json.
Standard library only; run with /usr/bin/python3.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

from hostcache import GiB, KiB, MiB, paths
from hostcache.fio import FIO, Fio
from hostcache.nbdkit import NBDKIT, Nbdkit
from hostcache.procs import cpu_seconds, run, tmpdir, wait_for_path
from hostcache.qemu import StorageDaemon
from hostcache.qmp import node_stats

SRC = paths.SRC
ENGINE_BENCH = os.path.join(paths.BUILD, 'tests', 'engine_bench')
OUT_DIR = os.path.join(SRC, 'build', 'bench')

SAN_SIZE = 64 * GiB         # virtual size of every NBD disk
SAN_LATENCY_NS = 2_000_000  # the simulated SAN's service time
HIT_WS = 64 * MiB           # working set of the NBD hit figures


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ---- configuration from the command line ----------------------------------

class Cfg:
    runs = 5
    quick = False
    hit_runtime = 2.0       # seconds per fio run on RAM hits
    san_runtime_qd1 = 3.0   # QD1 on the SAN: ~1400 samples
    san_runtime_qd16 = 2.0
    scan_runtime = 4.0
    img_hits = {1: 1_000_000, 16: 2_000_000}   # qemu-img bench hit counts
    wb_writes = {1: 500_000, 16: 2_000_000}    # qemu-img bench -w counts
    sync_runtime = 3.0      # QD1 write+flush: ~700 cycles on the SAN
    server_cpu = None       # taskset lists, None = no pinning
    client_cpu = None


CFG = Cfg()

def snapshot_binaries(workdir):
    """The QEMU binaries measured are copies taken at start, so a rebuild
    of build/qemu-build during the run changes nothing measured."""
    os.makedirs(os.path.join(workdir, 'bin'))
    for name in ('QSD', 'QEMU_IMG'):
        dst = os.path.join(workdir, 'bin', os.path.basename(getattr(paths,
                                                                    name)))
        shutil.copy2(getattr(paths, name), dst)
        setattr(paths, name, dst)


def pin(cpu):
    return ['taskset', '-c', cpu] if cpu is not None else []


# ---- servers -----------------------------------------------------------------

class Qsd(StorageDaemon):
    """qemu-storage-daemon, pinned, with the given --blockdev JSON dicts and
    an NBD server on a unix socket exporting {export name: node}."""

    def __init__(self, workdir, name, blockdevs, exports):
        self.sock = os.path.join(workdir, f'{name}.nbd')
        args = []
        for b in blockdevs:
            args += ['--blockdev', json.dumps(b)]
        args += ['--nbd-server', f'addr.type=unix,addr.path={self.sock}']
        for i, (ename, node) in enumerate(exports.items()):
            args += ['--export', f'type=nbd,id=exp{i},node-name={node},'
                     f'name={ename},writable=on']
        super().__init__(workdir, args, name=name, prefix=pin(CFG.server_cpu))
        wait_for_path(self.sock, self.proc)
        self.uri = {e: f'nbd+unix:///{e}?socket={self.sock}' for e in exports}

    def stats(self, node):
        return node_stats(self.qmp, node)


def nbdkit(workdir, name, plugin, filters=(), args=(), env=None):
    """nbdkit, pinned, its messages in WORKDIR/NAME.log."""
    with open(os.path.join(workdir, f'{name}.log'), 'w') as log:
        return Nbdkit(workdir, name, plugin, filters, args, stderr=log,
                      prefix=pin(CFG.server_cpu), env=env)


def null_co(node, size, latency_ns=0):
    d = {'driver': 'null-co', 'node-name': node, 'size': size,
         'read-zeroes': False}
    if latency_ns:
        d['latency-ns'] = latency_ns
    return d


def nbd_client(node, sock, export):
    return {'driver': 'nbd', 'node-name': node, 'export': export,
            'server': {'type': 'unix', 'path': sock}}


def hostcache(node, file, **opts):
    d = {'driver': 'hostcache', 'node-name': node, 'file': file}
    d.update({k.replace('_', '-'): v for k, v in opts.items()})
    return d


# ---- fio ---------------------------------------------------------------------

def exact_quantiles(path):
    """p50/p99 (ns) from a fio per-I/O latency log."""
    vals = []
    with open(path) as f:
        for line in f:
            parts = line.split(',')
            if len(parts) >= 2:
                vals.append(int(parts[1]))
    vals.sort()
    if not vals:
        return None, None
    return (vals[len(vals) // 2],
            vals[min(len(vals) - 1, int(len(vals) * 0.99))])


class FioResult:
    def __init__(self, job, latlog=None):
        rw = job['read'] if job['read']['total_ios'] else job['write']
        self.ios = rw['total_ios']
        self.iops = rw['iops']
        # flushes fio issued and completed (fsync=1 / fdatasync=1)
        self.syncs = job.get('sync', {}).get('lat_ns', {}).get('N', 0)
        pct = rw['clat_ns'].get('percentile', {})
        self.p50 = pct.get('50.000000', 0)
        self.p99 = pct.get('99.000000', 0)
        self.mean = rw['clat_ns']['mean']
        self.client_cpu = job['usr_cpu'] + job['sys_cpu']
        if latlog and os.path.exists(latlog):
            p50, p99 = exact_quantiles(latlog)
            if p50 is not None:
                self.p50, self.p99 = p50, p99


def fio(workdir, jobs, servers=(), latlog=False, tag='fio', engine='nbd'):
    """Run fio with one or more jobs (lists of --options after --name).
    Returns ([FioResult per job], {server name: CPU% during the run})."""
    args = []
    logs = []
    for i, job in enumerate(jobs):
        args += [f'--name=j{i}', f'--ioengine={engine}', '--thread', *job]
        if latlog:
            prefix = os.path.join(workdir, f'{tag}-lat{i}')
            args += [f'--write_lat_log={prefix}', '--log_avg_msec=0']
            logs.append(f'{prefix}_clat.{i + 1}.log')
    c0 = {s.name: cpu_seconds(s.proc.pid) for s in servers}
    t0 = time.monotonic()
    f = Fio(workdir, tag, None, args, prefix=pin(CFG.client_cpu))
    f.wait(timeout=600)
    wall = time.monotonic() - t0
    cpu = {s.name: 100.0 * (cpu_seconds(s.proc.pid) - c0[s.name]) / wall
           for s in servers}
    res = [FioResult(j, logs[i] if latlog else None)
           for i, j in enumerate(f.report['jobs'])]
    for p in logs:
        for kind in ('clat', 'lat', 'slat'):
            q = p.replace('_clat.', f'_{kind}.')
            if os.path.exists(q):
                os.unlink(q)
    return res, cpu


def job(uri, rw, qd, size, runtime=None, offset=0, io_size=None, bs='4k',
        randommap=False):
    """Options of one fio job on an NBD URI."""
    opts = [f'--uri={uri}', f'--rw={rw}', f'--bs={bs}', f'--iodepth={qd}',
            f'--size={size}', f'--offset={offset}', '--randrepeat=0']
    if not randommap:
        opts.append('--norandommap')
    if runtime is not None:
        opts += ['--time_based', f'--runtime={runtime}s']
    if io_size is not None:
        opts.append(f'--io_size={io_size}')
    return opts


# ---- table -------------------------------------------------------------------

def mmm(vals):
    return (min(vals), statistics.median(vals), max(vals)) if vals else None


def fmt_num(v, unit):
    if v is None:
        return '-'
    if unit == 'IOPS':
        return f'{v / 1e6:.2f}M' if v >= 1e6 else f'{v / 1e3:.1f}k'
    if unit == 'us':
        return f'{v:.0f}' if v >= 100 else f'{v:.1f}'
    if unit == 'ns':
        return f'{v:.1f}'
    if unit == 'ms':
        return f'{v:.0f}' if v >= 10 else f'{v:.1f}'
    if unit == 'ratio':
        return f'{v:.3f}'
    if unit == 'B':
        for div, suf in ((GiB, 'GiB'), (MiB, 'MiB'), (KiB, 'KiB')):
            if v >= div:
                return f'{v / div:.2f}{suf}'
        return f'{v:.0f}B'
    return f'{v:.3g}'


def fmt_mmm(vals, unit):
    t = mmm(vals)
    if t is None:
        return '-'
    return '/'.join(fmt_num(x, unit) for x in t)


class Row:
    """One line of the table.

    kind 'higher': subject/floor ratio, goal is a minimum ratio.
    kind 'lower':  a latency; ratio subject/floor and the delta (us, or
                   ms for unit 'ms'); goal is a maximum delta in that unit.
    kind 'below':  an absolute fraction (floor list = denominator); goal is
                   a maximum value of subject/floor.
    kind 'atmost': subject/floor, goal is a maximum ratio (latencies).
    kind 'abs':    goal is a minimum of the subject's median itself, in its
                   unit; the ratio to the floor is shown beside it.
    kind 'ratio':  subject/floor for information only.
    goal None: informational.
    """

    def __init__(self, fig, label, unit, subj, floor, floor_label, kind,
                 goal=None, goal_text='-', cpu=None, note=''):
        self.fig, self.label, self.unit = fig, label, unit
        self.subj, self.floor, self.floor_label = subj, floor, floor_label
        self.kind, self.goal, self.goal_text = kind, goal, goal_text
        self.cpu, self.note = cpu, note
        n = min(len(subj), len(floor))
        self.ratios = [subj[i] / floor[i] for i in range(n) if floor[i]]
        self.deltas = [subj[i] - floor[i] for i in range(n)]
        self.verdict = self._verdict()

    def ratio_med(self):
        return statistics.median(self.ratios) if self.ratios else None

    def _verdict(self):
        if self.goal is None or not self.ratios or self.kind == 'ratio':
            return 'info'
        if self.kind == 'higher':
            ok = self.ratio_med() >= self.goal
        elif self.kind == 'atmost':
            ok = self.ratio_med() <= self.goal
        elif self.kind == 'abs':
            ok = statistics.median(self.subj) >= self.goal
        elif self.kind == 'lower':
            ok = statistics.median(self.deltas) <= self.goal
        else:
            ok = self.ratio_med() < self.goal
        return 'PASS' if ok else 'SHORT'

    def ratio_text(self):
        if not self.ratios:
            return '-'
        lo, med, hi = mmm(self.ratios)
        s = f'{med:.3f}x [{lo:.2f}-{hi:.2f}]'
        if self.kind == 'lower':
            d = statistics.median(self.deltas)
            s += f' {d:+.0f}{self.unit if self.unit == "ms" else "us"}'
        if self.kind == 'below':
            s = f'{100 * med:.3f}%'
        return s

    def as_dict(self):
        return {'figure': self.fig, 'label': self.label, 'unit': self.unit,
                'subject': self.subj, 'floor': self.floor,
                'floor_label': self.floor_label, 'kind': self.kind,
                'ratios': self.ratios, 'ratio_median': self.ratio_med(),
                'deltas': self.deltas if self.kind == 'lower' else None,
                'goal': self.goal, 'goal_text': self.goal_text,
                'verdict': self.verdict, 'cpu_percent': self.cpu,
                'note': self.note}


ROWS = []
RAW = {}


def add_row(*a, **kw):
    r = Row(*a, **kw)
    ROWS.append(r)
    return r


def print_table(out=sys.stdout):
    hdr = (f'{"fig":<3} {"figure":<38} {"unit":<5} '
           f'{"value min/med/max":<22} {"floor":<22} '
           f'{"floor min/med/max":<22} {"ratio med [min-max]":<27} '
           f'{"goal":<14} {"result":<6} {"cpu% subj/floor":<15} note')
    print(hdr, file=out)
    print('-' * len(hdr), file=out)
    for r in ROWS:
        cpu = '-'
        if r.cpu:
            cpu = '/'.join('-' if c is None else f'{c:.0f}' for c in r.cpu)
        print(f'{r.fig:<3} {r.label:<38} {r.unit:<5} '
              f'{fmt_mmm(r.subj, r.unit):<22} {r.floor_label:<22} '
              f'{fmt_mmm(r.floor, r.unit):<22} {r.ratio_text():<27} '
              f'{r.goal_text:<14} {r.verdict:<6} {cpu:<15} {r.note}',
              file=out)


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


# ---- a: RAM hits in-process with qemu-img bench ----------------------------------

def img_bench(opts, count, qd, step, write=False, trace=None, errs=None):
    """One qemu-img bench run: (seconds reported, CPU% of qemu-img).
    write: -w; trace: a QEMU trace event pattern, its lines (stderr) are
    appended to the list errs."""
    argv = pin(CFG.server_cpu) + [paths.QEMU_IMG]
    if trace:
        argv += ['--trace', trace]
    argv += ['bench', '-c', str(count), '-d', str(qd), '-S', str(step)]
    if write:
        argv.append('-w')
    argv += ['--image-opts', opts]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = run(argv, timeout=600)
    out, err = r.stdout, r.stderr
    if errs is not None:
        errs.extend(err.splitlines())
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r'Run completed in ([0-9.]+) seconds', out)
    if not m:
        raise RuntimeError(f'qemu-img bench: no timing in {out!r}')
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / wall
    return float(m.group(1)), 100.0 * cpu


def stride(ws):
    """A step that visits every 4 KiB block of ws once per pass in a
    scattered order: an odd number of blocks near ws * 0.618 (the image
    has a power-of-two number of blocks, so any odd step is coprime)."""
    blocks = ws // (4 * KiB)
    return ((int(blocks * 0.6180339887) | 1) % blocks) * 4 * KiB


def fig_a():
    log('[a] RAM hits in-process (qemu-img bench)')
    for ws in (16 * MiB, 256 * MiB):
        nblk = ws // (4 * KiB)
        step = stride(ws)
        floor_opts = f'driver=null-co,size={ws},read-zeroes=off'
        hc_opts = (f'driver=hostcache,ram-size={2 * ws},'
                   f'file.driver=null-co,file.size={ws},'
                   f'file.read-zeroes=off')
        for qd in (1, 16):
            hits = CFG.img_hits[qd]
            floor, subj, fcpu, scpu, cold = [], [], [], [], []
            for _ in range(CFG.runs):
                # The cold pass alone (one miss per block), then cold pass
                # plus hits; hit IOPS = hits / (difference of the times).
                cold.append(img_bench(hc_opts, nblk, qd, step)[0])
            t_cold = statistics.median(cold)
            for i in range(CFG.runs):
                t, c = img_bench(floor_opts, hits, qd, step)
                floor.append(hits / t)
                fcpu.append(c)
                t, c = img_bench(hc_opts, nblk + hits, qd, step)
                subj.append(hits / max(t - t_cold, 1e-6))
                scpu.append(c)
            key = f'a.ws{ws // MiB}M.qd{qd}'
            RAW[key] = {'floor_iops': floor, 'hit_iops': subj,
                        'cold_pass_s': cold, 'floor_cpu': fcpu,
                        'hit_cpu': scpu}
            goal = 0.5 if qd == 16 else None
            add_row('a', f'RAM hit 4K rand QD{qd} ws {ws // MiB}MiB', 'IOPS',
                    subj, floor, 'null-co in-process', 'higher', goal,
                    '>= 0.50x' if goal else '-', (med(scpu), med(fcpu)),
                    f'cold pass {1e6 * t_cold / nblk:.1f}us/blk subtracted')
    # Validity: over a 1 ms origin, the same run must go far above the
    # origin's bound, which shows the bench really hits (qemu-img has no
    # QMP to read the counters).
    ws, qd, hits = 16 * MiB, 16, 200_000
    nblk = ws // (4 * KiB)
    slow = (f'driver=hostcache,ram-size={2 * ws},file.driver=null-co,'
            f'file.size={ws},file.read-zeroes=off,file.latency-ns=1000000')
    t, _ = img_bench(slow, nblk + hits, qd, stride(ws))
    bound = qd / 1e-3
    got = (nblk + hits) / t
    ok = got > 5 * bound
    RAW['a.validity'] = {'iops': got, 'origin_bound_iops': bound, 'ok': ok}
    log(f'    validity: hostcache over a 1 ms origin ran {got:.0f} IOPS, '
        f'origin bound {bound:.0f}: '
        f'{"hits confirmed" if ok else "NOT HITTING"}')
    if not ok:
        add_row('a', 'validity: hits over a 1 ms origin', 'IOPS', [got],
                [bound], 'origin bound', 'higher', 5, '>= 5x', None,
                'the a figures above are not hits')


# ---- b, c: NBD exports, the simulated SAN, nbdkit -------------------------------

class Topology:
    """All servers of figures b and c.

    san  (QSD): null-co with 2 ms latency, exported as 'san'; also
                'hcd' = hostcache over it in the same process (the
                filter's own cost, no extra hop).
    front (QSD): 'floor' = null-co, 'hcl' = hostcache over another
                null-co (origin in-process), 'relay' = NBD client of san
                exported as is, 'hc' = hostcache over another NBD client
                of san.
    nk-null, nk-relay, nk-cache (nbdkit): null plugin; nbd plugin to san;
                the same with --filter=cache (writethrough, cache-on-read,
                4K blocks, 256M).
    """

    def __init__(self, workdir):
        self.san = Qsd(workdir, 'san', [
            null_co('san', SAN_SIZE, SAN_LATENCY_NS),
            hostcache('hcd', 'san'),
        ], {'san': 'san', 'hcd': 'hcd'})
        self.front = Qsd(workdir, 'front', [
            null_co('null0', SAN_SIZE),
            null_co('null1', SAN_SIZE),
            hostcache('hcl', 'null1'),
            nbd_client('relay0', self.san.sock, 'san'),
            nbd_client('origin0', self.san.sock, 'san'),
            hostcache('hc', 'origin0'),
        ], {'floor': 'null0', 'hcl': 'hcl', 'relay': 'relay0', 'hc': 'hc'})
        self.nk_null = nbdkit(workdir, 'nk-null', ['null', f'size={SAN_SIZE}'])
        self.nk_relay = nbdkit(workdir, 'nk-relay', [
            'nbd', f'socket={self.san.sock}', 'export=san'])
        env = dict(os.environ, TMPDIR=workdir)
        self.nk_cache = nbdkit(workdir, 'nk-cache', [
            'nbd', f'socket={self.san.sock}', 'export=san'], ['cache'], [
            'cache=writethrough', 'cache-on-read=true',
            'cache-min-block-size=4K', 'cache-max-size=256M'], env=env)
        # name -> (uri, servers on the path, (server, node) for counters)
        self.targets = {
            'floor': (self.front.uri['floor'], [self.front], None),
            'hcl': (self.front.uri['hcl'], [self.front], (self.front, 'hcl')),
            'hc': (self.front.uri['hc'], [self.front, self.san],
                   (self.front, 'hc')),
            'relay': (self.front.uri['relay'], [self.front, self.san], None),
            'san': (self.san.uri['san'], [self.san], None),
            'hcd': (self.san.uri['hcd'], [self.san], (self.san, 'hcd')),
            'nk-null': (self.nk_null.uri, [self.nk_null], None),
            'nk-relay': (self.nk_relay.uri, [self.nk_relay, self.san],
                         None),
            'nk-cache': (self.nk_cache.uri, [self.nk_cache, self.san],
                         None),
        }


class Sample:
    def __init__(self, res, cpu, hit_ratio):
        self.iops = res.iops
        self.p50_us = res.p50 / 1000
        self.p99_us = res.p99 / 1000
        self.mean_us = res.mean / 1000
        self.cpu = sum(cpu.values())
        self.hit_ratio = hit_ratio


def measure(workdir, topo, phase, target, rw, qd, size, runtime,
            latlog=False):
    uri, servers, counters = topo.targets[target]
    before = counters[0].stats(counters[1]) if counters else None
    res, cpu = fio(workdir, [job(uri, rw, qd, size, runtime)], servers,
                   latlog=latlog, tag=f'{phase}-{target}-{qd}')
    hit_ratio = None
    if counters:
        after = counters[0].stats(counters[1])
        h = after['read-hits'] - before['read-hits']
        m = after['read-misses'] - before['read-misses']
        hit_ratio = h / (h + m) if h + m else None
    s = Sample(res[0], cpu, hit_ratio)
    RAW.setdefault(f'b.{phase}.{target}.qd{qd}', []).append(vars(s))
    return s


def warm(workdir, topo, target, ws):
    """Read every block of [0, ws) once, in random order, 64 KiB at a time
    (both caches keep 4 KiB blocks; nbdkit's cache filter serialises its
    misses, so 4 KiB warm-up reads would take half a minute)."""
    uri, servers, _ = topo.targets[target]
    fio(workdir, [job(uri, 'randread', 16, ws, io_size=ws, bs='64k',
                      randommap=True)], servers, tag=f'warm-{target}')


def series(samples, attr):
    return [getattr(s, attr) for s in samples]


def cpus(s, f):
    return (med(series(s, 'cpu')), med(series(f, 'cpu')))


def hit_note(samples):
    hr = [s.hit_ratio for s in samples if s.hit_ratio is not None]
    return f'hit ratio {100 * statistics.median(hr):.1f}%' if hr else ''


def fig_bc(workdir):
    log('[b,c] NBD exports: starting the SAN, front daemon and nbdkit')
    topo = Topology(workdir)
    qds = (1, 16)

    def run_set(phase, targets, rw, size, runtime_of, latlog):
        res = {}
        for qd in qds:
            for _ in range(CFG.runs):
                for t in targets:
                    res.setdefault((t, qd), []).append(measure(
                        workdir, topo, phase, t, rw, qd, size,
                        runtime_of(qd), latlog))
            log(f'    {phase} QD{qd} done')
        return res

    # Hits: warm hostcache and nbdkit's cache on HIT_WS, then measure.
    log(f'[b,c] warming hcl, hc and nk-cache on {HIT_WS // MiB} MiB')
    for t in ('hcl', 'hc', 'nk-cache'):
        warm(workdir, topo, t, HIT_WS)
    hits = run_set('hit', ['floor', 'hcl', 'hc', 'nk-null', 'nk-cache'],
                   'randread', HIT_WS, lambda qd: CFG.hit_runtime, False)

    # Misses are measured in steady state: each cache is first filled to
    # capacity (256 MiB), so a miss also evicts, as it does in a cache that
    # has run for a while (a filling cache also pays first-touch page
    # faults on its slot memory).
    log('[b,c] filling hcd, hc and nk-cache to capacity')
    for t in ('hcd', 'hc', 'nk-cache'):
        uri, servers, _ = topo.targets[t]
        fio(workdir, [job(uri, 'randread', 16, SAN_SIZE, io_size=272 * MiB,
                          bs='64k')], servers, tag=f'fill-{t}')
    # Misses: random 4 KiB reads over 64 GiB (randrepeat=0: no offset
    # repeats across runs), so nothing is ever read twice.
    def runtime(qd):
        return CFG.san_runtime_qd1 if qd == 1 else CFG.san_runtime_qd16

    miss = run_set('miss', ['san', 'hcd', 'relay', 'hc', 'nk-relay',
                            'nk-cache'], 'randread', SAN_SIZE, runtime, True)
    wr = run_set('write', ['san', 'hcd', 'relay', 'hc'], 'randwrite',
                 SAN_SIZE, runtime, True)
    for srv in (topo.nk_cache, topo.nk_relay, topo.nk_null, topo.front,
                topo.san):
        srv.stop()

    # b: hits, origin in-process and origin behind an NBD hop
    for t, what in (('hcl', 'origin local'), ('hc', 'origin via NBD')):
        for qd in qds:
            s, f = hits[(t, qd)], hits[('floor', qd)]
            add_row('b', f'NBD RAM hit 4K QD{qd}, {what}', 'IOPS',
                    series(s, 'iops'), series(f, 'iops'),
                    'QSD null-co export', 'higher', 0.85, '>= 0.85x',
                    cpus(s, f), hit_note(s))
    # b: misses and writes, three comparisons each
    pairs = [('hcd', 'san', 'hc in SAN process', 'SAN alone'),
             ('hc', 'relay', 'hc behind NBD hop', 'relay (same hop)'),
             ('hc', 'san', 'hc behind NBD hop', 'SAN alone')]
    for res, what in ((miss, 'miss'), (wr, 'WT write')):
        for subj, flo, sl, fl in pairs:
            s1, f1 = res[(subj, 1)], res[(flo, 1)]
            s16, f16 = res[(subj, 16)], res[(flo, 16)]
            note = hit_note(s1 + s16) if res is miss else ''
            add_row('b', f'{what} p50 QD1: {sl}', 'us',
                    series(s1, 'p50_us'), series(f1, 'p50_us'), fl, 'lower',
                    50, '<= +50us', cpus(s1, f1), note)
            add_row('b', f'{what} IOPS QD16: {sl}', 'IOPS',
                    series(s16, 'iops'), series(f16, 'iops'), fl, 'higher',
                    0.95, '>= 0.95x', cpus(s16, f16))
    # c: nbdkit's cache filter, against its own floors
    for qd in qds:
        s, f = hits[('nk-cache', qd)], hits[('nk-null', qd)]
        add_row('c', f'nbdkit cache hit 4K rand QD{qd}', 'IOPS',
                series(s, 'iops'), series(f, 'iops'), 'nbdkit null',
                'higher', None, 'peer', cpus(s, f))
    for flo, fl in (('nk-relay', 'nbdkit nbd relay'), ('san', 'SAN alone')):
        s1, f1 = miss[('nk-cache', 1)], miss[(flo, 1)]
        s16, f16 = miss[('nk-cache', 16)], miss[(flo, 16)]
        add_row('c', 'nbdkit cache miss p50 QD1', 'us',
                series(s1, 'p50_us'), series(f1, 'p50_us'), fl, 'lower',
                None, 'peer', cpus(s1, f1))
        add_row('c', 'nbdkit cache miss IOPS QD16', 'IOPS',
                series(s16, 'iops'), series(f16, 'iops'), fl, 'higher',
                None, 'peer', cpus(s16, f16))
    side_by_side(hits, miss)


SIDE = []


def side_by_side(hits, miss):
    """c: hostcache and nbdkit cache, each as a ratio to its own floor."""
    def both(res, subj, flo, qd, attr):
        s, f = series(res[(subj, qd)], attr), series(res[(flo, qd)], attr)
        return (statistics.median(s),
                statistics.median([x / y for x, y in zip(s, f) if y]))

    def line(label, res, qd, attr, hflo, hlab, nflo, nlab):
        hv, hr = both(res, 'hc', hflo, qd, attr)
        nv, nr = both(res, 'nk-cache', nflo, qd, attr)
        SIDE.append((label, hv, hr, hlab, nv, nr, nlab))

    for qd in (1, 16):
        line(f'warm hit IOPS QD{qd}', hits, qd, 'iops',
             'floor', 'QSD null-co', 'nk-null', 'nbdkit null')
        line(f'warm hit p50 us QD{qd}', hits, qd, 'p50_us',
             'floor', 'QSD null-co', 'nk-null', 'nbdkit null')
    for qd, attr, lab in ((1, 'p50_us', 'miss p50 us QD1'),
                          (16, 'iops', 'miss IOPS QD16')):
        line(lab, miss, qd, attr, 'relay', 'QSD relay', 'nk-relay',
             'nbdkit relay')
        line(lab, miss, qd, attr, 'san', 'SAN alone', 'san', 'SAN alone')


def print_side(out=sys.stdout):
    if not SIDE:
        return
    print('\nc: hostcache vs nbdkit --filter=cache over the same 2 ms SAN, '
          'each as a ratio to its own floor (medians)', file=out)
    print(f'   {"metric":<22} {"hostcache":>10} {"ratio":>7} {"floor":<12} '
          f'{"nbdkit":>10} {"ratio":>7} {"floor":<12}', file=out)
    for lab, hv, hr, hf, nv, nr, nf in SIDE:
        print(f'   {lab:<22} {hv:>10.1f} {hr:>7.3f} {hf:<12} {nv:>10.1f} '
              f'{nr:>7.3f} {nf:<12}', file=out)


# ---- d: scan resistance, engine micro benchmarks ---------------------------------

SCAN_CACHE = 64 * MiB
SCAN_HOT = 48 * MiB


def build_scan_sim():
    exe = os.path.join(OUT_DIR, 'scan_sim')
    srcs = [os.path.join(SRC, 'scripts', 'bench', 'scan_sim.c'),
            os.path.join(SRC, 'qemu-block-driver', 'hc-engine.c')]
    cc = shutil.which('cc') or 'gcc'
    run([cc, '-O2', '-std=gnu11', '-I',
              os.path.join(SRC, 'qemu-block-driver'), *srcs, '-o', exe])
    return exe


def fig_d(workdir):
    log('[d] scan resistance')
    srv = Qsd(workdir, 'scan', [
        null_co('null1', SAN_SIZE),
        hostcache('hcs', 'null1', ram_size=SCAN_CACHE),
    ], {'hcs': 'hcs'})
    uri = srv.uri['hcs']
    hot_blocks = SCAN_HOT // (4 * KiB)
    # Warm-up: three reads per hot block on average.
    fio(workdir, [job(uri, 'randread', 16, SCAN_HOT, io_size=3 * SCAN_HOT)],
        [srv], tag='scan-warm')
    alone, mixed, ratio_sh, cpu = [], [], [], []
    for i in range(CFG.runs):
        a = srv.stats('hcs')
        res, _ = fio(workdir, [job(uri, 'randread', 8, SCAN_HOT,
                                   CFG.scan_runtime / 2)], [srv],
                     tag='scan-alone')
        b = srv.stats('hcs')
        alone.append((b['read-hits'] - a['read-hits']) / res[0].ios)
        # Hot reads and a one-time random scan of 63 GiB beside them
        # (randommap: no scan block is read twice).
        res, c = fio(workdir, [
            job(uri, 'randread', 8, SCAN_HOT, CFG.scan_runtime),
            job(uri, 'randread', 8, SAN_SIZE - GiB, CFG.scan_runtime,
                offset=GiB, randommap=True),
        ], [srv], tag='scan-mixed')
        d = srv.stats('hcs')
        hot_ios, scan_ios = res[0].ios, res[1].ios
        # Scan reads never hit, so every hit is a hot read.
        mixed.append((d['read-hits'] - b['read-hits']) / hot_ios)
        ratio_sh.append(scan_ios / hot_ios)
        cpu.append(c['scan'])
    RAW['d.driver'] = {'hot_alone': alone, 'hot_with_scan': mixed,
                       'scan_per_hot': ratio_sh, 'cpu': cpu,
                       'cache_blocks': SCAN_CACHE // (4 * KiB),
                       'hot_blocks': hot_blocks}
    srv.stop()
    r = statistics.median(ratio_sh)
    add_row('d', f'hot hit ratio, scan {r:.2f}/hot read (SLRU)', 'ratio',
            mixed, alone, 'same, no scan', 'higher', 0.9, '>= 0.90x (ours)',
            (med(cpu), None),
            f'driver; cache {SCAN_CACHE // MiB}M hot {SCAN_HOT // MiB}M')

    exe = build_scan_sim()
    for pol in ('slru', 'lru'):
        out = run([exe, pol, str(SCAN_CACHE // (4 * KiB)), str(hot_blocks),
                   f'{r:.4f}', '400000'], timeout=600).stdout
        sim = json.loads(out)
        RAW[f'd.sim.{pol}'] = sim
        add_row('d', f'hot hit ratio, engine sim {pol.upper()}', 'ratio',
                [sim['hot_hit_ratio_scan']], [sim['hot_hit_ratio_alone']],
                'same, no scan', 'higher', None, '-', None,
                'same trace shape, simulated')

    log('[d] engine micro benchmarks')
    if not os.access(ENGINE_BENCH, os.X_OK):
        log(f'    {ENGINE_BENCH} missing (run make); skipped')
        return
    reps = max(CFG.runs, 1)
    argv = pin(CFG.server_cpu) + [
        ENGINE_BENCH, '--benchmark_format=json',
        f'--benchmark_repetitions={reps}',
        f'--benchmark_min_time={0.05 if CFG.quick else 0.2}']
    out = run(argv, timeout=600).stdout
    runs = {}
    for b in json.loads(out)['benchmarks']:
        if b.get('run_type', 'iteration') == 'iteration':
            runs.setdefault(b['run_name'] if 'run_name' in b else b['name'],
                            []).append(b['real_time'])
    RAW['d.engine_bench'] = runs
    floor = runs.get('BM_Memcpy4K', [])
    for name in sorted(runs):
        if name == 'BM_Memcpy4K':
            continue
        add_row('d', f'engine {name} (ns/op)', 'ns', runs[name], floor,
                'memcpy 4 KiB', 'ratio', None, '-',
                None, 'Google Benchmark; ratio = op / memcpy')


# ---- e: metadata per cached block -------------------------------------------------

def fig_e(workdir):
    log('[e] metadata per cached block')
    ram = 256 * MiB
    srv = Qsd(workdir, 'meta', [
        null_co('null2', GiB),
        hostcache('hcm', 'null2', ram_size=ram, block_size=4096),
    ], {'hcm': 'hcm'})
    empty = srv.stats('hcm')
    # Fill every slot: random 64 KiB reads over ram bytes, each once.
    fio(workdir, [job(srv.uri['hcm'], 'randread', 16, ram, io_size=ram,
                      bs='64k', randommap=True)], [srv], tag='meta-fill')
    full = srv.stats('hcm')
    srv.stop()
    RAW['e'] = {'empty': empty, 'full': full}
    for label, st in (('empty', empty), ('full', full)):
        add_row('e', f'metadata / ram-limit, 256M@4K, {label}', 'B',
                [st['metadata-bytes']], [st['ram-limit']], 'ram-limit',
                'below', 0.01, '< 1%', None,
                f'{st["metadata-bytes"]} B, {st["ram-blocks"]} blocks cached')
    if full['ram-blocks']:
        per = full['metadata-bytes'] / full['ram-blocks']
        log(f'    {per:.1f} bytes of metadata per cached 4 KiB block')


# ---- f: write-back writes in-process ----------------------------------------------

WB_WS = 64 * MiB          # working set of f: fits the RAM tier
WB_RAM = 128 * MiB
WB_MAX_DIRTY = 96 * MiB   # above the working set: no writer ever waits;
                          # over half of it (48 MiB dirty) the destager runs


def fig_f():
    log('[f] write-back writes in-process (qemu-img bench -w)')
    ws = WB_WS
    nblk = ws // (4 * KiB)
    step = stride(ws)
    floor_opts = f'driver=null-co,size={ws},read-zeroes=off'
    hc_opts = (f'driver=hostcache,mode=write-back,ram-size={WB_RAM},'
               f'max-dirty={WB_MAX_DIRTY},file.driver=null-co,'
               f'file.size={ws},file.read-zeroes=off')
    # Validity: the destager must really run during the bench.  The trace
    # prints one line per block written back; the close writes back what
    # is still dirty (at most the working set) after the timed part.
    n = CFG.wb_writes[16]
    lines = []
    t, _ = img_bench(hc_opts, n, 16, step, write=True,
                     trace='hostcache_destage', errs=lines)
    destaged = sum(1 for ln in lines if ln.startswith('hostcache_destage')
                   and ln.endswith('ret 0'))
    during = max(destaged - nblk, 0)
    RAW['f.validity'] = {'writes': n, 'destaged_total': destaged,
                         'destaged_before_close_at_least': during,
                         'traced_iops': n / t}
    log(f'    validity: {destaged} blocks destaged for {n} writes, at least '
        f'{during} of them before the close')
    for qd in (1, 16):
        n = CFG.wb_writes[qd]
        floor, subj, fcpu, scpu = [], [], [], []
        for _ in range(CFG.runs):
            t, c = img_bench(floor_opts, n, qd, step, write=True)
            floor.append(n / t)
            fcpu.append(c)
            t, c = img_bench(hc_opts, n, qd, step, write=True)
            subj.append(n / t)
            scpu.append(c)
        RAW[f'f.qd{qd}'] = {'floor_iops': floor, 'wb_iops': subj,
                            'floor_cpu': fcpu, 'wb_cpu': scpu}
        if qd == 16:
            note = (f'destager ran: >= {during} of {RAW["f.validity"]["writes"]}'
                    f' writes destaged before close (traced run)')
            if not during:
                note = 'DESTAGER DID NOT RUN (traced run)'
            add_row('f', f'WB write 4K rand QD{qd} ws {ws // MiB}MiB', 'IOPS',
                    subj, floor, 'null-co in-process', 'abs', 300_000,
                    '>= 300k IOPS', (med(scpu), med(fcpu)), note)
        else:
            add_row('f', f'WB write 4K rand QD{qd} ws {ws // MiB}MiB', 'IOPS',
                    subj, floor, 'null-co in-process', 'ratio', None, '-',
                    (med(scpu), med(fcpu)))


# ---- g, h: local files, the SSD tier ------------------------------------------------

LOCAL_WS = 64 * MiB       # I/O range of g and h, size of their local files
SSD_FILE = 2 * LOCAL_WS   # SSD-tier files: room for the whole range
SSD_RAM = 256 * KiB       # h: RAM tier of 64 blocks, so reads hit the SSD


def local_dir():
    """A private directory on the local disk (build/bench, not a tmpfs)."""
    return tmpdir('files-', dir=OUT_DIR)


def local_file(d, name, size, data=True):
    """A fully written local file (no holes, so neither reads nor
    fdatasync meet unallocated extents): random bytes, or zeroes (a blank
    SSD tier, which hostcache formats)."""
    path = os.path.join(d, name)
    chunk = 4 * MiB
    with open(path, 'wb') as f:
        for _ in range(size // chunk):
            f.write(os.urandom(chunk) if data else bytes(chunk))
        f.flush()
        os.fsync(f.fileno())
    return path


def file_node(node, path):
    """A local file as QEMU opens an SSD: O_DIRECT, no host page cache."""
    return {'driver': 'file', 'node-name': node, 'filename': path,
            'cache': {'direct': True}}


class LocalSample:
    def __init__(self, res, cpu, counters=None):
        self.iops = res.iops
        self.cycle_us = 1e6 / res.iops if res.iops else None
        self.p50_us = res.p50 / 1000
        self.syncs_per_write = res.syncs / res.ios if res.ios else None
        self.cpu = sum(cpu.values()) if cpu else None
        self.counters = counters


def delta(a, b, keys):
    return {k: b.get(k, 0) - a.get(k, 0) for k in keys}


def fig_g(workdir):
    log('[g] a flush after every write over the 2 ms SAN')
    d = local_dir()
    loc = local_file(d, 'g-local.img', LOCAL_WS)
    ssd = local_file(d, 'g-ssd.img', SSD_FILE, data=False)
    ssd1 = local_file(d, 'g-ssd1.img', SSD_FILE, data=False)
    san = Qsd(workdir, 'gsan', [null_co('san', SAN_SIZE, SAN_LATENCY_NS)],
              {'san': 'san'})
    # hcw: default bounds (the destager starts on data 5 s old, or a
    # quarter of the tier dirty); hcs: max-dirty-age-ms 1, so the destager
    # writes the journal to the SAN all through the timed run, as under a
    # sustained load
    front = Qsd(workdir, 'gfront', [
        file_node('loc0', loc),
        file_node('ssd0', ssd),
        file_node('ssd1', ssd1),
        nbd_client('origin0', san.sock, 'san'),
        nbd_client('origin1', san.sock, 'san'),
        hostcache('hcw', 'origin0', mode='write-back', ssd='ssd0'),
        hostcache('hcs', 'origin1', mode='write-back', ssd='ssd1',
                  max_dirty_age_ms=1),
    ], {'loc': 'loc0', 'hcw': 'hcw', 'hcs': 'hcs'})
    keys = ('writes', 'flushes', 'destaged-blocks', 'ssd-demotions')

    def nbd_run(target, servers):
        uri = (san if target == 'san' else front).uri[target]
        before = front.stats(target) if target.startswith('hc') else None
        # fsync=1: fio's nbd engine sends NBD_CMD_FLUSH after every write
        # (fdatasync=1 is refused by the engine, sync=dsync does nothing).
        res, cpu = fio(workdir, [job(uri, 'randwrite', 1, LOCAL_WS,
                                     CFG.sync_runtime) + ['--fsync=1']],
                       servers, tag=f'g-{target}')
        counters = None
        if before is not None:
            counters = delta(before, front.stats(target), keys)
        return LocalSample(res[0], cpu, counters)

    def raw_run():
        res, _ = fio(workdir, [[
            f'--filename={loc}', '--rw=randwrite', '--bs=4k', '--iodepth=1',
            f'--size={LOCAL_WS}', '--direct=1', '--fdatasync=1',
            '--norandommap', '--randrepeat=0', '--time_based',
            f'--runtime={CFG.sync_runtime}s']], tag='g-raw', engine='psync')
        return LocalSample(res[0], {})

    res = {t: [] for t in ('loc', 'hcw', 'hcs', 'raw', 'san')}
    for _ in range(CFG.runs):
        res['loc'].append(nbd_run('loc', [front]))
        res['hcw'].append(nbd_run('hcw', [front, san]))
        res['hcs'].append(nbd_run('hcs', [front, san]))
        res['raw'].append(raw_run())
        res['san'].append(nbd_run('san', [san]))
    final = front.stats('hcw')
    RAW['g.stats'] = final
    log(f'    hcw: ssd-active {final.get("ssd-active")}, flush latency avg '
        f'{final.get("flush-latency-avg-ns", 0) / 1000:.0f} us')
    front.stop()
    san.stop()
    RAW['g'] = {t: [vars(s) for s in v] for t, v in res.items()}
    spw = [s.syncs_per_write for v in res.values() for s in v]
    c = [s.counters for s in res['hcw']]
    fpw = sum(x['flushes'] for x in c) / max(sum(x['writes'] for x in c), 1)
    note = (f'node: {fpw:.2f} flush/write; fio: '
            f'{min(spw):.2f}-{max(spw):.2f} sync/write')
    s, f, r, n = res['hcw'], res['loc'], res['raw'], res['san']
    add_row('g', 'sync write QD1 us: hc WB+SSD vs local', 'us',
            series(s, 'cycle_us'), series(f, 'cycle_us'),
            'local file, same hop', 'atmost', 1.3, '<= 1.3x', cpus(s, f),
            note)
    loc_vs_san = statistics.median(
        [x.iops / y.iops for x, y in zip(f, n) if y.iops])
    c2 = [x.counters for x in res['hcs']]
    dpw = [x['destaged-blocks'] / max(x['writes'], 1) for x in c + c2]
    add_row('g', 'sync write QD1 us: hc WB+SSD destaging vs local', 'us',
            series(res['hcs'], 'cycle_us'), series(f, 'cycle_us'),
            'local file, same hop', 'atmost', 1.3, '<= 1.3x',
            cpus(res['hcs'], f),
            'max-dirty-age-ms 1: destaged/write in the run '
            f'{min(dpw[len(c):]):.2f}-{max(dpw[len(c):]):.2f} (default '
            f'bounds above: {min(dpw[:len(c)]):.2f}-'
            f'{max(dpw[:len(c)]):.2f})')
    add_row('g', 'sync write QD1 IOPS: hc WB+SSD vs SAN', 'IOPS',
            series(s, 'iops'), series(n, 'iops'), 'SAN, no cache', 'higher',
            5.0, '>= 5x', cpus(s, n),
            f'local file via the hop: {loc_vs_san:.1f}x SAN')
    add_row('g', 'sync write QD1 us: local via hop vs raw', 'us',
            series(f, 'cycle_us'), series(r, 'cycle_us'),
            'fio psync fdatasync', 'ratio', None, '-', None,
            'the NBD hop\'s cost (information)')


def fig_h(workdir):
    log('[h] SSD-tier hits vs reads of a local file')
    d = local_dir()
    loc = local_file(d, 'h-local.img', LOCAL_WS)
    ssd = local_file(d, 'h-ssd.img', SSD_FILE, data=False)
    ssd2 = local_file(d, 'h-ssd2.img', SSD_FILE, data=False)
    san = Qsd(workdir, 'hsan', [null_co('san', SAN_SIZE, SAN_LATENCY_NS)],
              {'san': 'san'})
    # hss: the brief's topology (origin = the SAN via NBD); hsl: the same
    # over an in-process 2 ms null-co, which separates the filter's own
    # cost from what it asks the origin (block status) per hit.
    front = Qsd(workdir, 'hfront', [
        file_node('loc1', loc),
        file_node('ssd1', ssd),
        nbd_client('origin1', san.sock, 'san'),
        hostcache('hss', 'origin1', ram_size=SSD_RAM, ssd='ssd1'),
        file_node('ssd2', ssd2),
        null_co('null2', SAN_SIZE, SAN_LATENCY_NS),
        hostcache('hsl', 'null2', ram_size=SSD_RAM, ssd='ssd2'),
    ], {'loc': 'loc1', 'hss': 'hss', 'hsl': 'hsl'})
    servers = {'loc': [front], 'hss': [front, san], 'hsl': [front]}
    # Warm: read the whole range until a pass has no miss (the demotion
    # queue drops blocks when the SAN fills RAM faster than the SSD takes
    # them, so one pass is not enough).
    for t in ('hss', 'hsl'):
        for i in range(16):
            before = front.stats(t)
            fio(workdir, [job(front.uri[t], 'randread', 16, LOCAL_WS,
                              io_size=LOCAL_WS, bs='64k', randommap=True)],
                servers[t], tag='h-warm')
            time.sleep(0.2)    # let queued demotions finish
            after = front.stats(t)
            misses = after['read-misses'] - before['read-misses']
            if not misses:
                break
        log(f'    {t}: warm after {i + 1} passes, SSD tier holds '
            f'{after["ssd-used"] / MiB:.1f} MiB, {misses} misses in the '
            f'last pass')
    keys = ('read-hits', 'read-misses', 'ssd-hits')

    def run(target, qd):
        before = front.stats(target) if target != 'loc' else None
        res, cpu = fio(workdir, [job(front.uri[target], 'randread', qd,
                                     LOCAL_WS, CFG.hit_runtime)],
                       servers[target], tag=f'h-{target}-{qd}')
        counters = None
        if before is not None:
            counters = delta(before, front.stats(target), keys)
        return LocalSample(res[0], cpu, counters)

    res = {}
    for qd in (1, 16):
        for _ in range(CFG.runs):
            for t in ('loc', 'hss', 'hsl'):
                res.setdefault((t, qd), []).append(run(t, qd))
    final = {t: front.stats(t) for t in ('hss', 'hsl')}
    front.stop()
    san.stop()
    RAW['h'] = {f'{t}.qd{qd}': [vars(s) for s in v]
                for (t, qd), v in res.items()}
    RAW['h.stats'] = final

    def ssd_note(samples):
        c = [x.counters for x in samples]
        reqs = max(sum(x['read-hits'] + x['read-misses'] for x in c), 1)
        ssd_h = sum(x['ssd-hits'] for x in c)
        ram_h = sum(x['read-hits'] for x in c) - ssd_h
        return (f'SSD hits {100 * ssd_h / reqs:.1f}%, RAM '
                f'{100 * ram_h / reqs:.1f}%, misses '
                f'{100 * (reqs - ssd_h - ram_h) / reqs:.1f}%')

    for qd in (1, 16):
        f = res[('loc', qd)]
        s = res[('hss', qd)]
        add_row('h', f'SSD hit 4K rand QD{qd}, origin via NBD', 'IOPS',
                series(s, 'iops'), series(f, 'iops'), 'local file, same hop',
                'higher', 0.8, '>= 0.80x', cpus(s, f), ssd_note(s))
        s = res[('hsl', qd)]
        add_row('h', f'SSD hit 4K rand QD{qd}, origin local', 'IOPS',
                series(s, 'iops'), series(f, 'iops'), 'local file, same hop',
                'ratio', None, '-', cpus(s, f), ssd_note(s))


# ---- main ------------------------------------------------------------------------

def setup_pinning():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and shutil.which('taskset'):
        CFG.client_cpu = str(cpus[0])
        CFG.server_cpu = str(cpus[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true',
                    help='one run each, short runs (smoke test)')
    ap.add_argument('--runs', type=int, help='runs per figure (default 5)')
    ap.add_argument('--only', default='a,b,d,e,f,g,h,i,j',
                    help='figures to run: a,b,d,e,f,g,h,i,j (b includes c)')
    ap.add_argument('--out', default=os.path.join(OUT_DIR, 'results.json'))
    args = ap.parse_args()
    if args.quick:
        CFG.quick = True
        CFG.runs = 1
        CFG.hit_runtime = CFG.san_runtime_qd16 = 1.0
        CFG.san_runtime_qd1 = 1.5
        CFG.scan_runtime = 2.0
        CFG.img_hits = {1: 200_000, 16: 400_000}
        CFG.wb_writes = {1: 100_000, 16: 400_000}
        CFG.sync_runtime = 1.5
    if args.runs:
        CFG.runs = args.runs
    for b in (paths.QEMU_IMG, paths.QSD, FIO, NBDKIT):
        if not os.access(b, os.X_OK):
            print(f'missing {b}: run make first', file=sys.stderr)
            return 1
    setup_pinning()
    os.makedirs(OUT_DIR, exist_ok=True)
    workdir = tmpdir('hcbench-')
    snapshot_binaries(workdir)
    only = set(args.only.split(','))
    load0 = os.getloadavg()
    t0 = time.monotonic()
    if 'a' in only:
        fig_a()
    if 'b' in only or 'c' in only:
        fig_bc(workdir)
    if 'd' in only:
        fig_d(workdir)
    if 'e' in only:
        fig_e(workdir)
    if 'f' in only:
        fig_f()
    if 'g' in only:
        fig_g(workdir)
    if 'h' in only:
        fig_h(workdir)
    if 'i' in only or 'j' in only:
        import bench_migration
        bench_migration.run(sys.modules[__name__], workdir, only)
    elapsed = time.monotonic() - t0
    load1 = os.getloadavg()

    print(f'\nhostcache benchmarks: {CFG.runs} run(s) per figure, '
          f'{os.cpu_count()} CPUs, servers on CPU {CFG.server_cpu}, '
          f'clients on CPU {CFG.client_cpu}, {elapsed:.0f}s; '
          f'load average {load0[0]:.2f} at start, {load1[0]:.2f} at end\n')
    print_table()
    print_side()
    short = [r for r in ROWS if r.verdict == 'SHORT']
    print(f'\n{sum(r.verdict == "PASS" for r in ROWS)} PASS, {len(short)} '
          f'SHORT, {sum(r.verdict == "info" for r in ROWS)} informational')
    rev = subprocess.run(['git', '-C', SRC, 'rev-parse', 'HEAD'],
                         capture_output=True, text=True).stdout.strip()
    with open(args.out, 'w') as f:
        json.dump({'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                   'git': rev, 'runs': CFG.runs, 'quick': CFG.quick,
                   'cpus': os.cpu_count(), 'server_cpu': CFG.server_cpu,
                   'client_cpu': CFG.client_cpu,
                   'loadavg_start': load0, 'loadavg_end': load1,
                   'elapsed_s': elapsed,
                   'rows': [r.as_dict() for r in ROWS],
                   'side_by_side': SIDE, 'raw': RAW}, f, indent=1)
    print(f'results: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
