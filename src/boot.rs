//! `cowroot boot`: the early-boot agent. Wires the pure stages to the
//! system: settings (configuration file, cmdline.d, kernel command line) → config → resolve devices → origin → probe → plan →
//! execute (with rollback) → one summary line. Every effect goes through
//! `System`.

use crate::cmdline::Param;
use crate::config::{Config, DevSpec, OnFail, PoolSpec, RamSize, RootMode, Source, DEFAULT_RAM_SIZE};
use crate::crypt::SessionKeys;
use crate::error::{Error, Result};
use crate::exec::{Executor, System};
use crate::layout::BlockSize;
use crate::names::Role;
use crate::plan::{self, origin_ref, DevRef, OriginFacts, HOST_MOUNT};
use crate::pool::{PoolFacts, PoolState};
use crate::probe;
use crate::render;
use crate::resume::{self, Request, ResumeDevice};
use crate::settings::Settings;
use crate::sys::random_uuid;
use crate::units::Bytes;
use crate::volume::{self, ActiveVolume};
use std::path::Path;
use std::time::{Duration, Instant};

/// Exists while the root is the read-only origin (`cowroot.onfail=ro`).
pub const READ_ONLY_MARKER: &str = "/run/cowroot/read-only-origin";

/// What `cowroot boot` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Normal,
    /// Set up only if every device is there now, else `DeviceNotYet`: for
    /// initqueues that call again rather than be blocked.
    NoWait,
    /// The last of those calls: a device still missing is a timeout.
    LastTry,
    /// Print the plan, change nothing.
    DryRun,
    /// The `cowroot.onfail=ro` fallback: the origin alone, read-only.
    ReadOnlyOrigin,
}

pub enum Outcome {
    /// No `cowroot=` on the command line.
    NothingToDo,
    /// The root device was already set up (the agent ran before).
    AlreadyActive {
        root: String,
        message: String,
    },
    Ready {
        root: String,
        summary: String,
    },
    DryRun(String),
}

struct Devices {
    host: Option<String>,
    origin: Option<String>,
    /// Not resolved for the read-only fallback.
    pool: Option<String>,
    waited: Duration,
    /// Whether this call waits for what is missing (not `--no-wait`).
    wait: bool,
    /// `cowroot.hydrate`'s device.
    hydrate: Option<String>,
    /// A server that does not answer now will not be waited for any longer
    /// (this call waited, or the initqueue's calls waited long enough).
    server_wait_over: bool,
}

impl Devices {
    fn pool(&self) -> Result<&str> {
        self.pool.as_deref().ok_or_else(|| Error::Inconsistent("no pool device".into()))
    }
}

fn resolve_devices(cfg: &Config, need_pool: bool, wait: bool) -> Result<Devices> {
    // One deadline for all devices together.
    let deadline = wait.then(|| Instant::now() + Duration::from_secs(cfg.timeout_secs));
    let mut waited = Duration::ZERO;
    let mut wait = |spec, key| -> Result<String> {
        let (path, took) = probe::wait_for(spec, key, deadline, cfg.timeout_secs)?;
        waited += took;
        Ok(path)
    };
    let host = cfg.host_dev.as_ref().map(|s| wait(s, "cowroot.dev")).transpose()?;
    let origin = match &cfg.source {
        Source::Device(spec) => Some(wait(spec, "cowroot")?),
        // Connected by the plan (`ConnectNbd`), which can undo it.
        Source::File(_) | Source::Nbd(_) => None,
    };
    let pool = match (need_pool, &cfg.pool) {
        (false, _) => None,
        (true, PoolSpec::Device(spec)) => Some(wait(spec, "cowpool")?),
        (true, PoolSpec::Lvm { vg, lv }) => Some(wait_for_lv(vg, lv, deadline, cfg.timeout_secs)?),
        // Made in `setup`, with the rest.
        (true, PoolSpec::Ram(_)) => None,
    };
    // The read-only fallback (no pool either) does without the copy.
    let hydrate = match need_pool {
        true => cfg.hydrate.as_ref().map(|s| wait(s, "cowroot.hydrate")).transpose()?,
        false => None,
    };
    if let Some(pool) = &pool {
        check_separate(cfg, pool, [("cowroot.dev", &host), ("cowroot", &origin), ("cowroot.hydrate", &hydrate)])?;
    }
    Ok(Devices { host, origin, pool, waited, wait: deadline.is_some(), hydrate, server_wait_over: deadline.is_some() })
}

/// Activates VG/LV until it is there: its physical volumes may come later
/// (md, LUKS). The last activation error is the message if they never do.
fn wait_for_lv(vg: &str, lv: &str, deadline: Option<Instant>, timeout_secs: u64) -> Result<String> {
    let path = crate::lvm::mapper_path(vg, lv);
    loop {
        let failed = crate::lvm::activate(vg, lv).err();
        match probe::wait_for(&DevSpec::Path(path.clone()), "cowpool", None, timeout_secs) {
            Ok((found, _)) => return Ok(found),
            Err(Error::DeviceNotYet { .. }) if deadline.is_some_and(|d| Instant::now() < d) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(Error::DeviceNotYet { spec, key }) if deadline.is_none() => {
                return Err(Error::DeviceNotYet { spec, key });
            }
            Err(Error::DeviceNotYet { .. }) => {
                return Err(failed.unwrap_or(Error::DeviceTimeout {
                    spec: format!("{vg}/{lv}"),
                    key: "cowpool".into(),
                    seconds: timeout_secs,
                }))
            }
            Err(other) => return Err(other),
        }
    }
}

