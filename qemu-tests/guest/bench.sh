# shellcheck shell=dash
# The benchmark's guest part (qemu-tests/bench.sh), sourced by the test
# init for the `bench` action. Disks: vda the images disk (/root.img), vdb
# the pool, vdc a small pool that is blanked before every format boot, vdd
# a 64 MiB device origin and vde its pool, vdf a 2 TiB sparse device
# origin and vdg its pool (device origins are always sampled). Prints raw
# samples as "COWBENCH FIGURE VALUE"; the host takes medians and ratios.
# shellcheck disable=SC2154  # say comes from init
# shellcheck disable=SC2046,SC2016  # the helper's output is split into words
# on purpose; the seed script's $(...) expand when it runs

arg() { sed -n "s/.*cowbench\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
rounds=$(arg rounds); rounds=${rounds:-11}
resets=$(arg resets); resets=${resets:-1000}
io_rounds=$(arg io_rounds); io_rounds=${io_rounds:-3}
block_sizes=$(arg blocks | tr : ' '); block_sizes=${block_sizes:-64K 128K 256K 512K 1M}
only=$(arg only)
readaheads=$(arg readaheads | tr : ' '); readaheads=${readaheads:-256 1024 4096 16384}
IO_MIB=256
RAND_WRITES=1000
RAND_SPAN_MIB=512
KEEP_MIB=1024

export DM_DISABLE_UDEV=1
HOST=/run/cowroot/host
KEYS="cowroot=/root.img cowroot.dev=/dev/vda cowpool=/dev/vdb"
BLANK_KEYS="cowroot=/root.img cowroot.dev=/dev/vda cowpool=/dev/vdc"
SMALL_DEV_KEYS="cowroot=/dev/vdd cowpool=/dev/vde"
BIG_DEV_KEYS="cowroot=/dev/vdf cowpool=/dev/vdg"

sample() { echo "COWBENCH $1 $2"; }
fail() { say "bench failed: $*"; dmesg | tail -n 20 | sed 's/^/COWTEST dmesg: /'; exit 1; }
want() { [ -z "$only" ] || echo ",$only," | grep -q ",$1,"; }

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# Everything the setups made, gone: back to a clean guest.
teardown() {
    /usr/sbin/dmsetup remove cowroot cowroot-pool cowroot-pool_tdata cowroot-pool_tmeta 2>/dev/null
    [ -f /sys/block/loop0/loop/backing_file ] && losetup -d /dev/loop0
    grep -q " $HOST " /proc/mounts && umount "$HOST"
    for disk in vda vdd vdf; do blockdev --setrw /dev/$disk; done
    for left in /dev/mapper/*; do
        [ "$left" = /dev/mapper/control ] || fail "teardown left $left"
    done
    return 0
}

# timed FIGURE CMD...: one sample of CMD's wall time (µs), which must succeed.
timed() {
    figure=$1
    shift
    drop_caches
    set -- $(/sbin/cowbench time "$@" 2>/tmp/bench-err)
    [ "$2" = 0 ] || fail "$figure: rc=$2 $(cat /tmp/bench-err)"
    sample "$figure" "$1"
}

cowroot_boot() { /sbin/cowroot boot --cmdline "$*"; }

# SPEC §1's manual steps as a person types them, on the pool cowroot
# formatted (its tables, read back once): busybox mount and losetup (a
# buffered loop), Debian's dmsetup. `revert` adds "delete thin 1, create
# a new one".
write_seed_script() {
    {
        echo "mount -o ro /dev/vda $HOST"
        echo "losetup -r /dev/loop0 $HOST/root.img"
        echo "/usr/sbin/dmsetup create cowroot-pool_tmeta --table '$(/usr/sbin/dmsetup table cowroot-pool_tmeta)'"
        echo "/usr/sbin/dmsetup create cowroot-pool_tdata --table '$(/usr/sbin/dmsetup table cowroot-pool_tdata)'"
        echo "/usr/sbin/dmsetup create cowroot-pool --table '$(/usr/sbin/dmsetup table cowroot-pool)'"
        echo '[ "$1" = revert ] && /usr/sbin/dmsetup message cowroot-pool 0 "delete 1" && /usr/sbin/dmsetup message cowroot-pool 0 "create_thin 1"'
        echo "/usr/sbin/dmsetup create cowroot --table \"$(/usr/sbin/dmsetup table cowroot | sed 's/ thin \([0-9:]*\) [0-9]* / thin \1 $(cat \/tmp\/thin-id) /')\""
    } > /tmp/seed.sh
    # The floor program: the same devices with cowroot's names and uuids.
    for name in cowroot-pool_tmeta cowroot-pool_tdata cowroot-pool cowroot; do
        private=1
        [ "$name" = cowroot ] && private=0
        echo "$name $(/usr/sbin/dmsetup info -c --noheadings -o uuid "$name") $private $(/usr/sbin/dmsetup table "$name" | cut -d' ' -f2-)"
    done > /tmp/floor.tables
    remember_thin
}

# The thin id cowroot boots now (resets move it on): the seed's steps and
# the floor program activate the same one.
remember_thin() { /usr/sbin/dmsetup table cowroot | cut -d' ' -f5 > /tmp/thin-id; }
floor_tables() {
    sed "\$s/ thin \([0-9:]*\) [0-9]* / thin \1 $(cat /tmp/thin-id) /" /tmp/floor.tables > /tmp/floor.now
}


blank_small_pool() {
    dd if=/dev/zero of=/dev/vdc bs=1M count=1 2>/dev/null
    dd if=/dev/zero of=/dev/vdc bs=1M count=1 seek=$(( $(blockdev --getsize64 /dev/vdc) / 1048576 - 1 )) 2>/dev/null
    sync
}

# "own work" of one debug boot: what cowroot did besides its mount, loop
# and dm calls (its own accounting, in µs).
own_work() {
    figure=$1
    shift
    drop_caches
    # At boot cowroot logs to the kernel's log.
    dmesg -c >/dev/null
    cowroot_boot "$* cowroot.debug=1" 2>/dev/null || fail "$figure: $(dmesg | tail -n 3)"
    dmesg | sed 's/^\[[ 0-9.]*\] //' > /tmp/bench-debug
    line=$(grep 'timing:' /tmp/bench-debug) || fail "$figure: no timing line"
    own=$(echo "$line" | sed -n 's/.* \([0-9][0-9]*\) us own work.*/\1/p')
    total=$(echo "$line" | sed -n 's/.*timing: \([0-9][0-9]*\) us in all.*/\1/p')
    if [ -z "$own" ] || [ -z "$total" ]; then fail "$figure: cannot read '$line'"; fi
    sample "$figure" "$own"
    sample "${figure}_total" "$total"
    grep -E '^cowroot: [0-9]+ ms: ' /tmp/bench-debug | sed "s/^/COWBENCH-debug $figure /"
    [ "${3:-}" = cleanup ] && cleanup
    teardown
}

# A durable 4 KiB write (write, then flush) on the pool device: what each
# header write and metadata commit costs, for reading the boot figures.
flush_cost() {
    set -- $(/sbin/cowbench flush /dev/vdc 20)
    sample flush_us "$(( $1 / 20 ))"
}

# The booted system finishes the old thin's delete after a reset (cowroot
# 0.1 deleted it during the boot and has no `cleanup`).
has_cleanup=0
/sbin/cowroot --help 2>&1 | grep -q 'cowroot cleanup' && has_cleanup=1
cleanup() {
    [ "$has_cleanup" = 1 ] || return 0
    set -- "${1:-}" $(/sbin/cowbench time /sbin/cowroot cleanup 2>/tmp/cleanup-err)
    [ "$3" = 0 ] || fail "cowroot cleanup failed: $(cat /tmp/cleanup-err)"
    [ -z "$1" ] || sample "$1" "$2"
}

mkdir -p "$HOST"
say "bench rounds=$rounds resets=$resets io_rounds=$io_rounds blocks=$block_sizes"

# First boots: format the pools; the seed script and floor tables come
# from cowroot's own tables.
/sbin/cowroot format --force /dev/vdb >/dev/null 2>&1 || fail "format vdb"
cowroot_boot "$KEYS" 2>/dev/null || fail "first boot"
write_seed_script
teardown
for keys in "$SMALL_DEV_KEYS" "$BIG_DEV_KEYS"; do
    cowroot_boot "$keys" 2>/dev/null || fail "first boot of $keys"
    teardown
done

if want boot; then
    i=0
    while [ $i -lt "$rounds" ]; do
        # Rotate the order, so no kind always follows the same one.
        order="keep seed floor reset format"
        case $((i % 5)) in
        1) order="seed floor reset format keep" ;;
        2) order="floor reset format keep seed" ;;
        3) order="reset format keep seed floor" ;;
        4) order="format keep seed floor reset" ;;
        esac
        for kind in $order; do
            case $kind in
            keep) timed boot_keep /sbin/cowroot boot --cmdline "$KEYS" ;;
            seed) timed boot_seed sh /tmp/seed.sh ;;
            floor)
                floor_tables
                timed boot_floor /sbin/cowbench floor /dev/vda ext4 /root.img /tmp/floor.now
                ;;
            reset)
                timed boot_reset /sbin/cowroot boot --cmdline "$KEYS cowroot.reset=1"
                remember_thin
                cleanup
                ;;
            format)
                blank_small_pool
                timed boot_format /sbin/cowroot boot --cmdline "$BLANK_KEYS"
                ;;
            esac
            teardown
        done
        own_work own_file "$KEYS"
        own_work own_small "$SMALL_DEV_KEYS"
        own_work own_big "$BIG_DEV_KEYS"
        if [ $i = 0 ]; then
            # Where a reset and a format boot spend their time.
            own_work own_reset "$KEYS cowroot.reset=1" cleanup
            blank_small_pool
            own_work own_format "$BLANK_KEYS"
            flush_cost
        fi
        i=$((i + 1))
    done
