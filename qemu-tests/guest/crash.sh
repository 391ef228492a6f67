#!/bin/busybox sh
# shellcheck shell=dash
# The guest side of the crash-point scenario (qemu-tests/scenarios-crash.sh),
# sourced by the test init for the actions crash-record and crash-verify
# (in $action); it uses the init's `say`, and leaves nothing mounted.
#
# crash-record (vda images disk, vdb blank pool, vdc blank log): runs the
# workload on a pool that is a dm-log-writes device, so that every write
# that reaches the pool, every flush and FUA, is logged on vdc in completion
# order, with a mark after each step naming what a boot must find from then
# on.
#
# crash-verify (vda images disk, vdb scratch of the pool's size, vdc that
# log): for each chosen crash point N, puts on vdb what the pool held after
# the log's first N entries (a power cut then loses every later write),
# boots cowroot on it, checks the result and prints one line
# `COWTEST point N ok|FAIL ...`.
#
# A mark's name is STEP.gG[.mK][.r]: from the mark on, a boot without
# cowroot.reset reports generation G (G+1 with .r: a reset is pending), and
# marker K, synced just before the mark, holds crash_content K until a
# reset discards it.

export DM_DISABLE_UDEV=1
CRASH_KEYS="cowroot=/root.img cowroot.dev=LABEL=images"
# At most this many crash points (crashmax= on the kernel command line).
CRASH_MAX_POINTS=$(sed -n 's/.*crashmax=\([0-9]*\).*/\1/p' /proc/cmdline 2>/dev/null)
CRASH_MAX_POINTS=${CRASH_MAX_POINTS:-80}

# The known content of marker K: about 100 KiB, over two thin blocks.
crash_content() {
    seq 1 3000 | sed "s/^/cowroot crash marker $1, line /"
}

crash_mark() {
    dmsetup message logw 0 mark "$1" || say "crash: mark $1 failed"
    say "crash mark $1"
}

# crash_boot POOL [KEY...]: runs the agent on POOL; sets BOOT_RC, BOOT_GEN,
# BOOT_WORD (formatted, first use, kept, reset), BOOT_LINE and BOOT_ERR.
crash_boot() {
    local pool=$1
    shift
    dmesg -c >/dev/null
    /sbin/cowroot boot --cmdline "$CRASH_KEYS cowpool=$pool $*" 2>/tmp/crash-err
    BOOT_RC=$?
    dmesg -c > /tmp/crash-kmsg
    BOOT_LINE=$(grep -o 'cowroot: /dev/mapper/cowroot ready: .*' /tmp/crash-kmsg | tail -n 1)
    BOOT_GEN=$(echo "$BOOT_LINE" | sed -n 's/.* generation \([0-9]*\) (\([a-z ]*\)).*/\1/p')
    BOOT_WORD=$(echo "$BOOT_LINE" | sed -n 's/.* generation \([0-9]*\) (\([a-z ]*\)).*/\2/p')
    BOOT_ERR=$(head -c 600 /tmp/crash-err | tr '\n' ' ')
}

crash_mount() {
    mount -t ext4 /dev/mapper/cowroot /mnt
}

# crash_marker K: prints present, absent, or what is wrong with it.
crash_marker() {
    local want got
    if [ ! -e "/mnt/marker$1" ]; then echo absent; return; fi
    [ -f "/tmp/crash-want$1" ] || crash_content "$1" | sha256sum | cut -d' ' -f1 > "/tmp/crash-want$1"
    want=$(cat "/tmp/crash-want$1")
    got=$(sha256sum < "/mnt/marker$1" | cut -d' ' -f1)
    if [ "$want" = "$got" ]; then echo present; else echo "damaged($(wc -c < "/mnt/marker$1")-bytes)"; fi
}

