#!/bin/bash
# The VM scenarios of the boot agent. Each is a function `scenario_NAME`
# that boots QEMU one or more times and checks the console and the disks;
# every one asserts that the origin's bytes are unchanged.
# shellcheck disable=SC2154  # CONSOLE, WORK, ... come from lib.sh

FILE_KEYS="cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb"
ORIGIN_UUID=0c0ffee0-1234-4321-abcd-00000000c0de

# Fresh disks for a scenario: $D/images.img (holding root.img), $D/pool.img.
fresh_disks() {
    D="$WORK/$1"
    rm -rf "$D"
    mkdir -p "$D"
    make_origin "$D/root.img" "origin-A"
    make_images_disk "$D/images.img" "$D/root.img"
    blank_disk "$D/pool.img" "${2:-256M}"
    IMAGES_SHA=$(sha "$D/images.img")
}

origin_unchanged() {
    same "$(sha "$D/images.img")" "$IMAGES_SHA" "images disk (cowroot.dev and the image) changed"
}

scenario_blank_pool_formatted_at_first_boot() {
    fresh_disks blank
    run_vm blank-1 "$FILE_KEYS cowtest=boot,state,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'cowroot: /dev/vdb is blank: formatting it as a cowroot pool'
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/vda \(64.0 MiB\), pool /dev/vdb, generation 1 \(formatted\)'
    expect 'COWTEST loop loop0 ro=1 file=/run/cowroot/host/root.img'
    expect 'COWTEST host mounted: 1'
    expect 'COWTEST wrote marker'
    [ "$(head -c 8 "$D/pool.img")" = "COWROOT1" ] || die "no cowroot header at the start of the pool"
    origin_unchanged
}

scenario_changes_persist_across_boots() {
    fresh_disks persist
    run_vm persist-1 "$FILE_KEYS cowtest=boot,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST wrote marker'
    run_vm persist-2 "$FILE_KEYS cowtest=boot,check,status" "$D/images.img" "$D/pool.img"
    expect 'ready: .* generation 1 \(kept\)'
    expect 'COWTEST marker present: kept-change'
    expect 'COWTEST origin file: origin-A'
    origin_unchanged
}

scenario_reset_discards_changes() {
    fresh_disks reset
    run_vm reset-1 "$FILE_KEYS cowtest=boot,write" "$D/images.img" "$D/pool.img"
    run_vm reset-2 "$FILE_KEYS cowroot.reset=1 cowtest=boot,check,status" "$D/images.img" "$D/pool.img"
    expect 'ready: .* generation 2 \(reset\)'
    expect 'COWTEST marker absent'
    expect '"thin_id":2,"generation":2'
    # Asking from the running system works too: the next boot resets.
    run_vm reset-3 "$FILE_KEYS cowtest=boot,write,requestreset,status" "$D/images.img" "$D/pool.img"
    expect '"next_boot":"reset"'
    run_vm reset-4 "$FILE_KEYS cowtest=boot,check" "$D/images.img" "$D/pool.img"
    expect 'ready: .* generation 3 \(reset\)'
    expect 'COWTEST marker absent'
    origin_unchanged
}

scenario_device_origin() {
    D="$WORK/device"
    rm -rf "$D"
    mkdir -p "$D"
    make_origin "$D/root.img" "origin-dev" "$ORIGIN_UUID"
    # The pool is a GPT partition, named by its label.
    blank_disk "$D/pool.img" 256M
    printf 'label: gpt\nstart=2048, size=409600, name=cowpool\n' | sfdisk -q "$D/pool.img"
    local sha_before
    sha_before=$(sha "$D/root.img")
    run_vm device-1 "cowroot=UUID=$ORIGIN_UUID cowpool=PARTLABEL=cowpool cowtest=boot,state,write" "$D/root.img" "$D/pool.img"
    expect 'ready: origin /dev/vda \(64.0 MiB\), pool /dev/vdb1, generation 1 \(formatted\)'
    expect 'COWTEST host mounted: 0'
    expect 'COWTEST vda ro=1'
    run_vm device-2 "cowroot=UUID=$ORIGIN_UUID cowpool=PARTLABEL=cowpool cowtest=boot,check" "$D/root.img" "$D/pool.img"
    expect 'COWTEST marker present'
    same "$(sha "$D/root.img")" "$sha_before" "device origin changed"
}

