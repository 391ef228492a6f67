//! Logging through env_logger (already linked through devicemapper; no
//! `RUST_LOG` parsing, which would pull in regex): to `/dev/kmsg` in early
//! boot, one kernel record per line, prefixed `cowroot:` with the kernel's
//! levels; to stderr elsewhere.
//!
//! The kernel rate-limits user-space writes to `/dev/kmsg` (10 records per
//! 5 s unless `printk.devkmsg=on`): a chatty debug run would lose its last
//! lines, the summary or the error among them. So debug records take at
//! most a few kmsg records; every line, debug included, also goes to
//! `/run/cowroot/boot.log`, which outlives switch-root.

use log::{Level, LevelFilter};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Under the kernel's per-record limit (1024 minus the header) with room.
const LINE_MAX: usize = 900;
/// Where every line of a boot goes too.
pub const BOOT_LOG: &str = "/run/cowroot/boot.log";
/// kmsg records debug lines may use under the kernel's default rate limit
/// (10 per 5 s), leaving room for warnings, errors and the summary.
const DEBUG_RECORDS: usize = 5;

static TO_KMSG: AtomicBool = AtomicBool::new(false);

fn kernel_level(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Cuts a message into kmsg-sized lines on character boundaries.
pub fn lines(message: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for mut line in message.lines() {
        while line.len() > LINE_MAX {
            let mut cut = LINE_MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(&line[..cut]);
            line = &line[cut..];
        }
        out.push(line);
    }
    out
}

/// The kernel log as a `Write`: each `<N>cowroot: …\n` line becomes one
/// record; debug lines past the budget go to the boot log only.
struct KmsgSink {
    kmsg: File,
    boot_log: Option<File>,
    debug_budget: usize,
    debug_dropped: usize,
}

impl KmsgSink {
    fn line(&mut self, line: &[u8]) {
        if let Some(log) = &mut self.boot_log {
            let _ = log.write_all(line.get(3..).unwrap_or(line));
        }
        let debug = line.starts_with(b"<7>");
        if debug {
            if self.debug_budget == 0 {
                self.debug_dropped += 1;
                return;
            }
            self.debug_budget -= 1;
        } else if self.debug_dropped > 0 {
            // Say where the missing debug lines went, once, before the next
            // line that matters.
            let note = format!("<6>cowroot: {} more debug lines in {BOOT_LOG}\n", self.debug_dropped);
            let _ = self.kmsg.write_all(note.as_bytes());
            self.debug_dropped = 0;
        }
        // One write() is one kernel record.
        let _ = self.kmsg.write_all(line);
    }
}

impl Write for KmsgSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for line in buf.split_inclusive(|&b| b == b'\n') {
            self.line(line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the kernel rate-limits `/dev/kmsg` writes (`printk.devkmsg`).
fn kmsg_rate_limited() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/printk_devkmsg").map_or(true, |v| v.trim() != "on")
}

/// Installs the logger; `to_kmsg` uses /dev/kmsg when it can be opened.
pub fn init(to_kmsg: bool, level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Off).filter_module("cowroot", LevelFilter::Trace);
    let kmsg = if to_kmsg { OpenOptions::new().write(true).open("/dev/kmsg").ok() } else { None };
    match kmsg {
        Some(kmsg) => {
            let boot_log = std::fs::create_dir_all("/run/cowroot")
                .and_then(|_| OpenOptions::new().create(true).append(true).open(BOOT_LOG))
                .ok();
            let debug_budget = if kmsg_rate_limited() { DEBUG_RECORDS } else { usize::MAX };
            let sink = KmsgSink { kmsg, boot_log, debug_budget, debug_dropped: 0 };
            builder.target(env_logger::Target::Pipe(Box::new(sink)));
            builder.format(|buf, record| {
                let level = kernel_level(record.level());
                for line in lines(&record.args().to_string()) {
                    writeln!(buf, "<{level}>cowroot: {line}")?;
                }
                Ok(())
            });
            TO_KMSG.store(true, Ordering::Relaxed);
        }
        None => {
            builder.target(env_logger::Target::Stderr);
            builder.format(|buf, record| {
                for line in lines(&record.args().to_string()) {
                    writeln!(buf, "cowroot: {line}")?;
                }
                Ok(())
            });
        }
    }
    let _ = builder.try_init();
    // The builder's own level is Trace for our module; this is the one
    // that `cowroot.debug` and `-v` move.
    log::set_max_level(level);
}

/// Whether log records reach the kernel log (else they are on stderr).
pub fn to_kmsg() -> bool {
    TO_KMSG.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_multi_line_messages_are_split() {
        assert_eq!(lines("a\nb"), ["a", "b"]);
        let long = "é".repeat(1000);
        let parts = lines(&long);
        assert!(parts.iter().all(|p| p.len() <= LINE_MAX));
        assert_eq!(parts.concat(), long);
    }

    #[test]
    fn debug_lines_are_capped_and_the_rest_always_gets_through() {
        let dir = std::env::temp_dir().join(format!("cowroot-klog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kmsg_path = dir.join("kmsg");
        let log_path = dir.join("boot.log");
        let mut sink = KmsgSink {
            kmsg: File::create(&kmsg_path).unwrap(),
            boot_log: Some(File::create(&log_path).unwrap()),
            debug_budget: 2,
            debug_dropped: 0,
        };
        sink.write_all(b"<7>cowroot: d1\n<7>cowroot: d2\n<7>cowroot: d3\n<7>cowroot: d4\n").unwrap();
        sink.write_all(b"<6>cowroot: ready\n").unwrap();
        let kmsg = std::fs::read_to_string(&kmsg_path).unwrap();
        assert_eq!(
            kmsg,
            "<7>cowroot: d1\n<7>cowroot: d2\n<6>cowroot: 2 more debug lines in /run/cowroot/boot.log\n<6>cowroot: ready\n"
        );
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(log, "cowroot: d1\ncowroot: d2\ncowroot: d3\ncowroot: d4\ncowroot: ready\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
