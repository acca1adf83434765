#!/usr/bin/python3
"""What hostcache's write-back mode writes back, and when: close, deleting
the node, reopen and resize write everything back first; a flush reaches
the origin (and is counted, with its latency); max-dirty bounds the dirty
data; a working set 4x the cache passes fio's verification while the
destager works; block status reports dirty ranges as data; with an SSD
journal, a SIGTERM after a stream of write+flush pairs closes the node with
everything on the origin.

Client, data and set-up: hostcache.writeback (its docstring says how a
test knows which write put each byte of the origin there).

Environment: HC_SEED (repeat a run), HC_SOAK (a factor for the long-running
parts, default 1; `make soak` sets it).
"""

import json
import os
import random
import signal
import subprocess
import threading
import time

from hostcache import KiB, MiB
from hostcache.check import check, check_eq, poll
from hostcache.fio import Fio
from hostcache.nbd import NBDClient
from hostcache.nbdkit import LoggedNbdkit, Nbdkit
from hostcache.paths import QEMU_IMG
from hostcache.procs import run
from hostcache.qemu import (StorageDaemon, make_file, nbd_export, pread_file,
                            qemu_io, read_dumps)
from hostcache.qmp import node_stats
from hostcache.runner import main
from hostcache.writeback import (CrashWriter, HOUR_MS, Pattern, SEED, SOAK,
                                 apply, check_file, connect, delete_node,
                                 first_diff, scatter_writes, subdir,
                                 wb_export)


def dirty_setup(tag, size=4 * MiB, **hc):
    """A write-back export over a random file with dirty data on it."""
    rng = random.Random(f'{SEED}-{tag}')
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), size)
    model = bytearray(pread_file(img, 0, size))
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS, **hc})
    c = connect(hx)
    writes = scatter_writes(c, rng, Pattern(rng, size), size, 24)
    apply(model, writes)
    st = hx.stats()
    check(st['dirty-bytes'] > 0, f'{tag}: nothing dirty: {st}')
    check(pread_file(img, 0, size) != model,
          f'{tag}: the origin has the data before any write-back: the test '
          'proves nothing')
    return hx, c, img, model


def check_clean_exit(hx, how, timeout=60):
    """Wait for the daemon to exit after `how`; it must exit 0."""
    try:
        rc = hx.qsd.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f'qemu-storage-daemon did not exit on {how}')
    check(rc == 0, f'qemu-storage-daemon exited {rc} on {how}: '
          f'{hx.qsd.log_text()[-2000:]}')


def close_case(how):
    hx, c, img, model = dirty_setup(f'close-{how}')
    try:
        if how == 'blockdev-del':
            c.close()
            delete_node(hx)
            check(hx.alive(), 'qemu-storage-daemon died')
        elif how == 'sigterm':
            hx.qsd.proc.send_signal(signal.SIGTERM)
            check_clean_exit(hx, how)
        else:
            try:
                hx.qmp.cmd('quit')
            except ConnectionError:
                pass
            check_clean_exit(hx, how)
        check_file(img, model, f'after {how}')
        check('loses data' not in hx.qsd.log_text(), hx.qsd.log_text())
    finally:
        c.sock.close()
        hx.stop()


def test_close_writes_back():
    # (i) blockdev-del of the node, (ii) SIGTERM and (iii) QMP quit with the
    # client still connected: every acknowledged write reaches the origin
    fails = []
    for how in ('blockdev-del', 'sigterm', 'quit'):
        try:
            close_case(how)
        except AssertionError as e:
            fails.append(f'{how}: {e}')
    check(not fails, '\n'.join(fails))


def test_dirty_node_without_parent_writes_back():
    # The export goes, the node stays (as when a device is unplugged before
    # blockdev-del): its dirty data still ages out to the origin.
    hx, c, img, model = dirty_setup('orphan', **{'max-dirty-age-ms': 300})
    try:
        c.close()
        hx.qmp.cmd('block-export-del', id='hc0')
        poll('export removal', lambda: not hx.qmp.cmd('query-block-exports'))
        poll('dirty data to age out to the origin',
             lambda: not hx.alive() or pread_file(img, 0, len(model)) == model)
        check(hx.alive(), f'qemu-storage-daemon died (status '
              f'{hx.qsd.proc.returncode}): {hx.qsd.log_text()[-2000:]}')
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes')
    finally:
        hx.stop()


