#!/usr/bin/env bash
# Fetch the pinned QEMU 10.0.2 source through apt, check it, apply the
# project's patch series, link in the driver sources, configure and build.
# Idempotent: every step leaves a stamp; a rerun with nothing changed only
# runs ninja (which does nothing), a changed driver .c rebuilds in seconds.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$TOP/build}
QEMU_VERSION_APT="1:10.0.2+ds-2+deb13u1~bpo12+1"
TARBALL=qemu_10.0.2+ds.orig.tar.xz
SHA256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1
# The tarball is kept outside the work tree so a fresh clone does not
# download it again; it is checked against SHA256 on every use.
DL=${HOSTCACHE_DL_DIR:-/var/cache/hostcache}
SRC=$BUILD/qemu-src
OBJ=$BUILD/qemu-build
DRV=$TOP/qemu-block-driver

mkdir -p "$DL" "$BUILD"

fetch() {
    if [ -f "$DL/$TARBALL" ] &&
       echo "$SHA256  $DL/$TARBALL" | sha256sum -c --status; then
        return
    fi
    rm -f "$DL/$TARBALL"
    (cd "$DL" && apt-get source --tar-only --download-only \
        "qemu=$QEMU_VERSION_APT")
    if ! echo "$SHA256  $DL/$TARBALL" | sha256sum -c --status; then
        echo "build-qemu: $DL/$TARBALL does not match sha256 $SHA256" >&2
        exit 1
    fi
}

