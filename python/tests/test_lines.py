#!/usr/bin/python3
"""Reading files that another process is still writing (hostcache.lines)
and every reader built on it: the demo's workload rounds
(scripts/demo-manager.py), the test guest's console (hostcache.guest,
hostcache.libvirt),
libvirt's event log and nbdkit's request log.

Each case writes a file whose last line is unfinished, as a guest console
looks while the guest is printing: the unfinished line must be ignored (a
round without its 'errors=' field is not a failed round), and once its
newline arrives it must count.  No QEMU, no root.
"""

import importlib.util
import os

from hostcache import guest, paths
from hostcache import libvirt as L
from hostcache.check import TestFailure, check, check_eq
from hostcache.lines import complete_lines, read_complete
from hostcache.nbdkit import LoggedNbdkit
from hostcache.procs import tmpdir
from hostcache.runner import main

WORK = tmpdir('hclines-')
DEMO = os.path.join(paths.SRC, 'scripts', 'demo-manager.py')

ROUND = ('HC-WORKLOAD round={n} reads=200 writes=0 bs=4096 region=262144 '
         'errors=0 elapsed=2.{n} iops=95\r\n')


def _file(name, data):
    path = os.path.join(WORK, name)
    with open(path, 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def _append(path, data):
    with open(path, 'ab') as f:
        f.write(data.encode())


def _demo():
    spec = importlib.util.spec_from_file_location('demo_manager', DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_only_lines_ended_by_a_newline():
    p = _file('a.txt', 'one\r\ntwo\npar')
    text, end = read_complete(p)
    check_eq(text, 'one\ntwo\n', 'complete text (newlines as in text mode)')
    check_eq(end, len('one\r\ntwo\n'), 'offset of the unfinished rest')
    check_eq(complete_lines(p), ['one', 'two'], 'lines')
    check_eq(read_complete(p, end), ('', end), 'nothing completed yet')
    _append(p, 'tial\nnext')
    check_eq(read_complete(p, end), ('partial\n', end + len('partial\n')),
             'the rest once its newline arrived')
    check_eq(complete_lines(p), ['one', 'two', 'partial'], 'lines')
    check_eq(read_complete(os.path.join(WORK, 'none'), 7), ('', 7),
             'a file not there yet')
    q = _file('b.txt', b'\xff\xfeok\n\xc3')
    check_eq(complete_lines(q), ['\ufffd\ufffdok'], 'undecodable bytes')


def test_demo_half_written_round_is_not_a_failure():
    """Issue 13: make demo failed with "the guest saw I/O errors" on a
    console whose last line had no errors= field yet."""
    demo = _demo()
    p = _file('console.log', 'SeaBIOS\r\nHC-BOOT uptime=2.3\r\n' +
              ROUND.format(n=1) + ROUND.format(n=2) +
              'HC-WORKLOAD round=3 reads=200 writes=0 bs=4096')
    rounds = demo.workload_rounds(p)
    check_eq(sorted(rounds), [1, 2], 'rounds reported in full')
    check_eq(rounds[2]['elapsed'], 2.2, 'elapsed of round 2')
    check_eq(demo.last_round(rounds), 2, 'last round')
    _append(p, ' region=262144 errors=0 elapsed=2.3 iops=95\r\n')
    check_eq(sorted(demo.workload_rounds(p)), [1, 2, 3], 'round 3 done')


def test_demo_round_cut_by_a_kernel_message_is_skipped():
    demo = _demo()
    p = _file('console2.log', ROUND.format(n=1) +
              'HC-WORKLOAD round=2 reads=200 wri[    9.1] clocksource: '
              'tsc unstable\r\ntes=0 bs=4096 region=262144 errors=0 '
              'elapsed=2.2 iops=95\r\n' + ROUND.format(n=3) +
              'HC-WORKLOAD round=4 reads=200 writes=0 bs=4096 region=262144 '
              'errors=0 elapsed=2.[   12.0] rcu: stall\r\n')
    rounds = demo.workload_rounds(p)
    check_eq(sorted(rounds), [1, 3], 'readable rounds')
    check_eq(demo.last_round(rounds), 3, 'the guest is past round 3')
    check_eq([r['round'] for r in demo.pick(rounds, 1, 3, p)], [1, 3],
             'rounds 1-3')


def test_demo_real_failures_still_fail():
    demo = _demo()
    bad = ROUND.format(n=1).replace('errors=0', 'errors=2')
    for text, what in ((ROUND.format(n=1) + bad, 'I/O errors'),
                       (ROUND.format(n=1) + 'HC-RESULT fail job=workload '
                        'errors=1\r\n', 'the guest failed')):
        p = _file('console3.log', text)
        try:
            demo.workload_rounds(p)
        except demo.DemoError as e:
            check(what in str(e), f'{what!r} not in {e}')
        else:
            raise TestFailure(f'no DemoError for {text!r}')
    # Half-written, the same lines are not (yet) failures.
    p = _file('console4.log', ROUND.format(n=1) + bad[:40])
    check_eq(sorted(demo.workload_rounds(p)), [1], 'half a bad round')
    p = _file('console5.log', ROUND.format(n=1) + 'HC-RESULT fa')
    check_eq(sorted(demo.workload_rounds(p)), [1], 'half a result line')


class _Running:
    returncode = None

    def poll(self):
        return None


def test_guest_console_waits_for_the_whole_line():
    g = guest.Guest.__new__(guest.Guest)
    g.serial_path = _file('guest.serial', 'HC-BOOT uptime=2\r\nHC-RESULT o')
    g.log_path = _file('guest.log', '')
    g.proc = _Running()
    try:
        res = g.wait_line('HC-RESULT', timeout=0.5)
    except TestFailure:
        pass
    else:
        raise TestFailure(f'a half-written line was read: {res.status!r}')
    _append(g.serial_path, 'k job=workload rounds=3\r\n' +
            ROUND.format(n=1)[:30])
    res = g.wait_line('HC-RESULT', timeout=5)
    check_eq((res.status, res.fields), ('ok', {'job': 'workload',
                                               'rounds': '3'}), 'result')
    check_eq(res.workload, [], 'half a workload round')


def test_libvirt_console_and_events():
    p = _file('console.txt', ROUND.format(n=1) + 'HC-WORKLOAD round=2 re')
    check_eq(L.console_text(p), ROUND.format(n=1).replace('\r', ''),
             'console text')
    try:
        L.wait_console(p, r'^HC-WORKLOAD round=2', timeout=0.5)
    except TestFailure:
        pass
    else:
        raise TestFailure('wait_console matched a half-written line')
    _append(p, 'ads=200\r\n')
    check(L.wait_console(p, r'^HC-WORKLOAD round=2', timeout=5),
          'round 2 once complete')
    ev = L.EventLog.__new__(L.EventLog)
    ev.path = _file('events.txt', "2026-12-07 10:00:00.1+0000: event "
                    "'lifecycle' for domain 'd': Started Booted\n"
                    "2026-12-07 10:00:01.1+0000: event 'lifecycle' for "
                    "domain 'd': Stopped Mig")
    check_eq(len(ev.lines()), 1, 'complete events')


def test_nbdkit_request_log():
    n = LoggedNbdkit.__new__(LoggedNbdkit)
    n.log = _file('nbdkit.log', '2026-12-07 10:00:00.1 connection=1 Read '
                  'id=1 offset=0x0 count=0x1000 ...\n'
                  '2026-12-07 10:00:00.2 connection=1 ...Read id=1 return=0 '
                  '(Success)\n'
                  '2026-12-07 10:00:00.3 connection=1 Write id=2 offset=0x0 '
                  'cou')
    check_eq([k for k, _ in n.requests()], ['Read'], 'complete requests')


if __name__ == '__main__':
    main(globals())
