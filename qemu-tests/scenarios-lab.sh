#!/bin/bash
# A lab from one golden image: qemu-nbd serves one origin image, read-only,
# on the host's loopback; busybox guests reach it through QEMU's user-mode
# network (10.0.2.2), each with its own pool disk. Three boot at once (one
# CPU each), each keeps its own change, one resets, the served image never
# changes; then the server goes away under a running guest; then a guest
# copies the origin to a local disk (cowroot.hydrate) and boots without
# the server. Run alone after the lanes (see run.sh): three guests are
# all these machines' cores can take.
# shellcheck disable=SC2154,SC2034  # CONSOLE, INITRD, ... are lib.sh's

# lab_initrd: the busybox test initramfs with nbd-client (and the
# libraries it links) and the network and nbd modules. Sets LAB_INITRD.
lab_initrd() {
    local extra="$WORK/lab-initramfs"
    rm -rf "$extra"
    mkdir -p "$extra"
    copy_with_libs /usr/sbin/nbd-client "$extra"
    LAB_INITRD="$WORK/lab-initramfs.cpio.gz"
    initrd_with_modules "$LAB_INITRD" "$extra" virtio_net nbd
}

# lab_serve IMAGE: qemu-nbd serves IMAGE as export "lab" on a free
# loopback port, to any number of clients. Writable on purpose (a real
# server exports read-only, see the README): the clients' read-only
# connection must keep the image unchanged on its own, and the sha256
# checks would see a write. Sets LAB_PORT, LAB_SERVER.
lab_serve() {
    local tries=0
    while :; do
        LAB_PORT=$((20000 + RANDOM % 20000))
        qemu-nbd --persistent --shared=0 --format=raw --export-name=lab \
            --bind=127.0.0.1 --port="$LAB_PORT" "$1" 2> "$WORK/lab-server.err" &
        LAB_SERVER=$!
        # Listening once the port answers; a port in use ends qemu-nbd.
        local waited=0
        while [ $waited -lt 20 ] && kill -0 "$LAB_SERVER" 2>/dev/null; do
            if (exec 3<> "/dev/tcp/127.0.0.1/$LAB_PORT") 2>/dev/null; then return 0; fi
            sleep 0.5
            waited=$((waited + 1))
        done
        kill "$LAB_SERVER" 2>/dev/null
        wait "$LAB_SERVER" 2>/dev/null
        tries=$((tries + 1))
        [ $tries -lt 5 ] || die "qemu-nbd did not start: $(cat "$WORK/lab-server.err")"
    done
}

# stop_server_on_cue NAME: stops the server once guest NAME says it waits
# for that (within QEMU_TIMEOUT); stop_cue_watch ends the watch however the
# guest ended, so a guest that never asked cannot leave it running.
stop_server_on_cue() {
    rm -f "$WORK/$1.log"
    (
        for _ in $(seq "$QEMU_TIMEOUT"); do
            if grep -q 'waiting for the server to stop' "$WORK/$1.log" 2>/dev/null; then
                kill "$LAB_SERVER"
                exit 0
            fi
            sleep 1
        done
    ) &
    CUE_WATCH=$!
}

stop_cue_watch() {
    [ -n "${CUE_WATCH:-}" ] || return 0
    kill "$CUE_WATCH" 2>/dev/null || true
    wait "$CUE_WATCH" 2>/dev/null || true
    CUE_WATCH=
}

lab_stop_server() {
    kill "$LAB_SERVER" 2>/dev/null || true
    wait "$LAB_SERVER" 2>/dev/null || true
}

# lab_boot NAME "CMDLINE" DISK...: one lab guest, booted from the served
# image; its wall time lands in $WORK/NAME.secs. Runs in the background
# when called with &.
lab_boot() {
    local name=$1 keys=$2
    shift 2
    VM_NET=1 VM_INITRD=$LAB_INITRD run_vm "$name" "cowroot=nbd://10.0.2.2:$LAB_PORT/lab cowpool=/dev/vda $keys" "$@"
    echo "$VM_SECONDS" > "$WORK/$name.secs"
}

