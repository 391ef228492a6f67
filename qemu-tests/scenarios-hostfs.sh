#!/bin/bash
# VM scenarios of the promise that the image host (cowroot.dev) is never
# written, whatever state its filesystem is in. The host disk is attached
# writable, as a real disk would be; each scenario boots cowroot once over a
# copy of a fixture and checks the copy's sha256 from the host afterwards.
#
# The fixtures are images disks (label `images`, holding /root.img) left in
# the state a crash leaves: an ext4 orphan inode, an ext4 journal to replay,
# a dirty XFS log, a btrfs log tree; and clean XFS and btrfs hosts. A builder
# VM (guest/fixture.sh) makes each one; it is checked on the host with the
# filesystem's own tools and cached in $CACHE, keyed by everything it is
# made from.
# shellcheck disable=SC2154  # CONSOLE, WORK, KVER, ... come from lib.sh

HOSTFS_KEYS="cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb"

# ---- fixtures ---------------------------------------------------------------

hostfs_fixture_key() {
    {
        cat "$REPO/qemu-tests/guest/fixture.sh"
        declare -f make_origin make_images_disk hostfs_images hostfs_build
        echo "$KVER"
        # sed, not head: a writer cut off by SIGPIPE fails the pipeline.
        mkfs.ext4 -V 2>&1 | sed -n 1p
        mkfs.xfs -V
        mkfs.btrfs --version
        /bin/busybox | sed -n 1p
    } | sha256sum | cut -c1-16
}

# hostfs_images TYPE DISK IMAGE: an images disk of TYPE holding IMAGE as
# /root.img, made without mounting anything.
hostfs_images() {
    local type=$1 disk=$2 image=$3 dir
    rm -f "$disk"
    case $type in
    ext4)
        make_images_disk "$disk" "$image"
        ;;
    xfs)
        dir=$(mktemp -d "$WORK/proto.XXXX")
        printf '/dev/null\n0 0\nd--755 0 0\nroot.img ---644 0 0 %s\n$\n' "$image" > "$dir/proto"
        truncate -s 320M "$disk"
        mkfs.xfs -q -f -L images -p "$dir/proto" "$disk"
        rm -rf "$dir"
        ;;
    btrfs)
        dir=$(mktemp -d "$WORK/rootdir.XXXX")
        cp --sparse=always "$image" "$dir/root.img"
        truncate -s 256M "$disk"
        mkfs.btrfs -q -f -L images --rootdir "$dir" "$disk" >/dev/null
        rm -rf "$dir"
        ;;
    esac
}

hostfs_ext4_features() { dumpe2fs -h "$1" 2>/dev/null | sed -n 's/^Filesystem features: *//p'; }
hostfs_ext4_orphan() { dumpe2fs -h "$1" 2>/dev/null | sed -n 's/^First orphan inode: *//p'; }
hostfs_xfs_log_state() { xfs_logprint -t "$1" 2>&1 | sed -n 's/^ *\(log tail: .*\)/\1/p'; }
# xfs_repair -n on a dirty log: "ALERT: The filesystem has valuable metadata
# changes in a log which is being ignored because the -n option was used".
hostfs_xfs_repair_alert() {
    local out
    out=$(xfs_repair -n "$1" 2>&1 || true)
    if [[ $out == *"metadata changes in a log"* ]]; then
        echo "metadata changes in the log"
    else
        echo "no log to replay"
    fi
}
hostfs_btrfs_log_root() { btrfs inspect-internal dump-super "$1" | awk '$1 == "log_root" { print $2 }'; }

# What a host disk's filesystem says about its own state, for the record.
hostfs_describe() {
    local name=$1 disk=$2
    case $name in
    ext4-*)
        echo "features: $(hostfs_ext4_features "$disk")"
        echo "first orphan inode: $(hostfs_ext4_orphan "$disk")"
        echo "journal: $(debugfs -R logdump "$disk" 2>/dev/null | grep -c 'commit block') commit blocks to replay"
        ;;
    xfs-*)
        echo "xfs_logprint -t: $(hostfs_xfs_log_state "$disk")"
        echo "xfs_repair -n: $(hostfs_xfs_repair_alert "$disk")"
        ;;
    btrfs-*)
        echo "log_root: $(hostfs_btrfs_log_root "$disk")"
        echo "generation: $(btrfs inspect-internal dump-super "$disk" | awk '$1 == "generation" { print $2 }')"
        ;;
    esac
}

