#!/bin/bash
# VM scenarios on a real Debian system, booted with only the user's keys on
# the command line, through each initramfs generator: initramfs-tools, and
# dracut without and with systemd in the initramfs. Sourced after lib.sh and
# debian.sh; run.sh builds the images once (build_debian_images).
# shellcheck disable=SC2154  # CONSOLE, DEB_*, ... come from the sourced files

DEB_KEYS="cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb"

# The root is the thin device, by-uuid points at it, and it is writable.
expect_cow_root() {
    expect 'COWTEST root /dev/mapper/cowroot rw'
    local by_uuid mapper
    # The serial getty may share a line with the report: no ^ anchors.
    by_uuid=$(sed -n 's/.*COWTEST by-uuid \([^ ]*\) mapper .*/\1/p' "$CONSOLE")
    mapper=$(sed -n 's/.*COWTEST by-uuid [^ ]* mapper \(.*\)/\1/p' "$CONSOLE")
    if [ -z "$mapper" ] || [ "$by_uuid" != "$mapper" ]; then
        die "/dev/disk/by-uuid/$ROOT_UUID resolves to '$by_uuid', the root device is '$mapper'"
    fi
    expect 'COWTEST failed units: $'
    expect 'COWTEST failed units listed: rc=0'
}

# The shutdown, from the test service's poweroff on. systemd-shutdown
# cannot take the root's devices down while it runs from the root: it must
# hand over to cowroot's /run/initramfs/shutdown ("Returning to initrd"),
# which unmounts the root, removes every dm device, lets the loop device
# go, unmounts the image host and says so in one line. Before handing over,
# systemd logs at info level what it could not detach ("Could not detach
# DM ...", "Cannot finalize remaining ..., continuing."): it always does
# for a root on dm (systemd 252, src/shutdown/shutdown.c). "Failed to
# finalize" is what it says when nothing took over.
expect_clean_shutdown() {
    local log
    log=$(sed -n '/COWTEST poweroff at/,$p' "$CONSOLE")
    if grep -aE '\[FAILED\]|Failed to finalize|Failed to (switch root|execute shutdown)|Critical error|cowroot: shutdown: (could not|cannot|still)' <<< "$log" >&2; then
        die "the shutdown was not clean ($CONSOLE)"
    fi
    grep -aq 'Returning to initrd' <<< "$log" \
        || die "systemd-shutdown did not hand over to /run/initramfs/shutdown, so the root's devices were never taken down ($CONSOLE)"
    grep -aqE 'cowroot: shutdown: unmounted the root; removed cowroot[,;].* unmounted the image host; powering off' <<< "$log" \
        || die "cowroot's shutdown did not take the root, its devices and the image host down ($CONSOLE)"
}

expect_clean_poweroff() {
    expect 'reboot: Power down'
    expect_clean_shutdown
    local secs
    secs=$(shutdown_seconds)
    log "shutdown took $secs s"
    echo "$1 shutdown_seconds=$secs" >> "$WORK/debian-measures"
}

# The scenarios, for the initramfs in DEB_BOOT_INITRD; TAG names the runs.

keep_then_reset() {
    local tag=$1 pool="$WORK/$1-keep-pool.img"
    blank_disk "$pool" 1G
    run_debian "$tag-keep-1" "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/vda \([0-9.]+ GiB\), pool /dev/vdb, generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker absent'
    expect 'COWTEST marker written'
    expect '"health":"ok"'
    expect_clean_poweroff "$tag-boot1"
    # The pool as the clean poweroff left it: its thin-pool metadata checks
    # clean (thin_check), and the next boot finds the marker.
    local D="$WORK/$tag-keep-meta"
    mkdir -p "$D"
    same "$(host_check_point "$pool")" "thin_check ok" "the pool's metadata after a clean poweroff"
    run_debian "$tag-keep-2" "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(kept\)'
    expect_cow_root
    expect 'COWTEST marker present: written at boot'
    expect 'COWTEST cleanup: nothing to clean up on /dev/vdb'
    expect_clean_poweroff "$tag-boot2"
    # A reset is the binary's doing; one generator proves it in every run.
    if [ "${2:-}" = reset ] || [ "${COWROOT_FULL:-}" = 1 ]; then
        run_debian "$tag-keep-3" "$DEB_KEYS cowroot.reset=1" "$DEB_IMAGES" "$pool"
        expect 'generation 2 \(reset\)'
        expect_cow_root
        expect 'COWTEST marker absent'
        # The booted system deleted the old thin (cowroot-cleanup.service).
        expect 'COWTEST cleanup: deleted thin 1, the changes the last reset discarded'
        expect_clean_poweroff "$tag-boot3"
        same "$(host_check_point "$pool")" "thin_check ok" "the pool's metadata after the reset and its cleanup"
    fi
    debian_images_unchanged
}

