#!/bin/bash
# The entries hold GRUB variables, literal in the patterns here.
# shellcheck disable=SC2016
# Checks `cowroot grub`: the entries it prints for sample configurations
# parse with grub-script-check and carry the right keys.
# Usage: qemu-tests/grub-check.sh BINARY
set -euo pipefail
bin=$1
fail() { echo "grub: $*" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# entries NAME CONF: the entries for CONF, checked by GRUB's own parser.
entries() {
    printf '%s\n' "$2" > "$dir/$1.conf"
    GRUB_CMDLINE_LINUX="console=ttyS0" GRUB_CMDLINE_LINUX_DEFAULT="quiet" \
        "$bin" grub --config "$dir/$1.conf" > "$dir/$1.cfg" || fail "$1: cowroot grub failed"
    [ "$1" = none ] || grub-script-check "$dir/$1.cfg" || fail "$1: grub-script-check refused the entries: $(cat "$dir/$1.cfg")"
    cat "$dir/$1.cfg"
}
# has TEXT PATTERN WHAT
has() { [[ $1 == *"$2"* ]] || fail "$3: no '$2' in: $1"; }

out=$(entries file 'cowroot=/images/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.keep=2')
[ "$(grep -c '^menuentry' <<<"$out")" = 2 ] || fail "file: expected normal and reset entries: $out"
has "$out" 'loopback cowroot_loop ($cowroot_host)/images/root.img' file
has "$out" 'search --no-floppy --set=cowroot_host --label images' file
has "$out" 'root=/dev/mapper/cowroot ro cowroot=/images/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.keep=2 cowroot.reset=1 console=ttyS0 quiet' file
has "$out" 'initrd ($cowroot_image)${cowroot_boot}/initrd.img' file

out=$(entries frozen "cowroot=\"/my images/kiosk.img\" cowroot.dev=UUID=0c0ffee0-1234-4321-abcd-00000000c0de cowpool=LABEL=pool cowroot.mode=frozen cowroot.name=kiosk")
[ "$(grep -c '^menuentry' <<<"$out")" = 3 ] || fail "frozen: expected normal, reset and maintenance entries: $out"
has "$out" "--id cowroot-kiosk-maintenance" frozen
has "$out" 'root=/dev/mapper/kiosk ro' frozen
has "$out" 'cowroot.mode=frozen cowroot.name=kiosk cowroot.maintenance=1 console=ttyS0 quiet' frozen
has "$out" "--fs-uuid 0c0ffee0-1234-4321-abcd-00000000c0de" frozen

out=$(entries device 'cowroot=LABEL=golden cowpool=/dev/vdb cowroot.mode=volatile')
[ "$(grep -c '^menuentry' <<<"$out")" = 1 ] || fail "device: a volatile root needs no reset entry: $out"
has "$out" 'search --no-floppy --set=cowroot_image --label golden' device

# A quote GRUB would hand the kernel behind a backslash: refused.
printf '%s\n' "cowroot=/images/kiosk's.img cowroot.dev=LABEL=images cowpool=/dev/vdb" > "$dir/quote.conf"
if refused=$("$bin" grub --config "$dir/quote.conf" 2>&1); then fail "quote: a value with ' gave entries: $refused"; fi
has "$refused" "cowroot: /images/kiosk's.img holds ' \" or \\, which GRUB passes" quote

out=$(entries none '# cowroot is not configured here')
has "$out" 'sets no cowroot=' none
echo "grub: entries for 4 configurations parse with grub-script-check"
