#!/usr/bin/python3
"""Errors of the origin, injected with QEMU's blkdebug driver between
hostcache and the raw file: the NBD client sees each error, the error is
counted in origin-errors, nothing wrong is cached (after the error clears
the same read returns the origin's data), a failed write leaves no stale
block behind, and a bad sector fails no more requests than it does without
the cache.

blkdebug rules used here: event 'none' fires when blkdebug opens, so its
inject-error rules are active from the start; 'once' removes a rule after
its first error; an inject-error rule on event 'pwritev' (fired by every
write to the origin) replaces the active rules, which "repairs" the disk.
"""

import os

from hostcache import KiB, MiB
from hostcache.check import check, check_eq
from hostcache.procs import tmpdir
from hostcache.qemu import (HostcacheExport, dumps_match_origin, make_file,
                            pread_file)
from hostcache.runner import main

WORK = tmpdir()
EIO = 'Input/output error'


def rule(iotype, offset=None, once=True, event='none'):
    """An inject-error rule; without offset it matches any request."""
    r = {'event': event, 'iotype': iotype, 'once': once, 'errno': 5}
    if offset is not None:
        r['sector'] = offset // 512
    return r


def export(tag, rules, mode='write-through', max_transfer=None, **hc):
    img = make_file(os.path.join(WORK, f'{tag}.img'), 8 * MiB)
    origin = {'driver': 'blkdebug', 'inject-error': rules, 'discard': 'unmap',
              'image': {'driver': 'file', 'filename': img,
                        'discard': 'unmap'}}
    if max_transfer:
        origin['max-transfer'] = max_transfer
    hx = HostcacheExport(WORK, origin=origin, name=f'qsd-{tag}',
                         hc={'mode': mode, 'ram-size': 4 * MiB, **hc})
    return hx, img


def failed(r, op):
    out = r.stdout + r.stderr
    return f'{op} failed: {EIO}' in out


def test_read_error_once_then_right_data():
    for mode in ('write-through', 'write-around', 'pass-through'):
        hx, img = export(f'ronce-{mode}', [rule('read', 64 * KiB + 1536)],
                         mode=mode)
        try:
            r = hx.io(['read -v 64k 8k'], check_rc=False)
            check(failed(r, 'read'), f'{mode}: error not seen: {r.stdout}')
            st = hx.stats()
            check_eq((st['origin-errors'], st['ram-blocks']), (1, 0),
                     f'{mode}: (origin-errors, ram-blocks) after the error')
            r = hx.io(['read -v 64k 8k', 'read -v 64k 8k'])
            dumps_match_origin(r, img, f'{mode}: reads after the error')
            st = hx.stats()
            check_eq(st['origin-errors'], 1, f'{mode}: origin-errors')
            if mode != 'pass-through':
                check_eq((st['ram-blocks'], st['read-hits']), (2, 1),
                         f'{mode}: (ram-blocks, read-hits) after recovery')
        finally:
            hx.stop()


def test_permanent_read_error_until_repaired():
    bad = 160 * KiB + 512
    hx, img = export('rperm', [rule('read', bad, once=False),
                               # any write "repairs" the disk
                               rule('discard', 7 * MiB, event='pwritev')])
    try:
        hx.io(['read 0 64k'])         # something cached
        s0 = hx.stats()
        for i in range(3):
            r = hx.io([f'read -v {bad - 5000} 10000'], check_rc=False)
            check(failed(r, 'read'), f'attempt {i}: no error: {r.stdout}')
        r = hx.io(['read -v 164k 8k', 'read -v 0 64k'])
        dumps_match_origin(r, img, 'reads of good blocks next to the bad one')
        s1 = hx.stats()
        check_eq(s1['origin-errors'] - s0['origin-errors'], 3,
                 'origin-errors counts each failed origin read')
        check_eq(s1['ram-blocks'] - s0['ram-blocks'], 2,
                 'blocks cached meanwhile (only the two good ones)')
        hx.io(['write -P 0x5a 7M 4k'])  # repair
        r = hx.io([f'read -v {bad - 5000} 10000'] * 2)
        dumps_match_origin(r, img, 'reads after the repair')
        s2 = hx.stats()
        check_eq(s2['origin-errors'], s1['origin-errors'], 'no new errors')
        check(s2['read-hits'] > s1['read-hits'], 'repaired range not cached')
    finally:
        hx.stop()


