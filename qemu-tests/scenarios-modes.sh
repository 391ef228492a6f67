#!/bin/bash
# VM scenarios of the modes (issue 10): RAM pools and the RAM fallback,
# volatile roots, a new image rolled out with cowroot.onchange=reset, pools
# encrypted with a key that is never stored. Each asserts that the origin's
# bytes are unchanged.
# shellcheck disable=SC2154,SC2034  # CONSOLE, WORK, D, ... come from lib.sh and scenarios.sh, IMAGES_SHA goes there

scenario_ram_pool_keeps_nothing() {
    fresh_disks ram
    # Only the images disk: the pool is in the guest's memory.
    run_vm ram-1 "$FILE_KEYS cowpool=ram:64M cowtest=boot,write,status" "$D/images.img"
    expect 'COWTEST boot rc=0'
    expect 'ready: origin /root.img on /dev/vda \(64.0 MiB\), pool RAM \(/dev/loop[0-9]+, at most 64.0 MiB, nothing kept\), generation 1 \(formatted\)'
    expect 'COWTEST wrote marker'
    expect '"fresh_every_boot":"it runs on a RAM pool"'
    expect '"next_boot":"reset"'
    expect 'COWTEST status-text: next boot:  start fresh: nothing of this boot is kept \(it runs on a RAM pool\)'
    # The default size: half the memory.
    run_vm ram-2 "$FILE_KEYS cowpool=ram cowtest=boot,check" "$D/images.img"
    expect 'pool RAM \(/dev/loop[0-9]+, at most (4[5-9][0-9]|50[0-9])\.[0-9] MiB, nothing kept\), generation 1 \(formatted\)'
    expect 'COWTEST marker absent'
    expect 'COWTEST origin file: origin-A'
    origin_unchanged
}

scenario_ram_fallback_when_the_pool_cannot_be_used() {
    fresh_disks ramfallback
    # A pool device holding someone's filesystem: refused, never formatted.
    mkfs.ext4 -q -F "$D/pool.img"
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm ramfallback-1 "$FILE_KEYS cowroot.onfail=ram cowtest=boot,write,status" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'cowpool: /dev/vdb holds an ext2/3/4 filesystem'
    expect 'cowroot.onfail=ram: the pool /dev/vdb cannot be used .* NOTHING written in it will be kept'
    expect 'pool RAM \(/dev/loop[0-9]+, at most [0-9.]+ MiB, nothing kept\), generation 1 \(formatted\)'
    expect 'COWTEST wrote marker'
    expect 'COWTEST status-text: FALLBACK:   this boot runs on a RAM pool because the configured pool could not be used'
    expect '"ram_fallback":"cowpool: /dev/vdb holds an ext2/3/4'
    same "$(sha "$D/pool.img")" "$pool_sha" "the refused pool device was written"
    # A pool device that never shows up.
    run_vm ramfallback-2 "cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdz cowroot.timeout=2 cowroot.onfail=ram cowtest=boot,check" "$D/images.img"
    expect 'COWTEST boot rc=0'
    expect 'cowroot.onfail=ram: the pool /dev/vdz cannot be used'
    expect 'COWTEST marker absent'
    # An origin that is not there: a RAM pool would not help, so no fallback.
    run_vm ramfallback-3 "cowroot=/missing.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.onfail=ram cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    reject 'cowroot.onfail=ram: the pool'
    expect 'COWTEST dm: 0 devices'
    same "$(sha "$D/pool.img")" "$pool_sha" "the refused pool device was written"
    origin_unchanged
}

scenario_volatile_mode_resets_every_boot() {
    fresh_disks volatile
    run_vm volatile-1 "$FILE_KEYS cowroot.mode=volatile cowtest=boot,write" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(formatted\)'
    expect 'COWTEST wrote marker'
    run_vm volatile-2 "$FILE_KEYS cowroot.mode=volatile cowtest=boot,check,write,status" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(reset\)'
    expect 'COWTEST marker absent'
    expect '"fresh_every_boot":"cowroot.mode=volatile"'
    expect '"next_boot":"reset"'
    # Back to the default mode: the last volatile boot's changes are kept.
    run_vm volatile-3 "$FILE_KEYS cowtest=boot,check" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(kept\)'
    expect 'COWTEST marker present: kept-change'
    origin_unchanged
}