def test_reopen_writes_back():
    # QEMU flushes every node before a reopen, so each reopen below writes
    # back; the driver's own prepare must do it too (mode or size change)
    # and the data must then be on the origin, with nothing dirty.
    hx, c, img, model = dirty_setup('reopen', **{'ram-size': 8 * MiB})
    rng = random.Random(f'{SEED}-reopen2')
    pat = Pattern(rng, 4 * MiB)
    try:
        steps = [{'mode': 'write-through'}, {'mode': 'write-back'},
                 {'ram-size': 16 * MiB}, {'ram-size': 4 * MiB},
                 {'mode': 'write-around'}, {'mode': 'write-back'},
                 {'mode': 'pass-through'}, {'mode': 'write-back'},
                 {'max-dirty': 64 * KiB}]
        for i, opts in enumerate(steps):
            hx.reopen(**opts)
            st = hx.stats()
            check_eq(st['dirty-bytes'], 0, f'dirty-bytes after {opts}')
            check_file(img, model, f'after reopen with {opts}')
            if st['mode'] == 'write-back':
                apply(model, scatter_writes(c, rng, pat, 4 * MiB, 12,
                                            100 * (i + 1)))
                check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        check_eq(hx.stats()['ram-limit'], 4 * MiB, 'ram-limit')
        check_eq(c.read(0, 4 * MiB), bytes(model), 'reads after the reopens')
        c.close()
    finally:
        hx.stop()


def test_resize_with_dirty_data():
    # block_resize with dirty blocks on both sides of the new end: the ones
    # past it reach the origin before it is cut (as on a disk), the others
    # stay cached and reach it at the flush
    size = 4 * MiB
    small = 3 * MiB + 1536
    hx, c, img, model = dirty_setup('resize', size=size)
    try:
        rng = random.Random(f'{SEED}-resize2')
        pat = Pattern(rng, size)
        for off in (small - 6000, small + 100, size - 4096):
            data = pat.data(off, off, off + 5000 if off < size - 5000 else
                            size)
            c.write(off, data)
            model[off:off + len(data)] = data
        check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        c.close()
        for n in (small, size):
            try:
                hx.resize(n)
            except ConnectionError:
                hx.qsd.proc.wait(10)
                raise AssertionError(
                    f'qemu-storage-daemon died (status '
                    f'{hx.qsd.proc.returncode}) at block_resize {n}: '
                    f'{hx.qsd.log_text()[-2000:]}')
        model[small:] = bytes(size - small)
        c = connect(hx)
        check_eq(c.read(0, size), bytes(model), 'reads after the resizes')
        c.flush()
        check_file(img, model, 'after the resizes and a flush')
        c.close()
    finally:
        hx.stop()


# ---- c. flushes reach the origin -------------------------------------------
#
# query-blockstats counts operations only for BlockBackends: a child node's
# flush_operations stays 0 (seen on this QEMU).  So the origin here is an
# nbdkit export of the file with its log filter, which records every request
# the origin receives.