# hostfs_verify NAME DISK: the fixture is in the state its name says.
hostfs_verify() {
    local name=$1 disk=$2 out
    case $name in
    ext4-orphan)
        out=$(hostfs_ext4_orphan "$disk")
        if [ -z "$out" ] || [ "$out" = 0 ]; then die "$name: dumpe2fs shows no orphan inode"; fi
        if [[ " $(hostfs_ext4_features "$disk") " == *" needs_recovery "* ]]; then die "$name: the journal needs recovery too"; fi
        ;;
    ext4-journal)
        [[ " $(hostfs_ext4_features "$disk") " == *" needs_recovery "* ]] || die "$name: needs_recovery is not set"
        out=$(debugfs -R logdump "$disk" 2>/dev/null | grep -c 'commit block' || true)
        [ "$out" -gt 0 ] || die "$name: no committed transaction in the journal"
        ;;
    xfs-dirty)
        [[ $(hostfs_xfs_log_state "$disk") == *"<DIRTY>"* ]] || die "$name: xfs_logprint shows no dirty log"
        [ "$(hostfs_xfs_repair_alert "$disk")" = "metadata changes in the log" ] || die "$name: xfs_repair -n sees nothing to replay"
        ;;
    btrfs-log)
        out=$(hostfs_btrfs_log_root "$disk")
        if [ -z "$out" ] || [ "$out" = 0 ]; then die "$name: log_root is '$out'"; fi
        ;;
    xfs-clean)
        [[ $(hostfs_xfs_log_state "$disk") == *"<CLEAN>"* ]] || die "$name: xfs_logprint shows no clean log"
        xfs_repair -n "$disk" >/dev/null 2>&1 || die "$name: xfs_repair -n found problems"
        ;;
    btrfs-clean)
        out=$(hostfs_btrfs_log_root "$disk")
        [ "$out" = 0 ] || die "$name: log_root is $out"
        btrfs check --readonly "$disk" >/dev/null 2>&1 || die "$name: btrfs check found problems"
        ;;
    *) die "unknown fixture $name" ;;
    esac
}

# hostfs_build NAME DISK: makes the fixture NAME in DISK.
hostfs_build() {
    local name=$1 disk=$2 origin
    origin="$(dirname "$disk")/root.img"
    make_origin "$origin" "origin-hostfs"
    hostfs_images "${name%%-*}" "$disk" "$origin"
    rm -f "$origin"
    case $name in
    *-clean)
        run_vm "fixture-$name" "cowtest=fixture-$name" "$disk"
        expect "COWTEST fixture clean: ${name%%-*}"
        ;;
    *)
        run_vm_cut "fixture-$name" "cowtest=fixture-$name" 'COWTEST fixture ready' 1 "$disk"
        ;;
    esac
}

# hostfs_fixture NAME: sets FIXTURE to the cached fixture, building it once,
# and FIXTURE_SHA to its sha256 (taken when it was built: hashing a 320 MB
# XFS disk takes seconds). Its state is checked again on every use.
hostfs_fixture() {
    local name=$1 key dir build
    key=$(hostfs_fixture_key)
    dir="$CACHE/hostfs-$key"
    FIXTURE="$dir/$name.img"
    if [ ! -f "$FIXTURE" ]; then
        log "building the $name fixture (cache $dir)"
        mkdir -p "$dir"
        build="$WORK/fixture-$name"
        rm -rf "$build"
        mkdir -p "$build"
        hostfs_build "$name" "$build/images.img"
        hostfs_verify "$name" "$build/images.img"
        sha "$build/images.img" > "$FIXTURE.sha256"
        cp --sparse=always "$build/images.img" "$FIXTURE.$$"
        mv "$FIXTURE.$$" "$FIXTURE"
        rm -rf "$build"
    fi
    hostfs_verify "$name" "$FIXTURE"
    FIXTURE_SHA=$(cat "$FIXTURE.sha256")
    log "fixture $name: $(hostfs_describe "$name" "$FIXTURE" | tr '\n' ';')"
}

# ---- checks -----------------------------------------------------------------

