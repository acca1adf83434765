#!/bin/sh
# /init of the test guest (busybox sh; built into the initramfs by
# scripts/make-guest.sh).  Runs the job named by hc.job= on the kernel
# command line against a virtio-blk disk, prints machine-readable lines on
# the console (ttyS0), then powers off:
#
#   HC-BOOT uptime=<s> kernel=<version>
#   HC-STEP <name> ok|fail <key=value...>
#   HC-CHUNK <offset bytes> <length bytes> <sha256>     (verify)
#   HC-WORKLOAD round=<n> reads=<n> writes=<n> ... elapsed=<s> iops=<n>
#   HC-READY                                            (hold)
#   HC-RESULT ok|fail job=<job> <key=value...>
#   HC-DONE
#
# Parameters (hc.<name>=<value> on the kernel command line):
#   all:      job=verify|workload|hold  dev=/dev/vda  seed=<n>
#   verify:   chunk=<bytes, multiple of 4096>  chunks=<n>  hot=<n>
#             rounds=<n>
#   workload: bs=<bytes>  size=<bytes of the region>  offset=<bytes>
#             count=<ops per round>  rounds=<n, 0 = until stopped>
#             wpct=<percent of ops that are writes>

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1

for w in $(cat /proc/cmdline); do
    case $w in
    hc.*=*)
        k=${w%%=*}
        k=${k#hc.}
        case $k in
        *[!a-z0-9_]*) continue ;;
        esac
        eval "P_$k=\${w#*=}"
        ;;
    esac
done

