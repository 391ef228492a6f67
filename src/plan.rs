//! The boot plan: config + probed facts in, ordered steps out. Pure, so
//! every path (first boot, reuse, reset, changed origin, crash leftovers,
//! a damaged header copy) is unit-tested, and `--dry-run` is the plan
//! printed (`render`).
//!
//! A boot plans in two phases: `plan_activation` brings the thin pool up
//! (formatting a blank device, repairing a damaged header copy); then
//! `plan_thins`, given the metadata's transaction id as the kernel reports
//! it, handles the thin devices.

use crate::checkpoint::{self, CheckpointKind, CheckpointRecord, MAX_CHECKPOINTS};
use crate::checkpoint_plan;
use crate::config::{Config, DevSpec, OnChange, RootMode, Source};
use crate::crypt::{Key, SessionKeys};
use crate::error::{Error, Result};
use crate::fingerprint::short_digest;
use crate::header::{
    self, OriginId, OtherCopy, PoolHeader, FLAG_CRYPT_RANDOM, FLAG_MAINTENANCE_NEXT_BOOT, FLAG_RESERVED,
    FLAG_RESET_NEXT_BOOT, MAX_THIN_ID,
};
use crate::layout::{plan_layout, BlockSize, Layout};
use crate::names::Role;
use crate::pool::{PoolFacts, PoolState};
use crate::table::{Crypt, KeyText, Linear, Target, Thin, ThinPool};
use crate::units::{Bytes, Sectors};
use crate::volume::{VolumeName, VolumeRecord, VolumeSpec, MAX_VOLUMES};

/// Where the image host filesystem is mounted (under /run, so it survives
/// switch-root and stays visible to the booted system).
pub const HOST_MOUNT: &str = "/run/cowroot/host";
/// Where a RAM pool's tmpfs is mounted, and its one file.
pub const RAM_POOL_DIR: &str = "/run/cowroot/ram";
pub const RAM_POOL_FILE: &str = "/run/cowroot/ram/pool";

/// A device a step refers to; resolved to MAJ:MIN by the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevRef {
    /// A block device by path, e.g. the resolved pool device.
    Path(String),
    /// The loop device attached by `AttachLoop`.
    Loop,
    /// The NBD device connected by `ConnectNbd`.
    Nbd,
    /// The loop device of the RAM pool made by `CreateRamPool`.
    RamPool,
    /// One of our dm devices.
    Dm(Role),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Sets a device read-only at the block layer (BLKROSET), before
    /// anything mounts or reads it: the image host and a device origin.
    /// A read-only mount alone still writes (journal replay, ext4 orphan
    /// cleanup, btrfs log replay); a read-only device makes the kernel skip
    /// or refuse all of that.
    SetReadOnly {
        device: String,
    },
    MountHost {
        device: String,
        fstype: Option<String>,
    },
    AttachLoop {
        file: String,
    },
    /// Connects a free NBD device to the served origin, read-only,
    /// trying until `seconds` have passed (0: once).
    ConnectNbd {
        server: crate::nbd::NbdServer,
        seconds: u64,
    },
    /// A tmpfs holding one sparse file of `bytes`, attached to a writable
    /// loop device: the pool device of `cowpool=ram`.
    CreateRamPool {
        bytes: Bytes,
    },
    /// Writes one header copy; `zero_meta` also clears the first thin-pool
    /// metadata block so the kernel formats fresh metadata.
    WriteHeader {
        device: String,
        slot: usize,
        header: PoolHeader,
        zero_meta: bool,
        why: &'static str,
    },
    CreateLinear {
        role: Role,
        dev: DevRef,
        offset: Sectors,
        len: Sectors,
    },
    /// A dm-crypt layer over part of the pool device, with this boot's key
    /// (`cowroot.crypt=random`); in place of `CreateLinear`.
    CreateCrypt {
        role: Role,
        dev: DevRef,
        offset: Sectors,
        len: Sectors,
        key: Key,
    },
    /// Zeroes the first 4 KiB of one of our dm devices: the thin-pool
    /// metadata under a new key, so the kernel formats it fresh.
    ZeroStart {
        role: Role,
    },
    /// Creates the thin pool and checks that the kernel runs it read-write
    /// with sound metadata (`device` is the pool device, for messages).
    CreatePool {
        len: Sectors,
        block_sectors: u32,
        device: String,
    },
    CreateThinId {
        id: u32,
    },
    /// A snapshot of thin `of` (which must not be active).
    CreateSnapId {
        id: u32,
        of: u32,
    },
    /// A snapshot of thin `of` while it runs the root: the root device is
    /// suspended (its filesystem frozen) around the message.
    SnapshotLive {
        id: u32,
        of: u32,
    },
    /// Deletes a thin id; `missing_ok` for cleaning up crash leftovers.
    DeleteThinId {
        id: u32,
        missing_ok: bool,
    },
    /// Moves the metadata's transaction id on, binding it to the header.
    SetTransactionId {
        from: u64,
        to: u64,
    },
    /// `len` 0: as long as the origin (known only once it is attached).
    CreateThin {
        id: u32,
        len: Sectors,
        origin: DevRef,
    },
    /// A persistent volume's device: thin `id` without an origin.
    CreateVolume {
        volume: crate::volume::VolumeName,
        id: u32,
        len: Sectors,
    },
    /// The `onfail=ro` fallback: the origin as a read-only linear device.
    CreateReadOnly {
        len: Sectors,
        origin: DevRef,
    },
}

/// A dm device a step creates: which layer, how long, and its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmTable<D> {
    pub role: Role,
    pub len: Sectors,
    pub target: Target<D>,
}

impl Step {
    /// The table of the device this step creates, with devices resolved by
    /// `dev`; `None` for steps that create no dm device. The executor and
    /// the dry run both print tables from here, so they cannot drift.
    pub fn dm_table<D, E>(
        &self,
        mut dev: impl FnMut(&DevRef) -> std::result::Result<D, E>,
    ) -> Option<std::result::Result<DmTable<D>, E>> {
        let mut table = || -> std::result::Result<DmTable<D>, E> {
            Ok(match self {
                Step::CreateLinear { role, dev: d, offset, len } => {
                    DmTable { role: *role, len: *len, target: Target::Linear(Linear { dev: dev(d)?, offset: *offset }) }
                }
                Step::CreateCrypt { role, dev: d, offset, len, key } => DmTable {
                    role: *role,
                    len: *len,
                    target: Target::Crypt(Crypt { key: KeyText::Hex(key.hex()), dev: dev(d)?, offset: *offset }),
                },
                Step::CreateReadOnly { len, origin } => DmTable {
                    role: Role::ReadOnly,
                    len: *len,
                    target: Target::Linear(Linear { dev: dev(origin)?, offset: Sectors(0) }),
                },
                Step::CreatePool { len, block_sectors, .. } => DmTable {
                    role: Role::Pool,
                    len: *len,
                    target: Target::ThinPool(ThinPool {
                        meta: dev(&DevRef::Dm(Role::Meta))?,
                        data: dev(&DevRef::Dm(Role::Data))?,
                        block_sectors: *block_sectors,
                        low_water_blocks: 0,
                        error_if_no_space: true,
                    }),
                },
                Step::CreateThin { id, len, origin } => DmTable {
                    role: Role::Thin,
                    len: *len,
                    target: Target::Thin(Thin {
                        pool: dev(&DevRef::Dm(Role::Pool))?,
                        id: *id,
                        external_origin: Some(dev(origin)?),
                    }),
                },
                Step::CreateVolume { volume, id, len } => DmTable {
                    role: Role::Volume(*volume),
                    len: *len,
                    target: Target::Thin(Thin { pool: dev(&DevRef::Dm(Role::Pool))?, id: *id, external_origin: None }),
                },
                _ => unreachable!("checked below"),
            })
        };
        match self {
            Step::CreateLinear { .. }
            | Step::CreateCrypt { .. }
            | Step::CreateReadOnly { .. }
            | Step::CreatePool { .. }
            | Step::CreateThin { .. }
            | Step::CreateVolume { .. } => Some(table()),
            _ => None,
        }
    }

    /// The message a step sends to the thin-pool, if it sends one.
    pub fn pool_message(&self) -> Option<String> {
        match self {
            Step::CreateThinId { id } => Some(format!("create_thin {id}")),
            Step::CreateSnapId { id, of } => Some(format!("create_snap {id} {of}")),
            Step::DeleteThinId { id, .. } => Some(format!("delete {id}")),
            Step::SetTransactionId { from, to } => Some(format!("set_transaction_id {from} {to}")),
            _ => None,
        }
    }
}

/// The origin as probed; in a dry run of an image file nothing is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginFacts {
    pub device: DevRef,
    pub size: Option<Bytes>,
    pub id: Option<OriginId>,
    /// Logical block size of the origin device (512 when unknown).
    pub logical_block: u32,
    /// The image file's identity, where its filesystem keeps one stable.
    pub file: Option<[u8; 16]>,
}

/// What this boot does with the kept changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Blank pool: formatted now, first thin created.
    Formatted,
    /// First thin created on an existing, unused pool.
    FirstUse,
    Kept,
    Reset,
    /// Reset because the origin changed (`cowroot.onchange=reset`).
    NewOrigin,
    /// `cowroot.mode=frozen`: a fresh snapshot of the base.
    Frozen,
    /// A frozen pool's maintenance boot: writes go into the base.
    Maintenance,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Formatted => "formatted",
            Mode::FirstUse => "first use",
            Mode::Kept => "kept",
            Mode::Reset => "reset",
            Mode::NewOrigin => "reset: new origin",
            Mode::Frozen => "frozen",
            Mode::Maintenance => "maintenance: writing the base",
        }
    }
}

/// Mounting the image host and attaching the image (if the origin is a
/// file), or protecting a device origin; each device read-only first.
pub fn plan_origin(cfg: &Config, host_device: Option<&str>, origin_device: Option<&str>) -> Vec<Step> {
    if let (Source::Device(_), Some(device)) = (&cfg.source, origin_device) {
        return vec![Step::SetReadOnly { device: device.to_string() }];
    }
    match (&cfg.source, host_device) {
        (Source::Nbd(server), _) => vec![Step::ConnectNbd { server: server.clone(), seconds: cfg.timeout_secs }],
        (Source::File(path), Some(device)) => vec![
            Step::SetReadOnly { device: device.to_string() },
            Step::MountHost { device: device.to_string(), fstype: cfg.host_fstype.clone() },
            Step::AttachLoop { file: format!("{HOST_MOUNT}{path}") },
        ],
        // `cowroot attach` of a file on the running system's own
        // filesystems: no host to mount.
        (Source::File(path), None) => vec![Step::AttachLoop { file: path.clone() }],
        _ => Vec::new(),
    }
}

/// A fresh header for a device of `size` laid out as `layout`.
pub fn new_header(size: Bytes, layout: &Layout, pool_uuid: [u8; 16]) -> PoolHeader {
    PoolHeader {
        version: header::VERSION,
        seq: 1,
        pool_uuid,
        device_sectors: size.sectors(),
        block_sectors: layout.block_sectors,
        flags: 0,
        meta: layout.meta,
        data: layout.data,
        active_thin: 0,
        garbage_thin: 0,
        next_thin: 1,
        generation: 0,
        origin: None,
        transaction: 0,
        origin_file: None,
        root_sectors: Sectors(0),
        base_thin: 0,
        garbage_thin2: 0,
        volumes: Vec::new(),
        checkpoints: Vec::new(),
    }
}

/// The header as the plan leaves it so far: appends header writes,
/// alternating slots and counting `seq` up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderState {
    pub device: String,
    /// The slot holding the newest copy; `None` before the first write.
    pub slot: Option<usize>,
    pub header: PoolHeader,
}

impl HeaderState {
    pub(crate) fn write(
        &mut self,
        steps: &mut Vec<Step>,
        zero_meta: bool,
        why: &'static str,
        change: impl FnOnce(&mut PoolHeader),
    ) -> Result<()> {
        let mut next = match self.slot {
            Some(_) => self.header.next().map_err(|m| self.exhausted(m))?,
            None => self.header.clone(),
        };
        change(&mut next);
        let slot = header::slot_for_next_write(self.slot);
        self.slot = Some(slot);
        self.header = next;
        steps.push(Step::WriteHeader {
            device: self.device.clone(),
            slot,
            header: self.header.clone(),
            zero_meta,
            why,
        });
        Ok(())
    }