# Takes down what a successful `cowroot boot` built: the mount, the four dm
# devices, the loop device (auto-clearing, usually gone already) and the
# image host. Fails if anything is left.
crash_teardown() {
    local n d l i left=""
    if grep -q ' /mnt ' /proc/mounts; then umount /mnt || return 1; fi
    for n in cowroot cowroot-pool cowroot-pool_tdata cowroot-pool_tmeta; do
        grep -qx "$n" /sys/block/dm-*/dm/name 2>/dev/null && left="$left $n"
    done
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086  # the names, in this order
        dmsetup remove $left || return 1
        left=""
    fi
    for l in /sys/block/loop*; do
        [ "$(cat "$l/loop/backing_file" 2>/dev/null)" = /run/cowroot/host/root.img ] \
            && losetup -d "/dev/${l##*/}" 2>/dev/null
    done
    i=0
    while grep -q ' /run/cowroot/host ' /proc/mounts; do
        umount /run/cowroot/host 2>/dev/null && break
        i=$((i + 1))
        [ $i -ge 50 ] && { say "crash: /run/cowroot/host stays busy"; return 1; }
        sleep 0.1
    done
    for d in /sys/block/dm-*/dm/name; do
        [ -f "$d" ] && [ "$(cat "$d")" != logw ] && left="$left $(cat "$d")"
    done
    for l in /sys/block/loop*; do
        [ -n "$(cat "$l/loop/backing_file" 2>/dev/null)" ] && left="$left ${l##*/}"
    done
    [ -z "$left" ] || { say "crash: left after teardown:$left"; return 1; }
}

# One step of the record: the boot's summary, what it found, a new marker.
# crash_step NAME EXPECTED-WORD MARKER-TO-WRITE [KEY...]
crash_step() {
    local name=$1 word=$2 marker=$3 k
    shift 3
    crash_boot /dev/mapper/logw "$@"
    say "crash step $name rc=$BOOT_RC generation $BOOT_GEN ($BOOT_WORD)${BOOT_ERR:+ stderr: $BOOT_ERR}"
    if [ "$BOOT_RC" != 0 ] || [ "$BOOT_WORD" != "$word" ]; then
        say "crash: step $name expected ($word)"
        return 1
    fi
    crash_mount || { say "crash: step $name: mount failed"; return 1; }
    for k in 1 2 3; do
        say "crash step $name marker$k $(crash_marker $k)"
    done
    [ "$(cat /mnt/origin-id)" = origin-A ] || say "crash: step $name: origin-id is $(cat /mnt/origin-id)"
    if [ -n "$marker" ]; then
        crash_content "$marker" > "/mnt/marker$marker" && sync \
            && say "crash step $name synced marker$marker"
    fi
}

crash_record() {
    local sectors
    sectors=$(blockdev --getsz /dev/vdb)
    dmsetup create logw --table "0 $sectors log-writes /dev/vdb /dev/vdc" \
        || { say "crash: cannot create logw"; return 1; }
    say "crash format: $(/sbin/cowroot format /dev/mapper/logw 2>&1)"
    crash_mark format.g1

    crash_step first "first use" 1 || return 1
    crash_mark "first.g$BOOT_GEN.m1"
    crash_teardown || return 1
    crash_mark "first-down.g$BOOT_GEN"

    crash_step keep kept 2 || return 1
    crash_mark "keep.g$BOOT_GEN.m2"
    crash_teardown || return 1
    crash_mark "keep-down.g$BOOT_GEN"

    crash_step reset reset 3 cowroot.reset=1 || return 1
    crash_mark "reset.g$BOOT_GEN.m3"
    # What the booted system does after a reset: delete the old thin.
    say "crash cleanup: $(/sbin/cowroot cleanup 2>&1)"
    crash_mark "cleanup.g$BOOT_GEN.m3"
    # The flag is written (and flushed) by `cowroot reset` itself: no sync.
    say "crash request: $(/sbin/cowroot reset 2>&1)"
    crash_mark "request.g$BOOT_GEN.r"
    crash_teardown || return 1
    crash_mark "request-down.g$BOOT_GEN.r"

    crash_step final reset "" || return 1
    crash_mark "final.g$BOOT_GEN"
    crash_teardown || return 1
    crash_mark "final-down.g$BOOT_GEN"

    say "crash logw status: $(dmsetup status logw)"
    dmsetup remove logw || { say "crash: cannot remove logw"; return 1; }
    sync
    say "crash record done: $(logreplay list /dev/vdc | wc -l) entries"
}

