#!/bin/sh
# Sets up the copy-on-write root and follows cowroot.onfail when that
# fails. Without systemd it runs from the initqueue again and again:
# `cowroot boot --no-wait` does nothing and exits 3 while a device is
# missing, so the jobs that bring devices up (cryptroot-ask, lvm_scan, md)
# get their turn; cowroot.timeout bounds the calls together. With systemd
# (cowroot.service) it waits itself, up to cowroot.timeout. Safe to run
# again: cowroot does nothing when the root device exists already. No
# command-line value is ever read here; the binary prints only what it made.

# shellcheck source=/dev/null
type emergency_shell > /dev/null 2>&1 || . /lib/dracut-lib.sh

case "$1" in
--wait)
    # cowroot.service (systemd): it waits itself, up to cowroot.timeout.
    /usr/sbin/cowroot boot
    ;;
--final)
    # The initqueue's timeout hook: one more look, without blocking it.
    /usr/sbin/cowroot boot --last-try
    ;;
*)
    /usr/sbin/cowroot boot --no-wait
    ;;
esac
case $? in
0)
    # Done: no more calls from the initqueue.
    rm -f "${hookdir:-/lib/dracut/hooks}/initqueue/settled/zz-cowroot.sh" \
        "${hookdir:-/lib/dracut/hooks}/initqueue/timeout/zz-cowroot.sh"
    exit 0
    ;;
3)
    # A device is not there yet: the initqueue calls again.
    exit 0
    ;;
esac
rm -f "${hookdir:-/lib/dracut/hooks}/initqueue/settled/zz-cowroot.sh" \
    "${hookdir:-/lib/dracut/hooks}/initqueue/timeout/zz-cowroot.sh"

case "$(/usr/sbin/cowroot onfail)" in
    halt)
        warn "cowroot: setting up the copy-on-write root failed; powering off (cowroot.onfail=halt)"
        /usr/sbin/cowroot poweroff
        ;;
    ro)
        # fsck cannot check a read-only device; without systemd, dracut
        # skips it with rd.skipfsck (with systemd, cowroot-generator's
        # systemd-fsck-root never runs).
        mkdir -p /etc/cmdline.d
        echo rd.skipfsck > /etc/cmdline.d/90-cowroot-ro.conf
        if /usr/sbin/cowroot boot --read-only-origin; then
            warn "cowroot: setup failed; booting the origin read-only (cowroot.onfail=ro)"
            exit 0
        fi
        rm -f /etc/cmdline.d/90-cowroot-ro.conf
        emergency_shell -n cowroot "cowroot: setup failed and the origin cannot be booted read-only either (see the messages above). Check the devices named by cowroot= and cowroot.dev=; to try again after fixing it here, run /sbin/cowroot-setup --final."
        ;;
    *)
        emergency_shell -n cowroot "cowroot: setting up the copy-on-write root failed (see the message above). Check the devices named by cowroot=, cowroot.dev= and cowpool=; boot with cowroot.debug=1 for details, or with cowroot.reset=1 if the image was replaced. Leaving this shell does not boot the origin; to try again after fixing it here, run /sbin/cowroot-setup --final."
        ;;
esac
exit 1