    pub(crate) fn exhausted(&self, what: &str) -> Error {
        Error::Inconsistent(format!(
            "{}: {what}; save what you need and start over with `cowroot format --force {}`",
            self.device, self.device
        ))
    }
}

/// Phase one: what brings the pool up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub steps: Vec<Step>,
    pub formatted: bool,
    /// The copy that is not the newest, as found.
    pub other: OtherCopy,
    pub header: HeaderState,
}

/// What this boot asks of the pool's content, beyond the plain default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// `cowroot.crypt=random`: this boot's keys.
    pub keys: Option<SessionKeys>,
    /// `cowroot.reset=1`: kept changes may go, so a pool may switch between
    /// plaintext and random-key sessions.
    pub reset: bool,
}

/// Plans bringing up the pool. A blank device is formatted with `block`
/// sized blocks and `pool_uuid` as its id. Nothing is written to a pool in
/// use here: a damaged or stale copy is rewritten only once `plan_thins`
/// knows the header belongs to the metadata.
pub fn plan_activation(pool: &PoolFacts, block: BlockSize, pool_uuid: [u8; 16]) -> Result<Activation> {
    plan_activation_for(pool, block, pool_uuid, &Session::default())
}

/// `plan_activation` for a `Session`. A random-key session starts a new
/// pool every boot over the old one's extents (fresh metadata under the
/// new key); the header stays plaintext, so the device is never taken
/// for free space.
pub fn plan_activation_for(
    pool: &PoolFacts,
    block: BlockSize,
    pool_uuid: [u8; 16],
    session: &Session,
) -> Result<Activation> {
    if let Some(refusal) = pool.refusal() {
        return Err(refusal);
    }
    let crypt = session.keys.is_some();
    let mut steps = Vec::new();
    let device = pool.device.clone();
    let (mut state, formatted, other) = match &pool.state {
        PoolState::Ours { slot, header, other } => {
            let state = HeaderState { device: device.clone(), slot: Some(*slot), header: header.clone() };
            let was_crypt = header.flags & FLAG_CRYPT_RANDOM != 0;
            if was_crypt && !crypt && !session.reset {
                return Err(Error::config(
                    "cowroot.crypt",
                    format!(
                        "{device} was last used with cowroot.crypt=random: what it held went with that boot's key. \
                         Boot with cowroot.crypt=random again, or add cowroot.reset=1 once to use the pool unencrypted"
                    ),
                ));
            }
            if crypt && !header.volumes.is_empty() {
                let names: Vec<String> = header.volumes.iter().map(|v| v.name.to_string()).collect();
                return Err(Error::config(
                    "cowroot.crypt",
                    format!(
                        "{device} holds the persistent volumes {}, and cowroot.crypt=random starts a new encrypted \
                         pool every boot, which would discard them (no reset does). Drop cowroot.crypt=random; to \
                         give the volumes up, boot without them and run `cowroot volumes --delete NAME` for each",
                        names.join(", ")
                    ),
                ));
            }
            let checkpoints: Vec<String> =
                header.checkpoints.iter().filter(|c| !c.deleting).map(|c| c.name.to_string()).collect();
            if crypt && !checkpoints.is_empty() {
                return Err(Error::config(
                    "cowroot.crypt",
                    format!(
                        "{device} holds the checkpoints {}, and cowroot.crypt=random starts a new encrypted pool \
                         every boot, which would discard them. Drop cowroot.crypt=random, or delete them first \
                         (`cowroot checkpoint delete NAME`)",
                        checkpoints.join(", ")
                    ),
                ));
            }
            if crypt && !was_crypt && header.active_thin != 0 && !session.reset {
                return Err(Error::config(
                    "cowroot.crypt",
                    format!(
                        "{device} keeps the changes of generation {} unencrypted, and cowroot.crypt=random starts an \
                         encrypted pool that discards them. Add cowroot.reset=1 once to discard them, or drop \
                         cowroot.crypt=random",
                        header.generation
                    ),
                ));
            }
            (state, crypt || was_crypt, other.clone())
        }
        _ => {
            let layout = plan_layout(&device, pool.size, block)?;
            let header = new_header(pool.size, &layout, pool_uuid);
            (HeaderState { device: device.clone(), slot: None, header }, true, OtherCopy::InSync)
        }
    };
    if state.header.device_sectors > pool.size.sectors() {
        return Err(Error::Inconsistent(format!(
            "{} was {} sectors when formatted but is {} now; it was shrunk or replaced",
            pool.device,
            state.header.device_sectors,
            pool.size.sectors()
        )));
    }
    if formatted {
        // Metadata in plaintext is made fresh by zeroing its first block
        // on the device; under a new key, through the crypt layer below.
        let why = if state.slot.is_some() { "new session" } else { "format" };
        let flags = if crypt { FLAG_CRYPT_RANDOM } else { 0 };
        state.write(&mut steps, !crypt, why, |h| {
            h.flags = flags;
            h.active_thin = 0;
            h.garbage_thin = 0;
            h.next_thin = 1;
            h.origin = None;
            h.origin_file = None;
            h.transaction = 0;
            h.root_sectors = Sectors(0);
            h.base_thin = 0;
            h.garbage_thin2 = 0;
            h.volumes.clear();
            h.checkpoints.clear();
        })?;
    }
    let h = &state.header;
    let extent = |role, extent: header::Extent, key: Option<&Key>| match key {
        Some(key) => Step::CreateCrypt {
            role,
            dev: DevRef::Path(pool.device.clone()),
            offset: extent.start,
            len: extent.len,
            key: key.clone(),
        },
        None => {
            Step::CreateLinear { role, dev: DevRef::Path(pool.device.clone()), offset: extent.start, len: extent.len }
        }
    };
    steps.push(extent(Role::Meta, h.meta, session.keys.as_ref().map(|k| &k.meta)));
    if crypt {
        steps.push(Step::ZeroStart { role: Role::Meta });
    }
    steps.push(extent(Role::Data, h.data, session.keys.as_ref().map(|k| &k.data)));
    steps.push(Step::CreatePool { len: h.data.len, block_sectors: h.block_sectors, device: pool.device.clone() });
    Ok(Activation { steps, formatted, other, header: state })
}

/// Phase two: the thin devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinPlan {
    pub steps: Vec<Step>,
    pub mode: Mode,
    /// The header as it stands after the plan ran, and its slot.
    pub header: HeaderState,
    /// Why the origin counts as changed, when `cowroot.onchange=reset`
    /// started fresh on it.
    pub origin_change: Option<String>,
    /// This boot's persistent volumes, as asked for and as recorded.
    pub volumes: Vec<(VolumeSpec, VolumeRecord)>,
}

/// Plans the thin devices once the pool is up, given the metadata's
/// transaction id (`metadata_transaction`, from the pool's status) and the
/// logical block size of the pool device (`pool_block`).
///
/// The transaction moves on once per new thin, right after `create_thin`,
/// and the header records it in the same write that makes the new thin
/// active. A power cut between the two leaves the metadata one transaction
/// ahead of a header that still names the leftover thin: that, and only
/// that, is accepted as "in flight", and cleaning it up does not move the
/// transaction again, so a second power cut during the cleanup changes
/// nothing.
pub fn plan_thins(
    cfg: &Config,
    activation: &Activation,
    metadata_transaction: u64,
    pool_block: u32,
    origin: &OriginFacts,
) -> Result<ThinPlan> {
    plan_thins_at(cfg, activation, metadata_transaction, pool_block, origin, 0)
}

