#!/usr/bin/python3
"""Live migration of a hostcache disk with plain QEMU (issue 10).

Two "host slots" on this machine share the origin; each hop starts a fresh
`-incoming` QEMU in the other slot (hostcache.migrate: VM, Pair).  A
byte model of the disk (one pattern per 512-byte sector) checks every read.

Mechanics (pass with any driver that survives migration):
- ping-pong: HC_MIG_HOPS (default 20, times HC_SOAK) live migrations back
  and forth in write-through, write-back (RAM) and write-back with an SSD
  tier per slot, random writes, write-zeroes, discards, flushes and checked
  reads before and during each migration (while 'active', and held in
  'pre-switchover' before inactivation); after each the origin holds the
  model and the new host reads it all; at the end the origin holds it.
- interrupted migrations with dirty data over a slow origin: cancelled,
  destination killed, origin failing writes: nothing lost, the source
  runs on with its cache and dirty data, writes it back at a later flush,
  and migrates fine afterwards.
- write-back with a paused VM of its own (PausedVM, -S: the firmware never
  turns the disk's write cache off): dirty data in RAM, data in the SSD
  journal, both QEMUs on one SSD tier file; a cancelled or failed
  migration; an origin that cannot be written fails the migration and
  loses nothing.

Migration-aware driver (issue 10; these fail with "needs migration-aware
driver: <key> missing" until it lands):
- warm-up: hit ratio on the source's hot set for off / hot-set / content
  (content switched on by blockdev-reopen, and it must not read the
  origin); a guest write racing the warm-up of the same blocks; a hot set
  larger than the destination's RAM tier, with and without an SSD tier.
- drain: with 32 MiB dirty over a slow origin the source writes back most
  of it during pre-copy (migration-drained-bytes), not in the downtime.

No timing assertions.  Environment: HC_SEED (repeat a run), HC_SOAK (a
factor for the ping-pong's hops; `make soak` sets 10: 200 migrations per
mode), HC_MIG_HOPS (hops per mode, overrides).  Arguments: test name
filters, as for every driver test.
"""

import errno
import json
import os
import random
import re
import subprocess
import threading
import time

from hostcache import KiB, MiB
from hostcache.check import check, check_eq, poll
from hostcache.lines import complete_text
from hostcache.migrate import (BS, DiskModel, HOUR_MS, OriginServer, Pair,
                               Workload, file_origin, need_option, need_stat,
                               new_stat, read_blocks, wait_migration)
from hostcache.paths import QEMU_SYSTEM
from hostcache.procs import PROCS, tmpdir
from hostcache.qemu import make_file, pread_file
from hostcache.qmp import connect_qmp, node_stats
from hostcache.runner import main

WORK = tmpdir('hcmig-')
SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
SOAK = int(os.environ.get('HC_SOAK', 1))
HOPS = int(os.environ.get('HC_MIG_HOPS', 20 * SOAK))
PP_SIZE = 4 * MiB            # ping-pong disk: 1024 cache blocks
PP_BANDWIDTH = 32 * KiB   # max-bandwidth while I/O runs during a hop
DISK0 = {'origin-id': 'disk0'}


def subdir(name):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    return d


def rng_for(tag):
    return random.Random(f'{SEED}-{tag}')


def origin_matches(model, img, what):
    diff = model.diff_file(img)
    check(diff is None, f'seed {SEED} {what}: the origin differs from the '
          f'model: {diff}')


# ---- ping-pong --------------------------------------------------------------

