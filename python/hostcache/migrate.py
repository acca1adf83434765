"""Live migration of a hostcache disk between two "host slots" on this
machine, with plain QEMU (standard library only).

A VM is one qemu-system-x86_64 (TCG, pc, 64 MiB, no guest OS) whose disk
`vd0` (virtio-blk-pci) sits on a hostcache node `hc0` over the shared origin
node `origin`; a slot may give it its own SSD tier file (node `ssd0`).
A QEMU that migrated out cannot take an incoming migration, so every hop
starts a fresh `-incoming defer` process in the other slot (Pair.hop()).

Guest I/O: HMP `qemu-io -d /machine/peripheral/vd0/virtio-backend "..."`
through QMP `human-monitor-command`, which goes through the device's own
BlockBackend.  Found on this machine (QEMU 10.0.2):
- qemu-io prints to QEMU's stdout (line-buffered, os-posix.c), never into
  the HMP reply (which is empty); the command runs to completion before
  the reply, so its lines are in the VM's .out file when the reply comes.
- The firmware must not drive vd0: SeaBIOS negotiates virtio-blk without
  the flush feature, which turns the device's write cache off (every write
  then FUA, so write-back keeps nothing dirty).  `-boot strict=on` with a
  bootable (bootindex) null-co disk makes SeaBIOS 1.16 skip vd0 ("skipping
  init of a non-bootable virtio-blk").
- A write to the source after its nodes were inactivated aborts QEMU
  (bdrv_co_write_req_prepare: Assertion `!(bs->open_flags &
  BDRV_O_INACTIVE)'), so I/O during a migration is only issued while the
  source is 'active' or held in 'pre-switchover' (capability
  pause-before-switchover: after vm_stop, before inactivation), and
  migrate-continue comes after the last such command.
- virtio-blk reads sector 0 when it is realized (geometry guess): a
  destination caches block 0 while inactive, before the source wrote back;
  activation must drop it.

Byte model: DiskModel keeps one pattern byte per 512-byte sector (every
command here is 512-byte aligned), so a range of equal sectors is checked
with one `read -P`.  Discards take what the origin then holds (the origin
decides what a discarded range reads as).

Statistics and options of the migration-aware driver (issue 10) are read
with new_stat() (None while the driver lacks them) and need_stat() /
need_option(), which fail with "needs migration-aware driver: <key>
missing".
"""

import json
import os
import re
import signal
import socket
import subprocess
import time

from hostcache import KiB, MiB, paths
from hostcache.check import TestFailure, check, poll
from hostcache.nbdkit import LoggedNbdkit
from hostcache.procs import PROCS, run, wait_for_path
from hostcache.qemu import firmware_args, pread_file
from hostcache.qmp import connect_qmp, node_stats

SECTOR = 512
BS = 4 * KiB
HOUR_MS = 3600000
DEV = '/machine/peripheral/vd0/virtio-backend'
NEEDS = 'needs migration-aware driver'


# ---- the byte model ---------------------------------------------------------