# Every check of a scenario runs, and all failures are reported together:
# the ERROR line of each, with the lines a failed `reject` matched and the
# indented details of host_unchanged.
HOSTFS_FAILS=()
soft() {
    local out
    if ! out=$( ("$@") 2>&1 ); then
        [ "$1" = reject ] || out=$(printf '%s\n' "$out" | grep -E '^(ERROR|  )')
        HOSTFS_FAILS+=("$out")
    fi
}

host_unchanged() {
    local now
    now=$(sha "$D/images.img")
    [ "$now" = "$HOST_SHA" ] && return 0
    log "  the host disk changed: $(cmp -l "$D/images.img" "$FIXTURE" | wc -l) bytes differ"
    hostfs_describe "$NAME" "$FIXTURE" | sed 's/^/  before: /' >&2
    hostfs_describe "$NAME" "$D/images.img" | sed 's/^/  after:  /' >&2
    die "the image host was written: sha256 $HOST_SHA -> $now"
}

hostfs_verdict() {
    [ ${#HOSTFS_FAILS[@]} = 0 ] && return 0
    log "--- console ($CONSOLE) ---"
    grep -E 'COWTEST|cowroot|EXT4-fs|XFS|BTRFS' "$CONSOLE" | grep -viE 'command line' >&2 || true
    log "--- failed checks ---"
    printf '%s\n' "${HOSTFS_FAILS[@]}" >&2
    die "${#HOSTFS_FAILS[@]} check(s) failed"
}

# hostfs_boot FIXTURE ACTIONS: one boot of cowroot over a copy of FIXTURE,
# with a blank pool.
hostfs_boot() {
    NAME=$1
    hostfs_fixture "$NAME"
    D="$WORK/hostfs-$NAME"
    rm -rf "$D"
    mkdir -p "$D"
    cp --sparse=always "$FIXTURE" "$D/images.img"
    blank_disk "$D/pool.img" 256M
    HOST_SHA=$FIXTURE_SHA
    run_vm "hostfs-$NAME" "$HOSTFS_KEYS cowtest=$2" "$D/images.img" "$D/pool.img"
}

# The boot succeeded, the root works and the host is read-only meanwhile.
expect_booted() {
    soft expect 'COWTEST boot rc=0'
    soft expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/vda'
    soft expect 'COWTEST loop loop0 ro=1 file=/run/cowroot/host/root.img'
    soft expect 'COWTEST host mounted: 1'
    soft expect 'COWTEST vda ro=1'
    soft expect 'COWTEST wrote marker'
    soft expect 'COWTEST marker present: kept-change'
    soft expect 'COWTEST origin file: origin-hostfs'
}

# The boot was refused and rolled back completely.
expect_refused() {
    soft expect 'COWTEST boot rc=1'
    soft expect "$1"
    soft expect 'COWTEST dm: 0 devices'
    soft expect 'COWTEST host mounted: 0'
    soft reject 'COWTEST loop '
    soft expect 'COWTEST vda ro=0'
}

# ---- scenarios --------------------------------------------------------------

scenario_hostfs_ext4_orphan_not_cleaned_up() {
    hostfs_boot ext4-orphan boot,state,write,check
    expect_booted
    soft reject 'orphan cleanup on readonly fs'
    soft host_unchanged
    hostfs_verdict
}

scenario_hostfs_ext4_journal_needing_recovery_refused() {
    hostfs_boot ext4-journal boot,state
    expect_refused 'cowroot: .*journal needs recovery'
    soft host_unchanged
    hostfs_verdict
}

scenario_hostfs_xfs_dirty_log_refused() {
    hostfs_boot xfs-dirty boot,state
    expect_refused 'cowroot: .*XFS log needs recovery'
    soft host_unchanged
    hostfs_verdict
}

scenario_hostfs_btrfs_log_tree_not_replayed() {
    hostfs_boot btrfs-log boot,state,write,check
    expect_booted
    soft reject 'start tree-log replay'
    soft host_unchanged
    hostfs_verdict
}

scenario_hostfs_xfs_clean_host_boots() {
    hostfs_boot xfs-clean boot,state,write,check
    expect_booted
    soft host_unchanged
    hostfs_verdict
}

scenario_hostfs_btrfs_clean_host_boots() {
    hostfs_boot btrfs-clean boot,state,write,check
    expect_booted
    soft host_unchanged
    hostfs_verdict
}
