#!/bin/bash
# cowroot's benchmark: boots one busybox guest that measures, side by side,
# cowroot, SPEC §1's manual steps (busybox mount/losetup, Debian's dmsetup),
# a floor program doing only cowroot's mount, loop and dm calls, and the raw
# devices; then boots the Debian test root with and without cowroot. Prints
# a table of ratios (medians of alternating rounds, page cache dropped
# before each, the guest's disks opened past the host's page cache) and
# draws the block-size chart. It is a benchmark, not a
# test: under emulation absolute times mean little, so only ratios measured
# in one run are reported, and nothing fails on a figure.
#
#   qemu-tests/bench.sh [--json] [--rounds N] [--resets N] [--debian-boots N]
#                       [--chart FILE] [--only boot,keptreset,resets,io]
#                       [--blocks 64K:128K:...] [--io-rounds N] [--debian-only]
#
# --json prints the figures and the raw samples as JSON instead of the
# table. --debian-boots 0 skips the Debian part; --debian-only runs it
# alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export COWROOT_TEST_WORK=${COWROOT_TEST_WORK:-/tmp/cowroot-bench}
# shellcheck source=qemu-tests/lib.sh
. "$here/lib.sh"
# shellcheck source=qemu-tests/debian.sh
. "$here/debian.sh"

debian_only=0 json=0 rounds=11 resets=1000 io_rounds=3 debian_boots=5 only="" blocks="64K:128K:256K:512K:1M:2M"
chart="$REPO/docs/bench-block-size.png"
while [ $# -gt 0 ]; do
    case $1 in
    --json) json=1 ;;
    --rounds) rounds=$2; shift ;;
    --resets) resets=$2; shift ;;
    --io-rounds) io_rounds=$2; shift ;;
    --debian-boots) debian_boots=$2; shift ;;
    --chart) chart=$2; shift ;;
    --only) only=$2; shift ;;
    --blocks) blocks=$2; shift ;;
    --debian-only) debian_only=1 ;;
    *) die "unknown option $1 (see the top of $0)" ;;
    esac
    shift
done

COWBENCH="$REPO/target/x86_64-unknown-linux-musl/release/examples/cowbench"
rm -rf "$WORK"
mkdir -p "$WORK"
ensure_prereqs
command -v gnuplot >/dev/null || {
    log "installing gnuplot-nox (for the chart)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null
}
build_binary
# The Debian part: the initramfs phase of the test root, kept boots with
# cowroot against boots of the same root disk without it, a pair at a
# time side by side (one core each).
debian_prepare() {
    ( set -euo pipefail; debian_images "$WORK/debian-env" ) > "$WORK/debian-build.out" 2>&1 \
        || { tail -n 20 "$WORK/debian-build.out" >&2; die "building the Debian test images failed"; }
    # shellcheck source=/dev/null
    . "$WORK/debian-env"
    # Runs inside `( ... ) ||`, where set -e is off: every step checked.
    cp --sparse=always "$DEB_IMAGES" "$WORK/deb-images.img" || die "cannot copy the Debian images disk"
    cp --sparse=always "$DEB_ROOT_IMG" "$WORK/deb-root.img" || die "cannot copy the Debian root disk"
    blank_disk "$WORK/deb-pool.img" 2G || die "cannot make the Debian pool disk"
    # The pool formatted and the image recorded once: the timed boots keep.
    QEMU_SMP=2 run_debian deb-first "$DEB_KEYS" "$WORK/deb-images.img" "$WORK/deb-pool.img"
}
# initramfs_phase KIND: "Run /init" to the real root's systemd, from the
# kernel's clock, on the last console.
initramfs_phase() {
    awk -v kind="$1" '
        /Run \/init as init process/ { if (match($0, /[0-9]+\.[0-9]+/)) start = substr($0, RSTART, RLENGTH) }
        /systemd\[1\]: .*running in system mode/ && !done {
            if (match($0, /[0-9]+\.[0-9]+/)) { print "COWBENCH initramfs_" kind " " int((substr($0, RSTART, RLENGTH) - start) * 1000000); done = 1 }
        }' "$CONSOLE"
}
debian_boots() {
    local i pid
    # declare in a sourced file inside a function makes locals: again here
    # (inside `( ... ) ||`, so checked by hand).
    # shellcheck source=/dev/null
    . "$WORK/debian-env" || die "cannot read $WORK/debian-env"
    for i in $(seq 1 "$debian_boots"); do
        QEMU_SMP=1 run_debian "deb-without-$i" "" "$WORK/deb-root.img" > "$WORK/deb-without.out" 2>&1 &
        pid=$!
        QEMU_SMP=1 run_debian "deb-with-$i" "$DEB_KEYS" "$WORK/deb-images.img" "$WORK/deb-pool.img"
        initramfs_phase with
        wait "$pid" || { cat "$WORK/deb-without.out" >&2; die "the Debian boot without cowroot failed"; }
        CONSOLE="$WORK/deb-without-$i.log" initramfs_phase without
    done > "$WORK/debian-samples"
    rm -f "$WORK/deb-images.img" "$WORK/deb-pool.img" "$WORK/deb-root.img"
}

