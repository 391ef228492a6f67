//! The `cowroot` binary: argument handling and exit codes only.

use cowroot::boot::{self, BootMode, Outcome};
use cowroot::error::Error;
use cowroot::layout::DEFAULT_BLOCK_BYTES;
use cowroot::names::DeviceName;
use cowroot::{cmdline, config, format, klog, names, status, units};
use log::LevelFilter;
use std::process::ExitCode;

/// Exit codes: 0 done (or nothing to do), 1 failed, 2 bad usage.
const FAILED: u8 = 1;
const USAGE: u8 = 2;

const HELP: &str = "\
cowroot: copy-on-write root filesystems at the block layer

usage:
  cowroot boot [--cmdline STR] [--dry-run] [--print-root]
                                             set up /dev/mapper/NAME from the kernel command line
  cowroot boot --read-only-origin [--print-root]
                                             the cowroot.onfail=ro fallback: the origin, read-only
  cowroot format DEVICE [--block-size SIZE] [--force]
                                             prepare a pool device or file
  cowroot status [--json] [--name NAME]      show origin, pool, use and health
  cowroot reset [--cancel] [--name NAME]     make the next boot discard the changes
  cowroot root [--unit]                      print the root device (or its systemd unit) when
                                             cowroot= is present (for initramfs hooks)
  cowroot onfail                             print the cowroot.onfail policy (for initramfs hooks)
  cowroot poweroff                           sync and power off at once (for initramfs hooks)
  cowroot --version

Command-line keys: cowroot= cowroot.dev= cowroot.fstype= cowpool= cowroot.reset=
cowroot.name= cowroot.timeout= cowroot.onfail= cowroot.debug= (see the README).
";

struct Args {
    words: Vec<String>,
}

impl Args {
    fn flag(&mut self, name: &str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| w != name);
        self.words.len() != before
    }

    fn value(&mut self, name: &str) -> Result<Option<String>, Error> {
        let Some(i) = self.words.iter().position(|w| w == name) else {
            if let Some(i) = self.words.iter().position(|w| w.starts_with(&format!("{name}="))) {
                let word = self.words.remove(i);
                return Ok(Some(word[name.len() + 1..].to_string()));
            }
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(Error::Usage(format!("{name} needs a value")));
        }
        let value = self.words.remove(i + 1);
        self.words.remove(i);
        Ok(Some(value))
    }

    fn done(self) -> Result<Vec<String>, Error> {
        if let Some(opt) = self.words.iter().find(|w| w.starts_with('-')) {
            return Err(Error::Usage(format!("unknown option {opt}")));
        }
        Ok(self.words)
    }
}

fn read_cmdline() -> Result<String, Error> {
    std::fs::read_to_string("/proc/cmdline").map_err(|e| Error::io("read", "/proc/cmdline", e))
}

/// `--name` wins, then `cowroot.name=` of the running system.
fn device_name(args: &mut Args) -> Result<DeviceName, Error> {
    if let Some(name) = args.value("--name")? {
        return DeviceName::parse(&name);
    }
    let params = cmdline::split(&read_cmdline().unwrap_or_default());
    let given = params.iter().rev().find(|p| p.key == "cowroot.name").and_then(|p| p.value.clone());
    match given {
        Some(name) => DeviceName::parse(&name),
        None => Ok(DeviceName::default()),
    }
}

fn run(command: &str, mut args: Args) -> Result<(), Error> {
    match command {
        "boot" => {
            let dry_run = args.flag("--dry-run");
            let read_only = args.flag("--read-only-origin");
            let print_root = args.flag("--print-root");
            let given = args.value("--cmdline")?;
            let rest = args.done()?;
            if !rest.is_empty() {
                return Err(Error::Usage(format!("unexpected argument {}", rest[0])));
            }
            let mode = match (dry_run, read_only) {
                (true, true) => return Err(Error::Usage("--dry-run and --read-only-origin exclude each other".into())),
                (true, false) => BootMode::DryRun,
                (false, true) => BootMode::ReadOnlyOrigin,
                (false, false) => BootMode::Normal,
            };
            klog::init(!dry_run, LevelFilter::Info);
            let text = match given {
                Some(text) => text,
                None => read_cmdline()?,
            };
            match boot::boot(&text, mode)? {
                Outcome::NothingToDo => log::debug!("no cowroot= on the command line; nothing to do"),
                Outcome::AlreadyActive { root, message: line } | Outcome::Ready { root, summary: line } => {
                    log::info!("{line}");
                    if print_root {
                        println!("{root}");
                    }
                }
                Outcome::DryRun(plan) => print!("{plan}"),
            }
            Ok(())
        }
        "root" => {
            let unit = args.flag("--unit");
            args.done()?;
            if let Some(name) = config::root_device_name(&cmdline::split(&read_cmdline().unwrap_or_default())) {
                println!("{}", if unit { name.device_unit() } else { name.mapper_path(names::Role::Thin) });
            }
            Ok(())
        }
        "onfail" => {
            args.done()?;
            let policy = config::onfail_policy(&cmdline::split(&read_cmdline().unwrap_or_default()));
            println!("{policy}");
            Ok(())
        }
        "poweroff" => {
            args.done()?;
            nix::unistd::sync();
            nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF)
                .map_err(|e| Error::io("power off", "the machine", e))?;
            Ok(())
        }
        "format" => {
            klog::init(false, LevelFilter::Info);
            let force = args.flag("--force");
            let block = match args.value("--block-size")? {
                Some(text) => {
                    units::parse_size(&text)
                        .ok_or_else(|| Error::Usage(format!("--block-size: bad size {text:?}; use e.g. 64K")))?
                        .0
                }
                None => DEFAULT_BLOCK_BYTES,
            };
            let rest = args.done()?;
            let [device] = rest.as_slice() else {
                return Err(Error::Usage("usage: cowroot format DEVICE [--block-size SIZE] [--force]".into()));
            };
            println!("{}", format::format(device, block, force)?);
            Ok(())
        }
        "status" => {
            klog::init(false, LevelFilter::Info);
            let json = args.flag("--json");
            let name = device_name(&mut args)?;
            args.done()?;
            let info = status::gather(&name, &read_cmdline().unwrap_or_default())?;
            if json {
                println!("{}", info.render_json());
            } else {
                print!("{}", info.render_text());
            }
            Ok(())
        }
        "reset" => {
            klog::init(false, LevelFilter::Info);
            let cancel = args.flag("--cancel");
            let name = device_name(&mut args)?;
            args.done()?;
            println!("{}", status::request_reset(&name, cancel)?);
            Ok(())
        }
        other => Err(Error::Usage(format!("unknown command {other:?}\n{HELP}"))),
    }
}

fn main() -> ExitCode {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if words.is_empty() || words.iter().any(|w| w == "--help" || w == "-h") {
        print!("{HELP}");
        return if words.is_empty() { ExitCode::from(USAGE) } else { ExitCode::SUCCESS };
    }
    if words[0] == "--version" {
        println!("cowroot {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let command = words.remove(0);
    match run(&command, Args { words }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let usage = matches!(err, Error::Usage(_));
            // In early boot the message goes to the kernel log too, so it
            // is on the console and in the journal after boot.
            if klog::to_kmsg() {
                log::error!("{err}");
            }
            eprintln!("cowroot: {err}");
            ExitCode::from(if usage { USAGE } else { FAILED })
        }
    }
}
