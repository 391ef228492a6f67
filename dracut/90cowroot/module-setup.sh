#!/bin/bash
# shellcheck disable=SC2154  # moddir, systemdsystemunitdir, ... come from dracut
# dracut module for cowroot: copy-on-write root filesystems.
# Works with and without systemd in the initramfs.

# The image's own configuration file, and the running system's command
# line only when that system itself booted with cowroot (a chroot or an
# image builder has its host's command line, which says nothing of the
# image being built).
cowroot_sources() {
    local conf="${dracutsysrootdir-}/etc/cowroot.conf"
    [[ -f $conf ]] && echo "$conf"
    local root
    root=$(cowroot root 2> /dev/null) && [[ -n $root ]] && [[ -b $root ]] && echo /proc/cmdline
    return 0
}

# On a system that booted with cowroot, the device under the image host
# (/run/cowroot/host). dracut finds the root's storage by following its
# slaves, and a loop device has none: a host-only image would lack what
# the image host needs (its LVM, md or LUKS module, its disk driver's
# module when that is not loaded otherwise).
cowroot_image_host() {
    local src
    src=$(awk '$2 == "/run/cowroot/host" { print $1; exit }' /proc/self/mounts 2> /dev/null)
    [[ -b $src ]] && echo "$src"
    return 0
}

# called by dracut
check() {
    # Always, once cowroot is installed: it does nothing without its keys,
    # and an initramfs without it would boot a cowroot= command line from
    # root= (the origin), writable.
    require_binaries cowroot || return 1
    # 90cowroot sorts before 90crypt, 90lvm and 90mdraid, whose checks then
    # see the image host among the host's devices.
    local dev
    dev=$(cowroot_image_host)
    if [[ $hostonly && -n $dev ]]; then
        if declare -F push_host_devs > /dev/null; then
            push_host_devs "$dev"
        else
            host_devs+=("$dev")
        fi
    fi
    return 0
}

# called by dracut
depends() {
    local deps="dm rootfs-block" src
    # A VG/LV pool (cowpool= without a leading slash or tag) needs lvm.
    for src in $(cowroot_sources); do
        if grep -qE '(^|[[:space:]])cowpool=[^/=[:space:]]+/' "$src" 2> /dev/null; then
            deps="$deps lvm"
            break
        fi
    done
    # A network origin (cowroot=nbd://...) needs the network: when
    # nbd-client is installed and dracut has its network module (the
    # dracut-network package). Without that module, asking for it would
    # leave cowroot out of the initramfs altogether.
    if cowroot_nbd_client > /dev/null && compgen -G "${dracutbasedir:-/usr/lib/dracut}/modules.d/[0-9][0-9]network" > /dev/null; then
        deps="$deps network"
    fi
    echo "$deps"
    return 0
}

# The distribution's nbd-client, when installed.
cowroot_nbd_client() {
    local client
    for client in /usr/sbin/nbd-client /sbin/nbd-client; do
        [[ -x ${dracutsysrootdir-}$client ]] && echo "$client" && return 0
    done
    return 1
}

# called by dracut
installkernel() {
    # dm-thin-pool pulls in dm-mod, dm-bufio, dm-bio-prison,
    # dm-persistent-data and libcrc32c; then loop and the filesystems an
    # image host may use; dm-crypt and xts (with the CPU's AES where it has
    # one) for cowroot.crypt=random.
    hostonly='' instmods crc32c_generic dm-thin-pool loop ext4 xfs btrfs vfat exfat squashfs erofs isofs udf ntfs3 dm-crypt xts aesni_intel
    if cowroot_nbd_client > /dev/null; then
        hostonly='' instmods nbd
    fi
}

# called by dracut
install() {
    inst_binary /usr/sbin/cowroot
    local client
    if client=$(cowroot_nbd_client); then
        inst_binary "$client"
    fi
    inst_hook cmdline 20 "$moddir/cowroot-cmdline.sh"
    inst_script "$moddir/cowroot-setup.sh" /sbin/cowroot-setup
    inst_rules 12-cowroot.rules
    # cowroot's own /run/initramfs/shutdown (src/shutdown.rs) tears the
    # devices down; this hook only serves dracut's shutdown, if that runs.
    inst_hook shutdown 40 "$moddir/cowroot-shutdown.sh"
    # The configuration file (README: "Configuration file"), read by the
    # binary at boot; editing it takes effect after dracut -f.
    if [[ -f ${dracutsysrootdir-}/etc/cowroot.conf ]]; then
        inst_simple /etc/cowroot.conf
    fi
    if dracut_module_included "systemd"; then
        inst_simple "$moddir/cowroot.service" "$systemdsystemunitdir/cowroot.service"
        inst_script "$moddir/cowroot-generator.sh" "$systemdutildir/system-generators/cowroot-generator"
    fi
    dracut_need_initqueue
}
