#!/usr/bin/python3
"""hostcache under a real libvirt 11.3 (private libvirtd, see
hostcache/libvirt.py).

Proves the recipes of docs/LIBVIRT.md that hostcached copies:
- libvirt's node names follow the rule of libvirt.predict_top_nodes
  (disk order, backing-chain length, raw without a format node)
- persistent placement (qemu:commandline -blockdev + qemu:override drive)
  for several disks and a qcow2 backing chain, checked in QEMU's graph
- a guest's I/O through a persistently placed filter: data written by the
  guest is on the image, repeated reads hit the cache
- live insertion under a running guest, live option change
  (blockdev-reopen), live removal; data intact throughout
- what libvirt reports (taints, events) with a filter in place; disk-only
  snapshots work (block jobs: test_block_jobs.py)
- virsh migrate --live between two private libvirtds: the filter in the
  XML travels (write-back data written back at inactivation); a filter
  inserted live does not, unless the destination XML (--xml) or the
  destination's qemu hook adds it
"""

import hashlib
import os
import re
import time

from hostcache import MiB, paths
from hostcache import libvirt as L
from hostcache.check import TestFailure, check, check_eq, poll
from hostcache.procs import run, tmpdir
from hostcache.qemu import StorageDaemon, make_file, nbd_export

# One capabilities cache for every daemon of this run: libvirt probes the
# emulator once instead of at each daemon start.
CACHE = None


def _libvirtd(wd, **kw):
    global CACHE
    if CACHE is None:
        CACHE = tmpdir('hclv-cache-')
    return L.Libvirtd(wd, cache_dir=CACHE, **kw)


def _qcow2(path, backing=None, backing_fmt=None, size=64 * MiB):
    argv = [paths.QEMU_IMG, 'create', '-q', '-f', 'qcow2']
    if backing:
        argv += ['-b', backing, '-F', backing_fmt]
    argv += [path]
    if not backing:
        argv.append(str(size))
    run(argv)
    return path


def _chain_disks(wd):
    """Disks of every kind that matters for node names, defined out of
    libvirt's order: vdd raw with discard/detect_zeroes (still no format
    node); hdc an empty cdrom (no node); vda qcow2 -> qcow2 -> raw chain;
    vde NBD (a SAN export); vdb raw; vdc qcow2."""
    base = make_file(os.path.join(wd, 'base.raw'), 64 * MiB, pattern=0)
    mid = _qcow2(os.path.join(wd, 'mid.qcow2'), base, 'raw')
    top = _qcow2(os.path.join(wd, 'top.qcow2'), mid, 'qcow2')
    raw = make_file(os.path.join(wd, 'b.raw'), 32 * MiB, pattern=0)
    single = _qcow2(os.path.join(wd, 'c.qcow2'), size=32 * MiB)
    raw2 = make_file(os.path.join(wd, 'd.raw'), 16 * MiB, pattern=0)
    san = make_file(os.path.join(wd, 'san.raw'), 16 * MiB, pattern=0)
    qsd = StorageDaemon(wd, ['--blockdev',
                             f'driver=file,node-name=san,filename={san}'])
    _, sock = nbd_export(qsd, 'san', 'san', wd)
    return [L.Disk(raw2, 'raw', 'ua-disk3', 'vdd',
                   extra_driver_attrs={'discard': 'unmap',
                                       'detect_zeroes': 'unmap'}),
            L.Disk(None, 'raw', 'ua-cd', 'hdc', device='cdrom', bus='ide',
                   readonly=True),
            L.Disk(top, 'qcow2', 'ua-disk0', 'vda'),
            L.Disk(None, 'raw', 'ua-san', 'vde', nbd=(sock, 'san')),
            L.Disk(raw, 'raw', 'ua-disk1', 'vdb'),
            L.Disk(single, 'qcow2', 'ua-disk2', 'vdc')]


