#!/usr/bin/python3
"""make install into a scratch DESTDIR (scripts/install.sh, what `make
install` runs), then the installed hostcached, hostcachectl and QEMU run
from there against a real, private libvirtd.

- every installed file is where docs/INSTALL.md says, the unit, the
  configuration example and the libvirt hook name the installed paths
- hostcached started from DESTDIR without --emulator and --web-dir finds
  the installed QEMU and dashboard: the API answers, / serves index.html
- a policy assigned to a shut-off VM switches it to the installed QEMU;
  started, it runs with the filter in QEMU's graph, the guest boots, its
  VNC console uses a keymap from the installed data directory;
  hostcachectl from DESTDIR reports the disk compliant
- make uninstall leaves nothing behind
"""

import os
import stat
import subprocess

from hostcache import MiB, guest, paths
from hostcache import libvirt as L
from hostcache.check import check, poll
from hostcache.manager import Daemon, skip_unless_available
from hostcache.procs import run, tmpdir
from hostcache.runner import main

PREFIX = '/usr/local'
INSTALL = os.path.join(paths.SRC, 'scripts', 'install.sh')


def _install(destdir, action):
    env = dict(os.environ, DESTDIR=destdir, PREFIX=PREFIX, SYSCONFDIR='/etc',
               QEMU_BUILD=paths.QEMU_BUILD,
               MESON_BUILD=os.environ.get('HOSTCACHE_BUILD',
                                          os.path.join(paths.SRC, 'build', 'meson')),
               WEB=os.environ.get('HOSTCACHE_WEB_DIR',
                                  os.path.join(paths.SRC, 'build', 'web')))
    return run(['bash', INSTALL, action], env=env, timeout=300)


def _files(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs]
    return sorted(out)


def test_install_run_and_uninstall():
    guest.build_guest()
    wd = tmpdir('hcinst-')
    root = os.path.join(wd, 'root')
    _install(root, 'install')
    p = root + PREFIX
    libexec = f'{p}/libexec/hostcache'
    for rel in ('bin/hostcached', 'bin/hostcachectl',
                'libexec/hostcache/qemu-system-x86_64',
                'libexec/hostcache/qemu-img', 'libexec/hostcache/qemu-io',
                'libexec/hostcache/qemu-nbd',
                'libexec/hostcache/qemu-storage-daemon'):
        mode = os.stat(f'{p}/{rel}').st_mode
        check(stat.S_IMODE(mode) == 0o755, f'{rel}: mode {oct(mode)}')
    for rel in ('share/hostcache/web/index.html',
                'share/hostcache/qemu/keymaps/en-us',
                'share/doc/hostcache/README.md',
                'share/doc/hostcache/INSTALL.md',
                'lib/systemd/system/hostcached.service'):
        check(os.path.isfile(f'{p}/{rel}'), f'{rel} not installed')
    with open(f'{p}/lib/systemd/system/hostcached.service') as f:
        unit = f.read()
    check(f'ExecStart={PREFIX}/bin/hostcached --config /etc/hostcache/'
          'hostcached.conf' in unit, unit)
    with open(f'{root}/etc/hostcache/hostcached.conf.example') as f:
        conf = f.read()
    check(f'emulator = {PREFIX}/libexec/hostcache/qemu-system-x86_64' in conf
          and f'web-dir = {PREFIX}/share/hostcache/web' in conf, conf)
    check(os.path.isfile(f'{root}/etc/hostcache/hostcached.conf'),
          'no hostcached.conf')
    # The libvirt hook that prepares this host for incoming migrations
    # (docs/MANAGER.md, Migration), running the installed hostcachectl.
    hook = f'{root}/etc/libvirt/hooks/qemu.d/hostcache'
    check(stat.S_IMODE(os.stat(hook).st_mode) == 0o755, f'{hook} not executable')
    with open(hook) as f:
        check(f'HOSTCACHECTL={PREFIX}/bin/hostcachectl' in f.read(), hook)
    r = run([f'{libexec}/qemu-system-x86_64', '-L', 'help'])
    check(f'{libexec}/../../share/hostcache/qemu' in r.stdout,
          f'the installed QEMU looks for its data elsewhere:\n{r.stdout}')

    lv = L.Libvirtd(wd)
    img = os.path.join(wd, 'vm.raw')
    run([paths.QEMU_IMG, 'create', '-q', '-f', 'raw', img, str(32 * MiB)])
    console = os.path.join(wd, 'console.log')
    xml = L.virt_install_xml('inst', [L.Disk(img, 'raw', 'ua-disk0', 'vda')],
                             console_log=console)
    lv.define(xml.replace("<graphics type='vnc' port='-1' autoport='yes'>",
                          "<graphics type='vnc' port='-1' autoport='yes' "
                          "keymap='de'>"))

    d = Daemon(wd, lv, binary=f'{p}/bin/hostcached', build_qemu=False)
    health = d.ok('GET', '/health')
    check(health['libvirt'] == 'connected', health)
    status, page = d.call('GET', '/', token=False, api=False)
    check(status == 200 and '<html' in page.lower(), f'/: {status}')
    a = d.ok('PUT', '/vms/inst/disks/vda/policy', {'policy': 'balanced'})
    check(a['compliance']['state'] == 'pending-restart', a)
    check(f'<emulator>{libexec}/qemu-system-x86_64</emulator>' in
          lv.dumpxml('inst', inactive=True), 'not switched to the installed QEMU')
    lv.start_domain('inst')
    L.wait_console(console, '^HC-READY', lv=lv, dom='inst', timeout=180)
    check(L.device_root(lv, 'inst', 'ua-disk0') == 'hc-vda', 'no filter')
    check(f'{libexec}/qemu-system-x86_64' in lv.domain_log('inst'),
          'the VM does not run the installed QEMU')
    check(lv.qmp('inst', 'query-vnc')['enabled'], 'no VNC')
    poll('compliant', lambda: d.state('inst', 'vda')['state'] == 'compliant',
         timeout=60)
    ctl = subprocess.run([f'{p}/bin/hostcachectl', '--url',
                          f'http://127.0.0.1:{d.port}', '--token-file',
                          os.path.join(d.dir, 'token'), 'disk', 'status',
                          'inst', 'vda'], capture_output=True, text=True,
                         timeout=60, check=False)
    check(ctl.returncode == 0 and 'compliant' in ctl.stdout,
          f'hostcachectl: {ctl.returncode} {ctl.stdout} {ctl.stderr}')
    check(d.stop() == 0, 'hostcached did not exit 0')
    lv.destroy('inst')
    lv.stop()

    _install(root, 'uninstall')
    left = _files(root)
    check(not left, f'left after uninstall: {left}')
    check(not os.path.exists(root + PREFIX), 'empty directories left')


if __name__ == '__main__':
    skip_unless_available()
    main(globals())
