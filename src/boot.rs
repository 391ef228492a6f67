//! `cowroot boot`: the early-boot agent. Wires the pure stages to the real
//! system: cmdline → config → resolve devices → origin → probe → plan →
//! execute (with rollback) → one summary line.

use crate::cmdline;
use crate::config::{Config, DevSpec, PoolSpec, Source};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::layout::{plan_layout, DEFAULT_BLOCK_BYTES};
use crate::names::Role;
use crate::plan::{self, origin_ref, OriginFacts, PoolPlan, PoolState, HOST_MOUNT};
use crate::probe;
use crate::sys::{dm_error, RealSystem};
use crate::table::PoolStatus;
use crate::units::Bytes;
use devicemapper::{DevId, DmFlags, DmName, DmOptions};
use std::time::{Duration, Instant};

/// Exists while the root is the read-only origin (`cowroot.onfail=ro`).
pub const READ_ONLY_MARKER: &str = "/run/cowroot/read-only-origin";

/// What `cowroot boot` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Normal,
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

/// Random bytes for a new pool's uuid.
pub fn random_uuid() -> [u8; 16] {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok();
    if !filled {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes[..16].copy_from_slice(&now.as_nanos().to_le_bytes());
    }
    bytes
}

struct Devices {
    host: Option<String>,
    origin: Option<String>,
    /// Not resolved for the read-only fallback.
    pool: Option<String>,
    waited: Duration,
}

impl Devices {
    fn pool(&self) -> Result<&str> {
        self.pool.as_deref().ok_or_else(|| Error::Inconsistent("no pool device".into()))
    }
}

fn resolve_devices(cfg: &Config, need_pool: bool) -> Result<Devices> {
    // One deadline for all devices together.
    let deadline = Instant::now() + Duration::from_secs(cfg.timeout_secs);
    let mut waited = Duration::ZERO;
    let mut wait = |spec, key| -> Result<String> {
        let (path, took) = probe::wait_for(spec, key, deadline, cfg.timeout_secs)?;
        waited += took;
        Ok(path)
    };
    let host = cfg.host_dev.as_ref().map(|s| wait(s, "cowroot.dev")).transpose()?;
    let origin = match &cfg.source {
        Source::Device(spec) => Some(wait(spec, "cowroot")?),
        Source::File(_) => None,
    };
    let pool = match (need_pool, &cfg.pool) {
        (false, _) => None,
        (true, PoolSpec::Device(spec)) => Some(wait(spec, "cowpool")?),
        (true, PoolSpec::Lvm { vg, lv }) => {
            crate::lvm::activate(vg, lv)?;
            Some(wait(&DevSpec::Path(crate::lvm::mapper_path(vg, lv)), "cowpool")?)
        }
        (true, PoolSpec::Ram(_)) => {
            return Err(Error::Unsupported { key: "cowpool".into(), what: cfg.pool.to_string() });
        }
    };
    // Never let the pool overlap what must stay untouched.
    if let Some(pool) = &pool {
        let pool_num = probe::dev_num(pool)?;
        for (key, other) in [("cowroot.dev", &host), ("cowroot", &origin)] {
            if let Some(other) = other {
                if probe::dev_num(other)? == pool_num {
                    return Err(Error::config(
                        "cowpool",
                        format!(
                            "{} is the same device as {key} ({other}); the pool must be a separate device",
                            cfg.pool
                        ),
                    ));
                }
            }
        }
    }
    Ok(Devices { host, origin, pool, waited })
}