lvm_pool() {
    local tag=$1 pool="$WORK/$1-lvm-pool.img" dev rc
    blank_disk "$pool" 1G
    # A plain LV made on the host without device-mapper (activation off).
    dev=$(losetup -f --show "$pool")
    (
        export LVM_SUPPRESS_FD_WARNINGS=1
        cfg='global { activation = 0 } backup { backup = 0 archive = 0 }'
        pvcreate -q --config "$cfg" "$dev" && vgcreate -q --config "$cfg" cowvg "$dev" \
            && lvcreate -q --config "$cfg" -an -Zn -L 800M -n pool cowvg
    ) > /dev/null 2>&1
    rc=$?
    losetup -d "$dev"
    [ $rc = 0 ] || die "could not make the LVM volume"
    run_debian "$tag-lvm-1" "cowroot=/root.img cowroot.dev=LABEL=images cowpool=cowvg/pool" "$DEB_IMAGES" "$pool"
    expect 'ready: .* pool /dev/mapper/cowvg-pool, generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    expect_clean_poweroff "$tag-lvm1"
    # Keeping changes is proven per generator by keep_then_reset; once on
    # an LV is enough.
    if [ "${2:-}" = again ]; then
        run_debian "$tag-lvm-2" "cowroot=/root.img cowroot.dev=LABEL=images cowpool=cowvg/pool" "$DEB_IMAGES" "$pool"
        expect 'generation 1 \(kept\)'
        expect 'COWTEST marker present'
        expect_clean_poweroff "$tag-lvm2"
    fi
    debian_images_unchanged
}

# The image host on an LVM logical volume that dracut's own LVM module
# activates (rd.lvm.lv=): cowroot's setup must not block the initqueue
# (or, with systemd, the initqueue service) that runs lvm_scan.
lvm_image_host() {
    local tag=$1 disk="$WORK/$1-lvmhost.img" pool="$WORK/$1-lvmhost-pool.img" dev rc pe_start sha
    blank_disk "$disk" 2200M
    dev=$(losetup -f --show "$disk")
    local cfg='global { activation = 0 } backup { backup = 0 archive = 0 }'
    {
        LVM_SUPPRESS_FD_WARNINGS=1 pvcreate -q --config "$cfg" "$dev" \
            && LVM_SUPPRESS_FD_WARNINGS=1 vgcreate -q --config "$cfg" hostvg "$dev" \
            && LVM_SUPPRESS_FD_WARNINGS=1 lvcreate -q --config "$cfg" -an -Zn -L 2100M -n images hostvg
    } > /dev/null 2>&1
    rc=$?
    pe_start=$(LVM_SUPPRESS_FD_WARNINGS=1 pvs --config "$cfg" --noheadings --units b --nosuffix -o pe_start "$dev" 2>/dev/null | tr -d ' ')
    losetup -d "$dev"
    if [ $rc != 0 ] || [ -z "$pe_start" ]; then die "could not make the LVM image host"; fi
    # A fresh VG: the LV's one segment starts at the first extent.
    dd if="$DEB_IMAGES" of="$disk" bs=1M seek=$((pe_start / 1048576)) conv=notrunc,sparse status=none \
        || die "cannot write the images filesystem into the LV"
    sha=$(sha "$disk")
    blank_disk "$pool" 1G
    run_debian "$tag-lvmhost" "rd.lvm.lv=hostvg/images cowroot=/root.img cowroot.dev=/dev/mapper/hostvg-images cowpool=/dev/vdb" "$disk" "$pool"
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/mapper/hostvg-images .*generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    same "$(sha "$disk")" "$sha" "the LVM image host changed"
}

# With cowroot= the root is /dev/mapper/cowroot whatever root= says (SPEC
# section 2): a stale UUID or PARTUUID that never appears, the origin's own
# LABEL, the image host's /dev/vda, or no root= at all. Nothing may wait for
# the root= device, check it or mount it; the origin (the image, on a loop
# device) is never mounted.
STALE_UUID=0badc0de-0000-4000-8000-00000000dead
STALE_PARTUUID=0badc0de-0000-4000-8000-0000000000aa
# root_arg TAG ROOT_ARG: TAG names the console log.
root_arg() {
    local tag=$1 arg=$2 pool="$WORK/$1-rootarg-pool.img"
    blank_disk "$pool" 1G
    DEB_ROOT_ARG=$arg run_debian "$tag" "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'cowroot: /dev/mapper/cowroot ready: origin /root.img on /dev/vda .*generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    reject 'EXT4-fs \(loop[0-9]+\): mounted|File System Check on /dev/(vd|disk/by-)|fsck.*/dev/(vd|disk/by-)'
    debian_images_unchanged
}

# PROMPT is what the initramfs's emergency shell shows; NOT, if given,
# what must not show (a shell other than the generator's own).
onfail_shell() {
    local tag=$1 prompt=$2 not=${3:-} pool="$WORK/$1-shell-pool.img" sha
    blank_disk "$pool" 256M
    sha=$(sha "$pool")
    VM_KERNEL=$DEB_KERNEL VM_INITRD=$DEB_BOOT_INITRD VM_KERNEL_CMDLINE="console=ttyS0 root=UUID=$ROOT_UUID ro" \
        run_vm_cut "$tag-shell" "cowroot=/missing.img cowroot.dev=LABEL=images cowpool=/dev/vdb" "$prompt" 1 \
        "$DEB_IMAGES" "$pool"
    expect 'image /missing.img not found on LABEL=images'
    expect 'cowroot: setting up the copy-on-write root failed'
    reject 'COWTEST root'
    [ -z "$not" ] || reject "$not"
    same "$(sha "$pool")" "$sha" "the pool was touched"
    debian_images_unchanged
}

onfail_halt() {
    local tag=$1 pool="$WORK/$1-halt-pool.img"
    blank_disk "$pool" 256M
    VM_DONE_PATTERN_DEBIAN='reboot: Power down' \
        run_debian "$tag-halt" "cowroot=/missing.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.onfail=halt" \
        "$DEB_IMAGES" "$pool"
    expect 'image /missing.img not found on LABEL=images'
    expect 'powering off \(cowroot.onfail=halt\)'
    reject 'COWTEST root'
    debian_images_unchanged
}

