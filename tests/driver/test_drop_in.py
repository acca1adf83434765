#!/usr/bin/python3
"""The project's QEMU as a drop-in for Debian's (a real, private libvirtd).

- libvirt's domain capabilities of the project's emulator offer what
  Debian's qemu-system-x86 offers (graphics, video, USB redirection, TPM,
  channels, filesystems, ...), GUI front ends aside; the binary has the
  audio, network and block drivers Debian builds (SPICE and ALSA audio,
  slirp and vhost, RBD, iSCSI, curl, ssh, NFS, the image formats)
- a domain shaped like virt-install's default (q35, VNC, virtio video, a
  USB tablet on qemu-xhci, virtio-net on user networking, a serial console,
  the guest agent's channel, virtio RNG and balloon) starts on it; the
  guest's console is read, the VNC server answers with its RFB greeting,
  the devices are in QEMU
- the same with SPICE (spicevmc channel, USB redirection, ich9 sound with
  SPICE audio): the SPICE server listens, the devices are in QEMU
"""

import os
import re
import socket
import subprocess
import xml.etree.ElementTree as ET

from hostcache import MiB, guest, paths
from hostcache import libvirt as L
from hostcache.check import check
from hostcache.procs import tmpdir
from hostcache.qemu import make_file

DEBIAN_QEMU = '/usr/bin/qemu-system-x86_64'
# What Debian's emulator offers through loadable GUI modules (its
# qemu-system-gui and -modules-opengl packages) and the project's build
# leaves out on purpose: desktop front ends, not for a server's VMs
# (docs/INSTALL.md, The project's QEMU).
GUI_ONLY = {('graphics', 'type'): {'sdl', 'egl-headless', 'dbus', 'gtk'}}
# One capabilities cache for the daemons of this run (each test has its
# own): libvirt probes each emulator once.
CACHE = None


def _lv():
    global CACHE
    if CACHE is None:
        CACHE = tmpdir('hcdrop-cache-')
    return L.Libvirtd(tmpdir('hcdrop-'), name='lv', cache_dir=CACHE)


def _domcaps(lv, emulator):
    r = lv.virsh('domcapabilities', '--emulatorbin', emulator, '--virttype',
                 'qemu', '--arch', 'x86_64', '--machine', 'q35', timeout=300)
    return ET.fromstring(r.stdout)


def _enums(caps):
    """{(device or section, enum name): set of values} and the device
    kinds libvirt calls unsupported."""
    out, unsupported = {}, set()
    for section in ('devices', 'features', 'os'):
        node = caps.find(section)
        for dev in (list(node) if node is not None else []):
            if dev.get('supported') == 'no':
                unsupported.add(dev.tag)
            for e in dev.iter('enum'):
                out[(dev.tag, e.get('name'))] = {v.text for v in e}
    return out, unsupported


def _run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          check=False).stdout


def test_capabilities_cover_debians_emulator():
    lv = _lv()
    ours, ours_no = _enums(_domcaps(lv, paths.QEMU_SYSTEM))
    # What the project promises, whatever Debian's binary has here.
    need = {('graphics', 'type'): {'vnc', 'spice'},
            ('video', 'modelType'): {'vga', 'cirrus', 'qxl', 'virtio',
                                     'bochs', 'ramfb', 'none'},
            ('redirdev', 'bus'): {'usb'},
            ('tpm', 'model'): {'tpm-tis', 'tpm-crb'},
            # ('emulator' too once Debian's swtpm is installed: libvirt
            # lists it when it finds swtpm, whatever the QEMU)
            ('tpm', 'backendModel'): {'passthrough'},
            ('channel', 'type'): {'pty', 'unix', 'spicevmc'},
            ('hostdev', 'subsysType'): {'usb'},
            ('filesystem', 'driverType'): {'path', 'virtiofs'},
            ('rng', 'backendModel'): {'random', 'egd', 'builtin'},
            ('disk', 'bus'): {'fdc', 'scsi', 'virtio', 'usb', 'sata'}}  # q35: no IDE
    for key, values in need.items():
        check(values <= ours.get(key, set()),
              f'{key}: the project emulator offers {sorted(ours.get(key, []))}'
              f', missing {sorted(values - ours.get(key, set()))}')
    check(not ({'tpm', 'redirdev', 'graphics'} & ours_no),
          f'unsupported device kinds: {sorted(ours_no)}')
    # And everything Debian's own binary offers on this host, GUI front
    # ends aside (Debian's SPICE module may not be installed here).
    if os.access(DEBIAN_QEMU, os.X_OK):
        deb, deb_no = _enums(_domcaps(lv, DEBIAN_QEMU))
        for key, values in deb.items():
            lacking = values - ours.get(key, set()) - GUI_ONLY.get(key, set())
            check(not lacking, f'{key}: Debian\'s emulator offers '
                  f'{sorted(lacking)}, the project\'s does not')
        check(ours_no <= deb_no, f'unsupported here only: '
              f'{sorted(ours_no - deb_no)}')

    # Backends libvirt does not list: audio, network, block drivers.
    audio = _run(paths.QEMU_SYSTEM, '-audio', 'help')
    for drv in ('none', 'alsa', 'oss', 'spice', 'wav'):
        check(re.search(rf'^{drv}$', audio, re.M), f'no {drv} audio:\n{audio}')
    netdevs = _run(paths.QEMU_SYSTEM, '-netdev', 'help')
    for nd in ('user', 'tap', 'bridge', 'vhost-user', 'vhost-vdpa', 'stream'):
        check(re.search(rf'^{nd}$', netdevs, re.M), f'no {nd} netdev:\n{netdevs}')
    devices = _run(paths.QEMU_SYSTEM, '-device', 'help')
    for dev in ('usb-host', 'usb-redir', 'qxl-vga', 'virtio-vga',
                'virtio-gpu-pci', 'tpm-crb', 'vhost-user-blk-pci',
                'vhost-user-fs-pci', 'virtio-9p-pci', 'ccid-card-emulated',
                'ich9-intel-hda', 'usb-tablet', 'virtserialport'):
        check(f'name "{dev}"' in devices, f'no device {dev}')
    fmts = _run(paths.QEMU_IMG, '--help')
    for drv in ('rbd', 'iscsi', 'nfs', 'ssh', 'https', 'vmdk', 'vhdx', 'vpc',
                'vdi', 'qed', 'parallels', 'dmg', 'cloop', 'bochs',
                'hostcache'):
        check(re.search(rf'\b{drv}\b', fmts.split('Supported formats:')[-1]),
              f'qemu-img has no {drv} driver')
    version = _run(paths.QEMU_SYSTEM, '--version')
    check('10.0.2 (hostcache)' in version, version)