scenario_no_cowroot_is_a_noop() {
    fresh_disks noop
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm noop "root=/dev/vda cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'COWTEST mapper: control $'
    expect 'COWTEST host mounted: 0'
    reject 'cowroot:'
    same "$(sha "$D/pool.img")" "$pool_sha" "pool touched without cowroot="
    origin_unchanged
}

scenario_missing_image_fails_cleanly() {
    fresh_disks missing
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm missing "cowroot=/images/nope.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'image /images/nope.img not found on LABEL=images \(/dev/vda\)'
    expect 'COWTEST mapper: control $'
    expect 'COWTEST dm: 0 devices'
    expect 'COWTEST host mounted: 0'
    reject 'COWTEST loop '
    same "$(sha "$D/pool.img")" "$pool_sha" "pool touched"
    origin_unchanged
}

scenario_foreign_pool_refused() {
    fresh_disks foreign
    mkfs.ext4 -q -F -L precious "$D/pool.img"
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm foreign "$FILE_KEYS cowroot.onfail=ro cowtest=boot,state,rofallback" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'cowpool: /dev/vdb holds an ext2/3/4 filesystem; refusing to use or format it'
    expect 'COWTEST dm: 0 devices'
    expect 'COWTEST host mounted: 0'
    reject 'COWTEST loop '
    # The onfail=ro fallback then boots the origin strictly read-only.
    expect 'COWTEST rofallback rc=0 root=/dev/mapper/cowroot'
    expect 'cowroot: /dev/mapper/cowroot is the origin /root.img on /dev/vda, read-only; no changes are kept'
    expect 'COWTEST rofallback write refused'
    expect 'COWTEST rofallback origin file: origin-A'
    same "$(sha "$D/pool.img")" "$pool_sha" "foreign pool was modified"
    origin_unchanged
}

scenario_swapped_origin_refused_until_reset() {
    fresh_disks swapped
    run_vm swapped-1 "$FILE_KEYS cowtest=boot,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST wrote marker'
    # Replace the image by another one under the same name.
    make_origin "$D/root-b.img" "origin-B"
    make_images_disk "$D/images.img" "$D/root-b.img"
    IMAGES_SHA=$(sha "$D/images.img")
    run_vm swapped-2 "$FILE_KEYS cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'origin /root.img is not the image the kept changes were made on .*Boot with cowroot.reset=1'
    expect 'COWTEST dm: 0 devices'
    expect 'COWTEST host mounted: 0'
    run_vm swapped-3 "$FILE_KEYS cowroot.reset=1 cowtest=boot,check" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(reset\)'
    expect 'COWTEST origin file: origin-B'
    expect 'COWTEST marker absent'
    run_vm swapped-4 "$FILE_KEYS cowtest=boot,check" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(kept\)'
    origin_unchanged
}

scenario_full_pool_fails_writes_promptly() {
    fresh_disks full 24M
    run_vm full "$FILE_KEYS cowtest=boot,fill,status" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'COWTEST fill rc=1 '
    expect 'dd: error writing .*(I/O error|No space left on device)'
    local secs
    secs=$(console_number 'COWTEST fill rc=1 secs=')
    [ "$secs" -le 60 ] || die "the writer waited $secs s for an I/O error"
    expect '"pool_mode":"out_of_data_space"'
    expect '"health":"out_of_data_space"'
    expect 'COWTEST done'
    origin_unchanged
}

