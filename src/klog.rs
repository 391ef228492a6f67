//! A tiny `log` backend: `/dev/kmsg` in early boot (prefixed `cowroot:` with
//! the kernel's levels), stderr elsewhere. Small on purpose: env_logger and
//! regex would double the binary.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

/// Under the kernel's per-record limit (1024 minus the header) with room.
const LINE_MAX: usize = 900;

struct Logger {
    kmsg: Option<Mutex<File>>,
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

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

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Only our own crate's records: devicemapper's debug chatter is noise.
        if !record.target().starts_with("cowroot") {
            return;
        }
        let text = record.args().to_string();
        for line in lines(&text) {
            match &self.kmsg {
                Some(kmsg) => {
                    let entry = format!("<{}>cowroot: {line}\n", kernel_level(record.level()));
                    if let Ok(mut f) = kmsg.lock() {
                        let _ = f.write_all(entry.as_bytes());
                    }
                }
                None => eprintln!("cowroot: {line}"),
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger; `to_kmsg` uses /dev/kmsg when it can be opened.
pub fn init(to_kmsg: bool, level: LevelFilter) {
    let kmsg = if to_kmsg { OpenOptions::new().write(true).open("/dev/kmsg").ok().map(Mutex::new) } else { None };
    let logger = LOGGER.get_or_init(|| Logger { kmsg });
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

/// Whether log records reach the kernel log (else they are on stderr).
pub fn to_kmsg() -> bool {
    LOGGER.get().is_some_and(|l| l.kmsg.is_some())
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
}
