#!/bin/bash
# A real Debian bookworm system as the origin: built with mmdebstrap,
# cowroot installed into it as a user would (its .deb, whose trigger
# regenerates the initramfs), then turned into an image file on an
# "images" disk. Sourced after lib.sh.
# shellcheck disable=SC2034  # variables are used by the sourcing scripts

DEBIAN_SUITE=bookworm
# cryptsetup and mdadm: the storage-stack scenarios put the image host on
# LUKS and on md RAID1, which each generator unlocks or assembles with them.
DEBIAN_PACKAGES="systemd-sysv,udev,linux-image-amd64,initramfs-tools,dracut-core,lvm2,e2fsprogs,kmod,busybox,cryptsetup-bin,cryptsetup-initramfs,mdadm,nbd-client"
ROOT_UUID=5eedc0de-0000-4000-8000-00000000c0de
# The storage-stack fixtures (scenarios-stacks.sh): the LUKS container's
# UUID and key (a key file in the test initramfs), the md array's UUID.
LUKS_UUID=5eedc0de-0000-4000-8000-00000000c1c1
LUKS_KEY_TEXT=cowroot-test-luks-key
MD_UUID=5eedc0de:00004000:80000000:0000c2c2
DEBIAN_TIMEOUT=${DEBIAN_TIMEOUT:-400}

