#!/bin/sh
# dracut cmdline hook (sourced, after root= parsing, before block parsing):
# when cowroot= is present, the root is /dev/mapper/NAME whatever root=
# says. The cowroot binary reads and validates the command line; this hook
# only sees the device path it prints.

if cowroot_root=$(/usr/sbin/cowroot root); then
    :
elif getcmdline | grep -q cowroot || [ -e /etc/cowroot.conf ]; then
    # The binary is missing or broken, and cowroot was asked for (a mention
    # is enough; no value is read): fail closed on a root device that
    # cannot appear, never on root= (the origin).
    warn "cowroot: the cowroot binary could not run, so the copy-on-write root cannot be set up; not booting the origin. Reinstall cowroot and regenerate the initramfs."
    cowroot_root=/dev/mapper/cowroot
else
    cowroot_root=
fi
if [ -n "$cowroot_root" ]; then
    # shellcheck disable=SC2034  # read by dracut's root handling
    root="block:$cowroot_root"
    # shellcheck disable=SC2034
    rootok=1
    # dracut's systemd rootfs generator waits in the initqueue for the device
    # root= names ("finished" hook, no timeout): a stale UUID never appears.
    # The hook is rewritten to wait for ours, not removed: the generator
    # makes it again at every daemon-reload when it is missing. The binary
    # names it (no shell here reads root=); it prints nothing when root= is
    # ours or absent.
    if cowroot_hook=$(/usr/sbin/cowroot root --root-arg-hook) && [ -n "$cowroot_hook" ]; then
        cowroot_hooks=${hookdir:-/lib/dracut/hooks}
        if [ -e "$cowroot_hooks/initqueue/finished/devexists-$cowroot_hook.sh" ]; then
            echo "[ -e \"$cowroot_root\" ]" > "$cowroot_hooks/initqueue/finished/devexists-$cowroot_hook.sh"
        fi
        rm -f "$cowroot_hooks/emergency/80-$cowroot_hook.sh"
    fi
    # With systemd, cowroot.service sets up the root; without, the
    # initqueue does, in a job that returns at once while a device is
    # missing (a blocking job would starve cryptroot-ask and lvm_scan, and
    # the devices on LUKS, LVM or md would never appear); the timeout hook
    # is the last try.
    if [ -z "$DRACUT_SYSTEMD" ]; then
        # zz-: after cryptroot-ask, lvm_scan and mdraid jobs in each pass.
        /sbin/initqueue --settled --unique --name zz-cowroot /sbin/cowroot-setup
        /sbin/initqueue --timeout --unique --name zz-cowroot /sbin/cowroot-setup --final
    fi
fi
# An origin served over the network (cowroot=nbd://...): dracut's network
# module brings the network up (ip=, DHCP without it) once it is needed.
if [ -n "$(/usr/sbin/cowroot network 2> /dev/null)" ]; then
    mkdir -p /etc/cmdline.d
    echo rd.neednet=1 > /etc/cmdline.d/90-cowroot-network.conf
fi
unset cowroot_root cowroot_hook cowroot_hooks
