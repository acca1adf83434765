#!/usr/bin/env bash
# make install / make uninstall: the built project into DESTDIR + PREFIX.
#
#   scripts/install.sh install|uninstall|list
#
# Environment (the Makefile passes them): DESTDIR (""), PREFIX (/usr/local),
# SYSCONFDIR (/etc), UNITDIR (PREFIX/lib/systemd/system), BUILD (build/),
# STRIP (strip; "" installs the binaries unstripped); QEMU_BUILD, QEMU_SRC,
# MESON_BUILD and WEB default to BUILD's.
#
# What goes where (docs/INSTALL.md):
#   PREFIX/bin/hostcached, hostcachectl
#   PREFIX/libexec/hostcache/   the project's QEMU: qemu-system-x86_64 (a
#                               drop-in <emulator>), qemu-img, qemu-io,
#                               qemu-nbd, qemu-storage-daemon; never over
#                               Debian's QEMU
#   PREFIX/share/hostcache/qemu QEMU's data (keymaps); QEMU is
#                               relocatable and finds it from its binary;
#                               firmware comes from Debian's seabios,
#                               qemu-system-data and ipxe-qemu
#   PREFIX/share/hostcache/web  the dashboard (hostcached's --web-dir)
#   PREFIX/share/doc/hostcache  README.md, docs/
#   UNITDIR/hostcached.service  the systemd unit, paths under PREFIX
#   SYSCONFDIR/libvirt/hooks/qemu.d/hostcache  the libvirt hook that
#                               prepares this host for incoming migrations
#   SYSCONFDIR/hostcache/hostcached.conf.example (and hostcached.conf when
#                               there is none; an edited one is kept)
# hostcached finds the QEMU and the dashboard next to itself (PREFIX/bin ->
# PREFIX/libexec/hostcache, PREFIX/share/hostcache/web) without flags.
# Uninstall removes exactly these, hostcached.conf only when unchanged.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
STRIP=${STRIP-strip}

# (Each can be named on its own: the tests install from meson's build.)
QEMU_BUILD=${QEMU_BUILD:-$BUILD/qemu-build}
QEMU_SRC=${QEMU_SRC:-$(dirname "$(readlink -f "$QEMU_BUILD")")/qemu-src}
MESON_BUILD=${MESON_BUILD:-$BUILD/meson}
WEB=${WEB:-$BUILD/web}

QEMU_BINS="qemu-system-x86_64 qemu-img qemu-io qemu-nbd storage-daemon/qemu-storage-daemon"
DOCS="README.md docs/ARCHITECTURE.md docs/BENCHMARKS.md docs/DRIVER.md docs/INSTALL.md
docs/LIBVIRT.md docs/MANAGER.md docs/SSD-FORMAT.md"

D=$DESTDIR
BINDIR=$PREFIX/bin
LIBEXEC=$PREFIX/libexec/hostcache
DATA=$PREFIX/share/hostcache
DOCDIR=$PREFIX/share/doc/hostcache
CONFDIR=$SYSCONFDIR/hostcache
HOOKDIR=$SYSCONFDIR/libvirt/hooks/qemu.d

case "$PREFIX$SYSCONFDIR$UNITDIR" in
*[!A-Za-z0-9/._-]*)
    echo "install: PREFIX, SYSCONFDIR and UNITDIR must be plain paths" >&2
    exit 2 ;;