def test_node_names_and_persistent_placement():
    wd = tmpdir('hclv-')
    lv = _libvirtd(wd)
    disks = _chain_disks(wd)
    lv.define(L.domain_xml('hc-nodes', disks))
    # libvirt reorders the disks (vda, vdb, vdc, vdd, vde, hdc): the
    # prediction reads libvirt's copy of the definition.  The empty cdrom,
    # last, uses up index 1.
    xml = lv.dumpxml('hc-nodes', inactive=True)
    check_eq(re.findall(r"<target dev='(\w+)'", xml),
               ['vda', 'vdb', 'vdc', 'vdd', 'vde', 'hdc'], "libvirt's order")
    tops = L.predict_top_nodes(xml)
    check_eq(tops, {'ua-san': 'libvirt-2-storage',
                    'ua-disk3': 'libvirt-3-storage',
                    'ua-disk2': 'libvirt-4-format',
                    'ua-disk1': 'libvirt-5-storage',
                    'ua-disk0': 'libvirt-6-format'}, 'predicted tops')
    disks = [d for d in disks if d.alias in tops]

    # Without filters: the rule matches what libvirt really built.
    lv.start_domain('hc-nodes')
    for d in disks:
        check_eq(L.device_root(lv, 'hc-nodes', d.alias), tops[d.alias],
                 f'{d.alias} root without filter')
    nodes = L.block_nodes(lv, 'hc-nodes')
    # vda's chain: libvirt-6-format (top) -> libvirt-7-format (mid) ->
    # libvirt-8-storage (raw base, no format node).
    check_eq(L.child_of(lv, 'hc-nodes', 'libvirt-6-format', 'backing'),
             'libvirt-7-format', 'backing of vda top')
    check_eq(L.child_of(lv, 'hc-nodes', 'libvirt-7-format', 'backing'),
             'libvirt-8-storage', 'backing of vda mid')
    check_eq(nodes['libvirt-8-storage']['image']['filename'],
             os.path.join(wd, 'base.raw'), 'base image')
    check_eq(nodes['libvirt-2-storage']['drv'], 'nbd', 'SAN disk node')
    check(not any(n.startswith('libvirt-1-') for n in nodes),
          f'a node for the empty cdrom: {sorted(nodes)}')
    lv.destroy('hc-nodes')

    # With a filter on every disk: each device's root is its hostcache
    # node, whose file child is the predicted node of that disk's image.
    placements = [{'alias': d.alias, 'node': f'hc-{d.target}',
                   'file': tops[d.alias], 'opts': {'mode': 'write-through'}}
                  for d in disks]
    lv.define(L.add_hostcache_xml(xml, placements))
    lv.start_domain('hc-nodes')
    for d in disks:
        L.check_placement(lv, 'hc-nodes', d.alias, f'hc-{d.target}',
                          tops[d.alias], d.path)
    # libvirt's own view still names the image, not the filter.
    blk = lv.virsh('domblklist', 'hc-nodes').stdout
    check(disks[0].path in blk, f'domblklist: {blk}')
    check('custom-argv' in lv.domain_log('hc-nodes'),
          'no custom-argv taint in the domain log')
    lv.destroy('hc-nodes')

    # The recipe is reversible: without the filters, the XML starts as
    # before and the devices sit on libvirt's nodes again.
    xml3 = L.remove_hostcache_xml(lv.dumpxml('hc-nodes', inactive=True),
                                  [p['node'] for p in placements])
    check('hostcache' not in xml3, 'filter left in the XML')
    lv.define(xml3)
    lv.start_domain('hc-nodes')
    for d in disks:
        check_eq(L.device_root(lv, 'hc-nodes', d.alias), tops[d.alias],
                 f'{d.alias} root after removal')
    lv.stop()


def _chunks(console):
    """[(offset, length, sha256)] the guest's verify job reported."""
    return [(int(o), int(n), h) for o, n, h in
            re.findall(r'^HC-CHUNK (\d+) (\d+) ([0-9a-f]{64})', console,
                       re.M)]


