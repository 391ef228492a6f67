#!/bin/bash
# VM scenarios of the configuration file, /etc/cowroot.conf, and dracut's
# /etc/cmdline.d. The busybox test initramfs is shared by every scenario,
# so the files go into a second cpio archive appended to a copy of it (the
# kernel unpacks concatenated archives), where the initramfs-tools hook and
# dracut's install() put them in a real initramfs.
# shellcheck disable=SC2154  # CONSOLE, WORK, D, ... come from lib.sh and scenarios.sh

# config_initrd NAME: writes $INITRD plus the tree $WORK/NAME-files (made by
# the caller) to $WORK/NAME.cpio.gz and sets CONFIG_INITRD to it.
config_initrd() {
    local tree="$WORK/$1-files"
    CONFIG_INITRD="$WORK/$1.cpio.gz"
    initrd_with "$INITRD" "$tree" "$CONFIG_INITRD" \
        || die "cannot pack the initramfs with $tree"
}

scenario_config_file_alone_turns_cowroot_on_and_the_command_line_wins() {
    fresh_disks config
    local tree="$WORK/config-files"
    rm -rf "$tree"
    mkdir -p "$tree/etc/cmdline.d"
    cat > "$tree/etc/cowroot.conf" << 'CONF'
# cowroot for a test kiosk: the kernel command line has none of this
cowroot=/root.img          # the image, on the disk labelled images
cowroot.dev=LABEL=images
	cowpool=/dev/vdb

cowroot.reset=0            # keep the changes, unless the boot loader says otherwise
cowroot.debug=1
CONF
    # dracut's words for everyone: cowroot takes its own, ignores the rest.
    printf 'rd.lvm=0 rd.md=0\ncowroot.timeout=20 rd.luks=0\n' > "$tree/etc/cmdline.d/50-test.conf"
    config_initrd config
    VM_INITRD=$CONFIG_INITRD run_vm config-1 "root=/dev/vda cowtest=boot,state,root,write,bootlog" \
        "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/vda \(64.0 MiB\), pool /dev/vdb, generation 1 \(formatted\)'
    expect 'COWTEST boot.log: cowroot: keys: cowroot, cowroot.dev, cowpool, cowroot.reset, cowroot.debug from /etc/cowroot.conf; cowroot.timeout from /etc/cmdline.d/50-test.conf$'
    expect 'COWTEST loop loop0 ro=1 file=/run/cowroot/host/root.img'
    expect 'COWTEST root device: /dev/mapper/cowroot rc=0'
    expect 'COWTEST wrote marker'
    # The command line's cowroot.reset=1 wins over the file's 0.
    VM_INITRD=$CONFIG_INITRD run_vm config-2 "root=/dev/vda cowroot.reset=1 cowtest=boot,check,status,bootlog" \
        "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=0'
    expect 'ready: .* generation 2 \(reset\)'
    expect 'COWTEST marker absent'
    expect 'COWTEST boot.log: cowroot: keys: cowroot, cowroot.dev, cowpool, cowroot.debug from /etc/cowroot.conf; cowroot.timeout from /etc/cmdline.d/50-test.conf; cowroot.reset from the kernel command line$'
    expect 'COWTEST status-text: next boot:  keep generation 2 unless the kernel command line still sets cowroot.reset=1 \(this boot had it\)'
    origin_unchanged
}

scenario_config_file_bad_value_is_reported_with_the_file() {
    fresh_disks config-bad
    local tree="$WORK/config-bad-files" pool_sha
    rm -rf "$tree"
    mkdir -p "$tree/etc"
    printf '# the command line names the devices\ncowroot.timeout=20\ncowroot.reset=maybe\n' > "$tree/etc/cowroot.conf"
    config_initrd config-bad
    pool_sha=$(sha "$D/pool.img")
    VM_INITRD=$CONFIG_INITRD run_vm config-bad "$FILE_KEYS cowtest=boot,root,state" "$D/images.img" "$D/pool.img"
    expect 'COWTEST boot rc=1'
    expect 'cowroot: /etc/cowroot.conf:3: cowroot.reset: expected 0 or 1, got "maybe"'
    # The hooks still learn the root device, wait for it and fail closed.
    expect 'COWTEST root device: /dev/mapper/cowroot rc=0'
    expect 'COWTEST dm: 0 devices'
    expect 'COWTEST host mounted: 0'
    same "$(sha "$D/pool.img")" "$pool_sha" "pool touched"
    origin_unchanged
}
