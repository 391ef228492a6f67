#!/bin/bash
# The main job: boots a real Debian kernel in QEMU four times over one image
# and one blank pool, and prints what happens: the pool is formatted, a
# change is written, kept across a reboot, then discarded by a reset.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=qemu-tests/lib.sh
. "$here/qemu-tests/lib.sh"

mkdir -p "$WORK"
ensure_prereqs
build_binary
ensure_kernel
build_initramfs
D="$WORK/demo"
rm -rf "$D"
mkdir -p "$D"
make_origin "$D/root.img" "demo-origin"
make_images_disk "$D/images.img" "$D/root.img"
blank_disk "$D/pool.img" 256M
before=$(sha "$D/images.img")
keys="cowroot=/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb"

show() {
    sed -n -e 's/^\[ *[0-9.]*\] \(cowroot: .*\)/    \1/p' -e 's/^COWTEST \(status-text: \)\{0,1\}\(.*\)/    \2/p' "$CONSOLE" \
        | grep -vE '^    (start actions|done|unmounted)'
}

step() {
    local title=$1 cmdline=$2
    printf '\n== %s\n   kernel command line: %s\n' "$title" "$cmdline"
    run_vm "demo" "$cmdline" "$D/images.img" "$D/pool.img"
    show
}

echo "cowroot demo: kernel $KVER, image $D/root.img on an ext4 disk labelled 'images', blank 256 MiB pool"
step "boot 1: blank pool is formatted, a change is written" "$keys cowtest=boot,check,write"
step "boot 2: the change is kept" "$keys cowtest=boot,check,status"
step "boot 3: cowroot.reset=1 discards it" "$keys cowroot.reset=1 cowtest=boot,check"
step "boot 4: preview of the next boot (dry run)" "$keys cowtest=dryrun"
after=$(sha "$D/images.img")
printf '\nimage disk sha256 before: %s\nimage disk sha256 after:  %s\n' "$before" "$after"
[ "$before" = "$after" ] || die "the image disk changed"
echo "the image was never written."
