#!/bin/sh
# systemd generator in the initramfs: with cowroot= on the command line,
# mount /dev/mapper/NAME as /sysroot whatever root= says, run
# cowroot.service before the root device is waited for, and let nothing
# wait for, check or mount the device root= names (a stale UUID never
# appears; the origin must not be checked).
#
# Generators run in parallel, so this one never edits the others' output;
# it outranks it: the early directory comes before theirs (normal) in the
# unit search path, a unit file or drop-in there hides one of the same name
# in theirs, and a .wants link to /dev/null there masks theirs. The late
# directory comes last: a unit there is used only when nobody else made one.

normal_dir=${1:-/run/systemd/generator}
early_dir=${2:-/run/systemd/generator.early}
late_dir=${3:-/run/systemd/generator.late}
if root=$(/usr/sbin/cowroot root) && unit=$(/usr/sbin/cowroot root --unit) \
    && replaced=$(/usr/sbin/cowroot root --root-arg-unit); then
    [ -n "$root" ] || exit 0
elif grep -q cowroot /proc/cmdline || [ -e /etc/cowroot.conf ] || cat /etc/cmdline.d/*.conf 2> /dev/null | grep -q cowroot; then
    # The binary is missing or broken and cowroot was asked for: fail
    # closed on a root device that cannot appear, never on root=.
    echo "<3>cowroot: the cowroot binary could not run, so the copy-on-write root cannot be set up; not booting the origin. Reinstall cowroot and regenerate the initramfs." > /dev/kmsg
    root=/dev/mapper/cowroot
    unit=dev-mapper-cowroot.device
    replaced=
else
    exit 0
fi

# never_check FILE WHAT: a filesystem check unit that replaces the one of
# the same name and never runs.
never_check() {
    cat > "$1" << CONF
# cowroot: replaces the unit that checks $2.
[Unit]
Description=File System Check of $2 (skipped: cowroot)
DefaultDependencies=no
ConditionPathExists=/run/cowroot/never-check-the-origin
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/cowroot root
CONF
}

mkdir -p "$normal_dir/sysroot.mount.d" "$normal_dir/initrd.target.wants" \
    "$early_dir/initrd-root-device.target.d" "$late_dir/initrd-root-fs.target.requires"
# The fstab generator's sysroot.mount (from root=) gets our device; with no
# root= there is none, and the late one below is used.
cat > "$normal_dir/sysroot.mount.d/50-cowroot.conf" << CONF
[Unit]
Requires=$unit
After=$unit cowroot.service
[Mount]
What=$root
CONF
cat > "$late_dir/sysroot.mount" << CONF
# cowroot: used only when root= is absent (no fstab generator unit).
[Unit]
Before=initrd-root-fs.target
Requires=$unit
After=$unit cowroot.service
[Mount]
What=$root
Where=/sysroot
Options=ro
CONF
ln -sf ../sysroot.mount "$late_dir/initrd-root-fs.target.requires/sysroot.mount"
# The fstab generator makes initrd-root-device.target require the root=
# device in this drop-in (systemd 252); the root device is ours.
cat > "$early_dir/initrd-root-device.target.d/50-root-device.conf" << CONF
# cowroot: replaces the fstab generator's drop-in, which requires root=.
[Unit]
Requires=$unit
After=$unit
CONF
# systemd-fsck-root checks the device root= names, and is bound to it: it
# waits for a stale one forever, and checks the origin (fsck -a writes;
# after a failed setup the origin is writable again) or the read-only
# fallback device. This one replaces the fstab generator's and never runs:
# the copy-on-write root replays its own journal when it is mounted.
never_check "$early_dir/systemd-fsck-root.service" "the root device"
# dracut's rootfs generator makes initrd.target want the root= device, with
# no timeout (and its initqueue wait for it: cowroot-cmdline.sh). When
# root= comes only from cmdline.d (host-only images), it also writes
# sysroot.mount itself, requiring systemd-fsck@ of that device: this
# instance replaces it and never runs either.
if [ -n "$replaced" ]; then
    mkdir -p "$early_dir/initrd.target.wants"
    ln -sf /dev/null "$early_dir/initrd.target.wants/$replaced"
    never_check "$early_dir/systemd-fsck@${replaced%.device}.service" "the device root= names"
fi
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