# param NAME DEFAULT
param() { eval "echo \"\${P_$1:-$2}\""; }
now() { read -r t _ </proc/uptime; echo "$t"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
finish() {
    sync
    echo "HC-DONE"
    poweroff -f
    while :; do sleep 3600; done
}
die() {
    echo "HC-RESULT fail job=$JOB $*"
    finish
}

JOB=$(param job verify)
DEV=$(param dev /dev/vda)
RANDOM=$(param seed $$)
echo "HC-BOOT uptime=$(now) kernel=$(cat /kernel-version)"

for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || die "reason=insmod-$m"
done
i=0
while [ ! -b "$DEV" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && die "reason=no-device dev=$DEV"
    sleep 0.1
done
DEV_BYTES=$(($(cat "/sys/block/${DEV#/dev/}/size") * 512))

# R = a random number in [0, $1).  Not a $(...) subshell: RANDOM must
# advance in this shell.
rand() { R=$(((RANDOM * 32768 + RANDOM) % $1)); }
sha() { sha256sum | cut -c1-64; }
# read_chunk SLOT: sha256 of chunk SLOT read from the disk with O_DIRECT.
read_chunk() {
    dd if="$DEV" bs="$CH" skip="$1" count=1 iflag=direct 2>/dev/null | sha
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

FAILED=
step() {
    # step NAME BAD DETAILS...
    local name=$1 bad=$2
    shift 2
    if [ "$bad" -eq 0 ]; then
        echo "HC-STEP $name ok $*"
    else
        echo "HC-STEP $name fail bad=$bad $*"
        FAILED="$FAILED${FAILED:+,}$name"
    fi
}

# check_all: re-read every chunk, compare with its expected sha256.
check_all() {
    local bad=0 i=0 s got want
    i=0
    for s in $SLOTS; do
        got=$(read_chunk "$s")
        want=$(sha </tmp/c.$i)
        if [ "$got" != "$want" ]; then
            echo "HC-MISMATCH chunk=$i offset=$((s * CH)) want=$want" \
                 "got=$got" >&2
            bad=$((bad + 1))
        fi
        i=$((i + 1))
    done
    echo $bad
}

job_verify() {
    CH=$(param chunk 65536)
    N=$(param chunks 16)
    HOT=$(param hot 4)
    ROUNDS=$(param rounds 4)
    [ $((CH % 4096)) -eq 0 ] && [ "$CH" -ge 8192 ] || die "reason=bad-chunk"
    nslots=$((DEV_BYTES / CH))
    [ "$nslots" -ge "$N" ] || die "reason=disk-too-small"
    [ "$HOT" -le "$N" ] || HOT=$N

    # N distinct chunk-aligned slots at random places on the disk.
    SLOTS=
    i=0
    while [ $i -lt "$N" ]; do
        rand "$nslots"
        s=$R
        case " $SLOTS " in *" $s "*) continue ;; esac
        SLOTS="$SLOTS $s"
        i=$((i + 1))
    done

    t=$(now)
    bad=0
    i=0
    for s in $SLOTS; do
        dd if=/dev/urandom of=/tmp/c.$i bs="$CH" count=1 iflag=fullblock \
            2>/dev/null
        dd if=/tmp/c.$i of="$DEV" bs="$CH" seek="$s" count=1 oflag=direct \
            conv=notrunc,fsync 2>/dev/null || bad=$((bad + 1))
        i=$((i + 1))
    done
    step write "$bad" "chunks=$N bytes=$((N * CH)) elapsed=$(since "$t")"

    drop_caches
    t=$(now)
    bad=$(check_all)
    step readback "$bad" "chunks=$N elapsed=$(since "$t")"

    # Hot set: the first HOT chunks, read ROUNDS times (cache hits).
    t=$(now)
    bad=0
    r=0
    while [ $r -lt "$ROUNDS" ]; do
        i=0
        for s in $SLOTS; do
            [ $i -lt "$HOT" ] || break
            [ "$(read_chunk "$s")" = "$(sha </tmp/c.$i)" ] || bad=$((bad + 1))
            i=$((i + 1))
        done
        r=$((r + 1))
    done
    step hot "$bad" "chunks=$HOT rounds=$ROUNDS reads=$((HOT * ROUNDS))" \
        "elapsed=$(since "$t")"

    # Small writes into cached chunks: 3 sectors at sector 7, which straddle
    # the first 4 KiB block boundary (partial cache blocks); then read the
    # patch alone, a single sector elsewhere, and the whole chunk.
    t=$(now)
    bad=0
    i=0
    for s in $SLOTS; do
        [ $i -lt "$HOT" ] || break
        sec=$((s * CH / 512))
        dd if=/dev/urandom of=/tmp/p bs=512 count=3 2>/dev/null
        dd if=/tmp/p of="$DEV" bs=512 seek=$((sec + 7)) count=3 \
            oflag=direct conv=notrunc,fsync 2>/dev/null || bad=$((bad + 1))
        dd if=/tmp/p of=/tmp/c.$i bs=512 seek=7 count=3 conv=notrunc \
            2>/dev/null
        got=$(dd if="$DEV" bs=512 skip=$((sec + 7)) count=3 iflag=direct \
              2>/dev/null | sha)
        [ "$got" = "$(sha </tmp/p)" ] || bad=$((bad + 1))
        got=$(dd if="$DEV" bs=512 skip=$((sec + 13)) count=1 iflag=direct \
              2>/dev/null | sha)
        want=$(dd if=/tmp/c.$i bs=512 skip=13 count=1 2>/dev/null | sha)
        [ "$got" = "$want" ] || bad=$((bad + 1))
        [ "$(read_chunk "$s")" = "$(sha </tmp/c.$i)" ] || bad=$((bad + 1))
        i=$((i + 1))
    done
    step patch "$bad" "chunks=$HOT elapsed=$(since "$t")"

    drop_caches
    t=$(now)
    bad=$(check_all)
    step final "$bad" "chunks=$N elapsed=$(since "$t")"

    i=0
    for s in $SLOTS; do
        echo "HC-CHUNK $((s * CH)) $CH $(sha </tmp/c.$i)"
        i=$((i + 1))
    done
    if [ -z "$FAILED" ]; then
        echo "HC-RESULT ok job=verify chunks=$N chunk=$CH"
    else
        echo "HC-RESULT fail job=verify steps=$FAILED"
    fi
}

job_workload() {
    BS=$(param bs 4096)
    SIZE=$(param size 8388608)
    OFF=$(param offset 0)
    COUNT=$(param count 500)
    ROUNDS=$(param rounds 3)
    WPCT=$(param wpct 0)
    [ $((OFF % BS)) -eq 0 ] && [ $((OFF + SIZE)) -le "$DEV_BYTES" ] ||
        die "reason=bad-region"
    blocks=$((SIZE / BS))
    [ "$blocks" -gt 0 ] || die "reason=bad-size"
    first=$((OFF / BS))
    dd if=/dev/urandom of=/tmp/w bs="$BS" count=1 2>/dev/null
    errors=0
    r=0
    while [ "$ROUNDS" -eq 0 ] || [ $r -lt "$ROUNDS" ]; do
        r=$((r + 1))
        t=$(now)
        reads=0 writes=0
        n=0
        while [ $n -lt "$COUNT" ]; do
            rand "$blocks"
            b=$((first + R))
            if [ "$WPCT" -gt 0 ] && [ $((RANDOM % 100)) -lt "$WPCT" ]; then
                dd if=/tmp/w of="$DEV" bs="$BS" seek=$b count=1 \
                    oflag=direct conv=notrunc 2>/dev/null ||
                    errors=$((errors + 1))
                writes=$((writes + 1))
            else
                dd if="$DEV" of=/dev/null bs="$BS" skip=$b count=1 \
                    iflag=direct 2>/dev/null || errors=$((errors + 1))
                reads=$((reads + 1))
            fi
            n=$((n + 1))
        done
        el=$(since "$t")
        iops=$(awk -v n="$COUNT" -v e="$el" \
               'BEGIN { printf "%d", (e > 0 ? n / e : 0) }')
        echo "HC-WORKLOAD round=$r reads=$reads writes=$writes bs=$BS" \
             "region=$SIZE errors=$errors elapsed=$el iops=$iops"
    done
    if [ "$errors" -eq 0 ]; then
        echo "HC-RESULT ok job=workload rounds=$r"
    else
        echo "HC-RESULT fail job=workload errors=$errors"
    fi
}

case $JOB in
verify) job_verify ;;
workload) job_workload ;;
hold)
    echo "HC-READY"
    while :; do sleep 3600; done
    ;;
*) die "reason=unknown-job" ;;
esac
finish
