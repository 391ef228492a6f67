//! The `cowroot` binary: argument handling and exit codes only.

use cowroot::boot::{self, BootMode, Outcome};
use cowroot::error::Error;
use cowroot::layout::BlockSize;
use cowroot::names::DeviceName;
use cowroot::sys::RealSystem;
use cowroot::{cmdline, config, format, inspect, klog, names, status, units};
use log::LevelFilter;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

/// Exit codes: 0 done (or nothing to do), 1 failed, 2 bad usage, 3 a
/// device is not there yet (`boot --no-wait`: call again).
const FAILED: u8 = 1;
const USAGE: u8 = 2;
const NOT_YET: u8 = 3;

const HELP: &str = "\
cowroot: copy-on-write root filesystems at the block layer

usage:
  cowroot boot [--cmdline STR] [--dry-run] [--print-root]
                                             set up /dev/mapper/NAME from the kernel command line
  cowroot boot --no-wait [--print-root]      the same, but exit 3 at once when a device is not
                                             there yet (for initqueues that call again)
  cowroot boot --read-only-origin [--print-root]
                                             the cowroot.onfail=ro fallback: the origin, read-only
  cowroot format DEVICE [--block-size SIZE] [--force]
                                             prepare a pool device or file
  cowroot status [--json] [--name NAME]      show origin, pool, use and health
  cowroot reset [--cancel] [--name NAME]     make the next boot discard the changes
  cowroot inspect DEVICE                     show a pool's header copies (read-only; works on images)
  cowroot root [--unit]                      print the root device (or its systemd unit) when
                                             cowroot= is present (for initramfs hooks)
  cowroot onfail                             print the cowroot.onfail policy (for initramfs hooks)
  cowroot poweroff                           sync and power off at once (for initramfs hooks)
  cowroot --version

  -v, --verbose    log every step (as cowroot.debug=1 does at boot)

Command-line keys: cowroot= cowroot.dev= cowroot.fstype= cowpool= cowroot.reset=
cowroot.name= cowroot.timeout= cowroot.onfail= cowroot.debug= (see the README).
";

/// The arguments, as bytes: `--cmdline` takes any bytes the kernel could
/// pass; everything else is text (converted lossily, then validated).
struct Args {
    words: Vec<String>,
    raw: Vec<Vec<u8>>,
}

impl Args {
    fn new(os: Vec<OsString>) -> Args {
        let raw: Vec<Vec<u8>> = os.into_iter().map(OsStringExt::into_vec).collect();
        let words = raw.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect();
        Args { words, raw }
    }

    fn remove(&mut self, i: usize) -> (String, Vec<u8>) {
        (self.words.remove(i), self.raw.remove(i))
    }

    /// A value taken as raw bytes (`--cmdline`).
    fn raw_value(&mut self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let prefix = format!("{name}=");
        if let Some(i) = self.words.iter().position(|w| w.starts_with(&prefix)) {
            let (_, raw) = self.remove(i);
            return Ok(Some(raw[prefix.len()..].to_vec()));
        }
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(Error::Usage(format!("{name} needs a value")));
        }
        let (_, raw) = self.remove(i + 1);
        self.remove(i);
        Ok(Some(raw))
    }

    fn flag(&mut self, name: &str) -> bool {
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return false;
        };
        self.remove(i);
        while let Some(i) = self.words.iter().position(|w| w == name) {
            self.remove(i);
        }
        true
    }

    fn value(&mut self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.raw_value(name)?.map(|raw| String::from_utf8_lossy(&raw).into_owned()))
    }

    fn done(self) -> Result<Vec<String>, Error> {
        if let Some(opt) = self.words.iter().find(|w| w.starts_with('-')) {
            return Err(Error::Usage(format!("unknown option {opt}")));
        }
        Ok(self.words)
    }
}

/// The kernel command line as bytes: it need not be UTF-8, and a byte that
/// is not must not stop a boot that does not use cowroot (invariant 7).
fn read_cmdline() -> Result<Vec<u8>, Error> {
    std::fs::read("/proc/cmdline").map_err(|e| Error::io("read", "/proc/cmdline", e))
}

fn cmdline_params() -> Result<Vec<cmdline::Param>, Error> {
    Ok(cmdline::split_bytes(&read_cmdline()?))
}

/// `--name` wins, then `cowroot.name=` of the running system.
fn device_name(args: &mut Args) -> Result<DeviceName, Error> {
    if let Some(name) = args.value("--name")? {
        return DeviceName::parse(&name);
    }
    let params = cmdline_params()?;
    let given = params.iter().rev().find(|p| p.key == "cowroot.name").and_then(|p| p.value.clone());
    match given {
        Some(name) => DeviceName::parse(&name),
        None => Ok(DeviceName::default()),
    }
}

