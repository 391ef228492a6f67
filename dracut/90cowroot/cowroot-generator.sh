#!/bin/sh
# systemd generator in the initramfs: with cowroot= on the command line,
# mount /dev/mapper/NAME as /sysroot whatever root= says (the fstab
# generator turned root= into sysroot.mount; this drop-in replaces What=),
# and run cowroot.service before the root device is waited for.

normal_dir=${1:-/run/systemd/generator}
if root=$(/usr/sbin/cowroot root) && unit=$(/usr/sbin/cowroot root --unit); then
    [ -n "$root" ] || exit 0
elif grep -q cowroot /proc/cmdline || [ -e /etc/cowroot.conf ] || cat /etc/cmdline.d/*.conf 2> /dev/null | grep -q cowroot; then
    # The binary is missing or broken and cowroot was asked for: fail
    # closed on a root device that cannot appear, never on root=.
    echo "<3>cowroot: the cowroot binary could not run, so the copy-on-write root cannot be set up; not booting the origin. Reinstall cowroot and regenerate the initramfs." > /dev/kmsg
    root=/dev/mapper/cowroot
    unit=dev-mapper-cowroot.device
else
    exit 0
fi

mkdir -p "$normal_dir/sysroot.mount.d" "$normal_dir/initrd-root-device.target.d" "$normal_dir/initrd.target.wants" \
    "$normal_dir/systemd-fsck-root.service.d"
# systemd-fsck-root checks the device root= names: the origin, which must
# never be written (fsck -a writes; after a failed setup the origin is
# writable again), or a read-only device it cannot check. The
# copy-on-write root replays its own journal when it is mounted.
cat > "$normal_dir/systemd-fsck-root.service.d/50-cowroot.conf" << CONF
[Unit]
ConditionPathExists=/run/cowroot/never-check-the-origin
CONF
cat > "$normal_dir/sysroot.mount.d/50-cowroot.conf" << CONF
[Unit]
Requires=$unit
After=$unit cowroot.service
[Mount]
What=$root
CONF
cat > "$normal_dir/initrd-root-device.target.d/50-cowroot.conf" << CONF
[Unit]
Requires=$unit
After=$unit
CONF
ln -sf /usr/lib/systemd/system/cowroot.service "$normal_dir/initrd.target.wants/cowroot.service"
# No 90 s job timeout on the root device: cowroot.service bounds the wait
# (cowroot.timeout, counted after cryptsetup.target) and opens the shell on
# failure; a device timeout would pull emergency.target in under that shell.
mkdir -p "$normal_dir/$unit.d"
cat > "$normal_dir/$unit.d/50-cowroot.conf" << CONF
[Unit]
JobRunningTimeoutSec=infinity
CONF
exit 0