onfail_ro() {
    # The pool carries a filesystem, so setup is refused; the fallback then
    # boots the origin itself, read-only at every layer.
    local tag=$1 pool="$WORK/$1-ro-pool.img" sha
    blank_disk "$pool" 256M
    mkfs.ext4 -q -F -L precious "$pool"
    sha=$(sha "$pool")
    run_debian "$tag-ro" "$DEB_KEYS cowroot.onfail=ro" "$DEB_IMAGES" "$pool"
    expect 'cowpool: /dev/vdb holds an ext2/3/4 filesystem'
    expect 'cowroot: /dev/mapper/cowroot is the origin /root.img on /dev/vda, read-only'
    expect 'COWTEST root /dev/mapper/cowroot ro'
    expect 'COWTEST root is read-only'
    expect_clean_poweroff "$tag-ro"
    same "$(sha "$pool")" "$sha" "the refused pool was modified"
    debian_images_unchanged
}

# A fresh copy of the Debian root as a disk (a device origin), in $1.
fresh_root_disk() {
    cp --sparse=always "$DEB_ROOT_IMG" "$1" || die "cannot copy the root disk"
}

# An initramfs whose cowroot binary crashes (an appended archive replaces
# it: the kernel unpacks archives in order).
broken_binary_initrd() {
    local out=$1 dir
    dir=$(mktemp -d "$WORK/broken.XXXX")
    mkdir -p "$dir/usr/sbin"
    printf '#!/bin/sh\nkill -SEGV $$\n' > "$dir/usr/sbin/cowroot"
    chmod 0755 "$dir/usr/sbin/cowroot"
    initrd_with "$DEB_BOOT_INITRD" "$dir" "$out" \
        || die "cannot make the broken-binary initramfs"
    rm -rf "$dir"
}

# After a failed setup over a device origin that root= names, leaving the
# emergency shell never boots the origin. initramfs-tools (AGAIN=yes):
# `exit` and then Ctrl-D bring the shell back each time; dracut: the boot
# keeps waiting for the copy-on-write root and never mounts root=.
# LOGIN: dracut+systemd's emergency service runs sulogin, which asks to
# press Enter (root is locked in the test root) after printing LOGIN; when
# the shell is left, emergency mode brings that prompt back.
shell_exit_fails_closed() {
    local tag=$1 prompt=$2 again=${3:-} login=${4:-} origin="$WORK/$1-exit-origin.img" pool="$WORK/$1-exit-pool.img" sha
    fresh_root_disk "$origin"
    blank_disk "$pool" 256M
    mkfs.ext4 -q -F -L precious "$pool"
    sha=$(sha "$pool")
    VM_KERNEL=$DEB_KERNEL VM_INITRD=$DEB_BOOT_INITRD VM_KERNEL_CMDLINE="console=ttyS0 root=UUID=$ROOT_UUID ro" \
        qemu_start_interactive "$tag-exit" "cowroot=UUID=$ROOT_UUID cowpool=/dev/vdb" "$origin" "$pool"
    if [ -n "$login" ]; then
        console_wait "$login" 1 300
        sleep 2
        console_send '\n'
    else
        console_wait "$prompt" 1 300
    fi
    # A command's output (not its echo) proves the shell runs. Typed again
    # while nothing answers: sulogin drops what was typed before its shell
    # started.
    local tries=0
    until [ "$(grep -ac 'COWTEST-SHELL-42' "$CONSOLE")" -ge 1 ]; do
        tries=$((tries + 1))
        [ "$tries" -le 6 ] || { console_stop; die "no shell answered on the console"; }
        # shellcheck disable=SC2016  # expanded by the guest's shell
        console_send 'echo COWTEST-SHELL-$((6*7))\n'
        sleep 10
    done
    console_send 'exit\n'
    if [ "$again" = yes ]; then
        console_wait "$prompt" 2 120
        console_send '\004'
        console_wait "$prompt" 3 120
    elif [ -n "$login" ]; then
        console_wait "$login" 2 120
        sleep 20
    else
        sleep 40
    fi
    console_stop
    expect 'cowpool: /dev/vdb holds an ext2/3/4 filesystem'
    reject 'COWTEST root|EXT4-fs \(vd.\): mounted filesystem|Mounted root filesystem|Reached target.*Switch Root'
    same "$(sha "$pool")" "$sha" "the refused pool was written"
    same "$(sha "$origin")" "$DEB_ROOT_SHA" "the origin was written"
}

# A cowroot binary that crashes: without cowroot= the system boots root=
# as if cowroot were not installed; with it, the boot stops (fail closed)
# and never mounts the origin.
broken_binary() {
    local tag=$1 expect_without=${2:-} origin="$WORK/$1-broken-origin.img" pool="$WORK/$1-broken-pool.img" initrd="$WORK/$1-broken.img"
    broken_binary_initrd "$initrd"
    blank_disk "$pool" 256M
    if [ "$expect_without" = boots ]; then
        fresh_root_disk "$origin"
        DEB_BOOT_INITRD=$initrd run_debian "$tag-broken-1" "" "$origin" "$pool"
        expect 'COWTEST root /dev/vda rw'
    fi
    fresh_root_disk "$origin"
    VM_KERNEL=$DEB_KERNEL VM_INITRD=$initrd VM_KERNEL_CMDLINE="console=ttyS0 root=UUID=$ROOT_UUID ro" \
        qemu_start_interactive "$tag-broken-2" "cowroot=UUID=$ROOT_UUID cowpool=/dev/vdb" "$origin" "$pool"
    console_wait 'cowroot: the cowroot binary could not run' 1 300
    sleep 30
    console_stop
    reject 'COWTEST root|EXT4-fs \(vd.\): mounted filesystem|Mounted root filesystem|Reached target.*Switch Root'
    same "$(sha "$origin")" "$DEB_ROOT_SHA" "the origin was written"
}

