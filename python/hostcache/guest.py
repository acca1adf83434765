"""Boot the tiny Linux test guest (scripts/make-guest.sh) in the project's
qemu-system-x86_64 under TCG, and read what it reports.

The guest's /init (scripts/guest-init.sh) runs the job named by hc.job=
(verify, workload) against /dev/vda, prints HC-* lines on ttyS0 and powers
off.  QEMU runs with -no-shutdown, so after the guest is done the VM stays
(stopped) and its block stats can still be read over QMP; Guest.quit() ends
it.  Every QEMU is started through procs.PROCS and so stopped by pid.

    g = Guest(workdir, hostcache_disk(origin, mode='write-through',
                                      ram_size=32 * MiB),
              job='verify', params={'seed': 1})
    res = g.wait_done()          # GuestResult: status, steps, chunks...
    stats = node_stats(g.qmp, 'hc0')
    g.quit()
    bad = verify_chunks(origin, res.chunks)
"""

import hashlib
import json
import os
import subprocess
import time

from hostcache import paths
from hostcache.check import TestFailure
from hostcache.lines import complete_text
from hostcache.procs import PROCS, run, wait_for_path
from hostcache.qmp import QMP

GUEST_DIR = paths.GUEST_DIR
MAKE_GUEST = os.path.join(paths.SRC, 'scripts', 'make-guest.sh')
# SeaBIOS and linuxboot_dma.bin (for -kernel).  Named explicitly: a QEMU run
# from its build tree looks only in build/qemu-build/qemu-bundle once that
# directory exists.
FIRMWARE_DIRS = ('/usr/share/seabios', '/usr/share/qemu')

_built = None


def build_guest():
    """Run scripts/make-guest.sh (instant when up to date), once per
    process; returns (kernel, initrd) paths."""
    global _built
    if _built is None:
        env = dict(os.environ, HC_GUEST_DIR=GUEST_DIR)
        run(['bash', MAKE_GUEST], env=env, timeout=300)
        _built = (os.path.join(GUEST_DIR, 'vmlinuz'),
                  os.path.join(GUEST_DIR, 'initramfs.cpio.gz'))
    return _built


def blockdev_arg(**opts):
    """-blockdev argument in JSON form (safe for any file name).  Keyword
    names use '_' for '-'."""
    return ['-blockdev',
            json.dumps({k.replace('_', '-'): v for k, v in opts.items()})]


def hostcache_disk(origin, node='hc0', device='disk0', **opts):
    """QEMU arguments for a virtio-blk disk on a hostcache node over a raw
    file: nodes 'origin' (file) and `node` (hostcache, opts such as
    mode='write-around', ram_size=<int bytes>)."""
    return (blockdev_arg(driver='file', node_name='origin', filename=origin)
            + blockdev_arg(driver='hostcache', node_name=node, file='origin',
                           **opts)
            + ['-device', f'virtio-blk-pci,id={device},drive={node}'])


def plain_disk(blockdev, device='disk0'):
    """QEMU arguments for a virtio-blk disk directly on one node, given as a
    dict of -blockdev options (must include node-name)."""
    return (['-blockdev', json.dumps(blockdev),
             '-device',
             f'virtio-blk-pci,id={device},drive={blockdev["node-name"]}'])


class GuestResult:
    """What the guest printed (text: its console's complete lines, see
    hostcache.lines; a line still being written would parse as a record with
    fields missing): status ('ok', 'fail' or None when no
    HC-RESULT line), fields of the HC-RESULT line, steps {name: (ok, fields)},
    chunks [(offset, length, sha256)], workload [fields per round], and the
    raw HC-* lines."""

    def __init__(self, text):
        self.status = None
        self.fields = {}
        self.steps = {}
        self.chunks = []
        self.workload = []
        self.mismatches = []
        self.boot = {}
        self.done = False
        self.lines = []
        for raw in text.splitlines():
            line = raw.strip('\r\n\0 ')
            # Kernel messages may precede a line on the same console line.
            at = line.find('HC-')
            if at < 0:
                continue
            line = line[at:]
            self.lines.append(line)
            words = line.split()
            tag, rest = words[0], words[1:]
            if tag == 'HC-RESULT' and rest:
                self.status = rest[0]
                self.fields = _kv(rest[1:])
            elif tag == 'HC-STEP' and len(rest) >= 2:
                self.steps[rest[0]] = (rest[1] == 'ok', _kv(rest[2:]))
            elif tag == 'HC-CHUNK' and len(rest) == 3:
                self.chunks.append((int(rest[0]), int(rest[1]), rest[2]))
            elif tag == 'HC-WORKLOAD':
                self.workload.append(_kv(rest))
            elif tag == 'HC-MISMATCH':
                self.mismatches.append(_kv(rest))
            elif tag == 'HC-BOOT':
                self.boot = _kv(rest)
            elif tag == 'HC-DONE':
                self.done = True

    def __repr__(self):
        return '\n'.join(self.lines)


