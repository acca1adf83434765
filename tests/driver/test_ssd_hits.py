#!/usr/bin/python3
"""Demotion and promotion through the persistent SSD tier of hostcache (the
`ssd` child), seen from an NBD client of a qemu-storage-daemon export:
clean blocks evicted from RAM go to the SSD and are served from there
(checked against their CRC) after a RAM miss and after a clean restart,
and a hit on the SSD tier sends nothing to the origin.

The origin file read with os.pread is the truth throughout; reads go
through hostcache.nbd (simple replies: every read reaches the cache); the
SSD file is read with hostcache.ssdfile, and ssdfile.wrong_entries() (the
entries a restart would serve with data other than the origin's) must
always be empty.  Shared set-up: hostcache.ssdtier.

HC_SEED repeats a run (the seed is printed).
"""

import os
import random

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq, poll
from hostcache.nbdkit import LoggedNbdkit
from hostcache.paths import QEMU_IO
from hostcache.procs import run
from hostcache.qemu import StorageDaemon, nbd_export, pread_file, qemu_io
from hostcache.qmp import node_stats
from hostcache.runner import main
from hostcache.ssdtier import (BS, FAILED_MSG, SEED, SsdExport,
                               check_no_wrong_entries, settle, subdir,
                               warm_pass, warm_setup)


def test_demote_and_promote():
    d, img, ssd, hx = warm_setup('promote')
    try:
        st = hx.ssd_stats()
        nslots, data_off = ssdfile.layout(8 * MiB, BS)
        check_eq((st['ssd-active'], st['ssd-size'], st['ssd-used'],
                  st['ssd-recovered'], st['ssd-hits'], st['ssd-demotions']),
                 (True, nslots * BS, 0, 0, 0, 0),
                 '(active, size, used, recovered, hits, demotions) of a '
                 'freshly formatted SSD')
        sb, copies = ssdfile.read_super(ssd)
        check(sb and all(copies), f'not formatted: {copies}')
        check_eq((sb['state'], sb['block_size'], sb['nslots'],
                  sb['data_offset'], sb['origin_id'], sb['origin_size']),
                 (ssdfile.STATE_OPEN, BS, nslots, data_off, img, 8 * MiB),
                 'superblock of the SSD in use')
        c = hx.client()
        warm_pass(c, img, 4 * MiB, order=random.Random(SEED))
        poll('demotions', lambda: hx.stats()['ssd-used'] > 0)
        # once quiet, what the stats count as on the SSD is on disk
        settle(hx)
        st = hx.ssd_stats()
        ents = ssdfile.entries(ssd)
        check(len(ents) >= 64, f'few blocks demoted: {len(ents)}, {st}')
        with open(ssd, 'rb') as f:
            for blk, (slot, _) in ents.items():
                check(os.pread(f.fileno(), BS, data_off + slot * BS) ==
                      pread_file(img, blk * BS, BS),
                      f'slot {slot} does not hold block {blk}\'s data')
        check_no_wrong_entries(ssd, img, 'after demotion')
        s1 = hx.stats()
        warm_pass(c, img, 4 * MiB, order=random.Random(SEED + 1))
        s2 = hx.stats()
        hits = s2['ssd-hits'] - s1['ssd-hits']
        check(hits > 0 and s2['ssd-hit-bytes'] > s1['ssd-hit-bytes'],
              f'second pass: no SSD hits: {s2}')
        check_eq((s2['ssd-corrupt'], s2['ssd-errors'], s2['ssd-active']),
                 (0, 0, True), '(corrupt, errors, active)')
        c.close()
    finally:
        hx.stop()
    check(FAILED_MSG not in hx.log(), hx.log())