scenario_bad_values_name_the_key() {
    fresh_disks bad
    run_vm bad "root=/dev/vda cowtest=badvalues,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST bad rc=1 cowroot: cowroot.dev: required when cowroot= is an image path'
    expect 'COWTEST bad rc=1 cowroot: cowroot.timeout: expected whole seconds'
    expect 'COWTEST bad rc=1 cowroot: cowroot.name: invalid name "a/b"'
    expect 'COWTEST bad rc=1 cowroot: cowroot.reset: expected 0 or 1, got "maybe"'
    expect 'COWTEST bad rc=1 cowroot: cowroot.onfail: expected shell, halt, ro or ram, got "explode"'
    expect 'COWTEST bad rc=1 cowroot: cowpool: "nowhere" is not a device spec'
    expect 'COWTEST bad rc=1 cowroot: cowroot.bogus: unknown key'
    expect 'COWTEST bad rc=1 cowroot: cowroot.debug: expected 0 or 1'
    expect 'COWTEST bad rc=1 cowroot: cowroot: "relative.img" is neither an absolute image path'
    expect 'COWTEST bad rc=1 cowroot: cowpool: device LABEL=nothere did not appear within 1 s'
    [ "$(grep -c 'COWTEST bad rc=' "$CONSOLE")" = 10 ] || die "not every bad line ran"
    expect 'COWTEST dm: 0 devices'
    origin_unchanged
}

scenario_dry_run_prints_commands_and_touches_nothing() {
    fresh_disks dryrun
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm dryrun "$FILE_KEYS cowtest=dryrun,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST dryrun rc=0'
    expect 'COWTEST plan: # cowroot dry run: nothing was changed. This boot would format the blank pool'
    expect "COWTEST plan: mkdir -p /run/cowroot/host && mount -o ro /dev/vda /run/cowroot/host"
    expect "COWTEST plan: LOOP=\\\$\\(losetup -r -f --show /run/cowroot/host/root.img\\)"
    expect 'COWTEST plan: blockdev --setro /dev/vda$'
    expect 'COWTEST plan: dmsetup create cowroot-pool --uuid COWROOT-pool-cowroot --table "0 [0-9]+ thin-pool /dev/mapper/cowroot-pool_tmeta /dev/mapper/cowroot-pool_tdata 1024 0 1 error_if_no_space"'
    expect "COWTEST plan: dmsetup message cowroot-pool 0 'set_transaction_id 0 [0-9]+'"
    expect "COWTEST plan: dmsetup message cowroot-pool 0 'create_thin 1'"
    # shellcheck disable=SC2016  # $LOOP is literal output
    expect 'COWTEST plan: dmsetup create cowroot --uuid COWROOT-thin-cowroot --table "0 .* thin /dev/mapper/cowroot-pool 1 \$LOOP"'
    expect 'COWTEST dm: 0 devices'
    expect 'COWTEST host mounted: 0'
    same "$(sha "$D/pool.img")" "$pool_sha" "dry run touched the pool"
    origin_unchanged
}

scenario_status_json_in_guest() {
    fresh_disks status
    run_vm status "$FILE_KEYS cowtest=boot,again,write,status" "$D/images.img" "$D/pool.img"
    # Running the agent twice (as an initqueue may) is harmless.
    expect 'COWTEST again rc=0'
    expect 'cowroot: /dev/mapper/cowroot is already set up; nothing to do'

    expect 'COWTEST status rc=0 \{"device":"/dev/mapper/cowroot","origin":"/run/cowroot/host/root.img","origin_device":"/dev/loop0","pool":"/dev/vdb","thin_id":1,"generation":1,"size_bytes":67108864,'
    expect '"pool_mode":"rw","needs_check":false,"health":"ok","next_boot":"keep"'
    expect 'COWTEST status-text: health:     ok'
    origin_unchanged
}