def _kv(words):
    return dict(w.split('=', 1) for w in words if '=' in w)


class Guest:
    """One QEMU running the test guest with a QMP socket.

    disk_args: QEMU arguments for the disk(s) (hostcache_disk, plain_disk);
    job/params: hc.job= and hc.<k>=<v> on the kernel command line;
    extra_args: more QEMU arguments."""

    def __init__(self, workdir, disk_args, job='verify', params=None,
                 name='guest', mem=256, extra_args=(), no_shutdown=True):
        kernel, initrd = build_guest()
        self.name = name
        self.qmp_path = os.path.join(workdir, f'{name}.qmp')
        self.serial_path = os.path.join(workdir, f'{name}.serial')
        self.log_path = os.path.join(workdir, f'{name}.log')
        append = ['console=ttyS0', 'quiet', 'panic=-1', f'hc.job={job}']
        append += [f'hc.{k}={v}' for k, v in (params or {}).items()]
        fw = []
        for d in FIRMWARE_DIRS:
            fw += ['-L', d]
        argv = [paths.QEMU_SYSTEM, *fw, '-accel', 'tcg', '-m', str(mem),
                '-nodefaults', '-display', 'none', '-no-reboot',
                *(['-no-shutdown'] if no_shutdown else []),
                '-chardev', f'file,id=serial0,path={self.serial_path}',
                '-serial', 'chardev:serial0',
                '-chardev',
                f'socket,id=qmp0,path={self.qmp_path},server=on,wait=off',
                '-mon', 'chardev=qmp0,mode=control',
                '-kernel', kernel, '-initrd', initrd,
                '-append', ' '.join(append), *disk_args, *extra_args]
        self.argv = argv
        self.log = open(self.log_path, 'w')
        self.t_start = time.monotonic()
        self.proc = PROCS.start(argv, stdout=self.log,
                                stderr=subprocess.STDOUT)
        wait_for_path(self.qmp_path, self.proc)
        self.qmp = QMP(self.qmp_path)

    def serial(self):
        try:
            with open(self.serial_path, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def log_text(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def _diag(self):
        return (f'\n--- serial ({self.serial_path}) ---\n'
                f'{self.serial()[-4000:]}\n--- qemu log ---\n'
                f'{self.log_text()[-2000:]}')

    def wait_line(self, prefix, timeout=120):
        """Wait until the guest printed a line starting with prefix; returns
        the GuestResult so far."""
        deadline = time.monotonic() + timeout
        while True:
            res = GuestResult(complete_text(self.serial_path))
            if any(line.startswith(prefix) for line in res.lines):
                return res
            if self.proc.poll() is not None:
                raise TestFailure(f'QEMU exited {self.proc.returncode} '
                                  f'before {prefix!r}' + self._diag())
            if time.monotonic() > deadline:
                raise TestFailure(f'no {prefix!r} from the guest in '
                                  f'{timeout}s' + self._diag())
            time.sleep(0.1)

    def wait_done(self, timeout=120):
        """Wait until the guest printed HC-DONE and powered off (the VM is
        then in state 'shutdown' and QMP still answers); returns the
        GuestResult.  Records elapsed seconds in self.elapsed."""
        deadline = time.monotonic() + timeout
        self.wait_line('HC-DONE', timeout)
        while self.qmp.cmd('query-status')['status'] != 'shutdown':
            if time.monotonic() > deadline:
                raise TestFailure('guest printed HC-DONE but did not power '
                                  'off' + self._diag())
            time.sleep(0.05)
        self.elapsed = time.monotonic() - self.t_start
        return GuestResult(complete_text(self.serial_path))

    def quit(self):
        """End QEMU (QMP quit, then by pid if needed); returns its exit
        status."""
        try:
            self.qmp.cmd('quit')
        except (OSError, ConnectionError):
            pass
        self.qmp.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        PROCS.stop(self.proc)
        self.log.close()
        return self.proc.returncode


def verify_chunks(image, chunks):
    """Check (offset, length, sha256) chunks against a raw image file;
    returns the list of chunks that differ, as (offset, want, got)."""
    bad = []
    with open(image, 'rb') as f:
        for off, length, want in chunks:
            f.seek(off)
            got = hashlib.sha256(f.read(length)).hexdigest()
            if got != want:
                bad.append((off, want, got))
    return bad
