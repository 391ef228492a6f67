//! `logreplay`: lists and replays dm-log-writes logs, for cowroot's
//! crash-point tests (qemu-tests/scenarios-crash.sh).

use logreplay::{replay, zero, Log};
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "usage:
  logreplay list LOG
      one line per entry: INDEX SECTOR SECTORS FLAGS [MARK-NAME]
      (FLAGS: FLUSH,FUA,DISCARD,MARK,METADATA joined by commas, or -;
      SECTOR and SECTORS in the log's sector size, 512 for most devices)
  logreplay replay LOG TARGET --to N [--from M]
      applies entries M (default 0) up to but not including N to TARGET,
      a file or block device at least as big as the logged device;
      discards are written as zeros; TARGET is flushed at the end
  logreplay zero TARGET
      fills TARGET with zeros (BLKZEROOUT on a block device) and flushes it";

/// Why a run failed: bad usage (exit 2, with the usage text) or an error
/// reading the log or writing the target (exit 1).
enum Fail {
    Usage(String),
    Run(String),
}

impl From<logreplay::Error> for Fail {
    fn from(e: logreplay::Error) -> Fail {
        Fail::Run(e.0)
    }
}

fn usage<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Usage(msg.into()))
}

/// Prints one line on stdout; a closed stdout is an error, not a panic.
fn say(line: &str) -> Result<(), Fail> {
    writeln!(std::io::stdout(), "{line}").map_err(|e| Fail::Run(format!("stdout: {e}")))
}

fn number(flag: &str, value: Option<&String>) -> Result<u64, Fail> {
    let Some(v) = value else {
        return usage(format!("{flag} needs a number"));
    };
    v.parse().map_err(|_| Fail::Usage(format!("{flag}: expected an entry index, got {v:?}")))
}

fn run(args: &[String]) -> Result<(), Fail> {
    match args.first().map(String::as_str) {
        Some("list") => {
            let [_, log] = args else {
                return usage("list takes one argument: LOG");
            };
            let log = Log::open(log)?;
            let out = std::io::stdout();
            let mut out = std::io::BufWriter::new(out.lock());
            for entry in log.entries() {
                let entry = entry?;
                writeln!(out, "{entry}").map_err(|e| Fail::Run(format!("stdout: {e}")))?;
            }
            out.flush().map_err(|e| Fail::Run(format!("stdout: {e}")))
        }
        Some("replay") => {
            let (mut log, mut target, mut to, mut from) = (None, None, None, 0);
            let mut i = 1;
            while i < args.len() {
                match args[i].as_str() {
                    "--to" => {
                        to = Some(number("--to", args.get(i + 1))?);
                        i += 1;
                    }
                    "--from" => {
                        from = number("--from", args.get(i + 1))?;
                        i += 1;
                    }
                    a if a.starts_with('-') => return usage(format!("unknown option {a}")),
                    a if log.is_none() => log = Some(a.to_string()),
                    a if target.is_none() => target = Some(a.to_string()),
                    a => return usage(format!("unexpected argument {a:?}")),
                }
                i += 1;
            }
            let (Some(log), Some(target), Some(to)) = (log, target, to) else {
                return usage("replay needs LOG, TARGET and --to N");
            };
            let opened = Log::open(&log)?;
            let r = replay(&opened, &target, from, to)?;
            say(&format!(
                "replayed entries {from}..{to} of {log} onto {target}: {} writes, {} discards, {} bytes",
                r.writes, r.discards, r.bytes
            ))
        }
        Some("zero") => {
            let [_, target] = args else {
                return usage("zero takes one argument: TARGET");
            };
            let (size, how) = zero(target)?;
            say(&format!("zeroed {target}: {size} bytes ({how:?})"))
        }
        Some("-h" | "--help" | "help") => say(USAGE),
        Some(other) => usage(format!("unknown command {other:?}")),
        None => usage("no command given"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(e)) => {
            eprintln!("logreplay: {e}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Run(e)) => {
            eprintln!("logreplay: {e}");
            ExitCode::from(1)
        }
    }
}