class DiskModel:
    """The disk's content as one pattern byte per 512-byte sector."""

    def __init__(self, size, sec=None):
        check(size % SECTOR == 0, f'model size {size} not sector-aligned')
        self.size = size
        self.sec = bytearray(size // SECTOR) if sec is None else sec

    @classmethod
    def initial(cls, size, chunk=64 * KiB):
        """Every chunk of the disk a different non-zero pattern."""
        per = chunk // SECTOR
        sec = bytearray(size // SECTOR)
        for i in range(0, len(sec), per):
            sec[i:i + per] = bytes([(i // per * 37) % 251 + 1]) * per
        return cls(size, sec)

    def _range(self, off, ln):
        check(off % SECTOR == 0 and ln % SECTOR == 0 and ln > 0
              and off + ln <= self.size, f'bad extent {off}+{ln}')
        return off // SECTOR, (off + ln) // SECTOR

    def write(self, off, ln, pat):
        a, b = self._range(off, ln)
        self.sec[a:b] = bytes([pat]) * (b - a)

    def from_bytes(self, off, data):
        """Take data (what the origin holds after a discard); every sector
        of it must be one byte repeated."""
        a, b = self._range(off, len(data))
        for i in range(a, b):
            s = data[(i - a) * SECTOR:(i - a + 1) * SECTOR]
            check(s.count(s[:1]) == SECTOR,
                  f'sector {i} of the origin is not one pattern')
            self.sec[i] = s[0]

    def runs(self, off=0, end=None, max_len=4 * MiB):
        """[(offset, length, pattern)]: maximal ranges of one pattern."""
        a, b = self._range(off, (self.size if end is None else end) - off)
        out, s = [], a
        sec = self.sec
        for i in range(a + 1, b + 1):
            if i == b or sec[i] != sec[s] or i - s == max_len // SECTOR:
                out.append((s * SECTOR, (i - s) * SECTOR, sec[s]))
                s = i
        return out

    def image(self, off=0, end=None):
        return b''.join(bytes([p]) * n for _, n, p in self.runs(off, end))

    def write_file(self, path):
        with open(path, 'wb') as f:
            f.write(self.image())
        return path

    def diff_file(self, path):
        """None when the file holds the model, else where it differs."""
        with open(path, 'rb') as f:
            data = f.read()
        if len(data) < self.size:
            return f'{path} has {len(data)} bytes, the disk {self.size}'
        for off, n, p in self.runs():
            got = data[off:off + n]
            if got.count(bytes([p])) != n:
                bad = next(i for i in range(n) if got[i] != p)
                return (f'{path} at {off + bad}: {got[bad]:#04x}, the model '
                        f'{p:#04x} (run {off}+{n})')
        return None

    def copy(self):
        return DiskModel(self.size, bytearray(self.sec))


# ---- statistics and options of the migration-aware driver -------------------

def new_stat(stats, key):
    """A statistic of the migration-aware driver; None while absent."""
    return stats.get(key)


def need_stat(stats, key):
    v = stats.get(key)
    if v is None:
        raise TestFailure(f'{NEEDS}: {key} missing (statistics: '
                          f'{sorted(stats)})')
    return v


_OPTIONS = {}


def has_option(name, value):
    """Does this build's hostcache accept option name=value?"""
    if (name, value) not in _OPTIONS:
        r = run([paths.QEMU_IO, '--image-opts', '-c', 'quit',
                 f'driver=hostcache,{name}={value},file.driver=null-co,'
                 f'file.size=1M'], check_rc=False)
        _OPTIONS[(name, value)] = (r.returncode == 0,
                                   (r.stdout + r.stderr).strip())
    return _OPTIONS[(name, value)]


def need_option(name, value):
    ok, msg = has_option(name, value)
    if not ok:
        raise TestFailure(f'{NEEDS}: option {name} missing ({name}={value}: '
                          f'{msg[-300:]})')


# ---- the shared origin ------------------------------------------------------

class OriginServer(LoggedNbdkit):
    """nbdkit serving a raw file over a unix socket, every request logged
    (LoggedNbdkit), and on demand: latency (delay filter), a pause
    (pause filter: requests received meanwhile wait for resume()), and
    write errors while fail_writes(True) (error filter, EIO on pwrite).
    Several VMs connect to it: the storage they share."""

    def __init__(self, workdir, name, img, rdelay_ms=0, wdelay_ms=0,
                 pause=False, write_errors=False):
        self.img = img
        filters, args = ['noextents'], []
        self.control = self.trigger = None
        if pause:
            self.control = os.path.join(workdir, f'{name}.pause')
            filters.append('pause')
            args.append(f'pause-control={self.control}')
        if write_errors:
            self.trigger = os.path.join(workdir, f'{name}.fail-writes')
            filters.append('error')
            args += ['error-pwrite-rate=1', 'error-pwrite=EIO',
                     f'error-pwrite-file={self.trigger}']
        if rdelay_ms or wdelay_ms:
            filters.append('delay')
            args += [f'rdelay={rdelay_ms}ms', f'wdelay={wdelay_ms}ms',
                     f'delay-zero={wdelay_ms}ms', f'delay-trim={wdelay_ms}ms']
        self.err_path = os.path.join(workdir, f'{name}.err')
        with open(self.err_path, 'w') as err:
            super().__init__(workdir, name, ('file', f'file={img}'), filters,
                             args, stderr=err)
        self.blockdev = {'driver': 'nbd', 'discard': 'unmap',
                         'server': {'type': 'unix', 'path': self.sock}}
        if self.control:
            wait_for_path(self.control, self.proc)

    def _control(self, c):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        try:
            s.connect(self.control)
            s.sendall(c)
            got = s.recv(1)
        finally:
            s.close()
        check(got == c.upper(), f'nbdkit pause control: {c!r} -> {got!r}')

    def pause(self):
        """Hold every request that arrives from now on; returns once the
        requests received before are done."""
        self._control(b'p')

    def resume(self):
        self._control(b'r')

    def fail_writes(self, on):
        if on:
            open(self.trigger, 'w').close()
        elif os.path.exists(self.trigger):
            os.unlink(self.trigger)

    def count(self, name):
        """Requests of that kind ('Read', 'Write', ...) logged so far."""
        return sum(1 for n, _ in self.requests() if n == name)

    def stop(self):
        PROCS.stop(self.proc)


def file_origin(img):
    return {'driver': 'file', 'filename': img, 'discard': 'unmap'}


# ---- one VM -----------------------------------------------------------------

class VM:
    """qemu-system-x86_64 with disk vd0 on hostcache node hc0 over node
    origin (blockdev arguments without node-name), optionally an SSD
    tier file (node ssd0).  hc: hostcache options by QAPI name.  A source
    starts with -S and gets `cont`; a destination waits with
    `-incoming defer` for Pair.hop()'s migrate-incoming and runs at once
    when the migration completes (no -S: plain QEMU activates its nodes
    and starts the VM itself).  prefix: argv in front of QEMU (taskset)."""

    def __init__(self, workdir, name, origin, hc, ssd=None, incoming=False,
                 mem_mb=64, prefix=()):
        self.name = name
        self.qmp_path = os.path.join(workdir, f'{name}.qmp')
        # qemu-io prints to stdout; QEMU's own messages go to stderr
        self.out_path = os.path.join(workdir, f'{name}.out')
        self.err_path = os.path.join(workdir, f'{name}.err')
        self.out = open(self.out_path, 'w')
        self.err = open(self.err_path, 'w')
        self.pos = 0
        self.origin = origin
        self.hc = {'driver': 'hostcache', 'node-name': 'hc0',
                   'file': 'origin', 'discard': 'unmap', **hc}
        argv = [*prefix, paths.QEMU_SYSTEM, '-machine', 'pc', '-accel', 'tcg',
                '-m', str(mem_mb), '-nodefaults', '-display', 'none',
                *firmware_args(), *([] if incoming else ['-S']),
                '-qmp', f'unix:{self.qmp_path},server=on,wait=off',
                # SeaBIOS leaves vd0 alone (module docstring)
                '-boot', 'strict=on',
                '-blockdev', json.dumps({'driver': 'null-co',
                                         'node-name': 'boot0',
                                         'size': MiB, 'read-zeroes': True}),
                '-device', 'virtio-blk-pci,drive=boot0,id=boot0,bootindex=0',
                '-blockdev', json.dumps({'node-name': 'origin', **origin})]
        if ssd:
            argv += ['-blockdev', json.dumps({
                'driver': 'file', 'node-name': 'ssd0', 'filename': ssd})]
            self.hc['ssd'] = 'ssd0'
        argv += ['-blockdev', json.dumps(self.hc),
                 '-device', 'virtio-blk-pci,drive=hc0,id=vd0']
        if incoming:
            argv += ['-incoming', 'defer']
        self.proc = PROCS.start(argv, stdout=self.out, stderr=self.err)
        self.qmp = connect_qmp(self.qmp_path, self.proc, self.err_path)
        if not incoming:
            self.cmd('cont')

    # -- plumbing
    def log_tail(self, n=3000):
        """QEMU's messages, then the end of what qemu-io printed."""
        with open(self.err_path, errors='replace') as f:
            err = f.read()[-n:]
        with open(self.out_path, errors='replace') as f:
            out = f.read()[-n // 3:]
        return f'stderr:\n{err}\nstdout (qemu-io):\n{out}'

    def died(self, what, exc):
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        raise TestFailure(f'VM {self.name} went away during {what} (exit '
                          f'status {rc}, {exc!r}); its output:\n'
                          f'{self.log_tail()}') from exc

    def cmd(self, name, /, **args):
        try:
            return self.qmp.cmd(name, **args)
        except (ConnectionError, OSError) as e:
            self.died(name, e)

    # -- guest I/O
    def io(self, command):
        """One qemu-io command on vd0; returns what it printed."""
        self.cmd('human-monitor-command',
                 **{'command-line': f'qemu-io -d {DEV} "{command}"'})
        with open(self.out_path, errors='replace') as f:
            f.seek(self.pos)
            text = f.read()
            self.pos = f.tell()
        return text

    def io_ok(self, command):
        """A qemu-io command that must succeed (reads with -P: and match)."""
        out = self.io(command)
        verb = command.split()[0]
        done = {'read': 'read ', 'write': 'wrote ', 'discard': 'discard '}
        ok = ('failed' not in out and 'error' not in out.lower()
              and (verb not in done or re.search(
                  rf'{done[verb]}(\d+)/\1 bytes at offset', out)))
        if not ok:
            raise TestFailure(f'VM {self.name}: qemu-io {command!r}: '
                              f'{out.strip()[-600:]}')
        return out

    def verify(self, model, off=0, end=None, what=''):
        """Read [off, end) and compare with the model, one read -P per run
        of equal sectors."""
        for o, n, p in model.runs(off, end):
            out = self.io(f'read -P {p} {o} {n}')
            if 'Pattern verification failed' in out or not re.search(
                    rf'read {n}/{n} bytes at offset {o}\b', out):
                raise TestFailure(
                    f'{what}: VM {self.name} read {o}+{n} does not hold the '
                    f'model\'s pattern {p:#04x}: {out.strip()[-400:]}')

    # -- state
    def stats(self):
        try:
            return node_stats(self.qmp, 'hc0')
        except (ConnectionError, OSError) as e:
            self.died('query-blockstats', e)

    def status(self):
        return self.cmd('query-status')['status']

    def migration(self):
        return self.cmd('query-migrate')

    def node_active(self):
        for b in self.cmd('query-block'):
            if b.get('qdev') == DEV:
                return b['inserted']['active']
        raise TestFailure(f'VM {self.name}: vd0 not in query-block')

    def write_cache(self):
        for b in self.cmd('query-block'):
            if b.get('qdev') == DEV:
                return b['inserted']['cache']['writeback']
        raise TestFailure(f'VM {self.name}: vd0 not in query-block')

    def reopen(self, **opts):
        """blockdev-reopen hc0 with these options changed (QAPI names)."""
        self.hc.update(opts)
        self.cmd('blockdev-reopen', options=[self.hc])

    def write_back_all(self, timeout=120):
        """Guest flush, then everything written back: max-dirty-age-ms 1
        until nothing is dirty (an SSD journal is written back by age or
        fill only), then the node's own value again."""
        age = self.hc.get('max-dirty-age-ms')
        self.reopen(**{'max-dirty-age-ms': 1})
        self.io_ok('flush')
        poll(f'{self.name}: dirty data written back',
             lambda: self.stats()['dirty-bytes'] == 0, timeout=timeout)
        if age is None:
            del self.hc['max-dirty-age-ms']
            self.cmd('blockdev-reopen', options=[self.hc])
        else:
            self.reopen(**{'max-dirty-age-ms': age})

    # -- end
    def quit(self, timeout=120):
        """QMP quit (a clean close: dirty data written back); returns the
        exit status."""
        try:
            self.qmp.cmd('quit')
        except (ConnectionError, OSError):
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        return rc

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.stop()

    def stop(self):
        self.qmp.close()
        PROCS.stop(self.proc)
        self.out.close()
        self.err.close()


# ---- migrations -------------------------------------------------------------

END = ('completed', 'failed', 'cancelled')


def wait_migration(vm, timeout=300):
    """Poll query-migrate on the source until the migration ends; returns
    its last answer."""
    return poll(f'migration from {vm.name} to end', lambda: (
        lambda st: st if st.get('status') in END else None)(vm.migration()),
        timeout=timeout, interval=0.01)


class Hop:
    """One migration: its final query-migrate and the I/O done meanwhile."""

    def __init__(self, n, src, dst, info, ops):
        self.n, self.src, self.dst = n, src, dst
        self.info, self.ops = info, ops
        self.status = info.get('status')
        self.downtime_ms = info.get('downtime')
        self.total_ms = info.get('total-time')

    def __repr__(self):
        return (f'hop {self.n} {self.src}->{self.dst}: {self.status}, '
                f'downtime {self.downtime_ms} ms, total {self.total_ms} ms, '
                f'I/O during: {self.ops}')


class Pair:
    """Two host slots sharing one origin; the VM lives in one of them.
    Each slot has its own SSD tier file when ssd_size is given (two
    processes never share a tier file)."""

    def __init__(self, workdir, origin, hc, ssd_size=None, mem_mb=64,
                 prefix=()):
        self.workdir, self.origin, self.hc = workdir, origin, hc
        self.mem_mb, self.prefix = mem_mb, prefix
        self.ssd = [None, None]
        if ssd_size:
            for i, slot in enumerate('ab'):
                self.ssd[i] = os.path.join(workdir, f'slot-{slot}.ssd')
                with open(self.ssd[i], 'wb') as f:
                    f.truncate(ssd_size)        # blank: formatted at open
        self.slot = 0
        self.n = 0
        self.vm = None
        self.hops = []

    def _new(self, slot, incoming, hc=None, origin=None):
        self.n += 1
        return VM(self.workdir, f'vm{self.n}-{"ab"[slot]}',
                  origin or self.origin, dict(hc or self.hc), self.ssd[slot],
                  incoming, self.mem_mb, self.prefix)

    def start(self):
        self.vm = self._new(self.slot, False)
        return self.vm

    def destination(self, hc=None, origin=None):
        """A fresh -incoming process in the other slot (hostcache options
        hc and origin node, or the pair's)."""
        return self._new(1 - self.slot, True, hc, origin)

    def begin(self, dst, bandwidth=None, caps=()):
        """Start migrating self.vm to dst over a fresh unix socket."""
        src = self.vm
        if caps:
            src.cmd('migrate-set-capabilities', capabilities=[
                {'capability': c, 'state': True} for c in caps])
        if bandwidth:
            src.cmd('migrate-set-parameters', **{'max-bandwidth': bandwidth})
        sock = os.path.join(self.workdir, f'mig{self.n}.sock')
        dst.cmd('migrate-incoming', uri=f'unix:{sock}')
        src.cmd('migrate', uri=f'unix:{sock}')

    def hop(self, during=None, ops_active=20, ops_pre=3, bandwidth=None,
            dst=None, timeout=300, quit_source=True):
        """Migrate the VM to a fresh process in the other slot; quit the
        old one; return the Hop.  during(vm, phase) runs one I/O step on
        the source: up to ops_active times while the migration is
        'active', then ops_pre times while it is held in 'pre-switchover'
        (before inactivation).  bandwidth: max-bandwidth (bytes/s) while
        the I/O runs, to make pre-copy last; lifted afterwards.
        quit_source False: the caller quits hop.src_vm (the new VM can be
        measured from the moment it runs)."""
        src = self.vm
        dst = dst or self.destination()
        caps = ['pause-before-switchover'] if during else []
        self.begin(dst, bandwidth if during else None, caps)
        ops = {'active': 0, 'pre-switchover': 0}
        lifted = not (during and bandwidth)
        continued = False
        deadline = time.monotonic() + timeout
        while True:
            st = src.migration()
            status = st.get('status')
            if status in END:
                t_end = time.monotonic()
                break
            check(time.monotonic() < deadline,
                  f'migration {src.name} -> {dst.name} did not end: {st}')
            if status == 'pre-switchover' and not continued:
                for _ in range(ops_pre):
                    during(src, status)
                    ops[status] += 1
                src.cmd('migrate-continue', state='pre-switchover')
                continued = True
            elif status == 'active' and during and ops['active'] < ops_active:
                during(src, status)
                ops['active'] += 1
            else:
                if not lifted and status != 'setup':
                    src.cmd('migrate-set-parameters',
                            **{'max-bandwidth': 1 << 30})
                    lifted = True
                time.sleep(0.005)
        if status != 'completed':
            raise TestFailure(
                f'migration {src.name} -> {dst.name}: {status}: '
                f'{st.get("error-desc")}\nsource output:\n'
                f'{src.log_tail()}\ndestination output:\n{dst.log_tail()}')
        poll(f'{dst.name} to leave inmigrate',
             lambda: dst.status() not in ('inmigrate', 'finish-migrate'))
        check(dst.status() == 'running',
              f'{dst.name} after the migration: {dst.status()}')
        check(src.status() == 'postmigrate',
              f'{src.name} after the migration: {src.status()}')
        hop = Hop(len(self.hops) + 1, src.name, dst.name, st, ops)
        hop.t_end, hop.src_vm = t_end, src
        hop.src_stats = src.stats()     # inactive, still readable
        self.hops.append(hop)
        if quit_source:
            rc = src.quit()
            check(rc == 0, f'{src.name} (migrated out) exited {rc}: '
                  f'{src.log_tail()}')
        self.vm = dst
        self.slot = 1 - self.slot
        return hop

    def summary(self):
        dts = sorted(h.downtime_ms for h in self.hops if h.downtime_ms
                     is not None)
        tts = sorted(h.total_ms for h in self.hops if h.total_ms is not None)
        if not dts:
            return 'no migrations'
        return (f'{len(self.hops)} migrations: downtime ms min/med/max '
                f'{dts[0]}/{dts[len(dts) // 2]}/{dts[-1]}, total ms '
                f'{tts[0]}/{tts[len(tts) // 2]}/{tts[-1]}')


# ---- random guest I/O -------------------------------------------------------

class Workload:
    """Random writes, write-zeroes, discards, flushes and checked reads
    against a VM; the model is updated when each command completed.
    origin_path: the raw file behind the origin (discards take what it
    then holds)."""

    def __init__(self, rng, model, origin_path, max_blocks=16):
        self.rng, self.model, self.origin_path = rng, model, origin_path
        self.max_blocks = max_blocks
        self.counts = {}

    def extent(self):
        r, size = self.rng, self.model.size
        if r.random() < 0.75:           # whole cache blocks
            n = r.randrange(1, self.max_blocks + 1) * BS
            off = r.randrange(0, size // BS) * BS
        else:                           # sectors, across block boundaries
            n = r.randrange(1, self.max_blocks * BS // SECTOR) * SECTOR
            off = r.randrange(0, size // SECTOR) * SECTOR
        return off, min(n, size - off)

    def write(self, vm, off, ln, pat=None):
        pat = pat or self.rng.randrange(1, 256)
        vm.io_ok(f'write -P {pat} {off} {ln}')
        self.model.write(off, ln, pat)

    def step(self, vm):
        r = self.rng.random()
        off, ln = self.extent()
        if r < 0.45:
            kind = 'write'
            self.write(vm, off, ln)
        elif r < 0.55:
            kind = 'write-zeroes'
            vm.io_ok(f'write -z{self.rng.choice(["", " -u"])} {off} {ln}')
            self.model.write(off, ln, 0)
        elif r < 0.65:
            kind = 'discard'
            vm.io_ok(f'discard {off} {ln}')
            self.model.from_bytes(off, pread_file(self.origin_path, off,
                                                  ln))
            vm.verify(self.model, off, off + ln, 'read after a discard')
        elif r < 0.75:
            kind = 'flush'
            vm.io_ok('flush')
        else:
            kind = 'read'
            vm.verify(self.model, off, off + ln, 'random read')
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return kind

    def steps(self, vm, n):
        for _ in range(n):
            self.step(vm)


# ---- hot sets and hit ratios ------------------------------------------------

def read_blocks(vm, model, blocks, what='hot set'):
    """Read these cache blocks once each (checked against the model);
    returns the byte hit ratio of those reads from the node's counters."""
    before = vm.stats()
    for b in blocks:
        vm.verify(model, b * BS, (b + 1) * BS, what)
    after = vm.stats()
    hits = after['read-hit-bytes'] - before['read-hit-bytes']
    misses = after['read-miss-bytes'] - before['read-miss-bytes']
    return hits / (hits + misses) if hits + misses else 0.0