# udev runs in the initramfs but without device-mapper's 95-dm-notify.rules
# (an appended empty file replaces them): the dm calls' wait for udev is
# bounded, the boot goes on and says what is missing.
scenario_debian_initramfs_tools_without_dm_notify_rules() {
    local initrd="$WORK/itools-no-dm-notify.img" dir pool="$WORK/nodmnotify-pool.img"
    dir=$(mktemp -d "$WORK/nodmnotify.XXXX")
    mkdir -p "$dir/usr/lib/udev/rules.d"
    : > "$dir/usr/lib/udev/rules.d/95-dm-notify.rules"
    initrd_with "$DEB_INITRD" "$dir" "$initrd" \
        || die "cannot make the initramfs without 95-dm-notify.rules"
    rm -rf "$dir"
    blank_disk "$pool" 1G
    DEB_BOOT_INITRD=$initrd run_debian nodmnotify "$DEB_KEYS cowroot.timeout=10" "$DEB_IMAGES" "$pool"
    expect 'udev did not confirm the activation of cowroot-pool_tmeta within [0-9]+ s: the device-mapper udev rules \(95-dm-notify.rules'
    expect 'cowroot: /dev/mapper/cowroot ready: .*generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    debian_images_unchanged
}

# Fedora's udev rule layout (upstream lvm2: the dm rules are 10-dm.rules
# and 13-dm-disk.rules, which makes the /dev/disk links of dm devices):
# Debian's dm rules are moved there in the dracut image by an appended
# archive, which also adds a pre-pivot hook that reports every /dev/disk
# link udev made in the initramfs to cowroot's private layers (pool,
# tmeta, tdata). cowroot's rule must act before the links are made.
# It passes with the old rule (57-cowroot.rules) too: cowroot's own dm calls
# set the udev flags that make the disk rules skip those layers, and the
# dm rules keep them in udev's database for later events; the rule is the
# second guard, for events without them. So it runs with --full.
scenario_debian_dracut_systemd_fedora_udev_rule_order() {
    local initrd="$WORK/fedora-rules.img" dir pool="$WORK/fedora-rules-pool.img" rules=/usr/lib/udev/rules.d
    dir=$(mktemp -d "$WORK/fedora-rules.XXXX")
    mkdir -p "$dir$rules" "$dir/usr/lib/dracut/hooks/pre-pivot"
    cp "$rules/55-dm.rules" "$dir$rules/10-dm.rules" || die "no 55-dm.rules on this machine (dmsetup)"
    cp "$rules/60-persistent-storage-dm.rules" "$dir$rules/13-dm-disk.rules" || die "no 60-persistent-storage-dm.rules"
    : > "$dir$rules/55-dm.rules"
    : > "$dir$rules/60-persistent-storage-dm.rules"
    cat > "$dir/usr/lib/dracut/hooks/pre-pivot/99-cowtest.sh" <<'HOOK'
# cowroot test: the /dev/disk links udev made to cowroot's private layers.
cowtest_layers=0 cowtest_links=""
for cowtest_d in /sys/block/dm-*; do
    case "$(cat "$cowtest_d/dm/uuid" 2>/dev/null)" in
        COWROOT-pool-* | COWROOT-tmeta-* | COWROOT-tdata-*) cowtest_layers=$((cowtest_layers + 1)) ;;
        *) continue ;;
    esac
    for cowtest_l in $(find /dev/disk -type l); do
        [ "$(readlink -f "$cowtest_l")" = "/dev/${cowtest_d##*/}" ] && cowtest_links="$cowtest_links $cowtest_l"
    done
done
echo "COWTEST initramfs: $cowtest_layers private layers, links to them:$cowtest_links" > /dev/kmsg
echo "COWTEST initramfs: rules $(ls /usr/lib/udev/rules.d | grep -E 'dm|cowroot' | tr '\n' ' ')" > /dev/kmsg
HOOK
    initrd_with "$DRACUT_INITRD_SYSTEMD" "$dir" "$initrd" \
        || die "cannot make the initramfs with Fedora's rule layout"
    rm -rf "$dir"
    blank_disk "$pool" 1G
    DEB_BOOT_INITRD=$initrd run_debian fedora-rules "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'COWTEST initramfs: rules 10-dm.rules 12-cowroot.rules 13-dm-disk.rules '
    expect 'COWTEST initramfs: 3 private layers, links to them:$'
    expect_cow_root
    expect 'COWTEST marker written'
    debian_images_unchanged
}

# A host-only dracut image (dracut --hostonly, built in a chroot): the
# modules cowroot needs are there whatever the build host had loaded.
scenario_debian_dracut_hostonly_image_boots() {
    local pool="$WORK/hostonly-pool.img"
    blank_disk "$pool" 1G
    DEB_BOOT_INITRD=$DRACUT_INITRD_HOSTONLY run_debian hostonly "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'cowroot: /dev/mapper/cowroot ready: .*generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    debian_images_unchanged
}

