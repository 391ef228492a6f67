#!/bin/bash
# Runs every test: formatting and lints, unit tests (with the parser
# property tests at a fixed count), the static-binary checks, then every VM
# scenario. Installs what it needs on Debian.
#   ./test.sh --fuzz   only the parser property tests, a million inputs each
#   ./test.sh --full   also the scenarios that repeat a fault class under
#                      another generator
set -euo pipefail
cd "$(dirname "$0")"

if [ "${1:-}" = --full ]; then
    # Every scenario, the whole generator matrix included.
    export COWROOT_FULL=1
    shift
fi
if [ "${1:-}" = --fuzz ]; then
    ./qemu-tests/prereqs.sh
    COWROOT_FUZZ_CASES=${COWROOT_FUZZ_CASES:-1000000} \
        cargo test --profile fuzz --lib fuzz -- --nocapture --test-threads=1
    exit
fi

./qemu-tests/prereqs.sh
echo "== lint"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo fmt --manifest-path qemu-tests/logreplay/Cargo.toml -- --check
cargo clippy --manifest-path qemu-tests/logreplay/Cargo.toml --all-targets --quiet -- -D warnings
shellcheck -x qemu-tests/*.sh qemu-tests/guest/init qemu-tests/guest/crash.sh qemu-tests/guest/fixture-md.sh qemu-tests/guest/bench.sh demo.sh test.sh .ci/run \
    initramfs-tools/hooks/cowroot initramfs-tools/scripts/local-top/cowroot initramfs-tools/scripts/local-block/cowroot \
    initramfs-tools/cowroot-setup dracut/90cowroot/*.sh completions/cowroot.bash completions/check.sh grub/42_cowroot

echo "== unit tests"
COWROOT_FUZZ_CASES=${COWROOT_FUZZ_CASES:-5000} cargo test --quiet
cargo test --manifest-path qemu-tests/logreplay/Cargo.toml --quiet

echo "== static binary"
cargo build --release --target x86_64-unknown-linux-musl --quiet
bin=target/x86_64-unknown-linux-musl/release/cowroot
file "$bin" | grep -qE 'statically linked|static-pie linked' || { file "$bin"; echo "not static"; exit 1; }
size=$(stat -c %s "$bin")
echo "binary: $size bytes (budget 1048576)"
[ "$size" -le 1048576 ] || { echo "binary over the 1 MiB budget"; exit 1; }

echo "== manuals, completions and GRUB entries"
for page in man/cowroot.8 man/cowroot.cmdline.7; do
    warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
    [ -z "$warnings" ] || { echo "$page: $warnings"; exit 1; }
done
./completions/check.sh "$bin"
./qemu-tests/grub-check.sh "$bin"

echo "== VM scenarios"
./qemu-tests/run.sh