def _vnc_greeting(lv, dom):
    r = lv.virsh('domdisplay', dom)
    m = re.match(r'vnc://127\.0\.0\.1:(\d+)', r.stdout.strip())
    check(m, f'domdisplay: {r.stdout!r}')
    with socket.create_connection(('127.0.0.1', 5900 + int(m.group(1))),
                                  timeout=30) as s:
        return s.recv(12)


def _peripherals(lv, dom):
    return {p['name'] for p in lv.qmp(dom, 'qom-list',
                                      path='/machine/peripheral')}


def _start_virt_install_domain(lv, graphics):
    guest.build_guest()
    check(L.guest_available(), 'build/guest missing: scripts/make-guest.sh')
    wd = lv.dir
    dom = f'vi-{graphics}'
    img = make_file(os.path.join(wd, f'{dom}.raw'), 64 * MiB, pattern=0)
    console = os.path.join(wd, f'{dom}.console')
    xml = L.virt_install_xml(dom, [L.Disk(img, 'raw', 'ua-disk0', 'vda')],
                             graphics=graphics, console_log=console)
    lv.define(xml)
    lv.start_domain(dom)
    L.wait_console(console, '^HC-READY', lv=lv, dom=dom, timeout=180)
    check('HC-BOOT' in L.console_text(console), 'no boot line')
    return dom


def _common_devices(lv, dom):
    have = _peripherals(lv, dom)
    for dev in ('video0', 'input0', 'net0', 'channel0', 'serial0', 'rng0',
                'balloon0', 'usb', 'ua-disk0'):
        check(dev in have, f'{dom}: no {dev} in QEMU: {sorted(have)}')
    mice = lv.qmp(dom, 'query-mice')
    check(any('Tablet' in m['name'] for m in mice), f'no tablet: {mice}')
    net = lv.hmp(dom, 'info network')
    check(re.search(r'hostnet0: .*type=user', net) and 'virtio-net' in net,
          f'no virtio-net on user networking:\n{net}')
    chardevs = {c['label']: c['filename'] for c in lv.qmp(dom, 'query-chardev')}
    check(any('org.qemu.guest_agent.0' in f or 'channel0' in k
              for k, f in chardevs.items()), f'no agent channel: {chardevs}')
    # virtio video: libvirt gives the primary virtio video a virtio-vga.
    video = lv.qmp(dom, 'qom-get', path='/machine/peripheral/video0',
                   property='type')
    check(video.startswith('virtio-vga'), f'video0 is {video}')


def test_virt_install_vnc_domain():
    lv = _lv()
    dom = _start_virt_install_domain(lv, 'vnc')
    greeting = _vnc_greeting(lv, dom)
    check(greeting.startswith(b'RFB 003.'), f'VNC answered {greeting!r}')
    vnc = lv.qmp(dom, 'query-vnc')
    check(vnc['enabled'], vnc)
    _common_devices(lv, dom)
    lv.destroy(dom)


def test_virt_install_spice_domain():
    lv = _lv()
    dom = _start_virt_install_domain(lv, 'spice')
    spice = lv.qmp(dom, 'query-spice')
    check(spice['enabled'] and spice.get('port'), spice)
    r = lv.virsh('domdisplay', dom)
    check(r.stdout.strip() == f'spice://127.0.0.1:{spice["port"]}',
          f'domdisplay: {r.stdout!r}')
    with socket.create_connection(('127.0.0.1', spice['port']), timeout=30):
        pass
    have = _peripherals(lv, dom)
    for dev in ('redir0', 'redir1', 'sound0', 'channel1'):
        check(dev in have, f'no {dev} in QEMU: {sorted(have)}')
    _common_devices(lv, dom)
    lv.destroy(dom)


if __name__ == '__main__':
    L.main(globals())