def test_error_in_multiblock_fill_caches_nothing_wrong():
    # max-transfer splits the 16k fill into 4k origin reads; the third fails
    hx, img = export('fill', [rule('read', 40 * KiB)],
                     max_transfer=4 * KiB)
    try:
        r = hx.io(['read -v 32k 16k'], check_rc=False)
        check(failed(r, 'read'), f'error not seen: {r.stdout}')
        st = hx.stats()
        check_eq(st['origin-errors'], 1, 'origin-errors')
        r = hx.io(['read -v 32k 16k', 'read -v 30k 20k'])
        dumps_match_origin(r, img, 'reads after the failed fill')
    finally:
        hx.stop()


def test_failed_write_leaves_no_stale_data():
    for mode in ('write-through', 'write-around'):
        # 4k origin writes: the first two reach the file, the third fails
        hx, img = export(f'wfail-{mode}', [rule('write', 40 * KiB + 512)],
                         mode=mode, max_transfer=4 * KiB)
        try:
            old = pread_file(img, 32 * KiB, 16 * KiB)
            dumps_match_origin(hx.io(['read -v 32k 16k']), img, 'first read')
            st0 = hx.stats()
            check_eq(st0['ram-blocks'], 4, 'blocks cached before the write')
            r = hx.io(['write -P 0x77 32k 16k'], check_rc=False)
            check(failed(r, 'write'), f'{mode}: error not seen: {r.stdout}')
            new = pread_file(img, 32 * KiB, 16 * KiB)
            check(new != old and new != b'\x77' * len(new),
                  f'{mode}: the write was not partial: the test proves '
                  'nothing')
            r = hx.io(['read -v 32k 16k', 'read -v 32k 16k'])
            dumps_match_origin(r, img, f'{mode}: reads after the failed write')
            st = hx.stats()
            check_eq(st['origin-errors'] - st0['origin-errors'], 1,
                     f'{mode}: origin-errors')
        finally:
            hx.stop()


def test_write_zeroes_and_discard_errors_reach_the_client():
    hx, img = export('zd', [rule('write-zeroes', 8 * KiB),
                            rule('discard', 16 * KiB)])
    try:
        hx.io(['read 0 64k'])
        old = pread_file(img, 0, 64 * KiB)
        r = hx.io(['write -z 8k 4k'], check_rc=False)
        check(failed(r, 'write') or EIO in r.stdout + r.stderr,
              f'write-zeroes error not seen: {r.stdout} {r.stderr}')
        r = hx.io(['discard 16k 4k'], check_rc=False)
        check(EIO in r.stdout + r.stderr,
              f'discard error not seen: {r.stdout} {r.stderr}')
        st = hx.stats()
        check_eq(st['origin-errors'], 2, 'origin-errors')
        check_eq(pread_file(img, 0, 64 * KiB), old, 'origin changed')
        dumps_match_origin(hx.io(['read -v 0 64k']), img, 'read after')
    finally:
        hx.stop()


def test_flush_error_reaches_the_client():
    # qemu-io prints nothing for a failed flush; its exit status tells
    hx, img = export('flush', [rule('flush', once=False)])
    wb = ['-t', 'writeback']
    try:
        r = hx.io(['write -P 1 0 4k'], check_rc=False, extra=wb)
        check_eq(r.returncode, 0, 'exit status without an explicit flush')
        s0 = hx.stats()
        r = hx.io(['write -P 2 0 4k', 'flush'], check_rc=False, extra=wb)
        check(r.returncode != 0, f'failed flush not reported: {r.stdout}')
        s1 = hx.stats()
        check(s1['origin-errors'] > s0['origin-errors'],
              'failed origin flush not counted in origin-errors')
        check_eq(pread_file(img, 0, 4096), b'\x02' * 4096, 'origin data')
    finally:
        hx.stop()


def test_bad_sector_outside_the_request_does_not_fail_it():
    """A read of good sectors succeeds without the cache even when another
    sector of the same cache block is bad; with the cache it must too (the
    cache reads whole blocks, but must not turn a good read into an
    error)."""
    bad = 3584          # last sector of cache block 0 (64k blocks: of 0-15)
    for mode in ('pass-through', 'write-through', 'write-around'):
        for bsize in (4 * KiB, 64 * KiB):
            hx, img = export(f'amp-{mode}-{bsize}',
                             [rule('read', bad, once=False)], mode=mode,
                             **{'block-size': bsize})
            try:
                r = hx.io(['read -v 0 512', 'read -v 4k 4k'],
                          check_rc=False)
                check(not failed(r, 'read'),
                      f'{mode}, block-size {bsize}: a read of good sectors '
                      f'failed because sector {bad // 512} is bad: '
                      f'{r.stdout[-300:]}')
                dumps_match_origin(r, img, f'{mode} {bsize}')
            finally:
                hx.stop()


if __name__ == '__main__':
    main(globals())