def _check_chunks_on_image(path, chunks):
    with open(path, 'rb') as f:
        for off, n, want in chunks:
            f.seek(off)
            got = hashlib.sha256(f.read(n)).hexdigest()
            check_eq(got, want, f'image bytes at {off} (+{n})')


def test_guest_through_persistent_filter():
    check(L.guest_available(), 'build/guest missing: scripts/make-guest.sh')
    wd = tmpdir('hclv-')
    lv = _libvirtd(wd)
    img = make_file(os.path.join(wd, 'vda.raw'), 64 * MiB)
    console = os.path.join(wd, 'console.txt')
    # on_poweroff=restart: when the job is done the guest powers off and
    # libvirt resets it (same QEMU process, same block graph); the test
    # suspends it while the kernel boots again and reads the filter's
    # counters ('preserve' is not supported by the QEMU driver).
    xml = L.domain_xml('hc-guest', [L.Disk(img)], console=console,
                       guest_cmdline='hc.job=verify hc.chunks=12 hc.hot=4 '
                                     'hc.rounds=4 hc.seed=7',
                       on_poweroff='restart')
    top = L.predict_top_nodes(xml)['ua-disk0']
    xml = L.add_hostcache_xml(xml, [{
        'alias': 'ua-disk0', 'node': 'hc-vda', 'file': top,
        'opts': {'mode': 'write-through', 'ram-size': 32 * MiB}}])
    lv.define(xml)
    lv.start_domain('hc-guest')
    L.check_placement(lv, 'hc-guest', 'ua-disk0', 'hc-vda', top, img)
    L.wait_console(console, '^HC-DONE', timeout=150, lv=lv, dom='hc-guest')
    lv.virsh('suspend', 'hc-guest')
    text = L.console_text(console)
    first = text[:text.index('HC-DONE')]
    check('HC-STEP write' not in text[len(first):],
          'the restarted guest wrote before it was suspended')
    m = re.search(r'^HC-RESULT (\w+).*$', first, re.M)
    check(m is not None and m.group(1) == 'ok', f'guest verify: {first}')
    st = L.hostcache_stats(lv, 'hc-guest', 'hc-vda')
    # The hot step re-reads 4 chunks of 64 KiB 4 times with O_DIRECT: at
    # least 3 of the 4 rounds are served by the RAM tier.
    check(st['read-hit-bytes'] >= 3 * 4 * 65536,
          f'read-hit-bytes {st["read-hit-bytes"]} < 3 rounds x 4 chunks:'
          f' {st}')
    check(st['writes'] > 0 and st['origin-errors'] == 0, f'stats: {st}')
    # Every chunk the guest wrote through the filter is on the image.
    chunks = _chunks(first)
    check_eq(len(chunks), 12, 'HC-CHUNK lines')
    lv.stop()
    _check_chunks_on_image(img, chunks)


def _workload_rounds(console):
    return [(int(r), int(e)) for r, e in
            re.findall(r'^HC-WORKLOAD round=(\d+) .*errors=(\d+)', console,
                       re.M)]


def _wait_rounds(console, n, lv, dom, timeout=90):
    start = len(_workload_rounds(L.console_text(console)))
    deadline = time.monotonic() + timeout
    while len(_workload_rounds(L.console_text(console))) < start + n:
        check(time.monotonic() < deadline,
              f'guest made no progress:\n{L.console_text(console)[-2000:]}')
        check(lv.domstate(dom).startswith('running'),
              f'{dom} is {lv.domstate(dom)}')
        time.sleep(0.3)