# Chooses the crash points from the log's listing (on stdin) and prints one
# line per point: N LOWER UPPER FORMATTED-OK WHERE MARKERS, where N is the
# number of entries replayed, LOWER..UPPER the generations a boot may
# report, FORMATTED-OK 1 while the format is not yet known durable, WHERE
# the last mark before N, MARKERS the markers synced before N as K:G
# (marker K written in generation G) or -.
#
# A point is a pool state. Entries that write nothing (flushes, marks) do
# not change it, so each point is moved forward past them: the same bytes,
# checked against every mark they reach. The points, in order of priority:
# first the blank pool, the end, every mark, just before and just after
# every write to a header copy (cowroot's own commit points); then after
# every FLUSH/FUA entry, just before each (without the FUA write, or without
# the last write before a flush) and midway between consecutive flush
# points. When there are more than MAX in all, those of the second kind are
# thinned evenly along the log.
crash_points() {
    awk -v max="$CRASH_MAX_POINTS" '
    BEGIN { n = nm = count = 0 }
    { i = $1; n = i + 1
      data[i] = ($3 > 0 && $4 !~ /MARK/)
      fl[i] = ($4 ~ /FLUSH|FUA/)
      # A write to a header copy (bytes 0-4 KiB, 64-68 KiB; 512-byte sectors).
      hdr[i] = data[i] && $4 !~ /DISCARD/ && ($2 < 8 || ($2 < 136 && $2 + $3 > 128))
      if ($4 ~ /MARK/ && $5 ~ /^[a-z-]+\.g[0-9]+(\.m[0-9]+)?(\.r)?$/) { mi[nm] = i; mn[nm] = $5; nm++ } }
    function rep(p) { while (p < n && !data[p]) p++; return p }
    function add(p) { if (!(p in chosen)) { chosen[p] = 1; count++ } }
    # Takes up to room of the k points in list (in log order), evenly.
    function thin(list, k, room,   j) {
        if (k <= room) { for (j = 0; j < k; j++) add(list[j]); return }
        for (j = 0; j < room; j++) add(list[int(j * k / room)])
    }
    END {
        if (n == 0) exit 1
        add(rep(0)); add(n)
        for (m = 0; m < nm; m++) add(rep(mi[m]))
        for (i = 0; i < n; i++) if (hdr[i]) { add(i); add(rep(i + 1)) }
        na = nb = 0
        for (i = 0; i < n; i++) if (fl[i]) {
            a = rep(i + 1)
            if (!(a in isafter)) { isafter[a] = 1; after[na++] = a }
            if (data[i]) b = i; else { b = i - 1; while (b > 0 && !data[b]) b-- }
            if (b < 0) b = 0
            if (!(b in isbefore) && !(b in isafter)) { isbefore[b] = 1; before[nb++] = b }
        }
        nmid = 0
        for (j = 0; j < na; j++) {
            lo = j ? after[j - 1] : rep(0); hi = after[j]; c = rep(lo + int((hi - lo) / 2))
            if (c > lo && c < hi) mid[nmid++] = c
        }
        # The rest, in log order without repeats, thinned evenly.
        for (j = 0; j < na; j++) cand[after[j]] = 1
        for (j = 0; j < nb; j++) cand[before[j]] = 1
        for (j = 0; j < nmid; j++) cand[mid[j]] = 1
        k = 0
        for (p = 0; p <= n; p++) if ((p in cand) && !(p in chosen)) rest[k++] = p
        room = max - count
        thin(rest, k, room > 0 ? room : 0)
        for (p = 0; p <= n; p++) if (p in chosen) {
            lower = 1; where = "start"; markers = ""; fmt = 1
            upper = 0
            for (m = 0; m < nm; m++) {
                split(mn[m], f, ".")
                g = substr(f[2], 2) + (mn[m] ~ /\.r$/ ? 1 : 0)
                if (mi[m] < p) {
                    lower = g; where = mn[m]
                    if (f[1] == "format") fmt = 0
                    if (f[3] ~ /^m/) markers = markers (markers == "" ? "" : ",") substr(f[3], 2) ":" substr(f[2], 2)
                } else if (!upper) upper = g
            }
            if (!upper) upper = lower
            print p, lower, upper, fmt, where, (markers == "" ? "-" : markers)
        }
        nh = 0; for (i = 0; i < n; i++) nh += hdr[i]
        printf "%d entries, %d marks, %d header writes, %d flush points, %d before-flush points, %d midpoints\n", n, nm, nh, na, nb, nmid > "/dev/stderr"
    }'
}

