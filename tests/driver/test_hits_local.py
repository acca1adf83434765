#!/usr/bin/python3
"""A read served from the cache sends nothing to the origin.

The origin is nbdkit's memory plugin behind its log filter, which records
every request it receives (Read, Extents, ...), so the test sees exactly
what a cache hit costs the SAN.

- in-process (qemu-io on the hostcache node): a hit sends nothing.
- through an NBD export of the hostcache node: the NBD server asks block
  status for every structured read; a filter without its own
  .bdrv_co_block_status passes that to its origin, so each hit costs the
  SAN a block-status round trip (one per read here; two per read measured
  with a qemu-storage-daemon origin) although the data comes from RAM.
  Before the driver answered block status for the blocks it holds
  (4da658b), make bench showed the price: 4 KiB hits through the export
  ran at 0.34x the export's floor at QD16 with an NBD-client origin,
  0.85x with an in-process origin; this test failed with 32 Extents
  requests for 32 hits.
"""


from hostcache import MiB
from hostcache.check import check, check_eq
from hostcache.nbdkit import LoggedNbdkit
from hostcache.paths import QEMU_IO
from hostcache.procs import run, tmpdir
from hostcache.qemu import HostcacheExport
from hostcache.runner import main

WORK = tmpdir()


def test_inprocess_hit_sends_nothing():
    origin = LoggedNbdkit(WORK, 'o1', ('memory', str(16 * MiB)))
    run([QEMU_IO, '-f', 'raw', '-c', f'write -P 0x5a 0 {MiB}', origin.uri])
    opts = (f'driver=hostcache,node-name=hc0,file.driver=nbd,'
            f'file.server.type=unix,file.server.path={origin.sock}')
    r = run([QEMU_IO, '--image-opts', '-c', 'read -P 0x5a 0 1M',
             '-c', 'read -P 0x5a 0 1M', '-c', 'read -P 0x5a 0 1M', opts])
    check('failed' not in r.stdout + r.stderr, r.stdout + r.stderr)
    # After the fill (a Write), the first read misses (one origin Read)
    # and the other two hit: nothing more reaches the origin.
    reqs = origin.data_requests()
    check_eq(reqs, ['Write', 'Read'], 'origin requests')


def test_nbd_export_hit_sends_nothing():
    # Data in every other 4 KiB block, holes between: the origin's extents
    # are then 4 KiB long, so QEMU's block-status cache of the NBD client
    # node (one data extent) does not hide what each read costs the origin.
    origin = LoggedNbdkit(WORK, 'o2', ('memory', str(16 * MiB)))
    blocks = [2 * i * 4096 for i in range(32)]
    run([QEMU_IO, '-f', 'raw'] +
        [a for off in blocks for a in ('-c', f'write -P 0x5a {off} 4k')] +
        [origin.uri])
    exp = HostcacheExport(WORK, origin=origin.blockdev)
    reads = [f'read -P 0x5a {off} 4k' for off in blocks]
    r = exp.io(reads)
    check('failed' not in r.stdout + r.stderr, r.stdout + r.stderr)
    st = exp.stats()
    check_eq(st['ram-blocks'], len(blocks), 'blocks cached by the misses')
    before = origin.data_requests()

    r = exp.io(reads)
    check('failed' not in r.stdout + r.stderr, r.stdout + r.stderr)
    st2 = exp.stats()
    check_eq(st2['read-misses'], st['read-misses'], 'misses while hitting')
    check_eq(st2['read-hits'] - st['read-hits'], len(blocks), 'hits')
    new = origin.data_requests()[len(before):]
    counts = {n: new.count(n) for n in sorted(set(new))}
    check(not new, f'{len(new)} origin requests for {len(blocks)} reads '
          f'served from the cache: {counts} (the NBD server asks block '
          f'status for each read; the hostcache node passes it to its '
          f'origin instead of answering for the blocks it holds)')
    exp.stop()


if __name__ == '__main__':
    main(globals())