scenario_onchange_reset_starts_fresh_on_a_new_image() {
    fresh_disks onchange
    run_vm onchange-1 "$FILE_KEYS cowroot.onchange=reset cowtest=boot,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST wrote marker'
    # The lab rolls out a new version of the image under the same name.
    make_origin "$D/root-b.img" "origin-B"
    make_images_disk "$D/images.img" "$D/root-b.img"
    IMAGES_SHA=$(sha "$D/images.img")
    run_vm onchange-2 "$FILE_KEYS cowroot.onchange=reset cowtest=boot,check,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'the origin /root.img is not the one the kept changes were made on \(.*\); starting fresh on it \(cowroot.onchange=reset\)'
    expect 'generation 2 \(reset: new origin\)'
    expect 'COWTEST marker absent'
    expect 'COWTEST origin file: origin-B'
    # The same image again: its changes are kept.
    run_vm onchange-3 "$FILE_KEYS cowroot.onchange=reset cowtest=boot,check" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(kept\)'
    expect 'COWTEST marker present: kept-change'
    origin_unchanged
}

scenario_crypt_random_leaves_nothing_readable() {
    fresh_disks crypt
    initrd_with_modules "$WORK/initramfs-crypt.cpio.gz" "" dm-crypt xts
    # The check can fail: a plaintext pool shows the canary in its raw bytes.
    blank_disk "$D/plain.img" 256M
    run_vm crypt-plain "$FILE_KEYS cowtest=boot,canary" "$D/images.img" "$D/plain.img"
    expect 'COWTEST wrote canary'
    grep -qa 'cowroot-canary-5e1f0c3a' "$D/plain.img" || die "the canary is not in the plaintext pool: the check below proves nothing"
    rm -f "$D/plain.img"

    VM_INITRD="$WORK/initramfs-crypt.cpio.gz" run_vm crypt-1 "$FILE_KEYS cowroot.crypt=random cowtest=boot,state,write,canary,status" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'pool /dev/vdb, encrypted with a key that is never stored, generation 1 \(formatted\)'
    expect 'COWTEST wrote canary'
    expect '"fresh_every_boot":"cowroot.crypt=random: a new key every boot"'
    [ "$(head -c 8 "$D/pool.img")" = "COWROOT1" ] || die "the encrypted pool lost its plaintext cowroot header"
    if grep -qa 'cowroot-canary-5e1f0c3a\|kept-change' "$D/pool.img"; then die "what the session wrote is readable on the raw pool disk"; fi
    # The next boot: a new key, nothing of the last session.
    VM_INITRD="$WORK/initramfs-crypt.cpio.gz" run_vm crypt-2 "$FILE_KEYS cowroot.crypt=random cowtest=boot,check" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(formatted\)'
    expect 'COWTEST marker absent'
    expect 'COWTEST origin file: origin-A'
    # Without the key the pool is refused, not misread.
    VM_INITRD="$WORK/initramfs-crypt.cpio.gz" run_vm crypt-3 "$FILE_KEYS cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'cowroot.crypt: /dev/vdb was last used with cowroot.crypt=random'
    expect 'COWTEST dm: 0 devices'
    # A RAM pool encrypted too (pages of a tmpfs can reach swap).
    VM_INITRD="$WORK/initramfs-crypt.cpio.gz" run_vm crypt-ram "cowroot=/root.img cowroot.dev=LABEL=images cowpool=ram:64M cowroot.crypt=random cowtest=boot,write" "$D/images.img"
    expect 'pool RAM \(/dev/loop[0-9]+, at most 64.0 MiB, nothing kept\), encrypted with a key that is never stored, generation 1 \(formatted\)'
    expect 'COWTEST wrote marker'
    origin_unchanged
}