# The Debian mirror this machine's apt uses (never written into the repo).
debian_mirror() {
    local uri
    uri=$(awk '
        /^URIs:/ { uris = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
        /^$/ { if (ok && uris != "") { print uris; exit } ok = 0; uris = "" }
        END { if (ok && uris != "") print uris }
    ' suite="$DEBIAN_SUITE" /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk -v suite="$DEBIAN_SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "no $DEBIAN_SUITE mirror in the apt sources"
    printf '%s\n' "$uri"
}

# Runs a command inside the root tree with /proc, /sys and /dev, in a
# private mount namespace so nothing stays mounted on the host.
chroot_run() {
    local root=$1
    shift
    # shellcheck disable=SC2016  # expanded by the inner shell
    unshare --mount --fork -- sh -ec '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount -t sysfs sys "$root/sys"
        mount --rbind /dev "$root/dev"
        exec chroot "$root" "$@"
    ' sh "$root" "$@"
}

# The package set as mmdebstrap left it, cached by its inputs.
ensure_debian_base() {
    local key
    key=$(printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_PACKAGES" | sha256sum | cut -c1-16)
    DEBIAN_BASE="$CACHE/debian-base-$key.tar"
    [ -f "$DEBIAN_BASE" ] && return 0
    # The newest two stay (700 MB each; two branches may differ).
    find "$CACHE" -maxdepth 1 -name 'debian-base-*.tar' -printf '%T@ %p\n' | sort -rn | tail -n +2 | cut -d' ' -f2- \
        | xargs -r rm -f
    log "building the Debian $DEBIAN_SUITE test root (mmdebstrap, about 90 s)"
    mkdir -p "$CACHE"
    mmdebstrap --quiet --format=tar --variant=minbase --include="$DEBIAN_PACKAGES" \
        "$DEBIAN_SUITE" "$DEBIAN_BASE.tmp" "$(debian_mirror)" \
        || die "mmdebstrap failed"
    mv "$DEBIAN_BASE.tmp" "$DEBIAN_BASE"
}

# What the test root runs at the end of every boot: report to the serial
# console, then power off.
write_test_service() {
    local root=$1
    mkdir -p "$root/usr/local/sbin" "$root/etc/systemd/system/multi-user.target.wants"
    cat > "$root/usr/local/sbin/cowroot-test-report" <<SCRIPT
#!/bin/sh
say() { echo "COWTEST \$*" > /dev/ttyS0; }
up() { cut -d' ' -f1 /proc/uptime; }
t0=\$(up)
udevadm settle -t 30
t1=\$(up)
say "root \$(findmnt -no SOURCE /) \$(findmnt -no OPTIONS / | cut -d, -f1)"
# Device numbers: /dev/mapper/NAME may be a node cowroot made itself (when
# udev's dm rules were missing), not udev's link to dm-N.
say "by-uuid \$(stat -Lc %t:%T /dev/disk/by-uuid/$ROOT_UUID) mapper \$(stat -Lc %t:%T \$(findmnt -no SOURCE /))"
marker=/var/lib/cowroot-test/marker
if [ -f \$marker ]; then say "marker present: \$(cat \$marker)"; else say "marker absent"; fi
if mkdir -p /var/lib/cowroot-test 2>/dev/null && echo "written at boot \$(cat /proc/sys/kernel/random/boot_id)" > \$marker 2>/dev/null && sync; then
    say "marker written"
else
    say "root is read-only"
fi
t2=\$(up)
say "status \$(cowroot status --json 2>&1 | tr '\n' ' ')"
# The last thing a unit said, not systemd's lines about it (a slow boot
# adds "Consumed N CPU time" once a unit used more than a second).
unit_said() {
    journalctl -b -u "\$1" -o cat | grep -v -e '^Start' -e '^Finish' -e 'Deactivated' -e 'Consumed .* CPU time' | tail -n 1
}
say "cleanup: \$(unit_said cowroot-cleanup.service)"
say "grow: \$(unit_said cowroot-grow.service)"
say "hydrate: \$(unit_said cowroot-hydrate.service)"
say "root size: \$(df -k / | awk 'NR == 2 { print \$2 }') KiB"
# A persistent volume (cowroot.volume=home:...:/home), when one is mounted.
say "volumes: \$(unit_said 'cowroot-volume@*')"
if mountpoint -q /home; then
    say "home: \$(findmnt -no SOURCE,FSTYPE /home)"
    if [ -f /home/kept ]; then say "home file present: \$(cat /home/kept)"; else say "home file absent"; fi
    echo "home written at boot \$(cat /proc/sys/kernel/random/boot_id)" > /home/kept && sync && say "home file written"
else
    say "home: not mounted"
fi
# Commands a scenario asks for (cowtest.ops=a,b:ARG on the command line).
ops=\$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^cowtest.ops=//p' | tr ',' ' ')
for op in \$ops; do
    case \$op in
    ckcreate:*)
        say "checkpointed marker: \$(cat \$marker)"
        say "checkpoint: \$(cowroot checkpoint create "\${op#ckcreate:}" 2>&1 | tr '\n' ' ')"
        ;;
    ckdelete:*) say "checkpoint delete: \$(cowroot checkpoint delete "\${op#ckdelete:}" 2>&1 | tr '\n' ' ')" ;;
    cklist) say "checkpoint-list: \$(cowroot checkpoint list 2>&1 | tr '\n' ' ')" ;;
    rollback:*) say "rollback: \$(cowroot rollback "\${op#rollback:}" 2>&1 | tr '\n' ' ')" ;;
    attach)
        # An administrator's backup disk (vdc), its writes on a pool file:
        # attached, written, detached; attached again (the write is kept),
        # then with --reset (it is gone).
        truncate -s 256M /var/tmp/backup.pool
        mkdir -p /mnt/backup
        say "attach: \$(cowroot attach /dev/vdc --pool /var/tmp/backup.pool --name backup 2>&1 | tr '\n' ' ')"
        if mount /dev/mapper/backup /mnt/backup; then
            say "attached file: \$(cat /mnt/backup/data)"
            echo "changed at boot \$(cat /proc/sys/kernel/random/boot_id)" > /mnt/backup/data
            umount /mnt/backup
        fi
        say "list: \$(cowroot list 2>&1 | tr '\n' ' ')"
        say "detach: \$(cowroot detach backup 2>&1 | tr '\n' ' ')"
        say "attach again: \$(cowroot attach /dev/vdc --pool /var/tmp/backup.pool --name backup 2>&1 | head -n 1)"
        mount -o ro /dev/mapper/backup /mnt/backup && say "attached file again: \$(cat /mnt/backup/data)" && umount /mnt/backup
        cowroot detach backup > /dev/null
        say "attach reset: \$(cowroot attach /dev/vdc --pool /var/tmp/backup.pool --name backup --reset 2>&1 | head -n 1)"
        mount -o ro /dev/mapper/backup /mnt/backup && say "attached file after reset: \$(cat /mnt/backup/data)" && umount /mnt/backup
        say "detach again: \$(cowroot detach backup 2>&1 | tr '\n' ' ')"
        say "pool file loop after detach: [\$(losetup -j /var/tmp/backup.pool)]"
        ;;
    commit:*)
        # The backup disk's state, changed on a pool file, committed into a
        # new image file on a writable disk. (The whole 1.6 GB root would
        # take over ten minutes to copy and hash under emulation; the
        # busybox scenario commits and boots a root.)
        truncate -s 256M /var/tmp/commit.pool
        mkdir -p /mnt/commits /mnt/backup
        cowroot attach /dev/vdc --pool /var/tmp/commit.pool --name tocommit > /dev/null 2>&1
        if mount /dev/mapper/tocommit /mnt/backup; then
            echo committed > /mnt/backup/data
            umount /mnt/backup
        fi
        if mount LABEL=commits /mnt/commits; then
            cowroot commit --from tocommit --to "/mnt/commits/\${op#commit:}" > /tmp/commit.out 2> /tmp/commit.err
            say "commit rc=\$? \$(tr '\n' ' ' < /tmp/commit.out)"
            say "commit stderr: \$(grep -v '^commit: ' /tmp/commit.err | tr '\n' ' ')"
            say "commit progress: \$(grep -c '^commit: ' /tmp/commit.err) lines, last: \$(grep '^commit: ' /tmp/commit.err | tail -n 1)"
            say "commit sha256: \$(sha256sum "/mnt/commits/\${op#commit:}" | cut -d' ' -f1)"
            umount /mnt/commits
        fi
        say "commit detach: \$(cowroot detach tocommit 2>&1 | tr '\n' ' ')"
        ;;
    grub:*)
        # The boot menu entries for that image, as update-grub would make
        # them (grub-mkconfig exports GRUB_CMDLINE_LINUX), onto the disk.
        echo "cowroot=/\${op#grub:} cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.keep=1" > /etc/cowroot.conf
        mkdir -p /mnt/commits
        if mount LABEL=commits /mnt/commits; then
            GRUB_CMDLINE_LINUX="console=ttyS0 systemd.gpt_auto=0" /etc/grub.d/42_cowroot > /mnt/commits/grub.cfg 2> /tmp/grub.err
            say "grub rc=\$? entries \$(grep -c '^menuentry' /mnt/commits/grub.cfg) stderr [\$(tr '\n' ' ' < /tmp/grub.err)]"
            umount /mnt/commits
        fi
        ;;
    *) say "unknown op \$op" ;;
    esac
