#!/usr/bin/python3
"""make demo: the main job end to end, left running for the user.

    PYTHONPATH=python /usr/bin/python3 scripts/demo-manager.py [start]
    PYTHONPATH=python /usr/bin/python3 scripts/demo-manager.py stop
(make demo and make demo-stop; PYTHONPATH: the project's helpers,
python/hostcache, from the source tree.)

start:
  1. libvirtd: the system one (qemu:///system, so `virsh` sees the demo VM);
     when none answers, `virtlogd -d` and `libvirtd -d` are started (or
     systemctl under systemd) and remembered, so that `stop` ends them.
  2. A simulated slow SAN: a raw image served by nbdkit (file plugin + delay
     filter, every read and write 5 ms slower: a busy or disk-backed array;
     the guest's busybox dd costs a few ms per read under TCG, so 2 ms
     would be lost in its noise) on a unix socket.
  3. hostcached on 127.0.0.1:8470 (another free port when that one is
     taken), its database and token file in the demo directory.
  4. The demo VM "hostcache-demo": the tiny test guest (scripts/make-guest.sh)
     under TCG, its disk vda a network disk on the SAN socket (virtio-blk).
     The guest runs a read workload: 4 KiB O_DIRECT reads of a small hot set.
  5. A few rounds without the cache, then the policy "balanced" is assigned
     through the REST API (live: the filter goes under the running disk),
     more rounds with the cache; the cache's counters are read through the
     API.
  6. The VM is restarted idle (hc.job=hold) with the cache in its definition,
     and everything is left running: the report says where the API is, where
     the token is, what the cache did and how to stop it all.

A second start replaces the previous demo's VM, SAN and daemon (and reuses
the libvirtd).  Every step checks its result and stops with the reason.

Environment: HOSTCACHE_DEMO_DIR (default build/demo), HOSTCACHE_DEMO_PORT
(the API's port, default 8470; 0: any free port), DEMO_SAN_DELAY (default
5ms), DEMO_READS (reads per round, default 200); the binaries:
HOSTCACHE_BUILD (default build/meson), HOSTCACHE_QEMU_BUILD (default
build/qemu-build), HC_GUEST_DIR (default build/guest).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from hostcache import paths, procs
from hostcache.check import TestFailure
from hostcache.lines import complete_lines, complete_text
from hostcache.manager import Api
from hostcache.qemu import firmware_args

SRC = paths.SRC
QEMU = paths.QEMU_SYSTEM
QEMU_IMG = paths.QEMU_IMG
HOSTCACHED = paths.HOSTCACHED
HOSTCACHECTL = paths.HOSTCACHECTL
GUEST_DIR = paths.GUEST_DIR
STATE = os.path.abspath(os.environ.get('HOSTCACHE_DEMO_DIR',
                                       os.path.join(SRC, 'build', 'demo')))
SAN_DELAY = os.environ.get('DEMO_SAN_DELAY', '5ms')
READS = int(os.environ.get('DEMO_READS', '200'))

URI = 'qemu:///system'
VM = 'hostcache-demo'
MARKER = 'hostcache demo VM (scripts/demo-manager.py)'
POLICY = 'balanced'
LISTEN_HOST = '127.0.0.1'
LISTEN_PORT = int(os.environ.get('HOSTCACHE_DEMO_PORT', '8470'))
BASELINE_ROUNDS = 3     # rounds without the cache
WARM_ROUNDS = 3         # rounds measured with a warm cache
HOT_SET = 256 * 1024    # bytes the guest reads from, at offset 0
DISK_SIZE = 256 << 20
DATA_SIZE = 16 << 20    # written with random data (not a sparse hole)

PIDS = {  # name -> pid file in STATE
    'hostcached': 'hostcached.pid',
    'nbdkit': 'nbdkit.pid',
}
STARTED_LIBVIRTD = os.path.join(STATE, 'started-libvirtd.json')


class DemoError(Exception):
    pass


def say(msg):
    print(msg, flush=True)


def step(msg):
    say(f'-- {msg}')


def run(argv, what, timeout=120, check=True, input=None):
    try:
        r = procs.run(argv, check_rc=False, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise DemoError(f'{what}: `{" ".join(argv)}` took more than '
                        f'{timeout} s')
    except OSError as e:
        raise DemoError(f'{what}: cannot run {argv[0]}: {e}')
    if check and r.returncode != 0:
        raise DemoError(f'{what}: `{" ".join(argv)}` exited {r.returncode}:'
                        f'\n{(r.stderr or r.stdout).strip()}')
    return r


def virsh(*args, what=None, check=True, timeout=120):
    return run(['virsh', '-q', '-c', URI, *args],
               what or f'virsh {args[0]}', timeout=timeout, check=check)


def tail(path, n=3000):
    try:
        with open(path, errors='replace') as f:
            return f.read()[-n:]
    except OSError:
        return ''


# ---- processes, by pid --------------------------------------------------------

def stop_pid(pid, name, must_contain, timeout=20):
    """SIGTERM pid (SIGKILL after timeout) if its command line still
    contains must_contain: a reused pid is never signalled."""
    if (not pid or not procs.pid_alive(pid)
            or must_contain not in procs.cmdline(pid)):
        return False
    if procs.kill_pid(pid, timeout):
        say(f'   {name} (pid {pid}) ignored SIGTERM for {timeout} s: SIGKILL')
    return True


def demo_pid(name):
    """(pid, text its command line must contain) of a demo process."""
    pid = procs.read_pid(os.path.join(STATE, PIDS[name]))
    return pid, STATE


def start_detached(argv, log, what):
    """Start a process that outlives this script (own session, output to
    log); returns its pid."""
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                             stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True)
    except OSError as e:
        raise DemoError(f'{what}: cannot start {argv[0]}: {e}')
    return p


def wait_until(cond, timeout, what, diag=lambda: ''):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise DemoError(f'{what} (waited {timeout} s){diag()}')
        time.sleep(0.2)


# ---- libvirtd ------------------------------------------------------------------

def libvirt_answers():
    r = run(['virsh', '-c', URI, 'list', '--all'], 'virsh list', timeout=60,
            check=False)
    return r.returncode == 0


def ensure_libvirtd():
    if libvirt_answers():
        step(f'libvirtd: using the one running ({URI})')
        return
    if os.path.isdir('/run/systemd/system'):
        step('libvirtd: not answering; starting it with systemctl')
        run(['systemctl', 'start', 'virtlogd', 'libvirtd'],
            'systemctl start libvirtd')
        wait_until(libvirt_answers, 60, f'libvirtd does not answer on {URI}')
        return
    if os.geteuid() != 0:
        raise DemoError('libvirtd is not running and only root can start '
                        'the system libvirtd (run make demo as root)')
    old = procs.read_pid('/run/libvirtd.pid')
    if old and procs.pid_alive(old):
        raise DemoError(f'libvirtd (pid {old}) runs but does not answer on '
                        f'{URI}; look at it or stop it first')
    step('libvirtd: none running; starting virtlogd -d and libvirtd -d')
    started = {}
    vpid = procs.read_pid('/run/virtlogd.pid')
    if not (vpid and procs.pid_alive(vpid)
            and 'virtlogd' in procs.cmdline(vpid)):
        run(['virtlogd', '-d'], 'starting virtlogd')
        vpid = wait_until(lambda: procs.read_pid('/run/virtlogd.pid'), 10,
                          'virtlogd wrote no /run/virtlogd.pid')
        started['virtlogd'] = vpid
    run(['libvirtd', '-d'], 'starting libvirtd')
    lpid = wait_until(lambda: procs.read_pid('/run/libvirtd.pid'), 30,
                      'libvirtd wrote no /run/libvirtd.pid')
    started['libvirtd'] = lpid
    with open(STARTED_LIBVIRTD, 'w') as f:
        json.dump(started, f)
    wait_until(libvirt_answers, 90, f'libvirtd (pid {lpid}) does not answer '
               f'on {URI}')


def stop_started_libvirtd():
    started = {}
    try:
        with open(STARTED_LIBVIRTD) as f:
            started = json.load(f)
    except (OSError, ValueError):
        return
    if 'libvirtd' in started and libvirt_answers():
        others = [n for n in virsh('list', '--all', '--name').stdout.split()
                  if n and n != VM]
        if others:
            say(f'   libvirtd (pid {started["libvirtd"]}) was started by the '
                f'demo but now has other domains ({", ".join(others)}): '
                'left running')
            os.unlink(STARTED_LIBVIRTD)
            return
    for name in ('libvirtd', 'virtlogd'):
        if name in started and stop_pid(started[name], name, name):
            say(f'   stopped {name} (pid {started[name]}), started by the demo')
    os.unlink(STARTED_LIBVIRTD)


# ---- the previous demo ---------------------------------------------------------

def vm_exists():
    r = virsh('dominfo', VM, check=False)
    return r.returncode == 0


def remove_vm():
    if not vm_exists():
        return False
    xml = virsh('dumpxml', '--inactive', VM).stdout
    if MARKER not in xml:
        raise DemoError(f'a domain named {VM} exists in {URI} and is not the '
                        'demo\'s (no demo description): rename or remove it')
    state = virsh('domstate', VM).stdout.strip()
    if state not in ('shut off', 'crashed'):
        virsh('destroy', VM, what=f'destroying the previous {VM}')
    virsh('undefine', VM, what=f'undefining the previous {VM}')
    return True


def stop_demo_processes():
    for name in ('hostcached', 'nbdkit'):
        pid, mark = demo_pid(name)
        if stop_pid(pid, name, mark):
            say(f'   stopped {name} (pid {pid})')
        try:
            os.unlink(os.path.join(STATE, PIDS[name]))
        except FileNotFoundError:
            pass


def cmd_stop():
    say(f'== stopping the hostcache demo ({STATE})')
    pid, mark = demo_pid('hostcached')
    if stop_pid(pid, 'hostcached', mark):
        say(f'   stopped hostcached (pid {pid})')
    if libvirt_answers():
        if remove_vm():
            say(f'   destroyed and undefined {VM}')
    else:
        say(f'   libvirtd does not answer on {URI}: {VM} not touched')
    stop_demo_processes()
    stop_started_libvirtd()
    say('== demo stopped (its files stay in ' + STATE + ')')


# ---- the SAN -------------------------------------------------------------------

def start_san():
    san = os.path.join(STATE, 'san')
    os.makedirs(san, exist_ok=True)
    img = os.path.join(san, 'disk.raw')
    sock = os.path.join(san, 'san.sock')
    for p in (img, sock):
        if os.path.exists(p):
            os.unlink(p)
    with open(img, 'wb') as f:
        f.truncate(DISK_SIZE)
        f.write(os.urandom(DATA_SIZE))
    log = os.path.join(STATE, 'nbdkit.log')
    pidfile = os.path.join(STATE, PIDS['nbdkit'])
    # nbdkit daemonizes itself once its socket listens and writes the
    # daemon's pid (a foreground nbdkit started from here was seen to get
    # SIGTERM when this script exited).
    argv = ['nbdkit', '--unix', sock, '--pidfile', pidfile, '--log=stderr',
            '--filter=delay', 'file', img, f'rdelay={SAN_DELAY}',
            f'wdelay={SAN_DELAY}']
    with open(log, 'w') as out:
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DemoError(f'simulated SAN: nbdkit: {e}')
    if r.returncode != 0:
        raise DemoError(f'nbdkit exited {r.returncode}:\n{tail(log)}')
    pid = wait_until(lambda: procs.read_pid(pidfile), 10,
                     'nbdkit wrote no pid file')
    if not (procs.pid_alive(pid) and os.path.exists(sock)):
        raise DemoError(f'nbdkit (pid {pid}) is not serving {sock}:\n'
                        f'{tail(log)}')
    return img, sock, pid


# ---- hostcached and its API ----------------------------------------------------

def port_free(port):
    # SO_REUSEADDR as a server sets it: connections in TIME_WAIT from
    # a previous demo's daemon do not count, a listening socket does.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((LISTEN_HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_hostcached():
    db = os.path.join(STATE, 'hostcached.db')
    for suffix in ('', '-wal', '-shm'):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    port = LISTEN_PORT if LISTEN_PORT == 0 or port_free(LISTEN_PORT) else 0
    if port != LISTEN_PORT:
        say(f'   {LISTEN_HOST}:{LISTEN_PORT} is taken: hostcached gets a '
            'free port')
    log = os.path.join(STATE, 'hostcached.log')
    token_file = os.path.join(STATE, 'token')
    argv = [HOSTCACHED, '--listen', f'{LISTEN_HOST}:{port}', '--db', db,
            '--token-file', token_file, '--libvirt-uri', URI,
            '--emulator', QEMU, '--qemu-img', QEMU_IMG,
            '--stats-interval', '1', '--log-level', 'info']
    p = start_detached(argv, log, 'hostcached')
    with open(os.path.join(STATE, PIDS['hostcached']), 'w') as f:
        f.write(f'{p.pid}\n')

    def listening():
        if p.poll() is not None:
            raise DemoError(f'hostcached exited {p.returncode}:\n{tail(log)}')
        m = re.search(r'REST API on (http://[^ ]+/api/v1)',
                      complete_text(log))
        return m and m.group(1)
    base = wait_until(listening, 30, 'hostcached did not start its API',
                      lambda: '\n' + tail(log))
    api = Api(base.rsplit('/api/v1', 1)[0], token_file)

    def healthy():
        status, h = api.call('GET', '/health', token=False)
        return h if status == 200 and h.get('libvirt') == 'connected' else None
    h = wait_until(healthy, 30, 'hostcached is not connected to libvirtd',
                   lambda: '\n' + tail(log))
    return p.pid, api, log, h


# ---- the demo VM ---------------------------------------------------------------

def guest_cmdline(job):
    common = 'console=ttyS0 quiet panic=-1'
    if job == 'workload':
        return (f'{common} hc.job=workload hc.bs=4096 hc.size={HOT_SET} '
                f'hc.offset=0 hc.count={READS} hc.rounds=0 hc.seed=1')
    return f'{common} hc.job=hold'


def domain_xml(kernel, initrd, sock, console, fw):
    args = ''.join(f"    <qemu:arg value='{a}'/>\n" for a in fw)
    qemu_cl = f'  <qemu:commandline>\n{args}  </qemu:commandline>\n' \
        if fw else ''
    # QEMU runs as root without relabelling (seclabel): it must reach the
    # SAN's socket, the kernel and the console file in the demo directory,
    # and the project's binary, whatever the host's qemu.conf user is.
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{VM}</name>
  <description>{MARKER}</description>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{guest_cmdline('workload')}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='nbd'>
        <host transport='unix' socket='{sock}'/>
      </source>
      <target dev='vda' bus='virtio'/>
      <alias name='ua-vda'/>
    </disk>
    <serial type='file'>
      <source path='{console}' append='off'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
{qemu_cl}</domain>
"""


