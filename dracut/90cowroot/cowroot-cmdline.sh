#!/bin/sh
# dracut cmdline hook (sourced, after root= parsing, before block parsing):
# when cowroot= is present, the root is /dev/mapper/NAME whatever root=
# says. The cowroot binary reads and validates the command line; this hook
# only sees the device path it prints.

cowroot_root=$(/usr/sbin/cowroot root)
if [ -n "$cowroot_root" ]; then
    # shellcheck disable=SC2034  # read by dracut's root handling
    root="block:$cowroot_root"
    # shellcheck disable=SC2034
    rootok=1
    # With systemd, cowroot.service sets up the root; without, the
    # initqueue does once udev has settled.
    if [ -z "$DRACUT_SYSTEMD" ]; then
        /sbin/initqueue --settled --onetime --unique --name cowroot /sbin/cowroot-setup
    fi
fi
unset cowroot_root