/// `plan_thins` at `now` (seconds since the epoch), the time a checkpoint
/// that `cowroot.keep` makes records.
pub fn plan_thins_at(
    cfg: &Config,
    activation: &Activation,
    metadata_transaction: u64,
    pool_block: u32,
    origin: &OriginFacts,
    now: u64,
) -> Result<ThinPlan> {
    let mut steps = Vec::new();
    let mut state = activation.header.clone();
    let mut txn = bind_transaction(&state, metadata_transaction)?;

    // What the last reset left (when nothing deleted it after boot), or
    // what an interrupted one reserved.
    let garbage = [state.header.garbage_thin, state.header.garbage_thin2];
    let doomed = checkpoint_plan::deletions(&state.header, 0);
    if garbage != [0, 0] || !doomed.is_empty() {
        for id in garbage.into_iter().filter(|&id| id != 0) {
            steps.push(Step::DeleteThinId { id, missing_ok: true });
        }
        steps.extend(doomed);
        state.write(&mut steps, false, "forget leftover thin", |h| {
            h.garbage_thin = 0;
            h.garbage_thin2 = 0;
            h.checkpoints.retain(|c| !c.deleting);
            h.flags &= !FLAG_RESERVED;
            h.transaction = txn;
        })?;
    }

    // Persistent volumes first, while no reservation is pending: each new
    // one is reserved, created and recorded like a new root thin.
    let volumes = plan_volumes(cfg, &mut state, &mut steps, &mut txn, pool_block)?;

    let reset_requested = cfg.reset || cfg.mode == RootMode::Volatile || state.header.flags & FLAG_RESET_NEXT_BOOT != 0;
    let old = state.header.active_thin;
    let mut origin_change = None;
    let mode = if old == 0 {
        if activation.formatted {
            Mode::Formatted
        } else {
            Mode::FirstUse
        }
    } else if reset_requested {
        Mode::Reset
    } else {
        match check_origin(cfg, &state.header, origin) {
            Ok(()) => Mode::Kept,
            Err(Error::OriginChanged { detail, .. }) if cfg.onchange == OnChange::Reset => {
                origin_change = Some(detail);
                Mode::NewOrigin
            }
            Err(other) => return Err(other),
        }
    };

    let block = pool_block.max(origin.logical_block);
    let origin_len = origin.size.map(|size| round_up(size.sectors(), block));
    let wanted = cfg.size.map(|size| round_up(size.sectors(), block));
    if let (Some(wanted), Some(origin_len)) = (wanted, origin_len) {
        if wanted < origin_len {
            return Err(Error::config(
                "cowroot.size",
                format!(
                    "{} is smaller than the origin ({}); the root cannot be smaller than its image",
                    wanted.bytes(),
                    origin_len.bytes()
                ),
            ));
        }
    }
    // A root grown by cowroot.size stays that size while its changes are
    // kept; a new thin takes the size asked for now.
    let grown = |recorded: Sectors| -> Sectors {
        let wanted = wanted.unwrap_or(Sectors(0)).max(recorded);
        if origin_len.is_some_and(|o| wanted <= o) {
            Sectors(0)
        } else {
            wanted
        }
    };

    // What the thins become. A fresh start makes a new thin (in frozen
    // mode, a new base and a snapshot of it to boot from); a frozen boot
    // snapshots the base; a maintenance boot runs on the base itself.
    let frozen = cfg.mode == RootMode::Frozen;
    let maintenance = frozen && (cfg.maintenance || state.header.flags & FLAG_MAINTENANCE_NEXT_BOOT != 0);
    let fresh = mode != Mode::Kept;
    let base = state.header.base_thin;
    let next = state.header.next_thin;
    let kept_base = if base != 0 { base } else { old };
    let mut creates = Vec::new();
    let (active, new_base) = match (fresh, frozen, maintenance) {
        (true, false, _) => {
            creates.push(Step::CreateThinId { id: next });
            (next, 0)
        }
        (true, true, true) => {
            creates.push(Step::CreateThinId { id: next });
            (next, next)
        }
        (true, true, false) => {
            creates.push(Step::CreateThinId { id: next });
            creates.push(Step::CreateSnapId { id: next + 1, of: next });
            (next + 1, next)
        }
        // Leaving frozen mode: the base is kept, as a maintenance boot
        // would keep it; the last session is thrown away as planned.
        (false, false, _) => (kept_base, 0),
        (false, true, true) => (kept_base, kept_base),
        (false, true, false) => {
            creates.push(Step::CreateSnapId { id: next, of: kept_base });
            (next, kept_base)
        }
    };
    let mode = match (mode, frozen, maintenance) {
        (Mode::Kept, true, true) => Mode::Maintenance,
        (Mode::Kept, true, false) => Mode::Frozen,
        (mode, _, _) => mode,
    };
    // cowroot.keep: the state a reset replaces (the kept root, or the
    // frozen base) becomes a checkpoint; the oldest such beyond N go.
    let mut replaced = (mode == Mode::Reset && cfg.keep > 0 && kept_base != 0).then_some(kept_base);
    // A full table makes room by dropping the oldest kept reset state now;
    // with none to drop, this reset keeps nothing (and says so).
    let mut evicted = None;
    if replaced.is_some() && state.header.checkpoints.len() >= MAX_CHECKPOINTS {
        evicted =
            state.header.checkpoints.iter().find(|c| c.kind == CheckpointKind::Reset && !c.deleting).map(|c| c.thin);
        if evicted.is_none() {
            log::warn!(
                "{} already records {MAX_CHECKPOINTS} checkpoints, none kept by cowroot.keep: this reset does not \
                 keep what it replaces; delete some with `cowroot checkpoint delete NAME`",
                state.device
            );
            replaced = None;
        }
    }
    let kept = replaced.map(|thin| CheckpointRecord {
        name: checkpoint::auto_name("reset", state.header.generation, thin, &state.header.checkpoints),
        thin,
        kind: CheckpointKind::Reset,
        deleting: false,
        created: now,
        generation: state.header.generation,
        root_sectors: state.header.root_sectors,
        origin: state.header.origin.unwrap_or(OriginId { size_bytes: 0, digest: [0; 32] }),
    });
    let trimmed: Vec<u32> = if mode == Mode::Reset && cfg.keep > 0 {
        let history: Vec<u32> = state
            .header
            .checkpoints
            .iter()
            .filter(|c| c.kind == CheckpointKind::Reset && !c.deleting && Some(c.thin) != evicted)
            .map(|c| c.thin)
            .chain(replaced)
            .collect();
        history[..history.len().saturating_sub(cfg.keep as usize)].to_vec()
    } else {
        Vec::new()
    };
    // What is left to delete: the last boot's thins that are neither
    // active nor the base now, nor kept (deleted after boot, see below).
    let gone = |t: u32| t != 0 && t != active && t != new_base && Some(t) != replaced;
    let mut left1 = [old, base].into_iter().find(|&t| gone(t)).unwrap_or(0);
    let mut left2 = [old, base].into_iter().find(|&t| gone(t) && t != left1).unwrap_or(0);
    // Keeping one of the two leaves a slot free for the evicted one.
    if let Some(thin) = evicted {
        if left1 == 0 {
            left1 = thin;
        } else {
            left2 = thin;
        }
    }
    let clear_flags =
        if fresh { FLAG_RESET_NEXT_BOOT | FLAG_MAINTENANCE_NEXT_BOOT } else { FLAG_MAINTENANCE_NEXT_BOOT };

    if !creates.is_empty() {
        // New thins first, header second, old thins last: power lost
        // between any two steps leaves a header that names thins that exist.
        let count = creates.len() as u32;
        if next + count - 1 > MAX_THIN_ID {
            return Err(state.exhausted("all 2^24 thin ids have been used"));
        }
        let generation = if fresh {
            state.header.generation.checked_add(1).ok_or_else(|| state_exhausted(&activation.header.device))?
        } else {
            state.header.generation
        };
        let next_txn = state.header.transaction_after(txn).ok_or_else(|| state_exhausted(&activation.header.device))?;
        state.write(&mut steps, false, "reserve thin id", |h| {
            h.next_thin = next + count;
            h.garbage_thin = next;
            h.garbage_thin2 = if count > 1 { next + 1 } else { 0 };
            h.flags |= FLAG_RESERVED;
        })?;
        steps.extend(creates);
        steps.push(Step::SetTransactionId { from: txn, to: next_txn });
        let why = if frozen && !fresh { "switch to a new snapshot of the base" } else { "switch to new thin" };
        state.write(&mut steps, false, why, |h| {
            h.active_thin = active;
            h.base_thin = new_base;
            h.garbage_thin = left1;
            h.garbage_thin2 = left2;
            h.generation = generation;
            h.flags &= !(clear_flags | FLAG_RESERVED);
            h.transaction = next_txn;
            h.checkpoints.retain(|c| Some(c.thin) != evicted);
            h.checkpoints.extend(kept);
            for c in h.checkpoints.iter_mut().filter(|c| trimmed.contains(&c.thin)) {
                c.deleting = true;
            }
            if fresh {
                h.root_sectors = grown(Sectors(0));
                if origin.id.is_some() {
                    h.origin = origin.id;
                    h.origin_file = origin.file;
                }
            }
        })?;
        // The old thins stay as leftovers: deleting them takes time that
        // grows with what they hold, so the booted system does it
        // (`cowroot cleanup`), or failing that the next boot (above).
    } else if active != old || new_base != base || state.header.flags & clear_flags != 0 {
        let why = if maintenance { "maintenance: run on the base" } else { "leave frozen mode" };
        state.write(&mut steps, false, why, |h| {
            h.active_thin = active;
            h.base_thin = new_base;
            h.garbage_thin = left1;
            h.garbage_thin2 = left2;
            h.flags &= !clear_flags;
        })?;
    }

    // The same content under a new file identity (copied with its times,
    // another host filesystem): record it, so the next boot need not
    // sample.
    if !fresh && origin.id.is_some() && state.header.origin_file != origin.file {
        state.write(&mut steps, false, "record the image file's identity", |h| h.origin_file = origin.file)?;
    }

    if !fresh && origin_len.is_some() && grown(state.header.root_sectors) != state.header.root_sectors {
        let root = grown(state.header.root_sectors);
        state.write(&mut steps, false, "grow the root", |h| h.root_sectors = root)?;
    }

    let wrote = state.header.seq != activation.header.header.seq;
    if wrote || activation.other != OtherCopy::InSync {
        // At rest both copies say the same: then damage to either one, the
        // newest included, loses nothing. This also rewrites a damaged or
        // stale copy (a pool of cowroot 0.1 kept only one copy current).
        let why = match (&activation.other, wrote) {
            (OtherCopy::Damaged(_), false) => "repair the damaged copy",
            (OtherCopy::Stale, false) => "bring the older copy up to date",
            _ => "mirror to the other copy",
        };
        state.write(&mut steps, false, why, |_| {})?;
    }
    // 0: as long as the origin (a dry run of an image file).
    let len = match origin_len {
        Some(origin_len) => origin_len.max(state.header.root_sectors),
        None => state.header.root_sectors,
    };
    steps.push(Step::CreateThin { id: state.header.active_thin, len, origin: origin.device.clone() });
    for (_, record) in &volumes {
        steps.push(Step::CreateVolume { volume: record.name, id: record.thin, len: record.sectors });
    }
    Ok(ThinPlan { steps, mode, header: state, origin_change, volumes })
}

/// Brings the header's volume table up to `cfg.volumes`: a volume not yet
/// recorded gets a new thin (reserved, created, then recorded, so a power
/// cut leaves at most a reserved id the next boot deletes); a larger SIZE
/// grows one (a volume never shrinks). Volumes recorded but not asked for
/// stay in the pool untouched.
fn plan_volumes(
    cfg: &Config,
    state: &mut HeaderState,
    steps: &mut Vec<Step>,
    txn: &mut u64,
    pool_block: u32,
) -> Result<Vec<(VolumeSpec, VolumeRecord)>> {
    let mut out = Vec::new();
    for spec in &cfg.volumes {
        let wanted = round_up(spec.size.sectors(), pool_block.max(4096));
        let recorded = state.header.volumes.iter().position(|v| v.name == spec.name);
        let index = match recorded {
            Some(index) => {
                if state.header.volumes[index].sectors < wanted {
                    state.write(steps, false, "grow a volume", |h| h.volumes[index].sectors = wanted)?;
                }
                index
            }
            None => {
                if state.header.volumes.len() >= MAX_VOLUMES {
                    return Err(Error::config(
                        "cowroot.volume",
                        format!(
                            "{} already records {MAX_VOLUMES} volumes, the most a pool holds; reuse one of their names, \
                             or delete one with `cowroot volumes --delete NAME` (boot without its key first)",
                            state.device
                        ),
                    ));
                }
                let id = state.header.next_thin;
                if id > MAX_THIN_ID {
                    return Err(state.exhausted("all 2^24 thin ids have been used"));
                }
                let next_txn = state.header.transaction_after(*txn).ok_or_else(|| state_exhausted(&state.device))?;
                state.write(steps, false, "reserve thin id for a volume", |h| {
                    h.next_thin = id + 1;
                    h.garbage_thin = id;
                    h.flags |= FLAG_RESERVED;
                })?;
                steps.push(Step::CreateThinId { id });
                steps.push(Step::SetTransactionId { from: *txn, to: next_txn });
                let record = VolumeRecord { name: spec.name, thin: id, sectors: wanted, formatted: false };
                state.write(steps, false, "record a new volume", |h| {
                    h.volumes.push(record);
                    h.garbage_thin = 0;
                    h.flags &= !FLAG_RESERVED;
                    h.transaction = next_txn;
                })?;
                *txn = next_txn;
                state.header.volumes.len() - 1
            }
        };
        out.push((spec.clone(), state.header.volumes[index]));
    }
    Ok(out)
}

/// `cowroot cleanup` on the running system: deletes the thin a reset left
/// behind (`in_use` is the thin the root runs on) and clears it from both
/// header copies. Nothing to do gives no steps. A power cut anywhere leaves
/// the id in the header: the next cleanup or boot deletes it (missing_ok).
pub fn plan_cleanup(header: &HeaderState, metadata_transaction: u64, in_use: u32) -> Result<Vec<Step>> {
    let h = &header.header;
    // A leftover the root still runs on (a rollback dropped it) waits for
    // the next boot.
    let leftovers: Vec<u32> =
        [h.garbage_thin, h.garbage_thin2].into_iter().filter(|&id| id != 0 && id != in_use).collect();
    let doomed = checkpoint_plan::deletions(h, in_use);
    if leftovers.is_empty() && doomed.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(id) = leftovers.iter().find(|&&id| id == h.active_thin || id == h.base_thin) {
        return Err(Error::Inconsistent(format!(
            "{}: the header names thin {id} as both in use and left over; nothing was deleted",
            header.device
        )));
    }
    require_bound(header, metadata_transaction)?;
    let mut state = header.clone();
    let mut steps: Vec<Step> = leftovers.iter().map(|&id| Step::DeleteThinId { id, missing_ok: true }).collect();
    steps.extend(doomed);
    state.write(&mut steps, false, "forget leftover thin", |h| {
        h.garbage_thin = if h.garbage_thin == in_use { in_use } else { 0 };
        h.garbage_thin2 = if h.garbage_thin2 == in_use { in_use } else { 0 };
        h.checkpoints.retain(|c| !c.deleting || c.thin == in_use);
    })?;
    state.write(&mut steps, false, "mirror to the other copy", |_| {})?;
    Ok(steps)
}

/// `cowroot volumes --delete` on the running system: forgets a volume and
/// deletes its thin. The record goes first, its id into the leftover slot,
/// so a power cut anywhere leaves an id that the next cleanup or boot
/// deletes (missing_ok), never a record of a deleted thin.
pub fn plan_volume_delete(
    header: &HeaderState,
    metadata_transaction: u64,
    volume: VolumeName,
    in_use: u32,
) -> Result<Vec<Step>> {
    let h = &header.header;
    let Some(index) = h.volumes.iter().position(|v| v.name == volume) else {
        return Err(Error::Usage(format!("{} holds no volume {volume} (see `cowroot volumes`)", header.device)));
    };
    let thin = h.volumes[index].thin;
    if [in_use, h.active_thin, h.base_thin].contains(&thin) {
        return Err(Error::Inconsistent(format!(
            "{}: volume {volume}'s thin {thin} is also the root's; nothing was deleted",
            header.device
        )));
    }
    if h.garbage_thin != 0 || h.garbage_thin2 != 0 {
        return Err(Error::Refused(format!(
            "{} still has a leftover thin to delete; run `cowroot cleanup` first, then delete the volume",
            header.device
        )));
    }
    require_bound(header, metadata_transaction)?;
    let mut state = header.clone();
    let mut steps = Vec::new();
    state.write(&mut steps, false, "forget a volume", |h| {
        h.volumes.remove(index);
        h.garbage_thin = thin;
    })?;
    steps.push(Step::DeleteThinId { id: thin, missing_ok: true });
    state.write(&mut steps, false, "forget leftover thin", |h| h.garbage_thin = 0)?;
    state.write(&mut steps, false, "mirror to the other copy", |_| {})?;
    Ok(steps)
}

/// On a running system the boot wrote its last switch: the metadata is at
/// the header's transaction, nothing is in flight.
pub(crate) fn require_bound(header: &HeaderState, metadata_transaction: u64) -> Result<()> {
    if metadata_transaction != header.header.transaction {
        return Err(Error::HeaderMismatch {
            device: header.device.clone(),
            header: header.header.transaction,
            metadata: metadata_transaction,
        });
    }
    Ok(())
}

