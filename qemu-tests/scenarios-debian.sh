#!/bin/bash
# VM scenarios on a real Debian system booted through initramfs-tools with
# only the user's keys on the command line. Sourced after lib.sh and
# debian.sh; run.sh builds the images once (build_debian_images).
# shellcheck disable=SC2154  # CONSOLE, DEB_*, ... come from the sourced files

DEB_KEYS="cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb"

# The root is the thin device, by-uuid points at it, and it is writable.
expect_cow_root() {
    expect '^COWTEST root /dev/mapper/cowroot rw'
    local by_uuid mapper
    by_uuid=$(sed -n 's/^COWTEST by-uuid \([^ ]*\) mapper .*/\1/p' "$CONSOLE")
    mapper=$(sed -n 's/^COWTEST by-uuid [^ ]* mapper \(.*\)/\1/p' "$CONSOLE")
    if [ -z "$mapper" ] || [ "$by_uuid" != "$mapper" ]; then
        die "/dev/disk/by-uuid/$ROOT_UUID resolves to '$by_uuid', the root device is '$mapper'"
    fi
}

expect_clean_poweroff() {
    expect 'reboot: Power down'
    local secs
    secs=$(shutdown_seconds)
    log "shutdown took $secs s"
    echo "$1 shutdown_seconds=$secs" >> "$WORK/debian-measures"
}

scenario_debian_initramfs_tools_keep_then_reset() {
    local pool="$WORK/deb-keep-pool.img"
    blank_disk "$pool" 1G
    run_debian deb-keep-1 "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/vda \([0-9.]+ GiB\), pool /dev/vdb, generation 1 \(formatted\)'
    expect_cow_root
    expect '^COWTEST marker absent'
    expect '^COWTEST marker written'
    expect '"health":"ok"'
    expect_clean_poweroff boot1
    run_debian deb-keep-2 "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(kept\)'
    expect_cow_root
    expect '^COWTEST marker present: written at boot'
    expect_clean_poweroff boot2
    run_debian deb-keep-3 "$DEB_KEYS cowroot.reset=1" "$DEB_IMAGES" "$pool"
    expect 'generation 2 \(reset\)'
    expect_cow_root
    expect '^COWTEST marker absent'
    expect_clean_poweroff boot3
    debian_images_unchanged
}

scenario_debian_lvm_pool() {
    local pool="$WORK/deb-lvm-pool.img" dev
    blank_disk "$pool" 1G
    # A plain LV made on the host without device-mapper (activation off).
    dev=$(losetup -f --show "$pool")
    (
        export LVM_SUPPRESS_FD_WARNINGS=1
        cfg='global { activation = 0 } backup { backup = 0 archive = 0 }'
        pvcreate -q --config "$cfg" "$dev" && vgcreate -q --config "$cfg" cowvg "$dev" \
            && lvcreate -q --config "$cfg" -an -Zn -L 800M -n pool cowvg
    ) >/dev/null 2>&1
    local rc=$?
    losetup -d "$dev"
    [ $rc = 0 ] || die "could not make the LVM volume"
    run_debian deb-lvm-1 "cowroot=/root.img cowroot.dev=LABEL=images cowpool=cowvg/pool" "$DEB_IMAGES" "$pool"
    expect 'ready: .* pool /dev/mapper/cowvg-pool, generation 1 \(formatted\)'
    expect_cow_root
    expect '^COWTEST marker written'
    expect_clean_poweroff lvm1
    run_debian deb-lvm-2 "cowroot=/root.img cowroot.dev=LABEL=images cowpool=cowvg/pool" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(kept\)'
    expect '^COWTEST marker present'
    expect_clean_poweroff lvm2
    debian_images_unchanged
}

scenario_debian_onfail_shell_stops_in_the_initramfs() {
    local pool="$WORK/deb-shell-pool.img" sha
    blank_disk "$pool" 256M
    sha=$(sha "$pool")
    VM_KERNEL=$DEB_KERNEL VM_INITRD=$DEB_INITRD VM_KERNEL_CMDLINE="console=ttyS0 root=UUID=$ROOT_UUID ro" \
        run_vm_cut deb-shell "cowroot=/missing.img cowroot.dev=LABEL=images cowpool=/dev/vdb" '(initramfs)' 1 \
        "$DEB_IMAGES" "$pool"
    expect 'image /missing.img not found on LABEL=images'
    expect 'cowroot: setting up the copy-on-write root failed'
    expect '\(initramfs\)'
    reject 'systemd\[1\]'
    same "$(sha "$pool")" "$sha" "the pool was touched"
    debian_images_unchanged
}

scenario_debian_onfail_halt_powers_off() {
    local pool="$WORK/deb-halt-pool.img"
    blank_disk "$pool" 256M
    VM_DONE_PATTERN_DEBIAN='powering off \(cowroot.onfail=halt\)' \
        run_debian deb-halt "cowroot=/missing.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.onfail=halt" \
        "$DEB_IMAGES" "$pool"
    expect 'image /missing.img not found on LABEL=images'
    reject 'systemd\[1\]'
    reject 'COWTEST root'
    debian_images_unchanged
}

scenario_debian_onfail_ro_boots_the_origin_read_only() {
    # The pool carries a filesystem, so setup is refused; the fallback then
    # boots the origin itself, read-only at every layer.
    local pool="$WORK/deb-ro-pool.img" sha
    blank_disk "$pool" 256M
    mkfs.ext4 -q -F -L precious "$pool"
    sha=$(sha "$pool")
    run_debian deb-ro "$DEB_KEYS cowroot.onfail=ro" "$DEB_IMAGES" "$pool"
    expect 'cowpool: /dev/vdb holds an ext2/3/4 filesystem'
    expect 'cowroot: /dev/mapper/cowroot is the origin /root.img on /dev/vda, read-only'
    expect '^COWTEST root /dev/mapper/cowroot ro'
    expect '^COWTEST root is read-only'
    expect_clean_poweroff ro
    same "$(sha "$pool")" "$sha" "the refused pool was modified"
    debian_images_unchanged
}