started=$(date +%s)
DEB_KEYS="cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb"
: > "$WORK/samples"
if [ "$debian_only" = 0 ]; then
    (cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl --quiet --example cowbench)
    ensure_kernel
    build_initramfs

    # The guest's tools: the helper, the guest script, Debian's dmsetup.
    extra="$WORK/bench-extra"
    mkdir -p "$extra/sbin"
    cp "$COWBENCH" "$extra/sbin/cowbench"
    cp "$REPO/qemu-tests/guest/bench.sh" "$extra/bench.sh"
    copy_with_libs /usr/sbin/dmsetup "$extra"
    BENCH_INITRD="$WORK/initramfs-bench.cpio.gz"
    initrd_with "$INITRD" "$extra" "$BENCH_INITRD"

    # The origin: 1 GiB of random data in a 1.5 GiB file (room for 1 GiB of
    # kept changes) on an ext4 images disk; pools; a 64 MiB and a 2 TiB sparse
    # device origin (always sampled: they show that sampling costs the same
    # whatever the size).
    D="$WORK/disks"
    mkdir -p "$D/images"
    head -c 1G /dev/urandom > "$D/images/root.img"
    truncate -s 1536M "$D/images/root.img"
    mkfs.ext4 -q -F -L images -d "$D/images" "$D/images.img" 2G
    rm -rf "$D/images"
    blank_disk "$D/pool.img" 4G
    blank_disk "$D/small.img" 256M
    head -c 64M /dev/urandom > "$D/dev64.img"
    blank_disk "$D/dev64pool.img" 256M
    head -c 64M /dev/urandom > "$D/dev2t.img"
    truncate -s 2T "$D/dev2t.img"
    blank_disk "$D/dev2tpool.img" 256M
    IMAGES_SHA=$(sha "$D/images.img")

    # The guest alone, its disks past the host's page cache.
    VM_DRIVE_OPTIONS=",cache=none,aio=native" VM_INITRD=$BENCH_INITRD QEMU_SMP=1 QEMU_TIMEOUT=14400 run_vm bench \
        "cowtest=bench cowbench.rounds=$rounds cowbench.resets=$resets cowbench.io_rounds=$io_rounds cowbench.blocks=$blocks ${only:+cowbench.only=$only}" \
        "$D/images.img" "$D/pool.img" "$D/small.img" "$D/dev64.img" "$D/dev64pool.img" "$D/dev2t.img" "$D/dev2tpool.img"
    grep -a '^COWBENCH ' "$CONSOLE" > "$WORK/samples"
    grep -a '^COWBENCH-debug ' "$CONSOLE" > "$WORK/debug-steps" || true
    if grep -a 'bench failed' "$CONSOLE"; then die "the guest benchmark failed (see $CONSOLE)"; fi
    grep -aq 'COWTEST bench finished' "$CONSOLE" || die "the guest benchmark did not finish (see $CONSOLE)"
    same "$(sha "$D/images.img")" "$IMAGES_SHA" "the images disk changed"
