#!/bin/bash
# Shared helpers of cowroot's VM tests: prerequisites, the guest kernel, the
# test initramfs, disks made without mounting anything, and QEMU runs.
# shellcheck disable=SC2034  # variables are used by the sourcing scripts

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${COWROOT_TEST_CACHE:-/var/cache/cowroot-tests}
WORK=${COWROOT_TEST_WORK:-/tmp/cowroot-tests}
BIN="$REPO/target/x86_64-unknown-linux-musl/release/cowroot"
LOGREPLAY="$REPO/qemu-tests/logreplay/target/x86_64-unknown-linux-musl/release/logreplay"
QEMU_TIMEOUT=${QEMU_TIMEOUT:-240}
# Two guests run side by side on these 2-core machines: give each one core.
QEMU_SMP=${QEMU_SMP:-2}

log() { printf '%s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Installs what the tests need on a fresh Debian machine; quick when present.
ensure_prereqs() {
    "$REPO/qemu-tests/prereqs.sh"
}

build_binary() {
    (cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl --quiet)
    [ -x "$BIN" ] || die "binary not built: $BIN"
    cargo build --release --target x86_64-unknown-linux-musl --quiet --manifest-path "$REPO/qemu-tests/logreplay/Cargo.toml"
    [ -x "$LOGREPLAY" ] || die "logreplay not built: $LOGREPLAY"
}

# Fetches Debian's current linux-image-amd64 kernel into the cache, keyed by
# its version as the package states it. Sets KVER and KROOT.
ensure_kernel() {
    local meta dep
    mkdir -p "$CACHE/debs"
    meta=$(apt-cache show linux-image-amd64 2>/dev/null | sed -n 's/^Depends: //p' | head -n 1)
    if [ -z "$meta" ]; then
        apt-get update -q >/dev/null
        meta=$(apt-cache show linux-image-amd64 | sed -n 's/^Depends: //p' | head -n 1)
    fi
    dep=$(printf '%s\n' "$meta" | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)
    [ -n "$dep" ] || die "cannot read the kernel package from linux-image-amd64's Depends: $meta"
    KVER=${dep#linux-image-}
    KROOT="$CACHE/kernel-$KVER"
    if [ ! -f "$KROOT/.complete" ]; then
        log "fetching kernel package $dep"
        rm -rf "$KROOT"
        mkdir -p "$KROOT"
        (cd "$CACHE/debs" && rm -f "$dep"_*.deb && apt-get download "$dep" >/dev/null 2>&1) \
            || die "apt-get download $dep failed"
        dpkg-deb -x "$CACHE/debs/$dep"_*.deb "$KROOT" || die "unpacking $dep failed"
        depmod -b "$KROOT" "$KVER" || die "depmod for $KVER failed"
        touch "$KROOT/.complete" || die "cannot write $KROOT"
    fi
    KERNEL="$KROOT/boot/vmlinuz-$KVER"
    [ -f "$KERNEL" ] || die "no kernel image in $KROOT"
}

# module_order MODULE...: their paths (relative to lib/modules/VER/) with
# what they need, in load order, without repeats.
module_order() {
    local m
    for m in "$@"; do
        modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" \
            || die "module $m not found for $KVER"
    done | awk '$1 == "insmod" { print $2 }' | sed "s|^$KROOT/lib/modules/||" | awk '!seen[$0]++'
}

# The modules every busybox test guest loads.
GUEST_MODULES="virtio_pci virtio_blk crc32c_generic dm-thin-pool dm-log-writes loop ext4 xfs btrfs"

# copy_with_libs BINARY DIR: the binary and the libraries it links, at
# their own paths under DIR.
copy_with_libs() {
    local f
    for f in "$1" $(ldd "$1" | grep -o '/[^ ]*'); do
        mkdir -p "$2$(dirname "$f")"
        cp -L "$f" "$2$f" || die "cannot copy $f (for $1) into $2"
    done
}

# Builds the busybox test initramfs with the current binary. Sets INITRD.
build_initramfs() {
    local root="$WORK/initramfs" m
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/sbin" "$root/lib/modules"
    cp /bin/busybox "$root/bin/busybox" || die "no /bin/busybox (install busybox-static)"
    file -L "$root/bin/busybox" | grep -q 'statically linked' || die "/bin/busybox is not static (install busybox-static)"
    cp "$BIN" "$root/sbin/cowroot" || die "no binary at $BIN"
    cp "$REPO/qemu-tests/guest/init" "$root/init" || die "no guest init"
    cp "$REPO/qemu-tests/guest/fixture.sh" "$root/fixture.sh" || die "no guest fixture.sh"
    cp "$REPO/qemu-tests/guest/crash.sh" "$root/crash.sh" || die "no guest crash.sh"
    # shellcheck disable=SC2086  # a list of names
    module_order $GUEST_MODULES > "$root/modules.list" || die "cannot list the guest modules"
    while read -r m; do
        mkdir -p "$root/lib/modules/$(dirname "$m")"
        cp "$KROOT/lib/modules/$m" "$root/lib/modules/$m" || die "cannot copy module $m"
    done < "$root/modules.list"
    INITRD="$WORK/initramfs.cpio.gz"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD" || die "cannot pack the initramfs"
    # The crash-point scenario's tools, logreplay and dmsetup with what it
    # links (4 MiB), go into a second archive appended only in CRASH_INITRD
    # (the kernel unpacks concatenated archives): under TCG every boot pays
    # for the initramfs's size, so the other scenarios do without them.
    local extra="$WORK/initramfs-crash"
    rm -rf "$extra"
    mkdir -p "$extra/sbin"
    cp "$LOGREPLAY" "$extra/sbin/logreplay" || die "no logreplay at $LOGREPLAY"
    copy_with_libs /usr/sbin/dmsetup "$extra"
    CRASH_INITRD="$WORK/initramfs-crash.cpio.gz"
    initrd_with "$INITRD" "$extra" "$CRASH_INITRD" \
        || die "cannot pack the crash initramfs"
}

# An ext4 origin image whose /origin-id says which one it is.
# make_origin FILE ID [UUID] (MKFS_BLOCK sets the ext4 block size)
make_origin() {
    local file=$1 id=$2 uuid=${3:-} dir
    dir=$(mktemp -d "$WORK/origin.XXXX")
    mkdir -p "$dir/etc" "$dir/data"
    echo "$id" > "$dir/origin-id"
    echo "cowroot-test-$id" > "$dir/etc/hostname"
    head -c 4M /dev/urandom > "$dir/data/payload"
    rm -f "$file"
    mkfs.ext4 -q -F -L origin ${uuid:+-U "$uuid"} ${MKFS_BLOCK:+-b "$MKFS_BLOCK"} -d "$dir" "$file" 64M
    rm -rf "$dir"
}

# An ext4 "images" disk holding FILE as /root.img, labelled `images`.
make_images_disk() {
    local disk=$1 image=$2 dir
    dir=$(mktemp -d "$WORK/images.XXXX")
    cp --sparse=always "$image" "$dir/root.img"
    rm -f "$disk"
    mkfs.ext4 -q -F -L images -d "$dir" "$disk" 128M
    rm -rf "$dir"
}

blank_disk() {
    rm -f "$1"
    truncate -s "$2" "$1"
}

# initrd_with BASE DIR OUT: OUT is the initramfs BASE with an archive of
# DIR appended (the kernel unpacks archives in order: DIR's files win).
initrd_with() {
    { cat "$1" && (cd "$2" && find . | cpio -o -H newc --quiet | gzip -1); } > "$3"
}

# initrd_with_modules OUT DIR MODULE...: the busybox test initramfs with
# DIR's files (when DIR is not empty) and these modules (with what they
# need), which its init loads after its own.
initrd_with_modules() {
    local out=$1 dir=$2 extra m
    shift 2
    extra=$(mktemp -d "$WORK/initramfs-modules.XXXX")
    [ -z "$dir" ] || cp -a "$dir/." "$extra/"
    { cat "$WORK/initramfs/modules.list" && module_order "$@"; } | awk '!seen[$0]++' > "$extra/modules.list"
    while read -r m; do
        [ -f "$WORK/initramfs/lib/modules/$m" ] && continue
        mkdir -p "$extra/lib/modules/$(dirname "$m")"
        cp "$KROOT/lib/modules/$m" "$extra/lib/modules/$m" || die "cannot copy module $m"
    done < "$extra/modules.list"
    initrd_with "$INITRD" "$extra" "$out" || die "cannot pack $out"
    rm -rf "$extra"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# The guest kernel, initramfs, base command line and the console line that
# proves the guest finished; a Debian test root sets its own.
VM_KERNEL_CMDLINE="console=ttyS0 panic=-1 printk.devkmsg=on"
VM_DONE_PATTERN='^COWTEST done'

# qemu_start NAME "CMDLINE" DISK...: starts QEMU in the background (PID in
# QEMU_PID), console into $WORK/NAME.log (CONSOLE).
qemu_start() {
    local name=$1 cmdline=$2 drives=() d
    shift 2
    # Every disk as -drive + -device, in order, so they are vda, vdb, ...
    # FILE@4k: a disk with 4096-byte logical sectors (4Kn); FILE@nvme, an
    # NVMe namespace; FILE@sata, a SATA disk on an AHCI controller.
    # VM_DRIVE_OPTIONS (",cache=none,...") is added to every -drive.
    local n=0
    for d in "$@"; do
        n=$((n + 1))
        # No image lock: two guests side by side share the Debian images
        # disk. Still attached writable, so a write would change the
        # sha256 every scenario checks afterwards.
        drives+=(-drive "file=${d%@*},format=raw,if=none,id=d$n,file.locking=off${VM_DRIVE_OPTIONS:-}")
        case $d in
        *@4k) drives+=(-device "virtio-blk-pci,drive=d$n,logical_block_size=4096,physical_block_size=4096") ;;
        *@nvme) drives+=(-device "nvme,drive=d$n,serial=cowtest$n") ;;
        *@sata) drives+=(-device "ahci,id=ahci$n" -device "ide-hd,drive=d$n,bus=ahci$n.0") ;;
        *) drives+=(-device "virtio-blk-pci,drive=d$n") ;;
        esac
    done
    local serial=(-serial "file:$WORK/$name.log")
    if [ -n "${VM_SERIAL_PIPE:-}" ]; then
        serial=(-chardev "pipe,id=s0,path=$VM_SERIAL_PIPE" -serial chardev:s0)
    else
        rm -f "$WORK/$name.log"
    fi
    CONSOLE="$WORK/$name.log"
    # VM_BOOT_ISO: the firmware boots that CD (a boot loader) instead.
    local boot=(-kernel "${VM_KERNEL:-$KERNEL}" -initrd "${VM_INITRD:-$INITRD}" -append "$VM_KERNEL_CMDLINE $cmdline")
    [ -z "${VM_BOOT_ISO:-}" ] || boot=(-cdrom "$VM_BOOT_ISO" -boot d)
    # VM_NET=1: a network card on QEMU's user-mode network, where the
    # guest (10.0.2.15) reaches the host's loopback as 10.0.2.2.
    local net=()
    [ -z "${VM_NET:-}" ] || net=(-netdev "user,id=n0" -device "virtio-net-pci,netdev=n0")
    qemu-system-x86_64 -accel tcg -cpu max -smp "$QEMU_SMP" -m 1024 \
        -nodefaults -display none -no-reboot \
        "${serial[@]}" "${boot[@]}" "${drives[@]}" "${net[@]}" &
    QEMU_PID=$!
}

