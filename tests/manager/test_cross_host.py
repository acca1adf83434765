#!/usr/bin/python3
"""hostcached across hosts (issue 11): two private libvirtds ("hosts" A and
B, hostcache/libvirt.py) with a hostcached each and hostcache's libvirt hook
(dist/libvirt-hook-hostcache) installed in both, as `make install` puts it
in /etc/libvirt/hooks/qemu.d/hostcache.  Plain `virsh migrate`, no call to
hostcached's API for the migration:

- a VM with a write-back policy with an SSD tier on A migrates to B and
  back: on each arrival the hook prepared the host (the tier file made
  under that host's SSD root, the XML rewritten to it), the disk is
  adopted from the assignment the VM carries in its metadata and is
  compliant with the same policy, the guest's data intact, events on both
- B's SSD budget too small: the hook refuses, virsh's error says what is
  short, on which host and by how much; the VM runs on A, nothing changed
- B's hostcached stopped: the migration of the cached VM is refused with a
  clear message, a VM without hostcache filters migrates as before
- A's peer B listed with its health (GET /peers, hostcachectl peer list)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hostcache import MiB, paths  # noqa: E402
from hostcache import libvirt as L  # noqa: E402
from hostcache.check import check  # noqa: E402
from hostcache.manager import Daemon, skip_unless_available  # noqa: E402
from hostcache.procs import run, tmpdir  # noqa: E402
from hostcache.runner import main  # noqa: E402

import test_hostcached_libvirt as T  # noqa: E402  (its helpers)

HOOK = os.path.join(paths.SRC, 'dist', 'libvirt-hook-hostcache')
RULES = {'mode': 'write-back', 'ram-size': '32M', 'max-dirty-age-ms': 3600000,
         'ssd-size': '8M'}
META_URI = 'https://hostcache.dev/xmlns/assignments/1'


class Host:
    """One "host": a private libvirtd with the hook, its SSD root, and its
    hostcached (start()/stop(); the hook finds it through
    /etc/libvirt/hooks/hostcache.conf in the libvirtd's private /etc)."""

    def __init__(self, wd, name, ports):
        with open(HOOK) as f:
            hook = f.read()
        self.wd = os.path.join(wd, name)
        self.name = f'host-{name}'
        self.root = os.path.join(self.wd, 'ssd')
        os.makedirs(self.root)
        self.lv = T._libvirtd(wd, name=f'host-{name}', migration_ports=ports,
                              hooks={'qemu.d/hostcache': hook})
        self.d = None

    def start(self, ssd_budget='1G', peer=None):
        """peer: another Host, configured as this one's migration peer."""
        extra = ('--ssd-budget', ssd_budget)
        if peer:
            extra += ('--peer', f'{peer.name}=qemu+unix:///system?socket='
                      f'{peer.lv.sock_dir}/libvirt-sock')
        self.d = Daemon(self.wd, self.lv, ssd_root=self.root, extra=extra)
        with open(os.path.join(self.lv.paths['etc'], 'hooks', 'hostcache.conf'), 'w') as f:
            f.write(f'HOSTCACHECTL={paths.HOSTCACHECTL}\n'
                    f'HOSTCACHE_URL={self.d.url}\n'
                    f'HOSTCACHE_TOKEN_FILE={self.d.token_file}\n')
        return self.d

    def stop(self):
        if self.d:
            self.d.stop()
            self.d = None

    def state(self):
        """What a refused migration must not change: the VMs, their disks'
        policies and compliance (without the times of the periodic
        checks), the tier files."""
        def strip(j):
            if isinstance(j, dict):
                return {k: strip(v) for k, v in j.items()
                        if k not in ('checked', 'changed', 'recorded')}
            if isinstance(j, list):
                return [strip(v) for v in j]
            return j
        return strip(self.d.ok('GET', '/vms')), self.tiers()

    def tiers(self):
        """The tier files under this host's SSD root."""
        out = []
        for dp, _, fs in os.walk(self.root):
            out += [os.path.join(dp, f) for f in fs if f.endswith('.hcssd')]
        return sorted(out)


def _two_hosts(prefix):
    wd = tmpdir(prefix)
    lo = 20000 + (os.getpid() % 400) * 100
    return wd, Host(wd, 'a', (lo, lo + 49)), Host(wd, 'b', (lo + 50, lo + 99))


def _cached_vm(wd, a, name='xm'):
    """VM `name` on A with policy wb assigned while shut off (the filter,
    with its SSD tier under A's root, in the definition), then started;
    0x3c written at 48M.  Returns its UUID."""
    img = os.path.join(wd, f'{name}.raw')
    T._raw(img)
    a.lv.define(L.domain_xml(name, [L.Disk(img, 'raw', 'ua-disk0', 'vda')], memory_mib=64))
    st = a.d.ok('PUT', f'/vms/{name}/disks/vda/policy', {'policy': 'wb'})['compliance']
    check(st['state'] == 'pending-restart', st)
    a.lv.start_domain(name)
    uuid = T._domuuid(a.lv, name)
    T._wait('compliant on A', lambda: a.d.state(name, 'vda')['state'] == 'compliant')
    a.lv.qemu_io(name, 'ua-disk0', 'write -P 0x3c 48M 2M')
    return uuid


def _policy(h):
    h.d.ok('POST', '/policies', {'name': 'wb', 'rules': dict(RULES, **{'ssd-dir': h.root})},
           want=201)


def _ssd_file(lv, dom):
    """The filename of the filter's SSD tier node in QEMU's graph."""
    for n in lv.qmp(dom, 'query-named-block-nodes', flat=True):
        if n['node-name'] == 'hc-vda-ssd':
            return n['image']['filename']
    return None


def _arrived(src, dst, uuid, name='xm'):
    """After a migration src -> dst: the checks of the destination."""
    check(dst.lv.domstate(name).startswith('running'), 'not running on the destination')
    T._wait('the disk adopted on the destination',
            lambda: [e for e in T._events(dst.d, name, 'adopt')
                     if 'adopted the assignment' in e['message']])
    T._wait('compliant on the destination',
            lambda: dst.d.state(name, 'vda')['state'] == 'compliant')
    a = dst.d.ok('GET', f'/vms/{name}/disks/vda/policy')
    check(a['policy'] == 'wb', a)
    tier = os.path.join(dst.root, f'{uuid}-vda.hcssd')
    check(dst.tiers() == [tier], (dst.tiers(), tier))
    check(_ssd_file(dst.lv, name) == tier, (_ssd_file(dst.lv, name), tier))
    check(os.path.getsize(tier) == 8 * MiB, os.path.getsize(tier))
    st = L.hostcache_stats(dst.lv, name, 'hc-vda')
    check(st['mode'] == 'write-back' and st['ssd-active'], st)
    T._check_pattern(dst.lv, name, 'ua-disk0', '0x3c', '2M', '48M')
    prep = T._events(dst.d, name, 'migrate-prepare')
    check(prep and f'{uuid}-vda.hcssd (made blank)' in prep[0]['message'], prep)
    # The assignment travels on: the destination's metadata has it.
    meta = dst.lv.virsh('metadata', name, '--uri', META_URI, '--live').stdout
    check('policy="wb"' in meta and 'target="vda"' in meta, meta)
    # The source: the switch-over and the departure recorded.
    T._wait('migrated-away on the source', lambda: T._events(src.d, name, 'migrated-away'))
    check(T._events(src.d, name, 'migrate-out'), 'no migrate-out event on the source')


def _refused(src, dst, name='xm'):
    """virsh migrate src -> dst, which must fail; returns virsh's error."""
    try:
        L.migrate(src.lv, dst.lv, name, extra=('--persistent', '--undefinesource'))
    except L.VirshError as e:
        return str(e)
    raise AssertionError('the migration was not refused')


def test_plain_virsh_migrate_there_and_back():
    wd, a, b = _two_hosts('hcx-mig-')
    a.start(peer=b)
    b.start()
    for h in (a, b):
        _policy(h)
    # A's peer B, probed in the background: reachable (its libvirtd runs).
    peers = T._wait('B probed', lambda: [p for p in a.d.ok('GET', '/peers')['peers']
                                         if p['reachable'] is not None])
    check(peers[0]['name'] == 'host-b' and peers[0]['reachable'] is True, peers)
    out = run([paths.HOSTCACHECTL, '--url', a.d.url, '--token-file', a.d.token_file,
               'peer', 'list']).stdout
    check('host-b' in out and 'yes' in out, out)
    uuid = _cached_vm(wd, a)
    meta = a.lv.virsh('metadata', 'xm', '--uri', META_URI, '--config').stdout
    check('policy="wb"' in meta and '"ssd-size":8388608' in meta, meta)
    check(b.lv.list_domains() == [], 'B knows the VM already')

    L.migrate(a.lv, b.lv, 'xm', extra=('--persistent', '--undefinesource'))
    _arrived(a, b, uuid)
    check(a.lv.list_domains() == [], 'still defined on A')
    # B's definition got B's tier file, not A's.
    T._wait('B\'s definition rewritten',
            lambda: b.root in b.lv.dumpxml('xm', inactive=True)
            and a.root not in b.lv.dumpxml('xm', inactive=True))
    b.lv.qemu_io('xm', 'ua-disk0', 'write -P 0x5d 40M 1M')

    L.migrate(b.lv, a.lv, 'xm', extra=('--persistent', '--undefinesource'))
    _arrived(b, a, uuid)
    T._check_pattern(a.lv, 'xm', 'ua-disk0', '0x5d', '1M', '40M')
    T._wait('B released its tier', lambda: b.tiers() == [])


def test_refused_for_lack_of_budget_changes_nothing():
    wd, a, b = _two_hosts('hcx-budget-')
    a.start()
    _policy(a)
    b.start(ssd_budget='4M')
    _policy(b)
    _cached_vm(wd, a)
    before = {h: h.state() for h in (a, b)}
    msg = _refused(a, b)
    print(f'virsh migrate refused: {msg}')
    # What is short, on which host, by how much.
    for want in ('hostcache on host', 'refuses the migration of VM \'xm\'',
                 'not enough SSD cache space', '4 MiB SSD budget',
                 'short by 4 MiB', 'migrate-without-ssd'):
        check(want in msg, f'{want!r} not in virsh\'s error: {msg}')
    check(a.lv.domstate('xm').startswith('running'), 'the VM does not run on A')
    check(a.d.state('xm', 'vda')['state'] == 'compliant', a.d.state('xm', 'vda'))
    check(b.lv.list_domains() == [], 'B has the VM')
    for h in (a, b):
        check(h.state() == before[h], f'host {h.name} changed: {before[h]} -> {h.state()}')
    check(not T._events(b.d, 'xm', 'adopt'), 'B adopted')
    T._check_pattern(a.lv, 'xm', 'ua-disk0', '0x3c', '2M', '48M')


def test_destination_hostcached_stopped():
    wd, a, b = _two_hosts('hcx-down-')
    a.start()
    _policy(a)
    b.start()
    b.stop()    # (the hook's settings name it; it is not running)
    _cached_vm(wd, a)
    msg = _refused(a, b)
    print(f'virsh migrate refused: {msg}')
    for want in ('hostcache: migration of VM \'xm\' refused', 'cannot reach hostcached',
                 'start hostcached on this host'):
        check(want in msg, f'{want!r} not in virsh\'s error: {msg}')
    check(a.lv.domstate('xm').startswith('running'), 'the VM does not run on A')
    check(b.lv.list_domains() == [] and b.tiers() == [], 'B changed')
    # A VM without hostcache filters is not affected by the hook.
    img = os.path.join(wd, 'plain.raw')
    T._raw(img)
    a.lv.define(L.domain_xml('plain', [L.Disk(img, 'raw', 'ua-disk0', 'vda')],
                             memory_mib=64))
    a.lv.start_domain('plain')
    a.lv.qemu_io('plain', 'ua-disk0', 'write -P 0x11 0 1M')
    L.migrate(a.lv, b.lv, 'plain', extra=('--persistent', '--undefinesource'))
    check(b.lv.domstate('plain').startswith('running'), 'plain does not run on B')
    T._check_pattern(b.lv, 'plain', 'ua-disk0', '0x11', '1M')


if __name__ == '__main__':
    skip_unless_available()
    main(globals())
