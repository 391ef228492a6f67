#!/bin/sh
# Installs everything the build and the VM tests need on a fresh Debian
# machine (run as root). Does nothing when all is there already.
# nbd-client goes into the lab guests' initramfs; qemu-utils serves their
# origin (qemu-nbd).
set -eu

packages="qemu-system-x86 busybox-static e2fsprogs kmod cpio gzip fdisk file
musl-tools clang-14 libclang1-14 libdevmapper-dev pkg-config shellcheck
make mmdebstrap lvm2 util-linux thin-provisioning-tools xfsprogs btrfs-progs dmsetup
cryptsetup-bin mdadm zsh groff-base grub-common grub-pc-bin xorriso nbd-client qemu-utils"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing" >&2
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
        || rustup target add x86_64-unknown-linux-musl >&2
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust with rustup" >&2; exit 1; }
