#!/usr/bin/python3
"""libvirt's block jobs on a disk cached in write-back (a real, private
libvirtd; the project's QEMU with patch 0003).

Each VM's disk vda has a hostcache filter in write-back mode with an SSD
tier above libvirt's node, holding data its origin does not have yet: one
MiB only in RAM (dirty), one MiB in the SSD tier's journal (written, then
flushed: the journal, not the origin, has it).  The data goes through the
device's own BlockBackend (HMP qemu-io), as a guest's would.

- disk-only external snapshot: the old top, now frozen, has the cached
  data; `virsh blockcommit --active --pivot` then commits into it, the
  filter ends up over the base with its cache, every byte reads back
- `virsh blockcopy --finish`: the copy has the cached data, the VM stays
  on its disk; `--pivot`: the filter is over the copy
- `virsh backup-begin`, push and pull: the backup's point in time has the
  cached data and not what was written after the job began
- `virsh migrate --live --copy-storage-all` to a second libvirtd with its
  own storage at the same path: the destination's disk has the data, the
  filter is there over the destination's node

The filter's place in QEMU's graph is checked after every job, the images
themselves after QEMU has closed (and written back) everything.
"""

import os

from hostcache import MiB, paths
from hostcache import libvirt as L
from hostcache.check import check, check_eq, poll
from hostcache.procs import run, tmpdir

SIZE = 32 * MiB
CACHE = None
# (offset, pattern): A on the image before the VM starts; C written and
# flushed (the SSD tier's journal has it); B written last (RAM only).
A, B, C = (0, 0x11), (1 * MiB, 0x22), (2 * MiB, 0x33)
D, E = (3 * MiB, 0x44), (1 * MiB, 0x55)


def _libvirtd(wd, **kw):
    global CACHE
    if CACHE is None:
        CACHE = tmpdir('hcjobs-cache-')
    return L.Libvirtd(wd, cache_dir=CACHE, **kw)


def _qcow2(path, size=SIZE):
    run([paths.QEMU_IMG, 'create', '-q', '-f', 'qcow2', path, str(size)])
    return path


def _image_io(path, cmds, fmt='qcow2'):
    argv = [paths.QEMU_IO, '-r', '-U', '-f', fmt]
    for c in cmds:
        argv += ['-c', c]
    return run(argv + [path], check_rc=False)


def _image_has(path, regions, what, fmt='qcow2'):
    r = _image_io(path, [f'read -P {p} {off} 1M' for off, p in regions], fmt)
    check(r.returncode == 0 and 'Pattern verification failed' not in
          r.stdout, f'{what}: {path} lacks {regions}:\n{r.stdout}{r.stderr}')


def _filter_opts(dom, tier):
    return {'mode': 'write-back', 'ram-size': 64 * MiB,
            'max-dirty-age-ms': 3600000,
            'ssd': {'driver': 'file', 'filename': tier,
                    'node-name': 'hc-vda-ssd'},
            'origin-id': f'{dom}/vda', 'ssd-create': True}


def _define_cached(lv, dom, img, tier):
    """A VM without a guest OS (the tests write through the device) with
    vda = `img` under a write-back filter with an SSD tier `tier`.  It is
    started paused: SeaBIOS, looking for something to boot, would flush the
    disk now and then, and what is dirty when would depend on timing."""
    run(['truncate', '-s', str(16 * MiB), tier])
    lv.define(L.domain_xml(dom, [L.Disk(img, 'qcow2', 'ua-disk0', 'vda')],
                           memory_mib=64))
    xml = lv.dumpxml(dom, inactive=True)
    top = L.predict_top_nodes(xml)['ua-disk0']
    lv.define(L.add_hostcache_xml(xml, [{
        'alias': 'ua-disk0', 'node': 'hc-vda', 'file': top,
        'opts': _filter_opts(dom, tier)}]))


def _write(lv, dom, region, flush=False):
    off, p = region
    out = lv.qemu_io(dom, 'ua-disk0', f'write -P {p} {off} 1M')
    check('wrote 1048576/1048576' in out, f'qemu-io write: {out}')
    if flush:
        lv.hmp(dom, f'qemu-io -d {L.backend_path("ua-disk0")} "flush"')


def _cache_data(lv, dom):
    """C into the SSD tier's journal, B into RAM; checked in the stats."""
    _write(lv, dom, C, flush=True)
    _write(lv, dom, B)
    st = L.hostcache_stats(lv, dom, 'hc-vda')
    check(st['ssd-dirty-bytes'] >= MiB and
          st['dirty-bytes'] >= st['ssd-dirty-bytes'] + MiB,
          f'the origin is not behind the cache: {st}')
    return st


