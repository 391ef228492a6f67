//! The `cowroot` binary: argument handling and exit codes only.

use cowroot::boot::{self, BootMode, Outcome};
use cowroot::error::Error;
use cowroot::layout::BlockSize;
use cowroot::names::DeviceName;
use cowroot::settings::{self, Settings};
use cowroot::sys::RealSystem;
use cowroot::{config, format, inspect, klog, names, rootarg, shutdown, status, units, volume_setup};
use log::LevelFilter;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
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
                                             set up /dev/mapper/NAME as the keys say
  cowroot boot --no-wait [--print-root]      the same, but exit 3 at once when a device is not
                                             there yet (for initqueues that call again)
  cowroot boot --last-try [--print-root]     the last such call: a missing device is a timeout
  cowroot boot --read-only-origin [--print-root]
                                             the cowroot.onfail=ro fallback: the origin, read-only
  cowroot format DEVICE [--block-size SIZE] [--force]
                                             prepare a pool device or file
  cowroot status [--json] [--name NAME]      show origin, pool, use and health
  cowroot status --check [--log]             exit 0, 1 or 2 (3: unknown) as monitoring plugins do:
                                             pool use below cowroot.warn, above WARN, above CRIT;
                                             --log: only when the level changed, with a priority
                                             prefix for the journal (cowroot-check.timer)
  cowroot grow [MOUNTPOINT]                  grow the filesystem mounted there (default /) to its
                                             device (cowroot.size; cowroot-grow.service runs it)
  cowroot reset [--cancel] [--name NAME]     make the next boot discard the changes
  cowroot maintenance [--cancel] [--name NAME]
                                             in cowroot.mode=frozen, make the next boot write
                                             into the base (the boot after it is frozen again)
  cowroot volumes [--json] [--name NAME]     list the pool's persistent volumes (cowroot.volume)
  cowroot volumes --prepare [NAME]           make a filesystem on this boot's new volumes
                                             (cowroot-volume@NAME.service runs it)
  cowroot volumes --mount                    --prepare, then mount them (systems without systemd;
                                             with systemd, cowroot-volume-generator's units do)
  cowroot volumes --delete NAME              delete a volume this boot does not use, and all it holds
  cowroot checkpoint create NAME [--name NAME]
                                             take a checkpoint of the running root (a thin
                                             snapshot; the root is suspended for an instant)
  cowroot checkpoint list [--json]           list the checkpoints with their age
  cowroot checkpoint delete NAME             delete a checkpoint and what only it holds
  cowroot rollback NAME [--discard]          make the next boot continue from checkpoint NAME;
                                             the state it replaces is kept as a checkpoint
                                             (rollback-gN) unless --discard
  cowroot attach SOURCE --pool POOL [--name NAME] [--reset]
                                             on a running system, the same stack for an image
                                             file or device: /dev/mapper/NAME (default: the
                                             file's name), writes going to POOL (a device or file)
  cowroot detach NAME                        remove what attach made (the writes stay in POOL)
  cowroot list                               list the cowroot devices (attached ones and the root)
  cowroot commit [--from CHECKPOINT|NAME] --to TARGET [--force] [--name NAME]
                                             write the running root's state (or a checkpoint's, or
                                             an attached device's) into a new image file (sparse)
                                             or device (--force: over a signature), with progress
                                             and a verified sha256
  cowroot hydrate                            copy the network origin (cowroot=nbd://...) to the
                                             cowroot.hydrate device, check it, then move the running
                                             root onto the copy; resumes where it stopped
                                             (cowroot-hydrate.service runs it)
  cowroot cleanup [--name NAME]              delete the thin device the last reset left behind
                                             (cowroot-cleanup.service runs it after boot)
  cowroot grub                               print GRUB menu entries for /etc/cowroot.conf: normal,
                                             reset and (frozen) maintenance boots, the kernel loaded
                                             from inside the image (/etc/grub.d/42_cowroot runs it)
  cowroot inspect DEVICE                     show a pool's header copies (read-only; works on images)
  cowroot root [--unit]                      print the root device (or its systemd unit) when
                                             cowroot= is set (for initramfs hooks)
  cowroot root --root-arg-unit|--root-arg-hook
                                             the systemd device unit / dracut hook name of the
                                             device root= names, which cowroot replaces
  cowroot onfail                             print the cowroot.onfail policy (for initramfs hooks)
  cowroot network                            print the server when cowroot= is served over the
                                             network (nbd://...), nothing otherwise (for initramfs
                                             hooks, which then bring the network up)
  cowroot poweroff                           sync and power off at once (for initramfs hooks)
  cowroot shutdown VERB                      run as PID 1 after systemd-shutdown's pivot into
                                             /run/initramfs (where `boot` copies the binary, as
                                             /shutdown): unmount the old root, remove the dm and
                                             loop devices, unmount the image host, then VERB
                                             (poweroff, reboot, halt, kexec)
  cowroot --version

  -v, --verbose    log every step (as cowroot.debug=1 does at boot)
  --config PATH    read the keys from PATH instead of /etc/cowroot.conf (which may be
                   missing; PATH may not)
  --cmdline STR    (boot) use STR instead of /proc/cmdline

Keys: cowroot= cowroot.dev= cowroot.fstype= cowpool= cowroot.reset= cowroot.name=
cowroot.timeout= cowroot.onfail= cowroot.debug= cowroot.mode= cowroot.crypt=
cowroot.size= cowroot.onchange= cowroot.warn= cowroot.maintenance= cowroot.volume=
cowroot.keep= cowroot.hydrate= (see the README). They are read from
/etc/cowroot.conf (key=value words, # comments, only cowroot's keys), then dracut's
/etc/cmdline.d/*.conf, then the kernel command line; for each key the last one read wins.
";

/// `cowroot COMMAND --help`: the usage lines of HELP for that command (an
/// entry runs on while its lines are indented past the command column),
/// and the options every command takes.
fn command_help(command: &str) -> Option<String> {
    let mut out = String::new();
    let mut inside = false;
    for line in HELP.lines() {
        if let Some(rest) = line.strip_prefix("  cowroot ") {
            inside = rest.split_whitespace().next() == Some(command);
        } else if !line.starts_with("    ") {
            inside = false;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return None;
    }
    let options =
        HELP.lines().skip_while(|l| !l.trim_start().starts_with("-v, --verbose")).take_while(|l| !l.is_empty());
    out.push('\n');
    for line in options {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("\nSee `cowroot --help`, cowroot(8) and cowroot.cmdline(7).\n");
    Some(format!("usage:\n{out}"))
}

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

/// A file's bytes, or `None` when there is no such file.
fn read_if_present(path: &str) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// dracut's `/etc/cmdline.d/*.conf`, path and bytes, in the order dracut
/// reads them.
fn read_cmdline_d() -> Result<Vec<(String, Vec<u8>)>, Error> {
    let entries = match std::fs::read_dir(settings::CMDLINE_D) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", settings::CMDLINE_D, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", settings::CMDLINE_D, e))?;
        // A name that is not UTF-8 becomes one that is not there, and is skipped.
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    let mut files = Vec::new();
    for name in settings::cmdline_d_order(names) {
        let path = format!("{}/{name}", settings::CMDLINE_D);
        if let Some(bytes) = read_if_present(&path)? {
            files.push((path, bytes));
        }
    }
    Ok(files)
}

/// Every place keys come from, read: `--config PATH` (which must exist) or
/// `/etc/cowroot.conf` (which need not), dracut's cmdline.d, and the kernel
/// command line or `--cmdline`. An unreadable one is an error, never
/// "no keys": the hooks would then mount root=, the origin, writable.
fn read_settings(config: Option<&str>, cmdline: Option<Vec<u8>>) -> Result<Settings, Error> {
    let file = match config {
        Some(path) => {
            Some((path.to_string(), std::fs::read(path).map_err(|e| Error::io("read", format!("--config {path}"), e))?))
        }
        None => read_if_present(settings::CONFIG_FILE)?.map(|bytes| (settings::CONFIG_FILE.to_string(), bytes)),
    };
    let cmdline_d = read_cmdline_d()?;
    let cmdline = match cmdline {
        Some(text) => text,
        None => read_cmdline()?,
    };
    Ok(Settings::merge(file.as_ref().map(|(path, bytes)| (path.as_str(), bytes.as_slice())), &cmdline_d, &cmdline))
}

/// What the running system's settings say of this boot and the next.
fn booted(settings: Result<Settings, Error>) -> status::Booted {
    match settings.ok().map(|s| (s.config(), s)) {
        Some((Ok(Some(cfg)), s)) => status::Booted {
            reset_from: if cfg.reset { s.origin("cowroot.reset") } else { None },
            fresh_key: if cfg.mode == config::RootMode::Volatile { Some("cowroot.mode=volatile".into()) } else { None },
        },
        _ => status::Booted::default(),
    }
}

/// `--name` wins, then `cowroot.name=` of the running system's settings.
fn device_name(args: &mut Args, settings: &Result<Settings, Error>) -> Result<DeviceName, Error> {
    if let Some(name) = args.value("--name")? {
        return DeviceName::parse(&name);
    }
    let params = settings.as_ref().map_err(Clone::clone)?.params();
    let given = params.iter().rev().find(|p| p.key == "cowroot.name").and_then(|p| p.value.clone());
    match given {
        Some(name) => DeviceName::parse(&name),
        None => Ok(DeviceName::default()),
    }
}

/// `config`: the global `--config PATH`.
fn run(command: &str, mut args: Args, level: LevelFilter, config: Option<&str>) -> Result<(), Error> {
    match command {
        "boot" => {
            let dry_run = args.flag("--dry-run");
            let read_only = args.flag("--read-only-origin");
            let no_wait = args.flag("--no-wait");
            let last_try = args.flag("--last-try");
            let print_root = args.flag("--print-root");
            let given = args.raw_value("--cmdline")?;
            let rest = args.done()?;
            if !rest.is_empty() {
                return Err(Error::Usage(format!("unexpected argument {}", rest[0])));
            }
            let mode = match (dry_run, read_only, no_wait || last_try) {
                (false, false, false) => BootMode::Normal,
                (true, false, false) => BootMode::DryRun,
                (false, true, false) => BootMode::ReadOnlyOrigin,
                (false, false, true) if last_try => BootMode::LastTry,
                (false, false, true) => BootMode::NoWait,
                _ => return Err(Error::Usage("--dry-run, --read-only-origin and --no-wait exclude each other".into())),
            };
            klog::init(!dry_run, level);
            let settings = read_settings(config, given)?;
            let mut sys = RealSystem::new(std::time::Duration::from_secs(config::DEFAULT_TIMEOUT_SECS));
            match boot::boot(&mut sys, &settings, mode)? {
                Outcome::NothingToDo => log::debug!("no cowroot= anywhere; nothing to do"),
                Outcome::AlreadyActive { root, message: line } | Outcome::Ready { root, summary: line } => {
                    log::info!("{line}");
                    // What tears the devices down at shutdown (src/shutdown.rs);
                    // without it they stay until power-off, which is safe.
                    match shutdown::install() {
                        Ok(true) => log::debug!("installed {} for a clean shutdown", shutdown::SHUTDOWN),
                        Ok(false) => log::debug!("{} exists already; left as it is", shutdown::SHUTDOWN),
                        Err(e) => log::warn!(
                            "{e}; the devices cannot be torn down at shutdown, which is safe (the root is \
                             remounted read-only and synced first)"
                        ),
                    }
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
            let arg_unit = args.flag("--root-arg-unit");
            let arg_hook = args.flag("--root-arg-hook");
            args.done()?;
            let settings = read_settings(config, None)?;
            // Read leniently past bad values and foreign words: the hooks
            // then wait for the root device, and the boot fails closed.
            let Some(name) = config::root_device_name(&settings.params()) else {
                return Ok(());
            };
            let ours = name.mapper_path(names::Role::Thin);
            if !(arg_unit || arg_hook) {
                println!("{}", if unit { name.device_unit() } else { ours });
                return Ok(());
            }
            // The device root= names, for the hooks that stand down the
            // waits for it; nothing when it is ours or not a block device.
            let path = settings.root_arg().and_then(rootarg::dracut_device_path).filter(|p| *p != ours);
            let printed = if arg_unit {
                path.as_deref().and_then(rootarg::device_unit).filter(|u| *u != name.device_unit())
            } else {
                path.as_deref().and_then(rootarg::dracut_hook_name)
            };
            if let Some(printed) = printed {
                println!("{printed}");
            }
            Ok(())
        }
        "onfail" => {
            args.done()?;
            let params = read_settings(config, None).map(|s| s.params()).unwrap_or_default();
            let policy = config::onfail_policy(&params);
            println!("{policy}");
            Ok(())
        }
        "network" => {
            args.done()?;
            // A configuration that does not parse needs no network: the
            // boot that follows reports it.
            let cfg = read_settings(config, None).ok().and_then(|s| s.config().ok().flatten());
            if let Some(config::Source::Nbd(server)) = cfg.map(|c| c.source) {
                println!("{server}");
            }
            Ok(())
        }
        "poweroff" => {
            args.done()?;
            nix::unistd::sync();
            nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF)
                .map_err(|e| Error::io("power off", "the machine", e))?;
            Ok(())
        }
        "shutdown" => {
            let rest = args.done()?;
            shutdown::run(shutdown::Action::parse(rest.first().map(String::as_str)))
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
            let check = args.flag("--check");
            let log_changes = args.flag("--log");
            let settings = read_settings(config, None);
            let name = device_name(&mut args, &settings)?;
            args.done()?;
            let levels = match settings.as_ref().ok().map(|s| s.config()) {
                Some(Ok(Some(cfg))) => cfg.levels,
                _ => config::UseLevels::default(),
            };
            // Where this boot's cowroot.reset=1 came from, as the files
            // read now say (an edited /etc/cowroot.conf may differ from the
            // initramfs's copy).
            let booted = booted(settings);
            let mut sys = RealSystem::new(std::time::Duration::from_secs(1));
            let info = status::gather(&mut sys, &name, booted);
            if check {
                let (code, line) = match &info {
                    Ok(info) => info.check(levels),
                    Err(err) => (3, format!("cowroot UNKNOWN: {err}")),
                };
                if !log_changes || status::level_changed(&name, code) {
                    // The journal takes a <N> prefix as the line's priority.
                    let priority = if log_changes { ["<6>", "<4>", "<2>", "<3>"][code as usize] } else { "" };
                    println!("{priority}{line}");
                }
                std::process::exit(code.into());
            }
            let info = info?;
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
            let name = device_name(&mut args, &read_settings(config, None))?;
            args.done()?;
            println!(
                "{}",
                status::request_reset(&mut RealSystem::new(std::time::Duration::from_secs(1)), &name, cancel)?
            );
            Ok(())
        }
        "maintenance" => {
            klog::init(false, level);
            let cancel = args.flag("--cancel");
            let name = device_name(&mut args, &read_settings(config, None))?;
            args.done()?;
            let mut sys = RealSystem::new(std::time::Duration::from_secs(1));
            println!("{}", status::request_maintenance(&mut sys, &name, cancel)?);
            Ok(())
        }
        "grow" => {
            klog::init(false, level);
            let rest = args.done()?;
            let mount_point = rest.first().map(String::as_str).unwrap_or("/");
            println!("{}", cowroot::grow::grow(mount_point)?);
            Ok(())
        }
        "volumes" => {
            klog::init(false, level);
            let prepare = args.flag("--prepare");
            let mount = args.flag("--mount");
            let delete = args.flag("--delete");
            if [prepare, mount, delete].iter().filter(|&&f| f).count() > 1 {
                return Err(Error::Usage("cowroot volumes: give one of --prepare, --mount, --delete".into()));
            }
            let json = args.flag("--json");
            let name = device_name(&mut args, &read_settings(config, None))?;
            let rest = args.done()?;
            let only = match rest.as_slice() {
                [] => None,
                [volume] if prepare || delete => Some(
                    cowroot::volume::VolumeName::parse(volume)
                        .map_err(|why| Error::Usage(format!("cowroot volumes: {why}")))?,
                ),
                _ => {
                    return Err(Error::Usage(
                        "usage: cowroot volumes [--json | --prepare [NAME] | --mount | --delete NAME]".into(),
                    ))
                }
            };
            let mut sys = RealSystem::new(std::time::Duration::from_secs(1));
            if delete {
                let volume = only.ok_or_else(|| Error::Usage("usage: cowroot volumes --delete NAME".into()))?;
                println!("{}", status::delete_volume(&mut sys, &name, volume)?);
                return Ok(());
            }
            if prepare || mount {
                let report = if mount {
                    volume_setup::mount_all(&mut sys, &name)?
                } else {
                    volume_setup::prepare(&mut sys, &name, only)?
                };
                for line in report {
                    println!("{line}");
                }
                return Ok(());
            }
            let info = status::gather(&mut sys, &name, status::Booted::default())?;
            if json {
                println!("{}", info.render_volumes_json());
            } else if info.volumes.is_empty() {
                println!("{} holds no persistent volumes (cowroot.volume= makes one)", info.pool_device);
            } else {
                print!("{}", info.render_volumes_text());
            }
            Ok(())
        }
        "checkpoint" => {
            klog::init(false, level);
            let json = args.flag("--json");
            let name = device_name(&mut args, &read_settings(config, None))?;
            let rest = args.done()?;
            let usage = || {
                Error::Usage("usage: cowroot checkpoint create|delete NAME, or cowroot checkpoint list [--json]".into())
            };
            let parse = |text: &str| {
                cowroot::checkpoint::parse_name(text).map_err(|why| Error::Usage(format!("cowroot checkpoint: {why}")))
            };
            let mut sys = RealSystem::new(std::time::Duration::from_secs(1));
            match rest.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["create", checkpoint] => {
                    println!("{}", status::create_checkpoint(&mut sys, &name, parse(checkpoint)?)?)
                }
                ["delete", checkpoint] => {
                    println!("{}", status::delete_checkpoint(&mut sys, &name, parse(checkpoint)?)?)
                }
                ["list"] => {
                    let info = status::gather(&mut sys, &name, status::Booted::default())?;
                    if json {
                        println!("{}", info.render_checkpoints_json());
                    } else if info.checkpoints.is_empty() {
                        println!(
                            "{} holds no checkpoints (`cowroot checkpoint create NAME` takes one; cowroot.keep=N keeps \
                             what resets replace)",
                            info.pool_device
                        );
                    } else {
                        print!("{}", info.render_checkpoints_text());
                    }
                }
                _ => return Err(usage()),
            }
            Ok(())
        }
        "attach" => {
            klog::init(false, level);
            let reset = args.flag("--reset");
            let pool = args.value("--pool")?;
            let name = args.value("--name")?;
            let rest = args.done()?;
            let usage = "usage: cowroot attach SOURCE --pool POOL [--name NAME] [--reset]";
            let ([source], Some(pool)) = (rest.as_slice(), pool) else {
                return Err(Error::Usage(usage.into()));
            };
            let name = match name {
                Some(name) => DeviceName::parse(&name)?,
                None => cowroot::attach::default_name(source).ok_or_else(|| {
                    Error::Usage(format!("cowroot attach: give the device a name with --name ({source:?} makes none)"))
                })?,
            };
            let req = cowroot::attach::AttachRequest { source: source.clone(), pool, name, reset };
            println!("{}", cowroot::attach::attach(&mut RealSystem::new(std::time::Duration::from_secs(30)), &req)?);
            Ok(())
        }
        "detach" => {
            klog::init(false, level);
            let rest = args.done()?;
            let [name] = rest.as_slice() else {
                return Err(Error::Usage("usage: cowroot detach NAME".into()));
            };
            let name = DeviceName::parse(name)?;
            println!("{}", cowroot::attach::detach(&mut RealSystem::new(std::time::Duration::from_secs(30)), &name)?);
            Ok(())
        }
        "list" => {
            klog::init(false, level);
            args.done()?;
            print!("{}", cowroot::attach::list(&mut RealSystem::new(std::time::Duration::from_secs(1)))?);
            Ok(())
        }
        "grub" => {
            klog::init(false, level);
            args.done()?;
            // The configuration file alone: this boot's command line (a
            // reset, a maintenance boot) is not the machine's setup.
            let path = config.unwrap_or(settings::CONFIG_FILE);
            let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
            let settings = Settings::merge(Some((path, bytes.as_slice())), &[], b"");
            let Some(cfg) = settings.config()? else {
                println!("# cowroot: {path} sets no cowroot=, so no entries");
                return Ok(());
            };
            let extra: Vec<String> = ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"]
                .iter()
                .filter_map(|k| std::env::var(k).ok())
                .collect();
            print!(
                "{}",
                cowroot::grub::entries(&cfg, &settings.params(), &extra.join(" "), &cowroot::grub::grub_probe)?
            );
            // Only a root cowroot runs boots the image's kernel.
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let on_cowroot =
                cowroot::grow::mount_source(&mounts, "/") == Some(cfg.name.mapper_path(names::Role::Thin).as_str());
            if let Some(warning) = cowroot::grub::check_kernel().filter(|_| on_cowroot) {
                eprintln!("cowroot: warning: {warning}");
            }
            Ok(())
        }
        "commit" => {
            klog::init(false, level);
            let from = args.value("--from")?;
            let to = args.value("--to")?;
            let force = args.flag("--force");
            let name = device_name(&mut args, &read_settings(config, None))?;
            args.done()?;
            let Some(to) = to else {
                return Err(Error::Usage("usage: cowroot commit [--from CHECKPOINT|NAME] --to TARGET".into()));
            };
            let attached = from
                .as_deref()
                .and_then(|f| DeviceName::parse(f).ok())
                .filter(|f| *f != name && cowroot::attach::attached_names().contains(f));
            let source = match (from, attached) {
                (_, Some(other)) => cowroot::commit::CommitSource::Live(other),
                (Some(checkpoint), None) => cowroot::commit::CommitSource::Checkpoint(
                    name,
                    cowroot::checkpoint::parse_name(&checkpoint)
                        .map_err(|why| Error::Usage(format!("cowroot commit --from: {why}")))?,
                ),
                (None, None) => cowroot::commit::CommitSource::Live(name),
            };
            let mut sys = RealSystem::new(std::time::Duration::from_secs(30));
            println!("{}", cowroot::commit::commit(&mut sys, &source, &to, force)?);
            Ok(())
        }
        "rollback" => {
            klog::init(false, level);
            let discard = args.flag("--discard");
            let settings = read_settings(config, None);
            let name = device_name(&mut args, &settings)?;
            let booted = booted(settings);
            let rest = args.done()?;
            let [checkpoint] = rest.as_slice() else {
                return Err(Error::Usage("usage: cowroot rollback NAME [--discard]".into()));
            };
            let checkpoint = cowroot::checkpoint::parse_name(checkpoint)
                .map_err(|why| Error::Usage(format!("cowroot rollback: {why}")))?;
            let mut sys = RealSystem::new(std::time::Duration::from_secs(1));
            println!("{}", status::rollback(&mut sys, &name, checkpoint, !discard, &booted)?);
            Ok(())
        }
        "cleanup" => {
            klog::init(false, level);
            let name = device_name(&mut args, &read_settings(config, None))?;
            args.done()?;
            println!("{}", status::cleanup(&mut RealSystem::new(std::time::Duration::from_secs(1)), &name)?);
            Ok(())
        }
        "hydrate" => {
            klog::init(false, level);
            args.done()?;
            println!("{}", cowroot::hydrate::run(&mut RealSystem::new(std::time::Duration::from_secs(5)))?);
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
    // systemd-shutdown runs /run/initramfs/shutdown as `/shutdown VERB
    // --log-level ...` (options of its own that do not concern us).
    let mut os = std::env::args_os();
    if os.next().is_some_and(|argv0| Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("shutdown"))) {
        let verb = os.next().map(|v| v.to_string_lossy().into_owned());
        shutdown::run(shutdown::Action::parse(verb.as_deref()));
    }
    // systemd runs generators with three directories; units go to the first.
    if std::env::args_os()
        .next()
        .is_some_and(|argv0| Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("cowroot-volume-generator")))
    {
        klog::init(false, LevelFilter::Info);
        let dir = std::env::args_os().nth(1).unwrap_or_else(|| "/run/systemd/generator".into());
        return match volume_setup::generate(Path::new(&dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                log::error!("cowroot-volume-generator: {err}");
                eprintln!("cowroot-volume-generator: {err}");
                ExitCode::from(FAILED)
            }
        };
    }
    // args_os: std::env::args() panics on an argument that is not UTF-8.
    let mut args = Args::new(std::env::args_os().skip(1).collect());
    if args.words.is_empty() || args.words.iter().any(|w| w == "--help" || w == "-h") {
        // The command is the first word that is not an option.
        match args.words.iter().find(|w| !w.starts_with('-')).and_then(|command| command_help(command)) {
            Some(help) => print!("{help}"),
            None => print!("{HELP}"),
        }
        return if args.words.is_empty() { ExitCode::from(USAGE) } else { ExitCode::SUCCESS };
    }
    if args.words.iter().any(|w| w == "--version") {
        println!("cowroot {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let level = if args.flag("-v") | args.flag("--verbose") { LevelFilter::Debug } else { LevelFilter::Info };
    let config = match args.value("--config") {
        Ok(config) => config,
        Err(err) => {
            eprintln!("cowroot: {err}");
            return ExitCode::from(USAGE);
        }
    };
    if args.words.is_empty() {
        print!("{HELP}");
        return ExitCode::from(USAGE);
    }
    let (command, _) = args.remove(0);
    match run(&command, args, level, config.as_deref()) {
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
