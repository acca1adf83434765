#!/usr/bin/python3
"""`make demo` end to end, the README's first command: scripts/demo-manager.py
start, its report checked against the guest's console and the daemon's
statistics, /metrics through promtool, then scripts/demo-manager.py stop,
after which nothing it started may still run.

The demo uses "the system libvirtd" (qemu:///system) and starts one
(virtlogd -d, libvirtd -d) when none answers.  So that this test neither
uses nor disturbs a libvirtd or a demo someone runs on this machine (nor
the private libvirtds of other tests), it runs the demo in a mount
namespace of its own (unshare --mount) where /run, /etc/libvirt,
/var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are private,
empty directories: the demo finds no libvirtd, as on a freshly booted CI
machine, starts its own there, and its stop must end it.  The private
qemu.conf only turns cgroups off (libvirt's cgroup paths are host-wide and
would collide with another libvirtd's domain of the same name).  The demo
directory (HOSTCACHE_DEMO_DIR) is the test's own and the API listens on a
free port (HOSTCACHE_DEMO_PORT=0).  With /run private, the demo takes the
`libvirtd -d` path, not systemctl.

Needs root (exit 77, skipped, without it).
"""

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from hostcache import paths, procs, runner
from hostcache import libvirt as L
from hostcache.check import (TestFailure, check, check_eq,
                             check_prometheus_text, poll)
from hostcache.guest import GuestResult
from hostcache.lines import complete_text
from hostcache.procs import (PROCS, ProcessGroup, cmdline, kill_pid,
                             pid_alive, read_pid, tmpdir)

DEMO = os.path.join(paths.SRC, 'scripts', 'demo-manager.py')
BUILD = os.environ.get('HOSTCACHE_BUILD',
                       os.path.join(paths.SRC, 'build', 'meson'))
HOSTCACHED = os.path.join(BUILD, 'src', 'hostcached')
VM = 'hostcache-demo'
READS = 200             # DEMO_READS: the demo's default
BLOCK = 4096            # the guest's reads, and the cache's block size
IN_NS = 'HC_DEMO_TEST_NAMESPACE'