done
check=\$(cowroot status --check 2>&1); rc=\$?
say "check rc=\$rc \$check"
say "check timer: \$(systemctl is-enabled cowroot-check.timer 2>&1) \$(systemctl is-active cowroot-check.timer 2>&1)"
t3=\$(up)
# systemctl's status too: a call that timed out would print no units.
failed=\$(systemctl list-units --failed --plain --no-legend); rc=\$?
say "failed units: \$(printf '%s' "\$failed" | awk '{print \$1}' | tr '\n' ' ')"
say "failed units listed: rc=\$rc"
say "times: started \$t0 settled \$t1 marker \$t2 status \$t3 units \$(up)"
say "poweroff at \$(up)"
systemctl --no-block poweroff
SCRIPT
    chmod 0755 "$root/usr/local/sbin/cowroot-test-report"
    cat > "$root/etc/systemd/system/cowroot-test.service" <<'UNIT'
[Unit]
Description=cowroot test report
After=local-fs.target systemd-remount-fs.service cowroot-cleanup.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cowroot-test-report
[Install]
WantedBy=multi-user.target
UNIT
    ln -sf ../cowroot-test.service "$root/etc/systemd/system/multi-user.target.wants/cowroot-test.service"
}

# Builds the images disk holding the Debian root as /root.img. KIND names
# the initramfs generator (initramfs-tools). Sets DEB_KERNEL, DEB_INITRD,
# DEB_IMAGES and DEB_IMAGES_SHA.
build_debian_images() {
    local kind=$1 root deb
    ensure_debian_base
    (cd "$REPO" && make --quiet deb >/dev/null) || die "make deb failed"
    deb=$(find "$REPO/target" -maxdepth 1 -name 'cowroot_*_amd64.deb' | head -n 1)
    root="$WORK/debian-$kind"
    rm -rf "$root" "$root.out"
    mkdir -p "$root" "$root.out"
    tar -xf "$DEBIAN_BASE" -C "$root"

    echo cowroot-test > "$root/etc/hostname"
    # A fixed machine id: otherwise every fresh root (every reset) runs
    # systemd-machine-id-commit, which under TCG can outlast its timeout
    # and show up as a failed unit that has nothing to do with cowroot.
    echo 5eedc0de00004000800000000000c0de > "$root/etc/machine-id"
    echo "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1" > "$root/etc/fstab"
    # It starts the gettys of tty2-6 through systemctl, whose call timed out
    # on a loaded CI machine and showed as a failed unit; the tests use the
    # serial console only.
    ln -sf /dev/null "$root/etc/systemd/system/getty-static.service"
    # Debian's mdadm runs dracut at every shutdown of a system that has
    # dracut, to build an md-aware shutdown initramfs in /run/initramfs.
    # Under TCG that build outlasted its 90 s stop timeout and was killed,
    # at every shutdown of every scenario (this root has dracut for the
    # dracut images), which would add 90 s to each of some sixty boots. On
    # real hardware it takes seconds; what it unpacks with cpio -id should
    # not replace cowroot's newer /shutdown (cpio keeps a newer file), which
    # no scenario checks.
    ln -sf /dev/null "$root/etc/systemd/system/mdadm-shutdown.service"
    # Under -cpu max a Debian root may stall ~80 s loading kvm_amd.
    printf 'blacklist kvm\nblacklist kvm_amd\nblacklist kvm_intel\n' > "$root/etc/modprobe.d/test-vm-no-kvm.conf"
    # The LUKS fixture's key: in every dracut image (install_items), and in
    # the storage-stack initramfs-tools image (build_stacks_initramfs).
    printf '%s' "$LUKS_KEY_TEXT" > "$root/etc/cowtest-luks.key"
    chmod 0400 "$root/etc/cowtest-luks.key"
    echo 'install_items+=" /etc/cowtest-luks.key "' > "$root/etc/dracut.conf.d/test-vm-luks.conf"
    # A small initramfs builds in seconds; cowroot's hook adds what it needs.
    echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/test-vm-small"
    printf 'virtio_pci\nvirtio_blk\next4\n' >> "$root/etc/initramfs-tools/modules"
    write_test_service "$root"

    # Install as a user would; the trigger regenerates the initramfs.
    # nbd-client's own initramfs-tools hook adds every network driver
    # (twice the initramfs, slower boots under TCG): off for the test
    # root's usual initramfs, on for initrd-nbd.img (build_nbd_initramfs),
    # which the network-origin scenario boots as a user's would be.
    chmod -x "$root/usr/share/initramfs-tools/hooks/nbd"
    cp "$deb" "$root/tmp/cowroot.deb"
    chroot_run "$root" dpkg -i /tmp/cowroot.deb > "$WORK/debian-$kind-install.log" 2>&1 \
        || { cat "$WORK/debian-$kind-install.log" >&2; die "installing the package failed"; }
    grep -q "update-initramfs" "$WORK/debian-$kind-install.log" || die "installing did not regenerate the initramfs"
    local installed
    for installed in usr/share/man/man8/cowroot.8 usr/share/man/man7/cowroot.cmdline.7 etc/grub.d/42_cowroot \
        usr/share/bash-completion/completions/cowroot usr/share/zsh/vendor-completions/_cowroot \
        usr/lib/systemd/system/cowroot-volume@.service usr/lib/systemd/system-generators/cowroot-volume-generator; do
        [ -e "$root/$installed" ] || die "the package did not install /$installed"
    done
    # cryptsetup-initramfs orders its local-top script after all others: a
    # script of ours naming it as a prereq made a loop.
    if grep -A3 'input contains a loop' "$WORK/debian-$kind-install.log" >&2; then
        die "the initramfs-tools scripts' prereqs make a loop"
    fi
    chroot_run "$root" sh -c 'lsinitramfs /boot/initrd.img-*' > "$root.out/contents" || die "lsinitramfs failed"
    for want in usr/sbin/cowroot scripts/local-top/cowroot scripts/local-block/cowroot scripts/cowroot-setup usr/lib/udev/rules.d/12-cowroot.rules dm-thin-pool.ko loop.ko; do
        grep -q "$want" "$root.out/contents" || die "the initramfs lacks $want"
    done
    # A system whose boot loader passes cowroot= refuses to remove it (the
    # next boot would mount root=, the origin, read-write), unless forced.
    mkdir -p "$root/etc/kernel"
    echo "root=UUID=$ROOT_UUID ro cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb" > "$root/etc/kernel/cmdline"
    if chroot_run "$root" dpkg -r cowroot > "$WORK/debian-$kind-refused.log" 2>&1; then
        die "removing cowroot from a system whose boot loader passes cowroot= was not refused"
    fi
    grep -q 'refusing to remove cowroot: this system uses it (cowroot= in /etc/kernel/cmdline)' \
        "$WORK/debian-$kind-refused.log" || { cat "$WORK/debian-$kind-refused.log" >&2; die "the refusal does not say why"; }
    rm -f "$root/etc/kernel/cmdline"
    # Otherwise removing the package leaves an initramfs without cowroot;
    # then install it again.
    chroot_run "$root" dpkg -r cowroot > "$WORK/debian-$kind-remove.log" 2>&1 || die "removing the package failed"
    chroot_run "$root" sh -c 'lsinitramfs /boot/initrd.img-*' > "$root.out/contents-removed" \
        || die "lsinitramfs after removal failed"
    # An empty listing would pass the check below: it must be a real one.
    grep -qx 'scripts/local' "$root.out/contents-removed" || die "the initramfs listing after removal is empty or broken"
    if grep -qE 'usr/sbin/cowroot|local-top/cowroot|local-block/cowroot|cowroot-setup|12-cowroot' "$root.out/contents-removed"; then
        die "the initramfs still holds cowroot after removal"
    fi
    grep -q 'Processing triggers for initramfs-tools' "$WORK/debian-$kind-remove.log" \
        || die "removing did not regenerate the initramfs"
    chroot_run "$root" dpkg -i /tmp/cowroot.deb >> "$WORK/debian-$kind-install.log" 2>&1 || die "reinstalling failed"
    rm -f "$root/tmp/cowroot.deb"
    build_stacks_initramfs "$root"
    build_nbd_initramfs "$root"
    build_dracut_images "$root"

    DEB_KERNEL=$(find "$root/boot" -name 'vmlinuz-*' | head -n 1)
    DEB_INITRD=$(find "$root/boot" -name 'initrd.img-*' | head -n 1)
    cp "$DEB_KERNEL" "$DEB_INITRD" "$root"/boot/dracut-{nosystemd,systemd,hostonly}.img "$root/boot/initrd-stacks.img" "$root/boot/initrd-nbd.img" "$root.out/"
    DEB_KERNEL="$root.out/$(basename "$DEB_KERNEL")"
    DEB_INITRD="$root.out/$(basename "$DEB_INITRD")"
    DEB_INITRD_STACKS="$root.out/initrd-stacks.img"
    DEB_INITRD_NBD="$root.out/initrd-nbd.img"
    DRACUT_INITRD_NOSYSTEMD="$root.out/dracut-nosystemd.img"
    DRACUT_INITRD_SYSTEMD="$root.out/dracut-systemd.img"
    DRACUT_INITRD_HOSTONLY="$root.out/dracut-hostonly.img"

    # Under emulation the guest kernel sometimes stalls for minutes (see
    # the README), holding a unit's start past systemd's 90 s, and the
    # scenarios fail on any failed unit. The booted system only: the
    # initramfs images are built already, their timeouts are the tests'.
    mkdir -p "$root/etc/systemd/system.conf.d"
    printf '[Manager]\nDefaultTimeoutStartSec=300s\n' > "$root/etc/systemd/system.conf.d/test-vm-slow.conf"
    mkdir -p "$root.out/images"
    mkfs.ext4 -q -F -U "$ROOT_UUID" -L debroot -d "$root" "$root.out/images/root.img" 1600M \
        || die "mkfs.ext4 of the Debian root image failed"
    rm -rf "$root"
    # The same root as a disk of its own, for device-origin scenarios.
    DEB_ROOT_IMG="$root.out/root-disk.img"
    cp --sparse=always "$root.out/images/root.img" "$DEB_ROOT_IMG" || die "cannot copy the root image"
    DEB_ROOT_SHA=$(sha "$DEB_ROOT_IMG")
    DEB_IMAGES="$root.out/images.img"
    rm -f "$DEB_IMAGES"
    mkfs.ext4 -q -F -L images -d "$root.out/images" "$DEB_IMAGES" 2G || die "mkfs.ext4 of the images disk failed"
    rm -rf "$root.out/images"
    DEB_IMAGES_SHA=$(sha "$DEB_IMAGES")
}

