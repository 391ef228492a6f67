#!/bin/busybox sh
# shellcheck shell=dash disable=SC2154  # action and say come from init
# The builder of the image-host fixtures of scenarios-hostfs.sh, sourced by
# the test init for a `fixture-*` action (in $action). The guest's only
# disk, /dev/vda, is an images disk made on the host; this leaves it in the
# state a crash or a clean shutdown leaves behind.
#
# A dirty fixture ends with "COWTEST fixture ready: ..." and then waits: the
# host pulls the plug a moment later (run_vm_cut), well before the kernel's
# periodic work (ext4 commit 5 s, XFS log covering and btrfs commit ~30 s)
# could tidy anything up. A clean fixture unmounts and returns to init.

fx=/run/fixture

fixture_mount() {
    mkdir -p "$fx"
    if ! mount -t "$1" -o rw /dev/vda "$fx"; then
        say "fixture mount -t $1 /dev/vda failed"
        return 1
    fi
}

# Metadata and data changes, so the journal or log holds real transactions.
fixture_files() {
    mkdir -p "$fx/fixture/dir"
    i=0
    while [ "$i" -lt 32 ]; do
        echo "file $i" > "$fx/fixture/dir/f$i"
        i=$((i + 1))
    done
    dd if=/dev/urandom of="$fx/fixture/blob" bs=64k count=16 2>/dev/null
    mv "$fx/fixture/dir/f0" "$fx/fixture/renamed"
    rm "$fx/fixture/dir/f1"
}

fixture_hold() {
    say "fixture ready: $*"
    while :; do sleep 60; done
}

case "$action" in
fixture-ext4-orphan)
    # An orphan with a clean journal: a file unlinked while still open is
    # on the superblock's orphan list; freezing flushes the journal and
    # writes the superblock with needs_recovery cleared, so what remains
    # after the power cut is the orphan alone (as on a snapshot of a
    # running system). A read-only mount on a writable device would then
    # delete the inode.
    fixture_mount ext4 || return 0
    fixture_files
    exec 7> "$fx/fixture/held"
    dd if=/dev/urandom bs=64k count=4 2>/dev/null >&7
    rm "$fx/fixture/held"
    sync
    fsfreeze --freeze "$fx" || say "fixture fsfreeze failed"
    fixture_hold "ext4, orphan inode held open, frozen"
    ;;
fixture-ext4-journal)
    # A crash with committed but unreplayed transactions in the journal.
    fixture_mount ext4 || return 0
    fixture_files
    sync
    fixture_files
    sync
    fixture_hold "ext4, journal committed, not checkpointed"
    ;;
fixture-xfs-dirty)
    # A crash with transactions in the log and no unmount record.
    fixture_mount xfs || return 0
    fixture_files
    sync
    fixture_hold "xfs, log dirty"
    ;;
fixture-btrfs-log)
    # A committed transaction, then an fsync: the file is in the log tree
    # only, until the next commit (30 s away).
    fixture_mount btrfs || return 0
    fixture_files
    sync
    dd if=/dev/urandom of="$fx/fixture/fsynced" bs=64k count=4 conv=fsync 2>/dev/null
    fixture_hold "btrfs, fsynced into the log tree"
    ;;
fixture-xfs-clean | fixture-btrfs-clean)
    # Used, then cleanly unmounted.
    t=$action
    t=${t#fixture-}
    t=${t%-clean}
    fixture_mount "$t" || return 0
    fixture_files
    sync
    if umount "$fx"; then say "fixture clean: $t"; else say "fixture umount failed"; fi
    ;;
*)
    say "fixture: unknown fixture $action"
    ;;
esac