def test_flush_reaches_origin():
    rng = random.Random(f'{SEED}-flush')
    size = 4 * MiB
    d = subdir('flush')
    img = make_file(os.path.join(d, 'origin.img'), size)
    model = bytearray(pread_file(img, 0, size))
    origin = LoggedNbdkit(d, 'nbdkit', ('file', f'file={img}'))
    pat = Pattern(rng, size)
    hx = wb_export(d, origin=origin.blockdev,
                   **{'max-dirty-age-ms': HOUR_MS, 'ram-size': 16 * MiB})
    try:
        c = connect(hx)
        n0 = len(origin.requests())
        s0 = hx.stats()
        writes = scatter_writes(c, rng, pat, size, 12)
        apply(model, writes)
        s1 = hx.stats()
        check(s1['dirty-bytes'] > 0 and s1['destage-backlog'] > 0,
              f'nothing dirty or queued: {s1}')
        reqs = origin.requests()[n0:]
        check(not [r for r in reqs if r[0] in ('Write', 'Flush')],
              f'the origin got writes before any flush: {reqs[:5]}')
        check(pread_file(img, 0, size) != model,
              'the origin has the data before the flush')
        check_eq(c.read(0, size), bytes(model), 'reads of dirty data')
        c.flush()
        s2 = hx.stats()
        reqs = origin.requests()[n0:]
        kinds = [k for k, _ in reqs]
        check('Flush' in kinds and 'Write' in kinds,
              f'flush: origin saw {kinds[:20]}')
        check(max(i for i, k in enumerate(kinds) if k == 'Write') <
              max(i for i, k in enumerate(kinds) if k == 'Flush'),
              f'origin flushed before the last write-back: {kinds}')
        check_eq((s2['dirty-bytes'], s2['destage-backlog']), (0, 0),
                 '(dirty-bytes, destage-backlog) after the flush')
        check_eq(s2['flushes'] - s0['flushes'], 1, 'flushes counted')
        check(s2['destaged-blocks'] > s0['destaged-blocks'],
              f'nothing destaged: {s2}')
        check_file(img, model, 'after the flush')
        # a FUA write is on the origin (and flushed) when acknowledged
        n1 = len(reqs) + n0
        off, data = 3 * MiB + 100, pat.data(999, 3 * MiB + 100, 3 * MiB + 9000)
        c.write(off, data, fua=True)
        model[off:off + len(data)] = data
        check_file(img, model, 'after the FUA write')
        kinds = [k for k, ln in origin.requests()[n1:]]
        fua = [ln for k, ln in origin.requests()[n1:]
               if k == 'Write' and 'fua=1' in ln]
        check('Flush' in kinds or fua, f'FUA write: origin saw {kinds}')
        st = hx.stats()
        check(st['flush-latency-avg-ns'] > 0, f'flush latency: {st}')
        # dirty data older than max-dirty-age-ms reaches the origin unasked
        hx.reopen(**{'max-dirty-age-ms': 200})
        n2 = len(origin.requests())
        apply(model, scatter_writes(c, rng, pat, size, 8, 2000))
        check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        poll('dirty data to age out to the origin',
             lambda: pread_file(img, 0, size) == model)
        poll('dirty-bytes to reach 0', lambda: not hx.stats()['dirty-bytes'])
        check([k for k, _ in origin.requests()[n2:]].count('Write') > 0,
              'no writes at the origin')
        c.close()
    finally:
        hx.stop()


def test_flush_latency_stats():
    # One flush writing back 4 MiB, then two with nothing to do (the file's
    # own flush is skipped when nothing was written): p99 of fewer than 100
    # samples is the largest, so never below the average (a histogram
    # bucket is within 1/8 of its values); the average is over all three.
    d = subdir('flushlat')
    img = make_file(os.path.join(d, 'origin.img'), 8 * MiB)
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS,
                              'ram-size': 16 * MiB})
    try:
        c = connect(hx)
        for i in range(64):
            c.write(i * 64 * KiB, bytes([i + 1]) * 64 * KiB)
        for _ in range(3):
            c.flush()
        st = hx.stats()
        check_eq(st['flushes'], 3, 'flushes')
        avg, p99 = st['flush-latency-avg-ns'], st['flush-latency-p99-ns']
        check(avg > 0 and p99 * 2 >= avg,
              f'flush-latency-p99-ns {p99} below half the average {avg} '
              f'of one slow and two fast flushes')
        c.close()
    finally:
        hx.stop()


# ---- d. max-dirty bounds the dirty data ------------------------------------

def test_max_dirty_bound():
    rng = random.Random(f'{SEED}-maxdirty')
    size, max_dirty = 8 * MiB, 256 * KiB
    d = subdir('maxdirty')
    img = make_file(os.path.join(d, 'origin.img'), size)
    hx = wb_export(d, img, **{'ram-size': 4 * MiB, 'max-dirty': max_dirty,
                              'max-dirty-age-ms': HOUR_MS})
    try:
        c = connect(hx)
        wr = CrashWriter(c, rng, Pattern(rng, size), size, qd=16, p_flush=0,
                         p_read=0.05, p_fua=0)
        wr.model[:] = pread_file(img, 0, size)
        th = threading.Thread(target=wr.run, daemon=True)
        th.start()
        peak, samples = 0, 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3 * SOAK and th.is_alive():
            st = hx.stats()
            samples += 1
            peak = max(peak, st['dirty-bytes'])
            check(st['dirty-bytes'] <= max_dirty,
                  f'dirty-bytes {st["dirty-bytes"]} over max-dirty '
                  f'{max_dirty}')
        wr.stop.set()
        th.join(30)
        check(not wr.ended and not wr.errors, f'{wr.ended} {wr.errors[:3]}')
        wr.drain()
        check(not wr.errors, '; '.join(wr.errors[:3]))
        st = hx.stats()
        print(f'  {len(wr.writes)} writes, {samples} samples, peak dirty '
              f'{peak}, destaged {st["destaged-blocks"]}')
        check(peak > 0 and st['destaged-blocks'] > 0,
              f'nothing dirty or destaged: peak {peak}, {st}')
        check_eq(st['destage-errors'], 0, 'destage-errors')
        c.flush()
        check_file(img, wr.model, 'after the flush')
        c.close()
    finally:
        hx.stop()