scenario_format_refuses_signatures_unless_forced() {
    fresh_disks format
    local pool_sha
    # Data cowroot has no name for (ZFS, JFS, anything): refused as well.
    head -c 4096 /dev/urandom | dd of="$D/pool.img" bs=1 seek=300000 conv=notrunc status=none
    pool_sha=$(sha "$D/pool.img")
    run_vm format-0 "root=/dev/vda cowtest=format" "$D/images.img" "$D/pool.img"
    expect 'COWTEST format: cowroot: cowpool: /dev/vdb holds data cowroot does not recognise \(the first non-zero byte is at offset 30'
    same "$(sha "$D/pool.img")" "$pool_sha" "format without --force changed unrecognised data"
    mkfs.ext4 -q -F -L precious "$D/pool.img"
    pool_sha=$(sha "$D/pool.img")
    run_vm format-1 "root=/dev/vda cowtest=format" "$D/images.img" "$D/pool.img"
    expect 'COWTEST format: cowroot: cowpool: /dev/vdb holds an ext2/3/4 filesystem; refusing'
    same "$(sha "$D/pool.img")" "$pool_sha" "format without --force changed a foreign device"
    run_vm format-2 "$FILE_KEYS cowtest=formatforce,boot,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST format --force: formatted /dev/vdb as a cowroot pool: 256.0 MiB in all'
    expect 'ready: .* generation 1 \(first use\)'
    expect 'COWTEST wrote marker'
    # Formatting again is refused: the device now holds a cowroot pool.
    run_vm format-3 "root=/dev/vda cowtest=format" "$D/images.img" "$D/pool.img"
    expect 'COWTEST format: cowroot: cowpool: /dev/vdb holds a cowroot pool; refusing'
    origin_unchanged
}

scenario_power_cut_keeps_synced_data_and_a_bootable_pool() {
    fresh_disks powercut
    local round
    for round in 1 2 3; do
        run_vm_cut "powercut-$round" "$FILE_KEYS cowtest=boot,hammer" 'COWTEST synced' $((round * 2)) \
            "$D/images.img" "$D/pool.img"
        run_vm "powercut-$round-after" "$FILE_KEYS cowtest=boot,check,status" "$D/images.img" "$D/pool.img"
        expect 'COWTEST boot rc=0'
        # The header's reset flag was flipping when the power went: either
        # outcome is valid, but it must be consistent.
        if grep -q '(reset)' "$CONSOLE"; then
            expect 'COWTEST marker absent'
        else
            expect 'ready: .*\(kept\)'
            expect 'COWTEST marker present: synced-before-power-cut'
        fi
        expect '"needs_check":false,"health":"ok"'
    done
    origin_unchanged
}

# Flips one byte of the pool file at OFFSET.
flip_byte() {
    local file=$1 offset=$2 byte
    byte=$(od -An -tu1 -j "$offset" -N1 "$file" | tr -d ' ')
    printf '%b' "\\$(printf '%03o' $(( (byte ^ 0x5a) & 255 )))" | dd of="$file" bs=1 seek="$offset" conv=notrunc status=none
}

