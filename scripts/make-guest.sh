#!/usr/bin/env bash
# Build the tiny test guest into build/guest/ from Debian packages only:
#   vmlinuz            the Debian cloud kernel (linux-image-cloud-amd64)
#   initramfs.cpio.gz  busybox-static, the virtio-blk modules and /init
#                      (scripts/guest-init.sh: runs the job named by hc.job=
#                      on the kernel command line, prints HC-* lines on
#                      ttyS0, powers off)
# Idempotent: a stamp records the inputs (this script, the init script, the
# kernel, busybox); a second run with nothing changed returns at once.
# Boots under TCG in a few seconds; see python/hostcache/guest.py.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=${HC_GUEST_DIR:-$TOP/build/guest}
INIT=$TOP/scripts/guest-init.sh
BUSYBOX=/bin/busybox
# Modules the guest needs for /dev/vda on virtio-blk-pci; their
# dependencies come from modules.dep.
WANT_MODULES="virtio_pci virtio_blk"

die() { echo "make-guest: $*" >&2; exit 1; }

# The newest cloud kernel, unless HC_GUEST_KERNEL names a vmlinuz.
if [ -n "${HC_GUEST_KERNEL:-}" ]; then
    VMLINUZ=$HC_GUEST_KERNEL
else
    VMLINUZ=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n1 ||
              true)
fi
[ -n "$VMLINUZ" ] && [ -r "$VMLINUZ" ] ||
    die "no readable kernel ${VMLINUZ:-/boot/vmlinuz-*-cloud-amd64}" \
        "(run scripts/setup-deps.sh)"
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (package busybox-static)"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX" || die "$BUSYBOX is not static (busybox-static)"

inputs_key() {
    {
        sha256sum "$0" "$INIT"
        stat -c '%n %s %Y' "$VMLINUZ" "$MODDIR/modules.dep" "$BUSYBOX"
    } | sha256sum | cut -c1-32
}

mkdir -p "$OUT"
# One builder at a time (a test and the demo may start together).
exec 9>"$OUT/.lock"
flock 9

KEY=$(inputs_key)
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$KEY" ] &&
   [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ]; then
    exit 0
fi

STAGE=$(mktemp -d "$OUT/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp,lib/modules}

# Load order: a module after all of its dependencies.  modules.dep lists
# every (transitive) dependency of a module; the last one listed has no
# dependencies of its own, so the list is loaded back to front.
ORDER=()
add_module() {
    local name=$1 line path deps d i
    line=$(grep -E "(^|/)${name}\.ko(\.(xz|zst|gz))?:" "$MODDIR/modules.dep") ||
        die "module $name not in $MODDIR/modules.dep"
    path=${line%%:*}
    read -r -a deps <<<"${line#*:}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
        d=${deps[i]##*/}
        add_module "${d%%.ko*}"
    done
    for d in "${ORDER[@]}"; do
        [ "$d" = "$path" ] && return 0
    done
    ORDER+=("$path")
}
for m in $WANT_MODULES; do
    add_module "$m"
done

: >"$ROOT/lib/modules/load-order"
for path in "${ORDER[@]}"; do
    base=${path##*/}
    name=${base%%.ko*}
    src=$MODDIR/$path
    # busybox insmod loads plain .ko files: decompress here.
    case $path in
    *.ko) cp "$src" "$ROOT/lib/modules/$name.ko" ;;
    *.ko.xz) xz -dc "$src" >"$ROOT/lib/modules/$name.ko" ;;
    *.ko.zst) zstd -qdc "$src" >"$ROOT/lib/modules/$name.ko" ||
                  die "cannot decompress $src (install zstd)" ;;
    *.ko.gz) gzip -dc "$src" >"$ROOT/lib/modules/$name.ko" ;;
    *) die "unknown module file $path" ;;
    esac
    echo "$name" >>"$ROOT/lib/modules/load-order"
done

cp "$BUSYBOX" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
install -m 0755 "$INIT" "$ROOT/init"
echo "$KVER" >"$ROOT/kernel-version"
# /dev/console for init's first output; the kernel's built-in initramfs
# has one too, so an unprivileged build may skip it.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --quiet -R 0:0) | gzip -9n >"$STAGE/initramfs.cpio.gz"
cp "$VMLINUZ" "$STAGE/vmlinuz"

mv -f "$STAGE/vmlinuz" "$OUT/vmlinuz"
mv -f "$STAGE/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz"
echo "$KEY" >"$OUT/stamp"
echo "make-guest: $OUT (kernel $KVER, modules: ${ORDER[*]##*/})"
