#!/usr/bin/python3
"""The browser dashboard against a real hostcached, a real (private)
libvirtd and a TCG VM: Debian's chromium driven by playwright-core
(web/test/dashboard.e2e.js) logs in through the #token= link, creates a
policy through the form (a bad value first), assigns it, watches the disk's
charts draw, filters the events, unassigns, and is sent back to the login
form by a 401 when hostcached restarts with another token.  Screenshots go
to $HOSTCACHE_BUILD/web-artifacts (printed).

Also over plain HTTP against the same daemon: the dashboard's files with
their content types and cache headers, and nothing outside the built
directory (traversal, encodings, symbolic links).

Needs root (a private libvirtd), chromium, node, web/node_modules (npm ci)
and the built dashboard (scripts/build-web.sh): make check has them all.
Exits 77 (skip) without root, fails when the rest is missing.
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading

from hostcache import MiB, paths
from hostcache import libvirt as L
from hostcache.check import check
from hostcache.manager import Daemon, skip_unless_available
from hostcache.procs import PROCS, run, tmpdir
from hostcache.runner import main

CHROMIUM = '/usr/bin/chromium'
NODE = shutil.which('node') or '/usr/bin/node'
WEB_SRC = os.path.join(paths.SRC, 'web')
WEB_DIR = os.environ.get('HOSTCACHE_WEB_DIR', os.path.join(paths.SRC, 'build', 'web'))
ARTIFACTS = os.path.join(
    os.environ.get('HOSTCACHE_BUILD', os.path.join(paths.SRC, 'build', 'meson')), 'web-artifacts')
VM = 'web'
BROWSER_TIMEOUT = 180


def _missing():
    """What the test needs that is not there (None when nothing is)."""
    for path, what in ((CHROMIUM, 'chromium (scripts/setup-deps.sh)'),
                       (NODE, 'node (scripts/setup-deps.sh)'),
                       (os.path.join(WEB_SRC, 'node_modules', 'playwright-core'),
                        'web/node_modules (scripts/build-web.sh runs npm ci)'),
                       (os.path.join(WEB_DIR, 'index.html'),
                        f'the built dashboard in {WEB_DIR} (scripts/build-web.sh)')):
        if not os.path.exists(path):
            return f'{path} missing: {what}'
    return None


def _get(port, path):
    """GET a raw path (sent as given, not normalised)."""
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    try:
        c.putrequest('GET', path, skip_accept_encoding=True)
        c.endheaders()
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


class Io:
    """Reads and writes through the VM's disk (HMP qemu-io on its backend)
    on a thread, until stopped: what the charts show."""

    def __init__(self, lv):
        self.lv = lv
        self.stop_ev = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        dev = L.backend_path('ua-disk0')
        i = 0
        try:
            while not self.stop_ev.is_set():
                # A small hot set (hits after the first round), a cold read
                # (a miss) and a write now and then.
                self.lv.hmp(VM, f'qemu-io -d {dev} "read {(i % 4) * 64}k 64k"')
                if i % 3 == 0:
                    self.lv.hmp(VM, f'qemu-io -d {dev} "read {1 + i % 50}M 4k"')
                    self.lv.hmp(VM, f'qemu-io -d {dev} "write -P 7 {8 + i % 8}M 16k"')
                i += 1
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self):
        self.stop_ev.set()
        self.thread.join(timeout=60)
        check(not self.thread.is_alive(), 'the I/O thread did not stop')
        if self.error:
            raise self.error


def _check_static_files(d):
    status, h, body = _get(d.port, '/')
    check(status == 200 and h['Content-Type'] == 'text/html; charset=utf-8', (status, h))
    check(h['Cache-Control'] == 'no-cache', h)
    check("script-src 'self'" in h.get('Content-Security-Policy', ''), h)
    check(b'<script type="module" src="assets/app-' in body, body[:500])
    js = body.split(b'src="', 1)[1].split(b'"', 1)[0].decode()
    status, h, _ = _get(d.port, '/' + js)
    check(status == 200 and h['Content-Type'] == 'text/javascript; charset=utf-8', (js, h))
    check(h['Cache-Control'] == 'public, max-age=31536000, immutable', h)
    check(h.get('X-Content-Type-Options') == 'nosniff', h)
    for bad in ('/../../../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/assets/..%2f..%2fetc',
                '/assets/', '/assets', '/index.html%00', '/.git/config', '//etc/passwd'):
        status, _, body = _get(d.port, bad)
        check(status == 404 and b'root:' not in body, f'{bad}: {status} {body[:200]}')
    # The API keeps its own paths and its authentication.
    status, _, _ = _get(d.port, '/api/v1/policies')
    check(status == 401, f'/api/v1/policies without a token: {status}')


def test_dashboard_in_a_browser():
    wd = tmpdir('hcweb-')
    lv = L.Libvirtd(wd)
    img = os.path.join(wd, 'web.raw')
    run([paths.QEMU_IMG, 'create', '-q', '-f', 'raw', img, str(64 * MiB)])
    lv.define(L.domain_xml(VM, [L.Disk(img, 'raw', 'ua-disk0', 'vda')]))
    lv.start_domain(VM)
    extra = ('--web-dir', WEB_DIR)
    d = Daemon(wd, lv, extra=extra)
    check(f'dashboard: http://127.0.0.1:{d.port}/#token={d.token}' in d.text(),
          f'no dashboard link in the log:\n{d.text()}')
    _check_static_files(d)

    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # no screenshot of an earlier run
    os.makedirs(ARTIFACTS)
    env = dict(os.environ, HC_URL=f'http://127.0.0.1:{d.port}', HC_TOKEN=d.token, HC_VM=VM,
               HC_ARTIFACTS=ARTIFACTS)
    node = PROCS.start([NODE, os.path.join(WEB_SRC, 'test', 'dashboard.e2e.js')],
                       cwd=WEB_SRC, env=env, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    # The browser's requests, answered one at a time; the rest of its output
    # is passed on.
    timer = threading.Timer(BROWSER_TIMEOUT, node.kill)
    timer.start()
    io = None
    state = {'daemon': d}
    try:
        for line in node.stdout:
            if not line.startswith('@@ '):
                print(line, end='', flush=True)
                continue
            op = json.loads(line[3:])['op']
            reply = {}
            try:
                if op == 'io-start':
                    io = Io(lv)
                elif op == 'io-stop':
                    io.stop()
                    io = None
                elif op == 'restart':
                    port = state['daemon'].port
                    check(state['daemon'].stop() == 0, 'hostcached did not exit 0')
                    with open(os.path.join(wd, 'hostcached', 'token'), 'w') as f:
                        f.write(os.urandom(32).hex() + '\n')
                    state['daemon'] = Daemon(wd, lv, extra=extra, listen=f'127.0.0.1:{port}')
                    reply['token'] = state['daemon'].token
                elif op != 'done':
                    reply['error'] = f'unknown request {op}'
            except Exception as e:  # noqa: BLE001 - the browser test reports it
                reply['error'] = f'{type(e).__name__}: {e}'
            if op != 'done':
                node.stdin.write(json.dumps(reply) + '\n')
                node.stdin.flush()
        rc = node.wait()
    finally:
        timer.cancel()
        if io:
            io.stop()
    print(f'screenshots in {ARTIFACTS}')
    check(rc == 0, f'the browser test failed (exit {rc}; screenshots in {ARTIFACTS})')

    # What the browser did, as the API sees it.
    d = state['daemon']
    check(d.call('GET', '/vms/web/disks/vda/policy')[0] == 404, 'vda still has a policy')
    names = {p['name'] for p in d.ok('GET', '/policies')['policies']}
    check(names == {'balanced', 'read-mostly', 'monitor'}, names)
    actions = [e['action'] for e in d.ok('GET', '/events?vm=web&limit=100')['events']]
    for want in ('assign', 'insert-live', 'unassign', 'remove-live'):
        check(want in actions, f'no {want} event: {actions}')
    check(L.device_root(lv, VM, 'ua-disk0') == 'libvirt-1-storage', 'the filter is still there')
    check(d.stop() == 0, 'hostcached did not exit 0')


if __name__ == '__main__':
    skip_unless_available()
    missing = _missing()
    if missing:
        print(f'FAIL: {missing}')
        sys.exit(1)
    main(globals())
