#!/usr/bin/python3
"""Origin errors in hostcache's write-back mode (blkdebug between hostcache
and the file): a failed write-back or origin flush fails the guest's flush
and keeps the data dirty, written back by the next flush; with a permanent
error every flush fails, reads still return the dirty data, the destager
retries, a reopen to write-through is refused with a clear message, and
deleting the node says in the log that it loses data.

Client, data and set-up: hostcache.writeback (its docstring says how a
test knows which write put each byte of the origin there).

Environment: HC_SEED (repeat a run).
"""

import os
import random
import re

from hostcache import MiB
from hostcache.check import check, check_eq, poll
from hostcache.nbd import NBDError
from hostcache.qemu import make_file, pread_file
from hostcache.qmp import QMPError
from hostcache.runner import main
from hostcache.writeback import (EIO, HOUR_MS, Pattern, SEED, apply,
                                 check_file, connect, delete_node,
                                 scatter_writes, subdir, wb_export)


# ---- e. origin errors (blkdebug between hostcache and the file) ------------
#
# blkdebug: a rule on event 'none' is active from the open on; 'once'
# removes it after its first error; iotype limits it to writes or flushes.

def blkdebug_setup(tag, rules, size=4 * MiB, **hc):
    rng = random.Random(f'{SEED}-{tag}')
    d = subdir(tag)
    img = make_file(os.path.join(d, 'origin.img'), size)
    initial = pread_file(img, 0, size)
    origin = {'driver': 'blkdebug', 'inject-error': rules,
              'image': {'driver': 'file', 'filename': img}}
    hx = wb_export(d, origin=origin, **{'max-dirty-age-ms': HOUR_MS,
                                        'ram-size': 8 * MiB, **hc})
    c = connect(hx)
    model = bytearray(initial)
    apply(model, scatter_writes(c, rng, Pattern(rng, size), size, 16))
    check(hx.stats()['dirty-bytes'] > 0, f'{tag}: nothing dirty')
    return hx, c, img, initial, model


def flush_errno(c):
    try:
        c.flush()
    except NBDError as e:
        return e.errno
    return 0


def test_origin_write_error_once():
    hx, c, img, initial, model = blkdebug_setup('err-once', [
        {'event': 'none', 'iotype': 'write', 'once': True, 'errno': EIO}])
    try:
        s0 = hx.stats()
        check_eq(flush_errno(c), EIO, 'first flush (one origin write fails)')
        s1 = hx.stats()
        check_eq(s1['destage-errors'] - s0['destage-errors'], 1,
                 'destage-errors')
        check(s1['dirty-bytes'] > 0, f'the failed block was dropped: {s1}')
        check_eq(c.read(0, len(model)), bytes(model), 'reads after the error')
        check_eq(flush_errno(c), 0, 'second flush')
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes after the retry')
        check_file(img, model, 'after the second flush')
        c.close()
    finally:
        hx.stop()
    # an origin flush error fails the guest's flush too; the next one works
    hx, c, img, initial, model = blkdebug_setup('err-flush', [
        {'event': 'none', 'iotype': 'flush', 'once': True, 'errno': EIO}])
    try:
        check_eq(flush_errno(c), EIO, 'flush (the origin flush fails)')
        check_eq(flush_errno(c), 0, 'second flush')
        check_eq(hx.stats()['dirty-bytes'], 0, 'dirty-bytes')
        check_file(img, model, 'after the second flush')
        c.close()
    finally:
        hx.stop()


def test_origin_write_error_permanent():
    hx, c, img, initial, model = blkdebug_setup('err-perm', [
        {'event': 'none', 'iotype': 'write', 'errno': EIO}],
        **{'max-dirty-age-ms': 200})
    try:
        for i in range(2):
            check_eq(flush_errno(c), EIO, f'flush {i + 1}')
        st = hx.stats()
        dirty = st['dirty-bytes']
        check(dirty > 0, f'nothing dirty after failed flushes: {st}')
        check_eq(c.read(0, len(model)), bytes(model), 'reads of dirty data')
        # the destager keeps retrying (dirty data older than 200 ms)
        e0 = st['destage-errors']
        poll('destage retries', lambda: hx.stats()['destage-errors'] >= e0 + 3)
        try:
            hx.reopen(mode='write-through')
        except QMPError as e:
            msg = e.desc
        else:
            raise AssertionError('reopen to write-through with undestageable '
                                 'dirty data succeeded')
        print(f'  reopen refused: {msg}')
        check(re.search(r'flush|written back', msg, re.I) and
              'Input/output error' in msg, f'unclear reopen error: {msg}')
        st = hx.stats()
        check_eq((st['mode'], st['dirty-bytes']), ('write-back', dirty),
                 '(mode, dirty-bytes) after the failed reopen')
        check_eq(c.read(0, len(model)), bytes(model), 'reads after reopen')
        check_eq(pread_file(img, 0, len(initial)), initial,
                 'origin (every write to it fails)')
        # removing the node cannot save the data: it must say so
        c.close()
        delete_node(hx)
        log = hx.qsd.log_text()
        print(f'  log: {log.strip()[:300]}')
        check('loses data' in log and 'hc0' in log,
              f'no data-loss error in the log: {log[-2000:]}')
    finally:
        hx.stop()


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
