#!/usr/bin/python3
"""A read served from the SSD tier sends nothing to the origin.

The same check as test_hits_local.py, for blocks held by the SSD tier
instead of RAM: the origin is nbdkit's memory plugin behind its log filter
(every request it receives is recorded), the hostcache node has a RAM tier
of 4 blocks and an SSD tier, and is read through an NBD export.

The NBD server asks block status for every structured read.  The driver
answers it for blocks in RAM (4da658b) but passes it to the origin for
blocks only the SSD tier holds, so each SSD-tier hit costs the SAN block
status round trips although the data comes from the local SSD.  make
bench (figure h) shows the price: with a qemu-storage-daemon origin, 2
NBD_CMD_BLOCK_STATUS reach the SAN per SSD hit, and SSD hits run at about
0.7x the reads of a local file through the same export at QD1, against
about 1.0x with an in-process origin.
"""

import os

from hostcache import MiB
from hostcache.check import check, check_eq, poll
from hostcache.nbdkit import LoggedNbdkit
from hostcache.paths import QEMU_IO
from hostcache.procs import run, tmpdir
from hostcache.qemu import StorageDaemon, nbd_export, qemu_io
from hostcache.qmp import node_stats
from hostcache.runner import main

WORK = tmpdir('hcssdbs-')
BS = 4096


def test_ssd_hit_through_nbd_export_sends_nothing():
    # Data in every other block, holes between: the origin's extents are
    # one block long, so the NBD client node's block-status cache (one
    # data extent) does not hide what each read costs the origin.
    origin = LoggedNbdkit(WORK, 'o1', ('memory', str(16 * MiB)))
    blocks = [2 * i * BS for i in range(32)]
    run([QEMU_IO, '-f', 'raw'] +
        [a for off in blocks for a in ('-c', f'write -P 0x5a {off} 4k')] +
        [origin.uri])
    ssd = os.path.join(WORK, 'ssd.img')
    with open(ssd, 'wb') as f:
        f.truncate(4 * MiB)
    qsd = StorageDaemon(WORK)
    qsd.qmp.cmd('blockdev-add', driver='nbd', **{'node-name': 'origin'},
                server={'type': 'unix', 'path': origin.sock})
    qsd.qmp.cmd('blockdev-add', driver='file', **{'node-name': 'ssd0'},
                filename=ssd)
    qsd.qmp.cmd('blockdev-add', driver='hostcache', **{'node-name': 'hc0'},
                file='origin', ssd='ssd0', **{'ram-size': 4 * BS})
    opts, _ = nbd_export(qsd, 'hc0', 'hc0', WORK)
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
    main(globals())