/// The pool must not be, contain or be built on what must stay untouched:
/// the same device, its disk or one of its partitions, a dm/md/loop device
/// stacked on it.
fn check_separate(cfg: &Config, pool: &str, others: [(&str, &Option<String>); 3]) -> Result<()> {
    let sys = Path::new("/sys");
    let pool_stack = probe::stack(sys, probe::dev_num(pool)?);
    for (key, other) in others {
        let Some(other) = other else { continue };
        let other_stack = probe::stack(sys, probe::dev_num(other)?);
        if probe::overlaps(&pool_stack, &other_stack) {
            let relation = if pool_stack[0] == other_stack[0] { "the same device as" } else { "stacked with" };
            return Err(Error::config(
                "cowpool",
                format!(
                    "{} ({pool}) is {relation} {key} ({other}); the pool must be a separate device, \
                     or the writes would land on what cowroot must never write",
                    cfg.pool
                ),
            ));
        }
    }
    Ok(())
}

/// Seconds that `boot --no-wait` calls have found a device missing while
/// nothing else happened: the clock starts again whenever the kernel sent
/// a device event since the last call (a disk appeared, LUKS was opened, an
/// LV was activated), so the time a passphrase takes to type does not
/// count. `cowroot.timeout` bounds the quiet time, as it bounds one call
/// that waits.
fn waited_since_first_try() -> Result<u64> {
    const SINCE: &str = "/run/cowroot/waiting-since";
    let number = |path: &str| -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        text.split(['.', ' ', '\n']).next()?.parse().ok()
    };
    let now = number("/proc/uptime").unwrap_or(0);
    let events = number("/sys/kernel/uevent_seqnum").unwrap_or(0);
    let stored = std::fs::read_to_string(SINCE).ok().and_then(|t| {
        let (since, seen) = t.trim().split_once(' ')?;
        Some((since.parse::<u64>().ok()?, seen.parse::<u64>().ok()?))
    });
    match stored {
        Some((since, seen)) if seen == events => Ok(now.saturating_sub(since)),
        _ => {
            std::fs::create_dir_all("/run/cowroot").map_err(|e| Error::io("mkdir", "/run/cowroot", e))?;
            std::fs::write(SINCE, format!("{now} {events}")).map_err(|e| Error::io("write", SINCE, e))?;
            Ok(0)
        }
    }
}