def test_live_insert_reopen_remove():
    check(L.guest_available(), 'build/guest missing: scripts/make-guest.sh')
    wd = tmpdir('hclv-')
    lv = _libvirtd(wd)
    img = make_file(os.path.join(wd, 'vda.raw'), 64 * MiB)
    console = os.path.join(wd, 'console.txt')
    # The guest reads and writes (25 %) 4 KiB blocks of its first 256 KiB
    # in an endless loop; the filter goes in and out under it.
    xml = L.domain_xml('hc-live', [L.Disk(img)], console=console,
                       guest_cmdline='hc.job=workload hc.size=262144 '
                                     'hc.count=60 hc.rounds=0 hc.wpct=25')
    lv.define(xml)
    events = lv.events()
    lv.start_domain('hc-live')
    dom = 'hc-live'
    _wait_rounds(console, 1, lv, dom)
    # Data outside the guest's region, written before the filter exists.
    out = lv.qemu_io(dom, 'ua-disk0', 'write -P 0x5a 32M 1M')
    check('wrote 1048576/1048576' in out, f'qemu-io write: {out}')

    below = L.insert_live(lv, dom, 'ua-disk0', 'hc-vda',
                          mode='write-through', ram_size=16 * MiB)
    check_eq(below, 'libvirt-1-storage', 'node under the filter')
    L.check_placement(lv, dom, 'ua-disk0', 'hc-vda', 'libvirt-1-storage',
                      img)
    check('custom-monitor' in lv.domain_log(dom), 'no custom-monitor taint')
    _wait_rounds(console, 2, lv, dom)
    for _ in range(2):
        out = lv.qemu_io(dom, 'ua-disk0', 'read -P 0x5a 32M 1M')
        check('read 1048576/1048576' in out and 'fail' not in out,
              f'qemu-io read through the filter: {out}')
    st = L.hostcache_stats(lv, dom, 'hc-vda')
    check_eq(st['mode'], 'write-through', 'mode')
    check(st['read-hits'] > 0, f'no read hits after insertion: {st}')
    check(st['writes'] > 0, f'guest writes did not pass the filter: {st}')

    # Live option changes (blockdev-reopen under the running guest).
    # write-back: 1 MiB at 40M goes to RAM; the destager writes it back in
    # the background (or the reopen below does).
    L.reopen_live(lv, dom, 'hc-vda', mode='write-back', ram_size=16 * MiB)
    out = lv.qemu_io(dom, 'ua-disk0', 'write -P 0xa5 40M 1M')
    check('wrote 1048576/1048576' in out, f'qemu-io write: {out}')
    st = L.hostcache_stats(lv, dom, 'hc-vda')
    check_eq(st['mode'], 'write-back', 'mode after reopen')
    check(st['dirty-bytes'] + 4096 * st['destaged-blocks'] >= MiB,
          f'the write did not take the write-back path: {st}')
    # write-through: the reopen writes the dirty data back.
    L.reopen_live(lv, dom, 'hc-vda', mode='write-through', ram_size=16 * MiB)
    st = L.hostcache_stats(lv, dom, 'hc-vda')
    check_eq(st['dirty-bytes'], 0, 'dirty-bytes after write-through')
    with open(img, 'rb') as f:
        f.seek(40 * MiB)
        check(f.read(MiB) == b'\xa5' * MiB, 'image bytes at 40M after '
              'reopen to write-through')
    # pass-through drops the RAM tier; the guest's reads go on, no hits.
    L.reopen_live(lv, dom, 'hc-vda', mode='pass-through', ram_size=16 * MiB)
    hits = L.hostcache_stats(lv, dom, 'hc-vda')['read-hits']
    _wait_rounds(console, 1, lv, dom)
    st = L.hostcache_stats(lv, dom, 'hc-vda')
    check_eq(st['mode'], 'pass-through', 'mode after reopen')
    check_eq(st['ram-used'], 0, 'ram-used in pass-through')
    check_eq(st['read-hits'], hits, 'hits in pass-through')

    # Live removal: the device is back on libvirt's node, filter gone.
    check_eq(L.remove_live(lv, dom, 'ua-disk0', 'hc-vda'),
             'libvirt-1-storage', 'node the device returns to')
    check_eq(L.device_root(lv, dom, 'ua-disk0'), 'libvirt-1-storage',
             'root after removal')
    check('hc-vda' not in L.block_nodes(lv, dom), 'filter node left')
    _wait_rounds(console, 1, lv, dom)
    for pat, off in (('0x5a', '32M'), ('0xa5', '40M')):
        out = lv.qemu_io(dom, 'ua-disk0', f'read -P {pat} {off} 1M')
        check('read 1048576/1048576' in out and 'fail' not in out,
              f'qemu-io read after removal: {out}')
    rounds = _workload_rounds(L.console_text(console))
    check(all(e == 0 for _, e in rounds), f'guest I/O errors: {rounds}')
    check(lv.domstate(dom).startswith('running'), 'guest not running')
    lv.destroy(dom)
    # Events: start and stop only; libvirt does not see the graph change.
    ev = events.stop()
    check(any('lifecycle' in e and 'Started' in e for e in ev), f'{ev}')
    check(any('lifecycle' in e and 'Stopped' in e for e in ev), f'{ev}')
    check(not any('device-removed' in e or 'block-job' in e for e in ev),
          f'unexpected events: {ev}')
    lv.stop()
    with open(img, 'rb') as f:
        f.seek(32 * MiB)
        check(f.read(MiB) == b'\x5a' * MiB, 'image bytes at 32M')
        f.seek(40 * MiB)
        check(f.read(MiB) == b'\xa5' * MiB, 'image bytes at 40M')