def test_warm_restart_after_clean_close():
    d, img, ssd, hx = warm_setup('clean')
    try:
        c = hx.client()
        warm_pass(c, img, 4 * MiB, order=random.Random(SEED))
        poll('demotions', lambda: hx.stats()['ssd-used'] >= 256 * KiB)
        c.close()
    finally:
        log = hx.quit()
    check(FAILED_MSG not in log, log)
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['state'], ssdfile.STATE_CLEAN, 'superblock state after a '
             'clean close')
    n = len(ssdfile.entries(ssd))
    check(n >= 64, f'only {n} entries on the SSD after a clean close')
    check_no_wrong_entries(ssd, img, 'after a clean close')
    hx = SsdExport(d, img, ssd, name='qsd2',
                   hc={'ram-size': 256 * KiB, 'seq-cutoff': 0})
    try:
        st = hx.stats()
        check_eq((st['ssd-recovered'], st['ssd-used'], st['ssd-active']),
                 (n, n * BS, True), '(recovered, used, active) after a '
                 'clean restart')
        check_eq(st['read-misses'] + st['read-hits'], 0, 'reads so far')
        c = hx.client()
        warm_pass(c, img, 4 * MiB)
        st = hx.stats()
        check(st['ssd-hits'] >= n // 2 and st['ssd-hit-bytes'] > 0,
              f'the recovered blocks were not served from the SSD: {st}')
        check_eq(st['ssd-corrupt'], 0, 'ssd-corrupt')
        c.close()
    finally:
        hx.stop()



def test_ssd_hit_through_nbd_export_sends_nothing():
    """A read served from the SSD tier sends nothing to the origin (the
    same check as test_hits_local.py, for blocks held by the SSD tier
    instead of RAM): the origin is nbdkit's memory plugin behind its log
    filter, the hostcache node has a RAM tier of 4 blocks and an SSD tier,
    and is read through an NBD export.  The NBD server asks block status
    for every structured read; the driver once passed it to the origin for
    blocks only the SSD tier held, so each SSD-tier hit cost the SAN block
    status round trips (make bench, figure h: 2 NBD_CMD_BLOCK_STATUS per
    SSD hit, SSD hits at 0.7x the reads of a local file at QD1)."""
    # Data in every other block, holes between: the origin's extents are
    # one block long, so the NBD client node's block-status cache (one
    # data extent) does not hide what each read costs the origin.
    work = subdir('hits-origin')
    origin = LoggedNbdkit(work, 'o1', ('memory', str(16 * MiB)))
    blocks = [2 * i * BS for i in range(32)]
    run([QEMU_IO, '-f', 'raw'] +
        [a for off in blocks for a in ('-c', f'write -P 0x5a {off} 4k')] +
        [origin.uri])
    ssd = os.path.join(work, 'ssd.img')
    with open(ssd, 'wb') as f:
        f.truncate(4 * MiB)
    qsd = StorageDaemon(work)
    qsd.qmp.cmd('blockdev-add', driver='nbd', **{'node-name': 'origin'},
                server={'type': 'unix', 'path': origin.sock})
    qsd.qmp.cmd('blockdev-add', driver='file', **{'node-name': 'ssd0'},
                filename=ssd)
    qsd.qmp.cmd('blockdev-add', driver='hostcache', **{'node-name': 'hc0'},
                file='origin', ssd='ssd0', **{'ram-size': 4 * BS})
    opts, _ = nbd_export(qsd, 'hc0', 'hc0', work)
    def read_all(offsets):
        r = qemu_io(opts, [f'read -P 0x5a {off} 4k' for off in offsets])
        check('failed' not in r.stdout + r.stderr, r.stdout + r.stderr)

    def stats():
        return node_stats(qsd.qmp, 'hc0')

    read_all(blocks)    # misses; all but the last 4 are evicted from RAM
    poll('demotions to the SSD tier',
         lambda: stats()['ssd-demotions'] >= len(blocks) - 4)
    st = stats()
    before = origin.data_requests()

    # Only the blocks on the SSD tier: each hit is promoted to RAM and
    # evicts one of the last 4, whose demotion may still be in flight when
    # it is read (a miss by design).
    read_all(blocks[:-4])
    st2 = stats()
    check_eq(st2['read-misses'], st['read-misses'], 'misses while hitting')
    ssd_hits = st2['ssd-hits'] - st['ssd-hits']
    check(ssd_hits >= len(blocks) - 4,
          f'only {ssd_hits} SSD-tier hits for {len(blocks)} reads')
    new = origin.data_requests()[len(before):]
    counts = {n: new.count(n) for n in sorted(set(new))}
    check(not new, f'{len(new)} origin requests for {len(blocks)} reads '
          f'served from the cache ({ssd_hits} from the SSD tier): {counts} '
          f'(the NBD server asks block status for each read; the hostcache '
          f'node answers it for blocks in RAM but passes it to its origin '
          f'for blocks only the SSD tier holds)')
    qsd.stop()


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