scenario_size_gives_a_root_larger_than_its_image() {
    fresh_disks size 512M
    run_vm size-1 "$FILE_KEYS cowroot.size=192M cowtest=boot,grow,bigwrite,check,status" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect '"size_bytes":201326592,'
    expect 'COWTEST grow marker present'
    expect 'COWTEST grow: grew the filesystem on /mnt \(/dev/.*\) from [0-9.]+ MiB to 1[5-9][0-9]\.[0-9] MiB'
    expect 'COWTEST wrote 96 MiB'
    expect 'COWTEST big file: 100663296 bytes'
    expect 'COWTEST origin file: origin-A'
    # Without the key the kept root keeps its size; growing again is a no-op.
    run_vm size-2 "$FILE_KEYS cowtest=boot,grow,status" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(kept\)'
    expect '"size_bytes":201326592,'
    expect 'COWTEST grow: the filesystem on /mnt already fills'
    origin_unchanged
}

# cowroot.size over XFS and btrfs origins (device origins, read-only):
# `cowroot grow` through their own ioctls, the device found by btrfs id.
scenario_size_grows_xfs_and_btrfs_roots() {
    fresh_disks growfs 512M
    blank_disk "$D/xfs.img" 64M
    # xfsprogs refuses filesystems under 300 MB unless run by fstests.
    TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f -L origin "$D/xfs.img" || die "mkfs.xfs failed"
    blank_disk "$D/btrfs.img" 128M
    mkfs.btrfs -q -f -L origin "$D/btrfs.img" > /dev/null || die "mkfs.btrfs failed"
    local xfs_sha btrfs_sha
    xfs_sha=$(sha "$D/xfs.img")
    btrfs_sha=$(sha "$D/btrfs.img")
    run_vm growfs-xfs "cowroot=/dev/vda cowpool=/dev/vdb cowroot.size=256M cowtest=boot,growfs" "$D/xfs.img" "$D/pool.img"
    expect 'COWTEST fstype: xfs'
    expect 'COWTEST grow: grew the filesystem on /mnt \(/dev/mapper/cowroot\) from [0-9.]+ MiB to 2[0-9][0-9]\.[0-9] MiB'
    expect 'COWTEST grow again: the filesystem on /mnt already fills /dev/mapper/cowroot'
    expect 'COWTEST wrote 96 MiB'
    blank_disk "$D/pool.img" 512M
    run_vm growfs-btrfs "cowroot=/dev/vda cowpool=/dev/vdb cowroot.size=384M cowtest=boot,growfs" "$D/btrfs.img" "$D/pool.img"
    expect 'COWTEST fstype: btrfs'
    expect 'COWTEST grow: grew the filesystem on /mnt \(/dev/mapper/cowroot\) from [0-9.]+ MiB to 3[0-9][0-9]\.[0-9] MiB'
    expect 'COWTEST grow again: the filesystem on /mnt already fills /dev/mapper/cowroot'
    expect 'COWTEST wrote 96 MiB'
    same "$(sha "$D/xfs.img")" "$xfs_sha" "the XFS origin was written"
    same "$(sha "$D/btrfs.img")" "$btrfs_sha" "the btrfs origin was written"
}

scenario_status_check_follows_the_warn_levels() {
    fresh_disks warn 64M
    run_vm warn "$FILE_KEYS cowroot.warn=20,90 cowtest=boot,check80" "$D/images.img" "$D/pool.img"
    expect 'COWTEST check rc=0 cowroot OK: data [0-9.]+%, metadata [0-9.]+% of pool /dev/vdb used \(warn 20%, crit 90%\)'
    expect 'COWTEST check rc=1 cowroot WARNING: data [0-9.]+%'
    expect 'COWTEST check --log rc=1 <4>cowroot WARNING'
    expect 'COWTEST check --log again rc=1 \[\]'
    origin_unchanged
}

