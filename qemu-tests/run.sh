#!/bin/bash
# Runs the VM scenarios (all, or those whose names contain an argument) and
# prints one line per scenario with its time, then "N passed, N failed".
# A scenario that cannot run (no QEMU, no kernel) fails; nothing is skipped.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=qemu-tests/lib.sh
. "$here/lib.sh"
# shellcheck source=qemu-tests/scenarios.sh
. "$here/scenarios.sh"
# shellcheck source=qemu-tests/scenarios-crash.sh
. "$here/scenarios-crash.sh"
# shellcheck source=qemu-tests/scenarios-config.sh
. "$here/scenarios-config.sh"
# shellcheck source=qemu-tests/debian.sh
. "$here/debian.sh"
# shellcheck source=qemu-tests/scenarios-debian.sh
. "$here/scenarios-debian.sh"
# shellcheck source=qemu-tests/scenarios-hostfs.sh
. "$here/scenarios-hostfs.sh"
set +e

mkdir -p "$WORK"
(ensure_prereqs && build_binary) || { echo "0 passed, 1 failed"; exit 1; }
ensure_kernel || { echo "0 passed, 1 failed"; exit 1; }
build_initramfs || { echo "0 passed, 1 failed"; exit 1; }
log "kernel $KVER, binary $(stat -c %s "$BIN") bytes"

mapfile -t all < <(declare -F | awk '{print $3}' | grep '^scenario_' | sed 's/^scenario_//')
# Run by ./test.sh --full (COWROOT_FULL=1) or when named: the same fault
# class is proven under another generator in every run.
FULL_ONLY=" debian_dracut_nosystemd_onfail_halt debian_dracut_systemd_onfail_halt debian_dracut_nosystemd_onfail_ro
 debian_dracut_nosystemd_onfail_shell debian_dracut_nosystemd_lvm_pool
 debian_initramfs_tools_root_stale_partuuid debian_initramfs_tools_root_stale_uuid debian_initramfs_tools_root_label
 debian_initramfs_tools_root_dev_vda debian_dracut_nosystemd_root_stale_uuid debian_dracut_nosystemd_root_absent
 debian_dracut_nosystemd_root_label debian_dracut_nosystemd_root_dev_vda debian_dracut_systemd_root_stale_partuuid
 debian_dracut_systemd_root_label debian_dracut_systemd_root_dev_vda "
selected=()
for name in "${all[@]}"; do
    if [ $# = 0 ]; then
        [[ ${COWROOT_FULL:-} != 1 && $FULL_ONLY =~ [[:space:]]${name}[[:space:]] ]] && continue
        selected+=("$name")
        continue
    fi
    for want in "$@"; do [[ $name == *"$want"* ]] && { selected+=("$name"); break; }; done
done
[ ${#selected[@]} -gt 0 ] || { log "no scenario matches: $*"; echo "0 passed, 1 failed"; exit 1; }

# The Debian scenarios share one images disk, built once per run.
if printf '%s\n' "${selected[@]}" | grep -q '^debian_'; then
    start=$(date +%s)
    # Not inside `if !` or `||`: bash turns set -e off there, and an
    # unguarded failing step would go unseen.
    ( set -euo pipefail; debian_images "$WORK/debian-env" ) > "$WORK/debian-build.out" 2>&1
    built=$?
    if [ $built != 0 ]; then
        tail -n 30 "$WORK/debian-build.out"
        echo "FAIL building the Debian test images"
        echo "0 passed, 1 failed"
        exit 1
    fi
    # shellcheck source=/dev/null
    . "$WORK/debian-env"
    log "Debian test images ready in $(( $(date +%s) - start )) s"
fi
rm -f "$WORK/debian-measures"

passed=0 failed=0 failures=()
for name in "${selected[@]}"; do
    start=$(date +%s)
    # A step that fails under set -e says which one, so no failure is silent.
    ( set -eEuo pipefail; trap 'log "failed: line $LINENO: $BASH_COMMAND"' ERR; "scenario_$name" ) > "$WORK/$name.out" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc = 0 ]; then
        passed=$((passed + 1)); printf 'PASS %-55s %4ds\n' "$name" "$secs"
    else
        failed=$((failed + 1)); failures+=("$name"); printf 'FAIL %-55s %4ds\n' "$name" "$secs"
        sed 's/^/    /' "$WORK/$name.out" | tail -n 30
    fi
done
[ -f "$WORK/debian-measures" ] && sed 's/^/measured: /' "$WORK/debian-measures"
[ $failed = 0 ] || log "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ $failed = 0 ]