pub(crate) fn state_exhausted(device: &str) -> Error {
    Error::Inconsistent(format!(
        "{device}: a counter of the pool header is exhausted; save what you need and start over with \
         `cowroot format --force {device}`"
    ))
}

/// The transaction the plan starts from: the header's, or the next one
/// while a new thin was in flight (the metadata committed, the header not).
fn bind_transaction(state: &HeaderState, metadata: u64) -> Result<u64> {
    let h = &state.header;
    // Only a reserved new id (always above the active one) is in flight:
    // a reset's leftover (below it) waits for its cleanup with the header
    // already bound, and must not widen what is accepted meanwhile.
    // Headers of version 4 mark the reservation itself (a maintenance
    // boot's leftover is above the active thin too); older ones had only
    // reservations above it.
    let reserved = if h.version >= 4 { h.flags & FLAG_RESERVED != 0 } else { h.garbage_thin > h.active_thin };
    let in_flight = reserved && h.garbage_thin != 0 && Some(metadata) == h.transaction_after(h.transaction);
    if metadata == h.transaction || in_flight {
        Ok(metadata)
    } else {
        Err(Error::HeaderMismatch { device: state.device.clone(), header: h.transaction, metadata })
    }
}

/// A thin device must be a whole number of the pool's and the origin's
/// logical blocks; blocks past the origin's end read as zeros.
fn round_up(len: Sectors, block_bytes: u32) -> Sectors {
    let per = (block_bytes as u64 / 512).max(1);
    Sectors(len.0.div_ceil(per) * per)
}

fn check_origin(cfg: &Config, header: &PoolHeader, origin: &OriginFacts) -> Result<()> {
    let (Some(recorded), Some(now)) = (&header.origin, &origin.id) else {
        // Unknown only in a dry run of an image file (a header with an
        // active thin always has an origin record).
        return Ok(());
    };
    if recorded == now {
        return Ok(());
    }
    let detail = if recorded.size_bytes != now.size_bytes {
        format!("size was {} bytes, is {} bytes", recorded.size_bytes, now.size_bytes)
    } else {
        format!(
            "fingerprint of sampled content and modification time was {}, is {}",
            short_digest(recorded),
            short_digest(now)
        )
    };
    Err(Error::OriginChanged { origin: cfg.source.to_string(), detail })
}

/// The origin device reference for a config once resolved.
/// The origin identity recorded with the pool, when the image file's
/// identity now is the one recorded with it: then its content is the one
/// recorded, and need not be sampled again.
pub fn recorded_origin(pool: &PoolState, file: Option<[u8; 16]>) -> Option<OriginId> {
    match pool {
        PoolState::Ours { header, .. } if file.is_some() && header.origin_file == file => header.origin,
        _ => None,
    }
}