# ---- g. working set 4x the cache: fio verifies, the destager works ---------

def test_fio_verify_cache_full():
    d = subdir('fio')
    disk, ram = 16 * MiB * SOAK, 4 * MiB * SOAK
    img = make_file(os.path.join(d, 'origin.img'), disk)
    hx = wb_export(d, img, **{'ram-size': ram})
    seed = SEED % 1000000 + 1
    job = ['--rw=randwrite', '--bs=4k', f'--size={disk}', '--iodepth=16',
           f'--randseed={seed}', '--verify=crc32c', '--verify_fatal=1',
           '--serialize_overlap=1',
           '--verify_state_save=0']
    try:
        Fio(d, 'wb-fill', hx.nbd_uri(),
            job + ['--do_verify=1']).wait(timeout=240)
        st = hx.stats()
        print(f'  destaged {st["destaged-blocks"]}, dirty {st["dirty-bytes"]}'
              f', evictions {st["evictions"]}')
        check(st['destaged-blocks'] > 0, f'nothing destaged: {st}')
        check(st['evictions'] > 0, f'no evictions: {st}')
        check(st['dirty-bytes'] <= ram // 2, f'over max-dirty: {st}')
        check_eq((st['destage-errors'], st['origin-errors']), (0, 0),
                 '(destage-errors, origin-errors)')
        check(hx.alive(), 'qemu-storage-daemon died')
        # flushed here (closing with dirty data is test_close_writes_back's)
        c = connect(hx)
        c.flush()
        c.close()
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes after a flush')
        try:
            hx.qmp.cmd('quit')
        except ConnectionError:
            pass
        check_clean_exit(hx, 'quit')
    finally:
        hx.stop()
    # what fio wrote is on the origin: the same job verifies the raw file
    r = run(['/usr/bin/fio', '--name=wb-fill', '--ioengine=psync',
             f'--filename={img}', '--output-format=json', *job,
             '--verify_only=1'], check_rc=False)
    out = r.stdout[r.stdout.find('{'):]
    try:
        rep = json.loads(out)['jobs'][0]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f'fio verify_only: {r.stdout[-2000:]} '
                             f'{r.stderr[-2000:]}')
    check(r.returncode == 0 and rep['error'] == 0 and
          rep['read']['io_bytes'] >= disk,
          f'verify of the origin failed: rc {r.returncode}, error '
          f'{rep["error"]}, read {rep["read"]["io_bytes"]}: '
          f'{r.stderr[-2000:]}')


# ---- h. block status reports dirty ranges as data --------------------------

def nbd_map(hx):
    r = run([QEMU_IMG, 'map', '--output=json', '--image-opts', hx.opts])
    return json.loads(r.stdout)


def data_bytes(extents, a, b):
    """Bytes of [a, b) that block status reports as data."""
    n = 0
    for e in extents:
        lo, hi = max(a, e['start']), min(b, e['start'] + e['length'])
        if hi > lo and e['data']:
            n += hi - lo
    return n


