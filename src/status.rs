//! `cowroot status` and `cowroot reset` on the running system: facts come
//! from the live dm tables and the pool header; rendering is pure.

use crate::config::UseLevels;
use crate::error::{Error, Result};
use crate::exec::System;
use crate::header::{PoolHeader, SlotFault, FLAG_MAINTENANCE_NEXT_BOOT, FLAG_RESET_NEXT_BOOT};
use crate::names::{DeviceName, Role};
use crate::pool::PoolState;
use crate::probe;
use crate::table::{at_least_percent, percent, Crypt, Linear, ParseError, Thin, ThinPool};
use crate::units::Bytes;
use crate::volume::{ActiveVolume, VolumeName, VolumeRecord};

/// A checkpoint as status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointStatus {
    pub name: String,
    /// manual, reset or rollback: what made it.
    pub kind: &'static str,
    pub thin: u32,
    /// Seconds since the epoch when it was taken.
    pub created: u64,
    pub generation: u64,
    /// Taken on the image this boot runs on (a rollback to it works).
    pub same_origin: bool,
}

/// A persistent volume as status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeStatus {
    pub name: String,
    pub thin: u32,
    pub size_bytes: u64,
    /// Where this boot mounts it; `None`: not asked for at this boot.
    pub mount_point: Option<String>,
    /// Bytes written to it (its mapped blocks), when it is active.
    pub mapped_bytes: Option<u64>,
    pub formatted: bool,
    /// Mounted at `mount_point` now.
    pub mounted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusInfo {
    pub device: String,
    pub origin: String,
    pub origin_device: String,
    pub pool_device: String,
    pub thin_id: u32,
    pub generation: u64,
    pub size_bytes: u64,
    pub mapped_bytes: Option<u64>,
    pub data_used_bytes: u64,
    pub data_total_bytes: u64,
    pub meta_used_bytes: u64,
    pub meta_total_bytes: u64,
    /// `rw`, `ro`, `out_of_data_space` or `Fail`, as the kernel says.
    pub pool_mode: String,
    pub needs_check: bool,
    pub reset_requested: bool,
    /// This boot was asked for a reset by `cowroot.reset=1`: where it was
    /// set (the kernel command line, or a file).
    pub booted_with_reset: Option<String>,
    /// A header copy that is damaged (repaired by the next header write).
    pub damaged_copy: Option<(usize, SlotFault)>,
    pub header_version: u32,
    /// The thin a reset left behind, not deleted yet (0: none).
    pub leftover_thin: u32,
    /// Why every boot starts fresh (a RAM pool, `cowroot.mode=volatile`,
    /// `cowroot.crypt=random`); `None` when changes are kept.
    pub fresh_every_boot: Option<String>,
    /// Why this boot fell back to a RAM pool (`cowroot.onfail=ram`).
    pub ram_fallback: Option<String>,
    /// The pool is a RAM pool's loop device.
    pub pool_in_ram: bool,
    /// Frozen mode: the base's thin id (0: not frozen).
    pub base_thin: u32,
    /// `cowroot maintenance` asked the next boot to write the base.
    pub maintenance_requested: bool,
    /// A second leftover thin (a frozen reset leaves two); 0: none.
    pub leftover_thin2: u32,
    /// The persistent volumes the pool holds.
    pub volumes: Vec<VolumeStatus>,
    pub checkpoints: Vec<CheckpointStatus>,
    /// Pool data that only checkpoints, a frozen base or leftovers hold:
    /// what is used beyond the blocks the active devices map.
    pub history_bytes: Option<u64>,
    /// A rollback made this boot: the next boot runs on this new thin.
    pub rollback_thin: u32,
    /// Now, in seconds since the epoch (for the checkpoints' ages).
    pub now: u64,
    /// `cowroot.hydrate`: how far the local copy of a network origin is.
    pub hydration: Option<String>,
}