def ping_pong(tag, hc, ssd_size=None):
    d = subdir(tag)
    model = DiskModel.initial(PP_SIZE)
    img = model.write_file(os.path.join(d, 'origin.img'))
    pair = Pair(d, file_origin(img), {**DISK0, **hc}, ssd_size)
    wl = Workload(rng_for(tag), model, img)
    vm = pair.start()
    check(vm.write_cache(), 'the write cache of vd0 is off (did the '
          'firmware drive the device?)')
    dirty = []
    for _ in range(HOPS):
        wl.steps(vm, 15)
        # block 0: the destination reads it at realize (geometry guess),
        # before the source writes it back
        wl.write(vm, 0, BS)
        dirty.append(vm.stats()['dirty-bytes'])
        hop = pair.hop(during=lambda v, phase: wl.step(v),
                       bandwidth=PP_BANDWIDTH)
        vm = pair.vm
        what = f'{tag} after {hop}'
        origin_matches(model, img, what)
        vm.verify(model, what=f'seed {SEED} {what}')
    wl.steps(vm, 10)
    rc = vm.quit()
    check_eq(rc, 0, f'{vm.name} exit status at quit')
    origin_matches(model, img, f'{tag} after the last VM quit')
    if hc.get('mode') == 'write-back':
        check(max(dirty) > 0, f'{tag}: no dirty data at any migration')
    during = sum(h.ops['active'] for h in pair.hops)
    pre = sum(h.ops['pre-switchover'] for h in pair.hops)
    print(f'  {tag}: {pair.summary()}; I/O during the migrations: {during} '
          f'while active, {pre} in pre-switchover; dirty at the start of a '
          f'migration: max {max(dirty)} bytes; operations {wl.counts}')


PP_WB = {'mode': 'write-back', 'ram-size': MiB, 'max-dirty': 512 * KiB,
         'max-dirty-age-ms': HOUR_MS}


def test_ping_pong_write_through():
    ping_pong('pp-wt', {'mode': 'write-through', 'ram-size': MiB})


def test_ping_pong_write_back():
    ping_pong('pp-wb', PP_WB)


def test_ping_pong_write_back_ssd():
    ping_pong('pp-wb-ssd', PP_WB, ssd_size=16 * MiB)


# ---- interrupted migrations -------------------------------------------------

SLOW_SIZE = 32 * MiB
# seq-cutoff 0: the dirty data is written in 1 MiB steps, one stream
WB_BIG = {**DISK0, 'mode': 'write-back', 'max-dirty': 64 * MiB,
          'max-dirty-age-ms': HOUR_MS, 'seq-cutoff': 0}


def dirty_source(tag, nmib, ssd=False, size=SLOW_SIZE, **origin_args):
    """A write-back source over a slow nbdkit origin with nmib MiB dirty
    (ssd: in the journal of an SSD tier, by a guest flush).  Returns
    (dir, model, img, origin server, pair, workload)."""
    d = subdir(tag)
    model = DiskModel.initial(size)
    img = model.write_file(os.path.join(d, 'origin.img'))
    org = OriginServer(d, 'origin', img, **origin_args)
    # a journal a quarter of the tier is written back at once: 256 MiB
    pair = Pair(d, org.blockdev, WB_BIG, ssd_size=(256 * MiB if ssd else None))
    wl = Workload(rng_for(tag), model, img)
    src = pair.start()
    for i in range(nmib):
        wl.write(src, i * MiB, MiB)
    if ssd:
        src.io_ok('flush')
        check_eq(src.stats()['ssd-dirty-bytes'], nmib * MiB,
                 'journaled bytes')
    check_eq(src.stats()['dirty-bytes'], nmib * MiB, 'dirty bytes written')
    return d, model, img, org, pair, wl


def carries_on(tag, model, img, pair, wl):
    """The source after an interrupted migration: its VM runs, it reads
    and writes, writes back at a flush, and migrates."""
    src = pair.vm
    check_eq(src.status(), 'running', f'{tag}: source status')
    check(src.node_active(), f'{tag}: source node inactive')
    src.cmd('migrate-set-parameters', **{'max-bandwidth': 1 << 30})
    wl.steps(src, 20)
    src.verify(model, what=f'seed {SEED} {tag}: source')
    src.write_back_all()
    origin_matches(model, img, f'{tag} after the source flushed')
    pair.hop()
    pair.vm.verify(model, what=f'seed {SEED} {tag}: after a new migration')
    check_eq(pair.vm.quit(), 0, 'exit status at quit')
    origin_matches(model, img, f'{tag} after the last VM quit')


