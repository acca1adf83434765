#!/usr/bin/python3
"""When hostcache formats, reformats or refuses an SSD tier: a tier of another
origin, block size or size is reformatted; a missing tier with
ssd-create=off (a journal lost), a tier too small, read-only or already in
use by another cache is refused with a message, and an inline tier node
that failed is not left behind; a read-only hostcache node still uses its
tier.

Checks as in test_ssd_hits.py (hostcache.ssdtier, hostcache.ssdfile).
HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import shutil

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq, poll
from hostcache.nbd import NBDClient
from hostcache.qemu import StorageDaemon, make_file, nbd_export, pread_file
from hostcache.qmp import QMPError, node_stats
from hostcache.runner import main
from hostcache.ssdtier import (BS, REFORMAT_MSG, SEED, SsdExport, blank,
                               crashed_journal, damaged_setup, durable_blocks,
                               file_bytes, node_names, open_fails,
                               restart_check, subdir, warm_pass, warm_setup)


# ---- 6. identity: another origin, block size, size; unusable devices --------

def expect_reformat(d, img, ssd, tag, why, hc=None):
    st, log = restart_check(d, img, ssd, tag, hc=hc)
    check(REFORMAT_MSG in log and why in log, f'{tag}: no info about '
          f'reformatting ({why!r}): {log!r}')
    check_eq(st['recovered-at-open'], 0, f'{tag}: recovered')
    check_eq(st['ssd-hits'], 0, f'{tag}: SSD hits after a reformat')
    return st


def test_another_origin_id():
    d, img, ssd, _ = damaged_setup('id-origin')
    expect_reformat(d, img, ssd, 'id-b', 'another origin',
                    hc={'origin-id': 'disk-b'})
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['origin_id'], 'disk-b', 'origin id recorded')
    # with the same origin-id again, it is recovered
    st, log = restart_check(d, img, ssd, 'id-b2', hc={'origin-id': 'disk-b'})
    check(st['recovered-at-open'] > 0 and REFORMAT_MSG not in log,
          f'same origin-id: not recovered: {st}')


def test_another_origin_file():
    d, img, ssd, ents = damaged_setup('id-file')
    # another disk of the same size, other content, at another path
    other = make_file(os.path.join(d, 'other.img'), os.path.getsize(img))
    expect_reformat(d, other, ssd, 'id-file-b', 'another origin')
    # the same origin file under another path name is another origin too
    # (the id is the file name): still correct, and never stale
    moved = os.path.join(d, 'moved.img')
    shutil.copyfile(img, moved)
    expect_reformat(d, moved, ssd, 'id-file-c', 'another origin')


def test_another_block_size():
    d, img, ssd, _ = damaged_setup('id-bs')
    expect_reformat(d, img, ssd, 'id-bs-64k', 'block-size',
                    hc={'block-size': 64 * KiB})
    sb, _ = ssdfile.read_super(ssd)
    check_eq(sb['block_size'], 64 * KiB, 'block size of the reformatted SSD')


def test_origin_size_changed_while_stopped():
    d, img, ssd, _ = damaged_setup('id-size')
    with open(img, 'ab') as f:
        f.write(os.urandom(64 * KiB))
    expect_reformat(d, img, ssd, 'id-size-b', 'size')


def test_ssd_shrunk_while_stopped():
    d, img, ssd, _ = damaged_setup('id-shrink')
    os.truncate(ssd, 1 * MiB)
    st = expect_reformat(d, img, ssd, 'id-shrink-b', 'shrank')
    check_eq(st['ssd-size'], ssdfile.layout(1 * MiB, BS)[0] * BS, 'ssd-size')


def test_missing_tier_refused_with_ssd_create_off():
    """A write-back journal left by a crash, then the tier file lost: with
    ssd-create=off a blank file, or another origin's tier, in its place is
    refused and left as it is; the real file, put back, is recovered and
    every flushed write reaches the origin."""
    blocks = random.Random(f'{SEED}-missing').sample(range(512), 40)
    d, img, ssd, hc, model = crashed_journal('missing', blocks, 2 * MiB,
                                             256 * KiB)
    check(pread_file(img, 0, 2 * MiB) != bytes(model),
          'the origin already has every write: nothing to lose')
    real = ssd + '.real'
    os.rename(ssd, real)
    off = dict(hc, **{'ssd-create': False})
    # a blank file in its place
    blank(ssd, 2 * MiB)
    err = open_fails(d, img, ssd, 'missing-blank', 'ssd-create=off', hc=off)
    check('is blank' in err and 'nothing was changed' in err, err)
    # another origin's (clean) tier in its place
    other = make_file(os.path.join(d, 'other.img'), 2 * MiB)
    hx = SsdExport(d, other, ssd, hc={'mode': 'write-through'},
                   name='qsd-other')
    hx.quit()
    err = open_fails(d, img, ssd, 'missing-other', 'ssd-create=off', hc=off)
    check('belongs to another origin' in err, err)
    # the real tier back: recovered, and written back at the clean close
    os.replace(real, ssd)
    hx = SsdExport(d, img, ssd, hc=off, name='qsd-back')
    try:
        check(hx.stats()['ssd-recovered'] > 0, 'nothing recovered')
        check_eq(hx.stats()['origin-id'], img, 'origin-id in the stats')
    finally:
        hx.quit()
    check(pread_file(img, 0, 2 * MiB) == bytes(model),
          'flushed writes missing on the origin after the recovery')


def test_ssd_too_small():
    d = subdir('small')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    for size in (4 * KiB, 8 * KiB, 12 * KiB):
        ssd = blank(os.path.join(d, f'ssd{size}.img'), size)
        open_fails(d, img, ssd, f'small{size}', 'too small')
    # 64k blocks need more than 4k blocks
    ssd = blank(os.path.join(d, 'ssd-mid.img'), 64 * KiB)
    open_fails(d, img, ssd, 'small64k', 'too small',
               hc={'block-size': 64 * KiB})


def test_read_only_ssd_refused():
    d = subdir('ro')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), 1 * MiB)
    err = open_fails(d, img, ssd, 'ro', 'read-only', ssd_node={
        'driver': 'file', 'filename': ssd, 'read-only': True})
    # the driver has its own message for this; QEMU's generic "Block node
    # is read-only" names neither the node nor the SSD tier
    check('ssd0' in err and 'SSD' in err, f'the message does not say '
          f'which node and why: {err!r}')


def test_read_only_node_with_ssd():
    """A read-only hostcache node (a golden image) still uses its SSD
    tier, which stays writable."""
    d = subdir('ro-node')
    img = make_file(os.path.join(d, 'origin.img'), 4 * MiB)
    ssd = blank(os.path.join(d, 'ssd.img'), 2 * MiB)
    before = file_bytes(img)
    for run in range(2):
        qsd = StorageDaemon(d, name=f'qsd-ro{run}')
        try:
            q = qsd.qmp
            q.cmd('blockdev-add', **{'node-name': 'origin'}, driver='file',
                  filename=img, **{'read-only': True})
            q.cmd('blockdev-add', **{'node-name': 'ssd0'}, driver='file',
                  filename=ssd)
            try:
                q.cmd('blockdev-add', driver='hostcache', file='origin',
                      ssd='ssd0', **{'node-name': 'hc0', 'read-only': True,
                                     'ram-size': 128 * KiB,
                                     'seq-cutoff': 0})
            except ConnectionError:
                qsd.proc.wait(30)
                raise AssertionError(
                    f'qemu-storage-daemon died (status '
                    f'{qsd.proc.returncode}) adding a read-only node with '
                    f'an SSD: {qsd.log_text()[-1000:]}')
            _, sock = nbd_export(qsd, 'hc0', 'hc0', d, writable=False)
            c = NBDClient(sock, 'hc0')
            warm_pass(c, img, 2 * MiB, chunk=16 * KiB,
                      order=random.Random(f'{SEED}-ro{run}'))
            poll('demotions', lambda: len(durable_blocks(ssd)) >= 32)
            st = node_stats(q, 'hc0')
            check(st['ssd-active'] and (run == 0 or st['ssd-hits'] > 0),
                  f'run {run}: the SSD tier was not used: {st}')
            c.close()
        finally:
            qsd.stop()
    check(file_bytes(img) == before, 'the read-only origin changed')


def test_ssd_not_shared():
    """One SSD tier serves one cache: a second hostcache node on the same
    SSD node, or another process on the same SSD file, is refused and the
    first cache goes on unharmed."""
    d, img, ssd, hx = warm_setup('shared', size=2 * MiB, ssd_size=1 * MiB)
    other = make_file(os.path.join(d, 'other.img'), 2 * MiB)
    try:
        q = hx.qmp
        q.cmd('blockdev-add', **{'node-name': 'origin2'}, driver='file',
              filename=other)
        try:
            q.cmd('blockdev-add', driver='hostcache', file='origin2',
                  ssd='ssd0', **{'node-name': 'hc1'})
        except QMPError as e:
            check('hc1' not in node_names(q), f'hc1 left behind ({e})')
        else:
            raise AssertionError('a second cache on the same SSD node')
        qsd = StorageDaemon(d, name='qsd-second')
        try:
            qsd.qmp.cmd('blockdev-add', **{'node-name': 'origin'},
                        driver='file', filename=other)
            qsd.qmp.cmd('blockdev-add', **{'node-name': 'ssd0'},
                        driver='file', filename=ssd)
            try:
                qsd.qmp.cmd('blockdev-add', driver='hostcache',
                            file='origin', ssd='ssd0',
                            **{'node-name': 'hc0'})
            except QMPError as e:
                check('lock' in e.desc, f'not a lock error: {e.desc}')
            else:
                raise AssertionError('a second process on the same SSD '
                                     'file')
        finally:
            qsd.stop()
        c = hx.client()
        warm_pass(c, img, 2 * MiB)
        warm_pass(c, img, 2 * MiB)
        st = hx.ssd_stats()
        check(st['ssd-active'] and st['ssd-hits'] > 0 and
              not st['ssd-errors'], f'the first cache suffered: {st}')
        c.close()
    finally:
        hx.stop()


def test_inline_ssd_failure_leaves_no_node():
    """ssd given inline (ssd.driver=file,...): a failed open removes the
    SSD node it created too."""
    d = subdir('inline')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    small = blank(os.path.join(d, 'small.img'), 8 * KiB)
    good = blank(os.path.join(d, 'ssd.img'), 1 * MiB)
    qsd = StorageDaemon(d, name='qsd-inline')
    try:
        q = qsd.qmp
        q.cmd('blockdev-add', **{'node-name': 'origin'}, driver='file',
              filename=img)
        for ssd, ro in ((small, False), (good, True)):
            try:
                q.cmd('blockdev-add', driver='hostcache', file='origin',
                      **{'node-name': 'hc0'}, ssd={
                          'driver': 'file', 'filename': ssd,
                          'node-name': 'inl', 'read-only': ro})
            except QMPError:
                pass
            else:
                raise AssertionError(f'blockdev-add with {ssd} succeeded')
            check_eq(node_names(q), ['origin'], 'nodes after the failure')
        # and a good one works, with the inline node as its child
        q.cmd('blockdev-add', driver='hostcache', file='origin',
              **{'node-name': 'hc0'}, ssd={'driver': 'file',
                                           'filename': good})
        check(ssdfile.read_super(good)[0] is not None, 'inline SSD not '
              'formatted')
        q.cmd('blockdev-del', **{'node-name': 'hc0'})
        check_eq(node_names(q), ['origin'], 'nodes after blockdev-del')
        check_eq(ssdfile.read_super(good)[0]['state'], ssdfile.STATE_CLEAN,
                 'state after blockdev-del')
    finally:
        qsd.stop()


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
