#!/bin/bash
# The crash-point scenario: power cuts that really lose unflushed writes.
#
# Killing QEMU loses nothing (the host's page cache has every write), so
# the guest logs every write to the pool with dm-log-writes, in completion
# order with its flushes and FUAs, while it runs the workload (format; a
# first boot; a boot that keeps; a boot with cowroot.reset=1 and the
# `cowroot cleanup` after it; `cowroot reset`; the boot that resets because
# of it), each step ending with a
# synced marker file and a mark on the log. A second boot then replays the
# log onto a scratch pool up to each chosen crash point (everything after
# the point is lost, as in a power cut) and boots cowroot on it: the boot
# must succeed, with a generation the workload had reached, and every
# marker synced before the point must be there, byte for byte, unless the
# generation shows that a reset took effect after it (guest/crash.sh).
# The host replays the same points into a file and runs thin_check on the
# thin-pool metadata.
# shellcheck disable=SC2154  # CONSOLE, WORK, ... come from lib.sh

# More points than this are thinned evenly (guest/crash.sh, crash_points).
CRASH_MAX_POINTS=${CRASH_MAX_POINTS:-80}

# host_check_point IMAGE: IMAGE holds the pool at a crash point. Prints
# what thin_check says of its metadata, or why there is nothing to check;
# fails when thin_check does.
host_check_point() {
    local image=$1 copy="" off start len out
    for off in 0 65536; do
        if [ "$(dd if="$image" bs=1 skip="$off" count=8 status=none | tr -d '\0')" = COWROOT1 ]; then copy=$off; break; fi
    done
    if [ -z "$copy" ]; then echo "no header yet"; return 0; fi
    start=$(od -An -tu8 -j $((copy + 56)) -N 8 "$image" | tr -d ' ')
    len=$(od -An -tu8 -j $((copy + 64)) -N 8 "$image" | tr -d ' ')
    if [ -z "$start" ] || [ -z "$len" ] || [ "$len" = 0 ]; then
        echo "bad metadata region '$start' '$len'"
        return 1
    fi
    dd if="$image" of="$D/meta.img" bs=512 skip="$start" count="$len" status=none
    if cmp -s -n 4096 "$D/meta.img" /dev/zero; then
        echo "metadata superblock zero (the kernel formats it)"
        return 0
    fi
    if out=$(thin_check "$D/meta.img" 2>&1); then
        echo "thin_check ok"
    else
        echo "thin_check failed: $(printf '%s' "$out" | tr '\n' ' ')"
        return 1
    fi
}

scenario_crash_points_recover() {
    fresh_disks crash 64M
    blank_disk "$D/log.img" 1G
    VM_INITRD=$CRASH_INITRD run_vm crash-record "cowtest=crash-record" "$D/images.img" "$D/pool.img" "$D/log.img"
    grep -E '^COWTEST crash |cowroot: /dev/mapper/cowroot ready' "$CONSOLE" | sed 's/^\[ *[0-9.]*\] //'
    expect 'COWTEST crash step first rc=0 generation 1 \(first use\)'
    expect 'COWTEST crash step first synced marker1'
    expect 'COWTEST crash step keep rc=0 generation 1 \(kept\)'
    expect 'COWTEST crash step keep marker1 present'
    expect 'COWTEST crash step keep synced marker2'
    expect 'COWTEST crash step reset rc=0 generation 2 \(reset\)'
    expect 'COWTEST crash step reset marker1 absent'
    expect 'COWTEST crash step reset synced marker3'
    expect 'COWTEST crash cleanup: deleted thin 1, the changes the last reset discarded'
    expect 'COWTEST crash request: the next boot discards'
    expect 'COWTEST crash step final rc=0 generation 3 \(reset\)'
    expect 'COWTEST crash step final marker3 absent'
    expect 'COWTEST crash mark final-down.g3'
    reject 'logging_disabled'
    reject 'COWTEST crash:|FAILED'
    expect 'COWTEST crash record done'
    origin_unchanged
    local marks
    marks=$("$LOGREPLAY" list "$D/log.img" | awk '$4 == "MARK" { print $5 }' | grep -v '^dm-log-writes-end$')
    [ "$(printf '%s\n' "$marks" | wc -l)" = 11 ] || die "expected 11 marks in the log, found: $marks"

    blank_disk "$D/scratch.img" 64M
    VM_INITRD=$CRASH_INITRD QEMU_TIMEOUT=900 run_vm crash-verify "cowtest=crash-verify crashmax=$CRASH_MAX_POINTS" \
        "$D/images.img" "$D/scratch.img" "$D/log.img"
    log "verify boot: $VM_SECONDS s"
    origin_unchanged
    grep -E '^COWTEST (crash|point) ' "$CONSOLE" > "$D/points.txt" || true
    grep '^COWTEST crash verify:' "$D/points.txt" || die "the verify boot chose no points"
    reject 'COWTEST crash:|FAILED'
    expect 'COWTEST crash verify done'

    # The same points on the host, replayed one after the other into a file.
    local n where verdict rest prev=0 total=0 good=0 host
    truncate -s 0 "$D/replay.img"
    truncate -s "$(stat -c %s "$D/pool.img")" "$D/replay.img"
    while read -r _ _ n _ where verdict rest; do
        total=$((total + 1))
        "$LOGREPLAY" replay "$D/log.img" "$D/replay.img" --from "$prev" --to "$n" > /dev/null \
            || die "host replay up to $n failed"
        prev=$n
        if host=$(host_check_point "$D/replay.img"); then
            [ "$verdict" = ok ] && good=$((good + 1))
        else
            verdict="FAIL (host: $host)"
        fi
        printf 'point %4s after %-18s %s %s; %s\n' "$n" "$where" "$verdict" "$rest" "$host"
    done < <(grep '^COWTEST point ' "$D/points.txt")

    same "$total" "$(sed -n 's/^COWTEST crash verify: \([0-9]*\) points.*/\1/p' "$D/points.txt")" \
        "points checked on the host and points the guest chose"
    echo "crash points: $good of $total recover"
    echo "origin sha256: $(sha "$D/images.img") (unchanged)"
    if [ "$good" != "$total" ]; then
        grep 'FAIL' "$D/points.txt" >&2 || true
        die "$((total - good)) crash points do not recover"
    fi

    # The whole log replayed is the pool as the record boot left it (unless
    # it holds discards: the replay zeroes them, QEMU ignored them).
    local entries
    entries=$("$LOGREPLAY" list "$D/log.img" | wc -l)
    [ "$prev" = "$entries" ] || die "the last crash point is $prev, not the end of the log ($entries)"
    if "$LOGREPLAY" list "$D/log.img" | grep -q DISCARD; then
        echo "the log holds discards: not comparing the full replay with the pool"
    else
        cmp "$D/replay.img" "$D/pool.img" || die "the full replay differs from the recorded pool"
        echo "the full replay equals the recorded pool"
    fi

    # Non-trivial: enough points, and in every stretch between two marks
    # (every step of the workload) one besides the mark's own.
    local m
    [ "$total" -ge 20 ] || die "only $total crash points"
    for m in start $marks; do
        [ "$m" = final-down.g3 ] && continue
        [ "$(grep -c "^COWTEST point [0-9]* after $m " "$D/points.txt")" -ge 2 ] \
            || die "fewer than 2 crash points after mark $m"
    done
}