# initramfs-tools brings some devices only in local-block, which runs
# after local-top while init waits for the root (mdadm starts degraded
# arrays there, cryptroot opens late LUKS devices). An appended archive
# adds a local-block script that makes the pool (a dm linear map of the
# pool disk) on its second call, as mdadm does after a while; cowroot must
# wait for it there. With cowroot.onfail=halt, a setup that gave up in
# local-top powers off.
scenario_debian_initramfs_tools_pool_made_in_local_block() {
    local initrd="$WORK/itools-local-block.img" dir pool="$WORK/localblock-pool.img" sha
    dir=$(mktemp -d "$WORK/localblock.XXXX")
    mkdir -p "$dir/scripts/local-block"
    cat > "$dir/scripts/local-block/cowtest-latepool" <<'SCRIPT'
#!/bin/sh
# cowroot test: the pool appears on the second call only.
count=$(($(cat /run/cowtest-latepool 2>/dev/null || echo 0) + 1))
echo "$count" > /run/cowtest-latepool
if [ "$count" = 2 ]; then
    dmsetup create latepool --table "0 $(blockdev --getsz /dev/vdb) linear /dev/vdb 0"
    echo "COWTEST local-block: made the pool on call $count" > /dev/kmsg
fi
SCRIPT
    chmod 0755 "$dir/scripts/local-block/cowtest-latepool"
    cat > "$dir/scripts/local-block/ORDER" <<'ORDER'
/scripts/local-block/cowtest-latepool "$@"
[ -e /conf/param.conf ] && . /conf/param.conf
[ -x /scripts/local-block/lvm2 ] && /scripts/local-block/lvm2 "$@"
[ -e /conf/param.conf ] && . /conf/param.conf
/scripts/local-block/cowroot "$@"
[ -e /conf/param.conf ] && . /conf/param.conf
ORDER
    initrd_with "$DEB_INITRD" "$dir" "$initrd" \
        || die "cannot make the initramfs with a late pool"
    rm -rf "$dir"
    blank_disk "$pool" 1G
    DEB_BOOT_INITRD=$initrd run_debian localblock \
        "cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/mapper/latepool cowroot.onfail=halt" "$DEB_IMAGES" "$pool"
    expect 'cowroot: waiting for the devices named by cowroot=, cowroot.dev= and cowpool='
    expect 'COWTEST local-block: made the pool on call 2'
    expect 'cowroot: /dev/mapper/cowroot ready: .*pool /dev/mapper/latepool, generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    debian_images_unchanged
}

scenario_debian_initramfs_tools_keep_then_reset() { DEB_BOOT_INITRD=$DEB_INITRD keep_then_reset itools reset; }
scenario_debian_initramfs_tools_lvm_pool() { DEB_BOOT_INITRD=$DEB_INITRD lvm_pool itools again; }
scenario_debian_initramfs_tools_onfail_shell() { DEB_BOOT_INITRD=$DEB_INITRD onfail_shell itools '(initramfs)'; }
scenario_debian_initramfs_tools_onfail_halt() { DEB_BOOT_INITRD=$DEB_INITRD onfail_halt itools; }
scenario_debian_initramfs_tools_onfail_ro() { DEB_BOOT_INITRD=$DEB_INITRD onfail_ro itools; }
scenario_debian_initramfs_tools_shell_exit_fails_closed() { DEB_BOOT_INITRD=$DEB_INITRD shell_exit_fails_closed itools '\(initramfs\)' yes; }
scenario_debian_initramfs_tools_broken_binary() { DEB_BOOT_INITRD=$DEB_INITRD broken_binary itools boots; }

# The booted system after dracut without systemd stalls for minutes now
# and then under emulation (Debian's 6.1.0-50 kernel: soft lockups while
# clearing pages, also on code before issue 11), so its boots get a
# longer timeout; the stall is the guest kernel's, not cowroot's.
scenario_debian_dracut_nosystemd_keep_then_reset() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD DEBIAN_TIMEOUT=900 keep_then_reset dnosd; }
scenario_debian_dracut_nosystemd_lvm_image_host() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD DEBIAN_TIMEOUT=900 lvm_image_host dnosd; }
scenario_debian_dracut_systemd_lvm_image_host() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD lvm_image_host dsd; }
scenario_debian_dracut_nosystemd_lvm_pool() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD lvm_pool dnosd; }
scenario_debian_dracut_nosystemd_onfail_shell() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD onfail_shell dnosd 'cowroot:/#'; }
scenario_debian_dracut_nosystemd_onfail_halt() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD onfail_halt dnosd; }
scenario_debian_dracut_nosystemd_onfail_ro() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD onfail_ro dnosd; }
scenario_debian_dracut_nosystemd_shell_exit_fails_closed() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD shell_exit_fails_closed dnosd 'cowroot:/#'; }
scenario_debian_dracut_nosystemd_broken_binary() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD broken_binary dnosd; }

scenario_debian_dracut_systemd_keep_then_reset() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD keep_then_reset dsd; }
scenario_debian_dracut_systemd_lvm_pool() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD lvm_pool dsd; }
# The shell is dracut-emergency.service's, as for any other failure there.
scenario_debian_dracut_systemd_onfail_shell() {
    DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD onfail_shell dsd 'Entering emergency mode. Exit the shell to continue.' \
        'cowroot-setup\[[0-9]+\]: Dropping to debug shell'
}
scenario_debian_dracut_systemd_onfail_halt() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD onfail_halt dsd; }
scenario_debian_dracut_systemd_onfail_ro() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD onfail_ro dsd; }
scenario_debian_dracut_systemd_shell_exit_fails_closed() {
    DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD shell_exit_fails_closed dsd '' '' 'Press Enter for maintenance'
}
scenario_debian_dracut_systemd_broken_binary() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD broken_binary dsd; }