# copy_holds DISK IMAGE WHY: DISK is a hydration device holding IMAGE
# (64 MiB) whole, after cowroot's header.
copy_holds() {
    [ "$(head -c 8 "$1")" = COWHYDR1 ] || die "$3: no hydration header on $1"
    cmp -n $((64 << 20)) -i $((1 << 20)):0 "$1" "$2" || die "$3"
}

# Checks a finished guest's console (by name).
on_console() {
    CONSOLE="$WORK/$1.log"
}

scenario_lab_one_image_many_machines() {
    local D="$WORK/lab" g
    rm -rf "$D"
    mkdir -p "$D"
    make_origin "$D/golden.img" golden-v1
    local golden_sha
    golden_sha=$(sha "$D/golden.img")
    for g in a b c; do blank_disk "$D/pool-$g.img" 128M; done
    lab_initrd
    lab_serve "$D/golden.img"
    trap 'stop_cue_watch; lab_stop_server' EXIT
    local QEMU_SMP=1

    # One machine alone, then three at once (one CPU each).
    lab_boot lab-a1 "cowtest=net,boot,note:alpha,noted" "$D/pool-a.img"
    expect 'COWTEST network up'
    expect 'COWTEST boot rc=0'
    expect "ready: origin nbd://10.0.2.2:$LAB_PORT/lab \\(64.0 MiB\\), pool /dev/vda, generation 1 \\(formatted\\)"
    expect 'COWTEST note: alpha'
    expect 'COWTEST origin file: golden-v1'
    local started=$SECONDS pa pb pc
    lab_boot lab-a2 "cowtest=net,boot,noted" "$D/pool-a.img" &
    pa=$!
    lab_boot lab-b1 "cowtest=net,boot,note:bravo,noted" "$D/pool-b.img" &
    pb=$!
    lab_boot lab-c1 "cowtest=net,boot,note:charlie,noted" "$D/pool-c.img" &
    pc=$!
    if ! { wait "$pa" && wait "$pb" && wait "$pc"; }; then die "a lab guest failed (see above)"; fi
    local together=$((SECONDS - started))
    on_console lab-a2
    expect 'ready: .* generation 1 \(kept\)'
    expect 'COWTEST note: alpha'
    for g in b:bravo c:charlie; do
        on_console "lab-${g%%:*}1"
        expect 'generation 1 \(formatted\)'
        expect "COWTEST note: ${g#*:}"
    done
    log "measured: one guest alone $(cat "$WORK/lab-a1.secs") s; three at once $together s (each $(cat "$WORK/lab-a2.secs") s, $(cat "$WORK/lab-b1.secs") s, $(cat "$WORK/lab-c1.secs") s)"
    echo "lab: one guest booted in $(cat "$WORK/lab-a1.secs") s alone; three at once in $together s" >> "$WORK/debian-measures"

    # Each keeps its own change; one resets.
    lab_boot lab-b2 "cowtest=net,boot,noted" "$D/pool-b.img" &
    pb=$!
    lab_boot lab-c2 "cowroot.reset=1 cowtest=net,boot,noted" "$D/pool-c.img" &
    pc=$!
    if ! { wait "$pb" && wait "$pc"; }; then die "a lab guest failed (see above)"; fi
    on_console lab-b2
    expect 'COWTEST note: bravo'
    on_console lab-c2
    expect 'generation 2 \(reset\)'
    expect 'COWTEST note absent'
    expect 'COWTEST origin file: golden-v1'

    # The server goes away under a running guest.
    stop_server_on_cue lab-a3
    lab_boot lab-a3 "cowtest=net,boot,serverloss" "$D/pool-a.img"
    stop_cue_watch
    expect 'COWTEST origin block read failed: .*Input/output error'
    expect 'COWTEST pooled note reads: alpha'
    expect 'COWTEST origin file read failed: .*Input/output error'
    lab_stop_server

    # A machine whose server does not answer fails its boot (onfail=shell
    # is the busybox init going on here), after cowroot.timeout.
    lab_boot lab-a4 "cowroot.timeout=5 cowtest=net,boot" "$D/pool-a.img"
    expect "COWTEST boot rc=1"
    expect "the NBD server nbd://10.0.2.2:$LAB_PORT/lab \\(cowroot=\\) did not serve its export within 5 s"
    same "$(sha "$D/golden.img")" "$golden_sha" "the served image changed"
}