def test_block_status_reports_dirty_data():
    rng = random.Random(f'{SEED}-bs')
    d = subdir('bstat')
    size = 4 * MiB
    img = os.path.join(d, 'origin.img')
    make_file(img, size, pattern=0)             # sparse: one big hole
    model = bytearray(size)
    pat = Pattern(rng, size)
    ranges = [(1 * MiB, 1 * MiB + 64 * KiB), (2 * MiB + 1000, 2 * MiB + 4000),
              (3 * MiB + 4095, 3 * MiB + 8193)]
    hx = wb_export(d, img, **{'max-dirty-age-ms': HOUR_MS})
    try:
        c = connect(hx)
        for i, (a, b) in enumerate(ranges):
            data = pat.data(i + 1, a, b)
            c.write(a, data)
            model[a:b] = data
        check(hx.stats()['dirty-bytes'] > 0, 'nothing dirty')
        check_eq(pread_file(img, 0, size), bytes(size),
                 'origin before the flush')
        for when in ('before the flush', 'after the flush'):
            ext = nbd_map(hx)
            for a, b in ranges:
                check_eq(data_bytes(ext, a, b), b - a,
                         f'{when}: data bytes of {a}..{b} in {ext}')
            check_eq(data_bytes(ext, 0, 1 * MiB), 0,
                     f'{when}: data bytes of the hole 0..1M in {ext}')
            # a sparse-aware copy through the export has every byte
            out = os.path.join(d, 'copy.raw')
            run([QEMU_IMG, 'convert', '-O', 'raw', '--image-opts', hx.opts,
                 out])
            got = pread_file(out, 0, size)
            check(got == model, f'{when}: qemu-img convert copy differs from '
                  f'the written data at byte {first_diff(got, model)}')
            os.unlink(out)
            # qemu-io over NBD: structured replies, holes read from status
            r = qemu_io(hx.opts, [f'read -v {a} {b - a}' for a, b in ranges])
            check_eq([bytes(x) for _, x in read_dumps(r)],
                     [bytes(model[a:b]) for a, b in ranges],
                     f'{when}: qemu-io reads')
            c.flush()
            check_file(img, model, 'after the flush')
        c.close()
    finally:
        hx.stop()



# ---- write-back with an SSD journal: SIGTERM after write+flush pairs --------

CLOSE_SIZE = 16 * MiB
CLOSE_BS = 4096


def test_sigterm_after_write_flush_stream():
    """A write-back node with an SSD journal closes, and its data reaches
    the origin, after a stream of write+flush pairs (a database's
    pattern).  The origin is nbdkit's memory plugin behind the delay
    filter (2 ms per write, as the bench's simulated SAN), reached through
    an NBD client node, so journaled blocks are still waiting for the
    destager when the daemon is told to stop; each block gets its own
    content, so the origin must afterwards hold exactly the last content
    written to each block.  Found by make bench (figure g, fio fsync=1 on
    such a node): the qemu-storage-daemon ignored SIGTERM for minutes,
    main thread in hostcache_close -> hostcache_writeback_all -> aio_poll
    (a 1 ms timer firing over and over), and was killed."""
    work = subdir('ssd-close')
    rng = random.Random(SEED)
    origin = Nbdkit(work, 'origin', ('memory', str(CLOSE_SIZE)), ['delay'],
                    ['wdelay=2ms'], stderr=subprocess.DEVNULL)
    osock = origin.sock
    ssd = os.path.join(work, 'ssd.img')
    with open(ssd, 'wb') as f:
        f.truncate(64 * MiB)
    qsd = StorageDaemon(work)
    qsd.qmp.cmd('blockdev-add', driver='nbd', **{'node-name': 'origin'},
                server={'type': 'unix', 'path': osock})
    qsd.qmp.cmd('blockdev-add', driver='file', **{'node-name': 'ssd0'},
                filename=ssd, cache={'direct': True})
    qsd.qmp.cmd('blockdev-add', driver='hostcache', **{'node-name': 'hc0'},
                file='origin', ssd='ssd0', mode='write-back')
    _, sock = nbd_export(qsd, 'hc0', 'hc0', work)

    model = bytearray(CLOSE_SIZE)
    c = NBDClient(sock, 'hc0')
    for i in range(600):
        blk = rng.randrange(CLOSE_SIZE // CLOSE_BS)
        data = (i.to_bytes(4, 'little') + bytes([rng.randrange(1, 256)])) \
            * (CLOSE_BS // 5) + b'\xee' * (CLOSE_BS % 5)
        c.write(blk * CLOSE_BS, data)
        c.flush()
        model[blk * CLOSE_BS:(blk + 1) * CLOSE_BS] = data
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
    out = os.path.join(work, 'origin-copy.raw')
    run([QEMU_IMG, 'convert', '-f', 'raw', '-O', 'raw',
         f'nbd+unix:///?socket={osock}', out])
    with open(out, 'rb') as f:
        got = f.read()
    bad = [b for b in range(CLOSE_SIZE // CLOSE_BS)
           if got[b * CLOSE_BS:(b + 1) * CLOSE_BS] != model[b * CLOSE_BS:(b + 1) * CLOSE_BS]]
    check_eq(bad[:10], [], f'blocks (of {len(bad)}) whose origin content '
             f'is not the last one written')


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
