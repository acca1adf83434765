"""hostcached for the tests and the demo.

- Api: a client of hostcached's REST API (JSON in and out, the bearer
  token the daemon wrote to its token file); scripts/demo-manager.py uses
  it too.
- Daemon: the binary of the build, started on a free port (or a given one)
  against a libvirt URI, stopped by pid at the end of the test
  (procs.PROCS); an Api of its own.
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

from hostcache import paths
from hostcache import libvirt as L
from hostcache.check import TestFailure, check
from hostcache.lines import complete_text
from hostcache.procs import PROCS

HOSTCACHED = paths.HOSTCACHED


def skip_unless_available():
    """Exit 77 (meson's skip) when a private libvirtd cannot run here (not
    root) or hostcached is not built."""
    why = L.unavailable()
    if why or not os.access(HOSTCACHED, os.X_OK):
        print(f'SKIP: {why or HOSTCACHED + " not built"}')
        print('0 passed, 0 failed')
        sys.exit(77)


class Api:
    """hostcached's REST API at url (http://HOST:PORT), authenticated with
    the token in token_file (read at each call: a daemon writes it when it
    starts)."""

    def __init__(self, url, token_file):
        self.url = url
        self.base = f'{url}/api/v1'
        self.token_file = token_file

    def read_token(self):
        with open(self.token_file) as f:
            return f.read().strip()

    def call(self, method, path, body=None, token=True, raw=None, api=True):
        """(status, the answer's JSON, or its text when it is not JSON).
        body: sent as JSON; raw: bytes sent as they are; token=False: no
        Authorization header; api=False: `path` outside /api/v1 (the
        dashboard's files).  Fails when nothing answers."""
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        headers = ({'Authorization': f'Bearer {self.read_token()}'} if token
                   else {})
        if body is not None and raw is None:
            headers['Content-Type'] = 'application/json'
        url = f'{self.base if api else self.url}{path}'
        req = urllib.request.Request(url, method=method, data=data,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                b, ctype = r.read(), r.headers.get('Content-Type', '')
                status = r.status
        except urllib.error.HTTPError as e:
            b, status = e.read(), e.code
            ctype = e.headers.get('Content-Type', '')
        except OSError as e:
            raise TestFailure(f'{method} {url}: {e}') from e
        if 'json' in ctype and b:
            return status, json.loads(b)
        return status, b.decode(errors='replace')

    def ok(self, method, path, body=None, want=200):
        """The answer's JSON; fails unless the status is want."""
        status, j = self.call(method, path, body)
        check(status == want, f'{method} {self.base}{path} answered {status} '
              f'(expected {want}): {str(j)[:1000]}')
        return j


class Daemon(Api):
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
        qemu = (['--emulator', emulator or paths.QEMU_SYSTEM,
                 '--qemu-img', paths.QEMU_IMG]
                if build_qemu else ['--emulator', emulator] if emulator else [])
        token_file = os.path.join(self.dir, 'token')
        self.proc = PROCS.start(
            [binary, '--listen', listen,
             '--db', os.path.join(self.dir, 'state.db'),
             '--token-file', token_file,
             '--libvirt-uri', lv.uri, *qemu, '--stats-interval', '1',
             '--check-interval', str(check_interval), '--ram-budget', '2G',
             '--ssd-root', ssd_root or wd, *extra],
            stderr=open(self.log, 'w'))
        self.port = None
        deadline = time.monotonic() + 30
        while self.port is None:
            check(self.proc.poll() is None,
                  f'hostcached exited: {self.text()}')
            m = re.search(r'REST API on http://127\.0\.0\.1:(\d+)/', self.text())
            if m:
                self.port = int(m.group(1))
            elif time.monotonic() > deadline:
                raise TestFailure(f'hostcached did not start: {self.text()}')
            else:
                time.sleep(0.05)
        super().__init__(f'http://127.0.0.1:{self.port}', token_file)
        self.token = self.read_token()

    def text(self):
        """The daemon's log so far (complete lines: it is still writing)."""
        return complete_text(self.log)

    def state(self, vm, target):
        return self.ok('GET', f'/vms/{vm}/disks/{target}/policy')['compliance']

    def stop(self):
        PROCS.stop(self.proc)
        return self.proc.returncode
