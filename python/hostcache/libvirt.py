"""A real libvirt for the hostcache tests (standard library only).

Libvirtd: a private, test-owned libvirtd + virtlogd (root, no systemd) in
their own mount namespace.  Private bind mounts over /etc/libvirt,
/var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /run/libvirt, the
client sockets in the test's work dir, own pid files, own host UUID, no
cgroups: a libvirtd the user runs is never touched, and the test stops
exactly what it started, by pid (libvirtd, virtlogd, every QEMU of its
domains), even when it fails (the instance is registered in procs.PROCS).

Domain helpers: domain_xml() (a TCG domain running the project's
qemu-system-x86_64, virtio disks with alias ua-*, serial console to a file),
QMP and HMP through `virsh qemu-monitor-command`, the block graph.

The hostcache placement recipes that docs/LIBVIRT.md describes and
hostcached copies:
  persistent   predict_top_nodes() + add_hostcache_xml() / remove_hostcache_xml()
  live         insert_live(), reopen_live(), remove_live()
  migration    migrate() between two private libvirtds
"""

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET

from hostcache import guest, paths, runner
from hostcache.check import TestFailure, check_eq
from hostcache.lines import complete_lines, complete_text
from hostcache.procs import (PROCS, ProcessGroup, cmdline, kill_pid,
                             pid_alive, read_pid, run, tmpdir)
from hostcache.qemu import firmware_args
from hostcache.qmp import QMPError

LIBVIRTD = '/usr/sbin/libvirtd'
VIRTLOGD = '/usr/sbin/virtlogd'
VIRSH = '/usr/bin/virsh'
UNSHARE = '/usr/bin/unshare'
QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0'
GUEST_DIR = guest.GUEST_DIR
GUEST_KERNEL = os.path.join(GUEST_DIR, 'vmlinuz')
GUEST_INITRD = os.path.join(GUEST_DIR, 'initramfs.cpio.gz')

ET.register_namespace('qemu', QEMU_NS)

# The system directories a privileged libvirtd uses; each gets a private
# bind mount inside the daemon's mount namespace.
PRIVATE_DIRS = {
    'etc': '/etc/libvirt',
    'lib': '/var/lib/libvirt',
    'cache': '/var/cache/libvirt',
    'log': '/var/log/libvirt',
    'run': '/run/libvirt',
}