def console_lines(console):
    """The guest's HC-* lines so far: complete lines only (the guest's
    console is written byte by byte while this reads it)."""
    out = []
    for raw in complete_lines(console):
        at = raw.find('HC-')
        if at >= 0:
            out.append(raw[at:].strip('\r\0 '))
    return out


# Every field of a finished HC-WORKLOAD line (scripts/guest-init.sh), with
# its type.
ROUND_FIELDS = {'round': int, 'reads': int, 'writes': int, 'bs': int,
                'region': int, 'errors': int, 'elapsed': float, 'iops': int}


def parse_round(line):
    """The fields of an HC-WORKLOAD line, or None when one is missing or
    does not parse (a line a kernel message cut in two: that round's
    figures are unreadable, not failed)."""
    kv = dict(w.split('=', 1) for w in line.split()[1:] if '=' in w)
    try:
        return {k: t(kv[k]) for k, t in ROUND_FIELDS.items()}
    except (KeyError, ValueError):
        return None


def workload_rounds(console):
    """{round number: fields} of the workload rounds the guest finished
    and reported in full.  Fails on I/O errors the guest saw and on its
    HC-RESULT fail line."""
    rounds = {}
    for line in console_lines(console):
        if line.startswith('HC-WORKLOAD '):
            r = parse_round(line)
            if r is None:
                continue
            if r['errors'] != 0:
                raise DemoError(f'the guest saw I/O errors in round '
                                f'{r["round"]}: {line}')
            rounds[r['round']] = r
        elif line.startswith('HC-RESULT fail'):
            raise DemoError(f'the guest failed: {line}')
    return rounds


