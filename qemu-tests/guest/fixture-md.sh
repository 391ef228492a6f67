#!/bin/busybox sh
# shellcheck shell=dash disable=SC2154  # action and say come from init
# The builder of the md storage-stack fixture (scenarios-stacks.sh): its
# initramfs appends this file as /fixture.sh, which the test init sources
# for a `fixture-*` action, with mdadm (the init loaded raid1). /dev/vda and
# /dev/vdb are the members, whose data areas the host filled already;
# --assume-clean makes mdadm write its superblocks and nothing else.

case "$action" in
fixture-md-raid1)
    mkdir -p /run/mdadm
    if mdadm --create /dev/md0 --run --metadata=1.2 --level=1 --raid-devices=2 --assume-clean \
        --bitmap=none --data-offset=1M --uuid="$(cat /md-uuid)" --name=cowhost --homehost=cowroot-test \
        /dev/vda /dev/vdb > /tmp/mdadm.log 2>&1 && mdadm --stop /dev/md0 >> /tmp/mdadm.log 2>&1; then
        say "fixture ready: md raid1"
    else
        say "fixture mdadm failed: $(tr '\n' ' ' < /tmp/mdadm.log)"
    fi
    ;;
*)
    say "fixture: unknown fixture $action"
    ;;
esac