def _reads(lv, dom, regions, what):
    for off, p in regions:
        out = lv.qemu_io(dom, 'ua-disk0', f'read -P {p} {off} 1M')
        check('read 1048576/1048576' in out and 'fail' not in out.lower(),
              f'{what}: pattern {p:#x} at {off}: {out}')


def _filter_over(lv, dom, path):
    """The device reads from the filter, and the filter's file child is a
    node of the image `path`."""
    check_eq(L.device_root(lv, dom, 'ua-disk0'), 'hc-vda', 'device root')
    child = L.child_of(lv, dom, 'hc-vda')
    check(child is not None, 'the filter has no file child')
    nodes = L.block_nodes(lv, dom)
    check_eq(nodes[child]['image']['filename'], path,
             f'image under the filter ({child})')
    return child


def _quit(lv, dom):
    """QEMU closes its nodes (the filter writes everything back) and
    exits; libvirt sees the domain shut off."""
    lv.virsh('qemu-monitor-command', dom, '{"execute":"quit"}', check=False)
    # (a transient domain is gone then)
    poll(f'{dom} shut off', lambda: dom not in lv.list_domains('--state-running') +
         lv.list_domains('--state-paused'), timeout=60)


def _wait_job_done(lv, dom, timeout=120):
    poll(f'{dom}: job done',
         lambda: 'None' in lv.virsh('domjobinfo', dom).stdout.split(
               'Job type:')[-1].splitlines()[0], timeout=timeout)
    r = lv.virsh('domjobinfo', dom, '--completed')
    check('Completed' in r.stdout, f'job did not complete:\n{r.stdout}')


def _start_cached(lv, dom, wd):
    """`dom` on WD/DOM.qcow2 (A on it) under a write-back filter with its
    tier WD/DOM.hcssd, started paused, with B and C held by the cache;
    returns the image."""
    img = _qcow2(os.path.join(wd, f'{dom}.qcow2'))
    run([paths.QEMU_IO, '-f', 'qcow2', '-c', f'write -P {A[1]} {A[0]} 1M', img])
    _define_cached(lv, dom, img, os.path.join(wd, f'{dom}.hcssd'))
    lv.start_domain(dom, paused=True)
    _cache_data(lv, dom)
    return img


def _cached_vm(dom):
    """A private libvirtd running `dom` as _start_cached() makes it;
    returns (work dir, libvirtd, dom, image)."""
    wd = tmpdir('hcjobs-')
    lv = _libvirtd(wd)
    return wd, lv, dom, _start_cached(lv, dom, wd)


def test_snapshot_then_active_commit():
    wd, lv, dom, base = _cached_vm('commit')

    overlay = os.path.join(wd, 'overlay.qcow2')
    lv.virsh('snapshot-create-as', dom, 's1', '--disk-only', '--no-metadata',
             '--diskspec', f'vda,file={overlay}')
    # The old top is frozen as the snapshot: with what the cache held.
    _image_has(base, [A, B, C], 'snapshot (old top)')
    _filter_over(lv, dom, overlay)
    _write(lv, dom, D)

    r = lv.virsh('blockcommit', dom, 'vda', '--active', '--pivot', '--wait',
                 '--timeout', '120', check=False)
    check(r.returncode == 0, f'blockcommit: {r.stderr}')
    node = _filter_over(lv, dom, base)
    check(L.child_of(lv, dom, node, 'backing') is None,
          'base still has a backing node')
    check(not any(n['image']['filename'] == overlay
                  for n in L.block_nodes(lv, dom).values()),
          'the overlay is still open')
    check(overlay not in lv.dumpxml(dom), 'libvirt still names the overlay')
    st = L.hostcache_stats(lv, dom, 'hc-vda')
    check(st['mode'] == 'write-back' and st['ssd-active'], st)
    _reads(lv, dom, [A, B, C, D], 'after the commit')
    # The same filter, with its cache: what was written through it hits.
    hit = (L.hostcache_stats(lv, dom, 'hc-vda')['read-hit-bytes'] -
           st['read-hit-bytes'])
    check(hit >= 3 * MiB, f'{hit} bytes of B, C, D hit after the commit')
    _quit(lv, dom)
    _image_has(base, [A, B, C, D], 'base after commit')