def last_round(rounds):
    return max(rounds, default=0)


def vm_state():
    return virsh('domstate', VM, check=False).stdout.strip()


def wait_rounds(console, n, timeout):
    """Wait until the guest reported round n or a later one; returns
    workload_rounds()."""
    def enough():
        st = vm_state()
        if st != 'running':
            raise DemoError(f'{VM} is {st or "gone"} before round {n}; '
                            f'console:\n{tail(console)}')
        r = workload_rounds(console)
        return r if last_round(r) >= n else None
    return wait_until(enough, timeout, f'the guest did not finish workload '
                      f'round {n}', lambda: f'; console:\n{tail(console)}')


def redefine_cmdline(job):
    xml = virsh('dumpxml', '--inactive', VM).stdout
    new, n = re.subn(r'<cmdline>[^<]*</cmdline>',
                     f'<cmdline>{guest_cmdline(job)}</cmdline>', xml)
    if n != 1:
        raise DemoError(f'{VM}: no <cmdline> in its definition')
    path = os.path.join(STATE, f'{VM}.xml')
    with open(path, 'w') as f:
        f.write(new)
    virsh('define', path, what=f'redefining {VM} with hc.job={job}')


# ---- report --------------------------------------------------------------------

def ms_per_read(r):
    return 1000 * float(r['elapsed']) / int(r['reads'])