class Demo(ProcessGroup):
    """The demo run by this test: its directory, environment, and every
    pid it is known to have started.  Registered in procs.PROCS, so that
    the test's end, however it comes (SIGTERM from meson included), stops
    it (stop())."""

    def __init__(self, wd):
        self.dir = os.path.join(wd, 'demo')
        self.env = dict(os.environ, HOSTCACHE_DEMO_DIR=self.dir,
                        HOSTCACHE_DEMO_PORT='0', HOSTCACHE_BUILD=BUILD,
                        HOSTCACHE_QEMU_BUILD=paths.QEMU_BUILD)
        self.pids = {}      # name -> pid
        # what the command line of each must contain (a pid reused by
        # another process is not the demo's)
        self.marks = {'hostcached': self.dir, 'nbdkit': self.dir,
                      'qemu': f'guest={VM},', 'libvirtd': 'libvirtd',
                      'virtlogd': 'virtlogd'}
        self.stop_ran = False
        PROCS.procs.append(self)

    def run(self, cmd, timeout):
        try:
            return subprocess.run(['/usr/bin/python3', DEMO, cmd],
                                  env=self.env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise TestFailure(f'demo-manager.py {cmd} took more than '
                              f'{timeout} s:\n{e.stdout}\n{e.stderr}'
                              f'{self.diag()}')

    def file(self, name):
        return os.path.join(self.dir, name)

    def record_pids(self):
        """Every pid the demo wrote down, and the QEMU libvirtd runs (its
        pid file in the private /run)."""
        found = {'hostcached': read_pid(self.file('hostcached.pid')),
                 'nbdkit': read_pid(self.file('nbdkit.pid')),
                 'qemu': read_pid(f'/run/libvirt/qemu/{VM}.pid'),
                 'libvirtd': read_pid('/run/libvirtd.pid'),
                 'virtlogd': read_pid('/run/virtlogd.pid')}
        try:
            with open(self.file('started-libvirtd.json')) as f:
                found.update(json.load(f))
        except (OSError, ValueError):
            pass
        self.pids.update({k: v for k, v in found.items() if v})

    def alive(self):
        return {k: p for k, p in self.pids.items()
                if pid_alive(p) and self.marks[k] in cmdline(p)}

    def diag(self):
        out = []
        for name in ('hostcached.log', 'nbdkit.log', 'console.log',
                     'console-workload.log'):
            text = complete_text(self.file(name))
            if text:
                out.append(f'\n--- {name} ---\n{text[-2500:]}')
        return ''.join(out)

    def stop(self):
        """After a failure: the demo's own stop, then by pid whatever is
        left.  Everything here runs in this test's mount namespace: the
        pids in its private /run are its own."""
        if not self.stop_ran:
            self.stop_ran = True
            self.record_pids()
            try:
                self.run('stop', 120)
            except TestFailure:
                pass
        for pid in self.alive().values():
            kill_pid(pid)

    def running(self):
        return not self.stop_ran or bool(self.alive())


def _private_root(wd):
    """Private, empty /run and libvirt directories for this process's
    mount namespace (and the daemons the demo starts in it)."""
    root = os.path.join(wd, 'root')
    targets = dict(L.PRIVATE_DIRS, run='/run')
    for key, target in targets.items():
        src = os.path.join(root, key)
        os.makedirs(src, exist_ok=True)
        os.makedirs(target, exist_ok=True)
        procs.run(['mount', '--bind', src, target])
    with open('/etc/libvirt/qemu.conf', 'w') as f:
        f.write('cgroup_controllers = [ ]\n')


def _get(url, token=None):
    req = urllib.request.Request(
        url, headers={'Authorization': f'Bearer {token}'} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get('Content-Type', ''), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get('Content-Type', ''), e.read().decode()


def _report(out):
    """The figures the demo printed."""
    def find(rx):
        m = re.search(rx, out, re.M)
        check(m is not None, f'no {rx!r} in the demo\'s report:\n{out}')
        return m
    m_api = find(r'^\s+REST API\s+(http://\S+/api/v1)\s')
    m_tok = find(r'^\s+token file\s+(\S+)$')
    m_base = find(r'without the cache\s+([\d.]+)\s+(\d+)\s+\(rounds 1-(\d+)\)')
    m_warm = find(r'with hostcache, warm\s+([\d.]+)\s+(\d+)\s+\(rounds '
                  r'(\d+)-(\d+); ([\d.]+)x faster\)')
    m_per = find(r'ms per read by round: ([\d.? ]*) \| filter inserted during '
                 r'round (\d+): ([\d.?]+) \| ([\d.? ]*)$')
    m_when = find(rf'the cache \(GET /vms/{VM}/disks/vda/stats, (\S+)\):')
    m_hits = find(r'hit ratio ([\d.]+)% \((\d+) hits, (\d+) misses since the '
                  r'filter went in\)')
    m_con = find(r"the guest's console of these rounds: (\S+)\)")
    return {
        'api': m_api.group(1), 'token': m_tok.group(1),
        'base_ms': float(m_base.group(1)), 'base_iops': int(m_base.group(2)),
        'base_last': int(m_base.group(3)),
        'warm_ms': float(m_warm.group(1)), 'warm_iops': int(m_warm.group(2)),
        'warm_first': int(m_warm.group(3)), 'warm_last': int(m_warm.group(4)),
        'speedup': float(m_warm.group(5)),
        'per_round': (m_per.group(1).split() + [m_per.group(3)]
                      + m_per.group(4).split()),
        'mixed': int(m_per.group(2)),
        'time': m_when.group(1), 'ratio': float(m_hits.group(1)),
        'hits': int(m_hits.group(2)), 'misses': int(m_hits.group(3)),
        'console': m_con.group(1)}


def _summary(rounds):
    """ms per read (mean of the rounds') and reads/s, as the demo
    computes them."""
    ms = sum(1000 * float(r['elapsed']) / int(r['reads'])
             for r in rounds) / len(rounds)
    return ms, sum(int(r['reads']) for r in rounds) / sum(
        float(r['elapsed']) for r in rounds)


def _readable(workload):
    """{round: fields} of the HC-WORKLOAD lines with every figure (a line
    a kernel message cut in two has not)."""
    out = {}
    for r in workload:
        try:
            int(r['reads']), float(r['elapsed'])
            out[int(r['round'])] = r
        except (KeyError, ValueError):
            pass
    return out


def _check_figures(rep, workload):
    """The printed per-round and summary figures are the guest's own
    (computed as the demo does, so equal to the last printed digit)."""
    by_round = _readable(workload)
    check(by_round and all(r.get('errors') == '0' for r in workload),
          f'guest rounds: {workload}')
    check_eq(len(rep['per_round']), max(by_round), 'rounds in the report')
    for n, shown in enumerate(rep['per_round'], 1):
        if n in by_round:
            r = by_round[n]
            check_eq(int(r['reads']), READS, f'reads of round {n}')
            check_eq(shown, f'{1000 * float(r["elapsed"]) / READS:.1f}',
                     f'ms per read of round {n}')
    check_eq(rep['base_last'], 3, 'baseline rounds')
    check_eq(rep['warm_first'], rep['mixed'] + 1, 'first warm round')
    want = []
    for (first, last), ms, iops in (
            ((1, rep['base_last']), rep['base_ms'], rep['base_iops']),
            ((rep['warm_first'], rep['warm_last']), rep['warm_ms'],
             rep['warm_iops'])):
        want.append(_summary([by_round[i] for i in range(first, last + 1)
                              if i in by_round]))
        check_eq((f'{ms:.2f}', f'{iops:.0f}'),
                   (f'{want[-1][0]:.2f}', f'{want[-1][1]:.0f}'),
                 f'summary of rounds {first}-{last}')
    check_eq(f'{rep["speedup"]:.1f}', f'{want[0][0] / want[1][0]:.1f}',
             'speed-up')


def _check_stats(rep, token, workload):
    """The printed hit ratio and counters are the daemon's sample of that
    time, and they count the guest's reads through the filter."""
    status, _, body = _get(f'{rep["api"]}/vms/{VM}/disks/vda/stats?points=720',
                           token)
    check_eq(status, 200, 'stats status')
    stats = json.loads(body)
    check_eq(stats['policy'], 'balanced', 'policy')
    sample = [s for s in stats['series'] if s['time'] == rep['time']]
    check(len(sample) == 1, f'no sample at {rep["time"]} in the series')
    c = sample[0]['counters']
    check_eq((c['read-hits'], c['read-misses']),
               (rep['hits'], rep['misses']), 'hits and misses printed')
    counted = rep['hits'] + rep['misses']
    check_eq(f'{100 * (rep["hits"] / counted):.1f}', f'{rep["ratio"]:.1f}',
             'hit ratio printed')
    check_eq((c['read-hit-bytes'], c['read-miss-bytes']),
               (BLOCK * rep['hits'], BLOCK * rep['misses']),
             'one 4 KiB block per guest read')
    # Reads through the filter: at least the warm rounds', at most those
    # of the rounds from the one it went in during to the end of the
    # console, plus the one running when the VM stopped.
    last = max(int(r['round']) for r in workload
               if r.get('round', '').isdigit())
    warm = rep['warm_last'] - rep['warm_first'] + 1
    check(warm * READS <= counted <= (last - rep['mixed'] + 2) * READS,
          f'{counted} reads counted; warm rounds {rep["warm_first"]}-'
          f'{rep["warm_last"]}, filter in during round {rep["mixed"]}, '
          f'{last} rounds')
    check(c['origin-errors'] == 0 and c['mode'] == 'write-through',
          f'counters: {c}')


def _check_metrics(rep, token):
    """/metrics at the root: the token rule of /api/v1/metrics, promtool
    clean, and the same figures as the stats API (the VM idles, so they
    are stable; read again when a sample landed in between)."""
    root = rep['api'].rsplit('/api/v1', 1)[0]
    status, _, _ = _get(f'{root}/metrics')
    check_eq(status, 401, '/metrics without the token')
    series = (f'hostcache_read_hits_total{{domain="{VM}",target_device='
              f'"vda",policy="balanced"}} ')
    for _ in range(10):
        before = json.loads(_get(f'{rep["api"]}/vms/{VM}/disks/vda/stats'
                                 '?points=1', token)[2])['current']
        status, ctype, text = _get(f'{root}/metrics', token)
        after = json.loads(_get(f'{rep["api"]}/vms/{VM}/disks/vda/stats'
                                '?points=1', token)[2])['current']
        if before == after:
            break
    check_eq(status, 200, '/metrics status')
    check(ctype.startswith('text/plain; version=0.0.4'), ctype)
    check_prometheus_text(text, 'GET /metrics of the demo')
    m = re.search('^' + re.escape(series) + r'(\S+)$', text, re.M)
    check(m is not None, f'no {series} in:\n{text[:3000]}')
    check_eq(float(m.group(1)), float(after['counters']['read-hits']),
             'read hits in /metrics and the stats API')
    _, _, api_text = _get(f'{rep["api"]}/metrics', token)
    names = [re.findall(r'^(\w+)[{ ]', t, re.M) for t in (text, api_text)]
    check_eq(names[0], names[1], 'series of /metrics and /api/v1/metrics')


def _listening(url):
    host, port = re.match(r'http://([^:/]+):(\d+)/', url).groups()
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return True
    except OSError:
        return False


def test_demo_start_report_stop():
    wd = tmpdir('hcdemo-')
    _private_root(wd)
    demo = Demo(wd)
    try:
        r = demo.run('start', 300)
        demo.record_pids()
        check(r.returncode == 0, f'demo start exited {r.returncode}:\n'
              f'{r.stdout}\n{r.stderr}{demo.diag()}')
        print(r.stdout)
        for name in ('hostcached', 'nbdkit', 'qemu', 'libvirtd', 'virtlogd'):
            check(name in demo.alive(), f'{name} not running after the '
                  f'demo started (pids {demo.pids})')
        check(os.path.exists(demo.file('started-libvirtd.json')),
              'the demo did not note that it started libvirtd')
        rep = _report(r.stdout)
        with open(rep['token']) as f:
            token = f.read().strip()
        workload = GuestResult(complete_text(rep['console'])).workload
        _check_figures(rep, workload)
        _check_stats(rep, token, workload)
        _check_metrics(rep, token)

        r = demo.run('stop', 120)
        demo.stop_ran = True
        check(r.returncode == 0, f'demo stop exited {r.returncode}:\n'
              f'{r.stdout}\n{r.stderr}')
        poll('the demo\'s processes to end', lambda: not demo.alive(),
             timeout=30)
        check(not _listening(rep['api']), 'the API still listens')
        check(not os.path.exists(demo.file('started-libvirtd.json')),
              'started-libvirtd.json left behind')
    finally:
        demo.stop()
        left = demo.alive()
        check(not left, f'still running after the cleanup: {left}')


def main():
    if os.geteuid() != 0:
        print('SKIP: needs root (a mount namespace, the demo\'s libvirtd)')
        sys.exit(77)
    why = L.unavailable()
    if why or not os.access(HOSTCACHED, os.X_OK):
        print(f'SKIP: {why or HOSTCACHED + " not built"}')
        sys.exit(77)
    if os.environ.get(IN_NS) != str(os.getpid()):
        # unshare without --fork execs the interpreter in this very
        # process: meson's signals still reach it, and its pid proves the
        # namespace is this run's own.
        os.execve(L.UNSHARE, [L.UNSHARE, '--mount', '--propagation',
                              'private', sys.executable,
                              os.path.abspath(__file__), *sys.argv[1:]],
                  dict(os.environ, **{IN_NS: str(os.getpid())}))
    runner.main(globals())


if __name__ == '__main__':
    main()