fn pool_usage(sys: &mut RealSystem, name: &str) -> Option<PoolStatus> {
    let dm = sys.dm().ok()?;
    let dm_name = DmName::new(name).ok()?;
    let (_, lines) = dm.table_status(&DevId::Name(dm_name), DmOptions::default()).ok()?;
    lines.first()?.3.parse().ok()
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

/// Loads the kernel modules cowroot needs with modprobe, when the
/// initramfs has it and they are not loaded yet: nothing loads device-mapper
/// or loop on its own. Failures are left to the steps that need the module,
/// which say what is missing.
fn load_modules(cfg: &Config) {
    let mut wanted = vec![("dm-thin-pool", "dm_thin_pool")];
    if matches!(cfg.source, Source::File(_)) {
        wanted.push(("loop", "loop"));
    }
    let Some(modprobe) = ["/usr/sbin/modprobe", "/sbin/modprobe", "/usr/bin/modprobe", "/bin/modprobe"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return;
    };
    for (module, sys_name) in wanted {
        if std::path::Path::new(&format!("/sys/module/{sys_name}")).exists() {
            continue;
        }
        match std::process::Command::new(modprobe).args(["-q", module]).status() {
            Ok(status) if status.success() => log::debug!("loaded {module}"),
            Ok(status) => log::debug!("modprobe {module}: {status}"),
            Err(e) => log::debug!("modprobe {module}: {e}"),
        }
    }
}

/// Is our root device already there (the agent ran earlier in this boot)?
fn already_active(sys: &mut RealSystem, cfg: &Config) -> Result<bool> {
    let root = cfg.name.dm_name(Role::Thin);
    let dm = sys.dm()?;
    let Ok(name) = DmName::new(&root) else {
        return Ok(false);
    };
    match dm.device_info(&DevId::Name(name)) {
        Ok(info) => {
            let uuid = info.uuid().map(|u| u.to_string()).unwrap_or_default();
            let ours = [Role::Thin, Role::ReadOnly].iter().any(|r| uuid == cfg.name.dm_uuid(*r));
            if ours && info.flags().contains(DmFlags::DM_ACTIVE_PRESENT) {
                Ok(true)
            } else {
                Err(Error::config(
                    "cowroot.name",
                    format!(
                        "a device-mapper device named {root} already exists and is not cowroot's; choose another name"
                    ),
                ))
            }
        }
        Err(_) => Ok(false),
    }
}

pub fn boot(cmdline_text: &str, mode: BootMode) -> Result<Outcome> {
    let Some(cfg) = Config::from_params(&cmdline::split(cmdline_text))? else {
        return Ok(Outcome::NothingToDo);
    };
    if cfg.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    cfg.check_supported()?;
    let started = Instant::now();
    if mode != BootMode::DryRun {
        load_modules(&cfg);
    }
    let root = cfg.name.mapper_path(Role::Thin);
    if mode != BootMode::DryRun {
        let mut sys = RealSystem::new(Duration::from_secs(cfg.timeout_secs));
        if already_active(&mut sys, &cfg)? {
            let message = format!("{root} is already set up; nothing to do");
            return Ok(Outcome::AlreadyActive { root, message });
        }
    }
    let devices = resolve_devices(&cfg, mode != BootMode::ReadOnlyOrigin)?;
    log::debug!(
        "devices: host {:?}, origin {:?}, pool {:?} (waited {} ms)",
        devices.host,
        devices.origin,
        devices.pool,
        devices.waited.as_millis()
    );
    match mode {
        BootMode::DryRun => return dry_run_plan(&cfg, &devices).map(Outcome::DryRun),
        BootMode::ReadOnlyOrigin => return read_only_origin(&cfg, &devices),
        BootMode::Normal => {}
    }

    let mut sys = RealSystem::new(Duration::from_secs(cfg.timeout_secs));
    let mut exec = Executor::new(&mut sys, &cfg.name);
    let result = setup(&cfg, &devices, &mut exec);
    let (plan, origin_size) = match result {
        Ok(done) => {
            exec.commit();
            done
        }
        Err(cause) => return Err(exec.rollback(cause)),
    };

    let usage = pool_usage(&mut sys, &cfg.name.dm_name(Role::Pool));
    let (data, meta) = usage
        .map(|u| {
            let block = plan.header.block_sectors as u64 * 512;
            (
                format!("data {:.1}% of {}", percent(u.data_used, u.data_total), Bytes(u.data_total * block)),
                format!("metadata {:.1}%", percent(u.meta_used, u.meta_total)),
            )
        })
        .unwrap_or_else(|| ("data use unknown".into(), "metadata use unknown".into()));
    let origin = origin_label(&cfg, &devices);
    let own_ms = started.elapsed().saturating_sub(devices.waited).as_millis();
    let summary = format!(
        "{root} ready: origin {origin} ({origin_size}), pool {}, generation {} ({}), {data}, {meta}, {own_ms} ms (+{} ms waiting for devices)",
        devices.pool()?,
        plan.header.generation,
        plan.mode.as_str(),
        devices.waited.as_millis()
    );
    Ok(Outcome::Ready { root, summary })
}

fn origin_label(cfg: &Config, devices: &Devices) -> String {
    match (&cfg.source, &devices.host) {
        (Source::File(path), Some(host)) => format!("{path} on {host}"),
        _ => devices.origin.clone().unwrap_or_default(),
    }
}

/// Mounts the host and attaches the image (or protects a device origin);
/// returns (path to fingerprint, the origin block device).
fn attach_origin(cfg: &Config, devices: &Devices, exec: &mut Executor<'_, RealSystem>) -> Result<(String, String)> {
    exec.run(&plan::plan_origin(cfg, devices.host.as_deref(), devices.origin.as_deref())).map_err(|e| match e {
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
    Ok(match (&cfg.source, exec.loop_path()) {
        (Source::File(path), Some(loop_path)) => (format!("{HOST_MOUNT}{path}"), loop_path.to_string()),
        _ => {
            let dev = devices.origin.clone().unwrap_or_default();
            (dev.clone(), dev)
        }
    })
}

/// `cowroot.onfail=ro`: the origin itself as /dev/mapper/NAME, read-only at
/// every layer (read-only loop or BLKROSET, and a read-only dm table).
fn read_only_origin(cfg: &Config, devices: &Devices) -> Result<Outcome> {
    // fsck cannot open a read-only device for writing and would fail the
    // boot; initramfs integrations skip the root fsck while this exists.
    std::fs::create_dir_all("/run/cowroot").map_err(|e| Error::io("mkdir", "/run/cowroot", e))?;
    std::fs::write(READ_ONLY_MARKER, b"").map_err(|e| Error::io("write", READ_ONLY_MARKER, e))?;
    let mut sys = RealSystem::new(Duration::from_secs(cfg.timeout_secs));
    let mut exec = Executor::new(&mut sys, &cfg.name);
    let result = attach_origin(cfg, devices, &mut exec).and_then(|(_, origin_dev)| {
        let len = probe::size_of(&origin_dev)?.sectors();
        let origin = origin_ref(&cfg.source, devices.origin.as_deref());
        exec.run(&[plan::Step::CreateReadOnly { len, origin }])
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

/// The effectful part: everything here is undone by the caller on failure.
fn setup(cfg: &Config, devices: &Devices, exec: &mut Executor<'_, RealSystem>) -> Result<(PoolPlan, Bytes)> {
    // The identity comes from the image itself; the size the thin maps is
    // what the kernel sees of the origin device.
    let (identity_path, origin_dev) = attach_origin(cfg, devices, exec)?;
    let started = Instant::now();
    let id = probe::origin_id(&identity_path)?;
    let size = probe::size_of(&origin_dev)?;
    log::debug!("{} ms: fingerprinted {identity_path}", started.elapsed().as_millis());
    if size.sectors().0 == 0 {
        return Err(Error::config("cowroot", format!("origin {} is empty", cfg.source)));
    }
    let origin =
        OriginFacts { device: origin_ref(&cfg.source, devices.origin.as_deref()), size: Some(size), id: Some(id) };
    let started = Instant::now();
    let pool_dev = devices.pool()?;
    let pool = probe::pool_facts(pool_dev)?;
    log::debug!("{} ms: read the pool header", started.elapsed().as_millis());
    let layout = match pool.state {
        PoolState::Blank => Some(plan_layout(pool_dev, pool.size, DEFAULT_BLOCK_BYTES)?),
        _ => None,
    };
    let plan = plan::plan_pool(cfg, &pool, &origin, layout, random_uuid())?;
    if plan.mode == plan::Mode::Formatted {
        log::info!("{pool_dev} is blank: formatting it as a cowroot pool");
    }
    exec.run(&plan.steps)?;
    Ok((plan, size))
}

fn dry_run_plan(cfg: &Config, devices: &Devices) -> Result<String> {
    let mut steps = plan::plan_origin(cfg, devices.host.as_deref(), devices.origin.as_deref());
    let origin = match &devices.origin {
        Some(dev) => OriginFacts {
            device: origin_ref(&cfg.source, Some(dev)),
            size: Some(probe::size_of(dev)?),
            id: Some(probe::origin_id(dev)?),
        },
        None => OriginFacts { device: origin_ref(&cfg.source, None), size: None, id: None },
    };
    let pool_dev = devices.pool()?;
    let pool = probe::pool_facts(pool_dev)?;
    let layout = match pool.state {
        PoolState::Blank => Some(plan_layout(pool_dev, pool.size, DEFAULT_BLOCK_BYTES)?),
        _ => None,
    };
    let plan = plan::plan_pool(cfg, &pool, &origin, layout, random_uuid())?;
    steps.extend(plan.steps);
    let mut text = format!(
        "# cowroot dry run: nothing was changed. This boot would {} (generation {}).\n",
        match plan.mode {
            plan::Mode::Formatted => "format the blank pool and start fresh",
            plan::Mode::FirstUse => "start fresh on the pool",
            plan::Mode::Kept => "keep the changes",
            plan::Mode::Reset => "discard the changes",
        },
        plan.header.generation
    );
    if origin.id.is_none() {
        text.push_str("# the image's identity is checked against the pool only in a real run\n");
    }
    text.push_str(&plan::render(&cfg.name, &steps));
    Ok(text)
}

/// Used by status and reset: a dm table line of one of our devices.
pub fn dm_table(sys: &mut RealSystem, name: &str, status: bool) -> Result<(u64, String)> {
    let dm = sys.dm()?;
    let dm_name = DmName::new(name).map_err(|e| Error::io("name", name, e))?;
    let options = if status { DmOptions::default() } else { DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE) };
    let (_, lines) = dm.table_status(&DevId::Name(dm_name), options).map_err(|e| dm_error("read table of", name, e))?;
    let line = lines.into_iter().next().ok_or_else(|| Error::Inconsistent(format!("{name} has no table")))?;
    Ok((line.1, line.3))
}