scenario_frozen_mode_with_maintenance_boots() {
    fresh_disks frozen
    local keys="$FILE_KEYS cowroot.mode=frozen"
    run_vm frozen-1 "$keys cowtest=boot,write,status" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(formatted\)'
    expect 'COWTEST wrote marker'
    expect '"thin_id":2,.*"base_thin":1'
    expect 'COWTEST status-text: frozen:     this boot runs on a throwaway snapshot of the base \(thin 1\)'
    expect '"next_boot":"frozen"'
    # The session is gone; ask for a maintenance boot from the running system.
    run_vm frozen-2 "$keys cowtest=boot,check,cleanup,maintenance,status" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(frozen\)'
    expect 'COWTEST marker absent'
    expect 'COWTEST cleanup: deleted thin 2, the changes discarded at the last boot'
    expect 'COWTEST maintenance: the next boot writes into the base'
    expect '"next_boot":"maintenance"'
    # The maintenance boot writes into the base.
    run_vm frozen-3 "$keys cowtest=boot,write,status" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(maintenance: writing the base\)'
    expect 'COWTEST status-text: frozen:     MAINTENANCE: this boot writes into the base \(thin 1\)'
    expect '"next_boot":"frozen"'
    # Frozen again: the base has the maintenance boot's change, a session's go.
    run_vm frozen-4 "$keys cowtest=boot,check,write2" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(frozen\)'
    expect 'COWTEST marker present: kept-change'
    run_vm frozen-5 "$keys cowroot.maintenance=1 cowtest=boot,check,check2" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(maintenance: writing the base\)'
    expect 'COWTEST marker present: kept-change'
    expect 'COWTEST marker2 absent'
    # A reset starts a new base on the bare image; the old base (the
    # maintenance boot's thin) is left over.
    run_vm frozen-6 "$keys cowroot.reset=1 cowtest=boot,check,cleanup" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(reset\)'
    expect 'COWTEST marker absent'
    expect 'COWTEST cleanup: deleted thin 1, the changes discarded at the last boot'
    origin_unchanged
}

# The busybox initramfs with mkfs.ext4 (mke2fs and what it links), for the
# volume scenario: cowroot formats a new volume with the system's mkfs.
volume_initrd() {
    local dir
    dir=$(mktemp -d "$WORK/initramfs-volume.XXXX")
    copy_with_libs /sbin/mke2fs "$dir"
    ln -s mke2fs "$dir/sbin/mkfs.ext4"
    mkdir -p "$dir/etc"
    cp /etc/mke2fs.conf "$dir/etc/mke2fs.conf" || die "no /etc/mke2fs.conf (install e2fsprogs)"
    VOLUME_INITRD="$WORK/initramfs-volume.cpio.gz"
    initrd_with_modules "$VOLUME_INITRD" "$dir"
    rm -rf "$dir"
}