fi
# The Debian part after the guest, alone too; its failure leaves the rest
# of the table standing (and the exit status non-zero).
debian_failed=0
if [ "$debian_boots" -gt 0 ]; then
    ( debian_prepare && debian_boots ) > "$WORK/debian-part.out" 2>&1 || {
        tail -n 30 "$WORK/debian-part.out" >&2
        log "the Debian part failed (see $WORK/debian-part.out)"
        debian_failed=1
    }
    [ -f "$WORK/debian-samples" ] && cat "$WORK/debian-samples" >> "$WORK/samples"
fi
elapsed=$(($(date +%s) - started))

# median KEY: the median of the samples of KEY (empty if none).
median() {
    awk -v k="$1" '$2 == k && $3 != "" { print $3 }' "$WORK/samples" | sort -n \
        | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# ratio A B: A / B to three places ("-" when either is missing).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.3f", a / b }'
}
# own-work share: the median of each debug boot's own / total.
own_share() {
    paste <(awk '$2 == "own_file" { print $3 }' "$WORK/samples") <(awk '$2 == "own_file_total" { print $3 }' "$WORK/samples") \
        | awk '$2 > 0 { printf "%.4f\n", $1 / $2 }' | sort -n \
        | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else print "-" }'
}
count() { awk -v k="$1" '$2 == k' "$WORK/samples" | wc -l; }

rows=()
# row NAME GOAL(<=X or >=X) VALUE DETAIL
row() { rows+=("$1|$2|$3|$4"); }
ms() { awk -v v="$1" 'BEGIN { if (v == "") print "-"; else printf "%.1f ms", v / 1000 }'; }
per_s() { awk -v t="$1" 'BEGIN { if (t == "") print "-"; else printf "%.0f", 1000 / (t / 1000000) }'; }
mbs() { awk -v t="$1" -v b="$2" 'BEGIN { if (t == "") print "-"; else printf "%.0f MB/s", b / t }'; }

keep=$(median boot_keep) seed=$(median boot_seed) floor=$(median boot_floor)
row "cowroot boot (keep) / the seed's manual steps" "<=0.35" "$(ratio "$keep" "$seed")" "$(ms "$keep") vs $(ms "$seed"), $(count boot_keep) rounds"
row "cowroot boot (keep) / floor program" "<=1.10" "$(ratio "$keep" "$floor")" "$(ms "$keep") vs $(ms "$floor")"
row "cowroot's own work / whole setup (keep boot)" "<=0.05" "$(own_share)" "own $(ms "$(median own_file)") of $(ms "$(median own_file_total)")"
row "own work, 2 TiB sparse device origin / 64 MiB one (both sampled)" "<=1.10" "$(ratio "$(median own_big)" "$(median own_small)")" "$(ms "$(median own_big)") vs $(ms "$(median own_small)")"
row "reset boot, 1 GiB kept / none kept" "<=1.10" "$(ratio "$(median reset_kept)" "$(median reset_none)")" "$(ms "$(median reset_kept)") vs $(ms "$(median reset_none)"); cleanup after boot $(ms "$(median cleanup_kept)")"
flush=$(median flush_us)
row "format boot / keep boot" "<=1.20" "$(ratio "$(median boot_format)" "$keep")" "$(ms "$(median boot_format)"); one durable 4 KiB write on the pool disk: $(ms "$flush")"
row "reset boot / keep boot" "<=1.20" "$(ratio "$(median boot_reset)" "$keep")" "$(ms "$(median boot_reset)")"
row "metadata used after $(median resets_done) resets / after 1" "<=1.05" "$(ratio "$(median meta_after_n)" "$(median meta_after_1)")" "$(median meta_after_n) vs $(median meta_after_1) blocks"
row "initramfs phase of a Debian boot, with / without cowroot" "<=1.10" "$(ratio "$(median initramfs_with)" "$(median initramfs_without)")" "$(ms "$(median initramfs_with)") vs $(ms "$(median initramfs_without)"), $(count initramfs_with) boots each"
io=$((256 << 20))
row "sequential read, cow device / its loop origin" ">=0.95" "$(ratio "$(median cow_default_origin_read)" "$(median cow_default_seqread)")" "$(mbs "$(median cow_default_seqread)" $io) vs $(mbs "$(median cow_default_origin_read)" $io)"
row "sequential read / seed's configuration" ">=1.0" "$(ratio "$(median seed_seqread)" "$(median cow_default_seqread)")" "$(mbs "$(median cow_default_seqread)" $io) vs $(mbs "$(median seed_seqread)" $io)"
row "buffered sequential read / seed's configuration" ">=1.0" "$(ratio "$(median seed_bufread)" "$(median cow_default_bufread)")" "$(mbs "$(median cow_default_bufread)" $io) vs $(mbs "$(median seed_bufread)" $io)"
row "sequential first write / seed's configuration" ">=1.0" "$(ratio "$(median seed_seqwrite)" "$(median cow_default_seqwrite)")" "$(mbs "$(median cow_default_seqwrite)" $io) vs $(mbs "$(median seed_seqwrite)" $io)"
row "random 4 KiB first write / seed's configuration" ">=1.0" "$(ratio "$(median seed_randwrite)" "$(median cow_default_randwrite)")" "$(per_s "$(median cow_default_randwrite)") vs $(per_s "$(median seed_randwrite)") writes/s"