# An initramfs-tools image that knows the storage-stack fixtures, as a
# system whose image host is on LUKS and md has it: a crypttab entry with
# the `initramfs` option and its key file (cryptsetup-initramfs copies keys
# that match KEYFILE_PATTERN), and mdadm.conf naming the array. Built into
# /boot/initrd-stacks.img; the files are removed again, so the booted root
# (and every other image) knows nothing of devices its scenarios lack.
# The initramfs of a machine whose origin is served over the network: the
# test root's, with nbd-client's own hook on (the network drivers).
build_nbd_initramfs() {
    local root=$1 kver contents
    kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n 1)
    chmod +x "$root/usr/share/initramfs-tools/hooks/nbd"
    chroot_run "$root" mkinitramfs -o /boot/initrd-nbd.img "$kver" > "$WORK/initrd-nbd.log" 2>&1 \
        || { cat "$WORK/initrd-nbd.log" >&2; die "mkinitramfs of the network-origin initramfs failed"; }
    chmod -x "$root/usr/share/initramfs-tools/hooks/nbd"
    contents=$(chroot_run "$root" lsinitramfs /boot/initrd-nbd.img)
    for want in usr/sbin/nbd-client nbd.ko virtio_net.ko bin/ipconfig; do
        grep -q "$want" <<< "$contents" || die "the network-origin initramfs lacks $want"
    done
}