/// Before anything is written to the pool: a hibernation image on the
/// `resume=` device is resumed first (see `resume`). The resume device is
/// waited for like cowroot's own, but its absence only warns: the
/// generator's own resume step would not find it either.
fn resume_first<S: System>(
    sys: &mut S,
    params: &[Param],
    cfg: &Config,
    mode: BootMode,
    waited: Duration,
) -> Result<()> {
    let (device, offset_pages) = match resume::request(params) {
        Request::None => return Ok(()),
        Request::Unknown(value) => {
            log::warn!(
                "resume={value}: cowroot cannot look up a device named this way, so it cannot check it for a \
                 hibernation image before writing to the pool; name it as /dev/..., UUID=, LABEL=, PARTUUID= or MAJ:MIN"
            );
            return Ok(());
        }
        Request::Resume { device, offset_pages } => (device, offset_pages),
    };
    let look = || -> Result<Option<String>> {
        match &device {
            ResumeDevice::Number(num) => Ok(probe::dev_path(*num).filter(|p| Path::new(p).exists())),
            ResumeDevice::Spec(spec) => probe::resolve(spec, "resume"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(cfg.timeout_secs).saturating_sub(waited);
    let path = loop {
        if let Some(path) = look()? {
            break path;
        }
        let give_up = match mode {
            BootMode::NoWait => {
                if waited_since_first_try()? < cfg.timeout_secs {
                    return Err(Error::DeviceNotYet { spec: device.to_string(), key: "resume".into() });
                }
                true
            }
            BootMode::Normal => Instant::now() >= deadline,
            _ => true,
        };
        if give_up {
            log::warn!(
                "resume={device}: no such device after {} s; setting up without checking it for a hibernation \
                 image. If resume= names a swap file inside the copy-on-write root or a device that is gone, \
                 add noresume (or fix resume=) to save this wait",
                cfg.timeout_secs
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let signature = |path: &str| resume::read_header_page(path, offset_pages).map(|p| resume::image_signature(&p));
    let found = match signature(&path) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(()),
        Err(err) => {
            log::warn!(
                "resume={device}: cannot read {path} ({err}); setting up without checking it for a hibernation image"
            );
            return Ok(());
        }
    };
    log::warn!("{path} (resume={device}) holds a hibernation image ({found}); resuming it before anything is written to the pool");
    let tried = probe::dev_num(&path).and_then(|num| sys.resume_hibernation(num, offset_pages));
    match signature(&path)? {
        None => {
            log::warn!("the kernel did not resume the image on {path} and discarded it (see its messages above); setting up as usual");
            Ok(())
        }
        Some(_) => Err(Error::HibernationPending {
            spec: device.to_string(),
            device: path,
            why: match tried {
                Err(err) => err.to_string(),
                Ok(()) => "the image is still there".into(),
            },
        }),
    }
}

/// Is our root device already there (the agent ran earlier in this boot)?
fn already_active<S: System>(sys: &mut S, cfg: &Config) -> Result<bool> {
    let root = cfg.name.dm_name(Role::Thin);
    let Some(info) = sys.dm_info(&root)? else {
        return Ok(false);
    };
    let ours = [Role::Thin, Role::ReadOnly].iter().any(|r| info.uuid == cfg.name.dm_uuid(*r));
    if ours && info.active {
        return Ok(true);
    }
    Err(Error::config(
        "cowroot.name",
        format!("a device-mapper device named {root} already exists and is not cowroot's; choose another name"),
    ))
}

/// Exists when `cowroot.onfail=ram` made this boot fall back to a RAM pool;
/// holds why.
pub const RAM_FALLBACK_MARKER: &str = "/run/cowroot/ram-fallback";
/// Exists when the root device is larger than the origin (`cowroot.size`):
/// cowroot-grow.service then grows the root filesystem.
pub const GROW_MARKER: &str = "/run/cowroot/grow";
/// Names the loop device of this boot's RAM pool, for `cowroot status`.
pub const RAM_POOL_MARKER: &str = "/run/cowroot/ram-pool";

pub fn boot<S: System>(sys: &mut S, settings: &Settings, mode: BootMode) -> Result<Outcome> {
    let Some(cfg) = settings.config()? else {
        return Ok(Outcome::NothingToDo);
    };
    if cfg.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    log::debug!("keys: {}", settings.describe());
    let fallback = cfg.onfail == OnFail::Ram && matches!(mode, BootMode::Normal | BootMode::NoWait | BootMode::LastTry);
    match boot_with(sys, settings, &cfg, mode) {
        Err(err) if fallback && ram_may_help(&err) => {
            log::error!("{err}");
            let why = format!(
                "cowroot.onfail=ram: the pool {} cannot be used (see the message above), so this boot runs on a \
                 RAM pool: NOTHING written in it will be kept. Fix the pool and boot again",
                cfg.pool
            );
            log::error!("{why}");
            std::fs::create_dir_all("/run/cowroot").map_err(|e| Error::io("mkdir", "/run/cowroot", e))?;
            std::fs::write(RAM_FALLBACK_MARKER, format!("{err}\n"))
                .map_err(|e| Error::io("write", RAM_FALLBACK_MARKER, e))?;
            // A RAM pool keeps nothing: no base to freeze or maintain.
            let root_mode = if cfg.mode == RootMode::Frozen { RootMode::Volatile } else { cfg.mode };
            let ram = Config {
                pool: PoolSpec::Ram(None),
                onfail: OnFail::Shell,
                mode: root_mode,
                maintenance: false,
                // A RAM pool keeps nothing: the volumes wait for the disk.
                volumes: Vec::new(),
                keep: 0,
                ..cfg.clone()
            };
            boot_with(sys, settings, &ram, mode)
        }
        other => other,
    }
}

/// Would a RAM pool get past this error? Not when the origin, its host or
/// another key is the trouble, nor while a device may still come
/// (`DeviceNotYet`), nor with a hibernation image waiting.
fn ram_may_help(err: &Error) -> bool {
    match err {
        // Undoing part of the setup failed: what is left must not be built on.
        Error::Rollback { failures, .. } if !failures.is_empty() => false,
        Error::Rollback { cause, .. } => ram_may_help(cause),
        Error::DeviceTimeout { key, .. } | Error::Config { key, .. } => key == "cowpool",
        Error::DeviceNotYet { .. }
        | Error::ServerUnreachable { .. }
        | Error::ImageMissing { .. }
        | Error::HibernationPending { .. }
        | Error::Usage(_)
        | Error::InFile { .. } => false,
        _ => true,
    }
}

fn boot_with<S: System>(sys: &mut S, settings: &Settings, cfg: &Config, mode: BootMode) -> Result<Outcome> {
    let cfg = cfg.clone();
    sys.set_timeout(Duration::from_secs(cfg.timeout_secs));
    let started = Instant::now();
    let root = cfg.name.mapper_path(Role::Thin);
    if mode != BootMode::DryRun {
        crate::sys::load_modules(
            matches!(cfg.source, Source::File(_)) || cfg.pool.is_ram(),
            cfg.crypt_random,
            matches!(cfg.source, Source::Nbd(_)),
        );
        if already_active(sys, &cfg)? {
            let message = format!("{root} is already set up; nothing to do");
            return Ok(Outcome::AlreadyActive { root, message });
        }
    }
    let wait = !matches!(mode, BootMode::NoWait | BootMode::LastTry);
    let mut devices = match resolve_devices(&cfg, mode != BootMode::ReadOnlyOrigin, wait) {
        Err(Error::DeviceNotYet { spec, key })
            if mode == BootMode::LastTry || waited_since_first_try()? >= cfg.timeout_secs =>
        {
            return Err(Error::DeviceTimeout { spec, key, seconds: cfg.timeout_secs })
        }
        other => other?,
    };
    // One reading for both decisions below: give up on the server (and
    // take a complete local copy), or have the initqueue call again.
    if mode == BootMode::LastTry
        || (mode == BootMode::NoWait
            && matches!(cfg.source, Source::Nbd(_))
            && waited_since_first_try()? >= cfg.timeout_secs)
    {
        devices.server_wait_over = true;
    }
    log::debug!(
        "devices: cowroot.dev {}, origin {}, pool {} (waited {} ms)",
        devices.host.as_deref().unwrap_or("-"),
        devices.origin.as_deref().unwrap_or("-"),
        devices.pool.as_deref().unwrap_or("-"),
        devices.waited.as_millis()
    );
    match mode {
        BootMode::DryRun => return dry_run_plan(sys, &cfg, &devices).map(Outcome::DryRun),
        BootMode::ReadOnlyOrigin => return read_only_origin(sys, &cfg, &devices),
        BootMode::Normal | BootMode::NoWait | BootMode::LastTry => {}
    }
    let mut resume_params = resume::environment_params(|key| std::env::var(key).ok());
    resume_params.extend(settings.params());
    resume_first(sys, &resume_params, &cfg, mode, devices.waited)?;

    let mut exec = Executor::new(sys, &cfg.name);
    let network: Option<crate::hydrate::Pending>;
    let (thins, origin_size, pool_label) = match setup(&cfg, &devices, &mut exec) {
        Ok((thins, size, label, copy)) => {
            network = copy;
            let done = (thins, size, label);
            if done.0.header.header.root_sectors.0 > 0 {
                let marked = std::fs::create_dir_all("/run/cowroot").and_then(|()| std::fs::write(GROW_MARKER, b""));
                if let Err(e) = marked {
                    log::warn!("cannot write {GROW_MARKER} ({e}): grow the root filesystem with `cowroot grow /`");
                }
            }
            // Without the marker the booted system would not mount the
            // volumes, and what it writes there would land in the root.
            if let Err(e) = write_volume_marker(&cfg, &done.0) {
                return Err(exec.rollback(e));
            }
            if let Some(ram) = exec.ram_pool() {
                let marked = std::fs::create_dir_all("/run/cowroot")
                    .and_then(|()| std::fs::write(RAM_POOL_MARKER, format!("{ram}\n")));
                if let Err(e) = marked {
                    log::warn!(
                        "cannot write {RAM_POOL_MARKER} ({e}): `cowroot status` will not know the pool is in RAM"
                    );
                }
            }
            exec.commit();
            if let Some(network) = &network {
                let written = std::fs::create_dir_all("/run/cowroot")
                    .and_then(|()| std::fs::write(crate::hydrate::MARKER, network.line()));
                if let Err(e) = written {
                    log::warn!(
                        "cannot write {} ({e}): `cowroot status` will not name the server, and \
                         cowroot-hydrate.service will not know what to copy",
                        crate::hydrate::MARKER
                    );
                }
            }
            done
        }
        Err(Error::ServerUnreachable { server, .. }) if mode == BootMode::NoWait && !devices.server_wait_over => {
            let cause = Error::DeviceNotYet { spec: server, key: "cowroot".into() };
            return Err(exec.rollback(cause));
        }
        Err(cause) => return Err(exec.rollback(cause)),
    };

    let usage = sys.pool_status(&cfg.name.dm_name(Role::Pool)).ok();
    let (data, meta) = usage
        .map(|u| {
            let block = thins.header.header.block_sectors as u64 * 512;
            (
                format!("data {}% of {}", u.data_percent(), Bytes(u.data_total.saturating_mul(block))),
                format!("metadata {}%", u.meta_percent()),
            )
        })
        .unwrap_or_else(|| ("data use unknown".into(), "metadata use unknown".into()));
    let took = started.elapsed().saturating_sub(devices.waited);
    let kernel = sys.kernel_time();
    log::debug!(
        "timing: {} us in all, {} us in mount, loop and dm calls, {} us own work",
        took.as_micros(),
        kernel.as_micros(),
        took.saturating_sub(kernel).as_micros()
    );
    let own_ms = took.as_millis();
    if let Some(change) = &thins.origin_change {
        log::warn!(
            "the origin {} is not the one the kept changes were made on ({change}); starting fresh on it \
             (cowroot.onchange=reset)",
            cfg.source
        );
    }
    let mut origin = origin_label(&cfg, &devices);
    if let Some(copy) = network.as_ref().filter(|n| n.nbd == "-") {
        origin.push_str(&format!(", its local copy on {}", copy.device));
    }
    let summary = format!(
        "{root} ready: origin {origin} ({origin_size}), pool {pool_label}, generation {} ({}), {data}, {meta}, {own_ms} ms (+{} ms waiting for devices)",
        thins.header.header.generation,
        thins.mode.as_str(),
        devices.waited.as_millis()
    );
    let volumes: Vec<String> = thins
        .volumes
        .iter()
        .map(|(spec, r)| format!("{} ({}, {})", r.name, r.sectors.bytes(), spec.mount_point))
        .collect();
    let summary = if volumes.is_empty() { summary } else { format!("{summary}; volumes {}", volumes.join(", ")) };
    Ok(Outcome::Ready { root, summary })
}

/// `cowroot attach` on a running system: the boot's stack for `cfg` (an
/// image file on the system's own filesystems, or a device `origin`) on
/// the pool device `pool`, under `cfg.name`. Undone entirely on failure.
pub fn attach_stack<S: System>(sys: &mut S, cfg: &Config, origin: Option<String>, pool: String) -> Result<String> {
    crate::sys::load_modules(matches!(cfg.source, Source::File(_)), false, matches!(cfg.source, Source::Nbd(_)));
    if already_active(sys, cfg)? {
        return Err(Error::Refused(format!(
            "{} is already attached; `cowroot detach {}` first, or choose another --name",
            cfg.name.mapper_path(Role::Thin),
            cfg.name
        )));
    }
    check_separate(cfg, &pool, [("cowroot.dev", &None), ("cowroot", &origin), ("cowroot.hydrate", &None)])?;
    let devices = Devices {
        host: None,
        origin,
        pool: Some(pool),
        waited: Duration::ZERO,
        wait: true,
        hydrate: None,
        server_wait_over: true,
    };
    let mut exec = Executor::new(sys, &cfg.name);
    let (thins, size, pool_label) = match setup(cfg, &devices, &mut exec) {
        Ok((thins, size, label, _)) => {
            let done = (thins, size, label);
            exec.commit();
            done
        }
        Err(cause) => return Err(exec.rollback(cause)),
    };
    Ok(format!(
        "{} ready: origin {} ({size}), pool {pool_label}, generation {} ({})",
        cfg.name.mapper_path(Role::Thin),
        devices.origin.as_deref().map_or_else(|| cfg.source.to_string(), str::to_string),
        thins.header.header.generation,
        thins.mode.as_str()
    ))
}

/// Lists this boot's volumes for the booted system (`volume::MARKER`).
fn write_volume_marker(cfg: &Config, thins: &plan::ThinPlan) -> Result<()> {
    if thins.volumes.is_empty() {
        return Ok(());
    }
    let text: String = thins
        .volumes
        .iter()
        .map(|(spec, record)| {
            ActiveVolume {
                name: record.name,
                device: cfg.name.mapper_path(Role::Volume(record.name)),
                mount_point: spec.mount_point.clone(),
                fs: spec.fs,
            }
            .line()
        })
        .collect();
    std::fs::create_dir_all("/run/cowroot").map_err(|e| Error::io("mkdir", "/run/cowroot", e))?;
    std::fs::write(volume::MARKER, text).map_err(|e| Error::io("write", volume::MARKER, e))
}

fn origin_label(cfg: &Config, devices: &Devices) -> String {
    match (&cfg.source, &devices.host) {
        (Source::File(path), Some(host)) => format!("{path} on {host}"),
        (Source::Nbd(server), _) => server.to_string(),
        _ => devices.origin.clone().unwrap_or_default(),
    }
}

/// Mounts the host and attaches the image (or protects a device origin);
/// returns (path to fingerprint, the origin block device).
fn attach_origin<S: System>(cfg: &Config, devices: &Devices, exec: &mut Executor<'_, S>) -> Result<AttachedOrigin> {
    let mut steps = plan::plan_origin(cfg, devices.host.as_deref(), devices.origin.as_deref());
    for step in &mut steps {
        // `--no-wait` calls try the server once: the initqueue calls again,
        // and blocking it would hold up the network setup it also runs.
        if let (plan::Step::ConnectNbd { seconds, .. }, false) = (step, devices.wait) {
            *seconds = 0;
        }
    }
    if let (Source::Nbd(server), Some(copy_dev)) = (&cfg.source, &devices.hydrate) {
        return attach_network_origin(cfg, devices, exec, &steps, server, copy_dev);
    }
    exec.run(&steps).map_err(|e| match e {
        Error::ImageMissing { path, .. } => Error::ImageMissing {
            path,
            host: format!(
                "{} ({})",
                cfg.host_dev.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                devices.host.clone().unwrap_or_default()
            ),
        },
        other => other,
    })?;
    let (identity, device) = match (&cfg.source, exec.loop_path(), exec.nbd_path()) {
        (Source::Nbd(_), _, Some(nbd)) => (nbd.to_string(), nbd.to_string()),
        (Source::File(path), Some(loop_path), _) if devices.host.is_none() => (path.clone(), loop_path.to_string()),
        (Source::File(path), Some(loop_path), _) => (format!("{HOST_MOUNT}{path}"), loop_path.to_string()),
        _ => {
            let dev = devices.origin.clone().unwrap_or_default();
            (dev.clone(), dev)
        }
    };
    let dev_ref = origin_ref(&cfg.source, devices.origin.as_deref());
    // For `cowroot status`: which server the NBD device is.
    let copy = match &cfg.source {
        Source::Nbd(server) => Some(crate::hydrate::Pending {
            device: "-".into(),
            nbd: device.clone(),
            name: cfg.name.to_string(),
            server: server.to_string(),
        }),
        _ => None,
    };
    Ok(AttachedOrigin { identity, device, dev_ref, copy })
}

/// The origin as the boot attached it.
struct AttachedOrigin {
    /// What to take the identity from (an image file, or the device).
    identity: String,
    /// The block device the thin reads.
    device: String,
    dev_ref: DevRef,
    /// A network origin: its server, and what `cowroot hydrate` is to do
    /// after the boot (`cowroot.hydrate`).
    copy: Option<crate::hydrate::Pending>,
}

/// `cowroot=nbd://... cowroot.hydrate=DEV`: the server's origin, or the
/// complete local copy when the server does not answer or serves the very
/// image the copy holds.
fn attach_network_origin<S: System>(
    cfg: &Config,
    devices: &Devices,
    exec: &mut Executor<'_, S>,
    steps: &[plan::Step],
    server: &crate::nbd::NbdServer,
    copy_dev: &str,
) -> Result<AttachedOrigin> {
    use crate::hydrate::{self, CopyState, Pending};
    let complete = match hydrate::read_state(copy_dev)? {
        CopyState::Foreign(what) => {
            return Err(Error::config(
                "cowroot.hydrate",
                format!(
                    "{copy_dev} holds {what}; cowroot writes its copy only to an empty device (or its own copy). \
                     Name another device, or wipe this one (wipefs -a) if its contents may be destroyed"
                ),
            ))
        }
        CopyState::Ours(header) if header.complete() => {
            // The header says complete; the content must say the same image.
            if hydrate::intact(copy_dev, &header)? {
                Some(header)
            } else {
                log::warn!(
                    "the local copy on {copy_dev} does not read as the image its header names (the disk changed \
                     under it?): the boot needs the server, and the copy starts again"
                );
                None
            }
        }
        CopyState::Ours(_) | CopyState::Blank | CopyState::Damaged(_) => None,
    };
    let pending = |nbd: &str| Pending {
        device: copy_dev.to_string(),
        nbd: nbd.to_string(),
        name: cfg.name.to_string(),
        server: server.to_string(),
    };
    let served = match exec.run(steps) {
        Ok(()) => exec.nbd_path().map(str::to_string).ok_or_else(|| Error::Inconsistent("no NBD device".into()))?,
        Err(err @ Error::ServerUnreachable { .. }) => match &complete {
            Some(header) if devices.server_wait_over => {
                log::warn!("{err}");
                // The kept changes must have been made on the copy's image:
                // a copy older than the pool's image would be taken for a
                // new image, and cowroot.onchange=reset would discard them.
                if let Some(kept) = kept_origin(cfg, devices)? {
                    if kept != header.origin {
                        return Err(Error::Refused(format!(
                            "{err}. The local copy on {copy_dev} holds an earlier image of {} than the one the kept \
                             changes were made on, and the copy of the newer one is not complete: this boot needs \
                             the server",
                            header.server
                        )));
                    }
                }
                log::warn!("booting from the complete local copy of {} on {copy_dev} (cowroot.hydrate)", header.server);
                return use_copy(cfg, exec, copy_dev, header, pending("-"));
            }
            _ => return Err(err),
        },
        Err(err) => return Err(err),
    };
    if let Some(header) = &complete {
        if probe::origin_id(&served)? == header.origin {
            log::info!("{server} serves the image the local copy on {copy_dev} holds: the root reads the copy");
            let attached = use_copy(cfg, exec, copy_dev, header, pending("-"))?;
            if let Err(e) = exec.disconnect_nbd() {
                log::warn!("the root reads the local copy, but the NBD device stays connected: {e}");
            }
            return Ok(attached);
        }
        log::warn!(
            "{server} serves another image than the local copy on {copy_dev}: the boot takes the server's \
             (cowroot.onchange decides what happens to the kept changes); once it is up, the copy starts again"
        );
    }
    let dev_ref = origin_ref(&cfg.source, None);
    Ok(AttachedOrigin { identity: served.clone(), device: served.clone(), dev_ref, copy: Some(pending(&served)) })
}

/// The origin the pool's kept changes were made on (`None`: a RAM pool,
/// or a pool that keeps nothing yet).
/// Only when this boot would keep them and `cowroot.onchange=reset` would
/// discard them on another image; otherwise the plan's own origin check
/// says what there is to say.
fn kept_origin(cfg: &Config, devices: &Devices) -> Result<Option<crate::header::OriginId>> {
    let Some(pool) = &devices.pool else { return Ok(None) };
    if cfg.onchange != crate::config::OnChange::Reset || cfg.reset || cfg.mode == RootMode::Volatile {
        return Ok(None);
    }
    Ok(match probe::pool_facts(pool)?.state {
        PoolState::Ours { header, .. } if header.flags & crate::header::FLAG_RESET_NEXT_BOOT == 0 => header.origin,
        _ => None,
    })
}

/// The complete local copy as a read-only dm device (private: it carries
/// the root filesystem's UUID).
fn use_copy<S: System>(
    cfg: &Config,
    exec: &mut Executor<'_, S>,
    copy_dev: &str,
    header: &crate::hydrate::CopyHeader,
    marker: crate::hydrate::Pending,
) -> Result<AttachedOrigin> {
    exec.run(&[plan::Step::CreateLinear {
        role: Role::Copy,
        dev: DevRef::Path(copy_dev.to_string()),
        offset: Bytes(crate::hydrate::DATA_OFFSET).sectors(),
        len: Bytes(header.origin.size_bytes).sectors(),
    }])?;
    let dev = exec.dev(Role::Copy).ok_or_else(|| Error::Inconsistent(format!("{} not created", cfg.name)))?;
    // Private: no /dev/mapper node; devtmpfs names it by its minor.
    let path = format!("/dev/dm-{}", dev.minor);
    Ok(AttachedOrigin { identity: path.clone(), device: path, dev_ref: DevRef::Dm(Role::Copy), copy: Some(marker) })
}

/// `cowroot.onfail=ro`: the origin itself as /dev/mapper/NAME, read-only at
/// every layer (read-only loop or BLKROSET, and a read-only dm table).
fn read_only_origin<S: System>(sys: &mut S, cfg: &Config, devices: &Devices) -> Result<Outcome> {
    // fsck cannot open a read-only device for writing and would fail the
    // boot; initramfs integrations skip the root fsck while this exists.
    std::fs::create_dir_all("/run/cowroot").map_err(|e| Error::io("mkdir", "/run/cowroot", e))?;
    std::fs::write(READ_ONLY_MARKER, b"").map_err(|e| Error::io("write", READ_ONLY_MARKER, e))?;
    let mut exec = Executor::new(sys, &cfg.name);
    let result = attach_origin(cfg, devices, &mut exec).and_then(|attached| {
        let len = probe::size_of(&attached.device)?.sectors();
        exec.run(&[plan::Step::CreateReadOnly { len, origin: attached.dev_ref }])
    });
    match result {
        Ok(()) => exec.commit(),
        Err(cause) => {
            let _ = std::fs::remove_file(READ_ONLY_MARKER);
            return Err(exec.rollback(cause));
        }
    }
    let root = cfg.name.mapper_path(Role::ReadOnly);
    let summary = format!("{root} is the origin {}, read-only; no changes are kept", origin_label(cfg, devices));
    Ok(Outcome::Ready { root, summary })
}

/// This boot's session: fresh keys for `cowroot.crypt=random`.
fn session(cfg: &Config) -> Result<plan::Session> {
    let keys = if cfg.crypt_random { Some(SessionKeys::random()?) } else { None };
    Ok(plan::Session { keys, reset: cfg.reset })
}

/// How big a RAM pool may grow, in bytes (whole MiB).
fn ram_pool_bytes(size: Option<RamSize>) -> Result<Bytes> {
    let memory = probe::memory_bytes()?;
    let asked = match size.unwrap_or(DEFAULT_RAM_SIZE) {
        RamSize::Bytes(bytes) => bytes.0,
        RamSize::PercentOfRam(percent) => memory / 100 * percent as u64,
    };
    // Past this the machine would run out of memory before the pool is
    // full and fails writes with an I/O error.
    let most = memory / 100 * MAX_RAM_PERCENT;
    if asked > most {
        log::warn!(
            "cowpool={}: more than {MAX_RAM_PERCENT}% of the memory ({}); the RAM pool takes {} at most",
            Bytes(asked),
            Bytes(memory),
            Bytes(most)
        );
    }
    Ok(Bytes(asked.min(most) & !((1 << 20) - 1)))
}

/// The largest share of memory a RAM pool may take.
const MAX_RAM_PERCENT: u64 = 90;

/// A RAM pool's blocks: memory is what it spends, so the smallest the
/// kernel takes (a 4 KiB write costs a 64 KiB block, not 512 KiB).
const RAM_POOL_BLOCK: BlockSize = BlockSize::Exact(64 * 1024);

/// The effectful part: everything here is undone by the caller on failure.
/// Returns the thin plan, the origin's size and how to name the pool.
fn setup<S: System>(
    cfg: &Config,
    devices: &Devices,
    exec: &mut Executor<'_, S>,
) -> Result<(plan::ThinPlan, Bytes, String, Option<crate::hydrate::Pending>)> {
    // The identity comes from the image itself; the size the thin maps is
    // what the kernel sees of the origin device.
    let attached = attach_origin(cfg, devices, exec)?;
    let (identity_path, origin_dev) = (attached.identity.clone(), attached.device.clone());
    let (pool_dev, mut pool_label, block) = match &cfg.pool {
        PoolSpec::Ram(size) => {
            let bytes = ram_pool_bytes(*size)?;
            exec.run(&[plan::Step::CreateRamPool { bytes }])?;
            let dev = exec.ram_pool().ok_or_else(|| Error::Inconsistent("no RAM pool made".into()))?.to_string();
            (dev.clone(), format!("RAM ({dev}, at most {bytes}, nothing kept)"), RAM_POOL_BLOCK)
        }
        _ => (devices.pool()?.to_string(), devices.pool()?.to_string(), BlockSize::Auto),
    };
    if cfg.crypt_random {
        pool_label.push_str(", encrypted with a key that is never stored");
    }
    let pool_dev = pool_dev.as_str();
    let started = Instant::now();
    // Both are a few reads: their waits overlap.
    let (pool, file) = std::thread::scope(|scope| {
        let file = std::thread::Builder::new().spawn_scoped(scope, || probe::file_identity(&identity_path));
        let pool = probe::pool_facts(pool_dev);
        let file = match file {
            Ok(thread) => thread.join().ok().flatten(),
            Err(_) => probe::file_identity(&identity_path),
        };
        (pool, file)
    });
    let pool = pool?;
    let pool_block = exec.system().logical_block_size(pool_dev)?;
    log::debug!("{} ms: read the pool header and the image file's identity", started.elapsed().as_millis());
    let started = Instant::now();
    let size = probe::size_of(&origin_dev)?;
    if size.sectors().0 == 0 {
        return Err(Error::config("cowroot", format!("origin {} is empty", cfg.source)));
    }
    // An image file whose identity is the one recorded with the pool has
    // the content recorded with it: no need to sample it again.
    let id = match plan::recorded_origin(&pool.state, file) {
        Some(id) => {
            log::debug!("{identity_path} is unchanged since its identity was recorded: content not sampled");
            id
        }
        None => probe::origin_id(&identity_path)?,
    };
    log::debug!("{} ms: identified {identity_path}", started.elapsed().as_millis());
    let origin = OriginFacts {
        device: attached.dev_ref.clone(),
        size: Some(size),
        id: Some(id),
        logical_block: exec.system().logical_block_size(&origin_dev)?,
        file,
    };
    let session = session(cfg)?;
    let activation = plan::plan_activation_for(&pool, block, random_uuid(), &session)?;
    if activation.formatted && !cfg.pool.is_ram() && matches!(pool.state, PoolState::Blank) {
        log::info!("{pool_dev} is blank: formatting it as a cowroot pool");
    }
    if let Some((slot, fault)) = pool.state.damaged_copy() {
        log::warn!("{pool_dev}: header copy {slot} is damaged ({fault}); rewriting it from the other copy");
    }
    exec.run(&activation.steps)?;
    let transaction = exec.system().pool_status(&cfg.name.dm_name(Role::Pool))?.transaction_id;
    let now = crate::status::unix_now();
    let thins = plan::plan_thins_at(cfg, &activation, transaction, pool_block, &origin, now)?;
    exec.run(&thins.steps)?;
    Ok((thins, size, pool_label, attached.copy))
}

/// Stands for the RAM pool's loop device in a dry run's plan.
const DRY_RUN_RAM_POOL: &str = "RAM pool";

fn dry_run_plan<S: System>(sys: &mut S, cfg: &Config, devices: &Devices) -> Result<String> {
    let mut steps = plan::plan_origin(cfg, devices.host.as_deref(), devices.origin.as_deref());
    let origin = match &devices.origin {
        Some(dev) => OriginFacts {
            device: origin_ref(&cfg.source, Some(dev)),
            size: Some(probe::size_of(dev)?),
            id: Some(probe::origin_id(dev)?),
            logical_block: sys.logical_block_size(dev)?,
            file: None,
        },
        None => {
            OriginFacts { device: origin_ref(&cfg.source, None), size: None, id: None, logical_block: 512, file: None }
        }
    };
    let (pool, pool_block, block) = match &cfg.pool {
        PoolSpec::Ram(size) => {
            let bytes = ram_pool_bytes(*size)?;
            steps.push(plan::Step::CreateRamPool { bytes });
            let blank = PoolFacts {
                device: DRY_RUN_RAM_POOL.into(),
                size: bytes,
                state: PoolState::Blank,
                metadata_blank: true,
            };
            (blank, 512, RAM_POOL_BLOCK)
        }
        _ => {
            let pool_dev = devices.pool()?;
            (probe::pool_facts(pool_dev)?, sys.logical_block_size(pool_dev)?, BlockSize::Auto)
        }
    };
    let mut activation = plan::plan_activation_for(&pool, block, random_uuid(), &session(cfg)?)?;
    // The metadata's transaction is known only once the pool is up: assume
    // the header's, as a consistent pool has.
    let transaction = activation.header.header.transaction;
    let now = crate::status::unix_now();
    let thins = plan::plan_thins_at(cfg, &activation, transaction, pool_block, &origin, now)?;
    // A RAM pool's loop device is known only once made: shown as $POOL.
    for step in &mut activation.steps {
        if let plan::Step::CreateLinear { dev, .. } | plan::Step::CreateCrypt { dev, .. } = step {
            if *dev == plan::DevRef::Path(DRY_RUN_RAM_POOL.into()) {
                *dev = plan::DevRef::RamPool;
            }
        }
    }
    steps.extend(activation.steps);
    steps.extend(thins.steps);
    let mut text = format!(
        "# cowroot dry run: nothing was changed. This boot would {} (generation {}).\n",
        match thins.mode {
            plan::Mode::Formatted => "format the blank pool and start fresh",
            plan::Mode::FirstUse => "start fresh on the pool",
            plan::Mode::Kept => "keep the changes",
            plan::Mode::Reset => "discard the changes",
            plan::Mode::NewOrigin => "start fresh on the changed origin (cowroot.onchange=reset)",
            plan::Mode::Frozen => "run on a fresh snapshot of the frozen base",
            plan::Mode::Maintenance => "write into the frozen base (maintenance)",
        },
        thins.header.header.generation
    );
    if origin.id.is_none() {
        text.push_str("# the image's identity is checked against the pool only in a real run\n");
    }
    text.push_str(&render::render(&cfg.name, &steps));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pool_troubles_fall_back_to_a_ram_pool() {
        let pool = Error::NotAPool { device: "/dev/vdb".into() };
        assert!(ram_may_help(&pool));
        assert!(ram_may_help(&Error::DeviceTimeout { spec: "/dev/vdz".into(), key: "cowpool".into(), seconds: 2 }));
        assert!(ram_may_help(&Error::Rollback { cause: Box::new(pool.clone()), failures: vec![] }));
        for no in [
            Error::Rollback { cause: Box::new(pool), failures: vec!["remove cowroot-pool: busy".into()] },
            Error::DeviceTimeout { spec: "LABEL=images".into(), key: "cowroot.dev".into(), seconds: 2 },
            Error::DeviceNotYet { spec: "/dev/vdz".into(), key: "cowpool".into() },
            Error::ImageMissing { path: "/root.img".into(), host: "/dev/vda".into() },
            Error::ServerUnreachable { server: "nbd://10.0.2.2:10809/lab".into(), seconds: 2, why: "refused".into() },
            Error::HibernationPending { spec: "/dev/vdc".into(), device: "/dev/vdc".into(), why: "x".into() },
            Error::config("cowroot.size", "too small"),
        ] {
            assert!(!ram_may_help(&no), "{no}");
        }
    }
}
