#!/usr/bin/env bash
# Runs one libFuzzer target of tests/fuzz for SECONDS seconds:
#   tests/fuzz/run.sh TARGET SECONDS
# First every committed input of tests/fuzz/TARGET/corpus (the seeds and the
# reproducers of crashes fixed since) is run once, then the target fuzzes,
# starting from them, in a scratch corpus (the committed one is not
# changed).  Exit status 0 when nothing crashed, hung or leaked; otherwise
# the input that did is kept in the build directory and named in the output:
# fix the bug, then add the input to tests/fuzz/TARGET/corpus.
#
# The binaries are in $HOSTCACHE_FUZZ_BUILD (the meson test sets it; by
# default build/fuzz/tests/fuzz, which `make fuzz-build` makes).
set -euo pipefail

if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 TARGET SECONDS" >&2
    exit 2
fi
target=$1
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
build=${HOSTCACHE_FUZZ_BUILD:-$here/../../build/fuzz/tests/fuzz}
bin=$build/$target
seeds=$here/$target/corpus
if [ ! -x "$bin" ]; then
    echo "run.sh: $bin is not built (make fuzz-build)" >&2
    exit 1
fi
if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
    echo "run.sh: no seed corpus in $seeds" >&2
    exit 1
fi
artifacts=$build/$target.artifacts
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/hc-fuzz-$target.XXXXXX")
trap 'rm -rf "$work"' EXIT
dict=()
[ -f "$here/$target/dict" ] && dict=(-dict="$here/$target/dict")

echo "fuzzing $target for ${seconds}s from $(ls "$seeds" | wc -l) committed inputs"
status=0
"$bin" "$work" "$seeds" "${dict[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" 2>&1 |
    grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)' || status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "run.sh: $target failed (exit $status); the input is in $artifacts:" >&2
    ls -t "$artifacts" | head -5 >&2
    echo "reproduce with: $bin $artifacts/<file>; once fixed, add it to $seeds" >&2
    exit 1
fi
echo "run.sh: $target: no crash in ${seconds}s"