met() {
    awk -v v="$1" -v g="$2" 'BEGIN { if (v == "-") { print "n/a"; exit } op = substr(g, 1, 2); x = substr(g, 3) + 0
        print ((op == "<=" && v <= x) || (op == ">=" && v >= x)) ? "yes" : "NO" }'
}

# Per block size: MB/s of each workload (for the chart).
sizes=$(awk '$2 ~ /^block_.*_sectors$/ { s = $2; sub(/^block_/, "", s); sub(/_sectors$/, "", s); if (s != "default") print s }' "$WORK/samples")
: > "$WORK/chart.dat"
for s in $sizes; do
    kib=$(awk -v v="$(median "block_${s}_sectors")" 'BEGIN { print v / 2 }')
    printf '%s %s %s %s %s %s\n' "$kib" \
        "$(awk -v t="$(median "cow_${s}_seqread")" -v b=$io 'BEGIN { printf "%.1f", b / t }')" \
        "$(awk -v t="$(median "cow_${s}_bufread")" -v b=$io 'BEGIN { printf "%.1f", b / t }')" \
        "$(awk -v t="$(median "cow_${s}_seqwrite")" -v b=$io 'BEGIN { printf "%.1f", b / t }')" \
        "$(awk -v t="$(median "cow_${s}_randwrite")" 'BEGIN { printf "%.0f", 1000 / (t / 1000000) }')" \
        "$(median "cow_${s}_randwrite_kib_per_write")" >> "$WORK/chart.dat"
done
if [ -s "$WORK/chart.dat" ]; then
    mkdir -p "$(dirname "$chart")"
    gnuplot <<EOF
set terminal pngcairo size 900,520 font ",11" noenhanced
set output "$chart"
set title "cowroot: throughput against the pool's block size (QEMU TCG guest, O_DIRECT unless noted)"
set xlabel "block size (KiB)"
set logscale x 2
set xtics (64, 128, 256, 512, 1024, 2048)
set ylabel "MB/s"
set y2label "random 4 KiB first writes/s; pool KiB per such write"
set y2tics
set ytics nomirror
set key outside bottom center horizontal
set grid
plot "$WORK/chart.dat" using 1:2 with linespoints title "sequential read (1 MiB)", \
     "" using 1:3 with linespoints title "buffered read (read-ahead)", \
     "" using 1:4 with linespoints title "sequential first write (1 MiB)", \
     "" using 1:5 axes x1y2 with linespoints title "random 4 KiB first writes/s (right)", \
     "" using 1:6 axes x1y2 with linespoints dashtype 2 title "pool KiB per random 4 KiB write (right)"