scenario_debian_initramfs_tools_root_absent() { DEB_BOOT_INITRD=$DEB_INITRD root_arg itools-root-absent ""; }
scenario_debian_initramfs_tools_root_stale_partuuid() { DEB_BOOT_INITRD=$DEB_INITRD root_arg itools-root-stale-partuuid "root=PARTUUID=$STALE_PARTUUID"; }
scenario_debian_initramfs_tools_root_stale_uuid() { DEB_BOOT_INITRD=$DEB_INITRD root_arg itools-root-stale-uuid "root=UUID=$STALE_UUID"; }
scenario_debian_initramfs_tools_root_label() { DEB_BOOT_INITRD=$DEB_INITRD root_arg itools-root-label "root=LABEL=debroot"; }
scenario_debian_initramfs_tools_root_dev_vda() { DEB_BOOT_INITRD=$DEB_INITRD root_arg itools-root-dev-vda "root=/dev/vda"; }
scenario_debian_dracut_nosystemd_root_stale_partuuid() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD root_arg dnosd-root-stale-partuuid "root=PARTUUID=$STALE_PARTUUID"; }
scenario_debian_dracut_nosystemd_root_stale_uuid() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD root_arg dnosd-root-stale-uuid "root=UUID=$STALE_UUID"; }
scenario_debian_dracut_nosystemd_root_absent() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD root_arg dnosd-root-absent ""; }
scenario_debian_dracut_nosystemd_root_label() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD root_arg dnosd-root-label "root=LABEL=debroot"; }
scenario_debian_dracut_nosystemd_root_dev_vda() { DEB_BOOT_INITRD=$DRACUT_INITRD_NOSYSTEMD root_arg dnosd-root-dev-vda "root=/dev/vda"; }
scenario_debian_dracut_systemd_root_stale_uuid() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD root_arg dsd-root-stale-uuid "root=UUID=$STALE_UUID"; }
scenario_debian_dracut_systemd_root_absent() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD root_arg dsd-root-absent ""; }
scenario_debian_dracut_systemd_root_stale_partuuid() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD root_arg dsd-root-stale-partuuid "root=PARTUUID=$STALE_PARTUUID"; }
scenario_debian_dracut_systemd_root_label() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD root_arg dsd-root-label "root=LABEL=debroot"; }
scenario_debian_dracut_systemd_root_dev_vda() { DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD root_arg dsd-root-dev-vda "root=/dev/vda"; }

# One pool, first under the initramfs-tools image, then under dracut (the
# two dracut images share everything but systemd).
scenario_debian_pool_moves_from_initramfs_tools_to_dracut() {
    local pool="$WORK/move-pool.img"
    blank_disk "$pool" 1G
    DEB_BOOT_INITRD=$DEB_INITRD run_debian move-1 "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(formatted\)'
    expect 'COWTEST marker written'
    DEB_BOOT_INITRD=$DRACUT_INITRD_SYSTEMD run_debian move-2 "$DEB_KEYS" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(kept\)'
    expect_cow_root
    expect 'COWTEST marker present: written at boot'
    debian_images_unchanged
}

# root= only in dracut's cmdline.d (as host-only images with
# hostonly_cmdline write it), stale, none on the kernel command line:
# dracut's rootfs generator then writes sysroot.mount itself, requiring a
# check (systemd-fsck@) of that device; nothing may wait for it or check it.
scenario_debian_dracut_systemd_root_stale_in_cmdline_d() {
    local initrd="$WORK/dsd-root-cmdline-d.img" dir
    dir=$(mktemp -d "$WORK/root-cmdline-d.XXXX")
    mkdir -p "$dir/etc/cmdline.d"
    echo "root=UUID=$STALE_UUID" > "$dir/etc/cmdline.d/95root-dev.conf"
    initrd_with "$DRACUT_INITRD_SYSTEMD" "$dir" "$initrd" \
        || die "cannot make the initramfs with root= in cmdline.d"
    rm -rf "$dir"
    DEB_BOOT_INITRD=$initrd root_arg dsd-root-cmdline-d ""
}