def unavailable():
    """Why a private libvirtd cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return 'needs root (mount namespace, privileged libvirtd)'
    for b in (LIBVIRTD, VIRTLOGD, VIRSH, UNSHARE):
        if not os.access(b, os.X_OK):
            return f'{b} missing (run scripts/setup-deps.sh)'
    return None


def guest_available():
    """The tiny test guest, built when missing (scripts/make-guest.sh is
    instant when it is up to date): no test depends on another having
    built it first."""
    guest.build_guest()
    return os.path.exists(GUEST_KERNEL) and os.path.exists(GUEST_INITRD)


class VirshError(TestFailure):
    pass


class Libvirtd(ProcessGroup):
    """A private libvirtd + virtlogd; see the module docstring.

    uri is what clients (virsh -c, virConnectOpen) use.  Stopped with stop()
    or, at the latest, by procs.PROCS when the test ends.
    """

    def __init__(self, workdir=None, name='lv', host_uuid=None,
                 migration_ports=None, cache_dir=None, hooks=None,
                 start_timeout=90, binds=None):
        why = unavailable()
        if why:
            raise TestFailure(f'private libvirtd: {why}')
        self.name = name
        self.dir = os.path.join(workdir or tmpdir('hclv-'), name)
        self.sock_dir = os.path.join(self.dir, 'sock')
        self.paths = {k: os.path.join(self.dir, k) for k in PRIVATE_DIRS}
        if cache_dir:
            self.paths['cache'] = cache_dir
        for p in list(self.paths.values()) + [self.sock_dir]:
            os.makedirs(p, exist_ok=True)
        os.makedirs(os.path.join(self.paths['etc'], 'qemu'), exist_ok=True)
        self.host_uuid = host_uuid or str(uuid.uuid4())
        self.uri = f'qemu:///system?socket={self.sock_dir}/libvirt-sock'
        self.libvirtd_pid_file = os.path.join(self.dir, 'libvirtd.pid')
        self.virtlogd_pid_file = os.path.join(self.dir, 'virtlogd.pid')
        self.daemon_log = os.path.join(self.dir, 'libvirtd.log')
        self.qemu_pids = {}  # pid -> domain name, every QEMU seen running
        # binds: {path: directory}: the daemon and its QEMUs see `directory`
        # at `path` (a "host" of its own storage: a migration with
        # --copy-storage-all needs the disk at the same path on both).
        self.binds = dict(binds or {})
        self.proc = None
        self.virtlogd_pid = None
        self._stderr = None
        self._stopped = False
        self._write_config(migration_ports)
        # hooks: {'qemu': script text} -> /etc/libvirt/hooks/qemu, or
        # {'qemu.d/NAME': text} -> /etc/libvirt/hooks/qemu.d/NAME (libvirtd
        # looks for hooks when it starts).
        os.makedirs(os.path.join(self.paths['etc'], 'hooks'), exist_ok=True)
        for hook, text in (hooks or {}).items():
            hp = os.path.join(self.paths['etc'], 'hooks', hook)
            os.makedirs(os.path.dirname(hp), exist_ok=True)
            with open(hp, 'w') as f:
                f.write(text)
            os.chmod(hp, 0o755)
        # Also at interpreter exit, before the rmtree of any work dir made
        # earlier (atexit runs in reverse order): the teardown needs the
        # sockets and pid files in it.
        atexit.register(self.stop)
        self._start(start_timeout)

    # ---- set-up -------------------------------------------------------------

    def _write_config(self, migration_ports):
        etc = self.paths['etc']
        with open(os.path.join(etc, 'libvirtd.conf'), 'w') as f:
            f.write(f'unix_sock_dir = "{self.sock_dir}"\n'
                    'unix_sock_group = "root"\n'
                    'auth_unix_rw = "none"\n'
                    'auth_unix_ro = "none"\n'
                    f'host_uuid = "{self.host_uuid}"\n'
                    f'log_outputs = "3:file:{self.daemon_log}"\n')
        with open(os.path.join(etc, 'virtlogd.conf'), 'w') as f:
            f.write(f'log_outputs = "3:file:{self.dir}/virtlogd.log"\n')
        # QEMU runs as root (the test owns every file; no DAC relabelling of
        # images), and without cgroups: two private daemons (migration) run
        # domains of the same name, and nothing here touches the host's
        # machine.slice.
        qconf = ['user = "root"', 'group = "root"',
                 'cgroup_controllers = [ ]', 'remember_owner = 0']
        if migration_ports:
            lo, hi = migration_ports
            qconf += [f'migration_port_min = {lo}',
                      f'migration_port_max = {hi}']
        with open(os.path.join(etc, 'qemu.conf'), 'w') as f:
            f.write('\n'.join(qconf) + '\n')

    def _start(self, timeout):
        script = ['set -e']
        for key, target in PRIVATE_DIRS.items():
            # Creates an empty /run/libvirt on the host if none exists; the
            # mount itself stays private to the namespace.
            script.append(f'mkdir -p {target}')
            script.append(f'mount --bind "{self.paths[key]}" {target}')
        for target, source in self.binds.items():
            script.append(f'mkdir -p "{target}"')
            script.append(f'mount --bind "{source}" "{target}"')
        script.append(f'{VIRTLOGD} --daemon --pid-file '
                      f'"{self.virtlogd_pid_file}" '
                      f'--config "{self.paths["etc"]}/virtlogd.conf"')
        script.append(f'exec {LIBVIRTD} --pid-file "{self.libvirtd_pid_file}" '
                      f'--config "{self.paths["etc"]}/libvirtd.conf"')
        self.stderr_path = os.path.join(self.dir, 'libvirtd.stderr')
        self._stderr = open(self.stderr_path, 'w')
        # unshare(1) without --fork execs sh in the same process, and sh
        # execs libvirtd: self.proc.pid is libvirtd's pid.
        self.proc = subprocess.Popen(
            [UNSHARE, '--mount', '--propagation', 'private', 'sh', '-c',
             '\n'.join(script)],
            stdin=subprocess.DEVNULL, stdout=self._stderr,
            stderr=subprocess.STDOUT)
        PROCS.procs.append(self)
        sock = os.path.join(self.sock_dir, 'libvirt-sock')
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise TestFailure(
                    f'libvirtd exited {self.proc.returncode}:\n'
                    f'{self._tail(self.stderr_path)}'
                    f'{self._tail(self.daemon_log)}')
            if os.path.exists(sock):
                # 'list', not 'version': version probes Debian's default
                # emulator's capabilities (seconds).
                r = subprocess.run([VIRSH, '-c', self.uri, 'list', '--all'],
                                   capture_output=True, text=True,
                                   timeout=timeout)
                if r.returncode == 0:
                    break
            if time.monotonic() > deadline:
                raise TestFailure('libvirtd did not answer in time:\n'
                                  f'{self._tail(self.daemon_log)}')
            time.sleep(0.1)
        self.virtlogd_pid = read_pid(self.virtlogd_pid_file)

    @staticmethod
    def _tail(path, n=3000):
        try:
            with open(path) as f:
                return f.read()[-n:]
        except OSError:
            return ''

    # ---- procs.ProcessGroup -------------------------------------------------

    def _alive_pids(self):
        pids = []
        if self.proc is not None and self.proc.poll() is None:
            pids.append(self.proc.pid)
        if self.virtlogd_pid and pid_alive(self.virtlogd_pid):
            pids.append(self.virtlogd_pid)
        pids += [p for p in self._our_qemu_pids() if pid_alive(p)]
        return pids

    def running(self):
        return bool(self._alive_pids())

    # ---- teardown -----------------------------------------------------------

    def _our_qemu_pids(self):
        """QEMU pids of this daemon: recorded at start, plus the pid files
        in its private run dir; a pid counts only while its command line
        still names the domain (no reused pid is ever signalled)."""
        run_qemu = os.path.join(self.paths['run'], 'qemu')
        cand = dict(self.qemu_pids)
        if os.path.isdir(run_qemu):
            for fn in os.listdir(run_qemu):
                if fn.endswith('.pid'):
                    pid = read_pid(os.path.join(run_qemu, fn))
                    if pid:
                        cand.setdefault(pid, fn[:-4])
        return [pid for pid, dom in cand.items()
                if f'guest={dom},' in cmdline(pid)]

    def stop(self):
        """Destroy every running domain, then stop libvirtd, any QEMU left,
        and virtlogd, each by pid."""
        if self._stopped:
            return
        self._stopped = True
        qemus = set(self._our_qemu_pids())
        if self.proc is not None and self.proc.poll() is None:
            try:
                for dom in self.list_domains('--state-running', timeout=30) + \
                        self.list_domains('--state-paused', timeout=30):
                    self.virsh('destroy', dom, check=False, timeout=30)
            except (subprocess.TimeoutExpired, TestFailure):
                pass
        qemus |= set(self._our_qemu_pids())
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in qemus:
            kill_pid(pid)
        self.virtlogd_pid = self.virtlogd_pid or \
            read_pid(self.virtlogd_pid_file)
        if self.virtlogd_pid and \
                self.virtlogd_pid_file in cmdline(self.virtlogd_pid):
            kill_pid(self.virtlogd_pid)
        if self._stderr is not None:
            self._stderr.close()
        if self in PROCS.procs:
            PROCS.procs.remove(self)

    # ---- virsh --------------------------------------------------------------

    def virsh(self, *args, check=True, timeout=120, input=None):
        r = subprocess.run([VIRSH, '-q', '-c', self.uri, *args],
                           capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            raise VirshError(f'virsh {" ".join(args[:3])} exited '
                             f'{r.returncode}: {r.stderr.strip()}')
        return r

    def list_domains(self, state='--all', timeout=120):
        r = self.virsh('list', '--name', state, timeout=timeout)
        return [n for n in r.stdout.split() if n]

    def define(self, xml):
        """Define a persistent domain from XML text; returns its name."""
        path = os.path.join(self.dir, f'define-{time.monotonic_ns()}.xml')
        with open(path, 'w') as f:
            f.write(xml)
        self.virsh('define', path)
        return ET.fromstring(xml).findtext('name')

    def start_domain(self, dom, paused=False):
        self.virsh('start', dom, *(['--paused'] if paused else []))
        self._remember_qemu(dom)

    def create(self, xml, paused=False):
        """Start a transient domain; returns its name."""
        path = os.path.join(self.dir, f'create-{time.monotonic_ns()}.xml')
        with open(path, 'w') as f:
            f.write(xml)
        self.virsh('create', path, *(['--paused'] if paused else []))
        name = ET.fromstring(xml).findtext('name')
        self._remember_qemu(name)
        return name

    def _remember_qemu(self, dom):
        pid = self.qemu_pid(dom)
        if pid:
            self.qemu_pids[pid] = dom

    def qemu_pid(self, dom):
        return read_pid(os.path.join(self.paths['run'], 'qemu',
                                      f'{dom}.pid'))

    def destroy(self, dom):
        self.virsh('destroy', dom)

    def undefine(self, dom):
        self.virsh('undefine', dom)

    def dumpxml(self, dom, inactive=False):
        return self.virsh('dumpxml', dom,
                          *(['--inactive'] if inactive else [])).stdout

    def domstate(self, dom):
        return self.virsh('domstate', '--reason', dom).stdout.strip()

    def domain_log(self, dom):
        """The domain's log (QEMU's command line and stderr, HMP qemu-io
        output) as virtlogd wrote it."""
        return self._tail(os.path.join(self.paths['log'], 'qemu',
                                       f'{dom}.log'), n=10 ** 7)

    # ---- QEMU monitor through libvirt ---------------------------------------

    def qmp(self, dom, cmd, **args):
        """Run a QMP command through virDomainQemuMonitorCommand; returns
        its 'return' or raises qmp.QMPError."""
        msg = {'execute': cmd}
        if args:
            msg['arguments'] = args
        r = self.virsh('qemu-monitor-command', dom, '--pretty',
                       json.dumps(msg), check=False)
        out = r.stdout.strip()
        if r.returncode != 0 and not out.startswith('{'):
            raise VirshError(f'qemu-monitor-command {cmd}: {r.stderr.strip()}')
        reply = json.loads(out)
        if 'error' in reply:
            raise QMPError(cmd, reply['error'])
        return reply['return']

    def hmp(self, dom, line):
        return self.virsh('qemu-monitor-command', dom, '--hmp', line).stdout

    def qemu_io(self, dom, alias, command):
        """HMP qemu-io through the device's backend (its output goes to the
        domain log; returns the log text it added)."""
        log = os.path.join(self.paths['log'], 'qemu', f'{dom}.log')
        before = os.path.getsize(log)
        self.hmp(dom, f'qemu-io -d {backend_path(alias)} "{command}"')
        # virtlogd copies QEMU's stderr asynchronously (complete lines
        # only: the result line may still be being written).
        deadline = time.monotonic() + 10
        while True:
            text = complete_text(log, before)
            if re.search(r'ops/sec|failed|error|Pattern', text, re.I) or \
                    time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    # ---- events -------------------------------------------------------------

    def events(self):
        """Record libvirt events (virsh event --all --loop) until stopped."""
        return EventLog(self)


class EventLog:
    def __init__(self, lv):
        self.path = os.path.join(lv.dir, f'events-{time.monotonic_ns()}.txt')
        self.file = open(self.path, 'w')
        self.proc = PROCS.start([VIRSH, '-c', lv.uri, 'event', '--all',
                                 '--loop', '--timestamp'],
                                stdout=self.file, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # the registration must be in place before use

    def lines(self):
        """The events virsh printed in full so far."""
        return [ln for ln in complete_lines(self.path) if ln.strip()]

    def wait_for(self, pattern, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ln in self.lines():
                if re.search(pattern, ln):
                    return ln
            time.sleep(0.1)
        raise TestFailure(f'no event matching {pattern!r}; got:\n' +
                          '\n'.join(self.lines()))

    def stop(self):
        PROCS.stop(self.proc)
        self.file.close()
        return self.lines()


# ---- domain XML ---------------------------------------------------------------

class Disk:
    """A disk of a test domain: by default a virtio disk on a file.

    nbd=(socket, export) makes it a network disk on an NBD unix socket;
    path=None without nbd is an empty drive (e.g. device='cdrom',
    bus='ide').  The alias should start with 'ua-' (libvirt keeps such
    user aliases; the device id in QEMU is the alias).
    """

    def __init__(self, path, fmt='raw', alias='ua-disk0', target='vda',
                 cache='none', extra_driver_attrs=None, device='disk',
                 bus='virtio', nbd=None, readonly=False):
        self.path = path
        self.fmt = fmt
        self.alias = alias
        self.target = target
        self.cache = cache
        self.extra = extra_driver_attrs or {}
        self.device = device
        self.bus = bus
        self.nbd = nbd
        self.readonly = readonly

    def xml(self):
        attrs = ''.join(f" {k}='{v}'" for k, v in self.extra.items())
        kind = 'network' if self.nbd else 'file'
        if self.nbd:
            sock, export = self.nbd
            source = (f"      <source protocol='nbd' name='{export}'>\n"
                      f"        <host transport='unix' socket='{sock}'/>\n"
                      "      </source>\n")
        elif self.path:
            source = f"      <source file='{self.path}'/>\n"
        else:
            source = ''
        return (f"    <disk type='{kind}' device='{self.device}'>\n"
                f"      <driver name='qemu' type='{self.fmt}' "
                f"cache='{self.cache}'{attrs}/>\n"
                f"{source}"
                f"      <target dev='{self.target}' bus='{self.bus}'/>\n"
                + ("      <readonly/>\n" if self.readonly else '') +
                f"      <alias name='{self.alias}'/>\n"
                f"    </disk>\n")


def domain_xml(name, disks, console=None, guest_cmdline=None, memory_mib=256,
               emulator=None, qemu_args=None, on_poweroff='destroy'):
    """A TCG domain (<domain type='qemu'>) running the project's QEMU.

    guest_cmdline: boots build/guest (vmlinuz + initramfs) with that kernel
    command line (e.g. 'hc.job=hold'); None: no OS, the domain sits in
    SeaBIOS (enough for block-graph work).  console: file for ttyS0.
    qemu_args: extra <qemu:commandline> arguments (firmware_args() are
    always added when the binary needs them).  on_poweroff='restart'
    keeps the QEMU process (and its block graph and counters) when the
    guest powers off: libvirt resets the guest ('preserve' is refused by
    the QEMU driver).
    """
    # libvirt refuses on_poweroff=restart with on_reboot=destroy.
    on_reboot = 'restart' if on_poweroff == 'restart' else 'destroy'
    emulator = emulator or paths.QEMU_SYSTEM
    boot = ''
    if guest_cmdline is not None:
        boot = (f'    <kernel>{GUEST_KERNEL}</kernel>\n'
                f'    <initrd>{GUEST_INITRD}</initrd>\n'
                f'    <cmdline>console=ttyS0 quiet panic=-1 '
                f'{guest_cmdline}</cmdline>\n')
    serial = ''
    if console:
        serial = ("    <serial type='file'>\n"
                  f"      <source path='{console}' append='on'/>\n"
                  "      <target port='0'/>\n"
                  "    </serial>\n")
    cmdline = _qemu_commandline(qemu_args)
    return (f"<domain type='qemu' xmlns:qemu='{QEMU_NS}'>\n"
            f"  <name>{name}</name>\n"
            f"  <memory unit='MiB'>{memory_mib}</memory>\n"
            "  <vcpu>1</vcpu>\n"
            "  <os>\n"
            "    <type arch='x86_64' machine='pc'>hvm</type>\n"
            f"{boot}"
            "  </os>\n"
            "  <features><acpi/></features>\n"
            f"  <on_poweroff>{on_poweroff}</on_poweroff>\n"
            f"  <on_reboot>{on_reboot}</on_reboot>\n"
            "  <on_crash>destroy</on_crash>\n"
            "  <devices>\n"
            f"    <emulator>{emulator}</emulator>\n"
            + ''.join(d.xml() for d in disks) +
            f"{serial}"
            "    <memballoon model='none'/>\n"
            "  </devices>\n"
            f"{cmdline}"
            "</domain>\n")


def virt_install_xml(name, disks, graphics='vnc', console_log=None,
                     guest_cmdline='hc.job=hold', memory_mib=512,
                     emulator=None, qemu_args=None):
    """A domain shaped like virt-install's default for a Linux guest (q35,
    the devices virt-install adds), under TCG (<domain type='qemu'>: KVM
    does not run guests on this machine) and booting the tiny test guest
    (build/guest) directly.

    graphics='vnc': VNC on loopback, virtio video, a USB tablet on
    qemu-xhci.  graphics='spice': SPICE instead, plus what virt-install
    adds with it: the spicevmc agent channel, two USB redirection devices,
    ich9 sound with SPICE audio.  Both: virtio-net on user networking
    (slirp), a serial console (pty, logged to console_log), the guest
    agent's virtio-serial channel, a virtio RNG and balloon.
    """
    emulator = emulator or paths.QEMU_SYSTEM
    if graphics == 'vnc':
        gfx = ("    <graphics type='vnc' port='-1' autoport='yes'>\n"
               "      <listen type='address' address='127.0.0.1'/>\n"
               "    </graphics>\n"
               "    <audio id='1' type='none'/>\n")
    elif graphics == 'spice':
        gfx = ("    <graphics type='spice' port='-1' autoport='yes'>\n"
               "      <listen type='address' address='127.0.0.1'/>\n"
               "      <image compression='off'/>\n"
               "    </graphics>\n"
               "    <channel type='spicevmc'>\n"
               "      <target type='virtio' name='com.redhat.spice.0'/>\n"
               "    </channel>\n"
               "    <sound model='ich9'/>\n"
               "    <audio id='1' type='spice'/>\n"
               "    <redirdev bus='usb' type='spicevmc'/>\n"
               "    <redirdev bus='usb' type='spicevmc'/>\n")
    else:
        raise ValueError(graphics)
    log = (f"      <log file='{_xml_attr(console_log)}' append='off'/>\n"
           if console_log else '')
    cmdline = _qemu_commandline(qemu_args)
    return (f"<domain type='qemu' xmlns:qemu='{QEMU_NS}'>\n"
            f"  <name>{name}</name>\n"
            f"  <memory unit='MiB'>{memory_mib}</memory>\n"
            "  <vcpu>1</vcpu>\n"
            "  <os>\n"
            "    <type arch='x86_64' machine='q35'>hvm</type>\n"
            f"    <kernel>{GUEST_KERNEL}</kernel>\n"
            f"    <initrd>{GUEST_INITRD}</initrd>\n"
            f"    <cmdline>console=ttyS0 quiet panic=-1 {guest_cmdline}"
            "</cmdline>\n"
            "    <boot dev='hd'/>\n"
            "  </os>\n"
            "  <features><acpi/><apic/><vmport state='off'/></features>\n"
            "  <clock offset='utc'>\n"
            "    <timer name='rtc' tickpolicy='catchup'/>\n"
            "    <timer name='pit' tickpolicy='delay'/>\n"
            "    <timer name='hpet' present='no'/>\n"
            "  </clock>\n"
            "  <on_poweroff>destroy</on_poweroff>\n"
            "  <on_reboot>restart</on_reboot>\n"
            "  <on_crash>destroy</on_crash>\n"
            "  <pm><suspend-to-mem enabled='no'/>"
            "<suspend-to-disk enabled='no'/></pm>\n"
            "  <devices>\n"
            f"    <emulator>{emulator}</emulator>\n"
            + ''.join(d.xml() for d in disks) +
            "    <controller type='usb' model='qemu-xhci' ports='15'/>\n"
            "    <interface type='user'>\n"
            "      <model type='virtio'/>\n"
            "    </interface>\n"
            "    <serial type='pty'>\n"
            f"{log}"
            "      <target port='0'/>\n"
            "    </serial>\n"
            "    <console type='pty'/>\n"
            "    <channel type='unix'>\n"
            "      <source mode='bind'/>\n"
            "      <target type='virtio' name='org.qemu.guest_agent.0'/>\n"
            "    </channel>\n"
            "    <input type='tablet' bus='usb'/>\n"
            f"{gfx}"
            "    <video>\n"
            "      <model type='virtio' heads='1' primary='yes'/>\n"
            "    </video>\n"
            "    <memballoon model='virtio'/>\n"
            "    <rng model='virtio'>\n"
            "      <backend model='random'>/dev/urandom</backend>\n"
            "    </rng>\n"
            "  </devices>\n"
            f"{cmdline}"
            "</domain>\n")


def _qemu_commandline(qemu_args):
    """<qemu:commandline> with firmware_args() and qemu_args ('' if none)."""
    args = list(firmware_args()) + list(qemu_args or [])
    if not args:
        return ''
    return ('  <qemu:commandline>\n' +
            ''.join(f"    <qemu:arg value='{_xml_attr(a)}'/>\n"
                    for a in args) +
            '  </qemu:commandline>\n')


def main(namespace):
    """runner.main() of a test script that needs a private libvirtd: exit
    77 (meson's skip) when one cannot run here."""
    why = unavailable()
    if why:
        print(f'SKIP: {why}')
        sys.exit(77)
    runner.main(namespace)


def _xml_attr(s):
    return (s.replace('&', '&amp;').replace("'", '&apos;')
            .replace('<', '&lt;').replace('>', '&gt;'))


# ---- block graph ----------------------------------------------------------------

def backend_path(alias):
    """QOM path of a virtio-blk device's backend (the object whose 'drive'
    property names the root block node)."""
    return f'/machine/peripheral/{alias}/virtio-backend'


def block_nodes(lv, dom):
    """node-name -> query-named-block-nodes entry."""
    return {n['node-name']: n for n in
            lv.qmp(dom, 'query-named-block-nodes', flat=True)}


def device_root(lv, dom, alias):
    """Name of the block node the device's BlockBackend points at."""
    for b in lv.qmp(dom, 'query-block'):
        if b.get('qdev') in (backend_path(alias), alias):
            return b['inserted']['node-name']
    raise TestFailure(f'{dom}: no block device {alias}')


def graph(lv, dom):
    """x-debug-query-block-graph as (nodes by id, edges)."""
    g = lv.qmp(dom, 'x-debug-query-block-graph')
    return {n['id']: n for n in g['nodes']}, g['edges']


def child_of(lv, dom, node, role='file'):
    """Name of node's child in the given role (None if none)."""
    nodes, edges = graph(lv, dom)
    ids = {n['name']: i for i, n in nodes.items()}
    for e in edges:
        if e['parent'] == ids.get(node) and e['name'] == role:
            return nodes[e['child']]['name']
    return None


def parents_of(lv, dom, node):
    """[(parent name, parent type, role)] of a node."""
    nodes, edges = graph(lv, dom)
    ids = {n['name']: i for i, n in nodes.items()}
    return [(nodes[e['parent']]['name'], nodes[e['parent']]['type'],
             e['name']) for e in edges if e['child'] == ids.get(node)]


def hostcache_stats(lv, dom, node):
    """driver-specific query-blockstats of a hostcache node."""
    for s in lv.qmp(dom, 'query-blockstats', **{'query-nodes': True}):
        if s.get('node-name') == node:
            return s.get('driver-specific')
    raise TestFailure(f'{dom}: node {node} not in query-blockstats')


# ---- recipe: persistent placement (domain XML) -----------------------------------

def image_chain(path, fmt):
    """[(path, format)] of an image and its backing chain, top first."""
    if fmt == 'raw':
        return [(path, 'raw')]
    r = run([paths.QEMU_IMG, 'info', '--backing-chain', '--output=json',
             '-f', fmt, '-U', path])
    return [(i['filename'], i['format']) for i in json.loads(r.stdout)]


def _needs_format_layer(fmt, driver):
    # libvirt (>= 9.x; verified with 11.3) opens a raw image with the
    # storage node alone unless a feature needs the raw driver (an offset /
    # size <slice>, LUKS encryption).  test_libvirt checks this rule against
    # the live graph.
    return fmt != 'raw'


def predict_top_nodes(xml):
    """alias -> the node name libvirt will give the top of each disk.

    xml must be libvirt's own copy of the definition (virsh dumpxml
    --inactive after define): libvirt reorders <disk>s when it parses them
    (each disk goes before the first disk of its bus with a higher target
    name), so the order of the XML one defined may not be libvirt's.

    Rule (libvirt 11.3, checked against the live graph in test_libvirt):
    at every start libvirt numbers storage sources 1, 2, ... walking the
    <disk>s from the LAST to the first; within a disk the top image gets
    the next index, then each backing image in order; a disk without a
    source (an empty cdrom) uses up one index too, though it has no node.
    Image N is 'libvirt-N-format'
    (format driver) over 'libvirt-N-storage' (protocol driver: file, nbd,
    host_device...); a raw image without slice or encryption has only
    'libvirt-N-storage'.  Backing chains of files are read from the image
    headers; network disks count as one image.
    """
    root = ET.fromstring(xml)
    index = 0
    tops = {}
    for d in reversed(root.findall('./devices/disk')):
        src = d.find('source')
        drv = d.find('driver')
        alias = d.find('alias')
        fmt = drv.get('type', 'raw') if drv is not None else 'raw'
        if src is None or not (src.get('file') or src.get('dev') or
                               src.get('protocol')):
            index += 1  # an empty drive still uses up an index
            continue
        path = src.get('file') or src.get('dev')
        chain = image_chain(path, fmt) if path else [(None, fmt)]
        top = index + 1
        index += len(chain)
        kind = 'format' if _needs_format_layer(fmt, drv) else 'storage'
        if alias is not None:
            tops[alias.get('name')] = f'libvirt-{top}-{kind}'
    return tops


def add_hostcache_xml(xml, placements):
    """The domain XML with hostcache filters placed under devices.

    placements: [{'alias': 'ua-disk0', 'node': 'hc-vda',
                  'file': 'libvirt-1-format', 'opts': {'mode': ...}}]
    For each: a <qemu:commandline> '-blockdev' JSON for the filter over
    'file', and a <qemu:override> setting the device's 'drive' to it.
    """
    root = ET.fromstring(xml)
    q = f'{{{QEMU_NS}}}'
    cmd = root.find(f'{q}commandline')
    if cmd is None:
        cmd = ET.SubElement(root, f'{q}commandline')
    ovr = root.find(f'{q}override')
    if ovr is None:
        ovr = ET.SubElement(root, f'{q}override')
    for p in placements:
        spec = {'driver': 'hostcache', 'node-name': p['node'],
                'file': p['file']}
        spec.update(p.get('opts', {}))
        ET.SubElement(cmd, f'{q}arg', value='-blockdev')
        ET.SubElement(cmd, f'{q}arg',
                      value=json.dumps(spec, separators=(',', ':')))
        dev = None
        for d in ovr.findall(f'{q}device'):
            if d.get('alias') == p['alias']:
                dev = d
        if dev is None:
            dev = ET.SubElement(ovr, f'{q}device', alias=p['alias'])
        fe = dev.find(f'{q}frontend')
        if fe is None:
            fe = ET.SubElement(dev, f'{q}frontend')
        for prop in fe.findall(f'{q}property'):
            if prop.get('name') == 'drive':
                fe.remove(prop)
        ET.SubElement(fe, f'{q}property', name='drive', type='string',
                      value=p['node'])
    return ET.tostring(root, encoding='unicode')


def remove_hostcache_xml(xml, nodes):
    """Undo add_hostcache_xml for the named filter nodes."""
    root = ET.fromstring(xml)
    q = f'{{{QEMU_NS}}}'
    cmd = root.find(f'{q}commandline')
    if cmd is not None:
        args = list(cmd)
        for i, a in enumerate(args):
            if a.get('value') == '-blockdev' and i + 1 < len(args):
                try:
                    spec = json.loads(args[i + 1].get('value'))
                except ValueError:
                    continue
                if spec.get('node-name') in nodes:
                    cmd.remove(a)
                    cmd.remove(args[i + 1])
        if len(cmd) == 0:
            root.remove(cmd)
    ovr = root.find(f'{q}override')
    if ovr is not None:
        for dev in ovr.findall(f'{q}device'):
            fe = dev.find(f'{q}frontend')
            if fe is None:
                continue
            for prop in fe.findall(f'{q}property'):
                if prop.get('name') == 'drive' and prop.get('value') in nodes:
                    fe.remove(prop)
            if len(fe) == 0:
                dev.remove(fe)
            if len(dev) == 0:
                ovr.remove(dev)
        if len(ovr) == 0:
            root.remove(ovr)
    return ET.tostring(root, encoding='unicode')


def check_placement(lv, dom, alias, node, want_file, want_filename=None):
    """Assert from QEMU's graph: the device's root is the hostcache node
    `node`, whose file child is `want_file` (and, if given, that child's
    image is want_filename)."""
    check_eq(device_root(lv, dom, alias), node, f'{alias} root node')
    nodes = block_nodes(lv, dom)
    check_eq(nodes[node]['drv'], 'hostcache', f'{node} driver')
    check_eq(child_of(lv, dom, node), want_file, f'{node} file child')
    if want_filename is not None:
        check_eq(nodes[want_file]['image']['filename'], want_filename,
                 f'{want_file} image')


# ---- recipe: live insertion / change / removal --------------------------------------

def insert_live(lv, dom, alias, node, **opts):
    """Put a hostcache filter between a running device and its current
    root node: blockdev-add (file = current root), then qom-set the
    backend's 'drive'.  Returns the node it was put over."""
    below = device_root(lv, dom, alias)
    spec = {'driver': 'hostcache', 'node-name': node, 'file': below}
    spec.update({k.replace('_', '-'): v for k, v in opts.items()})
    lv.qmp(dom, 'blockdev-add', **spec)
    try:
        lv.qmp(dom, 'qom-set', path=backend_path(alias), property='drive',
               value=node)
    except QMPError:
        lv.qmp(dom, 'blockdev-del', **{'node-name': node})
        raise
    return below


def reopen_live(lv, dom, node, **opts):
    """Change a running filter's options with blockdev-reopen.

    blockdev-reopen takes the node's whole option set: an option not named
    here returns to its default (pass e.g. ram_size again to keep it)."""
    spec = {'driver': 'hostcache', 'node-name': node,
            'file': child_of(lv, dom, node)}
    spec.update({k.replace('_', '-'): v for k, v in opts.items()})
    lv.qmp(dom, 'blockdev-reopen', options=[spec])


def remove_live(lv, dom, alias, node):
    """Take a filter out from under a running device: qom-set the backend's
    'drive' back to the filter's file child, then blockdev-del the filter.
    The filter must hold no dirty data (write-back: switch it to
    write-through with reopen_live first)."""
    below = child_of(lv, dom, node)
    lv.qmp(dom, 'qom-set', path=backend_path(alias), property='drive',
           value=below)
    lv.qmp(dom, 'blockdev-del', **{'node-name': node})
    return below


# ---- guest console ---------------------------------------------------------------

def console_text(path):
    """The console's complete lines so far (the guest is still writing
    it; see hostcache.lines)."""
    return complete_text(path)


def wait_console(path, pattern, timeout=120, lv=None, dom=None, start=0):
    """Wait for a console match of pattern (after offset start); returns
    the match.  With lv and dom, fails early when the domain stops."""
    deadline = time.monotonic() + timeout
    next_state = time.monotonic() + 2
    rx = re.compile(pattern, re.M)
    while True:
        m = rx.search(console_text(path), start)
        if m:
            return m
        if time.monotonic() > deadline:
            raise TestFailure(f'console: no {pattern!r} after {timeout}s:'
                              f'\n{console_text(path)[-3000:]}')
        if lv is not None and time.monotonic() > next_state:
            next_state = time.monotonic() + 2
            if not lv.domstate(dom).startswith(('running', 'paused')):
                m = rx.search(console_text(path), start)
                if m:
                    return m
                raise TestFailure(f'{dom} is {lv.domstate(dom)}; console:'
                                  f'\n{console_text(path)[-3000:]}')
        time.sleep(0.2)


# ---- migration between two private daemons ---------------------------------------

def migrate(src, dst, dom, live=True, unsafe=True, dest_xml=None, extra=(),
            timeout=300):
    """virsh migrate from one private libvirtd to another on this machine.

    The client (virsh) connects to both daemons (libvirt's default,
    client-driven migration); QEMU streams over tcp://127.0.0.1 on a port
    from dst's migration_ports.  Both see the same image files, which
    libvirt cannot prove to be shared storage: unsafe=True passes
    --unsafe.  The two daemons' host UUIDs differ, which is libvirt's only
    same-host check.  dest_xml: the domain XML the destination starts
    from (--xml, VIR_MIGRATE_PARAM_DEST_XML).
    """
    args = ['migrate', *(['--live'] if live else []),
            *(['--unsafe'] if unsafe else []), *extra]
    if dest_xml is not None:
        path = os.path.join(src.dir, f'dest-{time.monotonic_ns()}.xml')
        with open(path, 'w') as f:
            f.write(dest_xml)
        args += ['--xml', path]
    args += [dom, dst.uri, '--migrateuri', 'tcp://127.0.0.1']
    r = src.virsh(*args, timeout=timeout)
    dst._remember_qemu(dom)
    return r