build_stacks_initramfs() {
    local root=$1 kver contents
    kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n 1)
    local f
    for f in etc/mdadm/mdadm.conf etc/crypttab etc/cryptsetup-initramfs/conf-hook; do
        if [ -e "$root/$f" ]; then cp -p "$root/$f" "$root/$f.orig"; else : > "$root/$f.orig"; fi
    done
    echo "ARRAY /dev/md/cowhost metadata=1.2 UUID=$MD_UUID" >> "$root/etc/mdadm/mdadm.conf"
    echo "cowhost UUID=$LUKS_UUID /etc/cowtest-luks.key luks,initramfs" >> "$root/etc/crypttab"
    echo "KEYFILE_PATTERN=/etc/cowtest-luks.key" >> "$root/etc/cryptsetup-initramfs/conf-hook"
    chroot_run "$root" mkinitramfs -o /boot/initrd-stacks.img "$kver" > "$WORK/initrd-stacks.log" 2>&1 \
        || { cat "$WORK/initrd-stacks.log" >&2; die "mkinitramfs of the storage-stack initramfs failed"; }
    if grep -A3 'input contains a loop' "$WORK/initrd-stacks.log" >&2; then
        die "the initramfs-tools scripts' prereqs make a loop"
    fi
    for f in etc/mdadm/mdadm.conf etc/crypttab etc/cryptsetup-initramfs/conf-hook; do
        mv "$root/$f.orig" "$root/$f"
    done
    contents=$(chroot_run "$root" lsinitramfs /boot/initrd-stacks.img)
    for want in cryptroot/keyfiles/cowhost.key sbin/mdadm dm-crypt.ko raid1.ko; do
        grep -q "$want" <<< "$contents" || { cat "$WORK/initrd-stacks.log" >&2; die "the storage-stack initramfs lacks $want"; }
    done
    # What the boot reads: the array and the crypttab entry.
    chroot_run "$root" sh -c 'rm -rf /tmp/stacks && unmkinitramfs /boot/initrd-stacks.img /tmp/stacks' \
        || die "cannot unpack the storage-stack initramfs"
    grep -q "UUID=$MD_UUID" "$root/tmp/stacks/etc/mdadm/mdadm.conf" || die "the storage-stack initramfs's mdadm.conf lacks the array"
    grep -q "^cowhost UUID=$LUKS_UUID /cryptroot/keyfiles/cowhost.key " "$root/tmp/stacks/cryptroot/crypttab" \
        || die "the storage-stack initramfs's crypttab lacks the LUKS entry with its key file"
    rm -rf "$root/tmp/stacks"
}