def test_libvirt_operations_with_filter():
    """What libvirt does with a filter above its nodes: taints, resize and
    disk-only snapshots fine, hot-unplug leaves the filter and libvirt's
    node behind (hostcached deletes them)."""
    wd = tmpdir('hclv-')
    lv = _libvirtd(wd)
    base = make_file(os.path.join(wd, 'base.raw'), 64 * MiB, pattern=0)
    top = _qcow2(os.path.join(wd, 'top.qcow2'), base, 'raw')
    vdb = make_file(os.path.join(wd, 'vdb.raw'), 32 * MiB, pattern=0)
    disks = [L.Disk(top, 'qcow2', 'ua-disk0', 'vda'),
             L.Disk(vdb, 'raw', 'ua-disk1', 'vdb')]
    # A guest that sits idle: PCI hot-unplug needs its cooperation.
    check(L.guest_available(), 'build/guest missing: scripts/make-guest.sh')
    console = os.path.join(wd, 'console.txt')
    xml = L.domain_xml('hc-ops', disks, console=console,
                       guest_cmdline='hc.job=hold')
    tops = L.predict_top_nodes(xml)
    xml = L.add_hostcache_xml(xml, [
        {'alias': d.alias, 'node': f'hc-{d.target}', 'file': tops[d.alias]}
        for d in disks])
    dom = 'hc-ops'
    lv.define(xml)
    events = lv.events()
    lv.start_domain(dom)
    log = lv.domain_log(dom)
    for taint in ('custom-argv', 'custom-device'):
        check(f'tainted: {taint}' in log, f'no {taint} taint:\n{log}')
    out = lv.qemu_io(dom, 'ua-disk0', 'write -P 0x11 0 1M')
    check('wrote 1048576/1048576' in out, f'qemu-io write: {out}')

    # Block jobs through the filter: tests/driver/test_block_jobs.py.

    # virsh blockresize resizes libvirt's node, under the filter: QEMU tells
    # only that node's direct parents, so the filter and the device keep
    # the old size.  Resizing the filter node itself (it passes the
    # truncate down) reaches the device.
    def dev_size():
        for b in lv.qmp(dom, 'query-block'):
            if b['qdev'] == L.backend_path('ua-disk1'):
                check_eq(b['inserted']['node-name'], 'hc-vdb', 'vdb root')
                return b['inserted']['image']['virtual-size']
        raise TestFailure('vdb not in query-block')

    lv.virsh('blockresize', dom, 'vdb', '48M')
    check_eq(L.block_nodes(lv, dom)[tops['ua-disk1']]['image']
               ['virtual-size'], 48 * MiB, "libvirt's node after blockresize")
    check_eq(dev_size(), 32 * MiB, 'device size after virsh blockresize')
    lv.qmp(dom, 'block_resize', **{'node-name': 'hc-vdb'}, size=48 * MiB)
    check_eq(dev_size(), 48 * MiB, 'device size after block_resize of '
             'the filter node')
    check_eq(os.path.getsize(vdb), 48 * MiB, 'image size')

    # A disk-only external snapshot puts the overlay below the filter.
    snap = os.path.join(wd, 'snap.qcow2')
    lv.virsh('snapshot-create-as', dom, 's1', '--disk-only', '--no-metadata',
             '--diskspec', f'vda,file={snap}', '--diskspec',
             'vdb,snapshot=no')
    root = L.device_root(lv, dom, 'ua-disk0')
    check_eq(root, 'hc-vda', 'vda root after snapshot')
    overlay = L.child_of(lv, dom, 'hc-vda')
    check_eq(L.block_nodes(lv, dom)[overlay]['image']['filename'], snap,
             'node under the filter after snapshot')
    check_eq(L.child_of(lv, dom, overlay, 'backing'), tops['ua-disk0'],
             'overlay backing')
    out = lv.qemu_io(dom, 'ua-disk0', 'read -P 0x11 0 1M')
    check('read 1048576/1048576' in out and 'fail' not in out,
          f'old data through filter + overlay: {out}')
    out = lv.qemu_io(dom, 'ua-disk0', 'write -P 0x22 1M 1M')
    check('wrote 1048576/1048576' in out, f'qemu-io write: {out}')

    # Hot-unplug: the device goes, libvirt's blockdev-del of its node fails
    # ('in use' by the filter), both stay open until someone deletes them.
    L.wait_console(console, '^HC-READY', lv=lv, dom=dom)
    lv.virsh('detach-disk', dom, 'vdb', '--live')
    events.wait_for(r"device-removed.*ua-disk1")
    nodes = L.block_nodes(lv, dom)
    check('hc-vdb' in nodes and tops['ua-disk1'] in nodes,
          f'nodes after unplug: {sorted(nodes)}')
    lv.qmp(dom, 'blockdev-del', **{'node-name': 'hc-vdb'})
    lv.qmp(dom, 'blockdev-del', **{'node-name': tops['ua-disk1']})
    nodes = L.block_nodes(lv, dom)
    check('hc-vdb' not in nodes and tops['ua-disk1'] not in nodes,
          f'nodes after cleanup: {sorted(nodes)}')
    events.stop()
    lv.stop()
    # The write after the snapshot went to the overlay, the one before it
    # stayed in the old top.
    run([paths.QEMU_IO, '-r', '-f', 'qcow2', '-c', 'read -P 0x22 1M 1M',
         '-c', 'read -P 0x11 0 1M', snap])
    r = run([paths.QEMU_IO, '-r', '-f', 'qcow2', '-c', 'read -P 0 1M 1M',
             top])
    check('Pattern verification failed' not in r.stdout,
          f'old top changed after the snapshot: {r.stdout}')