EOF
fi

# Buffered reads of the cow device against its read-ahead (sectors).
: > "$WORK/readahead.dat"
while read -r key; do
    ra=${key#ra_}
    ra=${ra%_bufread}
    printf '%s %s\n' "$ra" "$(awk -v t="$(median "$key")" -v b=$io 'BEGIN { printf "%.1f", b / t }')" >> "$WORK/readahead.dat"
done < <(awk '$2 ~ /^ra_[0-9]+_bufread$/ { print $2 }' "$WORK/samples" | sort -u -t_ -k2,2n)
origin_buffered=$(awk -v t="$(median origin_bufread)" -v b=$io 'BEGIN { if (t) printf "%.1f", b / t; else print "null" }')

if [ $json = 1 ]; then
    printf '{"seconds":%s,"rounds":%s,"figures":[' "$elapsed" "$rounds"
    sep=""
    for r in "${rows[@]}"; do
        IFS='|' read -r name goal value detail <<< "$r"
        printf '%s{"figure":%s,"goal":"%s","value":%s,"met":"%s","detail":%s}' "$sep" \
            "$(printf '%s' "$name" | sed 's/"/\\"/g; s/.*/"&"/')" "$goal" \
            "$([ "$value" = - ] && echo null || echo "$value")" "$(met "$value" "$goal")" \
            "$(printf '%s' "$detail" | sed 's/"/\\"/g; s/.*/"&"/')"
        sep=","
    done
    printf '],"block_sizes":['
    sep=""
    while read -r kib seqread bufread seqwrite randwrite kib_per_write; do
        printf '%s{"kib":%s,"seqread_mbs":%s,"bufread_mbs":%s,"seqwrite_mbs":%s,"randwrite_per_s":%s,"pool_kib_per_4k_write":%s}' \
            "$sep" "$kib" "$seqread" "$bufread" "$seqwrite" "$randwrite" "${kib_per_write:-null}"
        sep=","
    done < "$WORK/chart.dat"
    printf '],"readahead":['
    sep=""
    while read -r ra mbs; do
        printf '%s{"sectors":%s,"bufread_mbs":%s}' "$sep" "$ra" "$mbs"
        sep=","
    done < "$WORK/readahead.dat"
    printf '],"origin_bufread_mbs":%s' "$origin_buffered"
    printf ',"samples":{'
    sep=""
    while read -r k; do
        printf '%s"%s":[%s]' "$sep" "$k" "$(awk -v k="$k" '$2 == k { print $3 }' "$WORK/samples" | paste -sd,)"
        sep=","
    done < <(awk '{ print $2 }' "$WORK/samples" | awk '!seen[$0]++')
    printf '}}\n'
else
    printf '\n| figure | goal | measured | met | detail |\n|---|---|---|---|---|\n'
    for r in "${rows[@]}"; do
        IFS='|' read -r name goal value detail <<< "$r"
        printf '| %s | %s | %s | %s | %s |\n' "$name" "${goal/<=/≤ }" "$value" "$(met "$value" "$goal")" "$detail"
    done | sed 's/>=/≥ /'
    printf '\nblock size (KiB), sequential read MB/s, buffered read MB/s, sequential first write MB/s, random 4 KiB first writes/s, pool KiB per random 4 KiB write:\n'
    cat "$WORK/chart.dat"
    printf '\nread-ahead (sectors) of the cow device, buffered sequential read MB/s (its loop origin: %s MB/s):\n' "$origin_buffered"
    cat "$WORK/readahead.dat"
    printf '\n%s s; chart: %s; samples: %s\n' "$elapsed" "$chart" "$WORK/samples"
fi
exit "$debian_failed"
