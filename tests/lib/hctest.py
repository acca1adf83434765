"""Shared helpers for the hostcache driver tests (standard library only).

- paths of the QEMU binaries built with the driver (HOSTCACHE_QEMU_BUILD)
- Procs: every process a test starts is recorded and stopped by pid when the
  test ends, however it ends (normal exit, exception, SIGTERM from meson)
- QMP: a small QMP client over a unix socket
- main(): runs the test_* functions of a script (those whose names contain
  one of the words given on the command line, when some are), prints one
  line each and a closing 'N passed, N failed' line; exit status 1 if
  anything failed, 2 if nothing was selected
"""

import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

from hclines import complete_lines

SRC = os.environ.get('HOSTCACHE_SRC',
                     os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                  '..', '..')))
QEMU_BUILD = os.environ.get('HOSTCACHE_QEMU_BUILD',
                            os.path.join(SRC, 'build', 'qemu-build'))
QEMU_IMG = os.path.join(QEMU_BUILD, 'qemu-img')
QEMU_IO = os.path.join(QEMU_BUILD, 'qemu-io')
QEMU_NBD = os.path.join(QEMU_BUILD, 'qemu-nbd')
QSD = os.path.join(QEMU_BUILD, 'storage-daemon', 'qemu-storage-daemon')
QEMU_SYSTEM = os.path.join(QEMU_BUILD, 'qemu-system-x86_64')

MiB = 1024 * 1024
KiB = 1024


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def _first_diff(got, want):
    """Describe where two byte strings (or sequences of them) differ."""
    if isinstance(got, (bytes, bytearray)) and isinstance(want,
                                                           (bytes, bytearray)):
        n = next((i for i in range(min(len(got), len(want)))
                  if got[i] != want[i]), min(len(got), len(want)))
        return (f'{len(got)} bytes vs {len(want)}, first difference at '
                f'byte {n}: {bytes(got[n:n + 8]).hex()} vs '
                f'{bytes(want[n:n + 8]).hex()}')
    if (isinstance(got, (list, tuple)) and isinstance(want, (list, tuple))
            and len(got) == len(want)):
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                return f'item {i}: {_first_diff(g, w)}'
    return f'got {got!r:.300}, want {want!r:.300}'


def check_eq(got, want, what):
    if got != want:
        raise TestFailure(f'{what}: {_first_diff(got, want)}')


# ---- processes --------------------------------------------------------------

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
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
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