fn run(command: &str, mut args: Args, level: LevelFilter) -> Result<(), Error> {
    match command {
        "boot" => {
            let dry_run = args.flag("--dry-run");
            let read_only = args.flag("--read-only-origin");
            let no_wait = args.flag("--no-wait");
            let print_root = args.flag("--print-root");
            let given = args.raw_value("--cmdline")?;
            let rest = args.done()?;
            if !rest.is_empty() {
                return Err(Error::Usage(format!("unexpected argument {}", rest[0])));
            }
            let mode = match (dry_run, read_only, no_wait) {
                (false, false, false) => BootMode::Normal,
                (true, false, false) => BootMode::DryRun,
                (false, true, false) => BootMode::ReadOnlyOrigin,
                (false, false, true) => BootMode::NoWait,
                _ => return Err(Error::Usage("--dry-run, --read-only-origin and --no-wait exclude each other".into())),
            };
            klog::init(!dry_run, level);
            let text = match given {
                Some(text) => text,
                None => read_cmdline()?,
            };
            let mut sys = RealSystem::new(std::time::Duration::from_secs(config::DEFAULT_TIMEOUT_SECS));
            match boot::boot(&mut sys, &text, mode)? {
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
            // An unreadable command line is an error, never "no cowroot=":
            // the hooks would then mount root=, the origin, writable.
            if let Some(name) = config::root_device_name(&cmdline_params()?) {
                println!("{}", if unit { name.device_unit() } else { name.mapper_path(names::Role::Thin) });
            }
            Ok(())
        }
        "onfail" => {
            args.done()?;
            let policy = config::onfail_policy(&cmdline_params().unwrap_or_default());
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
            klog::init(false, level);
            let force = args.flag("--force");
            let block = match args.value("--block-size")? {
                Some(text) => BlockSize::Exact(
                    units::parse_size(&text)
                        .ok_or_else(|| Error::Usage(format!("--block-size: bad size {text:?}; use e.g. 64K")))?
                        .0,
                ),
                None => BlockSize::Auto,
            };
            let rest = args.done()?;
            let [device] = rest.as_slice() else {
                return Err(Error::Usage("usage: cowroot format DEVICE [--block-size SIZE] [--force]".into()));
            };
            println!(
                "{}",
                format::format(&mut RealSystem::new(std::time::Duration::from_secs(1)), device, block, force)?
            );
            Ok(())
        }
        "status" => {
            klog::init(false, level);
            let json = args.flag("--json");
            let name = device_name(&mut args)?;
            args.done()?;
            let mut sys = RealSystem::new(std::time::Duration::from_secs(1));
            let info = status::gather(&mut sys, &name, &read_cmdline().unwrap_or_default())?;
            if json {
                println!("{}", info.render_json());
            } else {
                print!("{}", info.render_text());
            }
            Ok(())
        }
        "reset" => {
            klog::init(false, level);
            let cancel = args.flag("--cancel");
            let name = device_name(&mut args)?;
            args.done()?;
            println!(
                "{}",
                status::request_reset(&mut RealSystem::new(std::time::Duration::from_secs(1)), &name, cancel)?
            );
            Ok(())
        }
        "inspect" => {
            let rest = args.done()?;
            let [device] = rest.as_slice() else {
                return Err(Error::Usage("usage: cowroot inspect DEVICE".into()));
            };
            print!("{}", inspect::inspect(device)?);
            Ok(())
        }
        other => Err(Error::Usage(format!("unknown command {other:?}\n{HELP}"))),
    }
}

fn main() -> ExitCode {
    // args_os: std::env::args() panics on an argument that is not UTF-8.
    let mut args = Args::new(std::env::args_os().skip(1).collect());
    if args.words.is_empty() || args.words.iter().any(|w| w == "--help" || w == "-h") {
        print!("{HELP}");
        return if args.words.is_empty() { ExitCode::from(USAGE) } else { ExitCode::SUCCESS };
    }
    if args.words.iter().any(|w| w == "--version") {
        println!("cowroot {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let level = if args.flag("-v") | args.flag("--verbose") { LevelFilter::Debug } else { LevelFilter::Info };
    if args.words.is_empty() {
        print!("{HELP}");
        return ExitCode::from(USAGE);
    }
    let (command, _) = args.remove(0);
    match run(&command, args, level) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::DeviceNotYet { spec, key }) => {
            // Not a failure: the initqueue calls again.
            log::debug!("{key}: {spec} is not there yet");
            ExitCode::from(NOT_YET)
        }
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