esac
for v in PREFIX SYSCONFDIR UNITDIR; do
    case ${!v} in
    /*) ;;
    *) echo "install: $v must be an absolute path, not '${!v}'" >&2; exit 2 ;;
    esac
done

need() {
    if [ ! -e "$1" ]; then
        echo "install: $1 is missing; run 'make' first" >&2
        exit 1
    fi
}

# The unit and the configuration example name installed paths: /usr/local
# in dist/ becomes PREFIX, /etc/hostcache SYSCONFDIR/hostcache.
subst() {
    sed -e "s|/usr/local|$PREFIX|g" -e "s|/etc/hostcache|$CONFDIR|g" "$1"
}

install_bin() {  # install_bin SRC DEST-DIR
    install -D -m 0755 "$1" "$D$2/$(basename "$1")"
    if [ -n "$STRIP" ]; then
        "$STRIP" --strip-debug "$D$2/$(basename "$1")"
    fi
}

do_install() {
    need "$MESON_BUILD/src/hostcached"
    need "$MESON_BUILD/src/hostcachectl"
    need "$WEB/index.html"
    for b in $QEMU_BINS; do need "$QEMU_BUILD/$b"; done
    need "$QEMU_SRC/pc-bios/keymaps"

    install_bin "$MESON_BUILD/src/hostcached" "$BINDIR"
    install_bin "$MESON_BUILD/src/hostcachectl" "$BINDIR"
    for b in $QEMU_BINS; do install_bin "$QEMU_BUILD/$b" "$LIBEXEC"; done

    # QEMU's data directory (its configure: --datadir=share/hostcache).
    install -d -m 0755 "$D$DATA/qemu/keymaps"
    find "$QEMU_SRC/pc-bios/keymaps" -maxdepth 1 -type f ! -name meson.build \
        -exec install -m 0644 -t "$D$DATA/qemu/keymaps" {} +

    # The dashboard, as built (hashed assets included; not build-web.sh's
    # stamps).
    rm -rf "$D$DATA/web"
    install -d -m 0755 "$D$DATA/web"
    (cd "$WEB" && find . -type f ! -name '.*' -print0) | while IFS= read -r -d '' f; do
        install -D -m 0644 "$WEB/$f" "$D$DATA/web/$f"
    done

    install -d -m 0755 "$D$DOCDIR/img"
    for f in $DOCS; do install -m 0644 "$SRC/$f" "$D$DOCDIR/"; done
    install -m 0644 "$SRC"/docs/img/*.png "$D$DOCDIR/img/"

    install -d -m 0755 "$D$UNITDIR" "$D$CONFDIR"
    subst "$SRC/dist/hostcached.service" > "$D$UNITDIR/hostcached.service"
    chmod 0644 "$D$UNITDIR/hostcached.service"
    subst "$SRC/dist/hostcached.conf.example" > "$D$CONFDIR/hostcached.conf.example"
    chmod 0644 "$D$CONFDIR/hostcached.conf.example"
    install -d -m 0755 "$D$HOOKDIR"
    subst "$SRC/dist/libvirt-hook-hostcache" > "$D$HOOKDIR/hostcache"
    chmod 0755 "$D$HOOKDIR/hostcache"
    if [ ! -e "$D$CONFDIR/hostcached.conf" ]; then
        install -m 0644 "$D$CONFDIR/hostcached.conf.example" "$D$CONFDIR/hostcached.conf"
    fi
    echo "install: installed under ${D:-/} (PREFIX=$PREFIX); see $DOCDIR/INSTALL.md"
}

# Every file and directory install makes, deepest first (uninstall's order).
list() {
    for b in hostcached hostcachectl; do echo "$BINDIR/$b"; done
    echo "$LIBEXEC/"
    echo "$DATA/"
    echo "$DOCDIR/"
    echo "$UNITDIR/hostcached.service"
    echo "$CONFDIR/hostcached.conf.example"
    echo "$HOOKDIR/hostcache"
}

do_uninstall() {
    local p
    for p in $(list); do
        case $p in
        */) rm -rf "${D}${p%/}" ;;
        *) rm -f "$D$p" ;;
        esac
    done
    # The configuration only when nobody changed it.
    if [ -f "$D$CONFDIR/hostcached.conf" ] &&
       subst "$SRC/dist/hostcached.conf.example" | cmp -s - "$D$CONFDIR/hostcached.conf"; then
        rm -f "$D$CONFDIR/hostcached.conf"
    elif [ -f "$D$CONFDIR/hostcached.conf" ]; then
        echo "install: kept $D$CONFDIR/hostcached.conf (changed since it was installed)"
    fi
    # Directories left empty: ours, and in a DESTDIR the ones the install
    # made (never the system's own /usr/local/bin and the like).
    rmdir "$D$CONFDIR" 2>/dev/null || true
    rmdir "$D$HOOKDIR" "$D$SYSCONFDIR/libvirt/hooks" "$D$SYSCONFDIR/libvirt" 2>/dev/null || true
    if [ -n "$D" ]; then
        for p in "$UNITDIR" "$PREFIX/share/doc" "$PREFIX/share" "$PREFIX/libexec" \
                 "$BINDIR"; do
            while [ "$p" != / ] && rmdir "$D$p" 2>/dev/null; do
                p=$(dirname "$p")
            done
        done
        p=$SYSCONFDIR
        while [ "$p" != / ] && rmdir "$D$p" 2>/dev/null; do p=$(dirname "$p"); done
    fi
    echo "install: uninstalled from ${D:-/} (PREFIX=$PREFIX)"
}

case ${1:-} in
install) do_install ;;
uninstall) do_uninstall ;;
list) list ;;
*) echo "usage: $0 install|uninstall|list" >&2; exit 2 ;;
esac