def test_migrate_live_between_two_libvirtds():
    """virsh migrate --live between two private libvirtds, hostcache in the
    domain XML in write-back mode: dirty data written on the source is
    read back on the destination and is on the image afterwards; the
    destination warms up with the source's hot set (hot-set, the default);
    the guest's I/O goes on without errors."""
    check(L.guest_available(), 'build/guest missing: scripts/make-guest.sh')
    wd = tmpdir('hclv-')
    lo = 20000 + (os.getpid() % 400) * 100
    a = _libvirtd(wd, name='host-a', migration_ports=(lo, lo + 49))
    b = _libvirtd(wd, name='host-b', migration_ports=(lo + 50, lo + 99))
    img = make_file(os.path.join(wd, 'vda.raw'), 64 * MiB)
    console = os.path.join(wd, 'console.txt')
    xml = L.domain_xml('hc-mig', [L.Disk(img)], console=console,
                       memory_mib=128,
                       guest_cmdline='hc.job=workload hc.size=262144 '
                                     'hc.count=60 hc.rounds=0 hc.wpct=25')
    top = L.predict_top_nodes(xml)['ua-disk0']
    xml = L.add_hostcache_xml(xml, [{
        'alias': 'ua-disk0', 'node': 'hc-vda', 'file': top,
        'opts': {'mode': 'write-back', 'ram-size': 32 * MiB}}])
    dom = 'hc-mig'
    a.define(xml)
    ev_a, ev_b = a.events(), b.events()
    a.start_domain(dom)
    _wait_rounds(console, 1, a, dom)
    out = a.qemu_io(dom, 'ua-disk0', 'write -P 0x3c 48M 2M')
    check('wrote 2097152/2097152' in out, f'qemu-io write: {out}')
    # a hot set on the source (read twice): the destination warms up with it
    for _ in range(2):
        out = a.qemu_io(dom, 'ua-disk0', 'read 8M 4M')
        check('read 4194304/4194304' in out, f'qemu-io read: {out}')

    L.migrate(a, b, dom)
    check(dom not in a.list_domains('--state-running'),
          'still running on the source')
    check(b.domstate(dom).startswith('running'), 'not running on dest')
    L.check_placement(b, dom, 'ua-disk0', 'hc-vda', top, img)
    st = L.hostcache_stats(b, dom, 'hc-vda')
    check_eq(st['mode'], 'write-back', 'mode on the destination')
    # plain virsh migrate warms the destination up (the driver's own
    # migration section; libvirt starts it paused and continues it)
    poll('the destination warmed up', lambda: L.hostcache_stats(
        b, dom, 'hc-vda')['warm-up-state'] == 'done', timeout=120)
    st = L.hostcache_stats(b, dom, 'hc-vda')
    check(st['warm-up-blocks'] >= 1024 and st['ram-blocks'] >= 1024,
          f'warm-up through libvirt: {st["warm-up-blocks"]} hot blocks '
          f'received, {st["ram-blocks"]} in RAM')
    out = b.qemu_io(dom, 'ua-disk0', 'read -P 0x3c 48M 2M')
    check('read 2097152/2097152' in out and 'fail' not in out,
          f'source data read on the destination: {out}')
    _wait_rounds(console, 1, b, dom)
    ev_a.wait_for(r"lifecycle.*'hc-mig': Stopped Migrated")
    ev_b.wait_for(r"lifecycle.*'hc-mig': Resumed Migrated")

    rounds = _workload_rounds(L.console_text(console))
    check(all(e == 0 for _, e in rounds), f'guest I/O errors: {rounds}')
    ev_a.stop()
    ev_b.stop()
    a.stop()
    b.stop()
    with open(img, 'rb') as f:
        f.seek(48 * MiB)
        check(f.read(2 * MiB) == b'\x3c' * (2 * MiB), 'image at 48M')