scenario_damaged_header_copy_is_used_and_repaired() {
    fresh_disks damaged
    run_vm damaged-1 "$FILE_KEYS cowtest=boot,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST wrote marker'
    # Damage copy 0 (at rest both copies say the same).
    flip_byte "$D/pool.img" 100
    "$BIN" inspect "$D/pool.img" | grep -q 'copy 0 (byte 0): unreadable: checksum mismatch' \
        || die "the host-side inspect does not see the damage"
    run_vm damaged-2 "$FILE_KEYS cowtest=boot,check,status" "$D/images.img" "$D/pool.img"
    expect 'ready: .* generation 1 \(kept\)'
    expect 'header copy 0 is damaged \(checksum mismatch\); rewriting it'
    expect 'COWTEST marker present: kept-change'
    expect 'COWTEST status-text: header:     both copies good'
    "$BIN" inspect "$D/pool.img" | grep -q 'verdict: a cowroot pool; copy . is the newest' \
        || die "the boot did not repair copy 0"
    # Damaged while the system runs: status says so, the next header
    # write (here `cowroot reset --cancel`) repairs it.
    run_vm damaged-3 "$FILE_KEYS cowtest=boot,damage1,status,cancelreset,status,check" "$D/images.img" "$D/pool.img"
    expect 'COWTEST status-text: header:     COPY 1 DAMAGED \(checksum mismatch\)'
    expect '"damaged_header_copy":\{"copy":1,"fault":"checksum mismatch"\}'
    expect 'COWTEST reset --cancel: the next boot keeps the changes of generation 1'
    expect '"damaged_header_copy":null'
    expect 'COWTEST marker present: kept-change'
    # Both copies damaged: refused with what to do, the device untouched.
    flip_byte "$D/pool.img" 100
    flip_byte "$D/pool.img" $((65536 + 100))
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm damaged-4 "$FILE_KEYS cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'both copies of the cowroot header on /dev/vdb are damaged \(copy 0: checksum mismatch, copy 1: checksum mismatch\)'
    # shellcheck disable=SC2016  # backquotes are literal output
    expect 'save the device first \(`dd if=/dev/vdb of=FILE bs=1M`\)'
    expect 'COWTEST dm: 0 devices'
    same "$(sha "$D/pool.img")" "$pool_sha" "a pool with two damaged header copies was written"
    origin_unchanged
}

scenario_restored_header_does_not_match_its_metadata() {
    fresh_disks restored
    run_vm restored-1 "$FILE_KEYS cowtest=boot,write" "$D/images.img" "$D/pool.img"
    dd if="$D/pool.img" of="$D/header-gen1" bs=1M count=1 status=none
    run_vm restored-2 "$FILE_KEYS cowroot.reset=1 cowtest=boot" "$D/images.img" "$D/pool.img"
    expect 'generation 2 \(reset\)'
    # Put the first generation's header back over the newer metadata.
    dd if="$D/header-gen1" of="$D/pool.img" bs=1M count=1 conv=notrunc status=none
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm restored-3 "$FILE_KEYS cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'the cowroot header on /dev/vdb belongs to thin-pool metadata transaction [0-9]+, but the metadata on the device is at transaction [0-9]+: the header was restored'
    expect 'COWTEST dm: 0 devices'
    same "$(sha "$D/pool.img")" "$pool_sha" "a mismatched pool was written"
    origin_unchanged
}

scenario_non_utf8_command_line() {
    fresh_disks utf8
    local bad=$'\xff\xfe' lone=$'\xc3'
    run_vm utf8-1 "$FILE_KEYS splash=$bad cowtest=boot,root,badutf8,write" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'ready: .* generation 1 \(formatted\)'
    expect 'COWTEST root device: /dev/mapper/cowroot rc=0'
    expect 'COWTEST badutf8 ours rc=1 cowroot: cowroot: the value holds bytes that are not UTF-8'
    expect 'COWTEST badutf8 theirs rc=0'
    expect 'COWTEST wrote marker'
    # Without cowroot=, such a byte is nothing to cowroot.
    run_vm utf8-2 "root=/dev/vda quiet=$lone cowtest=boot,root,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'COWTEST root device:  rc=0'
    expect 'COWTEST dm: 0 devices'
    origin_unchanged
}

scenario_4kn_pool_with_an_origin_of_2k_multiple_size() {
    D="$WORK/4kn"
    rm -rf "$D"
    mkdir -p "$D"
    # 4 KiB filesystem blocks: a smaller block cannot be mounted on a 4Kn
    # device at all, cowroot or not.
    MKFS_BLOCK=4096 make_origin "$D/root.img" "origin-iso"
    # An image whose size is a multiple of 2 KiB but not of 4 KiB, as ISO
    # 9660 images are.
    truncate -s $(( (64 << 20) + 2048 )) "$D/root.img"
    make_images_disk "$D/images.img" "$D/root.img"
    blank_disk "$D/pool.img" 256M
    IMAGES_SHA=$(sha "$D/images.img")
    run_vm 4kn "$FILE_KEYS cowtest=boot,write,check" "$D/images.img" "$D/pool.img@4k"
    expect 'COWTEST boot rc=0'
    expect 'ready: origin /root.img on /dev/vda \(64.0 MiB\), pool /dev/vdb, generation 1 \(formatted\)'
    expect 'COWTEST marker present: kept-change'
    origin_unchanged
}