# Two dracut images of the same root, built inside it with Debian's
# dracut-core: one without systemd in the initramfs, one with it. The first
# enables cowroot the way the README says (the dracut.conf.d snippet), the
# second with --add.
build_dracut_images() {
    local root=$1 kver contents
    kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n 1)
    [ -n "$kver" ] || die "no kernel modules in the test root"
    # Only the drivers this VM needs: a generic image takes minutes.
    local common=(--force --no-hostonly --no-hostonly-cmdline --add-drivers "virtio_pci virtio_blk ext4")
    cp "$root/usr/share/cowroot/dracut.conf.d/90-cowroot.conf" "$root/etc/dracut.conf.d/90-cowroot.conf"
    chroot_run "$root" dracut "${common[@]}" --omit "systemd systemd-initrd dracut-systemd" \
        /boot/dracut-nosystemd.img "$kver" > "$WORK/dracut-nosystemd.log" 2>&1 \
        || { tail -n 20 "$WORK/dracut-nosystemd.log" >&2; die "dracut (without systemd) failed"; }
    rm "$root/etc/dracut.conf.d/90-cowroot.conf"
    chroot_run "$root" dracut "${common[@]}" --add "cowroot systemd" \
        /boot/dracut-systemd.img "$kver" > "$WORK/dracut-systemd.log" 2>&1 \
        || { tail -n 20 "$WORK/dracut-systemd.log" >&2; die "dracut (with systemd) failed"; }
    # Host-only, as most dracut systems build it: the chroot sees this
    # machine's disks and loaded modules, so the VM's disk driver is added.
    chroot_run "$root" dracut --force --hostonly --no-hostonly-cmdline --add-drivers "virtio_pci virtio_blk" \
        --add "cowroot systemd" /boot/dracut-hostonly.img "$kver" > "$WORK/dracut-hostonly.log" 2>&1 \
        || { tail -n 20 "$WORK/dracut-hostonly.log" >&2; die "dracut (host-only) failed"; }
    for kind in nosystemd systemd hostonly; do
        contents=$(chroot_run "$root" lsinitrd "/boot/dracut-$kind.img")
        for want in usr/sbin/cowroot sbin/cowroot-setup cowroot-cmdline.sh 12-cowroot.rules dm-thin-pool.ko; do
            grep -q "$want" <<< "$contents" || die "the dracut $kind image lacks $want"
        done
    done
    contents=$(chroot_run "$root" lsinitrd /boot/dracut-systemd.img)
    grep -q 'cowroot-generator' <<< "$contents" || die "the dracut systemd image lacks the generator"
    contents=$(chroot_run "$root" lsinitrd /boot/dracut-nosystemd.img)
    if grep -q 'systemd-udevd.service' <<< "$contents"; then die "the no-systemd dracut image holds systemd"; fi
}