def pick(rounds, first, last, console):
    """Rounds first..last (the ones reported in full)."""
    got = [rounds[i] for i in range(first, last + 1) if i in rounds]
    if not got:
        raise DemoError(f'no readable line for workload rounds {first}-{last}'
                        f' on the guest\'s console:\n{tail(console)}')
    return got


def summary(rounds):
    ms = sum(ms_per_read(r) for r in rounds) / len(rounds)
    reads = sum(int(r['reads']) for r in rounds)
    el = sum(float(r['elapsed']) for r in rounds)
    return ms, reads / el


def cmd_start():
    t0 = time.monotonic()
    say(f'== hostcache demo: hostcached + libvirt + a VM on a slow SAN '
        f'(state in {STATE})')
    for b in (QEMU, QEMU_IMG, HOSTCACHED, HOSTCACHECTL):
        if not os.access(b, os.X_OK):
            raise DemoError(f'{b} missing: run make first')
    for b in ('nbdkit', 'virsh', 'libvirtd', 'virtlogd'):
        if not shutil.which(b, path=os.environ.get('PATH', '') +
                            ':/usr/sbin:/sbin'):
            raise DemoError(f'{b} not installed: run make (scripts/'
                            'setup-deps.sh) first')
    os.environ['PATH'] = os.environ.get('PATH', '') + ':/usr/sbin:/sbin'
    os.makedirs(STATE, exist_ok=True)

    step('guest: scripts/make-guest.sh (Debian cloud kernel + busybox)')
    run(['bash', os.path.join(SRC, 'scripts', 'make-guest.sh')],
        'building the guest', timeout=600)
    gdir = os.path.join(STATE, 'guest')
    os.makedirs(gdir, exist_ok=True)
    kernel, initrd = (os.path.join(gdir, 'vmlinuz'),
                      os.path.join(gdir, 'initramfs.cpio.gz'))
    shutil.copyfile(os.path.join(GUEST_DIR, 'vmlinuz'), kernel)
    shutil.copyfile(os.path.join(GUEST_DIR, 'initramfs.cpio.gz'), initrd)

    ensure_libvirtd()
    # The previous demo, if any: daemon first (so that it does not react
    # to the VM going away), then the VM, then the SAN.
    pid, mark = demo_pid('hostcached')
    if stop_pid(pid, 'hostcached', mark):
        say(f'   stopped the previous demo\'s hostcached (pid {pid})')
    if remove_vm():
        say(f'   removed the previous demo VM {VM}')
    stop_demo_processes()

    step(f'simulated SAN: nbdkit file plugin + delay filter (+{SAN_DELAY} '
         f'per read and write), {DISK_SIZE >> 20} MiB raw image')
    img, sock, san_pid = start_san()

    step('hostcached')
    hc_pid, api, hc_log, health = start_hostcached()
    say(f'   pid {hc_pid}, {api.base}, version {health.get("version")}, '
        f'libvirt {health.get("libvirt")}')

    step(f'demo VM {VM}: TCG, disk vda = NBD on the SAN socket, guest '
         f'workload = {READS} random 4 KiB O_DIRECT reads per round over a '
         f'{HOT_SET >> 10} KiB hot set')
    console = os.path.join(STATE, 'console.log')
    if os.path.exists(console):
        os.unlink(console)
    xml_path = os.path.join(STATE, f'{VM}.xml')
    with open(xml_path, 'w') as f:
        f.write(domain_xml(kernel, initrd, sock, console, firmware_args()))
    virsh('define', xml_path, what=f'defining {VM}')
    virsh('start', VM, what=f'starting {VM}')

    rounds = wait_rounds(console, BASELINE_ROUNDS, 180)
    base = pick(rounds, 1, BASELINE_ROUNDS, console)
    say(f'   without the cache: {summary(base)[0]:.1f} ms per read '
        f'({len(base)} rounds)')

    step(f'PUT /vms/{VM}/disks/vda/policy {{"policy": "{POLICY}"}} (live)')
    t_assign = time.monotonic()
    a = api.ok('PUT', f'/vms/{VM}/disks/vda/policy', {'policy': POLICY})
    comp = a.get('compliance', {})
    if comp.get('state') != 'compliant':
        raise DemoError(f'vda is not compliant after the assignment: {comp}')
    # Rounds finished before the answer ran (at least partly) without the
    # filter; the one running then is mixed.
    k = last_round(workload_rounds(console))
    say(f'   compliant in {time.monotonic() - t_assign:.1f} s '
        f'({comp.get("reason", "")}), during round {k + 1}')
    rounds = wait_rounds(console, k + 1 + WARM_ROUNDS, 180)
    t_last = time.time()
    warm = pick(rounds, k + 2, k + 1 + WARM_ROUNDS, console)

    def fresh_stats():
        s = api.ok('GET', f'/vms/{VM}/disks/vda/stats?points=1')
        cur = s.get('current')
        return s if cur and cur['time_ms'] >= t_last * 1000 else None
    stats = wait_until(fresh_stats, 15, 'hostcached collected no statistics '
                       'sample after the workload')
    c = stats['current']['counters']
    if c.get('read-hits', 0) <= 0:
        raise DemoError(f'the cache counted no read hits: {c}')

    step(f'stopping the workload: {VM} restarts idle (hc.job=hold) with the '
         'filter in its definition')
    virsh('destroy', VM, what=f'stopping {VM}')
    redefine_cmdline('hold')
    workload_console = os.path.join(STATE, 'console-workload.log')
    os.replace(console, workload_console)
    # Every round the guest finished before it stopped (more than waited
    # for, when the statistics sample took a while): the report shows them
    # all, as the console has them.
    rounds = workload_rounds(workload_console)
    virsh('start', VM, what=f'starting {VM} again')
    wait_until(lambda: any(ln.startswith('HC-READY')
                           for ln in console_lines(console)), 120,
               f'{VM} did not come up idle', lambda: tail(console))
    after = wait_until(
        lambda: (lambda c: c if c.get('state') == 'compliant' else None)(
            api.ok('GET', f'/vms/{VM}/disks/vda/policy')['compliance']),
        60, 'vda is not compliant after the restart')
    live_xml = virsh('dumpxml', '--inactive', VM).stdout
    if '&quot;driver&quot;:&quot;hostcache&quot;' not in live_xml and \
            '"driver":"hostcache"' not in live_xml:
        raise DemoError(f'{VM}\'s definition has no hostcache filter')

    # ---- report ----
    b_ms, b_iops = summary(base)
    w_ms, w_iops = summary(warm)
    hits, misses = c['read-hits'], c['read-misses']
    say('')
    say('== hostcache demo: done in %.0f s; left running:' %
        (time.monotonic() - t0))
    say(f'   REST API     {api.base}   (OpenAPI: {api.base}/openapi.json)')
    say(f'   token file   {api.token_file}')
    say(f'   dashboard    {api.url}/#token={open(api.token_file).read().strip()}')
    say(f'   hostcached   pid {hc_pid}, log {hc_log}, database '
        f'{os.path.join(STATE, "hostcached.db")}')
    say(f'   demo VM      {VM} in {URI}: running idle, vda policy "{POLICY}" '
        f'{after["state"]} (in the definition: virsh dumpxml {VM})')
    say(f'   slow SAN     nbdkit pid {san_pid}, {sock} (+{SAN_DELAY} per I/O)')
    say('')
    say(f'   guest-observed, {READS} random 4 KiB O_DIRECT reads per round '
        f'(one busybox dd each) over a {HOT_SET >> 10} KiB hot set:')
    say('                            ms per read   reads/s')
    say(f'     without the cache        {b_ms:8.2f}  {b_iops:8.0f}   '
        f'(rounds 1-{BASELINE_ROUNDS})')
    say(f'     with hostcache, warm     {w_ms:8.2f}  {w_iops:8.0f}   '
        f'(rounds {k + 2}-{k + 1 + WARM_ROUNDS}; {b_ms / w_ms:.1f}x faster)')
    say('     (each read also pays for starting dd in a TCG guest; the SAN '
        'part is what the cache removes)')
    per = [f'{ms_per_read(rounds[i]):.1f}' if i in rounds else '?'
           for i in range(1, last_round(rounds) + 1)]
    say(f'     ms per read by round: {" ".join(per[:k])} | filter inserted '
        f'during round {k + 1}: {per[k]} | {" ".join(per[k + 1:])}')
    say(f'     (the guest\'s console of these rounds: {workload_console})')
    say('')
    say(f'   the cache (GET /vms/{VM}/disks/vda/stats, '
        f'{stats["current"]["time"]}):')
    say(f'     hit ratio {100 * stats["current"]["hit_ratio"]:.1f}% '
        f'({hits} hits, {misses} misses since the filter went in)')
    hit_ns, miss_ns = c['hit-latency-avg-ns'], c['miss-latency-avg-ns']
    say(f'     latency in the host: hit {hit_ns / 1000:.1f} us avg, miss '
        f'{miss_ns / 1e6:.2f} ms avg (the SAN)'
        + (f': a hit is {miss_ns / hit_ns:.0f}x faster' if hit_ns else ''))
    say(f'     mode {c["mode"]}, RAM {c["ram-used"] >> 10} KiB used of '
        f'{c["ram-limit"] >> 20} MiB, admissions {c["admissions"]}, '
        f'evictions {c["evictions"]}, origin errors {c["origin-errors"]}')
    say('')
    rel = os.path.relpath(HOSTCACHECTL, os.getcwd())
    say('   try:')
    say(f'     {rel} --url {api.url} '
        f'--token-file {api.token_file} disk stats {VM} vda')
    say(f'     curl -H "Authorization: Bearer $(cat {api.token_file})" '
        f'{api.base}/vms/{VM}')
    say(f'     virsh -c {URI} dumpxml {VM} | grep hostcache')
    say('')
    say('   stop everything: make demo-stop   (PYTHONPATH=python '
        '/usr/bin/python3 scripts/demo-manager.py stop), i.e.')
    say(f'     kill {hc_pid}   (hostcached; kill $(cat '
        f'{os.path.join(STATE, PIDS["hostcached"])}))')
    say(f'     virsh -c {URI} destroy {VM}; virsh -c {URI} undefine {VM}')
    say(f'     kill {san_pid}   (nbdkit, the SAN)')
    try:
        with open(STARTED_LIBVIRTD) as f:
            started = json.load(f)
        for name in ('libvirtd', 'virtlogd'):
            if name in started:
                say(f'     kill {started[name]}   ({name}, started by the '
                    'demo; make demo-stop leaves it running when it has '
                    'other domains)')
    except (OSError, ValueError):
        say('     (libvirtd was already running: left alone)')


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else 'start'
    try:
        if cmd == 'start':
            cmd_start()
        elif cmd == 'stop':
            os.environ['PATH'] = os.environ.get('PATH', '') + \
                ':/usr/sbin:/sbin'
            cmd_stop()
        else:
            print(__doc__.split('\n\n')[1], file=sys.stderr)
            return 2
    except (DemoError, TestFailure) as e:
        print(f'demo: FAILED: {e}', file=sys.stderr)
        if cmd == 'start':
            print(f'demo: what is already running stays; '
                  f'`make demo-stop` ends it (logs in {STATE})',
                  file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