# The patch series and the list of driver sources decide the tree; when they
# change, the tree is extracted again.
series_hash() {
    cat "$DRV"/patches/*.patch "$0" | sha256sum | cut -c1-16
}

# Extract the tarball and apply the series into directory $1.
prepare_tree() {
    local dir=$1
    mkdir -p "$dir"
    tar -xJf "$DL/$TARBALL" -C "$dir" --strip-components=1
    for p in "$DRV"/patches/*.patch; do
        patch -d "$dir" -p1 --quiet --forward < "$p"
    done
    # The +ds tarball has no firmware blobs; meson's x86 configuration wants
    # the edk2 images to decompress. Empty (valid) bzip2 files stand in.
    for f in edk2-aarch64-code.fd edk2-arm-code.fd edk2-arm-vars.fd \
             edk2-i386-code.fd edk2-i386-secure-code.fd edk2-i386-vars.fd \
             edk2-x86_64-code.fd edk2-x86_64-secure-code.fd \
             edk2-riscv-code.fd edk2-riscv-vars.fd edk2-loongarch64-code.fd \
             edk2-loongarch64-vars.fd; do
        [ -f "$dir/pc-bios/$f.bz2" ] || bzip2 -c </dev/null >"$dir/pc-bios/$f.bz2"
    done
}

extract() {
    local want
    want=$(series_hash)
    if [ -f "$SRC/.hostcache-series" ] &&
       [ "$(cat "$SRC/.hostcache-series")" = "$want" ]; then
        return
    fi
    if [ ! -f "$SRC/.hostcache-series" ]; then
        rm -rf "$SRC" "$OBJ"
        prepare_tree "$SRC"
    else
        # The series changed: build the new tree aside and copy over only
        # the files that differ, so the build directory stays valid and
        # ninja rebuilds just what depends on them.
        local new=$BUILD/qemu-src.new
        rm -rf "$new"
        prepare_tree "$new"
        (cd "$new" && find . -type f -print0) |
            while IFS= read -r -d '' f; do
                if ! cmp -s "$new/$f" "$SRC/$f"; then
                    mkdir -p "$(dirname "$SRC/$f")"
                    cp -p "$new/$f" "$SRC/$f"
                    touch "$SRC/$f"
                fi
            done
        rm -rf "$new"
    fi
    echo "$want" > "$SRC/.hostcache-series"
}

link_driver() {
    # Symlinks, so ninja sees edits to the project's files directly.
    for f in "$DRV"/*.c "$DRV"/*.h; do
        ln -sfn "$f" "$SRC/block/$(basename "$f")"
    done
}

# The configure call.  The x86_64 system emulator gets the features of
# Debian's own qemu-system-x86 (debian/rules and the "# --enable-..." lines
# of debian/control in Debian's qemu source package), built in rather than as
# loadable modules, so the binary is a drop-in <emulator> for the domains
# virt-install and virt-manager define: VNC and SPICE (QXL, virtio-gpu),
# USB passthrough and redirection, slirp, vhost, seccomp, TPM, NUMA, the
# network block drivers, the image formats, ALSA/OSS audio.  Every feature is
# named (with --without-default-features underneath), so a missing -dev
# package fails configure instead of silently dropping the feature; the
# -dev packages are in scripts/setup-deps.sh.  Left out of Debian's list:
# GUI front ends (GTK, SDL, OpenGL/virglrenderer), RDMA migration,
# GlusterFS (deprecated in QEMU 10), libpmem, VDE, brlapi, FUSE exports,
# capstone, PulseAudio/JACK (docs/INSTALL.md).
# bindir/datadir: the install layout (make install): the binaries in
# PREFIX/libexec/hostcache, QEMU's data in PREFIX/share/hostcache/qemu
# (QEMU is relocatable: it finds its data relative to the binary).
# Firmware comes from Debian's seabios, qemu-system-data and ipxe-qemu.
CONFIGURE_ARGS=(
    --python=/usr/bin/python3
    --target-list=x86_64-softmmu
    --without-default-features
    --disable-docs --disable-user --disable-werror
    --disable-install-blobs
    --with-pkgversion=hostcache
    --bindir=libexec/hostcache --datadir=share/hostcache
    --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
    --enable-tools --enable-kvm --enable-stack-protector --enable-malloc-trim
    --enable-linux-aio --enable-linux-io-uring --enable-fdt=system
    --enable-nettle --enable-gnutls --enable-zstd
    # display: VNC, SPICE (with QXL), curses; virtio-gpu and VGA are devices
    --enable-pixman --enable-vnc --enable-vnc-jpeg --enable-vnc-sasl
    --enable-png --enable-spice --enable-spice-protocol
    --enable-curses --enable-iconv
    # USB host passthrough, USB redirection (SPICE), smartcard
    --enable-libusb --enable-usb-redir --enable-smartcard
    # network
    --enable-slirp --enable-vhost-kernel --enable-vhost-net
    --enable-vhost-user --enable-vhost-vdpa --enable-vhost-crypto
    --enable-vhost-user-blk-server --enable-bpf
    # host integration
    --enable-seccomp --enable-cap-ng --enable-numa --enable-tpm
    --enable-attr --enable-virtfs
    # network block drivers and image formats
    --enable-rbd --enable-libiscsi --enable-curl --enable-libssh
    --enable-libnfs
    --enable-bochs --enable-cloop --enable-dmg --enable-qcow1 --enable-vdi
    --enable-vhdx --enable-vmdk --enable-vpc --enable-vvfat --enable-qed
    --enable-parallels
    # audio (spice audio comes with spice)
    --enable-alsa --enable-oss
)

# Configure when the build directory is new or the configure call changed
# (then in place: ninja rebuilds what the new configuration touches).
configure() {
    local want
    want=$(printf '%s\n' "${CONFIGURE_ARGS[@]}" ${QEMU_EXTRA_CONFIGURE:-} |
           sha256sum | cut -c1-16)
    if [ -f "$OBJ/build.ninja" ] && [ -f "$OBJ/.hostcache-configure" ] &&
       [ "$(cat "$OBJ/.hostcache-configure")" = "$want" ]; then
        return
    fi
    mkdir -p "$OBJ"
    rm -f "$OBJ/.hostcache-configure"
    (cd "$OBJ" && "$SRC/configure" "${CONFIGURE_ARGS[@]}" \
        ${QEMU_EXTRA_CONFIGURE:-})
    echo "$want" > "$OBJ/.hostcache-configure"
}

fetch
extract
link_driver
configure
ninja -C "$OBJ" qemu-img qemu-io qemu-nbd storage-daemon/qemu-storage-daemon \
    qemu-system-x86_64

# Run from the build tree, QEMU relocates its firmware path into qemu-bundle/
# (-L help shows .../qemu-bundle/usr/share/seabios etc.).  Point those at the
# Debian packages' firmware so the binary works without -L (e.g. as libvirt's
# <emulator>).
for d in usr/share/qemu usr/share/seabios usr/lib/ipxe/qemu; do
    mkdir -p "$(dirname "$OBJ/qemu-bundle/$d")"
    if [ ! -L "$OBJ/qemu-bundle/$d" ]; then
        rm -rf "$OBJ/qemu-bundle/$d"
        ln -s "/$d" "$OBJ/qemu-bundle/$d"
    fi
done
