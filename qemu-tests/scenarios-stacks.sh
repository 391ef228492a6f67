#!/bin/bash
# The Debian image host on LUKS and on md RAID1, under each initramfs
# generator: the stack's own tools unlock or assemble it in the initramfs
# (cryptsetup with a key file in the test initramfs; mdadm), cowroot waits
# for the filesystem inside without holding them up, the root is the
# copy-on-write device, and the host filesystem is never written. Sourced
# after debian.sh.
#
# The fixtures are made from the Debian images disk once and cached by its
# sum and their recipe: the LUKS2 container on the host (cryptsetup's
# offline encryption needs no device-mapper), the md array in a builder VM
# (the host kernel has no md driver).
# shellcheck disable=SC2154  # CONSOLE, DEB_*, ... come from the sourced files

# ---- fixtures ---------------------------------------------------------------

# stack_fixture_dir KIND RECIPE-FUNCTION: sets STACK_DIR, the cache
# directory of the fixture made by that recipe from the current images disk.
stack_fixture_dir() {
    local key
    key=$({
        echo "$DEB_IMAGES_SHA $LUKS_UUID $LUKS_KEY_TEXT $MD_UUID $2"
        cat "$REPO/qemu-tests/scenarios-stacks.sh"
        case $1 in
        luks) cryptsetup --version ;;
        md) mdadm --version 2>&1 && cat "$REPO/qemu-tests/guest/fixture-md.sh" "$REPO/qemu-tests/guest/init" ;;
        esac
    } | sha256sum | cut -c1-16)
    STACK_DIR="$CACHE/stack-$1-$key"
}

# stack_fixture KIND RECIPE-FUNCTION: builds the fixture once (RECIPE DIR
# makes it in DIR), under a lock: both lanes may ask for it at once. All
# but the newest two fixtures of the kind are removed.
stack_fixture() {
    local kind=$1 recipe=$2
    stack_fixture_dir "$kind" "$recipe"
    (
        flock 9
        # In use: the newest stay.
        [ -f "$STACK_DIR/complete" ] && { touch "$STACK_DIR"; exit 0; }
        log "building the $kind image host (cache $STACK_DIR)"
        rm -rf "$STACK_DIR.tmp"
        mkdir -p "$STACK_DIR.tmp"
        "$recipe" "$STACK_DIR.tmp"
        touch "$STACK_DIR.tmp/complete"
        rm -rf "$STACK_DIR"
        mv "$STACK_DIR.tmp" "$STACK_DIR"
        # The newest two stay (work on two branches at once uses both).
        find "$CACHE" -maxdepth 1 -name "stack-$kind-*" ! -name '*.lock' -printf '%T@ %p\n' | sort -rn | tail -n +3 \
            | cut -d' ' -f2- | xargs -r rm -rf
    ) 9> "$CACHE/stack-$kind.lock"
}

# stack_copy KIND FILE DEST: copies a file of the fixture while no other
# run can remove it.
stack_copy() {
    (
        flock -s 9
        [ -f "$STACK_DIR/complete" ] || die "the $1 fixture $STACK_DIR went away"
        cp --sparse=always "$STACK_DIR/$2" "$3"
    ) 9> "$CACHE/stack-$1.lock"
}

# The images disk in a LUKS2 container. The offline encryption moves the
# data up by half the reduction (the header's room); the disk grows by the
# whole of it, so the filesystem keeps its size. PBKDF2 at its minimum:
# Argon2's default memory and time would dominate a boot under TCG.
luks_recipe() {
    local dir=$1
    cp --sparse=always "$DEB_IMAGES" "$dir/host.img"
    truncate -s +32M "$dir/host.img"
    printf '%s' "$LUKS_KEY_TEXT" > "$dir/key"
    cryptsetup reencrypt --batch-mode --encrypt --type luks2 --uuid "$LUKS_UUID" \
        --reduce-device-size 32M --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --key-file "$dir/key" "$dir/host.img" > "$dir/log" 2>&1 \
        || { cat "$dir/log" >&2; die "cryptsetup could not encrypt the images disk"; }
    rm "$dir/key"
    cryptsetup isLuks --type luks2 "$dir/host.img" || die "the encrypted images disk is no LUKS2 container"
    sha "$dir/host.img" > "$dir/host.img.sha256"
}

# Where the array's data starts on each member (mdadm --data-offset).
MD_DATA_OFFSET=$((1024 * 1024))

# md_data_sha MEMBER: the sha256 of the images filesystem's extent in the
# member's data area (the array's content; the superblock lies before it).
md_data_sha() {
    dd if="$1" bs=4M iflag=skip_bytes,count_bytes skip="$MD_DATA_OFFSET" count="$(stat -c %s "$DEB_IMAGES")" status=none \
        | sha256sum | cut -d' ' -f1
}

