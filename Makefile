# Build, install and package cowroot. The README's two commands are
# ./demo.sh and ./test.sh; these targets are conveniences around them.
DESTDIR ?=
TARGET := x86_64-unknown-linux-musl
BIN := target/$(TARGET)/release/cowroot
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB := target/cowroot_$(VERSION)_amd64.deb

.PHONY: build demo test install deb

build:
	./qemu-tests/prereqs.sh
	cargo build --release --target $(TARGET)

demo:
	./demo.sh

test:
	./test.sh

# Installs (building first if needed): the binary, the initramfs-tools hook
# and script, the dracut module (and a dracut.conf.d snippet to copy into
# /etc/dracut.conf.d to enable it), the udev rule (into the real root too:
# udev replays events after switch-root), a systemd drop-in and
# cowroot-cleanup.service (enabled: it finishes resets after boot),
# cowroot-hydrate.service (cowroot.hydrate: the local copy of a network
# origin), cowroot-grow.service (cowroot.size) and cowroot-check.timer
# (cowroot.warn), enabled the same way; for cowroot.volume, the generator
# cowroot-volume-generator (a link to the binary: it writes the volumes
# mount units) and cowroot-volume@.service, which those units pull in;
# the manuals cowroot(8) and cowroot.cmdline(7), bash and zsh completions;
# /etc/grub.d/42_cowroot (boot menu entries for /etc/cowroot.conf).
install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)/usr/sbin/cowroot
	install -D -m 0755 initramfs-tools/hooks/cowroot $(DESTDIR)/usr/share/initramfs-tools/hooks/cowroot
	install -D -m 0755 initramfs-tools/scripts/local-top/cowroot $(DESTDIR)/usr/share/initramfs-tools/scripts/local-top/cowroot
	install -D -m 0755 initramfs-tools/scripts/local-block/cowroot $(DESTDIR)/usr/share/initramfs-tools/scripts/local-block/cowroot
	install -D -m 0644 initramfs-tools/cowroot-setup $(DESTDIR)/usr/share/cowroot/initramfs-tools/cowroot-setup
	install -D -m 0644 udev/12-cowroot.rules $(DESTDIR)/usr/lib/udev/rules.d/12-cowroot.rules
	install -D -m 0644 systemd/run-cowroot-host.mount.conf $(DESTDIR)/usr/lib/systemd/system/run-cowroot-host.mount.d/cowroot.conf
	install -D -m 0644 systemd/cowroot-cleanup.service $(DESTDIR)/usr/lib/systemd/system/cowroot-cleanup.service
	mkdir -p $(DESTDIR)/usr/lib/systemd/system/multi-user.target.wants
	ln -sf ../cowroot-cleanup.service $(DESTDIR)/usr/lib/systemd/system/multi-user.target.wants/cowroot-cleanup.service
	install -D -m 0644 systemd/cowroot-hydrate.service $(DESTDIR)/usr/lib/systemd/system/cowroot-hydrate.service
	ln -sf ../cowroot-hydrate.service $(DESTDIR)/usr/lib/systemd/system/multi-user.target.wants/cowroot-hydrate.service
	install -D -m 0644 systemd/cowroot-grow.service $(DESTDIR)/usr/lib/systemd/system/cowroot-grow.service
	mkdir -p $(DESTDIR)/usr/lib/systemd/system/local-fs.target.wants
	ln -sf ../cowroot-grow.service $(DESTDIR)/usr/lib/systemd/system/local-fs.target.wants/cowroot-grow.service
	install -D -m 0644 systemd/cowroot-volume@.service $(DESTDIR)/usr/lib/systemd/system/cowroot-volume@.service
	mkdir -p $(DESTDIR)/usr/lib/systemd/system-generators
	ln -sf ../../../sbin/cowroot $(DESTDIR)/usr/lib/systemd/system-generators/cowroot-volume-generator
	install -D -m 0644 systemd/cowroot-check.service $(DESTDIR)/usr/lib/systemd/system/cowroot-check.service
	install -D -m 0644 systemd/cowroot-check.timer $(DESTDIR)/usr/lib/systemd/system/cowroot-check.timer
	mkdir -p $(DESTDIR)/usr/lib/systemd/system/timers.target.wants
	ln -sf ../cowroot-check.timer $(DESTDIR)/usr/lib/systemd/system/timers.target.wants/cowroot-check.timer
	install -D -m 0755 dracut/90cowroot/module-setup.sh $(DESTDIR)/usr/lib/dracut/modules.d/90cowroot/module-setup.sh
	install -D -m 0755 dracut/90cowroot/cowroot-cmdline.sh $(DESTDIR)/usr/lib/dracut/modules.d/90cowroot/cowroot-cmdline.sh
	install -D -m 0755 dracut/90cowroot/cowroot-setup.sh $(DESTDIR)/usr/lib/dracut/modules.d/90cowroot/cowroot-setup.sh
	install -D -m 0755 dracut/90cowroot/cowroot-shutdown.sh $(DESTDIR)/usr/lib/dracut/modules.d/90cowroot/cowroot-shutdown.sh
	install -D -m 0755 dracut/90cowroot/cowroot-generator.sh $(DESTDIR)/usr/lib/dracut/modules.d/90cowroot/cowroot-generator.sh
	install -D -m 0644 dracut/90cowroot/cowroot.service $(DESTDIR)/usr/lib/dracut/modules.d/90cowroot/cowroot.service
	install -D -m 0644 dracut/cowroot.conf $(DESTDIR)/usr/share/cowroot/dracut.conf.d/90-cowroot.conf
	install -D -m 0644 README.md $(DESTDIR)/usr/share/doc/cowroot/README.md
	install -D -m 0755 grub/42_cowroot $(DESTDIR)/etc/grub.d/42_cowroot
	install -D -m 0644 man/cowroot.8 $(DESTDIR)/usr/share/man/man8/cowroot.8
	install -D -m 0644 man/cowroot.cmdline.7 $(DESTDIR)/usr/share/man/man7/cowroot.cmdline.7
	install -D -m 0644 completions/cowroot.bash $(DESTDIR)/usr/share/bash-completion/completions/cowroot
	install -D -m 0644 completions/_cowroot $(DESTDIR)/usr/share/zsh/vendor-completions/_cowroot

$(BIN):
	cargo build --release --target $(TARGET)

# A Debian package of the same files; its trigger regenerates the
# initramfs on install and on removal.
deb: build
	rm -rf target/deb
	$(MAKE) install DESTDIR=target/deb
	install -D -m 0644 packaging/debian/triggers target/deb/DEBIAN/triggers
	install -D -m 0755 packaging/debian/prerm target/deb/DEBIAN/prerm
	sed "s/@VERSION@/$(VERSION)/" packaging/debian/control > target/deb/DEBIAN/control
	dpkg-deb --root-owner-group --build target/deb $(DEB)