fi

if want keptreset; then
    i=0
    while [ $i -lt "$io_rounds" ]; do
        cowroot_boot "$KEYS" 2>/dev/null || fail "boot before the kept write"
        set -- $(/sbin/cowbench seqwrite /dev/mapper/cowroot "$KEEP_MIB")
        sample kept_write_us "$1"
        teardown
        timed reset_kept /sbin/cowroot boot --cmdline "$KEYS cowroot.reset=1"
        cleanup cleanup_kept
        teardown
        timed reset_none /sbin/cowroot boot --cmdline "$KEYS cowroot.reset=1"
        cleanup
        teardown
        i=$((i + 1))
    done
fi

if want resets; then
    meta() { /usr/sbin/dmsetup status cowroot-pool | cut -d' ' -f5 | cut -d/ -f1; }
    i=1
    while [ $i -le "$resets" ]; do
        cowroot_boot "$KEYS cowroot.reset=1" 2>/tmp/bench-err || fail "reset $i: $(cat /tmp/bench-err)"
        [ $i = 1 ] && sample meta_after_1 "$(meta)"
        [ $i = "$resets" ] && sample meta_after_n "$(meta)"
        teardown
        i=$((i + 1))
    done
    sample resets_done "$resets"
fi

# Throughput of one configuration on a fresh thin (first writes are
# first): sequential O_DIRECT reads of the cow device and of its origin,
# then sequential and random first writes in separate regions.
io_round() {
    label=$1
    drop_caches
    set -- $(/sbin/cowbench seqread /dev/mapper/cowroot $IO_MIB); sample "${label}_seqread" "$1"
    drop_caches
    set -- $(/sbin/cowbench seqread /dev/loop0 $IO_MIB); sample "${label}_origin_read" "$1"
    drop_caches
    set -- $(/sbin/cowbench seqwrite /dev/mapper/cowroot $IO_MIB); sample "${label}_seqwrite" "$1"
    used=$(/usr/sbin/dmsetup status cowroot-pool | cut -d' ' -f6 | cut -d/ -f1)
    set -- $(/sbin/cowbench randwrite /dev/mapper/cowroot $RAND_WRITES $IO_MIB $RAND_SPAN_MIB); sample "${label}_randwrite" "$1"
    # Pool space the random writes took, in KiB per 4 KiB written.
    block_kib=$(( $(/usr/sbin/dmsetup table cowroot-pool | cut -d' ' -f6) / 2 ))
    now=$(/usr/sbin/dmsetup status cowroot-pool | cut -d' ' -f6 | cut -d/ -f1)
    sample "${label}_randwrite_kib_per_write" $(( (now - used) * block_kib / RAND_WRITES ))
    # Buffered, as a filesystem reads: the device's read-ahead counts.
    drop_caches
    set -- $(/sbin/cowbench time dd if=/dev/mapper/cowroot of=/dev/null bs=1M skip=$((IO_MIB * 3)) count=$IO_MIB)
    sample "${label}_bufread" "$1"
}