# The modes through a real Debian boot (initramfs-tools; the agent does the
# same under every generator): an encrypted RAM pool with a root larger
# than its image (grown by cowroot-grow.service), a volatile disk pool, a
# frozen root with a persistent /home (cowroot.volume),
# and the RAM fallback over a pool device that holds a filesystem.
scenario_debian_initramfs_tools_modes() {
    local pool="$WORK/itools-modes-pool.img" foreign="$WORK/itools-modes-foreign.img" sha
    run_debian itools-modes-ram "cowroot=/root.img cowroot.dev=LABEL=images cowpool=ram cowroot.crypt=random cowroot.size=3G" "$DEB_IMAGES"
    expect 'ready: origin /root.img on /dev/vda \([0-9.]+ GiB\), pool RAM \(/dev/loop[0-9]+, at most [0-9.]+ MiB, nothing kept\), encrypted with a key that is never stored, generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST marker written'
    expect 'COWTEST grow: grew the filesystem on / \(/dev/.*\) from [0-9.]+ GiB to [23]\.[0-9] GiB'
    expect 'COWTEST root size: (2[89]|3[0-9])[0-9]{5} KiB'
    expect '"fresh_every_boot":"it runs on a RAM pool"'
    expect 'COWTEST check rc=0 cowroot OK: data'
    expect 'COWTEST check timer: [a-z-]+ active'
    expect_clean_poweroff itools-modes-ram
    blank_disk "$pool" 2G
    run_debian itools-modes-volatile-1 "$DEB_KEYS cowroot.mode=volatile" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(formatted\)'
    expect 'COWTEST marker written'
    expect_clean_poweroff itools-modes-volatile-1
    run_debian itools-modes-volatile-2 "$DEB_KEYS cowroot.mode=volatile" "$DEB_IMAGES" "$pool"
    expect 'generation 2 \(reset\)'
    expect_cow_root
    expect 'COWTEST marker absent'
    expect '"fresh_every_boot":"cowroot.mode=volatile"'
    expect_clean_poweroff itools-modes-volatile-2
    # Frozen: the second boot runs on a fresh snapshot of the base, and the
    # booted system deletes the first boot's snapshot.
    # With a persistent /home: formatted by cowroot-volume@home.service and
    # mounted by the generator's unit at the first boot, kept by the second.
    blank_disk "$pool" 2G
    # A checkpoint taken from the booted system (the root suspended under a
    # running systemd) of the first frozen session, then rolled back to: it
    # becomes the base the third boot starts from.
    local frozen="$DEB_KEYS cowroot.mode=frozen cowroot.volume=home:64M:/home"
    run_debian itools-modes-frozen-1 "$frozen cowtest.ops=ckcreate:before" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(formatted\), .*; volumes home \(64.0 MiB, /home\)'
    expect 'COWTEST marker written'
    expect 'COWTEST checkpoint: checkpoint before taken of /dev/mapper/cowroot \(generation 1\) in [0-9]+ ms'
    local taken
    taken=$(grep -ao 'COWTEST checkpointed marker: written at boot [0-9a-f-]*' "$CONSOLE" | sed 's/.*marker: //')
    [ -n "$taken" ] || die "no marker content recorded with the checkpoint"
    expect 'COWTEST volumes: home \(/dev/mapper/cowroot-vol-home\): made ext4'
    expect 'COWTEST home: /dev/mapper/cowroot-vol-home ext4'
    expect 'COWTEST home file absent'
    expect 'COWTEST home file written'
    expect_cow_root
    expect_clean_poweroff itools-modes-frozen-1
    run_debian itools-modes-frozen-2 "$frozen cowtest.ops=cklist,rollback:before" "$DEB_IMAGES" "$pool"
    expect 'generation 1 \(frozen\)'
    expect_cow_root
    expect 'COWTEST marker absent'
    expect 'COWTEST checkpoint-list: checkpoint: +before \(manual, [0-9]+ (s|min) old, generation 1\); thin 4'
    expect 'COWTEST rollback: the next boot continues from checkpoint before; the frozen base is kept as checkpoint rollback-g1'
    expect 'COWTEST volumes: home \(/dev/mapper/cowroot-vol-home\): holds an ext2/3/4 filesystem'
    expect 'COWTEST home file present: home written at boot'
    expect 'COWTEST cleanup: deleted thin 3, the changes discarded at the last boot'
    expect '"next_boot":"frozen"'
    expect '"volumes":\[\{"name":"home","thin":1,"size_bytes":67108864,"mount_point":"/home"'
    expect_clean_poweroff itools-modes-frozen-2
    run_debian itools-modes-frozen-3 "$frozen" "$DEB_IMAGES" "$pool"
    expect 'generation 2 \(frozen\)'
    expect_cow_root
    expect "COWTEST marker present: $taken"
    expect_clean_poweroff itools-modes-frozen-3
    blank_disk "$foreign" 1G
    mkfs.ext4 -q -F "$foreign"
    sha=$(sha "$foreign")
    run_debian itools-modes-fallback "cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.onfail=ram" "$DEB_IMAGES" "$foreign"
    expect 'cowroot.onfail=ram: the pool /dev/vdb cannot be used'
    expect 'ready: .* pool RAM \(/dev/loop[0-9]+'
    expect_cow_root
    expect '"ram_fallback":"cowpool: /dev/vdb holds an ext2/3/4 filesystem'
    expect_clean_poweroff itools-modes-fallback
    same "$(sha "$foreign")" "$sha" "the refused pool device was written"
    rm -f "$pool" "$foreign"
    debian_images_unchanged
}