# Two RAID1 members (metadata 1.2, superblock 4 KiB in) holding the images
# disk. The host writes the filesystem into each data area; the builder VM
# creates the array over them with --assume-clean, so mdadm writes its
# superblocks and nothing else (no resync of 2 GiB under TCG).
md_recipe() {
    local dir=$1 m extra="$WORK/initramfs-mdadm" size
    size=$(( $(stat -c %s "$DEB_IMAGES") + MD_DATA_OFFSET + 4 * 1024 * 1024 ))
    for m in a b; do
        truncate -s "$size" "$dir/member-$m.img"
        dd if="$DEB_IMAGES" of="$dir/member-$m.img" bs=1M seek=$((MD_DATA_OFFSET / 1048576)) conv=notrunc,sparse status=none \
            || die "cannot write the images filesystem into member $m"
    done
    # The builder: the busybox test initramfs with mdadm, what it links and
    # raid1 appended.
    rm -rf "$extra"
    mkdir -p "$extra"
    copy_with_libs /sbin/mdadm "$extra"
    echo "$MD_UUID" > "$extra/md-uuid"
    cp "$REPO/qemu-tests/guest/fixture-md.sh" "$extra/fixture.sh" || die "no guest fixture-md.sh"
    initrd_with_modules "$WORK/initramfs-mdadm.cpio.gz" "$extra" raid1
    VM_INITRD="$WORK/initramfs-mdadm.cpio.gz" run_vm fixture-md "cowtest=fixture-md-raid1" "$dir/member-a.img" "$dir/member-b.img"
    expect 'COWTEST fixture ready: md raid1'
    for m in a b; do
        mdadm --examine "$dir/member-$m.img" > "$dir/examine-$m" 2>&1 || { cat "$dir/examine-$m" >&2; die "member $m holds no md superblock"; }
        grep -q "Array UUID : $MD_UUID" "$dir/examine-$m" || die "member $m is not of array $MD_UUID"
        grep -q "Raid Level : raid1" "$dir/examine-$m" || die "member $m is not a RAID1 member"
        grep -q "Data Offset : $((MD_DATA_OFFSET / 512)) sectors" "$dir/examine-$m" || die "member $m's data does not start where the host wrote it"
        same "$(md_data_sha "$dir/member-$m.img")" "$DEB_IMAGES_SHA" "the images filesystem in member $m"
    done
}

# ---- scenarios --------------------------------------------------------------

# The Debian root boots from the image host inside the stack; KEYS adds the
# generator's own keys for it. Checks the host from the outside afterwards.
luks_image_host() {
    local tag=$1 keys=$2 disk="$WORK/$1-luks-host.img" pool="$WORK/$1-luks-pool.img"
    stack_fixture luks luks_recipe
    stack_copy luks host.img "$disk"
    stack_copy luks host.img.sha256 "$disk.sha256"
    blank_disk "$pool" 1G
    run_debian "$tag-luks" "$keys $DEB_KEYS" "$disk" "$pool"
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/(mapper|dm-).* generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    expect_clean_poweroff "$tag-luks"
    same "$(sha "$disk")" "$(cat "$disk.sha256")" "the LUKS image host changed"
    # 2 GiB of ciphertext, not sparse: a run would fill /tmp with them.
    rm -f "$disk" "$pool"
}

md_image_host() {
    local tag=$1 keys=$2 m
    stack_fixture md md_recipe
    for m in a b; do stack_copy md "member-$m.img" "$WORK/$tag-md-$m.img"; done
    blank_disk "$WORK/$tag-md-pool.img" 1G
    run_debian "$tag-md" "$keys cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdc" "$WORK/$tag-md-a.img" "$WORK/$tag-md-b.img" "$WORK/$tag-md-pool.img"
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/md.* generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    expect_clean_poweroff "$tag-md"
    # md itself writes its superblocks (event counts, clean flags) when it
    # assembles and stops the array: the filesystem is what must not change.
    for m in a b; do
        same "$(md_data_sha "$WORK/$tag-md-$m.img")" "$DEB_IMAGES_SHA" "the images filesystem on md member $m"
    done
    rm -f "$WORK/$tag-md-a.img" "$WORK/$tag-md-b.img" "$WORK/$tag-md-pool.img"
}

DRACUT_LUKS_KEYS="rd.luks.uuid=$LUKS_UUID"
DRACUT_MD_KEYS="rd.md.uuid=$MD_UUID"

scenario_debian_initramfs_tools_luks_image_host() { DEB_BOOT_INITRD=$DEB_INITRD_STACKS luks_image_host itools ""; }
scenario_debian_initramfs_tools_md_image_host() { DEB_BOOT_INITRD=$DEB_INITRD_STACKS md_image_host itools ""; }
# The key file is in the initramfs: without systemd dracut reads "/" as
# the key's device to mean the initramfs itself; systemd-cryptsetup takes
# a bare path as one inside the initramfs.
scenario_debian_dracut_nosystemd_luks_image_host() {
    DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD luks_image_host dnosd "$DRACUT_LUKS_KEYS rd.luks.key=/etc/cowtest-luks.key:/"
}
scenario_debian_dracut_systemd_luks_image_host() {
    DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD luks_image_host dsd "$DRACUT_LUKS_KEYS rd.luks.key=/etc/cowtest-luks.key"
}
scenario_debian_dracut_nosystemd_md_image_host() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD md_image_host dnosd "$DRACUT_MD_KEYS"; }
scenario_debian_dracut_systemd_md_image_host() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD md_image_host dsd "$DRACUT_MD_KEYS"; }
