# Convenience targets; the README's two commands are ./demo.sh and ./test.sh.
DESTDIR ?=
TARGET := x86_64-unknown-linux-musl
BIN := target/$(TARGET)/release/cowroot

.PHONY: build demo test install

build:
	./qemu-tests/prereqs.sh
	cargo build --release --target $(TARGET)

demo:
	./demo.sh

test:
	./test.sh

# Installs what is built; run `make build` first (as the user who builds).
install:
	@test -x $(BIN) || { echo "build first: make build"; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)/usr/sbin/cowroot