# Buffered reads of the cow device with each read-ahead (sectors).
readahead_round() {
    for ra in $readaheads; do
        blockdev --setra "$ra" /dev/mapper/cowroot
        drop_caches
        set -- $(/sbin/cowbench time dd if=/dev/mapper/cowroot of=/dev/null bs=1M skip=$((IO_MIB * 3)) count=$IO_MIB)
        sample "ra_${ra}_bufread" "$1"
    done
    drop_caches
    set -- $(/sbin/cowbench time dd if=/dev/loop0 of=/dev/null bs=1M skip=$((IO_MIB * 3)) count=$IO_MIB)
    sample "origin_bufread" "$1"
}

if want io; then
    # The seed's configuration: 64 KiB blocks, its own steps (buffered loop).
    /sbin/cowroot format --force --block-size 64K /dev/vdb >/dev/null 2>&1 || fail "format 64K"
    cowroot_boot "$KEYS" 2>/dev/null || fail "boot 64K"
    write_seed_script
    teardown
    i=0
    while [ $i -lt "$io_rounds" ]; do
        sh /tmp/seed.sh revert || fail "seed setup"
        io_round seed
        teardown
        i=$((i + 1))
    done
    # cowroot's default, then every block size for the chart.
    for size in default $block_sizes; do
        if [ "$size" = default ]; then
            /sbin/cowroot format --force /dev/vdb >/dev/null 2>&1 || fail "format"
        else
            /sbin/cowroot format --force --block-size "$size" /dev/vdb >/dev/null 2>&1 || fail "format $size"
        fi
        cowroot_boot "$KEYS" 2>/dev/null || fail "boot $size"
        sample "block_${size}_sectors" "$(/usr/sbin/dmsetup table cowroot-pool | cut -d' ' -f6)"
        sample "readahead_${size}_sectors" "$(blockdev --getra /dev/mapper/cowroot)"
        teardown
        i=0
        while [ $i -lt "$io_rounds" ]; do
            cowroot_boot "$KEYS cowroot.reset=1" 2>/dev/null || fail "reset $size"
            io_round "cow_$size"
            [ "$size" = default ] && readahead_round
            teardown
            i=$((i + 1))
        done
    done
fi
say "bench finished"
