#!/usr/bin/python3
"""Options of the hostcache driver: bad values are refused at open (and at
blockdev-reopen) with a message a person can act on, and nothing changes;
defaults and given values show up in query-blockstats."""

import os

from hostcache import KiB, MiB
from hostcache.check import check, check_eq
from hostcache.procs import tmpdir
from hostcache.qemu import StorageDaemon, hostcache_opts, make_file, qemu_io
from hostcache.qmp import QMPError, node_stats
from hostcache.runner import main

WORK = tmpdir()
IMG = make_file(os.path.join(WORK, 'origin.img'), 8 * MiB)

BAD = [
    ({'mode': 'bogus'}, "Unknown hostcache mode 'bogus'"),
    ({'max_dirty': '0'}, 'max-dirty must be between one block'),
    ({'ram_size': '1M', 'max_dirty': '2M'}, 'max-dirty must be between'),
    ({'max_dirty_age_ms': '-1'}, 'max-dirty-age-ms'),
    ({'ram_size': '0'}, 'ram-size must be at least one cache block'),
    ({'ram_size': '1000'}, 'ram-size must be at least one cache block'),
    ({'block_size': '3000'}, 'block-size must be a power of two'),
    ({'block_size': '256'}, 'block-size must be a power of two'),
    ({'block_size': '4M'}, 'block-size must be a power of two'),
    ({'admit_after': '0'}, 'admit-after must be at least 1'),
    ({'ram_size': 'lots'}, 'ram-size'),
    ({'bogus': '1'}, "does not support the option 'bogus'"),
]


def test_bad_options_refused_at_open_with_clear_message():
    before = open(IMG, 'rb').read()
    for opts, want in BAD:
        r = qemu_io(hostcache_opts(IMG, **opts), ['write -P 1 0 4k'],
                    check_rc=False)
        check(r.returncode != 0, f'{opts} was accepted')
        out = r.stdout + r.stderr
        check(want in out, f'{opts}: message {out!r} lacks {want!r}')
    check(open(IMG, 'rb').read() == before, 'a refused open changed data')


def blockdev(qsd, **opts):
    args = {'driver': 'hostcache', 'node-name': 'hc0',
            'file': {'driver': 'file', 'filename': IMG}}
    args.update(opts)
    return qsd.qmp.cmd('blockdev-add', **args)


def test_defaults_and_values_in_blockstats():
    qsd = StorageDaemon(WORK)
    try:
        blockdev(qsd)
        st = node_stats(qsd.qmp, 'hc0')
        check_eq(st['driver'], 'hostcache', 'driver')
        check_eq(st['mode'], 'write-through', 'default mode')
        check_eq(st['ram-limit'], 256 * MiB, 'default ram-size')
        check_eq(st['block-size'], 4 * KiB, 'default block-size')
        check_eq(st['ram-used'], 0, 'ram-used of a new node')
        check(0 < st['metadata-bytes'] < 0.01 * 256 * MiB,
              f'metadata {st["metadata-bytes"]} not under 1% of 256 MiB')
        qsd.qmp.cmd('blockdev-del', **{'node-name': 'hc0'})
        blockdev(qsd, mode='write-around', **{'ram-size': 8 * MiB,
                                              'block-size': 64 * KiB,
                                              'admit-after': 2,
                                              'seq-cutoff': 0})
        st = node_stats(qsd.qmp, 'hc0')
        check_eq((st['mode'], st['ram-limit'], st['block-size']),
                 ('write-around', 8 * MiB, 64 * KiB), 'given options')
    finally:
        qsd.stop()


def test_blockdev_add_errors_are_clean():
    qsd = StorageDaemon(WORK)
    try:
        for opts, want in [({'mode': 'write-back', 'max-dirty': 0},
                            'max-dirty'),
                           ({'block-size': 3000}, 'power of two'),
                           ({'ram-size': 0}, 'ram-size')]:
            try:
                blockdev(qsd, **opts)
            except QMPError as e:
                check(want in e.desc, f'{opts}: {e.desc!r} lacks {want!r}')
            else:
                raise AssertionError(f'{opts} accepted by blockdev-add')
        names = [n['node-name'] for n in qsd.qmp.cmd('query-named-block-nodes')]
        check('hc0' not in names, f'failed blockdev-add left a node: {names}')
        blockdev(qsd)  # the name is free again
    finally:
        qsd.stop()


def test_reopen_refuses_bad_values_and_keeps_old_ones():
    qsd = StorageDaemon(WORK)
    try:
        blockdev(qsd, **{'ram-size': 4 * MiB})
        base = {'driver': 'hostcache', 'node-name': 'hc0', 'file': 'hc0-file'}
        # name the file child so reopen can refer to it
        file_node = qsd.qmp.cmd('query-named-block-nodes')
        file_name = [n['node-name'] for n in file_node
                     if n['drv'] == 'file'][0]
        base['file'] = file_name
        for opts, want in [({'mode': 'warp-speed'}, "does not accept value 'warp-speed'"),
                           ({'ram-size': 0}, 'ram-size'),
                           ({'block-size': 8192}, 'block-size')]:
            try:
                qsd.qmp.cmd('blockdev-reopen', options=[{**base, **opts}])
            except QMPError as e:
                check(want in e.desc, f'{opts}: {e.desc!r} lacks {want!r}')
            else:
                raise AssertionError(f'reopen with {opts} accepted')
            st = node_stats(qsd.qmp, 'hc0')
            check_eq((st['mode'], st['ram-limit']),
                     ('write-through', 4 * MiB), f'after refused {opts}')
        qsd.qmp.cmd('blockdev-reopen', options=[{**base, 'mode': 'write-around',
                                                  'ram-size': 2 * MiB}])
        st = node_stats(qsd.qmp, 'hc0')
        check_eq((st['mode'], st['ram-limit']), ('write-around', 2 * MiB),
                 'after reopen')
    finally:
        qsd.stop()


def test_read_only_origin_is_cached():
    os.chmod(IMG, 0o444)
    try:
        opts = hostcache_opts(IMG, ram_size='1M') + ',read-only=on'
        opts = opts.replace('file.filename', 'file.read-only=on,file.filename')
        r = qemu_io(opts, ['read 0 64k', 'read 0 64k'], extra=['-r'])
        check('read 65536/65536' in r.stdout, r.stdout)
    finally:
        os.chmod(IMG, 0o644)


if __name__ == '__main__':
    main(globals())