# crash_point N LOWER UPPER FORMATTED-OK WHERE MARKERS: replays, boots,
# checks; prints the point's line. Returns 1 only when the next point cannot
# run (something is left set up).
crash_point() {
    local n=$1 lower=$2 upper=$3 fmtok=$4 where=$5 markers=$6 why="" seen="" km k g st
    logreplay zero /dev/vdb >/dev/null 2>/tmp/crash-replay || why="zero: $(cat /tmp/crash-replay)"
    if [ -z "$why" ] && ! logreplay replay /dev/vdc /dev/vdb --to "$n" >/dev/null 2>/tmp/crash-replay; then
        why="replay: $(cat /tmp/crash-replay)"
    fi
    blockdev --flushbufs /dev/vdb
    if [ -z "$why" ]; then
        crash_boot /dev/vdb
        if [ "$BOOT_RC" != 0 ]; then
            why="boot rc=$BOOT_RC: $BOOT_ERR $(grep -h 'device-mapper' /tmp/crash-kmsg 2>/dev/null | tail -n 2 | tr '\n' ' ')"
        elif [ -z "$BOOT_GEN" ]; then
            why="no summary line from the boot"
        elif [ "$BOOT_WORD" = formatted ] && [ "$fmtok" != 1 ]; then
            why="the pool was formatted anew after its format was durable"
        elif [ "$BOOT_GEN" -lt "$lower" ]; then
            why="generation $BOOT_GEN is older than $lower, reached before this point"
        elif [ "$BOOT_GEN" -gt "$upper" ]; then
            why="generation $BOOT_GEN is newer than $upper, the most the workload reached by this point"
        elif ! crash_mount; then
            why="mounting /dev/mapper/cowroot failed"
        else
            [ "$(cat /mnt/origin-id 2>/dev/null)" = origin-A ] || why="origin-id is '$(cat /mnt/origin-id 2>/dev/null)'"
            for km in $(echo "$markers" | tr , ' '); do
                [ "$km" = - ] && continue
                k=${km%%:*} g=${km#*:}
                st=$(crash_marker "$k")
                seen="$seen marker$k=$st"
                if [ "$BOOT_GEN" = "$g" ] && [ "$st" != present ]; then
                    why="$why marker$k, synced in generation $g, is $st"
                elif [ "$BOOT_GEN" != "$g" ] && [ "$st" != absent ]; then
                    why="$why marker$k of generation $g is $st after a reset to generation $BOOT_GEN"
                fi
            done
        fi
    fi
    if ! crash_teardown; then
        say "point $n after $where FAIL ${why:+$why; }teardown failed; stopping"
        return 1
    fi
    if [ -z "$why" ]; then
        say "point $n after $where ok generation $BOOT_GEN ($BOOT_WORD)$seen"
    else
        say "point $n after $where FAIL $why (generation ${BOOT_GEN:-?} (${BOOT_WORD:-?}), expected $lower..$upper)"
    fi
}

crash_verify() {
    local total line
    logreplay list /dev/vdc > /tmp/crash-list || { say "crash: cannot list the log"; return 1; }
    crash_points < /tmp/crash-list > /tmp/crash-points 2>/tmp/crash-points-info \
        || { say "crash: cannot choose points"; return 1; }
    total=$(wc -l < /tmp/crash-points)
    say "crash verify: $total points; $(cat /tmp/crash-points-info)"
    while read -r line <&3; do
        # shellcheck disable=SC2086  # the line's six fields
        crash_point $line || return 1
    done 3< /tmp/crash-points
    say "crash verify done"
}

# shellcheck disable=SC2154  # the init's loop variable
case "$action" in
crash-record) crash_record || say "crash record FAILED" ;;
crash-verify) crash_verify || say "crash verify FAILED" ;;
esac