scenario_persistent_volume_outlives_resets_and_frozen_boots() {
    fresh_disks volume
    volume_initrd
    local keys="$FILE_KEYS cowroot.mode=frozen cowroot.volume=home:32M:/home"
    VM_INITRD=$VOLUME_INITRD run_vm volume-1 "$keys cowtest=boot,status,volmount,volwrite,write,status" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(formatted\), .*; volumes home \(32.0 MiB, /home\)'
    expect 'COWTEST status-text: volume: +home \(32.0 MiB, 0 B written\), for /home, no filesystem yet'
    expect 'COWTEST volumes rc=0'
    expect 'COWTEST volumes: home \(/dev/mapper/cowroot-vol-home\): made ext4'
    expect 'COWTEST volumes: home: mounted at /home'
    expect 'COWTEST volumes-list: volume: +home \(32.0 MiB, [0-9.]+ [KM]iB written\), at /home; thin 1'
    expect 'COWTEST home mounted: 1'
    expect 'COWTEST wrote volume file'
    expect '"volumes":\[\{"name":"home","thin":1,"size_bytes":33554432,"mount_point":"/home","mapped_bytes":[1-9][0-9]*,"formatted":true,"mounted":true\}\]'
    # Frozen: the root's change is gone, the volume's stays; not formatted again.
    VM_INITRD=$VOLUME_INITRD run_vm volume-2 "$keys cowtest=boot,volmount,volcheck,check" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(frozen\)'
    expect 'COWTEST volumes: home \(/dev/mapper/cowroot-vol-home\): holds an ext2/3/4 filesystem'
    expect 'COWTEST volume file: kept-in-volume'
    expect 'COWTEST marker absent'
    # A reset starts a new base; the volume is untouched.
    VM_INITRD=$VOLUME_INITRD run_vm volume-3 "$keys cowroot.reset=1 cowtest=boot,volmount,volcheck,cleanup" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(reset\)'
    expect 'COWTEST volume file: kept-in-volume'
    expect 'COWTEST cleanup: deleted thins? [0-9]'
    # Without the key the volume is kept, inactive, and listed; a volatile
    # root on the same pool leaves it alone.
    VM_INITRD=$VOLUME_INITRD run_vm volume-4 "$FILE_KEYS cowroot.mode=volatile cowtest=boot,volmount,state" "$D/images.img" "$D/pool.img"
    expect 'generation 3 \(reset\)'
    expect 'COWTEST volumes-list: volume: +home \(32.0 MiB\), not asked for at this boot \(kept untouched\); thin 1'
    reject 'cowroot-vol-home'
    # A random-key pool would discard the volume: refused, nothing written.
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    VM_INITRD=$VOLUME_INITRD run_vm volume-5 "$FILE_KEYS cowroot.crypt=random cowroot.reset=1 cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'cowroot.crypt: /dev/vdb holds the persistent volumes home, and cowroot.crypt=random'
    expect 'COWTEST dm: 0 devices'
    same "$(sha "$D/pool.img")" "$pool_sha" "the pool was written by a refused boot"
    # Asked for as another filesystem: never formatted again, not mounted,
    # and status says so.
    VM_INITRD=$VOLUME_INITRD run_vm volume-6 "$FILE_KEYS cowroot.volume=home:320M:/home:xfs cowtest=boot,volmount,status" "$D/images.img" "$D/pool.img"
    expect 'COWTEST volumes rc=1'
    expect 'COWTEST volumes: .*volume home: cowroot.volume: volume home holds ext4, but the key asks for xfs'
    expect 'COWTEST home mounted: 0'
    expect 'COWTEST status-text: volume: +home \(320.0 MiB, .*\), for /home, NOT MOUNTED'
    # The volume is still there, with its file (and the size it grew to).
    VM_INITRD=$VOLUME_INITRD run_vm volume-7 "$keys cowtest=boot,volmount,volcheck,voldelete" "$D/images.img" "$D/pool.img"
    expect 'volumes home \(320.0 MiB, /home\)'
    expect 'COWTEST volume file: kept-in-volume'
    expect 'COWTEST volumes --delete: cowroot: volume home is in use at this boot \(/dev/mapper/cowroot-vol-home\)'
    # Given up: deleted at a boot without its key, its space freed.
    VM_INITRD=$VOLUME_INITRD run_vm volume-8 "$FILE_KEYS cowroot.mode=frozen cowtest=boot,voldelete,status" "$D/images.img" "$D/pool.img"
    expect 'COWTEST volumes --delete: deleted volume home and what it held: [1-9][0-9.]* MiB freed on /dev/vdb'
    expect '"volumes":\[\]'
    origin_unchanged
}