def interrupted(tag, how, ssd=False):
    d, model, img, org, pair, wl = dirty_source(tag, 16, ssd, wdelay_ms=10,
                                                pause=True)
    src = pair.vm
    dst = pair.destination()
    # 4 KiB/s: pre-copy of the VM's RAM cannot end while the test runs
    pair.begin(dst, bandwidth=4096)
    poll('migration active', lambda: src.migration()['status'] == 'active')
    if new_stat(src.stats(), 'migration-drained-bytes') is not None:
        poll('the drain to write something back',
             lambda: src.stats()['migration-drained-bytes'] > 0, timeout=120)
    # nothing reaches the origin from here until resume()
    org.pause()
    dirty1 = src.stats()['dirty-bytes']
    check(dirty1 > 0, f'{tag}: the drain wrote everything back before the '
          'interruption (make the origin slower)')
    if how == 'cancel':
        src.cmd('migrate_cancel')
        want = 'cancelled'
    else:
        dst.kill()
        want = 'failed'
    st = wait_migration(src)
    check_eq(st['status'], want, f'{tag}: migration status ({st})')
    dst.stop()
    check_eq(src.status(), 'running', f'{tag}: source status')
    st = src.stats()
    # (writes the origin had taken in before the pause may still land)
    check(dirty1 - 16 * BS <= st['dirty-bytes'] <= dirty1,
          f'{tag}: dirty bytes after the interruption: {st["dirty-bytes"]}, '
          f'{dirty1} before it')
    if ssd:
        check(st['ssd-active'] and st['ssd-dirty-bytes'] > 0,
              f'{tag}: the SSD tier after the interruption: ssd-active '
              f'{st["ssd-active"]}, ssd-dirty-bytes {st["ssd-dirty-bytes"]}')
    org.resume()
    # the drain is over: dirty data stays dirty (max-dirty-age-ms 1 h,
    # far below max-dirty/2), but for the writes the pause held back and,
    # for a failed migration, what the drain started between the failure
    # and QEMU's clean-up of the migration (a batch at most)
    def settled():
        a = src.stats()['dirty-bytes']
        time.sleep(0.5)
        return a if src.stats()['dirty-bytes'] == a else None
    dirty2 = poll('the write-back to settle', settled, timeout=30)
    check(dirty2 >= dirty1 - 64 * BS, f'{tag}: write-back still draining '
          f'after the migration ended ({dirty1} -> {dirty2} dirty bytes)')
    time.sleep(1.0)
    check_eq(src.stats()['dirty-bytes'], dirty2, f'{tag}: dirty bytes a '
             'second later (the drain must be over)')
    carries_on(tag, model, img, pair, wl)


def test_cancel_during_drain():
    interrupted('cancel', 'cancel')


def test_cancel_during_drain_ssd():
    """The dirty data in the SSD journal: the tier stays on, journal kept."""
    interrupted('cancel-ssd', 'cancel', ssd=True)


def test_destination_killed_during_drain():
    interrupted('killed', 'kill')


def test_origin_fails_writes_during_drain():
    tag = 'origin-fails'
    d, model, img, org, pair, wl = dirty_source(tag, 8, wdelay_ms=1,
                                                write_errors=True)
    src = pair.vm
    with open(img, 'rb') as f:
        before = f.read()
    dirty0 = src.stats()['dirty-bytes']
    org.fail_writes(True)
    dst = pair.destination()
    pair.begin(dst)

    def ended_or_failing():
        st = src.migration()
        if st['status'] in ('completed', 'failed', 'cancelled'):
            return st
        return src.stats()['destage-errors'] > 0 and st['status'] == 'active'

    st = poll('the migration to fail or the drain to meet errors',
              ended_or_failing, timeout=120)
    if st is True:                  # still draining against the errors
        src.cmd('migrate_cancel')
        st = wait_migration(src)
    check(st['status'] in ('failed', 'cancelled'),
          f'{tag}: migration {st["status"]} with an origin that fails every '
          f'write ({st})')
    print(f'  {tag}: migration {st["status"]}: {st.get("error-desc")}')
    dst.stop()
    check_eq(src.stats()['dirty-bytes'], dirty0, f'{tag}: dirty bytes')
    with open(img, 'rb') as f:
        check(f.read() == before, f'{tag}: the origin changed although it '
              'failed every write')
    check(src.stats()['destage-errors'] > 0 or st['status'] == 'failed',
          f'{tag}: no write-back error seen')
    org.fail_writes(False)
    carries_on(tag, model, img, pair, wl)


