#!/bin/sh
# systemd generator in the initramfs: with cowroot= on the command line,
# mount /dev/mapper/NAME as /sysroot whatever root= says (the fstab
# generator turned root= into sysroot.mount; this drop-in replaces What=),
# and run cowroot.service before the root device is waited for.

normal_dir=${1:-/run/systemd/generator}
root=$(/usr/sbin/cowroot root)
[ -n "$root" ] || exit 0

unit=$(/usr/sbin/cowroot root --unit)
mkdir -p "$normal_dir/sysroot.mount.d" "$normal_dir/initrd-root-device.target.d" "$normal_dir/initrd.target.wants"
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
exit 0
