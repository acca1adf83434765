"""etcd (Debian's etcd-server) for the tests: a cluster of members on
loopback ports of their own, data in a private directory, each member
stopped by pid (procs.PROCS) however the test ends; a client of its JSON
gateway (/v3/kv/*), the way hostcached talks to it.
"""

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request

from hostcache.check import TestFailure
from hostcache.procs import PROCS

ETCD = '/usr/bin/etcd'


def unavailable():
    """Why etcd cannot run here (None when it can)."""
    if not os.access(ETCD, os.X_OK):
        return f'{ETCD} missing (run scripts/setup-deps.sh: etcd-server)'
    return None


def free_port():
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def call(url, path, body, timeout=5):
    """POST body (JSON) to the gateway at url; the answer's JSON, or None
    when the member does not answer."""
    req = urllib.request.Request(f'{url}{path}', data=json.dumps(body).encode(),
                                 headers={'Content-Type': 'application/json'},
                                 method='POST')
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def get(url, key):
    """The value of key (None when absent or the member does not answer)."""
    j = call(url, '/v3/kv/range', {'key': _b64(key)})
    if not j or not j.get('kvs'):
        return None
    return base64.b64decode(j['kvs'][0]['value']).decode()


def put(url, key, value):
    """Writes key; True when the member took it."""
    return call(url, '/v3/kv/put', {'key': _b64(key), 'value': _b64(value)}) is not None


class Cluster:
    """n etcd members on 127.0.0.1, started together (a new cluster)."""

    def __init__(self, workdir, n=3, attempts=3):
        self.dir = workdir
        for attempt in range(attempts):
            self.ports = [(free_port(), free_port()) for _ in range(n)]
            self.names = [f'm{i}' for i in range(n)]
            self.procs = [None] * n
            self.initial = ','.join(f'{nm}=http://127.0.0.1:{p}'
                                    for nm, (_, p) in zip(self.names, self.ports))
            for i in range(n):
                self.start(i, wait=False)
            try:
                for i in range(n):
                    self.wait_ready(i)
                return
            except TestFailure:
                taken = any('address already in use' in self.log(i) for i in range(n))
                for i in range(n):
                    self.stop(i)
                if not taken or attempt == attempts - 1:
                    raise

    def url(self, i):
        return f'http://127.0.0.1:{self.ports[i][0]}'

    def urls(self):
        return [self.url(i) for i in range(len(self.ports))]

    def log(self, i):
        try:
            with open(os.path.join(self.dir, f'{self.names[i]}.log'), errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def start(self, i, wait=True):
        """Starts member i (again: same name, ports and data)."""
        c, p = self.ports[i]
        nm = self.names[i]
        argv = [ETCD, '--name', nm, '--data-dir', os.path.join(self.dir, nm),
                '--listen-client-urls', self.url(i),
                '--advertise-client-urls', self.url(i),
                '--listen-peer-urls', f'http://127.0.0.1:{p}',
                '--initial-advertise-peer-urls', f'http://127.0.0.1:{p}',
                '--initial-cluster', self.initial,
                '--initial-cluster-token', os.path.basename(self.dir),
                '--initial-cluster-state', 'new']
        log = open(os.path.join(self.dir, f'{nm}.log'), 'a')
        self.procs[i] = PROCS.start(argv, stdout=log, stderr=log)
        if wait:
            self.wait_ready(i)

    def wait_ready(self, i, timeout=90):
        """Until member i answers a read (linearizable: the cluster has a
        leader)."""
        deadline = time.monotonic() + timeout
        while call(self.url(i), '/v3/kv/range', {'key': _b64('/probe')}, timeout=2) is None:
            if self.procs[i].poll() is not None:
                raise TestFailure(f'etcd member {i} exited {self.procs[i].returncode}: '
                                  f'{self.log(i)[-2000:]}')
            if time.monotonic() > deadline:
                raise TestFailure(f'etcd member {i} not ready after {timeout} s: '
                                  f'{self.log(i)[-2000:]}')
            time.sleep(0.1)

    def stop(self, i):
        if self.procs[i] is not None:
            PROCS.stop(self.procs[i])
            self.procs[i] = None

    def stop_all(self):
        for i in range(len(self.procs)):
            self.stop(i)

    def start_all(self):
        for i in range(len(self.procs)):
            self.start(i, wait=False)
        for i in range(len(self.procs)):
            self.wait_ready(i)
