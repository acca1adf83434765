"""Where the source tree, the builds and the binaries they made are.

meson's test environment sets HOSTCACHE_SRC, HOSTCACHE_BUILD (the meson
build directory) and HOSTCACHE_QEMU_BUILD; without them (a script run by
hand) the defaults are the source tree this package sits in, build/meson
and build/qemu-build.  Read these as paths.NAME at the time of use: a
benchmark replaces a binary by a copy of it (scripts/bench.py).
"""

import os

SRC = os.environ.get('HOSTCACHE_SRC',
                     os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                  '..', '..')))
BUILD = os.environ.get('HOSTCACHE_BUILD', os.path.join(SRC, 'build', 'meson'))
QEMU_BUILD = os.environ.get('HOSTCACHE_QEMU_BUILD',
                            os.path.join(SRC, 'build', 'qemu-build'))
QEMU_IMG = os.path.join(QEMU_BUILD, 'qemu-img')
QEMU_IO = os.path.join(QEMU_BUILD, 'qemu-io')
QEMU_NBD = os.path.join(QEMU_BUILD, 'qemu-nbd')
QSD = os.path.join(QEMU_BUILD, 'storage-daemon', 'qemu-storage-daemon')
QEMU_SYSTEM = os.path.join(QEMU_BUILD, 'qemu-system-x86_64')
HOSTCACHED = os.path.join(BUILD, 'src', 'hostcached')
HOSTCACHECTL = os.path.join(BUILD, 'src', 'hostcachectl')
# the test guest (scripts/make-guest.sh builds it there)
GUEST_DIR = os.environ.get('HC_GUEST_DIR', os.path.join(SRC, 'build', 'guest'))