# The operations from the booted Debian system (initramfs-tools): a
# checkpoint (another one deleted); a backup disk attached with its writes on a pool file,
# written, detached, attached again and with --reset; a changed backup
# committed into a new image file on a writable disk (the host reads the
# change in it); 42_cowroot's boot entries for the root image. The second
# boot goes through GRUB itself: the reset entry loads the kernel and
# initramfs from inside the image, and its cowroot.keep=1 keeps the state
# the reset replaced as a checkpoint.
scenario_debian_initramfs_tools_operations() {
    local pool="$WORK/itools-ops-pool.img" backup="$WORK/itools-ops-backup.img"
    local commits="$WORK/itools-ops-commits.img" dir="$WORK/itools-ops"
    local backup_sha sum
    rm -rf "$dir"
    mkdir -p "$dir/backup" "$dir/iso/boot/grub"
    blank_disk "$pool" 1G
    echo original > "$dir/backup/data"
    rm -f "$backup" "$commits"
    mkfs.ext4 -q -F -L backup -d "$dir/backup" "$backup" 64M
    mkfs.ext4 -q -F -L commits "$commits" 256M
    backup_sha=$(sha "$backup")
    local disks=("$DEB_IMAGES" "$pool" "$backup" "$commits")

    run_debian itools-ops-1 "$DEB_KEYS cowtest.ops=ckcreate:pre,ckcreate:two,ckdelete:two,cklist,attach,commit:backup-v2.img,grub:root.img" "${disks[@]}"
    expect 'generation 1 \(formatted\)'
    expect_cow_root
    expect 'COWTEST checkpoint: checkpoint pre taken of /dev/mapper/cowroot \(generation 1\)'
    expect 'COWTEST checkpoint delete: deleted checkpoint two'
    expect 'COWTEST checkpoint-list: checkpoint: +pre \(manual, [0-9]+ (s|min) old, generation 1\)'
    reject 'COWTEST checkpoint-list: .*two'
    expect 'COWTEST attach: cowroot: /dev/loop[0-9]+ is blank: formatting it as a cowroot pool /dev/mapper/backup ready: origin /dev/vdc \([0-9.]+ MiB\), pool /dev/loop[0-9]+, generation 1 \(formatted\)'
    expect 'COWTEST attached file: original'
    expect 'COWTEST list: .*cowroot: /dev/mapper/cowroot \(the running root\), origin /run/cowroot/host/root.img, pool /dev/vdb'
    expect 'COWTEST list: .*backup: /dev/mapper/backup \(not mounted\), origin /dev/vdc, pool /dev/loop[0-9]+, generation 1'
    expect 'COWTEST detach: detached /dev/mapper/backup \(4 device-mapper devices removed\)'
    expect 'COWTEST attached file again: changed at boot'
    expect 'COWTEST attach reset: /dev/mapper/backup ready: .*generation 2 \(reset\)'
    expect 'COWTEST attached file after reset: original'
    expect 'COWTEST detach again: detached /dev/mapper/backup'
    expect 'COWTEST pool file loop after detach: \[\]'
    expect 'COWTEST commit rc=0 wrote a sparse image \(64.0 MiB\) to /mnt/commits/backup-v2.img in [0-9]+ s, read back and verified: sha256 [0-9a-f]{64}'
    expect 'COWTEST commit stderr: $'
    expect 'COWTEST commit progress: [0-9]+ lines, last: commit: 64.0 MiB of 64.0 MiB \(100.0%\)'
    sum=$(grep -ao 'read back and verified: sha256 [0-9a-f]*' "$CONSOLE" | sed 's/.* //')
    expect "COWTEST commit sha256: $sum"
    expect 'COWTEST commit detach: detached /dev/mapper/tocommit'
    expect 'COWTEST grub rc=0 entries 2 stderr \[\]'
    expect_clean_poweroff itools-ops-1
    same "$(sha "$backup")" "$backup_sha" "the attached backup disk was written"
    # The committed image, read on the host: the change is in it.
    debugfs -R "dump /backup-v2.img $dir/backup-v2.img" "$commits" 2> /dev/null
    same "$(sha "$dir/backup-v2.img")" "$sum" "the committed image's sha256"
    same "$(debugfs -R "cat /data" "$dir/backup-v2.img" 2> /dev/null)" committed "the committed image's file"
    # The entries as 42_cowroot wrote them on the booted system.
    debugfs -R "cat /grub.cfg" "$commits" > "$dir/entries.cfg" 2> /dev/null
    grub-script-check "$dir/entries.cfg" || die "grub-script-check refused the entries: $(cat "$dir/entries.cfg")"
    # shellcheck disable=SC2016  # GRUB's variable, literal
    grep -qF 'loopback cowroot_loop ($cowroot_host)/root.img' "$dir/entries.cfg" || die "no loopback of the image in: $(cat "$dir/entries.cfg")"

    # GRUB from a CD (BIOS), straight to the reset entry, on the serial line.
    {
        printf '%s\n' 'serial --unit=0 --speed=115200' 'terminal_input serial' 'terminal_output serial' \
            'set timeout=0' 'set default=cowroot-cowroot-reset'
        cat "$dir/entries.cfg"
    } > "$dir/iso/boot/grub/grub.cfg"
    grub-mkrescue -d /usr/lib/grub/i386-pc -o "$dir/boot.iso" "$dir/iso" > "$dir/mkrescue.log" 2>&1 \
        || { cat "$dir/mkrescue.log" >&2; die "grub-mkrescue failed"; }
    VM_BOOT_ISO="$dir/boot.iso" run_debian itools-ops-grub "" "${disks[@]}"
    expect 'Command line: BOOT_IMAGE=\(cowroot_loop\)(/boot)?/vmlinuz root=/dev/mapper/cowroot ro cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.keep=1 cowroot.reset=1'
    expect 'generation 2 \(reset\)'
    expect_cow_root
    expect 'COWTEST marker absent'
    # cowroot.keep=1 from the entry: the reset kept generation 1 to undo it.
    expect 'COWTEST status .*"checkpoints":\[.*"name":"pre".*"name":"reset-g1"'
    expect_clean_poweroff itools-ops-grub
    same "$(sha "$backup")" "$backup_sha" "the attached backup disk was written"
    rm -rf "$dir" "$pool" "$backup" "$commits"
    debian_images_unchanged
}