# qemu_start_interactive NAME "CMDLINE" DISK...: qemu_start with the
# serial console on a pair of fifos, so the test can type into the guest
# (console_send); what the guest prints still lands in $CONSOLE.
qemu_start_interactive() {
    local name=$1
    VM_SERIAL_PIPE="$WORK/$name.serial"
    rm -f "$VM_SERIAL_PIPE.in" "$VM_SERIAL_PIPE.out" "$WORK/$name.log"
    mkfifo "$VM_SERIAL_PIPE.in" "$VM_SERIAL_PIPE.out"
    # Read-write opens of a fifo do not block, and keep it open for QEMU.
    exec 7<>"$VM_SERIAL_PIPE.in"
    cat "$VM_SERIAL_PIPE.out" > "$WORK/$name.log" &
    CONSOLE_READER=$!
    VM_SERIAL_PIPE=$VM_SERIAL_PIPE qemu_start "$@"
    unset VM_SERIAL_PIPE
}

# console_wait PATTERN COUNT SECONDS: waits until PATTERN has shown COUNT
# times on the console; fails if it does not in time or QEMU ends.
console_wait() {
    local pattern=$1 count=$2 waited=0
    until [ "$(grep -acE -- "$pattern" "$CONSOLE" 2>/dev/null)" -ge "$count" ]; do
        if [ "$waited" -ge "$3" ] || ! kill -0 "$QEMU_PID" 2>/dev/null; then
            console_stop
            tail -n 30 "$CONSOLE" >&2
            die "/$pattern/ did not show $count times within $3 s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# console_send TEXT: types TEXT (printf %b escapes: \n, \004 for Ctrl-D).
console_send() {
    printf '%b' "$1" >&7
}

# Pulls the plug of an interactive guest and closes its console. (The
# waits return the killed processes' status: not a failure here.)
console_stop() {
    kill -9 "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
    kill "$CONSOLE_READER" 2>/dev/null || true
    wait "$CONSOLE_READER" 2>/dev/null || true
    exec 7>&-
    console_tidy
    return 0
}

# The serial console ends lines with CR LF.
console_tidy() {
    [ -f "$CONSOLE" ] && sed -i 's/\r$//' "$CONSOLE"
    return 0
}

# A guest kernel under TCG very rarely stalls for good before it starts
# init (seen once in ~100 boots, in the kernel's own early setup). Such a
# stall cannot involve cowroot, so the boot is retried; a stall after init
# has started is a failure like any other.
STALL_SECONDS=${STALL_SECONDS:-60}
stalled_before_init() {
    ! grep -q 'Run /init as init process' "$CONSOLE" 2>/dev/null
}

# run_vm NAME "CMDLINE" DISK...: boots the guest and waits for it to power
# off by itself. Fails if it does not within QEMU_TIMEOUT seconds, or if the
# guest did not get to the end of its work.
run_vm() {
    local waited size last_size quiet attempt
    for attempt in 1 2 3; do
        qemu_start "$@"
        waited=0 quiet=0 last_size=-1
        while kill -0 "$QEMU_PID" 2>/dev/null; do
            size=$(stat -c %s "$CONSOLE" 2>/dev/null || echo 0)
            if [ "$size" = "$last_size" ]; then quiet=$((quiet + 1)); else quiet=0; last_size=$size; fi
            if [ $quiet -ge "$STALL_SECONDS" ] && stalled_before_init; then
                log "$1: the guest kernel stalled before starting init (attempt $attempt); booting again"
                kill -9 "$QEMU_PID" 2>/dev/null
                wait "$QEMU_PID" 2>/dev/null || true
                continue 2
            fi
            if [ $waited -ge "$QEMU_TIMEOUT" ]; then
                # The killed QEMU's status is no failure of its own (set -e
                # would stop here and hide the message below).
                kill -9 "$QEMU_PID" 2>/dev/null
                wait "$QEMU_PID" 2>/dev/null || true
                console_tidy
                log "--- console of $1 ---"; tail -n 40 "$CONSOLE" >&2
                die "$1: the guest did not power off within $QEMU_TIMEOUT s"
            fi
            sleep 1
            waited=$((waited + 1))
        done
        wait "$QEMU_PID" || { console_tidy; tail -n 40 "$CONSOLE" >&2; die "QEMU for $1 failed"; }
        console_tidy
        VM_SECONDS=$waited
        grep -qE -- "$VM_DONE_PATTERN" "$CONSOLE" || { tail -n 40 "$CONSOLE" >&2; die "$1: the guest did not finish its work"; }
        return 0
    done
    die "$1: the guest kernel stalled before init three times"
}

# run_vm_cut NAME "CMDLINE" PATTERN SECONDS DISK...: boots the guest and
# pulls the plug (SIGKILL) SECONDS after PATTERN shows on the console.
run_vm_cut() {
    local name=$1 cmdline=$2 pattern=$3 delay=$4 waited size last_size quiet attempt
    shift 4
    for attempt in 1 2 3; do
        qemu_start "$name" "$cmdline" "$@"
        waited=0 quiet=0 last_size=-1
        until grep -q -- "$pattern" "$CONSOLE" 2>/dev/null; do
            sleep 1
            waited=$((waited + 1))
            size=$(stat -c %s "$CONSOLE" 2>/dev/null || echo 0)
            if [ "$size" = "$last_size" ]; then quiet=$((quiet + 1)); else quiet=0; last_size=$size; fi
            if [ $quiet -ge "$STALL_SECONDS" ] && stalled_before_init; then
                log "$name: the guest kernel stalled before starting init (attempt $attempt); booting again"
                kill -9 "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null || true
                continue 2
            fi
            if [ $waited -ge "$QEMU_TIMEOUT" ] || ! kill -0 "$QEMU_PID" 2>/dev/null; then
                kill -9 "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null || true
                console_tidy
                tail -n 40 "$CONSOLE" >&2
                die "$name: /$pattern/ never showed"
            fi
        done
        sleep "$delay"
        kill -9 "$QEMU_PID"
        wait "$QEMU_PID" 2>/dev/null || true
        console_tidy
        return 0
    done
    die "$name: the guest kernel stalled before init three times"
}

# The number after PREFIX on the last console (empty if none).
console_number() {
    sed -n "s/.*$1\([0-9]*\).*/\1/p" "$CONSOLE" | head -n 1
}

# Assertions on the last console.
# -a: a console may carry bytes that are not text (a test's own command line).
expect() {
    grep -aqE -- "$1" "$CONSOLE" || { log "--- console ---"; grep -aE 'COWTEST|cowroot' "$CONSOLE" >&2 || true; die "expected /$1/ on the console ($CONSOLE)"; }
}
reject() {
    if grep -aqE -- "$1" "$CONSOLE"; then grep -aE -- "$1" "$CONSOLE" >&2; die "did not expect /$1/ on the console ($CONSOLE)"; fi
}
same() {
    [ "$1" = "$2" ] || die "$3: $1 != $2"
}
