"""QEMU for the tests and the benchmarks (the binaries of paths.QEMU_BUILD,
every process stopped by pid, procs.PROCS).

- firmware_args(): what the project's qemu-system-x86_64 needs to find its
  firmware
- StorageDaemon: a qemu-storage-daemon with a QMP socket
- HostcacheExport: hostcache behind an NBD export of a storage daemon
- qemu_io(), QemuIoSession, read_dumps(): qemu-io, one-shot or
  interactive, and the data its 'read -v' dumped
- make_file(), pread_file(), random_sources(): raw images and data
"""

import os
import select
import subprocess
import time

from hostcache import KiB, MiB, paths
from hostcache.check import TestFailure, check
from hostcache.procs import PROCS, run
from hostcache.qmp import connect_qmp, node_stats

_FIRMWARE_ARGS = None


def firmware_args():
    """Extra QEMU arguments the project's binary needs to find its firmware.

    A qemu-system-x86_64 run from its build tree relocates its firmware path
    into build/qemu-build/qemu-bundle when that directory exists, and the
    +ds build installs no blobs there: SeaBIOS ('bios-256k.bin') and the
    -kernel option ROMs are then not found.  Probe once; when the binary
    fails, name Debian's directories with -L.
    """
    global _FIRMWARE_ARGS
    if _FIRMWARE_ARGS is not None:
        return _FIRMWARE_ARGS
    base = [paths.QEMU_SYSTEM, '-machine', 'pc', '-accel', 'tcg',
            '-nodefaults', '-display', 'none', '-S', '-qmp', 'stdio']
    quit_ = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    for extra in ([], ['-L', '/usr/share/seabios', '-L', '/usr/share/qemu']):
        r = run(base + extra, check_rc=False, timeout=60, input=quit_)
        if r.returncode == 0 and 'could not load' not in r.stderr:
            _FIRMWARE_ARGS = extra
            return extra
    raise TestFailure(f'{paths.QEMU_SYSTEM} cannot start a pc machine:\n'
                      f'{r.stderr[-2000:]}')


class StorageDaemon:
    """A qemu-storage-daemon with a QMP socket; stopped at test exit."""

    def __init__(self, workdir, args=(), name='qsd', prefix=()):
        """prefix: argv run in front of the daemon (procs.booted_ago(),
        taskset)."""
        self.name = name
        self.qmp_path = os.path.join(workdir, f'{name}.qmp')
        self.log_path = os.path.join(workdir, f'{name}.log')
        self.log = open(self.log_path, 'w')
        if os.path.exists(self.qmp_path):   # left by an earlier daemon
            os.unlink(self.qmp_path)
        argv = [*prefix, paths.QSD, '--chardev',
                f'socket,id=qmp0,path={self.qmp_path},server=on,wait=off',
                '--monitor', 'chardev=qmp0', *args]
        self.proc = PROCS.start(argv, stdout=self.log,
                                stderr=subprocess.STDOUT)
        self.qmp = connect_qmp(self.qmp_path, self.proc, self.log_path)

    def stop(self):
        """Stop it (SIGTERM, SIGKILL after 10 s); returns the exit
        status."""
        self.qmp.close()
        PROCS.stop(self.proc)
        self.log.close()
        return self.proc.returncode

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()


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
    argv = [paths.QEMU_IO, '--image-opts', *extra]
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
        self.proc = PROCS.start([paths.QEMU_IO, '--image-opts', *extra,
                                 image_opts],
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
