#!/usr/bin/python3
"""Three hostcached sharing their policies through a 3-member etcd on
loopback (hostcache/etcd.py), each with its own SQLite.

Host B runs a real private libvirtd with a TCG domain (disk vda cached);
hosts A and C use libvirt's test:///default driver (no VM: one running
guest is enough to show the re-application, the catalogue is checked on
all three).  C talks only to etcd member 2, so stopping that member
alone cuts C off while A and B go on.

- a policy created on A is on B and C within seconds; changed on A, B
  re-applies it to its running disk (QEMU's filter options change)
- C cut off: health and /metrics say so, C's policy changes answer 503
  naming the member's URL, C keeps its catalogue; a change made on A
  meanwhile reaches C when its member is back
- all of etcd stopped: B's VM keeps caching (filter in place, reads
  served from its cache), every host refuses policy changes with 503, a
  restart of B keeps its catalogue; etcd back: every host reconnects and
  a change made then reaches all three
- a bad --cluster-etcd URL: hostcached exits 2 with a clear message
"""

import json
import os

from hostcache import MiB, paths
from hostcache import etcd as E
from hostcache import libvirt as L
from hostcache.check import TestFailure, check, poll
from hostcache.manager import Daemon, skip_unless_available
from hostcache.procs import run, tmpdir
from hostcache.runner import main

KEY = '/hostcache/policies/'


class _TestDriver:
    """libvirt's built-in test driver: a host without a libvirtd."""
    uri = 'test:///default'


def _daemon(wd, name, lv, urls, config_file=False):
    """hostcached `name` following etcd at urls, given by the flag or (with
    config_file) in its config file, comma-separated as a person writes it."""
    # No periodic compliance check during the test: a change must be
    # re-applied because it came from etcd, not found by the next check.
    where = ['--cluster-etcd', ','.join(urls)]
    if config_file:
        conf = os.path.join(wd, f'{name}.conf')
        with open(conf, 'w') as f:
            f.write(f'cluster-etcd = {",".join(urls)}\ncluster-poll-ms = 200\n')
        where = ['--config', conf]
    return Daemon(os.path.join(wd, name), lv, check_interval=86400,
                  extra=where + ['--cluster-poll-ms', '200'])


def _policy(d, name):
    status, j = d.call('GET', f'/policies/{name}')
    return j if status == 200 else None


def _catalogue(d):
    return d.ok('GET', '/health')['catalogue']


def _ram_limit(lv):
    return L.hostcache_stats(lv, 'vm', 'hc-vda')['ram-limit']