pub fn origin_ref(source: &Source, resolved_device: Option<&str>) -> DevRef {
    match (source, resolved_device) {
        (Source::Device(DevSpec::Path(p)), None) => DevRef::Path(p.clone()),
        (Source::Device(_), Some(p)) => DevRef::Path(p.to_string()),
        (Source::Nbd(_), _) => DevRef::Nbd,
        _ => DevRef::Loop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::split;
    use crate::header::SlotFault;

    fn cfg(extra: &str) -> Config {
        Config::from_params(&split(&format!("cowroot=/images/root.img cowroot.dev=LABEL=img cowpool=/dev/vdc {extra}")))
            .unwrap()
            .unwrap()
    }

    const POOL_SIZE: Bytes = Bytes(256 << 20);
    const UUID: [u8; 16] = [5; 16];

    fn origin(id_byte: u8) -> OriginFacts {
        OriginFacts {
            device: DevRef::Loop,
            size: Some(Bytes(64 << 20)),
            id: Some(OriginId { size_bytes: 64 << 20, digest: [id_byte; 32] }),
            logical_block: 512,
            file: Some([id_byte; 16]),
        }
    }

    fn facts(state: PoolState) -> PoolFacts {
        PoolFacts { device: "/dev/vdc".into(), size: POOL_SIZE, state, metadata_blank: false }
    }

    /// The first transaction id of the test pool.
    fn seed() -> u64 {
        let mut h = new_header(POOL_SIZE, &crate::layout::plan_layout("d", POOL_SIZE, BlockSize::Auto).unwrap(), UUID);
        h.pool_uuid = UUID;
        h.transaction_after(0).unwrap()
    }

    /// Both phases, with the metadata at `txn` (the header's when `None`).
    fn plan(cfg: &Config, state: PoolState, origin: &OriginFacts, txn: Option<u64>) -> Result<(Activation, ThinPlan)> {
        let act = plan_activation(&facts(state), BlockSize::Exact(64 * 1024), UUID)?;
        let txn = txn.unwrap_or(act.header.header.transaction);
        let thins = plan_thins(cfg, &act, txn, 512, origin)?;
        Ok((act, thins))
    }

    fn steps(p: &(Activation, ThinPlan)) -> Vec<Step> {
        p.0.steps.iter().chain(&p.1.steps).cloned().collect()
    }

    /// The state the next boot sees after a plan ran to its end.
    fn after(p: &(Activation, ThinPlan)) -> PoolState {
        let h = &p.1.header;
        PoolState::Ours { slot: h.slot.expect("a header exists"), header: h.header.clone(), other: OtherCopy::InSync }
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        let seed = seed();
        let txn = |t: u64| if t >= seed { format!("S+{}", t - seed) } else { t.to_string() };
        steps
            .iter()
            .map(|s| match s {
                Step::WriteHeader { slot, header, why, .. } => {
                    format!("header{slot}:{why}:seq{}:txn{}", header.seq, txn(header.transaction))
                }
                Step::CreateLinear { role, .. } => format!("linear:{role:?}"),
                Step::CreateCrypt { role, .. } => format!("crypt:{role:?}"),
                Step::ZeroStart { role } => format!("zero:{role:?}"),
                Step::CreatePool { .. } => "pool".into(),
                Step::CreateThin { id, .. } => format!("thin {id}"),
                Step::SetTransactionId { from, to } => format!("set_transaction_id {} {}", txn(*from), txn(*to)),
                other => other.pool_message().unwrap_or_else(|| format!("{other:?}")),
            })
            .collect()
    }

    #[test]
    fn first_boot_formats_then_reuse_then_reset() {
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        assert_eq!(first.1.mode, Mode::Formatted);
        assert_eq!(
            kinds(&steps(&first)),
            [
                "header0:format:seq1:txn0",
                "linear:Meta",
                "linear:Data",
                "pool",
                "header1:reserve thin id:seq2:txn0",
                "create_thin 1",
                "set_transaction_id 0 S+0",
                "header0:switch to new thin:seq3:txnS+0",
                "header1:mirror to the other copy:seq4:txnS+0",
                "thin 1",
            ]
        );
        assert!(matches!(first.0.steps[0], Step::WriteHeader { zero_meta: true, .. }));
        let h = &first.1.header.header;
        assert_eq!((h.active_thin, h.generation, h.garbage_thin, h.origin), (1, 1, 0, origin(1).id));
        // The header validates after every write.
        for step in steps(&first) {
            if let Step::WriteHeader { header, .. } = step {
                assert_eq!(PoolHeader::decode(&header.encode()), Ok(header));
            }
        }

        let second = plan(&cfg(""), after(&first), &origin(1), None).unwrap();
        assert_eq!(second.1.mode, Mode::Kept);
        assert_eq!(kinds(&steps(&second)), ["linear:Meta", "linear:Data", "pool", "thin 1"]);
        assert_eq!(second.1.header, first.1.header);

        let third = plan(&cfg("cowroot.reset=1"), after(&second), &origin(1), None).unwrap();
        assert_eq!(third.1.mode, Mode::Reset);
        assert_eq!(
            kinds(&steps(&third)),
            [
                "linear:Meta",
                "linear:Data",
                "pool",
                "header0:reserve thin id:seq5:txnS+0",
                "create_thin 2",
                "set_transaction_id S+0 S+1",
                "header1:switch to new thin:seq6:txnS+1",
                "header0:mirror to the other copy:seq7:txnS+1",
                "thin 2",
            ]
        );
        let h = &third.1.header.header;
        // The old thin is left for `cowroot cleanup`: the boot does not
        // wait for its delete.
        assert_eq!((h.active_thin, h.generation, h.garbage_thin), (2, 2, 1));
        let cleanup = plan_cleanup(&third.1.header, h.transaction, 2).unwrap();
        assert_eq!(
            kinds(&cleanup),
            ["delete 1", "header1:forget leftover thin:seq8:txnS+1", "header0:mirror to the other copy:seq9:txnS+1"]
        );
        assert!(matches!(plan_cleanup(&third.1.header, h.transaction + 1, 2), Err(Error::HeaderMismatch { .. })));
        // The thin in use is never deleted: it waits for the next boot.
        assert_eq!(plan_cleanup(&third.1.header, h.transaction, 1).unwrap(), []);
        assert_eq!(plan_cleanup(&second.1.header, second.1.header.header.transaction, 1).unwrap(), []);
    }

    #[test]
    fn a_new_file_identity_for_the_same_content_is_recorded_once() {
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        assert_eq!(first.1.header.header.origin_file, Some([1; 16]));
        // Copied or touched: same content, another identity.
        let mut copied = origin(1);
        copied.file = Some([9; 16]);
        let second = plan(&cfg(""), after(&first), &copied, None).unwrap();
        assert_eq!(second.1.mode, Mode::Kept);
        assert_eq!(
            kinds(&second.1.steps),
            [
                "header0:record the image file's identity:seq5:txnS+0",
                "header1:mirror to the other copy:seq6:txnS+0",
                "thin 1"
            ]
        );
        assert_eq!(second.1.header.header.origin_file, Some([9; 16]));
        let third = plan(&cfg(""), after(&second), &copied, None).unwrap();
        assert_eq!(kinds(&third.1.steps), ["thin 1"]);
        // Other content is still refused, whatever the file's identity.
        let mut changed = origin(2);
        changed.file = Some([9; 16]);
        assert!(matches!(plan(&cfg(""), after(&second), &changed, None), Err(Error::OriginChanged { .. })));
    }

    #[test]
    fn volatile_mode_resets_every_boot_and_onchange_reset_starts_fresh_on_a_new_origin() {
        let first = plan(&cfg("cowroot.mode=volatile"), PoolState::Blank, &origin(1), None).unwrap();
        assert_eq!(first.1.mode, Mode::Formatted);
        let second = plan(&cfg("cowroot.mode=volatile"), after(&first), &origin(1), None).unwrap();
        assert_eq!(second.1.mode, Mode::Reset);
        assert_eq!((second.1.header.header.active_thin, second.1.header.header.garbage_thin), (2, 1));
        // A changed origin: refused by default, a fresh start with onchange=reset.
        assert!(matches!(plan(&cfg(""), after(&first), &origin(2), None), Err(Error::OriginChanged { .. })));
        let new = plan(&cfg("cowroot.onchange=reset"), after(&first), &origin(2), None).unwrap();
        assert_eq!(new.1.mode, Mode::NewOrigin);
        assert!(new.1.origin_change.as_deref().unwrap().contains("fingerprint"), "{:?}", new.1.origin_change);
        let h = &new.1.header.header;
        assert_eq!((h.active_thin, h.garbage_thin, h.generation, h.origin), (2, 1, 2, origin(2).id));
        // The same origin keeps its changes with onchange=reset.
        let same = plan(&cfg("cowroot.onchange=reset"), after(&first), &origin(1), None).unwrap();
        assert_eq!((same.1.mode, same.1.origin_change.clone()), (Mode::Kept, None));
    }

    fn crypt_plan(extra: &str, state: PoolState, key: u8) -> Result<(Activation, ThinPlan)> {
        let cfg = cfg(extra);
        let session =
            Session { keys: Some(SessionKeys { meta: Key::fixed(key), data: Key::fixed(key + 1) }), reset: cfg.reset };
        let act = plan_activation_for(&facts(state), BlockSize::Exact(64 * 1024), UUID, &session)?;
        let thins = plan_thins(&cfg, &act, 0, 512, &origin(1))?;
        Ok((act, thins))
    }

    #[test]
    fn a_random_key_session_starts_a_new_encrypted_pool_every_boot() {
        let first = crypt_plan("cowroot.crypt=random", PoolState::Blank, 1).unwrap();
        assert_eq!(
            kinds(&first.0.steps),
            ["header0:format:seq1:txn0", "crypt:Meta", "zero:Meta", "crypt:Data", "pool"]
        );
        // Zeroing the plaintext metadata would be useless: it is done through the crypt layer.
        assert!(matches!(first.0.steps[0], Step::WriteHeader { zero_meta: false, .. }));
        let Step::CreateCrypt { key, offset, .. } = &first.0.steps[1] else { panic!() };
        assert_eq!((key, *offset), (&Key::fixed(1), first.1.header.header.meta.start));
        let h = &first.1.header.header;
        assert_eq!((first.1.mode, h.flags, h.active_thin, h.generation), (Mode::Formatted, FLAG_CRYPT_RANDOM, 1, 1));

        // The next boot: new keys, new metadata, the same extents; the header counts on.
        let second = crypt_plan("cowroot.crypt=random", after(&first), 3).unwrap();
        assert_eq!(kinds(&second.0.steps)[..2], ["header0:new session:seq5:txn0".to_string(), "crypt:Meta".into()]);
        let h = &second.1.header.header;
        assert_eq!(
            (second.1.mode, h.flags, h.active_thin, h.next_thin, h.generation),
            (Mode::Formatted, FLAG_CRYPT_RANDOM, 1, 2, 2)
        );
        assert_eq!((h.meta, h.data), (first.1.header.header.meta, first.1.header.header.data));

        // Without the key the pool is refused, unless a reset makes it plaintext again.
        let err = plan(&cfg(""), after(&second), &origin(1), None).unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "cowroot.crypt"), "{err}");
        let act =
            plan_activation_for(&facts(after(&second)), BlockSize::Auto, UUID, &Session { keys: None, reset: true })
                .unwrap();
        assert_eq!(kinds(&act.steps), ["header0:new session:seq9:txn0", "linear:Meta", "linear:Data", "pool"]);
        assert!(matches!(act.steps[0], Step::WriteHeader { zero_meta: true, ref header, .. } if header.flags == 0));
    }

    #[test]
    fn kept_plaintext_changes_are_not_discarded_for_a_random_key_without_a_reset() {
        let plain = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let err = crypt_plan("cowroot.crypt=random", after(&plain), 1).unwrap_err();
        assert!(err.to_string().contains("cowroot.reset=1"), "{err}");
        let crypt = crypt_plan("cowroot.crypt=random cowroot.reset=1", after(&plain), 1).unwrap();
        assert_eq!(crypt.1.header.header.flags, FLAG_CRYPT_RANDOM);
        // An unused plaintext pool needs no reset.
        let mut unused = plain.1.header.header.clone();
        unused.active_thin = 0;
        unused.origin = None;
        let state = PoolState::Ours { slot: 0, header: unused, other: OtherCopy::InSync };
        assert!(crypt_plan("cowroot.crypt=random", state, 1).is_ok());
    }

    fn thin_len(p: &(Activation, ThinPlan)) -> u64 {
        match p.1.steps.last() {
            Some(Step::CreateThin { len, .. }) => len.0,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_root_grown_by_size_stays_grown_while_its_changes_are_kept() {
        let origin_sectors = (64 << 20) / 512;
        let first = plan(&cfg("cowroot.size=256M"), PoolState::Blank, &origin(1), None).unwrap();
        assert_eq!(thin_len(&first), (256 << 20) / 512);
        assert_eq!(first.1.header.header.root_sectors, Sectors((256 << 20) / 512));
        // Dropping the key, or asking for less, never shrinks a kept root.
        for extra in ["", "cowroot.size=128M"] {
            let kept = plan(&cfg(extra), after(&first), &origin(1), None).unwrap();
            assert_eq!((kept.1.mode, thin_len(&kept)), (Mode::Kept, (256 << 20) / 512), "{extra}");
            assert_eq!(kinds(&kept.1.steps), ["thin 1"], "{extra}");
        }
        // Asking for more grows it, recorded first.
        let more = plan(&cfg("cowroot.size=1G"), after(&first), &origin(1), None).unwrap();
        assert_eq!(thin_len(&more), (1 << 30) / 512);
        assert_eq!(kinds(&more.1.steps)[0], "header0:grow the root:seq5:txnS+0");
        // A reset takes the size asked for now: none, the origin's.
        let reset = plan(&cfg("cowroot.reset=1"), after(&first), &origin(1), None).unwrap();
        assert_eq!((thin_len(&reset), reset.1.header.header.root_sectors), (origin_sectors, Sectors(0)));
        // Smaller than the origin is refused.
        let err = plan(&cfg("cowroot.size=32M"), PoolState::Blank, &origin(1), None).unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "cowroot.size"), "{err}");
    }

    #[test]
    fn frozen_boots_run_on_throwaway_snapshots_of_the_base() {
        let frozen = cfg("cowroot.mode=frozen");
        let first = plan(&frozen, PoolState::Blank, &origin(1), None).unwrap();
        assert_eq!(first.1.mode, Mode::Formatted);
        assert_eq!(
            kinds(&first.1.steps),
            [
                "header1:reserve thin id:seq2:txn0",
                "create_thin 1",
                "create_snap 2 1",
                "set_transaction_id 0 S+0",
                "header0:switch to new thin:seq3:txnS+0",
                "header1:mirror to the other copy:seq4:txnS+0",
                "thin 2",
            ]
        );
        let h = &first.1.header.header;
        assert_eq!((h.base_thin, h.active_thin, h.garbage_thin, h.garbage_thin2, h.generation), (1, 2, 0, 0, 1));

        // Each boot: a new snapshot of the base; the last one is left over.
        let second = plan(&frozen, after(&first), &origin(1), None).unwrap();
        assert_eq!(second.1.mode, Mode::Frozen);
        assert_eq!(kinds(&second.1.steps)[1..3], ["create_snap 3 1".to_string(), "set_transaction_id S+0 S+1".into()]);
        let h = &second.1.header.header;
        assert_eq!((h.base_thin, h.active_thin, h.garbage_thin, h.generation), (1, 3, 2, 1));
        // The next boot deletes that leftover first (when nothing after boot did).
        let third = plan(&frozen, after(&second), &origin(1), None).unwrap();
        assert_eq!(kinds(&third.1.steps)[0], "delete 2");

        // Maintenance (asked by `cowroot maintenance` or the key): the base itself.
        let mut asked = after(&second);
        if let PoolState::Ours { header, .. } = &mut asked {
            header.flags |= FLAG_MAINTENANCE_NEXT_BOOT;
        }
        let maint = plan(&frozen, asked, &origin(1), None).unwrap();
        assert_eq!(maint.1.mode, Mode::Maintenance);
        let h = &maint.1.header.header;
        assert_eq!((h.active_thin, h.base_thin, h.garbage_thin, h.flags & FLAG_MAINTENANCE_NEXT_BOOT), (1, 1, 3, 0));
        assert!(!kinds(&maint.1.steps).iter().any(|k| k.starts_with("create") || k.starts_with("set_transaction")));
        assert_eq!(kinds(&maint.1.steps).last().unwrap(), "thin 1");
        // A reset right after a maintenance boot: the base was the active thin.
        let reset = plan(&cfg("cowroot.mode=frozen cowroot.reset=1"), after(&maint), &origin(1), None).unwrap();
        let h = &reset.1.header.header;
        assert_eq!((h.base_thin, h.active_thin, h.garbage_thin, h.garbage_thin2), (4, 5, 1, 0));
        // Whatever happens in between, the boot after it is frozen again.
        let again = plan(&frozen, after(&maint), &origin(1), None).unwrap();
        assert_eq!(again.1.mode, Mode::Frozen);
        assert_eq!((again.1.header.header.active_thin, again.1.header.header.base_thin), (4, 1));
        assert!(
            plan(&cfg("cowroot.mode=frozen cowroot.maintenance=1"), after(&again), &origin(1), None).unwrap().1.mode
                == Mode::Maintenance
        );

        // A reset in frozen mode: a new base and a snapshot; both old thins go.
        let reset = plan(&cfg("cowroot.mode=frozen cowroot.reset=1"), after(&again), &origin(1), None).unwrap();
        let h = &reset.1.header.header;
        assert_eq!((h.base_thin, h.active_thin, h.garbage_thin, h.garbage_thin2, h.generation), (5, 6, 4, 1, 2));
        let cleanup = plan_cleanup(&reset.1.header, h.transaction, 6).unwrap();
        assert_eq!(kinds(&cleanup)[..2], ["delete 4".to_string(), "delete 1".into()]);

        // A persist pool turning frozen: its kept state becomes the base.
        let persist = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let turned = plan(&frozen, after(&persist), &origin(1), None).unwrap();
        let h = &turned.1.header.header;
        assert_eq!((turned.1.mode, h.base_thin, h.active_thin, h.garbage_thin), (Mode::Frozen, 1, 2, 0));
        // And back: the base is kept, the last session goes.
        let back = plan(&cfg(""), after(&turned), &origin(1), None).unwrap();
        let h = &back.1.header.header;
        assert_eq!((back.1.mode, h.base_thin, h.active_thin, h.garbage_thin), (Mode::Kept, 0, 1, 2));
        // A header left by a maintenance boot (its leftover above the base)
        // does not accept metadata one transaction ahead.
        let mut stale = after(&maint);
        if let PoolState::Ours { header, .. } = &mut stale {
            header.garbage_thin = 9;
            header.next_thin = 10;
        }
        let ahead = maint.1.header.header.transaction_after(maint.1.header.header.transaction);
        assert!(matches!(plan(&frozen, stale, &origin(1), ahead), Err(Error::HeaderMismatch { .. })));
    }

    #[test]
    fn a_power_cut_inside_a_frozen_reset_leaves_nothing_behind() {
        let frozen = cfg("cowroot.mode=frozen");
        let first = plan(&frozen, PoolState::Blank, &origin(1), None).unwrap();
        let reset = plan(&cfg("cowroot.mode=frozen cowroot.reset=1"), after(&first), &origin(1), None).unwrap();
        // Cut after the reservation and both creates, before the switch:
        // the metadata may be one transaction ahead.
        let reserved = reset.1.steps.iter().find_map(|s| match s {
            Step::WriteHeader { header, why: "reserve thin id", slot, .. } => Some((*slot, header.clone())),
            _ => None,
        });
        let (slot, header) = reserved.unwrap();
        assert_eq!((header.garbage_thin, header.garbage_thin2), (3, 4));
        let cut = PoolState::Ours { slot, header: header.clone(), other: OtherCopy::Stale };
        for txn in [header.transaction, header.transaction_after(header.transaction).unwrap()] {
            let next = plan(&frozen, cut.clone(), &origin(1), Some(txn)).unwrap();
            assert_eq!(kinds(&next.1.steps)[..2], ["delete 3".to_string(), "delete 4".into()], "txn {txn}");
            assert_eq!((next.1.header.header.base_thin, next.1.header.header.garbage_thin2), (1, 0));
        }
    }

    #[test]
    fn only_a_recorded_file_identity_skips_sampling() {
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let pool = after(&first);
        assert_eq!(recorded_origin(&pool, Some([1; 16])), origin(1).id);
        assert_eq!(recorded_origin(&pool, Some([2; 16])), None, "another file identity");
        assert_eq!(recorded_origin(&pool, None), None, "a device origin, or a host without stable identities");
        assert_eq!(recorded_origin(&PoolState::Blank, Some([1; 16])), None);
        let mut device = origin(1);
        device.file = None;
        let bare = plan(&cfg(""), PoolState::Blank, &device, None).unwrap();
        assert_eq!(recorded_origin(&after(&bare), None), None, "no identity recorded matches nothing");
    }

    #[test]
    fn a_leftover_does_not_widen_the_transaction_binding() {
        // After a reset the leftover is the old (lower) id; the metadata
        // one ahead of the header is then a mismatch, not an operation in
        // flight.
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let reset = plan(&cfg("cowroot.reset=1"), after(&first), &origin(1), None).unwrap();
        let h = &reset.1.header.header;
        assert_eq!((h.active_thin, h.garbage_thin), (2, 1));
        let ahead = h.transaction_after(h.transaction).unwrap();
        let err = plan(&cfg(""), after(&reset), &origin(1), Some(ahead)).unwrap_err();
        assert!(matches!(err, Error::HeaderMismatch { .. }), "{err}");
    }

    #[test]
    fn thin_length_is_whole_logical_blocks() {
        // A 2 KiB-multiple ISO on a 4Kn pool: rounded up, never down.
        let mut iso = origin(1);
        iso.size = Some(Bytes((64 << 20) + 2048));
        iso.device = DevRef::Path("/dev/vdb".into());
        let act = plan_activation(&facts(PoolState::Blank), BlockSize::Exact(64 * 1024), UUID).unwrap();
        let thins = plan_thins(&cfg(""), &act, 0, 4096, &iso).unwrap();
        assert_eq!(
            thins.steps.last(),
            Some(&Step::CreateThin { id: 1, len: Sectors(131080), origin: DevRef::Path("/dev/vdb".into()) })
        );
        let thins = plan_thins(&cfg(""), &act, 0, 512, &iso).unwrap();
        assert!(matches!(thins.steps.last(), Some(Step::CreateThin { len: Sectors(131076), .. })));
    }

    #[test]
    fn changed_origin_is_refused_until_reset() {
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let err = plan(&cfg(""), after(&first), &origin(2), None).unwrap_err();
        assert!(matches!(err, Error::OriginChanged { .. }));
        assert!(err.to_string().contains("cowroot.reset=1"), "{err}");
        let mut bigger = origin(1);
        bigger.id.as_mut().unwrap().size_bytes += 4096;
        let err = plan(&cfg(""), after(&first), &bigger, None).unwrap_err();
        assert!(err.to_string().contains("size was"), "{err}");
        let reset = plan(&cfg("cowroot.reset=1"), after(&first), &origin(2), None).unwrap();
        assert_eq!(reset.1.header.header.origin, origin(2).id);
        let kept = plan(&cfg(""), after(&reset), &origin(2), None).unwrap();
        assert_eq!(kept.1.mode, Mode::Kept);
    }

    /// The disk as power cuts leave it: both header slots, the metadata's
    /// transaction, the thins that exist.
    #[derive(Debug, Clone)]
    struct Disk {
        slots: [Option<PoolHeader>; 2],
        txn: u64,
        thins: Vec<u32>,
        /// What each thin holds: a write gives it a new value, a snapshot
        /// its origin's.
        content: std::collections::BTreeMap<u32, u64>,
        writes: u64,
    }

    impl Disk {
        fn after_first_boot() -> Disk {
            let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
            let mut disk =
                Disk { slots: [None, None], txn: 0, thins: Vec::new(), content: Default::default(), writes: 0 };
            disk.apply(&steps(&first), usize::MAX);
            disk
        }

        /// Runs the first `cut` steps (all of them for `usize::MAX`).
        fn apply(&mut self, all: &[Step], cut: usize) {
            for step in all.iter().take(cut) {
                match step {
                    Step::WriteHeader { slot, header, .. } => self.slots[*slot] = Some(header.clone()),
                    Step::SetTransactionId { from, to } => {
                        assert_eq!(*from, self.txn, "set_transaction_id from a wrong id fails in the kernel");
                        self.txn = *to;
                    }
                    Step::CreateThinId { id } => {
                        assert!(!self.thins.contains(id), "create_thin {id}: exists");
                        self.thins.push(*id);
                        self.content.insert(*id, 0);
                    }
                    Step::CreateSnapId { id, of } | Step::SnapshotLive { id, of } => {
                        assert!(!self.thins.contains(id), "create_snap {id}: exists");
                        assert!(self.thins.contains(of), "create_snap {id} {of}: no thin {of}");
                        self.thins.push(*id);
                        self.content.insert(*id, self.content[of]);
                    }
                    Step::DeleteThinId { id, .. } => {
                        self.thins.retain(|t| t != id);
                        self.content.remove(id);
                    }
                    _ => {}
                }
            }
        }

        /// The running root writes something new; returns what it holds.
        fn write(&mut self, thin: u32) -> u64 {
            self.writes += 1;
            self.content.insert(thin, self.writes);
            self.writes
        }

        /// The newest header and its state for the running system's plans.
        fn live(&self) -> (HeaderState, PoolHeader) {
            let PoolState::Ours { slot, header, .. } = self.state(None) else { panic!() };
            (HeaderState { device: "/dev/vdc".into(), slot: Some(slot), header: header.clone() }, header)
        }

        /// At rest: copies agree, nothing left over, metadata bound, and the
        /// thins are exactly those the header names.
        fn assert_at_rest(&self, what: &str) {
            let PoolState::Ours { header, other, .. } = self.state(None) else { panic!() };
            assert_eq!(other, OtherCopy::InSync, "{what}");
            assert_eq!((header.garbage_thin, header.garbage_thin2), (0, 0), "{what}");
            assert_eq!(header.transaction, self.txn, "{what}");
            assert!(header.checkpoints.iter().all(|c| !c.deleting), "{what}");
            let mut want: Vec<u32> = header.volumes.iter().map(|v| v.thin).collect();
            want.extend(header.checkpoints.iter().map(|c| c.thin));
            want.extend([header.active_thin, header.base_thin].into_iter().filter(|&t| t != 0));
            want.sort();
            want.dedup();
            let mut have = self.thins.clone();
            have.sort();
            assert_eq!(have, want, "{what}");
        }

        /// What the next boot reads, with one slot's copy `lost` (damaged).
        fn state(&self, lost: Option<usize>) -> PoolState {
            let slot_of = |i: usize| if lost == Some(i) { None } else { self.slots[i].clone() };
            let (a, b) = (slot_of(0), slot_of(1));
            let newest = match (&a, &b) {
                (Some(x), Some(y)) => usize::from(y.seq > x.seq),
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                (None, None) => panic!("no copy left"),
            };
            let header = [a.clone(), b.clone()][newest].clone().unwrap();
            let other = match [a, b][1 - newest].clone() {
                Some(o) if o.same_state(&header) => OtherCopy::InSync,
                Some(_) => OtherCopy::Stale,
                None if lost.is_some() => OtherCopy::Damaged(SlotFault::BadChecksum),
                None => OtherCopy::Stale,
            };
            PoolState::Ours { slot: newest, header, other }
        }

        /// `cowroot cleanup` on the running system, cut after `cut` steps.
        fn cleanup(&mut self, cut: usize) {
            let PoolState::Ours { slot, header, .. } = self.state(None) else { panic!() };
            let state = HeaderState { device: "/dev/vdc".into(), slot: Some(slot), header: header.clone() };
            let steps = plan_cleanup(&state, self.txn, header.active_thin).unwrap();
            self.apply(&steps, cut);
        }

        /// Boots (planning as cowroot would); returns the plan's steps.
        fn boot(&self, reset: bool, lost: Option<usize>) -> Result<Vec<Step>> {
            self.boot_with(if reset { "cowroot.reset=1" } else { "" }, lost)
        }

        /// Boots with these keys; every device it makes is on a thin that
        /// exists by then.
        fn boot_with(&self, keys: &str, lost: Option<usize>) -> Result<Vec<Step>> {
            let p = plan(&cfg(keys), self.state(lost), &origin(1), Some(self.txn))?;
            let mut after = self.clone();
            after.apply(&steps(&p), usize::MAX);
            let devices: Vec<u32> =
                p.1.steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::CreateThin { id, .. } | Step::CreateVolume { id, .. } => Some(*id),
                        _ => None,
                    })
                    .collect();
            for id in devices {
                assert!(after.thins.contains(&id), "a device on thin {id}, which does not exist ({:?})", after.thins);
            }
            Ok(steps(&p))
        }
    }

    #[test]
    fn power_cuts_anywhere_twice_over_still_boot_and_bind() {
        for reset_first in [true, false] {
            let start = Disk::after_first_boot();
            let first = start.boot(reset_first, None).unwrap();
            for cut in 0..=first.len() {
                let mut disk = start.clone();
                disk.apply(&first, cut);
                // The recovery boot, itself cut anywhere.
                let recovery = disk.boot(false, None).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                for cut2 in 0..=recovery.len() {
                    let mut twice = disk.clone();
                    twice.apply(&recovery, cut2);
                    let next = twice.boot(false, None).unwrap_or_else(|e| panic!("cuts {cut}, {cut2}: {e}"));
                    let mut done = twice.clone();
                    done.apply(&next, usize::MAX);
                    // At rest: copies agree, nothing left over, metadata bound.
                    let state = done.state(None);
                    let PoolState::Ours { header, other, .. } = &state else { panic!() };
                    assert_eq!(other, &OtherCopy::InSync, "cuts {cut}, {cut2}");
                    assert_eq!((header.garbage_thin, header.transaction), (0, done.txn), "cuts {cut}, {cut2}");
                    assert_eq!(done.thins, [header.active_thin], "cuts {cut}, {cut2}");
                }
            }
        }
    }

    const HOME: &str = "cowroot.volume=home:64M:/home";

    fn volume_ids(p: &(Activation, ThinPlan)) -> Vec<(String, u32, u64)> {
        p.1.steps
            .iter()
            .filter_map(|s| match s {
                Step::CreateVolume { volume, id, len } => Some((volume.to_string(), *id, len.0)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn persistent_volumes_are_made_once_and_outlive_resets_and_frozen_boots() {
        let first = plan(&cfg(HOME), PoolState::Blank, &origin(1), None).unwrap();
        assert_eq!(
            kinds(&steps(&first))[4..],
            [
                "header1:reserve thin id for a volume:seq2:txn0",
                "create_thin 1",
                "set_transaction_id 0 S+0",
                "header0:record a new volume:seq3:txnS+0",
                "header1:reserve thin id:seq4:txnS+0",
                "create_thin 2",
                "set_transaction_id S+0 S+1",
                "header0:switch to new thin:seq5:txnS+1",
                "header1:mirror to the other copy:seq6:txnS+1",
                "thin 2",
                "CreateVolume { volume: \"home\", id: 1, len: Sectors(131072) }",
            ]
        );
        let home = vec![("home".to_string(), 1, 131072)];
        assert_eq!(volume_ids(&first), home);
        assert!(!first.1.header.header.volumes[0].formatted);
        let mut last = first;
        for keys in [
            "",
            "cowroot.reset=1",
            "cowroot.mode=volatile",
            "cowroot.mode=frozen",
            "cowroot.mode=frozen",
            "cowroot.mode=frozen cowroot.maintenance=1",
            "cowroot.mode=frozen cowroot.reset=1",
            "cowroot.onchange=reset",
        ] {
            let origin = if keys.contains("onchange") { origin(2) } else { origin(1) };
            let next = plan(&cfg(&format!("{HOME} {keys}")), after(&last), &origin, None).unwrap();
            assert_eq!(volume_ids(&next), home, "{keys}");
            let deleted: Vec<Step> =
                steps(&next).into_iter().filter(|s| matches!(s, Step::DeleteThinId { id: 1, .. })).collect();
            assert!(deleted.is_empty(), "{keys}: {deleted:?}");
            assert!(![next.1.header.header.garbage_thin, next.1.header.header.garbage_thin2].contains(&1), "{keys}");
            last = next;
        }
        // Without the key the volume stays recorded, untouched and inactive.
        let without = plan(&cfg(""), after(&last), &origin(2), None).unwrap();
        assert_eq!(volume_ids(&without), []);
        assert_eq!(without.1.header.header.volumes.len(), 1);
        // A larger size grows it; a smaller one does not shrink it.
        let grown = plan(&cfg("cowroot.volume=home:128M:/home"), after(&without), &origin(2), None).unwrap();
        assert_eq!(volume_ids(&grown), [("home".to_string(), 1, 262144)]);
        let kept = plan(&cfg(HOME), after(&grown), &origin(2), None).unwrap();
        assert_eq!(volume_ids(&kept), [("home".to_string(), 1, 262144)]);
        // A second volume gets the next id.
        let two =
            plan(&cfg(&format!("{HOME} cowroot.volume=log:32M:/var/log")), after(&kept), &origin(2), None).unwrap();
        assert_eq!(volume_ids(&two)[1].0, "log");
        assert_eq!(two.1.header.header.volumes.len(), 2);
        // A random-key session would discard them: refused, even with a reset.
        let act = plan_activation_for(
            &facts(after(&two)),
            BlockSize::Auto,
            UUID,
            &Session { keys: Some(SessionKeys { meta: Key::fixed(1), data: Key::fixed(2) }), reset: true },
        );
        let err = act.unwrap_err().to_string();
        assert!(err.starts_with("cowroot.crypt:") && err.contains("home, log"), "{err}");
    }

    #[test]
    fn power_cuts_anywhere_in_frozen_boots_and_volume_creation_lose_nothing() {
        let boots = [
            HOME.to_string(),
            format!("{HOME} cowroot.mode=frozen"),
            format!("{HOME} cowroot.mode=frozen cowroot.volume=log:32M:/var/log"),
            format!("{HOME} cowroot.mode=frozen cowroot.maintenance=1"),
            format!("{HOME} cowroot.mode=frozen cowroot.reset=1"),
            format!("{HOME} cowroot.reset=1"),
        ];
        let mut start = Disk::after_first_boot();
        for keys in &boots {
            let first = start.boot_with(keys, None).unwrap();
            for cut in 0..=first.len() {
                let mut disk = start.clone();
                disk.apply(&first, cut);
                let recovery = disk.boot_with(keys, None).unwrap_or_else(|e| panic!("{keys}: cut {cut}: {e}"));
                for cut2 in 0..=recovery.len() {
                    let mut twice = disk.clone();
                    twice.apply(&recovery, cut2);
                    let next =
                        twice.boot_with(keys, None).unwrap_or_else(|e| panic!("{keys}: cuts {cut}, {cut2}: {e}"));
                    let mut done = twice.clone();
                    done.apply(&next, usize::MAX);
                    done.cleanup(usize::MAX);
                    let PoolState::Ours { header, other, .. } = done.state(None) else { panic!() };
                    assert_eq!(other, OtherCopy::InSync, "{keys}: cuts {cut}, {cut2}");
                    assert_eq!((header.garbage_thin, header.garbage_thin2), (0, 0), "{keys}: cuts {cut}, {cut2}");
                    assert_eq!(header.transaction, done.txn, "{keys}: cuts {cut}, {cut2}");
                    let mut want: Vec<u32> = header.volumes.iter().map(|v| v.thin).collect();
                    want.extend([header.active_thin, header.base_thin].into_iter().filter(|&t| t != 0));
                    want.sort();
                    want.dedup();
                    let mut have = done.thins.clone();
                    have.sort();
                    assert_eq!(have, want, "{keys}: cuts {cut}, {cut2}");
                    // A volume, once recorded, keeps its thin.
                    let PoolState::Ours { header: before, .. } = start.state(None) else { panic!() };
                    for v in &before.volumes {
                        assert!(header.volumes.contains(v), "{keys}: cuts {cut}, {cut2}: {v:?} lost");
                    }
                }
            }
            start.apply(&first, usize::MAX);
        }
        let PoolState::Ours { header, .. } = start.state(None) else { panic!() };
        assert_eq!(header.volumes.len(), 2);
    }

    #[test]
    fn deleting_a_volume_survives_power_cuts_and_frees_only_its_thin() {
        let mut start = Disk::after_first_boot();
        let keys = format!("{HOME} cowroot.volume=log:32M:/var/log");
        let first = start.boot_with(&keys, None).unwrap();
        start.apply(&first, usize::MAX);
        let home = VolumeName::parse("home").unwrap();
        let PoolState::Ours { slot, header, .. } = start.state(None) else { panic!() };
        let state = HeaderState { device: "/dev/vdc".into(), slot: Some(slot), header: header.clone() };
        let steps = plan_volume_delete(&state, start.txn, home, header.active_thin).unwrap();
        let home_thin = header.volumes[0].thin;
        for cut in 0..=steps.len() {
            let mut disk = start.clone();
            disk.apply(&steps, cut);
            // The next boot (without the key) finishes the job.
            let next =
                disk.boot_with("cowroot.volume=log:32M:/var/log", None).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            disk.apply(&next, usize::MAX);
            let PoolState::Ours { header: after, other, .. } = disk.state(None) else { panic!() };
            assert_eq!(other, OtherCopy::InSync, "cut {cut}");
            let names: Vec<String> = after.volumes.iter().map(|v| v.name.to_string()).collect();
            if cut == 0 {
                assert_eq!(names, ["home", "log"], "cut {cut}");
                continue;
            }
            assert_eq!(names, ["log"], "cut {cut}");
            assert!(!disk.thins.contains(&home_thin), "cut {cut}: thin {home_thin} still there");
            let mut want = vec![after.active_thin, after.volumes[0].thin];
            want.sort();
            let mut have = disk.thins.clone();
            have.sort();
            assert_eq!(have, want, "cut {cut}");
        }
        // Unknown names and pending leftovers are refused, nothing planned.
        let err = plan_volume_delete(&state, start.txn, VolumeName::parse("srv").unwrap(), 1).unwrap_err();
        assert!(err.to_string().contains("holds no volume srv"), "{err}");
        let err = plan_volume_delete(&state, start.txn, home, home_thin).unwrap_err();
        assert!(err.to_string().contains("also the root"), "{err}");
        let mut pending = state.clone();
        pending.header.garbage_thin = 99;
        let err = plan_volume_delete(&pending, start.txn, home, 1).unwrap_err();
        assert!(err.to_string().contains("cowroot cleanup"), "{err}");
    }

    #[test]
    fn power_cuts_anywhere_in_a_cleanup_lose_nothing() {
        let mut start = Disk::after_first_boot();
        let reset = start.boot(true, None).unwrap();
        start.apply(&reset, usize::MAX);
        assert_eq!(start.thins, [1, 2], "the reset boot left thin 1 for the cleanup");
        for cut in 0..=3 {
            let mut disk = start.clone();
            disk.cleanup(cut);
            // Run again (or not), then boot: one thin, nothing left over.
            let mut again = disk.clone();
            again.cleanup(usize::MAX);
            for mut d in [disk, again] {
                let next = d.boot(false, None).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                d.apply(&next, usize::MAX);
                let PoolState::Ours { header, other, .. } = d.state(None) else { panic!() };
                assert_eq!((header.garbage_thin, header.active_thin, other), (0, 2, OtherCopy::InSync), "cut {cut}");
                assert_eq!(d.thins, [2], "cut {cut}");
            }
        }
    }

    #[test]
    fn at_rest_either_copy_alone_boots_the_same_thin() {
        let mut disk = Disk::after_first_boot();
        for reset in [false, true, false] {
            let s = disk.boot(reset, None).unwrap();
            disk.apply(&s, usize::MAX);
            disk.cleanup(usize::MAX);
            let PoolState::Ours { header, .. } = disk.state(None) else { panic!() };
            for lost in [0, 1] {
                let next = disk.boot(false, Some(lost)).unwrap();
                let Some(Step::CreateThin { id, .. }) = next.last() else { panic!() };
                assert_eq!(*id, header.active_thin, "copy {lost} lost");
                assert!(!next.iter().any(|s| matches!(s, Step::DeleteThinId { .. })), "copy {lost} lost: {next:?}");
                // And the lost copy is rewritten.
                assert!(next.iter().any(|s| matches!(s, Step::WriteHeader { slot, .. } if *slot == lost)));
            }
        }
    }

    #[test]
    fn a_stale_copy_left_by_a_cut_or_by_0_1_is_brought_up_to_date() {
        // Cut right before the mirror write of a first boot.
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let all = steps(&first);
        let mirror = all
            .iter()
            .position(|s| matches!(s, Step::WriteHeader { why, .. } if *why == "mirror to the other copy"))
            .unwrap();
        let mut disk = Disk { slots: [None, None], txn: 0, thins: Vec::new(), content: Default::default(), writes: 0 };
        disk.apply(&all, mirror);
        assert!(matches!(disk.state(None), PoolState::Ours { other: OtherCopy::Stale, .. }));
        let next = disk.boot(false, None).unwrap();
        assert_eq!(kinds(&next)[3], "header1:bring the older copy up to date:seq4:txnS+0");
        disk.apply(&next, usize::MAX);
        assert!(matches!(disk.state(None), PoolState::Ours { other: OtherCopy::InSync, .. }));
    }

    #[test]
    fn a_header_that_does_not_match_its_metadata_is_refused() {
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let bound = first.1.header.header.transaction;
        // An older header restored over newer metadata, a header copied from
        // another pool, metadata one ahead with nothing in flight.
        for metadata in [0, 7, bound + 1, bound + 2] {
            let err = plan(&cfg(""), after(&first), &origin(1), Some(metadata)).unwrap_err();
            assert!(matches!(err, Error::HeaderMismatch { .. }), "{metadata}: {err}");
            assert!(err.to_string().contains(&format!("transaction {bound}")), "{err}");
        }
        // Nothing is written before the binding is checked.
        let PoolState::Ours { slot, header, .. } = after(&first) else { panic!() };
        let damaged = PoolState::Ours { slot, header, other: OtherCopy::Damaged(SlotFault::BadChecksum) };
        let act = plan_activation(&facts(damaged), BlockSize::Auto, UUID).unwrap();
        assert!(!act.steps.iter().any(|s| matches!(s, Step::WriteHeader { .. })));
        assert!(plan_thins(&cfg(""), &act, 7, 512, &origin(1)).is_err());
    }

    #[test]
    fn refused_pools_name_what_they_hold() {
        let err = plan(&cfg(""), PoolState::Foreign("an ext2/3/4 filesystem"), &origin(1), None).unwrap_err();
        assert!(err.to_string().contains("/dev/vdc holds an ext2/3/4 filesystem"), "{err}");
        let err = plan(&cfg(""), PoolState::Unrecognised, &origin(1), None).unwrap_err();
        assert!(matches!(err, Error::NotAPool { .. }));
        let err = plan(&cfg(""), PoolState::NewerVersion(7), &origin(1), None).unwrap_err();
        assert!(err.to_string().contains("header version 7"), "{err}");
        // A pool header claiming more sectors than the device has.
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let mut small = facts(after(&first));
        small.size = Bytes(128 << 20);
        assert!(matches!(plan_activation(&small, BlockSize::Auto, UUID), Err(Error::Inconsistent(_))));
        // Metadata in use that reads blank.
        let mut blank = facts(after(&first));
        blank.metadata_blank = true;
        assert!(matches!(plan_activation(&blank, BlockSize::Auto, UUID), Err(Error::MetadataBlank { .. })));
    }

    #[test]
    fn exhausted_thin_ids_are_an_error_not_a_wrap() {
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let PoolState::Ours { slot, mut header, .. } = after(&first) else { panic!() };
        header.next_thin = MAX_THIN_ID + 1;
        let state = PoolState::Ours { slot, header, other: OtherCopy::InSync };
        let err = plan(&cfg("cowroot.reset=1"), state, &origin(1), None).unwrap_err();
        assert!(err.to_string().contains("thin ids"), "{err}");
    }

    #[test]
    fn reset_flag_in_header_acts_like_reset() {
        let first = plan(&cfg(""), PoolState::Blank, &origin(1), None).unwrap();
        let PoolState::Ours { slot, mut header, .. } = after(&first) else { panic!() };
        header.flags |= FLAG_RESET_NEXT_BOOT;
        let p = plan(&cfg(""), PoolState::Ours { slot, header, other: OtherCopy::InSync }, &origin(1), None).unwrap();
        assert_eq!(p.1.mode, Mode::Reset);
        assert_eq!(p.1.header.header.flags & FLAG_RESET_NEXT_BOOT, 0);
    }
    fn ckpt(name: &str) -> crate::checkpoint::CheckpointName {
        crate::checkpoint::parse_name(name).unwrap()
    }

    /// Boots with `keys`, runs the cleanup the booted system runs.
    fn boot_and_clean(disk: &mut Disk, keys: &str) {
        let s = disk.boot_with(keys, None).unwrap_or_else(|e| panic!("{keys}: {e}"));
        disk.apply(&s, usize::MAX);
        disk.cleanup(usize::MAX);
    }

    #[test]
    fn a_checkpoint_survives_power_cuts_and_a_rollback_brings_back_its_content() {
        use crate::checkpoint_plan::{plan_checkpoint_create, plan_rollback};
        let mut start = Disk::after_first_boot();
        let (_, h) = start.live();
        let root = h.active_thin;
        let taken = start.write(root);
        let (state, _) = start.live();
        let create = plan_checkpoint_create(&state, start.txn, root, ckpt("a"), 100).unwrap();
        assert!(create.iter().any(|s| matches!(s, Step::SnapshotLive { of, .. } if *of == root)), "{create:?}");
        for cut in 0..=create.len() {
            let mut disk = start.clone();
            disk.apply(&create, cut);
            boot_and_clean(&mut disk, "");
            disk.assert_at_rest(&format!("create cut {cut}"));
            let (_, h) = disk.live();
            assert_eq!(disk.content[&h.active_thin], taken, "create cut {cut}: the root lost its content");
            if let Some(c) = h.checkpoints.first() {
                assert_eq!((c.name, disk.content[&c.thin], c.created), (ckpt("a"), taken, 100), "create cut {cut}");
            }
        }
        start.apply(&create, usize::MAX);
        let later = start.write(root);
        let (state, _) = start.live();
        let rollback = plan_rollback(&state, start.txn, root, ckpt("a"), true, 200).unwrap();
        assert_eq!(rollback.kept_as, Some(ckpt("rollback-g1")));
        for cut in 0..=rollback.steps.len() {
            let mut disk = start.clone();
            disk.apply(&rollback.steps, cut);
            // The running root goes on writing into what it runs on.
            let last = disk.write(root);
            boot_and_clean(&mut disk, "");
            disk.assert_at_rest(&format!("rollback cut {cut}"));
            let (_, h) = disk.live();
            let names: Vec<&str> = h.checkpoints.iter().map(|c| c.name.as_str()).collect();
            if names == ["a", "rollback-g1"] {
                assert_eq!(disk.content[&h.active_thin], taken, "rollback cut {cut}: not the checkpoint's content");
                assert_eq!(disk.content[&h.checkpoints[1].thin], last, "rollback cut {cut}: the kept state lost");
                assert_eq!(h.generation, 2, "rollback cut {cut}");
            } else {
                assert_eq!(names, ["a"], "rollback cut {cut}");
                assert_eq!(disk.content[&h.active_thin], last, "rollback cut {cut}: the root lost its content");
            }
            assert_eq!(disk.content[&h.checkpoints[0].thin], taken, "rollback cut {cut}: checkpoint a changed");
        }
        assert_ne!(later, taken);
    }

    #[test]
    fn a_rollback_that_discards_leaves_the_running_root_to_the_next_boot() {
        use crate::checkpoint_plan::{plan_checkpoint_create, plan_rollback};
        let mut disk = Disk::after_first_boot();
        let (state, h) = disk.live();
        let root = h.active_thin;
        let taken = disk.write(root);
        disk.apply(&plan_checkpoint_create(&state, disk.txn, root, ckpt("a"), 1).unwrap(), usize::MAX);
        disk.write(root);
        let (state, _) = disk.live();
        let rollback = plan_rollback(&state, disk.txn, root, ckpt("a"), false, 2).unwrap();
        assert_eq!(rollback.kept_as, None);
        disk.apply(&rollback.steps, usize::MAX);
        // The cleanup of this boot must not delete the root it runs on,
        // and the other commands still work meanwhile.
        let (state, h) = disk.live();
        assert_eq!((h.garbage_thin, h.checkpoints[1].thin, h.checkpoints[1].deleting), (0, root, true));
        assert!(plan_cleanup(&state, disk.txn, root).unwrap().is_empty());
        let more = crate::checkpoint_plan::plan_checkpoint_create(&state, disk.txn, root, ckpt("b"), 3).unwrap();
        disk.apply(&more, usize::MAX);
        // Deleting another checkpoint leaves the discarded root alone (the
        // kernel would refuse to delete an open thin, half way through).
        let (state, _) = disk.live();
        let delete_b = crate::checkpoint_plan::plan_checkpoint_delete(&state, disk.txn, root, ckpt("b")).unwrap();
        assert!(!delete_b.iter().any(|s| matches!(s, Step::DeleteThinId { id, .. } if *id == root)), "{delete_b:?}");
        disk.apply(&delete_b, usize::MAX);
        let (_, h) = disk.live();
        assert!(h.checkpoints.iter().any(|c| c.thin == root && c.deleting), "the discarded root waits for the boot");
        assert!(!h.checkpoints.iter().any(|c| c.name == ckpt("b")));
        boot_and_clean(&mut disk, "");
        disk.assert_at_rest("after the boot");
        let (_, h) = disk.live();
        assert!(!disk.thins.contains(&root));
        assert_eq!(disk.content[&h.active_thin], taken);
        // A second rollback in one boot drops the first one's snapshot.
        let (state, h) = disk.live();
        let now_root = h.active_thin;
        disk.write(now_root);
        disk.apply(&plan_rollback(&state, disk.txn, now_root, ckpt("a"), true, 3).unwrap().steps, usize::MAX);
        let (state, h) = disk.live();
        let again = plan_rollback(&state, disk.txn, now_root, ckpt("rollback-g2"), true, 4).unwrap();
        assert_eq!(again.kept_as, None, "an untouched snapshot is not kept");
        disk.apply(&again.steps, usize::MAX);
        boot_and_clean(&mut disk, "");
        disk.assert_at_rest("after two rollbacks");
        let (_, after) = disk.live();
        let kept = h.checkpoints.iter().find(|c| c.name == ckpt("rollback-g2")).unwrap();
        assert_eq!(disk.content[&after.active_thin], disk.content[&kept.thin]);
    }

    #[test]
    fn checkpoint_commands_refuse_what_they_cannot_do_and_plan_nothing() {
        use crate::checkpoint_plan::{plan_checkpoint_create, plan_checkpoint_delete, plan_rollback};
        let mut disk = Disk::after_first_boot();
        let (state, h) = disk.live();
        let root = h.active_thin;
        disk.apply(&plan_checkpoint_create(&state, disk.txn, root, ckpt("a"), 1).unwrap(), usize::MAX);
        let (state, _) = disk.live();
        let err = plan_checkpoint_create(&state, disk.txn, root, ckpt("a"), 2).unwrap_err().to_string();
        assert!(err.contains("already has a checkpoint a"), "{err}");
        let err = plan_rollback(&state, disk.txn, root, ckpt("b"), true, 2).unwrap_err().to_string();
        assert!(err.contains("no checkpoint b") && err.contains("checkpoint list"), "{err}");
        let err = plan_checkpoint_delete(&state, disk.txn, root, ckpt("b")).unwrap_err().to_string();
        assert!(err.contains("no checkpoint b"), "{err}");
        // Another image since: no rollback onto it.
        let mut other = state.clone();
        other.header.origin = origin(2).id;
        let err = plan_rollback(&other, disk.txn, root, ckpt("a"), true, 2).unwrap_err().to_string();
        assert!(err.contains("another image"), "{err}");
        // A leftover waits: cleanup first.
        let mut pending = state.clone();
        pending.header.garbage_thin = 99;
        let err = plan_rollback(&pending, disk.txn, root, ckpt("a"), true, 2).unwrap_err().to_string();
        assert!(err.contains("cowroot cleanup"), "{err}");
        // Unbound metadata: nothing done.
        let err = plan_checkpoint_create(&state, disk.txn + 5, root, ckpt("c"), 2).unwrap_err();
        assert!(matches!(err, Error::HeaderMismatch { .. }), "{err}");
        // A full table.
        let mut full = state.clone();
        for i in 1..MAX_CHECKPOINTS {
            let mut c = full.header.checkpoints[0];
            c.name = ckpt(&format!("c{i}"));
            c.thin = 100 + i as u32;
            full.header.checkpoints.push(c);
        }
        full.header.next_thin = 200;
        let err = plan_checkpoint_create(&full, disk.txn, root, ckpt("z"), 2).unwrap_err().to_string();
        assert!(err.contains("24 checkpoints"), "{err}");
    }

    #[test]
    fn deleting_a_checkpoint_survives_power_cuts() {
        use crate::checkpoint_plan::{plan_checkpoint_create, plan_checkpoint_delete};
        let mut start = Disk::after_first_boot();
        let (state, h) = start.live();
        let root = h.active_thin;
        start.apply(&plan_checkpoint_create(&state, start.txn, root, ckpt("a"), 1).unwrap(), usize::MAX);
        let (state, _) = start.live();
        start.apply(&plan_checkpoint_create(&state, start.txn, root, ckpt("b"), 2).unwrap(), usize::MAX);
        let (state, h) = start.live();
        let a = h.checkpoints[0].thin;
        let delete = plan_checkpoint_delete(&state, start.txn, root, ckpt("a")).unwrap();
        for cut in 0..=delete.len() {
            let mut disk = start.clone();
            disk.apply(&delete, cut);
            boot_and_clean(&mut disk, "");
            disk.assert_at_rest(&format!("delete cut {cut}"));
            let (_, h) = disk.live();
            let names: Vec<&str> = h.checkpoints.iter().map(|c| c.name.as_str()).collect();
            // Once marked it is gone for good; before, it is all there.
            if cut >= 1 {
                assert_eq!(names, ["b"], "delete cut {cut}");
                assert!(!disk.thins.contains(&a), "delete cut {cut}");
            } else {
                assert_eq!(names, ["a", "b"], "delete cut {cut}");
            }
        }
    }

    #[test]
    fn keep_n_keeps_what_resets_replace_and_drops_the_oldest() {
        for frozen in ["", "cowroot.mode=frozen"] {
            let keys = format!("cowroot.reset=1 cowroot.keep=2 {frozen}");
            let mut disk = Disk::after_first_boot();
            boot_and_clean(&mut disk, frozen);
            let mut states = Vec::new();
            for _ in 0..4 {
                let (_, h) = disk.live();
                // What the reset replaces: the root, or the frozen base.
                let kept = if h.base_thin != 0 { h.base_thin } else { h.active_thin };
                states.push(disk.write(kept));
                boot_and_clean(&mut disk, &keys);
                disk.assert_at_rest(&keys);
            }
            let (_, h) = disk.live();
            let kept: Vec<(&str, CheckpointKind, u64)> =
                h.checkpoints.iter().map(|c| (c.name.as_str(), c.kind, disk.content[&c.thin])).collect();
            let g = h.generation;
            assert_eq!(
                kept,
                [
                    (format!("reset-g{}", g - 2).as_str(), CheckpointKind::Reset, states[2]),
                    (format!("reset-g{}", g - 1).as_str(), CheckpointKind::Reset, states[3])
                ],
                "{keys}"
            );
            // A reset without the key keeps none, and drops none.
            boot_and_clean(&mut disk, &format!("cowroot.reset=1 {frozen}"));
            disk.assert_at_rest(frozen);
            assert_eq!(disk.live().1.checkpoints.len(), 2, "{frozen}");
            // A lower N trims at the next reset that keeps.
            boot_and_clean(&mut disk, &format!("cowroot.reset=1 cowroot.keep=1 {frozen}"));
            disk.assert_at_rest(frozen);
            let names: Vec<String> = disk.live().1.checkpoints.iter().map(|c| c.name.to_string()).collect();
            assert_eq!(names, [format!("reset-g{}", g + 1)], "{frozen}");
        }
    }

    #[test]
    fn power_cuts_anywhere_in_a_reset_that_keeps_lose_nothing() {
        for keys in ["cowroot.reset=1 cowroot.keep=1", "cowroot.mode=frozen cowroot.reset=1 cowroot.keep=1"] {
            let mut start = Disk::after_first_boot();
            for _ in 0..2 {
                let s = start.boot_with(keys, None).unwrap();
                start.apply(&s, usize::MAX);
            }
            let first = start.boot_with(keys, None).unwrap();
            for cut in 0..=first.len() {
                let mut disk = start.clone();
                disk.apply(&first, cut);
                let recovery = disk.boot_with("", None).unwrap_or_else(|e| panic!("{keys}: cut {cut}: {e}"));
                disk.apply(&recovery, usize::MAX);
                disk.cleanup(usize::MAX);
                disk.assert_at_rest(&format!("{keys}: cut {cut}"));
                assert!(disk.live().1.checkpoints.len() <= 1, "{keys}: cut {cut}");
            }
        }
    }

    #[test]
    fn a_full_checkpoint_table_evicts_the_oldest_reset_state() {
        use crate::checkpoint_plan::plan_checkpoint_create;
        let mut disk = Disk::after_first_boot();
        boot_and_clean(&mut disk, "cowroot.reset=1 cowroot.keep=2");
        boot_and_clean(&mut disk, "cowroot.reset=1 cowroot.keep=2");
        let oldest = disk.live().1.checkpoints[0].thin;
        for i in 0..MAX_CHECKPOINTS - 1 {
            let (state, h) = disk.live();
            let steps = plan_checkpoint_create(&state, disk.txn, h.active_thin, ckpt(&format!("m{i}")), 1);
            match steps {
                Ok(steps) => disk.apply(&steps, usize::MAX),
                Err(e) => assert!(e.to_string().contains("24 checkpoints"), "{e}"),
            }
        }
        assert_eq!(disk.live().1.checkpoints.len(), MAX_CHECKPOINTS);
        boot_and_clean(&mut disk, "cowroot.reset=1 cowroot.keep=2");
        disk.assert_at_rest("evicted");
        let (_, h) = disk.live();
        assert_eq!(h.checkpoints.len(), MAX_CHECKPOINTS);
        assert!(!h.checkpoints.iter().any(|c| c.thin == oldest), "the oldest reset state stays");
    }
}