# Checkpoints: one taken of the mounted root comes back with a rollback, the
# state a rollback replaced comes back with another, and a reset with
# cowroot.keep is undone the same way.
scenario_checkpoint_rollback_and_undo_a_reset() {
    fresh_disks ckpt
    local keys="$FILE_KEYS cowroot.keep=2"
    run_vm ckpt-1 "$keys cowtest=boot,write,ckcreate:before,write2,cklist,rollback:before,status" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(formatted\)'
    expect 'COWTEST checkpoint create before rc=0'
    expect 'COWTEST checkpoint: checkpoint before taken of /dev/mapper/cowroot \(generation 1\)'
    expect 'COWTEST checkpoint-list: checkpoint: +before \(manual, [0-9]+ s old, generation 1\); thin 2'
    expect 'COWTEST checkpoint-json: \[\{"name":"before","kind":"manual","thin":2,"created":[0-9]+,"age_seconds":[0-9]+,"generation":1,"same_origin":true\}\]'
    expect 'COWTEST rollback: the next boot continues from checkpoint before; the current state is kept as checkpoint rollback-g1'
    expect '"next_boot":"rollback"'
    # The checkpoint's content; then back to what the rollback replaced.
    run_vm ckpt-2 "$keys cowtest=boot,check,check2,cklist,rollback:rollback-g1" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(kept\)'
    expect 'COWTEST marker present: kept-change'
    expect 'COWTEST marker2 absent'
    expect 'COWTEST checkpoint-list: checkpoint: +rollback-g1 \(rollback, [0-9]+ (s|min) old, generation 1\)'
    expect 'COWTEST rollback: the next boot continues from checkpoint rollback-g1; the current state is kept as checkpoint rollback-g2'
    # A reset keeps what it replaced (cowroot.keep=2), and is undone.
    run_vm ckpt-3 "$keys cowroot.reset=1 cowtest=boot,check,check2,cklist,rollback:reset-g3" "$D/images.img" "$D/pool.img"
    expect 'generation 4 \(reset\)'
    expect 'COWTEST marker absent'
    expect 'COWTEST checkpoint-list: checkpoint: +reset-g3 \(reset, [0-9]+ (s|min) old, generation 3\)'
    expect 'COWTEST rollback: the next boot continues from checkpoint reset-g3'
    run_vm ckpt-4 "$keys cowtest=boot,check,check2,ckdelete:before,ckdelete:before,cklist" "$D/images.img" "$D/pool.img"
    expect 'generation 5 \(kept\)'
    expect 'COWTEST marker present: kept-change'
    expect 'COWTEST marker2 present'
    expect 'COWTEST checkpoint delete: deleted checkpoint before: '
    expect 'COWTEST checkpoint delete: cowroot: /dev/vdb holds no checkpoint before'
    reject 'checkpoint-list: checkpoint: +before '
    origin_unchanged
}

# attach/detach on a running system (no cowroot root): an image file on a
# read-only mount, written on through a pool disk, detached, attached again
# with what was written, then with --reset without it; a pool in use is
# refused; the image and its disk are never written.
scenario_attach_write_detach_on_a_running_system() {
    fresh_disks attach
    run_vm attach-1 "cowtest=attach,attachother,attachwrite,list,detach,list,attach,attachcheck,detach,attachreset,attachcheck,detach,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST attach rc=0'
    expect 'COWTEST attach: /dev/mapper/backup ready: origin /srv/root.img \([0-9.]+ MiB\), pool /dev/vdb, generation 1 \(formatted\)'
    expect 'COWTEST attachother rc=1'
    expect 'COWTEST attachother: cowroot: the pool /dev/vdb is in use'
    expect 'COWTEST wrote on the attached device'
    expect 'COWTEST list: backup: /dev/mapper/backup \(not mounted\), origin /srv/root.img, pool /dev/vdb, generation 1'
    expect 'COWTEST detach: detached /dev/mapper/backup \(4 device-mapper devices removed\)'
    expect 'COWTEST list: no cowroot devices on this system'
    expect 'generation 1 \(kept\)'
    expect 'COWTEST attached file: attached-change'
    expect 'COWTEST attached origin: origin-A'
    expect 'COWTEST attachreset: /dev/mapper/backup ready: .*generation 2 \(reset\)'
    expect 'COWTEST attached file absent'
    expect 'COWTEST dm: 0 devices'
    origin_unchanged
}