def run(argv, check_rc=True, timeout=300, **kw):
    """Run a command to completion; returns CompletedProcess (text)."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       **kw)
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


# ---- QMP ----------------------------------------------------------------------

class QMPError(Exception):
    def __init__(self, cmd, err):
        super().__init__(f'{cmd}: {err.get("class")}: {err.get("desc")}')
        self.cmd = cmd
        self.cls = err.get('class')
        self.desc = err.get('desc', '')


class QMP:
    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile('rw', encoding='utf-8')
        self.events = []
        greeting = self._recv()
        check('QMP' in greeting, f'bad QMP greeting {greeting}')
        self.cmd('qmp_capabilities')

    def _recv(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError('QMP connection closed')
        return json.loads(line)

    def cmd(self, name, /, **args):
        """Run a command; returns its 'return' or raises QMPError."""
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.file.write(json.dumps(msg) + '\n')
        self.file.flush()
        while True:
            r = self._recv()
            if 'event' in r:
                self.events.append(r)
                continue
            if 'error' in r:
                raise QMPError(name, r['error'])
            if 'return' not in r:
                if 'QMP' in r:      # a stray greeting: not our reply
                    continue
                raise TestFailure(f'{name}: unexpected QMP message {r}')
            return r['return']

    def hmp(self, line):
        return self.cmd('human-monitor-command', **{'command-line': line})

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def node_stats(qmp, node):
    """driver-specific stats of one node from query-blockstats."""
    for s in qmp.cmd('query-blockstats', **{'query-nodes': True}):
        if s.get('node-name') == node:
            return s.get('driver-specific')
    raise TestFailure(f'node {node} not in query-blockstats')


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


def connect_qmp(path, proc, log_path=None, timeout=30):
    """A QMP connection to the socket proc creates at path, once it
    listens; a process that does not answer is reported (stuck_report)."""
    wait_for_path(path, proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return QMP(path)
        except ConnectionRefusedError:
            # the socket file exists between bind() and listen()
            check(time.monotonic() < deadline and proc.poll() is None,
                  f'cannot connect to {path}')
            time.sleep(0.02)
        except (TimeoutError, socket.timeout):
            raise TestFailure(f'{path}: no QMP answer in 60 s\n'
                              + stuck_report(proc.pid, log_path)) from None


class StorageDaemon:
    """A qemu-storage-daemon with a QMP socket; stopped at test exit."""

    def __init__(self, workdir, args=(), name='qsd', prefix=()):
        """prefix: argv run in front of the daemon (booted_ago())."""
        self.qmp_path = os.path.join(workdir, f'{name}.qmp')
        self.log_path = os.path.join(workdir, f'{name}.log')
        self.log = open(self.log_path, 'w')
        if os.path.exists(self.qmp_path):   # left by an earlier daemon
            os.unlink(self.qmp_path)
        argv = [*prefix, QSD, '--chardev',
                f'socket,id=qmp0,path={self.qmp_path},server=on,wait=off',
                '--monitor', 'chardev=qmp0', *args]
        self.proc = PROCS.start(argv, stdout=self.log,
                                stderr=subprocess.STDOUT)
        self.qmp = connect_qmp(self.qmp_path, self.proc, self.log_path)

    def stop(self):
        self.qmp.close()
        PROCS.stop(self.proc)
        self.log.close()

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()


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


# ---- images and qemu-io ----------------------------------------------------

def make_file(path, size, pattern=None):
    """Create a raw file of size bytes, random content unless pattern."""
    with open(path, 'wb') as f:
        if pattern is None:
            left = size
            while left:
                n = min(left, 4 * MiB)
                f.write(os.urandom(n))
                left -= n
        else:
            f.truncate(size)
    return path


def hostcache_opts(filename, **opts):
    """--image-opts string: hostcache over a raw file."""
    parts = ['driver=hostcache', 'node-name=hc0']
    for k, v in opts.items():
        parts.append(f'{k.replace("_", "-")}={v}')
    parts += ['file.driver=file', f'file.filename={filename}']
    return ','.join(parts)


def qemu_io(image_opts, commands, check_rc=True, extra=(), timeout=300):
    argv = [QEMU_IO, '--image-opts', *extra]
    for c in commands:
        argv += ['-c', c]
    argv.append(image_opts)
    return run(argv, check_rc=check_rc, timeout=timeout)


def nbd_export(qsd, node, name, workdir, writable=True):
    """Export node over NBD on a unix socket; returns --image-opts for it."""
    sock = os.path.join(workdir, f'{name}.nbd')
    # nbd-server-start takes the legacy SocketAddress form ('data' wrapper)
    qsd.qmp.cmd('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qsd.qmp.cmd('block-export-add', type='nbd', id=name, **{'node-name': node},
                name=name, writable=writable)
    return (f'driver=nbd,server.type=unix,server.path={sock},export={name}',
            sock)


def nbd_io(opts, commands, check_rc=True):
    """qemu-io through an NBD export (opts from nbd_export)."""
    return qemu_io(opts, commands, check_rc=check_rc)


def io_ok(result):
    """True when no qemu-io command in the output failed."""
    out = result.stdout + result.stderr
    return ('failed' not in out and 'error' not in out.lower()
            and result.returncode == 0)


def tmpdir(prefix='hctest-'):
    d = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


# ---- runner --------------------------------------------------------------------

def main(namespace, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    tests = [(n, f) for n, f in namespace.items()
             if n.startswith('test_') and callable(f)]
    names = [n for n, _ in tests]
    if argv:
        tests = [(n, f) for n, f in tests if any(a in n for a in argv)]
    if not tests:
        # A selection that runs nothing (a test renamed under a make target
        # that names it) must not pass.
        print(f'no test matches {" ".join(argv) or "(no selection)"}; the tests are: '
              f'{", ".join(names) or "none"}', file=sys.stderr)
        sys.exit(2)
    # the driver checks its indexes after every batch and aborts when one
    # is broken (a core and a clear message, not wrong data later)
    os.environ.setdefault('HOSTCACHE_CHECK_INDEX', '1')
    for b in (QEMU_IO, QEMU_IMG, QSD):
        if not os.access(b, os.X_OK):
            print(f'missing {b}: run make first', file=sys.stderr)
            sys.exit(1)
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print(f'FAIL {name} ({time.monotonic() - t0:.1f}s)')
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f'ok   {name} ({time.monotonic() - t0:.1f}s)')
        finally:
            PROCS.stop_all()
        sys.stdout.flush()
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)


# ---- hostcache behind an NBD export, byte-exact qemu-io ------------------------

class HostcacheExport:
    """A qemu-storage-daemon holding an origin node 'origin', the hostcache
    node 'hc0' over it and an NBD export 'hc0' of it.

    origin: blockdev-add arguments of the origin (default: the raw file img,
    discard=unmap); hc: hostcache options by their QAPI names."""

    def __init__(self, workdir, img=None, hc=None, origin=None, name='qsd'):
        self.qsd = StorageDaemon(workdir, name=name)
        self.qmp = self.qsd.qmp
        if origin is None:
            origin = {'driver': 'file', 'filename': img, 'discard': 'unmap'}
        self.qmp.cmd('blockdev-add', **{'node-name': 'origin', **origin})
        self.hc = {'discard': 'unmap', **(hc or {})}
        self.qmp.cmd('blockdev-add', driver='hostcache', file='origin',
                     **{'node-name': 'hc0', **self.hc})
        self.opts, self.sock = nbd_export(self.qsd, 'hc0', 'hc0', workdir)

    def stats(self):
        try:
            return node_stats(self.qmp, 'hc0')
        except (ConnectionError, OSError) as e:
            self.died('query-blockstats', e)

    def io(self, commands, check_rc=True, extra=()):
        """qemu-io as an NBD client of the export."""
        return qemu_io(self.opts, commands, check_rc=check_rc, extra=extra)

    def reopen(self, **hc):
        """blockdev-reopen hc0 with the given options (QAPI names); options
        not given keep the values the node was added with."""
        self.hc.update(hc)
        try:
            self.qmp.cmd('blockdev-reopen', options=[{
                'driver': 'hostcache', 'node-name': 'hc0', 'file': 'origin',
                **self.hc}])
        except (ConnectionError, OSError) as e:
            self.died(f'blockdev-reopen {hc}', e)

    def died(self, what, exc):
        """Raise a TestFailure for a daemon that went away during what."""
        try:
            rc = self.qsd.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        raise TestFailure(f'qemu-storage-daemon went away during {what} '
                          f'(exit status {rc}, {exc!r}); its log:\n'
                          f'{self.qsd.log_text()[-2000:]}') from exc

    def resize(self, size):
        """block_resize hc0.  An NBD export forbids resizing its node (the
        protocol has no size change), so the export is removed meanwhile
        (mode=hard: a client that just disconnected may still be counted)."""
        self.qmp.cmd('block-export-del', id='hc0', mode='hard')
        deadline = time.monotonic() + 30
        while self.qmp.cmd('query-block-exports'):
            check(time.monotonic() < deadline, 'export not deleted')
            time.sleep(0.02)
        try:
            self.qmp.cmd('block_resize', **{'node-name': 'hc0'}, size=size)
        finally:
            self.qmp.cmd('block-export-add', type='nbd', id='hc0',
                         **{'node-name': 'hc0'}, name='hc0', writable=True)

    def nbd_uri(self):
        return f'nbd+unix:///hc0?socket={self.sock}'

    def alive(self):
        return self.qsd.proc.poll() is None

    def stop(self):
        self.qsd.stop()


def read_dumps(result):
    """[(offset, data)] of every 'read -v' in a qemu-io run (its result or
    its output text), in order."""
    text = result if isinstance(result, str) else result.stdout
    reads, buf, first = [], bytearray(), None
    for line in text.splitlines():
        if len(line) > 10 and line[8:11] == ':  ':
            if first is None:
                first = int(line[:8], 16)
            buf += bytes.fromhex(line[10:].split('  ', 1)[0])
        elif line.startswith('read ') and ' bytes at offset ' in line:
            off = int(line.rsplit(' ', 1)[1])
            n = int(line.split()[1].split('/')[0])
            if buf:     # a read without -v dumps nothing
                check(first == off and len(buf) == n,
                      f'unparsable qemu-io dump before {line!r}')
                reads.append((off, bytes(buf)))
            buf, first = bytearray(), None
    return reads


def random_sources(workdir, rng, count=16, size=256 * KiB):
    """count files of random bytes for 'write -s'; returns [(path, data)]."""
    out = []
    for i in range(count):
        data = rng.randbytes(size)
        path = os.path.join(workdir, f'src{i}.bin')
        with open(path, 'wb') as f:
            f.write(data)
        out.append((path, data))
    return out


def pread_file(path, offset, length):
    with open(path, 'rb') as f:
        return os.pread(f.fileno(), length, offset)


def dumps_match_origin(result, img, what):
    """Every 'read -v' of a qemu-io run returned the content of the raw
    file img at its offset (and there was at least one); returns the
    [(offset, data)] of read_dumps."""
    reads = read_dumps(result)
    check(reads, f'{what}: no read dumps in {result.stdout[:300]!r}')
    for off, data in reads:
        want = pread_file(img, off, len(data))
        if data != want:
            bad = next(i for i in range(len(data)) if data[i] != want[i])
            raise TestFailure(f'{what}: read at {off}+{len(data)} differs '
                              f'from the origin at byte {off + bad}')
    return reads


class QemuIoSession:
    """An interactive qemu-io on --image-opts: commands are sent one batch at
    a time and the output of each batch is returned, so a test can look at
    the origin between commands while the node (and its cache) stays open."""

    PROMPT = b'qemu-io> '

    def __init__(self, image_opts, extra=(), timeout=120):
        self.timeout = timeout
        self.proc = PROCS.start([QEMU_IO, '--image-opts', *extra, image_opts],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        self._until_prompts(1)

    def _until_prompts(self, n):
        buf = b''
        deadline = time.monotonic() + self.timeout
        fd = self.proc.stdout.fileno()
        while buf.count(self.PROMPT) < n:
            left = deadline - time.monotonic()
            check(left > 0, f'qemu-io timed out: {buf[-2000:]!r}')
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise TestFailure(f'qemu-io exited '
                                      f'{self.proc.wait()}: {buf[-3000:]!r}')
                buf += chunk
        return buf.decode(errors='replace')

    def run(self, *commands):
        """Run commands; returns their output (prompts included)."""
        self.proc.stdin.write(''.join(c + '\n' for c in commands).encode())
        self.proc.stdin.flush()
        return self._until_prompts(len(commands))

    def close(self):
        """Quit; returns the exit status (what qemu-io printed meanwhile is
        in self.tail)."""
        try:
            self.proc.stdin.write(b'quit\n')
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.tail = self.proc.stdout.read().decode(errors='replace')
            rc = self.proc.wait(timeout=self.timeout)
        finally:
            self.proc.stdout.close()
            PROCS.stop(self.proc)
        return rc


# ---- fio over NBD -----------------------------------------------------------

FIO = '/usr/bin/fio'


class Fio:
    """A fio run with the nbd ioengine (libnbd) against uri.  fio's nbd
    engine prints to stdout, so the report goes to a JSON file."""

    def __init__(self, workdir, name, uri, args):
        self.name = name
        self.json_path = os.path.join(workdir, f'{name}.json')
        self.out_path = os.path.join(workdir, f'{name}.out')
        self.out = open(self.out_path, 'w')
        argv = [FIO, f'--name={name}', '--ioengine=nbd', f'--uri={uri}',
                '--output-format=json', f'--output={self.json_path}',
                '--verify_state_save=0', *args]
        self.proc = PROCS.start(argv, stdout=self.out,
                                stderr=subprocess.STDOUT)

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=300):
        """Wait for fio; returns its job report, raises when fio failed."""
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            PROCS.stop(self.proc)
            self.out.close()
        with open(self.out_path) as f:
            out = f.read()
        try:
            with open(self.json_path) as f:
                text = f.read()
            # fio may put messages in front of the JSON document
            job = json.loads(text[text.index('{'):])['jobs'][0]
        except (OSError, ValueError, KeyError, IndexError):
            job = None
        err = job['error'] if job else None
        check(rc == 0 and job is not None and err == 0 and 'verify' not in out,
              f'fio {self.name} exited {rc}, error {err}:\n{out[-3000:]}')
        return job


# ---- Prometheus ---------------------------------------------------------------

PROMTOOL = '/usr/bin/promtool'


def check_prometheus_text(text, what):
    """`promtool check metrics` (Debian package prometheus) on a Prometheus
    text exposition: the format parses and the names, HELP/TYPE lines and
    unit suffixes follow Prometheus' conventions.  Fails with its
    findings."""
    check(os.access(PROMTOOL, os.X_OK), f'{PROMTOOL} missing: '
          'scripts/setup-deps.sh installs it (Debian package prometheus)')
    r = subprocess.run([PROMTOOL, 'check', 'metrics'], input=text,
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
          f'promtool check metrics on {what} exited {r.returncode}:\n'
          f'{r.stdout}{r.stderr}--- the text ---\n{text[:4000]}')


# ---- waiting for background work -------------------------------------------

def poll(what, fn, timeout=30.0, interval=0.05):
    """Call fn until it returns a true value and return that; fail after
    timeout seconds (a generous deadline for background work that must
    happen, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        check(time.monotonic() < deadline, f'timed out waiting for {what}')
        time.sleep(interval)


# ---- nbdkit behind its log filter ------------------------------------------

class LoggedNbdkit:
    """nbdkit serving plugin (its name and arguments, e.g. ('memory',
    '16M') or ('file', f'file={img}')) on a unix socket behind its log
    filter, which records every request it receives: an origin whose
    traffic a test can see (query-blockstats counts operations only for
    BlockBackends, so a child node's flush_operations stays 0)."""

    def __init__(self, workdir, name, plugin, filters=(), args=(),
                 stderr=None):
        """filters: more nbdkit filters (names) under the log filter, so
        the log sees a request when it arrives; args: their parameters;
        stderr: where nbdkit's messages go (default: ours)."""
        self.sock = os.path.join(workdir, f'{name}.sock')
        self.log = os.path.join(workdir, f'{name}.log')
        self.proc = PROCS.start(['nbdkit', '-f', '-U', self.sock,
                                 '--filter=log',
                                 *(f'--filter={f}' for f in filters),
                                 *plugin, f'logfile={self.log}', *args],
                                stdout=subprocess.DEVNULL, stderr=stderr)
        wait_for_path(self.sock, self.proc)
        self.uri = f'nbd+unix:///?socket={self.sock}'
        # blockdev-add arguments of an NBD client node of it
        self.blockdev = {'driver': 'nbd',
                         'server': {'type': 'unix', 'path': self.sock}}

    def requests(self):
        """[(name, line)] of the requests logged so far, in order: lines
        "<date> <time> connection=N Name id=M ..." (not the replies,
        "connection=N ...Name id=M ...").  Complete lines only: nbdkit
        may be writing the last one."""
        out = []
        for ln in complete_lines(self.log):
            m = re.search(r'connection=\d+ (\w+) id=', ln)
            if m and '...' not in ln.split('id=')[0]:
                out.append((m.group(1), ln.strip()))
        return out

    def data_requests(self):
        """Names of the data requests (reads, writes, block status...)
        logged so far, in order."""
        return [n for n, _ in self.requests()
                if n in ('Read', 'Extents', 'Write', 'Zero', 'Trim', 'Cache')]