# ---- warm-up (migration-aware driver) ---------------------------------------

WARM_SIZE = 16 * MiB
HOT = 512                   # hot blocks of the warm-up tests


def warm_source(tag, src_hc, hot=HOT, rdelay_ms=2, origin_dst=None,
                ssd_size=None, runs=False):
    """A source VM over a slow origin that has read a hot set twice.
    runs: the hot set as 16-block runs (read 64 KiB at a time).  Returns
    (model, img, origin server, pair, hot blocks)."""
    d = subdir(tag)
    rng = rng_for(tag)
    model = DiskModel.initial(WARM_SIZE)
    img = model.write_file(os.path.join(d, 'origin.img'))
    org = OriginServer(d, 'origin', img, rdelay_ms=rdelay_ms)
    pair = Pair(d, org.blockdev, {**DISK0, **src_hc}, ssd_size)
    src = pair.start()
    nblk = WARM_SIZE // BS
    if runs:
        starts = rng.sample(range(1, nblk // 16), hot // 16)
        blocks = sorted(s * 16 + i for s in starts for i in range(16))
        for _ in range(2):
            for s in starts:
                src.verify(model, s * 16 * BS, (s + 1) * 16 * BS, 'hot set')
    else:
        blocks = sorted(rng.sample(range(1, nblk), hot))
        for _ in range(2):
            read_blocks(src, model, blocks)
    st = src.stats()
    check(st['ram-blocks'] >= len(blocks), f'{tag}: the source does not '
          f'hold its hot set ({st["ram-blocks"]} blocks in RAM)')
    return d, model, img, org, pair, blocks


def warm_up_done(vm, timeout=120):
    need_stat(vm.stats(), 'warm-up-state')
    poll(f'{vm.name}: warm-up done',
         lambda: vm.stats()['warm-up-state'] == 'done', timeout=timeout)
    return vm.stats()


def warm_up_case(mode):
    tag = f'warm-{mode}'
    need_option('warm-up', mode)
    # content: the source starts without warm-up and switches it on
    # by blockdev-reopen (the option is mutable)
    first = 'off' if mode == 'content' else mode
    hc = {'mode': 'write-through', 'ram-size': 8 * MiB, 'warm-up': first}
    d, model, img, org, pair, hot = warm_source(tag, hc)
    if mode != first:
        pair.vm.reopen(**{'warm-up': mode})
    dst = pair.destination(hc={**pair.hc, 'warm-up': mode})
    reads0 = org.count('Read')
    hop = pair.hop(dst=dst)
    if mode == 'off':
        st = dst.stats()
        check(need_stat(st, 'warm-up-state') in ('none', 'done'),
              f'{tag}: warm-up-state {st["warm-up-state"]}')
        check_eq(need_stat(st, 'warm-up-done'), 0, f'{tag}: warm-up-done')
        check_eq(org.count('Read') - reads0, 0, f'{tag}: origin reads '
                 'after the migration without warm-up')
    else:
        st = warm_up_done(dst)
        blocks = need_stat(st, 'warm-up-blocks')
        check(blocks >= len(hot), f'{tag}: {blocks} hot-list entries '
              f'accepted, the source\'s hot set has {len(hot)}')
        check_eq(need_stat(st, 'warm-up-done'), blocks, f'{tag}: entries '
                 'processed when the warm-up is done')
        origin_reads = org.count('Read') - reads0
        if mode == 'content':
            got = need_stat(st, 'warm-up-bytes-received')
            check(got >= len(hot) * BS, f'{tag}: {got} content bytes '
                  f'received for a hot set of {len(hot) * BS}')
            check_eq(origin_reads, 0, f'{tag}: origin reads during the '
                     'warm-up (content travels in the stream)')
        else:
            check(origin_reads > 0, f'{tag}: the warm-up read nothing from '
                  'the origin')
    ratio = read_blocks(dst, model, hot)
    print(f'  {tag}: {hop}; destination hit ratio on the hot set '
          f'{100 * ratio:.1f}%')
    if mode == 'off':
        check(ratio <= 0.02, f'{tag}: hit ratio {ratio:.3f} without warm-up')
    else:
        check(ratio >= 0.95, f'{tag}: hit ratio {ratio:.3f} on the source\'s '
              'hot set after the warm-up')
    check_eq(dst.quit(), 0, 'exit status at quit')
    origin_matches(model, img, tag)


def test_warm_up_off():
    warm_up_case('off')


def test_warm_up_hot_set():
    warm_up_case('hot-set')


def test_warm_up_content():
    warm_up_case('content')


def test_warm_up_write_race():
    """Guest writes to hot blocks whose warm-up reads are in flight (held
    at the destination's origin server) or not issued yet: the writes win."""
    tag = 'warm-race'
    need_option('warm-up', 'hot-set')
    hc = {'mode': 'write-back', 'ram-size': 8 * MiB, 'warm-up': 'hot-set',
          'max-dirty-age-ms': HOUR_MS}
    d, model, img, org, pair, hot = warm_source(tag, hc, hot=256)
    # the destination reaches the same file through its own server, which
    # the test pauses: the warm-up's reads wait there
    org_b = OriginServer(d, 'origin-b', img, rdelay_ms=2, pause=True)
    dst = pair.destination(origin=org_b.blockdev)
    org_b.pause()
    reads0 = org_b.count('Read')
    pair.hop(dst=dst)
    need_stat(dst.stats(), 'warm-up-state')
    poll('warm-up reads in flight', lambda: org_b.count('Read') > reads0)
    check_eq(dst.stats()['warm-up-state'], 'running',
             f'{tag}: warm-up state while its reads wait')
    # a safety net: were a write to wait for the held warm-up read, the
    # test would hang; the origin then resumes after 30 s (QMP gives up
    # after 60) and the test reports it
    waited = []
    timer = threading.Timer(30, lambda: (waited.append(1), org_b.resume()))
    timer.start()
    wl = Workload(rng_for(tag), model, img)
    try:
        for b in hot:
            wl.write(dst, b * BS, BS)
    finally:
        timer.cancel()
    check(not waited, f'{tag}: guest writes waited for the warm-up\'s '
          'origin reads')
    org_b.resume()
    st = warm_up_done(dst)
    read_blocks(dst, model, hot, 'hot set written during the warm-up')
    print(f'  {tag}: warm-up {st.get("warm-up-done")} of '
          f'{st.get("warm-up-blocks")} entries, stale fills '
          f'{st.get("stale-fills")}')
    check_eq(dst.quit(), 0, 'exit status at quit')
    origin_matches(model, img, tag)


def larger_than_ram(ssd):
    tag = f'warm-big{"-ssd" if ssd else ""}'
    need_option('warm-up', 'hot-set')
    hot = 1536                      # 6 MiB: the destination's RAM holds 1
    hc = {'mode': 'write-through', 'ram-size': 8 * MiB, 'warm-up': 'hot-set'}
    d, model, img, org, pair, blocks = warm_source(
        tag, hc, hot=hot, rdelay_ms=0, ssd_size=(32 * MiB if ssd else None),
        runs=True)
    ram_dst = MiB
    dst = pair.destination(hc={**pair.hc, 'ram-size': ram_dst})
    hop = pair.hop(dst=dst)
    st = warm_up_done(dst)
    check_eq(st['origin-errors'], 0, f'{tag}: origin errors')
    check(st['ram-used'] >= ram_dst * 9 // 10, f'{tag}: RAM tier not '
          f'filled ({st["ram-used"]} of {ram_dst} bytes)')
    check(need_stat(st, 'warm-up-blocks') > ram_dst // BS,
          f'{tag}: hot list cut to the RAM tier')
    if ssd:
        rest = (len(blocks) - ram_dst // BS) * BS
        poll(f'{tag}: the rest demoted to the SSD tier',
             lambda: dst.stats()['ssd-used'] >= rest // 2, timeout=60)
    ratio = read_blocks(dst, model, blocks)
    print(f'  {tag}: {hop}; hit ratio on the hot set {100 * ratio:.1f}%, '
          f'ssd-used {dst.stats().get("ssd-used")}')
    if ssd:
        check(ratio >= 0.5, f'{tag}: hit ratio {ratio:.3f} with RAM and SSD')
    check_eq(dst.quit(), 0, 'exit status at quit')


def test_warm_up_larger_than_ram():
    larger_than_ram(False)


def test_warm_up_larger_than_ram_ssd():
    larger_than_ram(True)


# ---- drain during pre-copy (migration-aware driver) -------------------------

def drain_case(tag, ssd):
    nmib = 32
    d, model, img, org, pair, wl = dirty_source(tag, nmib, ssd,
                                                size=2 * nmib * MiB,
                                                wdelay_ms=2)
    st0 = pair.vm.stats()
    hop = pair.hop()
    st1 = hop.src_stats
    written = (st1['destaged-blocks'] - st0['destaged-blocks']) * BS
    print(f'  {tag}: {hop}; written back {written} bytes, drained during '
          f'pre-copy {st1.get("migration-drained-bytes")}')
    drained = need_stat(st1, 'migration-drained-bytes')
    check(drained >= nmib * MiB * 3 // 4, f'{tag}: {drained} bytes of '
          f'{nmib} MiB drained during pre-copy')
    check(written - drained <= nmib * MiB // 4,
          f'{tag}: {written - drained} of {written} bytes written back after '
          'pre-copy (in the downtime)')
    pair.vm.verify(model, what=f'seed {SEED} {tag}: destination')
    check_eq(pair.vm.quit(), 0, 'exit status at quit')
    origin_matches(model, img, tag)


def test_drain_during_precopy():
    drain_case('drain', False)


def test_drain_during_precopy_ssd():
    drain_case('drain-ssd', True)



# ---- write-back: live migration with dirty data, a paused VM ---------------
# (moved from test_writeback.py: a VM of its own, started with -S, its disk
# on hostcache over the origin file; the migration writes the dirty data
# back, or hands the SSD journal over)

class PausedVM:
    """qemu-system-x86_64 (TCG, no guest OS) with the origin file, hostcache
    in write-back mode and a virtio-blk disk on it; stdout (where HMP
    qemu-io prints) goes to a file.

    Started paused (-S): once the firmware runs it negotiates virtio-blk
    features without a flush command, which turns the disk's write cache
    off (every write then flushed): no dirty data would stay behind."""

    IO = 'qemu-io -d /machine/peripheral/disk0/virtio-backend'

    def __init__(self, d, name, img, extra=(), disk=True, origin=None,
                 ssd=None, ssd_create=True):
        self.qmp_path = os.path.join(d, f'{name}.qmp')
        self.out_path = os.path.join(d, f'{name}.out')
        self.out = open(self.out_path, 'w')
        hc = {'driver': 'hostcache', 'node-name': 'hc0', 'file': 'origin',
              'mode': 'write-back', 'max-dirty-age-ms': HOUR_MS}
        if ssd:
            # this host's own SSD tier (the write-back journal)
            hc['ssd'] = {'driver': 'file', 'filename': ssd}
            hc['ssd-create'] = ssd_create
        argv = [QEMU_SYSTEM, '-M', 'pc', '-accel', 'tcg', '-nodefaults',
                '-display', 'none', '-m', '64', '-S',
                '-qmp', f'unix:{self.qmp_path},server=on,wait=off',
                '-blockdev', json.dumps({'node-name': 'origin', **(origin or {
                    'driver': 'file', 'filename': img})}),
                '-blockdev', json.dumps(hc)]
        if disk:
            argv += ['-device', 'virtio-blk-pci,drive=hc0,id=disk0']
        self.proc = PROCS.start([*argv, *extra], stdout=self.out,
                                stderr=subprocess.STDOUT)
        self.qmp = connect_qmp(self.qmp_path, self.proc)

    def io(self, cmd):
        """Run a qemu-io command on the disk; returns what it printed
        (complete lines: QEMU may still be writing the last one)."""
        before = os.path.getsize(self.out_path)
        self.qmp.hmp(f'{self.IO} "{cmd}"')
        return poll(f'qemu-io output of {cmd!r}',
                    lambda: (lambda t: t if re.search(
                        r'bytes at offset|failed', t) else None)(
                            complete_text(self.out_path, before)))

    def stats(self):
        return node_stats(self.qmp, 'hc0')

    def status(self):
        return self.qmp.cmd('query-status')['status']

    def stop(self):
        self.qmp.close()
        PROCS.stop(self.proc)
        self.out.close()


def migrate(src, dst, d, caps=()):
    sock = os.path.join(d, 'mig.sock')
    for vm in (src, dst):
        if caps:
            vm.qmp.cmd('migrate-set-capabilities', capabilities=[
                {'capability': c, 'state': True} for c in caps])
    dst.qmp.cmd('migrate-incoming', uri=f'unix:{sock}')
    src.qmp.cmd('migrate', uri=f'unix:{sock}')


def migration_end(vm, timeout=60):
    return poll('migration to end', lambda: (lambda st: st if st.get(
        'status') in ('completed', 'failed', 'cancelled') else None)(
            vm.qmp.cmd('query-migrate')), timeout=timeout)


def read_ok(vm, cmd):
    out = vm.io(cmd)
    check('Pattern verification failed' not in out and 'failed' not in out
          and 'bytes at offset' in out, f'{cmd}: {out}')


def test_migration_with_dirty_data():
    migration_case('mig', False)


def test_migration_with_journaled_data():
    """Write-back with an SSD tier on each host: the written data is
    flushed into the source's SSD journal (not on the origin yet) when the
    migration starts."""
    migration_case('mig-ssd', True)


def test_migration_same_host_same_ssd_file():
    """Both QEMUs on one host with one SSD tier file (or a tier on shared
    storage): the incoming node must not lock the file against the
    source, which still writes it until it hands over."""
    migration_case('mig-ssd-shared', True, shared=True)


def migration_case(tag, ssd, shared=False):
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), 16 * MiB)
    ssds = [None, None]
    if ssd:
        ssds = [os.path.join(d, f'{n}.ssd') for n in ('src', 'dst')]
        if shared:
            ssds[1] = ssds[0]
        for p in set(ssds):
            with open(p, 'wb') as f:
                f.truncate(8 * MiB)             # blank: formatted at open
    src = PausedVM(d, 'src', img, ssd=ssds[0])
    dst = None
    try:
        src.io('write -P 0x5a 0 1M')
        src.io('write -P 0x3c 4000 5000')        # unaligned, inside the MiB
        if ssd:
            src.qmp.hmp(f'{PausedVM.IO} "flush"')      # prints nothing
            poll('the flush', lambda: src.stats()['flushes'] > 0)
            st = src.stats()
            check(st['ssd-used'] > 0 and st['destaged-blocks'] == 0,
                  f'the flush did not go to the journal: {st}')
        check(src.stats()['dirty-bytes'] > 0, 'nothing dirty on the source')
        check(pread_file(img, 0, 4) != b'\x5a' * 4,
              'data on the origin before the migration')
        # ssd-create=off does not apply to an activation: a blank tier
        # on the destination is fine, the data comes from the source
        dst = PausedVM(d, 'dst', img, ['-incoming', 'defer'], ssd=ssds[1],
                 ssd_create=False)
        migrate(src, dst, d)
        st = migration_end(src)
        check_eq(st['status'], 'completed', f'migration: {st}')
        want = bytearray(b'\x5a' * MiB)
        want[4000:9000] = b'\x3c' * 5000
        check(pread_file(img, 0, MiB) == want,
              'origin after the migration lacks the written data')
        poll('destination to leave inmigrate',
             lambda: dst.status() != 'inmigrate')
        check_eq(src.status(), 'postmigrate', 'source status')
        dst.qmp.cmd('cont')
        check_eq(dst.status(), 'running', 'destination status')
        read_ok(dst, 'read -P 0x5a 0 4000')
        read_ok(dst, 'read -P 0x3c 4000 5000')
        read_ok(dst, 'read -P 0x5a 9000 1039576')
        # the destination caches and writes back in its turn
        dst.io('write -P 0x77 2M 64k')
        read_ok(dst, 'read -P 0x77 2M 64k')
        dst.qmp.cmd('quit')
        dst.proc.wait(30)
        check_eq(pread_file(img, 2 * MiB, 64 * KiB), b'\x77' * 64 * KiB,
                 'origin after the destination quit')
    finally:
        src.stop()
        if dst:
            dst.stop()


def test_migration_cancelled_or_failed():
    d = subdir('migfail')
    img = make_file(os.path.join(d, 'origin.img'), 16 * MiB)
    src = PausedVM(d, 'src', img)
    try:
        # cancelled during pre-copy (slowed down so it cannot finish)
        src.io('write -P 0x11 0 256k')
        dst = PausedVM(d, 'dst1', img, ['-incoming', 'defer'])
        src.qmp.cmd('migrate-set-parameters', **{'max-bandwidth': 64 * KiB})
        migrate(src, dst, d)
        time.sleep(0.3)
        src.qmp.cmd('migrate_cancel')
        st = migration_end(src)
        check_eq(st['status'], 'cancelled', f'migration: {st}')
        dst.stop()
        check(src.status() in ('prelaunch', 'paused'), src.status())
        check(src.qmp.cmd('query-block')[0]['inserted']['active'],
              'source node not active')
        read_ok(src, 'read -P 0x11 0 256k')
        # failed after the switchover: the destination has no disk device,
        # so it rejects the device state after the source wrote back and
        # inactivated; the source then activates its nodes again
        src.qmp.cmd('migrate-set-parameters', **{'max-bandwidth': 1 << 30})
        src.io('write -P 0x22 1M 256k')
        check(src.stats()['dirty-bytes'] > 0, 'nothing dirty on the source')
        dst = PausedVM(d, 'dst2', img, ['-incoming', 'defer'], disk=False)
        migrate(src, dst, d, caps=['return-path'])
        st = migration_end(src)
        check_eq(st['status'], 'failed', f'migration: {st}')
        dst.stop()
        check(src.status() in ('prelaunch', 'paused'), src.status())
        check(src.qmp.cmd('query-block')[0]['inserted']['active'],
              'source node not active again')
        check_eq(pread_file(img, 1 * MiB, 256 * KiB), b'\x22' * 256 * KiB,
                 'origin after the failed migration')
        read_ok(src, 'read -P 0x11 0 256k')
        read_ok(src, 'read -P 0x22 1M 256k')
        # the source still writes (back)
        src.io('write -P 0x33 2M 256k')
        read_ok(src, 'read -P 0x33 2M 256k')
        check(src.stats()['dirty-bytes'] > 0, 'write-back after reactivation')
        src.qmp.cmd('cont')
        check_eq(src.status(), 'running', 'source status after cont')
        read_ok(src, 'read -P 0x22 1M 256k')
        src.qmp.cmd('quit')
        src.proc.wait(30)
        check_eq(pread_file(img, 2 * MiB, 256 * KiB), b'\x33' * 256 * KiB,
                 'origin after the source quit')
    finally:
        src.stop()



def test_migration_fails_when_origin_cannot_be_written():
    # The origin refuses every write: the source cannot write back, so the
    # migration must fail (a destination would read old data) and the
    # source keeps the data, readable
    d = subdir('migerr')
    img = make_file(os.path.join(d, 'origin.img'), 16 * MiB)
    before = pread_file(img, 0, 64 * KiB)
    origin = {'driver': 'blkdebug', 'image': {'driver': 'file',
                                              'filename': img},
              'inject-error': [{'event': 'none', 'iotype': 'write',
                                'errno': errno.EIO}]}
    src = PausedVM(d, 'src', img, origin=origin)
    dst = None
    try:
        src.io('write -P 0x5a 0 64k')
        check(src.stats()['dirty-bytes'] > 0, 'nothing dirty on the source')
        dst = PausedVM(d, 'dst', img, ['-incoming', 'defer'])
        migrate(src, dst, d, caps=['return-path'])
        st = migration_end(src)
        check(st['status'] != 'completed', 'migration completed although '
              'the dirty data could not be written back')
        print(f'  migration: {st["status"]}: {st.get("error-desc")}')
        dst.stop()
        check(src.qmp.cmd('query-block')[0]['inserted']['active'],
              'source node not active after the failed migration')
        check(src.stats()['dirty-bytes'] > 0, 'dirty data gone')
        read_ok(src, 'read -P 0x5a 0 64k')
        check_eq(pread_file(img, 0, 64 * KiB), before, 'origin')
    finally:
        src.stop()
        if dst:
            dst.stop()


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat); {HOPS} migrations per '
          'ping-pong')
    main(globals())