# The image host on an NVMe namespace, the pool on a SATA disk: other
# drivers, other names (nvme0n1, sda), found by label and by path.
scenario_image_host_on_nvme_pool_on_sata() {
    fresh_disks nvmesata
    initrd_with_modules "$WORK/initramfs-nvme-sata.cpio.gz" "" nvme ahci sd_mod
    VM_INITRD="$WORK/initramfs-nvme-sata.cpio.gz" run_vm nvmesata-1 \
        "cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/sda cowtest=boot,write" "$D/images.img@nvme" "$D/pool.img@sata"
    expect 'COWTEST boot rc=0'
    expect 'ready: origin /root.img on /dev/nvme0n1 \(64.0 MiB\), pool /dev/sda, generation 1 \(formatted\)'
    expect 'COWTEST wrote marker'
    VM_INITRD="$WORK/initramfs-nvme-sata.cpio.gz" run_vm nvmesata-2 \
        "cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/sda cowtest=boot,check" "$D/images.img@nvme" "$D/pool.img@sata"
    expect 'ready: origin /root.img on /dev/nvme0n1 .* generation 1 \(kept\)'
    expect 'COWTEST marker present: kept-change'
    origin_unchanged
}

scenario_data_at_the_pool_end_is_not_blank() {
    fresh_disks enddata
    # An md 1.0 superblock sits 8 KiB from the end: the first MiB is zero.
    local size sb
    size=$(stat -c %s "$D/pool.img")
    sb=$(( ((size / 512 - 16) / 8 * 8) * 512 ))
    printf '\374\116\053\251' | dd of="$D/pool.img" bs=1 seek="$sb" conv=notrunc status=none
    local pool_sha
    pool_sha=$(sha "$D/pool.img")
    run_vm enddata "$FILE_KEYS cowtest=boot,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'cowpool: /dev/vdb holds an MD RAID member \(superblock at the end\); refusing'
    expect 'COWTEST dm: 0 devices'
    same "$(sha "$D/pool.img")" "$pool_sha" "a pool with data at its end was formatted"
    origin_unchanged
}

scenario_debug_lines_do_not_crowd_out_the_summary() {
    fresh_disks debuglog
    # The kernel's default: /dev/kmsg writes rate-limited (no
    # printk.devkmsg=on as the other scenarios have).
    VM_KERNEL_CMDLINE="console=ttyS0 panic=-1" \
        run_vm debuglog "$FILE_KEYS cowroot.debug=1 cowtest=boot,bootlog" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'cowroot: /dev/mapper/cowroot ready: '
    expect 'cowroot: [0-9]+ more debug lines in /run/cowroot/boot.log'
    expect 'COWTEST boot.log: cowroot: [0-9]+ ms: dmsetup create cowroot-pool --uuid COWROOT-pool-cowroot --table "0 [0-9]+ thin-pool '
    local lines
    lines=$(console_number 'COWTEST boot.log lines: ')
    [ "${lines:-0}" -ge 15 ] || die "the boot log holds ${lines:-no} lines"
    reject 'output lines suppressed'
    origin_unchanged
}

scenario_pool_stacked_on_the_image_host_is_refused() {
    fresh_disks stacked
    # The host filesystem fills the first 128 MiB; the zeros after it look
    # like a blank pool to anything that does not see the stacking.
    truncate -s 256M "$D/images.img"
    IMAGES_SHA=$(sha "$D/images.img")
    # dmsetup is in the crash scenario's initramfs only.
    VM_INITRD=$CRASH_INITRD run_vm stacked "root=/dev/vda cowtest=stackedpool,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST stackedpool rc=1 cowroot: cowpool: /dev/mapper/stacked \(/dev/mapper/stacked\) is stacked with cowroot.dev \(/dev/vda\)'
    expect 'COWTEST dm: 0 devices'
    origin_unchanged
}

