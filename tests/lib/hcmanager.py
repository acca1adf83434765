"""hostcached for the tests: the binary of the build, started on a free port
(or a given one) against a libvirt URI, stopped by pid at the end of the
test (hctest.PROCS); HTTP calls to its API with the token it made.
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

import hctest as T
import hclibvirt as L
from hclines import complete_text

HOSTCACHED = os.path.join(
    os.environ.get('HOSTCACHE_BUILD', os.path.join(T.SRC, 'build', 'meson')),
    'src', 'hostcached')


def skip_unless_available():
    """Exit 77 (meson's skip) when a private libvirtd cannot run here (not
    root) or hostcached is not built."""
    why = L.unavailable()
    if why or not os.access(HOSTCACHED, os.X_OK):
        print(f'SKIP: {why or HOSTCACHED + " not built"}')
        print('0 passed, 0 failed')
        sys.exit(77)


class Daemon:
    """hostcached on a free port (or `listen`), stopped by pid at the end
    of the test.  Its state (database, token file, logs) is in
    WD/hostcached, so a second Daemon on the same WD is a restart."""

    def __init__(self, wd, lv, extra=(), check_interval=30, listen='127.0.0.1:0',
                 emulator=None, ssd_root=None, binary=HOSTCACHED,
                 build_qemu=True):
        """binary: the hostcached to run; build_qemu=False leaves
        --emulator and --qemu-img to the daemon's defaults (an installed
        one finds its own)."""
        self.dir = os.path.join(wd, 'hostcached')
        os.makedirs(self.dir, exist_ok=True)
        self.lv = lv
        self.log = os.path.join(self.dir, f'log.{time.monotonic_ns()}')
        qemu = (['--emulator', emulator or T.QEMU_SYSTEM, '--qemu-img', T.QEMU_IMG]
                if build_qemu else ['--emulator', emulator] if emulator else [])
        self.proc = T.PROCS.start(
            [binary, '--listen', listen,
             '--db', os.path.join(self.dir, 'state.db'),
             '--token-file', os.path.join(self.dir, 'token'),
             '--libvirt-uri', lv.uri, *qemu, '--stats-interval', '1',
             '--check-interval', str(check_interval), '--ram-budget', '2G',
             '--ssd-root', ssd_root or wd, *extra],
            stderr=open(self.log, 'w'))
        self.port = None
        deadline = time.monotonic() + 30
        while self.port is None:
            T.check(self.proc.poll() is None, f'hostcached exited: {self.text()}')
            m = re.search(r'REST API on http://127\.0\.0\.1:(\d+)/', self.text())
            if m:
                self.port = int(m.group(1))
            elif time.monotonic() > deadline:
                raise T.TestFailure(f'hostcached did not start: {self.text()}')
            else:
                time.sleep(0.05)
        with open(os.path.join(self.dir, 'token')) as f:
            self.token = f.read().strip()

    def text(self):
        """The daemon's log so far (complete lines: it is still writing)."""
        return complete_text(self.log)

    def call(self, method, path, body=None, token=True, raw=None, api=True):
        """api=False: `path` outside /api/v1 (the dashboard's files)."""
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        headers = {'Authorization': f'Bearer {self.token}'} if token else {}
        req = urllib.request.Request(
            f'http://127.0.0.1:{self.port}{"/api/v1" if api else ""}{path}',
            method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                b, ctype = r.read(), r.headers.get('Content-Type', '')
                status = r.status
        except urllib.error.HTTPError as e:
            b, ctype, status = e.read(), e.headers.get('Content-Type', ''), e.code
        if 'json' in ctype and b:
            return status, json.loads(b)
        return status, b.decode()

    def ok(self, method, path, body=None, want=200):
        status, j = self.call(method, path, body)
        T.check(status == want, f'{method} {path}: {status} {j}')
        return j

    def state(self, vm, target):
        return self.ok('GET', f'/vms/{vm}/disks/{target}/policy')['compliance']

    def stop(self):
        T.PROCS.stop(self.proc)
        return self.proc.returncode
