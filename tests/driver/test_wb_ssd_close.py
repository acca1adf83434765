#!/usr/bin/python3
"""A write-back node with an SSD journal closes, and its data reaches the
origin, after a stream of write+flush pairs (a database's pattern).

The origin is nbdkit's memory plugin behind the delay filter (2 ms per
write, as the bench's simulated SAN), reached through an NBD client node,
so journaled blocks are still waiting for the destager when the daemon is
told to stop.  Every write is followed by a flush, and each block gets its
own content, so the origin must afterwards hold exactly the last content
written to each block.

Found by make bench (figure g, fio fsync=1 on such a node): the
qemu-storage-daemon ignored SIGTERM for minutes, main thread in
hostcache_close -> hostcache_writeback_all -> aio_poll (a 1 ms timer
firing over and over), and was killed.

HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import signal
import subprocess

from hostcache import MiB
from hostcache.check import check, check_eq
from hostcache.nbd import NBDClient
from hostcache.paths import QEMU_IMG
from hostcache.procs import PROCS, run, tmpdir, wait_for_path
from hostcache.qemu import StorageDaemon, nbd_export
from hostcache.qmp import node_stats
from hostcache.runner import main

WORK = tmpdir('hcwbclose-')
SEED = int(os.environ.get('HC_SEED', random.randrange(1 << 32)))
BS = 4096
SIZE = 16 * MiB


def origin_server():
    sock = os.path.join(WORK, 'origin.sock')
    proc = PROCS.start(['nbdkit', '-f', '-U', sock, '--filter=delay',
                        'memory', str(SIZE), 'wdelay=2ms'],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_path(sock, proc)
    return sock


def read_origin(sock):
    out = os.path.join(WORK, 'origin-copy.raw')
    run([QEMU_IMG, 'convert', '-f', 'raw', '-O', 'raw',
         f'nbd+unix:///?socket={sock}', out])
    with open(out, 'rb') as f:
        return f.read()


def test_sigterm_after_write_flush_stream():
    print(f'HC_SEED={SEED}')
    rng = random.Random(SEED)
    osock = origin_server()
    ssd = os.path.join(WORK, 'ssd.img')
    with open(ssd, 'wb') as f:
        f.truncate(64 * MiB)
    qsd = StorageDaemon(WORK)
    qsd.qmp.cmd('blockdev-add', driver='nbd', **{'node-name': 'origin'},
                server={'type': 'unix', 'path': osock})
    qsd.qmp.cmd('blockdev-add', driver='file', **{'node-name': 'ssd0'},
                filename=ssd, cache={'direct': True})
    qsd.qmp.cmd('blockdev-add', driver='hostcache', **{'node-name': 'hc0'},
                file='origin', ssd='ssd0', mode='write-back')
    _, sock = nbd_export(qsd, 'hc0', 'hc0', WORK)

    model = bytearray(SIZE)
    c = NBDClient(sock, 'hc0')
    for i in range(600):
        blk = rng.randrange(SIZE // BS)
        data = (i.to_bytes(4, 'little') + bytes([rng.randrange(1, 256)])) \
            * (BS // 5) + b'\xee' * (BS % 5)
        c.write(blk * BS, data)
        c.flush()
        model[blk * BS:(blk + 1) * BS] = data
    st = node_stats(qsd.qmp, 'hc0')
    print(f'at SIGTERM: dirty-bytes {st.get("dirty-bytes")}, '
          f'destage-backlog {st.get("destage-backlog")}')
    c.close()
    qsd.proc.send_signal(signal.SIGTERM)
    try:
        rc = qsd.proc.wait(30)
    except subprocess.TimeoutExpired:
        log = qsd.log_text()
        qsd.stop()
        raise AssertionError(
            'qemu-storage-daemon still running 30 s after SIGTERM '
            f'(dirty-bytes {st.get("dirty-bytes")} when it was sent); '
            f'its log: {log[-2000:]}')
    log = qsd.log_text()
    qsd.stop()
    check(rc == 0, f'qemu-storage-daemon exited {rc}: {log[-2000:]}')
    check('loses data' not in log, log[-2000:])
    got = read_origin(osock)
    bad = [b for b in range(SIZE // BS)
           if got[b * BS:(b + 1) * BS] != model[b * BS:(b + 1) * BS]]
    check_eq(bad[:10], [], f'blocks (of {len(bad)}) whose origin content '
             f'is not the last one written')


if __name__ == '__main__':
    main(globals())