# The built images, cached by their inputs: the sources of the binary and
# of the package (the README it ships excepted: the tests never read it),
# the build configuration and compiler, this file and the Debian base. A hit saves the 4-6 minutes of a build;
# the run works on copies, checked against the sums stored with them.
debian_images_key() {
    ensure_debian_base
    (
        cd "$REPO" || exit 1
        find src dracut initramfs-tools packaging udev systemd man completions grub -type f -print0 | sort -z | xargs -0 sha256sum
        sha256sum Cargo.toml Cargo.lock .cargo/config.toml Makefile qemu-tests/debian.sh
        rustc -V
        echo "$DEBIAN_BASE"
    ) | sha256sum | cut -c1-16
}

# Sets what build_debian_images sets, from the cache or by building (then
# cached; all but the newest entries are removed). Writes the variables to $1.
debian_images() {
    local env_out=$1 key dir out="$WORK/debian-initramfs-tools.out" f
    key=$(debian_images_key) || die "cannot compute the Debian images' cache key"
    dir="$CACHE/debian-images-$key"
    if [ -f "$dir/env" ]; then
        log "Debian test images from the cache ($dir)"
        rm -rf "$out"
        mkdir -p "$out"
        for f in "$dir"/*; do cp --sparse=always "$f" "$out/" || die "cannot copy $f"; done
        # shellcheck source=/dev/null
        . "$out/env"
        # Built under another work directory, perhaps: the names hold.
        DEB_KERNEL="$out/${DEB_KERNEL##*/}" DEB_INITRD="$out/${DEB_INITRD##*/}" DEB_INITRD_STACKS="$out/${DEB_INITRD_STACKS##*/}"
        DEB_INITRD_NBD="$out/${DEB_INITRD_NBD##*/}"
        DRACUT_INITRD_NOSYSTEMD="$out/${DRACUT_INITRD_NOSYSTEMD##*/}" DRACUT_INITRD_SYSTEMD="$out/${DRACUT_INITRD_SYSTEMD##*/}"
        DRACUT_INITRD_HOSTONLY="$out/${DRACUT_INITRD_HOSTONLY##*/}"
        DEB_IMAGES="$out/${DEB_IMAGES##*/}" DEB_ROOT_IMG="$out/${DEB_ROOT_IMG##*/}"
        declare -p DEB_KERNEL DEB_INITRD DEB_INITRD_STACKS DEB_INITRD_NBD DRACUT_INITRD_NOSYSTEMD DRACUT_INITRD_SYSTEMD DRACUT_INITRD_HOSTONLY DEB_IMAGES DEB_IMAGES_SHA \
            DEB_ROOT_IMG DEB_ROOT_SHA > "$out/env"
        same "$(sha "$DEB_IMAGES")" "$DEB_IMAGES_SHA" "the cached images disk"
        same "$(sha "$DEB_ROOT_IMG")" "$DEB_ROOT_SHA" "the cached root disk"
    else
        build_debian_images initramfs-tools
        declare -p DEB_KERNEL DEB_INITRD DEB_INITRD_STACKS DEB_INITRD_NBD DRACUT_INITRD_NOSYSTEMD DRACUT_INITRD_SYSTEMD DRACUT_INITRD_HOSTONLY DEB_IMAGES DEB_IMAGES_SHA \
            DEB_ROOT_IMG DEB_ROOT_SHA > "$out/env"
        # The newest two stay (work on two branches at once hits both).
        find "$CACHE" -maxdepth 1 -name 'debian-images-*' -printf '%T@ %p\n' | sort -rn | tail -n +3 | cut -d' ' -f2- \
            | xargs -r rm -rf
        rm -rf "$dir.tmp"
        mkdir -p "$dir.tmp"
        for f in "$out"/*; do [ -f "$f" ] && { cp --sparse=always "$f" "$dir.tmp/" || die "cannot cache $f"; }; done
        mv "$dir.tmp" "$dir"
    fi
    cp "$out/env" "$env_out"
}

# Boots the Debian image with the user's keys and waits for it to power off.
# DEB_ROOT_ARG replaces the boot loader's root=UUID=$ROOT_UUID (set and
# empty: no root= at all). systemd.gpt_auto=0: after dracut without
# systemd, the booted system's GPT auto-generator spent 80-100 s under
# emulation probing the root's devices, which has nothing to do with
# cowroot and pushed boots towards the timeout.
run_debian() {
    local name=$1 cmdline=$2
    shift 2
    VM_KERNEL=$DEB_KERNEL VM_INITRD=${DEB_BOOT_INITRD:-$DEB_INITRD} QEMU_TIMEOUT=$DEBIAN_TIMEOUT \
        VM_KERNEL_CMDLINE="console=ttyS0 ${DEB_ROOT_ARG-root=UUID=$ROOT_UUID} ro systemd.gpt_auto=0" VM_DONE_PATTERN="${VM_DONE_PATTERN_DEBIAN:-COWTEST poweroff at}" \
        run_vm "$name" "$cmdline" "$@"
}

# Seconds from the test service's poweroff to the kernel powering down.
shutdown_seconds() {
    local start end
    start=$(sed -n 's/.*COWTEST poweroff at \([0-9.]*\).*/\1/p' "$CONSOLE" | tail -n 1)
    end=$(sed -n 's/^\[ *\([0-9.]*\)\] reboot: Power down.*/\1/p' "$CONSOLE" | tail -n 1)
    if [ -z "$start" ] || [ -z "$end" ]; then echo "unknown"; return 0; fi
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }'
}

debian_images_unchanged() {
    same "$(sha "$DEB_IMAGES")" "$DEB_IMAGES_SHA" "the Debian images disk changed"
}
