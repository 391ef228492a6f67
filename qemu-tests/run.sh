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
# shellcheck source=qemu-tests/scenarios-stacks.sh
. "$here/scenarios-stacks.sh"
# shellcheck source=qemu-tests/scenarios-modes.sh
. "$here/scenarios-modes.sh"
# shellcheck source=qemu-tests/scenarios-lab.sh
. "$here/scenarios-lab.sh"
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
 debian_dracut_systemd_fedora_udev_rule_order debian_dracut_nosystemd_root_stale_partuuid
 debian_initramfs_tools_root_stale_partuuid debian_initramfs_tools_root_stale_uuid debian_initramfs_tools_root_label
 debian_initramfs_tools_root_dev_vda debian_dracut_nosystemd_root_stale_uuid debian_dracut_nosystemd_root_absent
 debian_dracut_nosystemd_root_label debian_dracut_nosystemd_root_dev_vda debian_dracut_systemd_root_stale_partuuid
 debian_dracut_systemd_root_label debian_dracut_systemd_root_dev_vda
 debian_dracut_nosystemd_luks_image_host debian_dracut_nosystemd_md_image_host
 debian_dracut_nosystemd_lvm_image_host debian_dracut_nosystemd_keep_then_reset debian_dracut_systemd_root_absent
 debian_dracut_systemd_md_image_host "
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

# Two lanes by default (QEMU_LANES): each takes the next scenario from one
# queue, so two guests run side by side, one CPU each (QEMU_SMP=1). The
# long Debian scenarios go first, the short ones fill in at the end.
LANES=${QEMU_LANES:-2}
[ "$LANES" -gt 1 ] && QEMU_SMP=1
{
    printf '%s\n' "${selected[@]}" | grep '^debian_'
    printf '%s\n' "${selected[@]}" | grep '^crash_'
    printf '%s\n' "${selected[@]}" | grep -v '^debian_\|^crash_\|^lab_'
} > "$WORK/queue"
rm -f "$WORK/results"

next_scenario() {
    {
        flock 9
        head -n 1 "$WORK/queue"
        sed -i 1d "$WORK/queue"
    } 9> "$WORK/queue.lock"
}

run_lane() {
    local name start rc secs verdict
    while name=$(next_scenario) && [ -n "$name" ]; do
        start=$(date +%s)
        # A step that fails under set -e says which one, so no failure is silent.
        ( set -eEuo pipefail; trap 'log "failed: line $LINENO: $BASH_COMMAND"' ERR; "scenario_$name" ) > "$WORK/$name.out" 2>&1
        rc=$?
        secs=$(( $(date +%s) - start ))
        verdict=PASS
        [ $rc = 0 ] || verdict=FAIL
        printf '%s %-55s %4ds\n' "$verdict" "$name" "$secs"
        echo "$verdict $name" >> "$WORK/results"
    done
}

started=$(date +%s)
for _ in $(seq "$LANES"); do run_lane & done
wait
# The lab scenarios boot three guests at once: alone, after the lanes.
printf '%s\n' "${selected[@]}" | grep '^lab_' > "$WORK/queue"
run_lane
passed=$(grep -c '^PASS ' "$WORK/results" 2>/dev/null || true)
passed=${passed:-0}
failures=()
mapfile -t failures < <(sed -n 's/^FAIL //p' "$WORK/results" 2>/dev/null)
# Every selected scenario must have a verdict: a lane that died is a failure.
missing=$(( ${#selected[@]} - passed - ${#failures[@]} ))
for name in "${failures[@]}"; do
    echo "--- $name"
    sed 's/^/    /' "$WORK/$name.out" | tail -n 30
done
[ -f "$WORK/debian-measures" ] && sed 's/^/measured: /' "$WORK/debian-measures"
failed=$(( ${#failures[@]} + missing ))
[ ${#failures[@]} = 0 ] || log "failed: ${failures[*]}"
[ $missing = 0 ] || log "$missing scenarios have no verdict"
log "scenarios took $(( $(date +%s) - started )) s in $LANES lanes"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