impl StatusInfo {
    pub fn health(&self) -> &'static str {
        match (self.pool_mode.as_str(), self.needs_check) {
            (_, true) => "needs_check",
            ("rw", _) => "ok",
            ("out_of_data_space", _) => "out_of_data_space",
            ("ro", _) => "read_only",
            _ => "failed",
        }
    }

    pub fn next_boot(&self) -> String {
        if let Some(why) = &self.fresh_every_boot {
            format!("start fresh: nothing of this boot is kept ({why})")
        } else if self.base_thin != 0 && !self.reset_requested {
            if self.maintenance_requested {
                format!("maintenance: write into the base (thin {}), as `cowroot maintenance` asked", self.base_thin)
            } else {
                format!(
                    "frozen: a fresh snapshot of the base (thin {}); this boot's changes are discarded",
                    self.base_thin
                )
            }
        } else if self.reset_requested {
            "reset: discard all changes (requested with `cowroot reset`)".into()
        } else if self.rollback_thin != 0 {
            format!(
                "continue from the checkpoint `cowroot rollback` chose (on thin {}); what this boot writes stays \
                 in the checkpoint the rollback kept, if it kept one",
                self.rollback_thin
            )
        } else if let Some(from) = &self.booted_with_reset {
            format!("keep generation {} unless {from} still sets cowroot.reset=1 (this boot had it)", self.generation)
        } else {
            format!("keep the changes of generation {}", self.generation)
        }
    }

    fn next_boot_word(&self) -> &'static str {
        if self.base_thin != 0 && !self.reset_requested && self.fresh_every_boot.is_none() {
            return if self.maintenance_requested { "maintenance" } else { "frozen" };
        }
        if self.reset_requested || self.fresh_every_boot.is_some() {
            "reset"
        } else if self.rollback_thin != 0 {
            "rollback"
        } else {
            "keep"
        }
    }

    pub fn render_text(&self) -> String {
        let pct = percent;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
        line("root:", format!("{} ({})", self.device, Bytes(self.size_bytes)));
        line("origin:", format!("{} ({})", self.origin, self.origin_device));
        if let Some(hydration) = &self.hydration {
            line("hydration:", hydration.clone());
        }
        let ram = if self.pool_in_ram { " (in RAM)" } else { "" };
        line("pool:", format!("{}{ram}", self.pool_device));
        if let Some(why) = &self.ram_fallback {
            line(
                "FALLBACK:",
                format!(
                    "this boot runs on a RAM pool because the configured pool could not be used \
                     (cowroot.onfail=ram): {why}"
                ),
            );
        }
        line("thin id:", self.thin_id.to_string());
        if self.base_thin != 0 {
            line(
                "frozen:",
                if self.base_thin == self.thin_id {
                    format!(
                        "MAINTENANCE: this boot writes into the base (thin {}); the next boot is frozen again",
                        self.base_thin
                    )
                } else {
                    format!("this boot runs on a throwaway snapshot of the base (thin {})", self.base_thin)
                },
            );
        }
        line("generation:", self.generation.to_string());
        if let Some(mapped) = self.mapped_bytes {
            line("changed:", format!("{} (blocks written since this generation began)", Bytes(mapped)));
        }
        line(
            "data:",
            format!(
                "{} of {} used ({}%)",
                Bytes(self.data_used_bytes),
                Bytes(self.data_total_bytes),
                pct(self.data_used_bytes, self.data_total_bytes)
            ),
        );
        line(
            "metadata:",
            format!(
                "{} of {} used ({}%)",
                Bytes(self.meta_used_bytes),
                Bytes(self.meta_total_bytes),
                pct(self.meta_used_bytes, self.meta_total_bytes)
            ),
        );
        let health = match self.health() {
            "ok" => "ok".to_string(),
            "out_of_data_space" => {
                "OUT OF DATA SPACE: writes fail with I/O errors until the pool is reset or grown".into()
            }
            "needs_check" => "NEEDS CHECK: metadata damaged; run thin_check on the metadata region".into(),
            "read_only" => "READ-ONLY: the kernel switched the pool to read-only after an error".into(),
            _ => format!("FAILED ({})", self.pool_mode),
        };
        line("health:", health);
        line(
            "header:",
            match &self.damaged_copy {
                None => format!("both copies good (version {})", self.header_version),
                Some((slot, fault)) => format!(
                    "COPY {slot} DAMAGED ({fault}); the other copy is in use and the next header write \
                     (the next boot, `cowroot reset`) repairs it"
                ),
            },
        );
        if self.leftover_thin != 0 {
            let ids = match self.leftover_thin2 {
                0 => format!("thin {}", self.leftover_thin),
                second => format!("thins {} and {second}", self.leftover_thin),
            };
            line(
                "leftover:",
                format!(
                    "{ids} ({}) still takes space; `cowroot cleanup` deletes it (cowroot-cleanup.service \
                     runs it after boot), or the next boot does",
                    if self.base_thin != 0 {
                        "changes discarded at the last boot"
                    } else {
                        "the changes the last reset discarded"
                    }
                ),
            );
        }
        for v in &self.volumes {
            let written = v.mapped_bytes.map(|m| format!(", {} written", Bytes(m))).unwrap_or_default();
            let state = match (&v.mount_point, v.formatted, v.mounted) {
                (Some(at), _, true) => format!("at {at}"),
                (Some(at), true, false) => {
                    format!("for {at}, NOT MOUNTED: what is written there goes to the root (`cowroot volumes --mount`)")
                }
                (Some(at), false, false) => {
                    format!("for {at}, no filesystem yet (`cowroot volumes --mount` makes one and mounts it)")
                }
                (None, _, _) => "not asked for at this boot (kept untouched)".into(),
            };
            line("volume:", format!("{} ({}{written}), {state}; thin {}", v.name, Bytes(v.size_bytes), v.thin));
        }
        for c in &self.checkpoints {
            let other = if c.same_origin { "" } else { ", ON ANOTHER IMAGE (no rollback to it)" };
            line(
                "checkpoint:",
                format!(
                    "{} ({}, {} old, generation {}{other}); thin {}",
                    c.name,
                    c.kind,
                    crate::checkpoint::age(c.created, self.now),
                    c.generation,
                    c.thin
                ),
            );
        }
        if let (Some(bytes), false) = (self.history_bytes, self.checkpoints.is_empty()) {
            line("history:", format!("{} held only by checkpoints, a frozen base or leftovers", Bytes(bytes)));
        }
        line("next boot:", self.next_boot());
        out
    }

    /// The checkpoint lines of `render_text` alone (`cowroot checkpoint list`).
    pub fn render_checkpoints_text(&self) -> String {
        self.render_text()
            .lines()
            .filter(|l| l.starts_with("checkpoint:") || l.starts_with("history:"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// `cowroot checkpoint list --json`: the `checkpoints` array of `render_json`.
    pub fn render_checkpoints_json(&self) -> String {
        format!("[{}]", self.checkpoints_json())
    }

    fn checkpoints_json(&self) -> String {
        self.checkpoints
            .iter()
            .map(|c| {
                format!(
                    "{{\"name\":{},\"kind\":{},\"thin\":{},\"created\":{},\"age_seconds\":{},\"generation\":{},\"same_origin\":{}}}",
                    json_string(&c.name),
                    json_string(c.kind),
                    c.thin,
                    c.created,
                    self.now.saturating_sub(c.created),
                    c.generation,
                    c.same_origin
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The volume lines of `render_text` alone (`cowroot volumes`).
    pub fn render_volumes_text(&self) -> String {
        self.render_text().lines().filter(|l| l.starts_with("volume:")).map(|l| format!("{l}\n")).collect()
    }

    /// `cowroot volumes --json`: the `volumes` array of `render_json`.
    pub fn render_volumes_json(&self) -> String {
        format!("[{}]", self.volumes_json())
    }

    fn volumes_json(&self) -> String {
        let s = |v: &str| json_string(v);
        self.volumes
            .iter()
            .map(|v| format!(
                "{{\"name\":{},\"thin\":{},\"size_bytes\":{},\"mount_point\":{},\"mapped_bytes\":{},\"formatted\":{},\"mounted\":{}}}",
                s(&v.name),
                v.thin,
                v.size_bytes,
                v.mount_point.as_deref().map(s).unwrap_or_else(|| "null".into()),
                v.mapped_bytes.map(|m| m.to_string()).unwrap_or_else(|| "null".into()),
                v.formatted,
                v.mounted
            ))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn render_json(&self) -> String {
        let s = |v: &str| json_string(v);
        let mapped = self.mapped_bytes.map(|m| m.to_string()).unwrap_or_else(|| "null".into());
        let damaged = match &self.damaged_copy {
            Some((slot, fault)) => format!("{{\"copy\":{slot},\"fault\":{}}}", s(&fault.to_string())),
            None => "null".into(),
        };
        format!(
            "{{\"device\":{},\"origin\":{},\"origin_device\":{},\"pool\":{},\"thin_id\":{},\"generation\":{},\
\"size_bytes\":{},\"mapped_bytes\":{mapped},\"data_used_bytes\":{},\"data_total_bytes\":{},\"metadata_used_bytes\":{},\
\"metadata_total_bytes\":{},\"pool_mode\":{},\"needs_check\":{},\"health\":{},\"next_boot\":{},\"next_boot_text\":{},\
\"damaged_header_copy\":{damaged},\"leftover_thin\":{},\"fresh_every_boot\":{},\"ram_fallback\":{},\"pool_in_ram\":{},\"base_thin\":{},\"maintenance_requested\":{},\"leftover_thin2\":{},\"volumes\":[{}],\"checkpoints\":[{}],\"history_bytes\":{},\"hydration\":{}}}",
            s(&self.device),
            s(&self.origin),
            s(&self.origin_device),
            s(&self.pool_device),
            self.thin_id,
            self.generation,
            self.size_bytes,
            self.data_used_bytes,
            self.data_total_bytes,
            self.meta_used_bytes,
            self.meta_total_bytes,
            s(&self.pool_mode),
            self.needs_check,
            s(self.health()),
            s(self.next_boot_word()),
            s(&self.next_boot()),
            self.leftover_thin,
            self.fresh_every_boot.as_deref().map(s).unwrap_or_else(|| "null".into()),
            self.ram_fallback.as_deref().map(s).unwrap_or_else(|| "null".into()),
            self.pool_in_ram,
            self.base_thin,
            self.maintenance_requested,
            self.leftover_thin2,
            self.volumes_json(),
            self.checkpoints_json(),
            self.history_bytes.map(|b| b.to_string()).unwrap_or_else(|| "null".into()),
            self.hydration.as_deref().map(s).unwrap_or_else(|| "null".into()),
        )
    }
}

impl StatusInfo {
    /// A monitoring plugin's verdict on the pool's use: exit code 0, 1 or
    /// 2 (ok, above WARN, above CRIT; an unhealthy pool is critical) and
    /// one line saying why.
    pub fn check(&self, levels: UseLevels) -> (u8, String) {
        let data = percent(self.data_used_bytes, self.data_total_bytes);
        let meta = percent(self.meta_used_bytes, self.meta_total_bytes);
        let above = |level: u8| {
            at_least_percent(self.data_used_bytes, self.data_total_bytes, level)
                || at_least_percent(self.meta_used_bytes, self.meta_total_bytes, level)
        };
        let (code, word) = if self.health() != "ok" || above(levels.crit) {
            (2, "CRITICAL")
        } else if above(levels.warn) {
            (1, "WARNING")
        } else {
            (0, "OK")
        };
        let mut line = format!(
            "cowroot {word}: data {data}%, metadata {meta}% of pool {} used (warn {}%, crit {}%)",
            self.pool_device, levels.warn, levels.crit
        );
        if self.health() != "ok" {
            line.push_str(&format!("; pool health: {}", self.health()));
        }
        if code > 0 {
            line.push_str(
                "; when the pool is full, writes to the root fail: free space in the root, or reset it \
                 (`cowroot reset`, then reboot)",
            );
        }
        (code, line)
    }
}

/// Records the use level `cowroot status --check --log` found; true when
/// it differs from the last one recorded (or none was), so the journal
/// hears of each crossing once, not at every poll.
pub fn level_changed(name: &DeviceName, code: u8) -> bool {
    let path = format!("/run/cowroot/{}.use-level", name.dm_name(Role::Thin));
    let last = std::fs::read_to_string(&path).ok();
    let _ = std::fs::create_dir_all("/run/cowroot").and_then(|()| std::fs::write(&path, code.to_string()));
    last.as_deref().map(str::trim) != Some(code.to_string().as_str())
}

pub fn json_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The pool device and its current header, found from the live tables.
/// A running stack: its thin's table, the pool device and its header.
pub(crate) struct Live {
    pub(crate) thin: Thin,
    pub(crate) size_sectors: u64,
    pub(crate) pool_device: String,
    block_bytes: u64,
    slot: usize,
    pub(crate) header: PoolHeader,
    damaged: Option<(usize, SlotFault)>,
}

fn parsed<T: std::str::FromStr<Err = ParseError>>(name: &str, text: &str) -> Result<T> {
    text.parse().map_err(|e: ParseError| Error::Inconsistent(format!("{name}: {}", e.0)))
}

pub(crate) fn live<S: System>(sys: &mut S, name: &DeviceName) -> Result<Live> {
    let thin_name = name.dm_name(Role::Thin);
    let thin_line = sys.dm_line(&thin_name, false).map_err(|e| {
        Error::io("find", name.mapper_path(Role::Thin), format!("{e}; is this system booted with cowroot=?"))
    })?;
    if thin_line.target != "thin" {
        return Err(Error::Inconsistent(format!(
            "{} is the origin itself, read-only ({} table): this boot fell back to cowroot.onfail=ro, so no \
             pool is in use and no changes are kept. See the boot messages (journalctl -k | grep cowroot) for why",
            name.mapper_path(Role::Thin),
            thin_line.target
        )));
    }
    let thin: Thin = parsed(&thin_name, &thin_line.params)?;
    let pool: ThinPool = parsed(&name.dm_name(Role::Pool), &sys.dm_line(&name.dm_name(Role::Pool), false)?.params)?;
    let data_name = name.dm_name(Role::Data);
    let data_line = sys.dm_line(&data_name, false)?;
    // The pool device under the data layer: linear, or crypt with a
    // random key (whose key is never parsed or shown).
    let data_dev = match data_line.target.as_str() {
        "crypt" => parsed::<Crypt>(&data_name, &data_line.params)?.dev,
        _ => parsed::<Linear>(&data_name, &data_line.params)?.dev,
    };
    let pool_device = probe::dev_path(data_dev).unwrap_or_else(|| data_dev.to_string());
    let facts = probe::pool_facts(&pool_device)?;
    let damaged = facts.state.damaged_copy();
    let PoolState::Ours { slot, header, .. } = facts.state else {
        return Err(facts
            .refusal()
            .unwrap_or_else(|| Error::Inconsistent(format!("{pool_device} has no valid cowroot header"))));
    };
    Ok(Live {
        thin,
        size_sectors: thin_line.len.0,
        pool_device,
        block_bytes: pool.block_sectors as u64 * 512,
        slot,
        header,
        damaged,
    })
}

/// What the running system's settings say of this boot.
#[derive(Debug, Clone, Default)]
pub struct Booted {
    /// Where `cowroot.reset=1` was set for this boot, if it was.
    pub reset_from: Option<String>,
    /// The key that makes every boot start fresh, if one does.
    pub fresh_key: Option<String>,
}

/// The bytes a thin device has mapped (its status's first field), when it
/// is active.
fn thin_mapped_bytes<S: System>(sys: &mut S, dm_name: &str) -> Option<u64> {
    let line = sys.dm_line(dm_name, true).ok()?;
    let sectors: u64 = line.params.split_whitespace().next()?.parse().ok()?;
    Some(sectors.saturating_mul(512))
}

pub fn gather<S: System>(sys: &mut S, name: &DeviceName, booted: Booted) -> Result<StatusInfo> {
    let live = live(sys, name)?;
    let on_ram = std::fs::read_to_string(crate::boot::RAM_POOL_MARKER).is_ok_and(|t| t.trim() == live.pool_device);
    let fresh_every_boot = if on_ram {
        Some("it runs on a RAM pool".to_string())
    } else if live.header.flags & crate::header::FLAG_CRYPT_RANDOM != 0 {
        Some("cowroot.crypt=random: a new key every boot".to_string())
    } else {
        booted.fresh_key
    };
    let ram_fallback = std::fs::read_to_string(crate::boot::RAM_FALLBACK_MARKER).ok().map(|t| t.trim().to_string());
    let usage = sys.pool_status(&name.dm_name(Role::Pool))?;
    let mapped_bytes = thin_mapped_bytes(sys, &name.dm_name(Role::Thin));
    let marker = std::fs::read_to_string(crate::volume::MARKER).ok();
    let active = marker.and_then(|t| ActiveVolume::parse_marker(&t).ok()).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let volumes: Vec<VolumeStatus> = live
        .header
        .volumes
        .iter()
        .map(|v| VolumeStatus {
            name: v.name.to_string(),
            thin: v.thin,
            size_bytes: v.sectors.bytes().0,
            mount_point: active.iter().find(|a| a.name == v.name).map(|a| a.mount_point.clone()),
            mapped_bytes: thin_mapped_bytes(sys, &name.dm_name(Role::Volume(v.name))),
            formatted: v.formatted,
            mounted: active.iter().any(|a| {
                a.name == v.name && crate::grow::mount_source(&mounts, &a.mount_point) == Some(a.device.as_str())
            }),
        })
        .collect();
    let checkpoints = live
        .header
        .checkpoints
        .iter()
        .filter(|c| !c.deleting)
        .map(|c| CheckpointStatus {
            name: c.name.to_string(),
            kind: c.kind.as_str(),
            thin: c.thin,
            created: c.created,
            generation: c.generation,
            same_origin: live.header.origin == Some(c.origin),
        })
        .collect();
    let mapped_total = volumes
        .iter()
        .map(|v| v.mapped_bytes)
        .chain([mapped_bytes])
        .try_fold(0u64, |sum, m| m.map(|m| sum.saturating_add(m)));
    let data_used_bytes = usage.data_used.saturating_mul(live.block_bytes);
    let history_bytes = mapped_total.map(|m| data_used_bytes.saturating_sub(m));
    let rollback_thin =
        if live.header.base_thin == 0 && live.header.active_thin != live.thin.id { live.header.active_thin } else { 0 };
    let origin_num = live.thin.external_origin.ok_or_else(|| Error::Inconsistent("thin has no origin".into()))?;
    let origin_device = probe::dev_path(origin_num).unwrap_or_else(|| origin_num.to_string());
    let origin = probe::loop_backing_file(origin_num)
        .or_else(crate::hydrate::origin_label)
        .unwrap_or_else(|| origin_device.clone());
    Ok(StatusInfo {
        device: name.mapper_path(Role::Thin),
        origin,
        origin_device,
        pool_device: live.pool_device,
        thin_id: live.thin.id,
        generation: live.header.generation,
        size_bytes: live.size_sectors.saturating_mul(512),
        mapped_bytes,
        data_used_bytes,
        data_total_bytes: usage.data_total.saturating_mul(live.block_bytes),
        meta_used_bytes: usage.meta_used.saturating_mul(4096),
        meta_total_bytes: usage.meta_total.saturating_mul(4096),
        pool_mode: usage.mode,
        needs_check: usage.needs_check,
        reset_requested: live.header.flags & FLAG_RESET_NEXT_BOOT != 0,
        booted_with_reset: booted.reset_from,
        damaged_copy: live.damaged,
        header_version: live.header.version,
        leftover_thin: live.header.garbage_thin,
        fresh_every_boot,
        ram_fallback,
        pool_in_ram: on_ram,
        base_thin: live.header.base_thin,
        maintenance_requested: live.header.flags & FLAG_MAINTENANCE_NEXT_BOOT != 0,
        leftover_thin2: live.header.garbage_thin2,
        volumes,
        checkpoints,
        history_bytes,
        rollback_thin,
        now: unix_now(),
        hydration: crate::hydrate::describe(live.header.origin),
    })
}

/// Holds the header lock of one cowroot setup while it lives: `reset`,
/// `reset --cancel` and `cleanup` each read the header, then write both
/// copies; two at once would each write "the next" header from the same
/// one, and one change would be lost.
pub struct HeaderLock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

pub fn lock_header(name: &DeviceName) -> Result<HeaderLock> {
    let dir = "/run/cowroot";
    std::fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))?;
    let path = format!("{dir}/{}.lock", name.dm_name(Role::Thin));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => return Ok(HeaderLock { _held: held }),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(Error::io("lock", &path, e)),
    };
    log::warn!("another cowroot command (cleanup, reset) is changing the pool header; waiting for it to finish");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map(|held| HeaderLock { _held: held })
        .map_err(|(_, e)| Error::io("lock", &path, e))
}

/// Writes `header` as the next state of a live pool: into the copy that is
/// not the newest, then the other one, so both say the same at rest (and a
/// damaged copy is repaired).
fn write_both<S: System>(sys: &mut S, live: &Live, change: impl FnOnce(&mut PoolHeader)) -> Result<PoolHeader> {
    let exhausted = |m: &str| Error::Inconsistent(format!("{}: {m}", live.pool_device));
    let mut header = live.header.next().map_err(exhausted)?;
    change(&mut header);
    let slot = crate::header::slot_for_next_write(Some(live.slot));
    sys.write_header(&live.pool_device, slot, &header, crate::exec::Fresh::No)?;
    let mirror = header.next().map_err(exhausted)?;
    sys.write_header(&live.pool_device, 1 - slot, &mirror, crate::exec::Fresh::No)?;
    Ok(mirror)
}

/// Finishes a reset on the running system: a reset boot switches to a fresh
/// thin device and leaves the old one (the header's leftover id) for later,
/// so the boot takes the same time whatever was kept. This deletes it and
/// clears the id from both header copies. Safe to run at any time and
/// twice: with nothing left over it changes nothing; interrupted, the id is
/// still in the header and the next run (or the next boot) deletes it.
pub fn cleanup<S: System>(sys: &mut S, name: &DeviceName) -> Result<String> {
    if sys.dm_info(&name.dm_name(Role::Thin))?.is_none() {
        return Ok(format!("{} does not exist: nothing to clean up", name.mapper_path(Role::Thin)));
    }
    if sys.dm_line(&name.dm_name(Role::Thin), false)?.target != "thin" {
        return Ok(format!(
            "{} is the read-only origin (cowroot.onfail=ro): no pool to clean up",
            name.mapper_path(Role::Thin)
        ));
    }
    let _lock = lock_header(name)?;
    let live = live(sys, name)?;
    let in_use = live.thin.id;
    let mut leftovers: Vec<String> = [live.header.garbage_thin, live.header.garbage_thin2]
        .into_iter()
        .filter(|&id| id != 0 && id != in_use)
        .map(|id| format!("thin {id}"))
        .collect();
    let thins = leftovers.len();
    leftovers.extend(
        live.header
            .checkpoints
            .iter()
            .filter(|c| c.deleting && c.thin != in_use)
            .map(|c| format!("checkpoint {} (thin {})", c.name, c.thin)),
    );
    let what = if thins == 0 {
        "no longer kept"
    } else if live.header.base_thin != 0 {
        "the changes discarded at the last boot"
    } else {
        "the changes the last reset discarded"
    };
    let pool = name.dm_name(Role::Pool);
    let before = sys.pool_status(&pool)?;
    let header = crate::plan::HeaderState {
        device: live.pool_device.clone(),
        slot: Some(live.slot),
        header: live.header.clone(),
    };
    let steps = crate::plan::plan_cleanup(&header, before.transaction_id, live.thin.id)?;
    if steps.is_empty() {
        return Ok(format!("nothing to clean up on {}", live.pool_device));
    }
    let started = std::time::Instant::now();
    let mut exec = crate::exec::Executor::new(sys, name);
    exec.run(&steps)?;
    exec.commit();
    let freed = sys.pool_status(&pool).map(|after| before.data_used.saturating_sub(after.data_used)).unwrap_or(0);
    Ok(format!(
        "deleted {}, {what}: {} freed on {} in {} ms",
        leftovers.join(" and "),
        Bytes(freed.saturating_mul(live.block_bytes)),
        live.pool_device,
        started.elapsed().as_millis()
    ))
}

/// Asks the next boot to discard (or, with `cancel`, keep) the changes.
/// The write goes to the copy that is not the newest, so it also repairs a
/// damaged one.
/// `cowroot maintenance [--cancel]`: the next boot of a frozen pool writes
/// into the base (or, cancelled, does not).
pub fn request_maintenance<S: System>(sys: &mut S, name: &DeviceName, cancel: bool) -> Result<String> {
    let _lock = lock_header(name)?;
    let live = live(sys, name)?;
    if live.header.base_thin == 0 {
        return Err(Error::Inconsistent(format!(
            "{} is not frozen, so there is no base to maintain: boot with cowroot.mode=frozen first (its kept \
             changes become the base)",
            live.pool_device
        )));
    }
    write_both(sys, &live, |h| {
        if cancel {
            h.flags &= !FLAG_MAINTENANCE_NEXT_BOOT;
        } else {
            h.flags |= FLAG_MAINTENANCE_NEXT_BOOT;
        }
    })?;
    Ok(if cancel {
        "the next boot runs on a fresh snapshot of the base, as every frozen boot does".into()
    } else {
        "the next boot writes into the base (maintenance); the boot after it is frozen again \
         (undo with `cowroot maintenance --cancel`)"
            .into()
    })
}

/// Records in both header copies that a volume now holds a filesystem, so
/// nothing formats it again. Already recorded: nothing is written.
pub fn record_formatted<S: System>(sys: &mut S, name: &DeviceName, volume: VolumeName) -> Result<()> {
    let _lock = lock_header(name)?;
    let live = live(sys, name)?;
    let Some(index) = live.header.volumes.iter().position(|v| v.name == volume) else {
        return Err(Error::Inconsistent(format!("{}: the header records no volume {volume}", live.pool_device)));
    };
    if !live.header.volumes[index].formatted {
        write_both(sys, &live, |h| h.volumes[index].formatted = true)?;
    }
    Ok(())
}

/// `cowroot volumes --delete NAME`: forgets a volume this boot does not
/// use and deletes its thin, with everything written on it.
pub fn delete_volume<S: System>(sys: &mut S, name: &DeviceName, volume: VolumeName) -> Result<String> {
    if sys.dm_info(&name.dm_name(Role::Volume(volume)))?.is_some() {
        return Err(Error::Refused(format!(
            "volume {volume} is in use at this boot ({}); boot once without it (cowroot.volume=none, or without \
             its word), then delete it",
            name.mapper_path(Role::Volume(volume))
        )));
    }
    // The header is written before the kernel deletes the thin, so this
    // runs only on a pool that takes messages (run_live_plan checks).
    let (cleaned, (), live, before, after) = run_live_plan(sys, name, |header, txn, in_use| {
        Ok((crate::plan::plan_volume_delete(header, txn, volume, in_use)?, ()))
    })?;
    Ok(format!(
        "{cleaned}deleted volume {volume} and what it held: {} freed on {}",
        Bytes(before.saturating_sub(after).saturating_mul(live.block_bytes)),
        live.pool_device
    ))
}

/// Seconds since the epoch (0 if the clock says otherwise).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs a plan that changes the live pool (checkpoints, rollbacks, volume
/// deletion): a leftover is cleaned up first (the plans need its slot),
/// then, under the header lock and only on a pool that takes messages,
/// `plan` gets the header, the metadata's transaction and the thin the
/// root runs on. Returns the cleanup's report and the data blocks in use
/// before and after.
fn run_live_plan<S: System, T>(
    sys: &mut S,
    name: &DeviceName,
    plan: impl FnOnce(&crate::plan::HeaderState, u64, u32) -> Result<(Vec<crate::plan::Step>, T)>,
) -> Result<(String, T, Live, u64, u64)> {
    let cleaned = cleanup(sys, name)?;
    let cleaned = if cleaned.starts_with("deleted") { format!("{cleaned}\n") } else { String::new() };
    let _lock = lock_header(name)?;
    let live = live(sys, name)?;
    let pool = name.dm_name(Role::Pool);
    let before = sys.pool_status(&pool)?;
    if !matches!(before.mode.as_str(), "rw" | "out_of_data_space") || before.needs_check {
        return Err(Error::PoolDegraded {
            device: live.pool_device.clone(),
            state: if before.needs_check { "flagged needs_check".into() } else { format!("in {} mode", before.mode) },
        });
    }
    let header = crate::plan::HeaderState {
        device: live.pool_device.clone(),
        slot: Some(live.slot),
        header: live.header.clone(),
    };
    let (steps, out) = plan(&header, before.transaction_id, live.thin.id)?;
    let mut exec = crate::exec::Executor::new(sys, name);
    exec.run(&steps)?;
    exec.commit();
    let after = sys.pool_status(&pool).map(|a| a.data_used).unwrap_or(before.data_used);
    Ok((cleaned, out, live, before.data_used, after))
}

/// Refuses checkpoints and rollbacks on a pool that starts over at the
/// next boot whatever they record.
fn require_kept_pool<S: System>(sys: &mut S, name: &DeviceName, booted: &Booted, what: &str) -> Result<()> {
    let live = live(sys, name)?;
    let on_ram = std::fs::read_to_string(crate::boot::RAM_POOL_MARKER).is_ok_and(|t| t.trim() == live.pool_device);
    let why = if on_ram {
        Some("this boot runs on a RAM pool".to_string())
    } else if live.header.flags & crate::header::FLAG_CRYPT_RANDOM != 0 {
        Some("cowroot.crypt=random makes a new pool every boot".to_string())
    } else {
        booted.fresh_key.as_ref().map(|key| format!("{key} makes every boot a reset"))
    };
    match why {
        Some(why) => {
            Err(Error::Refused(format!("{what} needs a pool that survives the reboot, but {why}; nothing was changed")))
        }
        None => Ok(()),
    }
}

/// `cowroot checkpoint create NAME`.
pub fn create_checkpoint<S: System>(sys: &mut S, name: &DeviceName, checkpoint: VolumeName) -> Result<String> {
    require_kept_pool(sys, name, &Booted::default(), "a checkpoint")?;
    let started = std::time::Instant::now();
    let (cleaned, (), live, _, _) = run_live_plan(sys, name, |header, txn, in_use| {
        crate::checkpoint_plan::plan_checkpoint_create(header, txn, in_use, checkpoint, unix_now()).map(|s| (s, ()))
    })?;
    Ok(format!(
        "{cleaned}checkpoint {checkpoint} taken of {} (generation {}) in {} ms; `cowroot rollback {checkpoint}` \
         makes the next boot continue from it",
        name.mapper_path(Role::Thin),
        live.header.generation,
        started.elapsed().as_millis()
    ))
}

/// `cowroot checkpoint delete NAME`.
pub fn delete_checkpoint<S: System>(sys: &mut S, name: &DeviceName, checkpoint: VolumeName) -> Result<String> {
    let (cleaned, (), live, before, after) = run_live_plan(sys, name, |header, txn, in_use| {
        crate::checkpoint_plan::plan_checkpoint_delete(header, txn, in_use, checkpoint).map(|s| (s, ()))
    })?;
    Ok(format!(
        "{cleaned}deleted checkpoint {checkpoint}: {} freed on {}",
        Bytes(before.saturating_sub(after).saturating_mul(live.block_bytes)),
        live.pool_device
    ))
}

/// `cowroot rollback NAME [--discard]`.
pub fn rollback<S: System>(
    sys: &mut S,
    name: &DeviceName,
    checkpoint: VolumeName,
    keep_current: bool,
    booted: &Booted,
) -> Result<String> {
    require_kept_pool(sys, name, booted, "a rollback")?;
    let (cleaned, outcome, live, _, _) = run_live_plan(sys, name, |header, txn, in_use| {
        let r = crate::checkpoint_plan::plan_rollback(header, txn, in_use, checkpoint, keep_current, unix_now())?;
        Ok((r.steps.clone(), r))
    })?;
    let replaced = if live.header.base_thin != 0 { "the frozen base" } else { "the current state" };
    let still = if outcome.kept_running { "what this boot still writes goes there too; " } else { "" };
    let kept = match outcome.kept_as {
        Some(kept) => {
            format!("{replaced} is kept as checkpoint {kept} ({still}`cowroot rollback {kept}` goes back to it)")
        }
        None => format!("{replaced} is discarded at the next boot"),
    };
    let reset = if outcome.reset_cancelled { "; the reset `cowroot reset` asked for is cancelled" } else { "" };
    let reset = match &booted.reset_from {
        Some(from) => format!("{reset}; {from} sets cowroot.reset=1: remove it, or the next boot resets instead"),
        None => reset.to_string(),
    };
    Ok(format!("{cleaned}the next boot continues from checkpoint {checkpoint}; {kept}{reset}"))
}

/// What the header records of `volume`, if anything.
pub fn volume_record<S: System>(sys: &mut S, name: &DeviceName, volume: VolumeName) -> Result<Option<VolumeRecord>> {
    let live = live(sys, name)?;
    Ok(live.header.volumes.iter().find(|v| v.name == volume).copied())
}

pub fn request_reset<S: System>(sys: &mut S, name: &DeviceName, cancel: bool) -> Result<String> {
    let _lock = lock_header(name)?;
    let live = live(sys, name)?;
    let header = write_both(sys, &live, |h| {
        if cancel {
            h.flags &= !FLAG_RESET_NEXT_BOOT;
        } else {
            h.flags |= FLAG_RESET_NEXT_BOOT;
        }
    })?;
    let what = if header.base_thin != 0 { "the frozen base and " } else { "" };
    Ok(if cancel {
        format!("the next boot keeps {what}the changes of generation {}", header.generation)
    } else {
        format!(
            "the next boot discards {what}the changes of generation {} and starts on the bare image \
             (undo with `cowroot reset --cancel`)",
            header.generation
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusInfo {
        StatusInfo {
            device: "/dev/mapper/cowroot".into(),
            origin: "/run/cowroot/host/images/root \"1\".img".into(),
            origin_device: "/dev/loop0".into(),
            pool_device: "/dev/vdc".into(),
            thin_id: 2,
            generation: 2,
            size_bytes: 64 << 20,
            mapped_bytes: Some(1 << 20),
            data_used_bytes: 3 << 20,
            data_total_bytes: 200 << 20,
            meta_used_bytes: 40960,
            meta_total_bytes: 2 << 20,
            pool_mode: "rw".into(),
            needs_check: false,
            reset_requested: false,
            booted_with_reset: None,
            damaged_copy: None,
            header_version: 2,
            leftover_thin: 0,
            fresh_every_boot: None,
            ram_fallback: None,
            pool_in_ram: false,
            base_thin: 0,
            maintenance_requested: false,
            leftover_thin2: 0,
            volumes: Vec::new(),
            checkpoints: Vec::new(),
            history_bytes: None,
            rollback_thin: 0,
            now: 0,
            hydration: None,
        }
    }

    #[test]
    fn renders_text_and_json() {
        let s = sample();
        let text = s.render_text();
        assert!(text.contains("pool:       /dev/vdc"), "{text}");
        assert!(text.contains("data:       3.0 MiB of 200.0 MiB used (1.5%)"), "{text}");
        assert!(text.contains("health:     ok"), "{text}");
        assert!(text.contains("next boot:  keep the changes of generation 2"), "{text}");
        let json = s.render_json();
        assert!(json.starts_with("{\"device\":\"/dev/mapper/cowroot\""), "{json}");
        assert!(json.contains("\"origin\":\"/run/cowroot/host/images/root \\\"1\\\".img\""), "{json}");
        assert!(json.contains("\"health\":\"ok\",\"next_boot\":\"keep\""), "{json}");
        assert!(
            json.ends_with(
                "\"damaged_header_copy\":null,\"leftover_thin\":0,\"fresh_every_boot\":null,\"ram_fallback\":null,\"pool_in_ram\":false,\"base_thin\":0,\"maintenance_requested\":false,\"leftover_thin2\":0,\"volumes\":[],\"checkpoints\":[],\"history_bytes\":null,\"hydration\":null}"
            ),
            "{json}"
        );
        let mut vols = sample();
        vols.volumes = vec![
            VolumeStatus {
                name: "home".into(),
                thin: 3,
                size_bytes: 1 << 30,
                mount_point: Some("/home".into()),
                mapped_bytes: Some(2 << 20),
                formatted: true,
                mounted: true,
            },
            VolumeStatus {
                name: "old".into(),
                thin: 4,
                size_bytes: 16 << 20,
                mount_point: None,
                mapped_bytes: None,
                formatted: false,
                mounted: false,
            },
        ];
        assert_eq!(
            vols.render_volumes_text(),
            "volume:     home (1.0 GiB, 2.0 MiB written), at /home; thin 3\n\
             volume:     old (16.0 MiB), not asked for at this boot (kept untouched); thin 4\n"
        );
        assert_eq!(
            vols.render_volumes_json(),
            "[{\"name\":\"home\",\"thin\":3,\"size_bytes\":1073741824,\"mount_point\":\"/home\",\"mapped_bytes\":2097152,\"formatted\":true,\"mounted\":true},\
             {\"name\":\"old\",\"thin\":4,\"size_bytes\":16777216,\"mount_point\":null,\"mapped_bytes\":null,\"formatted\":false,\"mounted\":false}]"
        );
        assert!(text.contains("header:     both copies good"), "{text}");
        assert!(!text.contains("leftover:"), "{text}");
        let mut left = sample();
        left.leftover_thin = 1;
        assert!(left.render_text().contains("leftover:   thin 1 (the changes the last reset discarded)"));
        assert!(left.render_json().contains("\"leftover_thin\":1,"));
        let mut ram = sample();
        ram.fresh_every_boot = Some("it runs on a RAM pool".into());
        ram.ram_fallback = Some("/dev/vdc: not a pool".into());
        ram.pool_in_ram = true;
        let text = ram.render_text();
        assert!(
            text.contains("next boot:  start fresh: nothing of this boot is kept (it runs on a RAM pool)"),
            "{text}"
        );
        assert!(text.contains("FALLBACK:   this boot runs on a RAM pool because"), "{text}");
        assert!(text.contains("pool:       /dev/vdc (in RAM)"), "{text}");
        let json = ram.render_json();
        assert!(json.contains("\"next_boot\":\"reset\""), "{json}");
        assert!(
            json.ends_with("\"fresh_every_boot\":\"it runs on a RAM pool\",\"ram_fallback\":\"/dev/vdc: not a pool\",\"pool_in_ram\":true,\"base_thin\":0,\"maintenance_requested\":false,\"leftover_thin2\":0,\"volumes\":[],\"checkpoints\":[],\"history_bytes\":null,\"hydration\":null}"),
            "{json}"
        );
        let mut d = sample();
        d.damaged_copy = Some((1, SlotFault::BadChecksum));
        assert!(d.render_text().contains("header:     COPY 1 DAMAGED (checksum mismatch)"), "{}", d.render_text());
        assert!(d.render_json().contains("\"damaged_header_copy\":{\"copy\":1,\"fault\":\"checksum mismatch\"}"));
    }

    #[test]
    fn frozen_pools_say_what_this_boot_and_the_next_do() {
        let mut s = sample();
        s.base_thin = 1;
        let text = s.render_text();
        assert!(text.contains("frozen:     this boot runs on a throwaway snapshot of the base (thin 1)"), "{text}");
        assert!(text.contains("next boot:  frozen: a fresh snapshot of the base (thin 1)"), "{text}");
        assert!(s.render_json().contains("\"next_boot\":\"frozen\""));
        s.maintenance_requested = true;
        assert!(s.render_json().contains("\"next_boot\":\"maintenance\""));
        s.thin_id = 1;
        assert!(s.render_text().contains("frozen:     MAINTENANCE: this boot writes into the base (thin 1)"));
        s.reset_requested = true;
        assert!(s.render_json().contains("\"next_boot\":\"reset\""));
    }

    #[test]
    fn check_follows_the_levels_and_the_health() {
        let levels = UseLevels { warn: 80, crit: 95 };
        let mut s = sample();
        assert_eq!(s.check(levels).0, 0);
        assert!(s.check(levels).1.starts_with("cowroot OK: data 1.5%, metadata 2.0% of pool /dev/vdc used"));
        s.meta_used_bytes = s.meta_total_bytes * 81 / 100;
        assert_eq!(s.check(levels).0, 1, "metadata counts as data does");
        s.data_used_bytes = s.data_total_bytes * 96 / 100;
        let (code, line) = s.check(levels);
        assert_eq!(code, 2);
        assert!(line.starts_with("cowroot CRITICAL: data 96.0%"), "{line}");
        let mut t = sample();
        t.pool_mode = "out_of_data_space".into();
        assert_eq!(t.check(levels).0, 2);
        assert_eq!(sample().check(UseLevels { warn: 1, crit: 50 }).0, 1);
    }

    #[test]
    fn health_and_next_boot_follow_the_pool() {
        let mut s = sample();
        s.pool_mode = "out_of_data_space".into();
        assert_eq!(s.health(), "out_of_data_space");
        assert!(s.render_text().contains("OUT OF DATA SPACE"));
        s.needs_check = true;
        assert_eq!(s.health(), "needs_check");
        s.pool_mode = "Fail".into();
        s.needs_check = false;
        assert_eq!(s.health(), "failed");
        s.booted_with_reset = Some("/etc/cowroot.conf".into());
        assert!(
            s.render_text().contains(
                "next boot:  keep generation 2 unless /etc/cowroot.conf still sets cowroot.reset=1 (this boot had it)"
            ),
            "{}",
            s.render_text()
        );
        s.reset_requested = true;
        assert!(s.render_json().contains("\"next_boot\":\"reset\""));
        assert_eq!(json_string("a\u{1}\\"), "\"a\\u0001\\\\\"");
    }
}