scenario_lab_hydrate_then_serverless() {
    local D="$WORK/lab-hydrate" v1_sha v2_sha
    rm -rf "$D"
    mkdir -p "$D"
    make_origin "$D/golden-v1.img" golden-v1
    make_origin "$D/golden-v2.img" golden-v2
    v1_sha=$(sha "$D/golden-v1.img")
    v2_sha=$(sha "$D/golden-v2.img")
    blank_disk "$D/pool.img" 128M
    blank_disk "$D/copy.img" 80M
    lab_initrd
    lab_serve "$D/golden-v1.img"
    trap 'stop_cue_watch; lab_stop_server' EXIT
    local QEMU_SMP=2 keys="cowroot.hydrate=/dev/vdb cowroot.timeout=8"

    # A device that holds something (btrfs, whose superblock sits at
    # 64 KiB) is never taken for blank: the boot fails closed, untouched.
    blank_disk "$D/foreign.img" 128M
    mkfs.btrfs -q "$D/foreign.img"
    local foreign_sha
    foreign_sha=$(sha "$D/foreign.img")
    lab_boot lab-d0 "$keys cowtest=net,boot" "$D/pool.img" "$D/foreign.img"
    expect 'COWTEST boot rc=1'
    expect 'cowroot.hydrate: /dev/vdb holds a btrfs filesystem; cowroot writes its copy only to an empty device'
    same "$(sha "$D/foreign.img")" "$foreign_sha" "the foreign hydration device changed"

    # The copy is made while the machine runs on the server, then the
    # root moves onto it: the server can go.
    stop_server_on_cue lab-d1
    lab_boot lab-d1 "$keys cowtest=net,boot,note:delta,hydrate,awaitserverstop,noted" "$D/pool.img" "$D/copy.img"
    stop_cue_watch
    expect 'COWTEST boot rc=0'
    expect 'COWTEST before: hydration: +0% \(0 B of 64.0 MiB\) copied from nbd://10.0.2.2:[0-9]+/lab to /dev/vdb'
    expect 'COWTEST hydrate rc=0'
    expect 'COWTEST hydrate: copied 64.0 MiB in [0-9.]+ s \([0-9.]+ MiB/s\); the root now reads the local copy on /dev/vdb'
    expect 'COWTEST after: hydration: +complete: the root reads the local copy on /dev/vdb'
    expect 'COWTEST after: origin: +nbd://10.0.2.2:[0-9]+/lab, its local copy on /dev/vdb \(/dev/dm-[0-9]+\)'
    expect 'COWTEST nbd devices connected: 0'
    expect 'COWTEST server gone after [0-9]+ s'
    expect 'COWTEST origin block reads'
    expect 'COWTEST origin file reads'
    expect 'COWTEST note: delta'
    local rate
    rate=$(sed -n 's/.*COWTEST hydrate: copied 64.0 MiB in \([0-9.]* s\) (\([0-9.]* MiB\/s\)).*/\1, \2/p' "$CONSOLE")
    log "measured: hydration of 64 MiB over NBD: $rate"
    echo "lab: hydration of 64 MiB over NBD (loopback, TCG guest): $rate" >> "$WORK/debian-measures"
    copy_holds "$D/copy.img" "$D/golden-v1.img" "the copy is not the served image"

    # No server: the boot waits cowroot.timeout, then takes the copy.
    lab_boot lab-d2 "$keys cowtest=net,boot,noted,status" "$D/pool.img" "$D/copy.img"
    expect 'COWTEST boot rc=0'
    expect 'did not serve its export within 8 s'
    expect 'booting from the complete local copy of nbd://10.0.2.2:[0-9]+/lab on /dev/vdb'
    expect 'ready: origin nbd://10.0.2.2:[0-9]+/lab, its local copy on /dev/vdb'
    expect 'ready: .* generation 1 \(kept\)'
    expect 'COWTEST note: delta'
    expect 'COWTEST origin file: golden-v1'
    expect 'COWTEST status-text: hydration: +complete'

    # A new version on the server: refused by default (the copy and the
    # kept changes are of the old one), taken with cowroot.onchange=reset,
    # and copied anew.
    lab_serve "$D/golden-v2.img"
    lab_boot lab-d3 "$keys cowtest=net,boot" "$D/pool.img" "$D/copy.img"
    expect 'serves another image than the local copy on /dev/vdb'
    expect 'COWTEST boot rc=1'
    expect 'is not the image the kept changes were made on'
    copy_holds "$D/copy.img" "$D/golden-v1.img" "the refused boot changed the copy"
    lab_boot lab-d4 "$keys cowroot.onchange=reset cowtest=net,boot,noted,hydrate" "$D/pool.img" "$D/copy.img"
    expect 'ready: .* generation 2 \(reset: new origin\)'
    expect 'COWTEST note absent'
    expect 'COWTEST origin file: golden-v2'
    expect 'COWTEST before: hydration: +0% \(0 B of 64.0 MiB\)'
    expect 'COWTEST hydrate: copied 64.0 MiB'
    copy_holds "$D/copy.img" "$D/golden-v2.img" "the copy is not the new image"
    lab_stop_server
    same "$(sha "$D/golden-v1.img")" "$v1_sha" "the served image v1 changed"
    same "$(sha "$D/golden-v2.img")" "$v2_sha" "the served image v2 changed"
}