# A hibernated cowroot system, then a boot that would write to the pool (a
# reset) with the resume device named: cowroot resumes the hibernated
# system before writing anything, so its pool stays as it was in memory.
# (The generators resume later: initramfs-tools in local-premount.) The
# device is named first as initramfs-tools' init exports it (Debian's
# resume hook fills it in from the swap devices), then, after the resumed
# system hibernates again, as resume= on the command line.
scenario_hibernated_system_is_resumed_before_the_pool_is_written() {
    fresh_disks hibernate
    blank_disk "$D/swap.img" 512M
    sig() { dd if="$D/swap.img" bs=1 skip=4086 count=9 status=none; }
    VM_DONE_PATTERN='COWTEST hibernating' \
        run_vm hibernate-1 "$FILE_KEYS cowtest=boot,write,hibernate,check,hibernate,check" "$D/images.img" "$D/pool.img" "$D/swap.img"
    expect 'COWTEST wrote marker'
    reject 'COWTEST resumed from hibernation|COWTEST hibernate failed'
    [ "$(sig)" = S1SUSPEND ] || die "no hibernation image on the swap disk"
    VM_DONE_PATTERN='COWTEST hibernating' \
        run_vm hibernate-2 "$FILE_KEYS cowroot.reset=1 cowtest=bootenv,check" "$D/images.img" "$D/pool.img" "$D/swap.img"
    expect 'cowroot: /dev/vdc \(resume=/dev/vdc\) holds a hibernation image \(S1SUSPEND\); resuming it before anything is written to the pool'
    expect 'COWTEST resumed from hibernation'
    expect 'COWTEST marker present: kept-change'
    reject 'COWTEST bootenv rc=|generation 2'
    [ "$(sig)" = S1SUSPEND ] || die "the resumed system did not hibernate again"
    run_vm hibernate-3 "$FILE_KEYS cowroot.reset=1 resume=/dev/vdc cowtest=boot,check" "$D/images.img" "$D/pool.img" "$D/swap.img"
    expect 'holds a hibernation image \(S1SUSPEND\); resuming it before anything is written to the pool'
    expect 'COWTEST resumed from hibernation'
    expect 'COWTEST marker present: kept-change'
    reject 'COWTEST boot rc=|generation 2'
    # The image is used up: the next boot sets up as usual, the changes kept.
    run_vm hibernate-4 "$FILE_KEYS resume=/dev/vdc cowtest=boot,check" "$D/images.img" "$D/pool.img" "$D/swap.img"
    expect 'ready: .* generation 1 \(kept\)'
    expect 'COWTEST marker present: kept-change'
    reject 'hibernation image'
    origin_unchanged
}

# A member of an md RAID1 with its superblock at the end (metadata 1.0)
# shows the array's filesystem at its start; blkid calls it a raid member,
# and cowroot.dev=LABEL= must not take it for the image host (the array,
# not assembled here, is meant).
scenario_md_member_is_not_taken_for_the_image_host() {
    fresh_disks mdmember
    local size offset
    size=$(stat -c %s "$D/images.img")
    offset=$(( (size / 512 - 16) / 8 * 8 * 512 ))
    printf '\374\116\053\251' | dd of="$D/images.img" bs=1 seek="$offset" conv=notrunc status=none
    IMAGES_SHA=$(sha "$D/images.img")
    run_vm mdmember "$FILE_KEYS cowroot.timeout=3 cowtest=boot" "$D/images.img" "$D/pool.img"
    expect 'cowroot.dev: device LABEL=images did not appear within 3 s'
    reject 'ready:'
    origin_unchanged
}