def test_cluster_catalogue_on_etcd():
    why = E.unavailable()
    check(why is None, why)
    wd = tmpdir('hccluster-')
    etcd_dir = os.path.join(wd, 'etcd')
    os.makedirs(etcd_dir)
    cluster = E.Cluster(etcd_dir, n=3)
    urls = cluster.urls()

    lv = L.Libvirtd(os.path.join(wd, 'b'))
    img = os.path.join(wd, 'b.raw')
    run([paths.QEMU_IMG, 'create', '-q', '-f', 'raw', img, str(64 * MiB)])
    lv.define(L.domain_xml('vm', [L.Disk(img, 'raw', 'ua-disk0', 'vda')]))
    lv.start_domain('vm')

    a = _daemon(wd, 'a', _TestDriver(), urls)
    b = _daemon(wd, 'b', lv, urls[1:] + urls[:1], config_file=True)
    c = _daemon(wd, 'c', _TestDriver(), [urls[2]])
    for d in (a, b, c):
        poll('every host following etcd',
             lambda: _catalogue(d)['state'] == 'connected', timeout=60)
    check(_catalogue(b)['endpoints'] == urls[1:] + urls[:1], _catalogue(b))
    # One catalogue: the first host published its default policies.
    names = sorted(p['name'] for p in a.ok('GET', '/policies')['policies'])
    for d in (b, c):
        poll('the same catalogue on every host', lambda: sorted(
            p['name'] for p in d.ok('GET', '/policies')['policies']) == names, timeout=30)

    # Created on A: on B and C within seconds.
    a.ok('POST', '/policies', {'name': 'shared', 'description': 'cluster',
                               'rules': {'mode': 'write-through', 'ram-size': '32M'}},
         want=201)
    for d in (b, c):
        p = poll('the new policy on every host', lambda: _policy(d, 'shared'), timeout=30)
        check(p['rules']['ram-size'] == 32 * MiB, p)
    stored = json.loads(E.get(urls[0], KEY + 'shared'))
    check(stored['rules']['ram-size'] == 32 * MiB, stored)

    # Assigned on B; changed on A: B re-applies it to its running disk.
    asg = b.ok('PUT', '/vms/vm/disks/vda/policy', {'policy': 'shared'})
    check(asg['compliance']['state'] == 'compliant', asg)
    check(_ram_limit(lv) == 32 * MiB, 'filter not at 32M')
    lv.qemu_io('vm', 'ua-disk0', 'write -P 0x5a 0 1M')
    a.ok('PUT', '/policies/shared', {'rules': {'mode': 'write-through', 'ram-size': '48M'}})
    poll('the change re-applied on B', lambda: _ram_limit(lv) == 48 * MiB, timeout=60)
    poll('B reports the re-application', lambda: any(
        e['action'] == 'policy-sync' and 'shared' in e['message']
        for e in b.ok('GET', '/events?limit=50')['events']), timeout=30)
    check(b.state('vm', 'vda')['state'] == 'compliant', b.state('vm', 'vda'))
    for d in (b, c):
        poll('the change on every host',
             lambda: (_policy(d, 'shared') or {}).get('rules', {}).get('ram-size') == 48 * MiB,
             timeout=30)

    # C cut off (its only member stopped): refused with 503, catalogue kept.
    cluster.stop(2)
    cat = poll('C reports etcd unreachable', lambda: (lambda k: k if k['state'] ==
               'disconnected' else None)(_catalogue(c)), timeout=60)
    check(f'etcd at {urls[2]} is unreachable' in cat['problem'], cat)
    health = c.ok('GET', '/health')
    check(health['status'] == 'degraded', health)
    metrics = c.call('GET', '/metrics')
    check('hostcached_catalogue_connected{kind="etcd"} 0' in str(metrics[1]),
          f'metric: {str(metrics)[-3000:]}')
    status, j = c.call('PUT', '/policies/shared', {'rules': {'ram-size': '16M'}})
    check(status == 503, f'{status} {j}')
    check(f'etcd at {urls[2]} is unreachable' in j['detail'] and
          'refused until it is back' in j['detail'], j)
    status, j = c.call('POST', '/policies', {'name': 'c-only', 'rules': {}})
    check(status == 503 and 'unreachable' in j['detail'], f'{status} {j}')
    check(_policy(c, 'shared')['rules']['ram-size'] == 48 * MiB, 'C lost its catalogue')
    # A and B go on (members 0 and 1 are a majority): a change meanwhile,
    # once they have a leader again (member 2 may have been it).
    cluster.wait_ready(0)
    cluster.wait_ready(1)
    a.ok('PUT', '/policies/shared', {'rules': {'mode': 'write-through', 'ram-size': '40M'}})
    poll('B re-applies while C is cut off', lambda: _ram_limit(lv) == 40 * MiB, timeout=60)
    check(_policy(c, 'shared')['rules']['ram-size'] == 48 * MiB, 'C changed without etcd')
    cluster.start(2)
    poll('C catches up', lambda: _policy(c, 'shared')['rules']['ram-size'] == 40 * MiB,
         timeout=60)
    poll('C connected again', lambda: _catalogue(c)['state'] == 'connected', timeout=30)

    # All of etcd stopped: caching goes on, every host refuses changes.
    cluster.stop_all()
    for d in (a, b, c):
        poll('every host reports etcd unreachable',
             lambda: _catalogue(d)['state'] == 'disconnected', timeout=60)
    before = L.hostcache_stats(lv, 'vm', 'hc-vda')
    for _ in range(2):
        out = lv.qemu_io('vm', 'ua-disk0', 'read -P 0x5a 0 1M')
        check('Pattern verification failed' not in out, out)
    after = L.hostcache_stats(lv, 'vm', 'hc-vda')
    check(after['read-hits'] > before['read-hits'], f'no cache hits: {before} {after}')
    check(L.device_root(lv, 'vm', 'ua-disk0') == 'hc-vda', 'filter gone without etcd')
    check(b.state('vm', 'vda')['state'] == 'compliant', b.state('vm', 'vda'))
    for d in (a, b, c):
        status, j = d.call('DELETE', '/policies/monitor')
        check(status == 503 and 'is unreachable' in j['detail'], f'{status} {j}')
        check(_policy(d, 'monitor') is not None, 'deleted without etcd')
    # B restarted without etcd: its catalogue is still there (its SQLite).
    check(b.stop() == 0, 'hostcached B did not exit 0')
    b = _daemon(wd, 'b', lv, urls[1:] + urls[:1], config_file=True)
    check(_policy(b, 'shared')['rules']['ram-size'] == 40 * MiB, 'B lost its catalogue')
    check(_catalogue(b)['state'] == 'disconnected', _catalogue(b))
    poll('B re-verifies its disk', lambda: b.state('vm', 'vda')['state'] == 'compliant',
         timeout=60)

    # etcd back: every host reconnects and follows again.
    cluster.start_all()
    for d in (a, b, c):
        poll('every host reconnected',
             lambda: _catalogue(d)['state'] == 'connected', timeout=60)
    c.ok('PUT', '/policies/shared', {'rules': {'mode': 'write-through', 'ram-size': '24M'}})
    poll('B re-applies the change made on C', lambda: _ram_limit(lv) == 24 * MiB, timeout=60)
    poll('A has it', lambda: _policy(a, 'shared')['rules']['ram-size'] == 24 * MiB,
         timeout=30)
    for d in (a, b, c):
        check(d.stop() == 0, 'hostcached did not exit 0')
    cluster.stop_all()


def test_bad_cluster_etcd_url_is_refused():
    wd = tmpdir('hccluster-bad-')
    for url, why in (('https://127.0.0.1:2379', 'https'),
                     ('http://user@127.0.0.1:2379', 'user information'),
                     ('http://127.0.0.1:2379/x', 'has a path'),
                     ('http://127.0.0.1', 'names no port')):
        r = run([paths.HOSTCACHED, '--listen', '127.0.0.1:0',
                 '--db', os.path.join(wd, 'state.db'),
                 '--token-file', os.path.join(wd, 'token'),
                 '--libvirt-uri', 'test:///default', '--cluster-etcd', url],
                check_rc=False, timeout=60)
        check(r.returncode == 2, f'{url}: exit {r.returncode}: {r.stderr}')
        check(why in r.stderr and 'http://HOST:PORT' in r.stderr, f'{url}: {r.stderr}')


if __name__ == '__main__':
    skip_unless_available()
    why = E.unavailable()
    if why:
        raise TestFailure(why)
    main(globals())