# commit: the running root's state and a checkpoint's, each into a new
# image on a scratch disk, verified; the host reads them; the live one
# boots as the next origin, where the old image's checkpoints are refused.
scenario_commit_writes_a_verified_image_that_boots() {
    fresh_disks commit
    blank_disk "$D/scratch.img" 256M
    mkfs.ext4 -q -F -L scratch "$D/scratch.img"
    run_vm commit-1 "$FILE_KEYS cowtest=boot,write,ckcreate:first,write2,commitlive,commitckpt:first,cklist,state" "$D/images.img" "$D/pool.img" "$D/scratch.img"
    expect 'COWTEST commitlive rc=0'
    expect 'COWTEST commitlive: wrote a sparse image \(64.0 MiB\) to /scratch/live.img in [0-9]+ s, read back and verified: sha256 [0-9a-f]{64}'
    expect 'COWTEST commitlive progress: ([2-9]|1[0-9]) lines, last: commit: 64.0 MiB of 64.0 MiB \(100.0%\)'
    expect 'COWTEST commitckpt:first rc=0'
    # The temporary checkpoint of the live state is gone again.
    reject 'checkpoint-list: checkpoint: +commit-'
    expect 'COWTEST dm: 4 devices'
    local sum
    sum=$(grep -ao 'COWTEST commitlive: wrote .* sha256 [0-9a-f]*' "$CONSOLE" | sed 's/.* //')
    expect "COWTEST commitlive sha256: $sum"
    debugfs -R "dump /live.img $D/live.img" "$D/scratch.img" 2>/dev/null
    debugfs -R "dump /first.img $D/first.img" "$D/scratch.img" 2>/dev/null
    same "$(sha "$D/live.img")" "$sum" "the committed image on the scratch disk"
    same "$(debugfs -R 'cat /marker2' "$D/live.img" 2>/dev/null)" "second-change" "the live commit's content"
    same "$(debugfs -R 'cat /marker' "$D/first.img" 2>/dev/null)" "kept-change" "the checkpoint commit's content"
    [ -z "$(debugfs -R 'cat /marker2' "$D/first.img" 2>/dev/null)" ] || die "the checkpoint commit holds a later change"
    origin_unchanged
    # The new image as the origin of the same pool: a reset starts on it,
    # and the old image's checkpoint is refused.
    make_images_disk "$D/images2.img" "$D/live.img"
    run_vm commit-2 "$FILE_KEYS cowroot.reset=1 cowtest=boot,check,check2,cklist,rollback:first" "$D/images2.img" "$D/pool.img"
    expect 'generation 2 \(reset\)'
    expect 'COWTEST marker present: kept-change'
    expect 'COWTEST marker2 present'
    expect 'COWTEST checkpoint-list: checkpoint: +first \(manual, .*ON ANOTHER IMAGE'
    expect 'COWTEST rollback: cowroot: checkpoint first was taken on another image'
}

# A maintenance boot that loses power keeps in the base what it had synced,
# like any kept boot, and the next boot is frozen again.
scenario_frozen_maintenance_boot_cut_keeps_what_it_synced() {
    fresh_disks maintcut
    local keys="$FILE_KEYS cowroot.mode=frozen"
    run_vm maintcut-1 "$keys cowtest=boot,maintenance" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(formatted\)'
    expect 'COWTEST maintenance: the next boot writes into the base'
    run_vm_cut maintcut-2 "$keys cowtest=boot,write,churn" 'COWTEST churning' 2 "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(maintenance: writing the base\)'
    expect 'COWTEST wrote marker'
    run_vm maintcut-3 "$keys cowtest=boot,check,write2,status" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(frozen\)'
    expect 'COWTEST marker present: kept-change'
    expect '"next_boot":"frozen"'
    run_vm maintcut-4 "$keys cowtest=boot,check2" "$D/images.img" "$D/pool.img"
    expect 'generation 1 \(frozen\)'
    expect 'COWTEST marker2 absent'
    origin_unchanged
}
