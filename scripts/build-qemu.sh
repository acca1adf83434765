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

configure() {
    [ -f "$OBJ/build.ninja" ] && return
    mkdir -p "$OBJ"
    (cd "$OBJ" && "$SRC/configure" \
        --python=/usr/bin/python3 \
        --target-list=x86_64-softmmu \
        --without-default-features \
        --enable-tools --enable-kvm --enable-linux-aio --enable-linux-io-uring \
        --enable-nettle --enable-zstd \
        --disable-docs --disable-user --disable-werror \
        --disable-install-blobs \
        --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
        ${QEMU_EXTRA_CONFIGURE:-})
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