_MIGRATE_HOOK = """#!/usr/bin/python3
# /etc/libvirt/hooks/qemu of the destination: argv = domain, operation,
# sub-operation, extra; for 'migrate begin' the incoming domain XML is on
# stdin and what is printed replaces it (nothing printed: unchanged).
# Must not call libvirt.  Acts on domains whose name has 'hook' in it.
# libvirtd runs it with an environment of its own: the path to the
# hostcache package is written in.
import sys
sys.path.insert(0, {lib!r})
dom, op, sub = sys.argv[1:4]
with open({log!r}, 'a') as f:
    f.write(' '.join(sys.argv[1:]) + '\\n')
if op == 'migrate' and sub == 'begin' and 'hook' in dom:
    from hostcache import libvirt as L
    xml = sys.stdin.read()
    if 'hostcache' not in xml:
        tops = L.predict_top_nodes(xml)
        sys.stdout.write(L.add_hostcache_xml(xml, [{{
            'alias': 'ua-disk0', 'node': 'hc-vda',
            'file': tops['ua-disk0'], 'opts': {{'mode': 'write-through'}}}}]))
"""


def test_migrate_live_inserted_filter():
    """A filter inserted with QMP is not in the domain XML.  A plain
    migration leaves it behind (the destination runs without it; the
    source wrote its dirty data back at inactivation).  A destination XML
    (--xml) or the destination's qemu hook ('migrate begin' rewrites the
    incoming XML) puts it on the destination.  No guest OS needed: the
    data goes through the device with HMP qemu-io."""
    wd = tmpdir('hclv-')
    lo = 20000 + (os.getpid() % 400) * 100
    hook_log = os.path.join(wd, 'hook.log')
    python_dir = os.path.dirname(os.path.dirname(L.__file__))
    hook = _MIGRATE_HOOK.format(lib=python_dir, log=hook_log)
    a = _libvirtd(wd, name='host-a', migration_ports=(lo, lo + 49))
    b = _libvirtd(wd, name='host-b', migration_ports=(lo + 50, lo + 99),
                  hooks={'qemu': hook})
    imgs = {}
    for n, dom in enumerate(('hc-bare', 'hc-xml', 'hc-hook')):
        imgs[dom] = make_file(os.path.join(wd, f'{dom}.raw'), 16 * MiB,
                              pattern=0)
        a.define(L.domain_xml(dom, [L.Disk(imgs[dom])], memory_mib=64))
        a.start_domain(dom)
        L.insert_live(a, dom, 'ua-disk0', 'hc-vda', mode='write-back',
                      max_dirty_age_ms=3600000)
        out = a.qemu_io(dom, 'ua-disk0', f'write -P {0x71 + n} 4M 1M')
        check('wrote 1048576/1048576' in out, f'qemu-io write: {out}')
        check('hostcache' not in a.dumpxml(dom), 'filter in the live XML')

    L.migrate(a, b, 'hc-bare')
    check_eq(L.device_root(b, 'hc-bare', 'ua-disk0'), 'libvirt-1-storage',
             'device root on the destination, plain migration')
    live = a.virsh('dumpxml', '--migratable', 'hc-xml').stdout
    L.migrate(a, b, 'hc-xml', dest_xml=L.add_hostcache_xml(live, [{
        'alias': 'ua-disk0', 'node': 'hc-vda',
        'file': L.predict_top_nodes(live)['ua-disk0']}]))
    L.migrate(a, b, 'hc-hook')
    with open(hook_log) as f:
        check('hc-hook migrate begin' in f.read(), 'hook not run')
    for dom in ('hc-xml', 'hc-hook'):
        L.check_placement(b, dom, 'ua-disk0', 'hc-vda', 'libvirt-1-storage',
                          imgs[dom])
    check_eq(L.hostcache_stats(b, 'hc-hook', 'hc-vda')['mode'],
             'write-through', 'mode from the hook')
    for n, dom in enumerate(('hc-bare', 'hc-xml', 'hc-hook')):
        out = b.qemu_io(dom, 'ua-disk0', f'read -P {0x71 + n} 4M 1M')
        check('read 1048576/1048576' in out and 'fail' not in out,
              f'{dom}: source write-back data on the destination: {out}')
    a.stop()
    b.stop()
    for n, dom in enumerate(('hc-bare', 'hc-xml', 'hc-hook')):
        with open(imgs[dom], 'rb') as f:
            f.seek(4 * MiB)
            check(f.read(MiB) == bytes([0x71 + n]) * MiB,
                  f'{dom}: image at 4M')

if __name__ == '__main__':
    L.main(globals())
