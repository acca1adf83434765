#!/usr/bin/env bash
# make deb: Debian packages of what `make install` installs, with PREFIX /usr:
#
#   hostcache-qemu  /usr/libexec/hostcache (the project's QEMU with the
#                   driver built in) and /usr/share/hostcache/qemu; needs
#                   Debian's firmware packages, never replaces Debian's QEMU
#   hostcache       hostcached, hostcachectl, the dashboard, the docs, the
#                   systemd unit (not enabled), /etc/hostcache/hostcached.conf
#                   (a conffile)
#
# into $BUILD/deb/hostcache{,-qemu}_VERSION_ARCH.deb.  Built with dpkg-deb
# from the installed tree; library dependencies from dpkg-shlibdeps.  A host
# installs them with `apt install ./build/deb/*.deb` (docs/INSTALL.md).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build}
OUT=$BUILD/deb
VERSION=$(sed -n "s/^ *version: *'\([^']*\)'.*/\1/p" "$SRC/meson.build" | head -1)
REVISION=${DEB_REVISION:-1}
ARCH=$(dpkg --print-architecture)
MAINTAINER=${DEB_MAINTAINER:-"hostcache developers <hostcache@localhost>"}

for tool in dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null ||
        { echo "make-deb: $tool not found (Debian's dpkg-dev)" >&2; exit 1; }
done
[ -n "$VERSION" ] || { echo "make-deb: no version in meson.build" >&2; exit 1; }

rm -rf "$OUT"
STAGE=$OUT/stage
DESTDIR=$STAGE PREFIX=/usr SYSCONFDIR=/etc UNITDIR=/lib/systemd/system \
    BUILD=$BUILD bash "$SRC/scripts/install.sh" install >/dev/null

H=$OUT/hostcache
Q=$OUT/hostcache-qemu
mkdir -p "$Q/usr/libexec" "$Q/usr/share/hostcache"
mv "$STAGE/usr/libexec/hostcache" "$Q/usr/libexec/"
mv "$STAGE/usr/share/hostcache/qemu" "$Q/usr/share/hostcache/"
rmdir "$STAGE/usr/libexec"
mv "$STAGE" "$H"

# Library dependencies of each package's binaries (dpkg-shlibdeps wants a
# debian/control in its working directory).
shlibs() {  # shlibs BINARIES...
    local tmp args=() b
    tmp=$(mktemp -d)
    mkdir "$tmp/debian"
    printf 'Source: hostcache\n\nPackage: hostcache\nArchitecture: any\n' \
        > "$tmp/debian/control"
    for b in "$@"; do args+=(-e "$b"); done
    (cd "$tmp" && dpkg-shlibdeps -O "${args[@]}" 2>/dev/null) |
        sed -n 's/^shlibs:Depends=//p'
    rm -rf "$tmp"
}

doc() {  # doc PKGDIR PACKAGE: the copyright file Debian requires
    install -d "$1/usr/share/doc/$2"
    cat > "$1/usr/share/doc/$2/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hostcache

Files: *
License: GPL-2.0-or-later
 The hostcache driver is built into QEMU 10.0.2 (GPL-2.0-only with parts
 under compatible licenses); Debian's text of the GPL is in
 /usr/share/common-licenses/GPL-2.
EOF
}

control() {  # control PKGDIR PACKAGE DEPENDS DESCRIPTION...
    local dir=$1 pkg=$2 deps=$3
    shift 3
    install -d "$dir/DEBIAN"
    {
        echo "Package: $pkg"
        echo "Version: $VERSION-$REVISION"
        echo "Architecture: $ARCH"
        echo "Maintainer: $MAINTAINER"
        echo "Installed-Size: $(du -sk --exclude=DEBIAN "$dir" | cut -f1)"
        echo "Depends: $deps"
        echo "Section: admin"
        echo "Priority: optional"
        printf 'Description: %s\n' "$1"
        shift
        for line in "$@"; do echo " $line"; done
    } > "$dir/DEBIAN/control"
}

doc "$Q" hostcache-qemu
qdeps=$(shlibs "$Q"/usr/libexec/hostcache/*)
[ -n "$qdeps" ] || { echo "make-deb: dpkg-shlibdeps found no libraries" >&2; exit 1; }
control "$Q" hostcache-qemu \
    "$qdeps, seabios, qemu-system-data (>= 1:10.0~), ipxe-qemu" \
    "QEMU 10.0.2 with the hostcache block filter built in" \
    "The x86_64 system emulator and tools (qemu-img, qemu-io, qemu-nbd," \
    "qemu-storage-daemon) with the hostcache driver compiled in and the" \
    "features of Debian's qemu-system-x86 (VNC, SPICE, USB redirection," \
    "slirp, vhost, seccomp, TPM, RBD/iSCSI/curl/ssh/NFS)." \
    "Installed in /usr/libexec/hostcache: Debian's QEMU stays as it is."

doc "$H" hostcache
hdeps=$(shlibs "$H/usr/bin/hostcached" "$H/usr/bin/hostcachectl")
[ -n "$hdeps" ] || { echo "make-deb: dpkg-shlibdeps found no libraries" >&2; exit 1; }
control "$H" hostcache \
    "$hdeps, hostcache-qemu (= $VERSION-$REVISION), libvirt-daemon-driver-qemu" \
    "host-side caching of VM disk I/O for QEMU/KVM and libvirt" \
    "hostcached manages storage policies: it puts the hostcache filter under" \
    "the disks of libvirt domains (live and in their definitions), checks" \
    "compliance and serves a REST API, Prometheus metrics and a browser" \
    "dashboard; hostcachectl is its command-line client." \
    "The systemd unit hostcached.service is installed, not enabled."
printf "%s\n" /etc/hostcache/hostcached.conf /etc/libvirt/hooks/qemu.d/hostcache > "$H/DEBIAN/conffiles"
cat > "$H/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
EOF
cat > "$H/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
# The database and the API token go with a purge only.
if [ "$1" = purge ]; then
    rm -rf /var/lib/hostcache
fi
EOF
chmod 0755 "$H/DEBIAN/postinst" "$H/DEBIAN/postrm"

for p in "$Q" "$H"; do
    name=$(basename "$p")
    dpkg-deb --root-owner-group -Zxz --build "$p" \
        "$OUT/${name}_${VERSION}-${REVISION}_${ARCH}.deb" >/dev/null
    rm -rf "$p"
done
ls -1 "$OUT"/*.deb
