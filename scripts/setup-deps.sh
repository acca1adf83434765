#!/usr/bin/env bash
# Idempotent host set-up: bookworm-backports (deb and deb-src) derived from the
# machine's own Debian sources, then the build and test dependencies.
# Nothing here names a mirror host: the URIs come from the existing sources.
set -euo pipefail

STAMP_DIR=${STAMP_DIR:-build/stamps}
mkdir -p "$STAMP_DIR"

SRC=/etc/apt/sources.list.d/debian.sources
OUT=/etc/apt/sources.list.d/hostcache-backports.sources

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

derive_uri() {
    # Print the URIs of the first deb822 stanza whose Suites has "bookworm".
    if [ -f "$SRC" ]; then
        awk 'BEGIN{RS=""; FS="\n"}
             { uris=""; ok=0
               for (i = 1; i <= NF; i++) {
                 if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                 if ($i ~ /^Suites:/ && $i ~ /(^|[ \t])bookworm([ \t]|$)/) ok = 1
               }
               if (ok && uris != "") { print uris; exit } }' "$SRC"
    elif [ -f /etc/apt/sources.list ]; then
        awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
            /etc/apt/sources.list
    fi
}

write_sources() {
    local uri
    uri=$(derive_uri)
    if [ -z "$uri" ]; then
        echo "setup-deps: cannot find a bookworm entry in $SRC or" \
             "/etc/apt/sources.list to derive backports from" >&2
        exit 1
    fi
    local want
    want=$(printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri")
    if [ ! -f "$OUT" ] || [ "$(cat "$OUT")" != "$want" ]; then
        printf '%s\n' "$want" | $SUDO tee "$OUT" >/dev/null
        rm -f "$STAMP_DIR/apt-update"
    fi
}

# The -dev packages of the features the project's QEMU is configured with
# (scripts/build-qemu.sh, CONFIGURE_ARGS; Debian's qemu-system-x86 has
# them): gnutls and SASL (VNC), jpeg and png (VNC encodings), SPICE,
# libusb and usbredir, libcacard (smartcard), seccomp, libcap-ng, NUMA,
# eBPF (virtio-net RSS), the network block drivers (RBD, iSCSI, curl, ssh,
# NFS), ALSA, ncurses.
QEMU_FEATURE_PKGS="libgnutls28-dev libsasl2-dev libjpeg-dev libpng-dev
libspice-server-dev libusb-1.0-0-dev libusbredirparser-dev libcacard-dev
libseccomp-dev libcap-ng-dev libnuma-dev libbpf-dev librbd-dev libiscsi-dev
libcurl4-gnutls-dev libssh-dev libnfs-dev libasound2-dev libncurses-dev"
# Packages: build of QEMU, the project (meson, C/C++ libs), its tests and
# benchmarks (python3-matplotlib draws the warm-up plot of `make bench`).
BPO_PKGS="meson python3-pycotap"
# clang's libFuzzer and sanitizer runtimes (libclang-rt-14-dev, only a
# recommendation of clang) build the fuzz targets (tests/fuzz).
PKGS="ninja-build pkg-config gcc g++ clang libclang-rt-14-dev libglib2.0-dev libpixman-1-dev
zlib1g-dev libaio-dev liburing-dev libfdt-dev libslirp-dev python3-venv
flex bison bzip2 xz-utils nettle-dev libzstd-dev dpkg-dev
libgtest-dev libgmock-dev librapidcheck-dev libbenchmark-dev
seabios qemu-system-data ipxe-qemu
fio nbdkit nbd-client
busybox-static cpio linux-image-cloud-amd64 kmod jq python3-matplotlib
chromium fonts-dejavu-core
libboost1.81-dev libboost-url1.81-dev libsqlite3-dev nlohmann-json3-dev
libexpected-dev libspdlog-dev libfmt-dev libcli11-dev libpugixml-dev
$QEMU_FEATURE_PKGS"
# libvirt 11.3 (a real libvirtd for python/hostcache/libvirt.py and hostcached).
# Installed as pkg/bookworm-backports, NOT with -t: -t would also take
# systemd-container and with it systemd from backports.  The QEMU driver
# needs some qemu-system; the backports one matches QEMU 10.0.2 (its
# qemu-system-data and seabios come along).  Domains name the project's own
# binary as <emulator>, so Debian's qemu-system-x86_64 is never run.
LIBVIRT_PKGS="libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
libvirt-dev qemu-system-x86 qemu-system-common qemu-system-data seabios"
# promtool: the tests check hostcached's /metrics with `promtool check
# metrics`.  The package is the Prometheus server too, which its postinst
# would start: installed without starting services, as libvirt is.
PROM_PKGS="prometheus"
# etcd 3.4: the cluster's policy catalogue (hostcached --cluster-etcd); the
# tests start their own members.  Its postinst would start a system etcd
# on port 2379: installed without starting services too.
ETCD_PKGS="etcd-server etcd-client"

# apt-get install "$@" without starting the services the packages hold:
# without systemd as init and without a policy-rc.d, a postinst starts
# them through their init scripts (a system libvirtd, a Prometheus server
# on port 9090).  Tests start their own daemons.
install_without_starting() {
    rcd=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        rcd=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$rcd" >/dev/null
        $SUDO chmod 755 "$rcd"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "$@" ||
        { [ -z "$rcd" ] || $SUDO rm -f "$rcd"; exit 1; }
    [ -z "$rcd" ] || $SUDO rm -f "$rcd"
}

write_sources
if [ ! -f "$STAMP_DIR/apt-update" ]; then
    $SUDO apt-get update -q
    touch "$STAMP_DIR/apt-update"
fi

missing=""
for p in $PKGS $BPO_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing="$missing $p"
done
# meson must come from backports (QEMU 10 needs >= 1.5).
mesonv=$(dpkg-query -W -f='${Version}' meson 2>/dev/null || echo 0)
if dpkg --compare-versions "$mesonv" lt 1.5; then
    missing="$missing meson"
fi
if [ -n "$missing" ]; then
    echo "setup-deps: installing:$missing"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends $PKGS
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -t bookworm-backports $BPO_PKGS
fi
# The dashboard (web/) is built and tested with Node.js and npm (>= 18;
# Debian's nodejs and npm).  A node that is already installed is used as it
# is: another source's nodejs package bundles npm and conflicts with
# Debian's.  chromium (above) is the browser the dashboard's test drives.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup-deps: installing: nodejs npm"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends nodejs npm
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
    echo "setup-deps: node $(node --version) is older than 18, which the dashboard needs" >&2
    exit 1
fi
lvmissing=""
for p in $LIBVIRT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        lvmissing="$lvmissing $p"
done
lvv=$(dpkg-query -W -f='${Version}' libvirt-daemon 2>/dev/null || echo 0)
if [ -n "$lvmissing" ] || dpkg --compare-versions "$lvv" lt 11; then
    install_without_starting $(printf '%s/bookworm-backports ' $LIBVIRT_PKGS)
fi
prommissing=""
for p in $PROM_PKGS $ETCD_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        prommissing="$prommissing $p"
done
[ -z "$prommissing" ] || install_without_starting $prommissing