def test_blockcopy_finish_and_pivot():
    wd, lv, dom, top = _cached_vm('copy')

    # --finish: a copy as of the job's end; the VM stays on its disk.
    copy1 = os.path.join(wd, 'copy1.qcow2')
    r = lv.virsh('blockcopy', dom, 'vda', copy1, '--transient-job', '--wait',
                 '--finish', '--timeout', '120', check=False)
    check(r.returncode == 0, f'blockcopy --finish: {r.stderr}')
    _filter_over(lv, dom, top)
    _image_has(copy1, [A, B, C], 'blockcopy --finish')

    _write(lv, dom, C, flush=True)
    _write(lv, dom, B)
    copy2 = os.path.join(wd, 'copy2.qcow2')
    r = lv.virsh('blockcopy', dom, 'vda', copy2, '--transient-job', '--wait',
                 '--pivot', '--timeout', '120', check=False)
    check(r.returncode == 0, f'blockcopy --pivot: {r.stderr}')
    _filter_over(lv, dom, copy2)
    _write(lv, dom, D)
    _reads(lv, dom, [A, B, C, D], 'after the pivot')
    _quit(lv, dom)
    _image_has(copy2, [A, B, C, D], 'the copy after the pivot')


def _backup_xml(wd, mode):
    if mode == 'push':
        return ("<domainbackup mode='push'><disks>"
                "<disk name='vda' backup='yes' type='file'>"
                f"<target file='{wd}/pushed.qcow2'/><driver type='qcow2'/>"
                "</disk></disks></domainbackup>")
    return ("<domainbackup mode='pull'>"
            f"<server transport='unix' socket='{wd}/backup.sock'/><disks>"
            "<disk name='vda' backup='yes' type='file'>"
            f"<scratch file='{wd}/scratch.qcow2'/><driver type='qcow2'/>"
            "</disk></disks></domainbackup>")


def test_backup_push_and_pull():
    wd, lv, dom, top = _cached_vm('backup')

    # Push: the backup has what the guest had written when it began, not
    # what it writes afterwards.
    path = os.path.join(wd, 'push.xml')
    with open(path, 'w') as f:
        f.write(_backup_xml(wd, 'push'))
    lv.virsh('backup-begin', dom, path)
    _write(lv, dom, E)  # over B
    _wait_job_done(lv, dom)
    _filter_over(lv, dom, top)
    _image_has(os.path.join(wd, 'pushed.qcow2'), [A, B, C], 'push backup')
    _reads(lv, dom, [A, E, C], 'after the push backup')

    # Pull: the same through libvirt's NBD export, E now only in the cache.
    st = L.hostcache_stats(lv, dom, 'hc-vda')
    check(st['dirty-bytes'] >= MiB, f'E is not dirty: {st}')
    path = os.path.join(wd, 'pull.xml')
    with open(path, 'w') as f:
        f.write(_backup_xml(wd, 'pull'))
    lv.virsh('backup-begin', dom, path)
    _write(lv, dom, D)
    _write(lv, dom, (E[0], 0x66))
    export = f'nbd+unix:///vda?socket={wd}/backup.sock'
    r = _image_io(export, [f'read -P {p} {off} 1M' for off, p in (A, E, C)] +
                  [f'read -P 0 {D[0]} 1M'], fmt='raw')
    check(r.returncode == 0 and 'Pattern verification failed' not in
          r.stdout, f'pull backup:\n{r.stdout}{r.stderr}')
    lv.virsh('domjobabort', dom)
    _filter_over(lv, dom, top)
    _reads(lv, dom, [A, (E[0], 0x66), C, D], 'after the pull backup')
    _quit(lv, dom)
    _image_has(top, [A, (E[0], 0x66), C, D], 'the disk after the backups')


def test_migrate_copy_storage_all():
    wd = tmpdir('hcjobs-')
    # The same path on both "hosts", a different directory behind it.
    disks = os.path.join(wd, 'disks')
    b_disks = os.path.join(wd, 'b-disks')
    os.makedirs(disks)
    os.makedirs(b_disks)
    lo = 21000 + (os.getpid() % 400) * 100
    a = _libvirtd(wd, name='host-a', migration_ports=(lo, lo + 49))
    b = _libvirtd(wd, name='host-b', migration_ports=(lo + 50, lo + 99),
                  binds={disks: b_disks})
    dom = 'mig'
    img = _start_cached(a, dom, disks)
    # The destination's disk and tier file, empty, at the same paths.
    _qcow2(os.path.join(b_disks, 'mig.qcow2'))
    run(['truncate', '-s', str(16 * MiB), os.path.join(b_disks, 'mig.hcssd')])

    r = a.virsh('migrate', '--live', '--copy-storage-all', '--verbose', dom,
                b.uri, '--migrateuri', 'tcp://127.0.0.1', check=False,
                timeout=300)
    check(r.returncode == 0, f'migrate --copy-storage-all: {r.stderr}')
    b._remember_qemu(dom)
    _filter_over(b, dom, img)
    _reads(b, dom, [A, B, C], 'on the destination')
    _write(b, dom, D)
    _quit(b, dom)
    _image_has(os.path.join(b_disks, 'mig.qcow2'), [A, B, C, D],
               "the destination's disk")


if __name__ == '__main__':
    L.main(globals())
