"""Processes, stopped by pid, however the caller ends.

- PROCS: every process a test, the demo or a benchmark starts through it is
  recorded and stopped by pid at exit (normal exit, exception, SIGTERM from
  meson, SIGINT); ProcessGroup stands in for processes that fork away.
- run(): a command to completion (a PROCS member meanwhile).
- pid_alive(), cmdline(), read_pid(), kill_pid(): for daemons that outlive
  the process that started them (a libvirtd, the demo's), known by pid file.
"""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from hostcache.check import TestFailure

CLK_TCK = os.sysconf('SC_CLK_TCK')


class Procs:
    """Processes started by a test, stopped by pid at exit."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        kw.setdefault('stdin', subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10):
        """Signal p, SIGKILL after timeout seconds (said on stderr: a
        process that ignores SIGTERM is worth knowing about)."""
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f'{getattr(p, "args", [p])[0]} (pid '
                      f'{getattr(p, "pid", "?")}) ignored signal {sig} for '
                      f'{timeout} s: SIGKILL', file=sys.stderr)
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            self.stop(p, timeout=5)


class ProcessGroup:
    """Processes a test owns that PROCS cannot start itself (daemons that
    fork away: a libvirtd and its QEMUs, the demo's).  A subclass says
    whether any still runs (running()) and ends them all (stop());
    registered in PROCS.procs, it is stopped with the rest, however the
    test ends."""

    def running(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    # the Popen methods Procs.stop uses
    def poll(self):
        return None if self.running() else 0

    def send_signal(self, sig):
        self.stop()

    def wait(self, timeout=None):
        return 0

    def kill(self):
        self.stop()


PROCS = Procs()
atexit.register(PROCS.stop_all)


def _on_signal(signum, frame):
    PROCS.stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def run(argv, check_rc=True, timeout=300, input=None, **kw):
    """Run a command to completion, a PROCS member meanwhile (stopped by
    pid when the caller is ended first); returns a CompletedProcess with
    text output.  A command that fails (check_rc) or outlives timeout
    (subprocess.TimeoutExpired) raises."""
    p = PROCS.start(argv, stdin=subprocess.DEVNULL if input is None
                    else subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True, **kw)
    try:
        out, err = p.communicate(input, timeout=timeout)
    finally:
        PROCS.stop(p)
    r = subprocess.CompletedProcess(argv, p.returncode, out, err)
    if check_rc and r.returncode != 0:
        raise TestFailure(f'{argv[0]} exited {r.returncode}:\n'
                          f'{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    return r


def wait_for_path(path, proc=None, timeout=30):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc is not None and proc.poll() is not None:
            raise TestFailure(f'process exited {proc.returncode} before '
                              f'creating {path}')
        if time.monotonic() > deadline:
            raise TestFailure(f'timed out waiting for {path}')
        time.sleep(0.02)


def tmpdir(prefix='hctest-', dir=None):
    """A private directory, removed at exit."""
    d = tempfile.mkdtemp(prefix=prefix, dir=dir)
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


class WorkDir:
    """A private directory (tmpdir(prefix)) made on first use, and
    subdirectories of it by name: sub(name)."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.path = None

    def sub(self, name):
        if self.path is None:
            self.path = tmpdir(self.prefix)
        d = os.path.join(self.path, name)
        os.makedirs(d, exist_ok=True)
        return d


def stuck_report(pid, log_path=None):
    """What a process that stopped answering is doing: its threads'
    states and kernel wait channels, their stacks (gdb, when installed)
    and the tail of its log: for a failure that happens once in many
    runs, the report is all there is."""
    out = []
    for tid in sorted(os.listdir(f'/proc/{pid}/task'), key=int):
        try:
            with open(f'/proc/{pid}/task/{tid}/stat') as f:
                stat = f.read().rsplit(')', 1)[1].split()
            with open(f'/proc/{pid}/task/{tid}/wchan') as f:
                wchan = f.read()
            with open(f'/proc/{pid}/task/{tid}/comm') as f:
                comm = f.read().strip()
        except OSError:
            continue
        out.append(f'  thread {tid} {comm}: state {stat[0]} wchan {wchan}')
    if shutil.which('gdb'):
        r = subprocess.run(['gdb', '-p', str(pid), '-batch', '-nx', '-ex',
                            'thread apply all bt 30'], capture_output=True,
                           text=True, timeout=120)
        out.append(r.stdout[-12000:])
    if log_path and os.path.exists(log_path):
        with open(log_path, errors='replace') as f:
            out.append('log: ' + f.read()[-3000:])
    return '\n'.join(out)


def cpu_seconds(pid):
    """User + system CPU time pid has used so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def booted_ago(seconds):
    """argv prefix that runs a command in a new time namespace whose
    monotonic and boot clocks read `seconds`: the command sees a host that
    booted that long ago, whatever this machine's uptime (needs root and
    util-linux's unshare).  The command is exec'd, so its pid is the one
    Popen returns."""
    mono = time.clock_gettime(time.CLOCK_MONOTONIC)
    boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    return ['/usr/bin/unshare', '--time',
            f'--monotonic={int(seconds - mono)}',
            f'--boottime={int(seconds - boot)}']


# ---- daemons known by pid -------------------------------------------------

def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone.
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def kill_pid(pid, timeout=10):
    """SIGTERM, then SIGKILL after timeout; pid must be ours (checked by
    the caller, e.g. with cmdline()).  Returns True when it took the
    SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