# The Debian test root served by qemu-nbd, booted through initramfs-tools:
# its configure_networking brings the network up (DHCP from QEMU, no ip=),
# the distribution's nbd-client connects the origin, the changes persist,
# and the booted system's cowroot-hydrate.service finds nothing to copy.
scenario_debian_initramfs_tools_nbd_origin() {
    local pool="$WORK/debian-nbd-pool.img" keys
    blank_disk "$pool" 1G
    lab_serve "$DEB_ROOT_IMG"
    trap 'stop_cue_watch; lab_stop_server' EXIT
    keys="cowroot=nbd://10.0.2.2:$LAB_PORT/lab cowpool=/dev/vda"
    VM_NET=1 DEB_BOOT_INITRD=$DEB_INITRD_NBD run_debian debian-nbd-1 "$keys" "$pool"
    expect "cowroot: /dev/mapper/cowroot ready: origin nbd://10.0.2.2:$LAB_PORT/lab \\([0-9.]+ GiB\\), pool /dev/vda, generation 1 \\(formatted\\)"
    expect_cow_root
    expect 'COWTEST marker written'
    expect "\"origin\":\"nbd://10.0.2.2:$LAB_PORT/lab\",\"origin_device\":\"/dev/nbd0\""
    expect "COWTEST hydrate: nothing to copy: this boot's origin nbd://10.0.2.2:$LAB_PORT/lab has no cowroot.hydrate device"
    VM_NET=1 DEB_BOOT_INITRD=$DEB_INITRD_NBD run_debian debian-nbd-2 "$keys" "$pool"
    expect 'generation 1 \(kept\)'
    expect_cow_root
    expect 'COWTEST marker present: written at boot'
    expect 'reboot: Power down'
    lab_stop_server
    same "$(sha "$DEB_ROOT_IMG")" "$DEB_ROOT_SHA" "the served Debian root image changed"
}
