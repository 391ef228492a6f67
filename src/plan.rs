//! The boot plan: config + probed facts in, an ordered list of steps out.
//! Pure, so every path (first boot, reuse, reset, changed origin, crash
//! leftovers) is unit-tested, and `--dry-run` is simply the plan printed as
//! the commands a person would type.

use crate::config::{Config, DevSpec, Source};
use crate::error::{Error, Result};
use crate::fingerprint::short_digest;
use crate::header::{self, OriginId, PoolHeader, FLAG_RESET_NEXT_BOOT};
use crate::layout::Layout;
use crate::names::{DeviceName, Role};
use crate::signature;
use crate::units::{Bytes, Sectors};
use std::fmt::Write as _;

/// Where the image host filesystem is mounted (under /run, so it survives
/// switch-root and stays visible to the booted system).
pub const HOST_MOUNT: &str = "/run/cowroot/host";

/// A device a step refers to; resolved to MAJ:MIN by the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevRef {
    /// A block device by path, e.g. the resolved pool device.
    Path(String),
    /// The loop device attached by `AttachLoop`.
    Loop,
    /// One of our dm devices.
    Dm(Role),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    MountHost {
        device: String,
        fstype: Option<String>,
    },
    /// Sets a device read-only at the block layer (BLKROSET), before
    /// anything mounts or reads it: the image host and a device origin.
    /// A read-only mount alone still writes (journal replay, ext4 orphan
    /// cleanup, btrfs log replay); a read-only device makes the kernel skip
    /// or refuse all of that.
    SetReadOnly {
        device: String,
    },
    AttachLoop {
        file: String,
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
    /// Deletes a thin id; `missing_ok` for cleaning up crash leftovers.
    DeleteThinId {
        id: u32,
        missing_ok: bool,
    },
    CreateThin {
        id: u32,
        len: Sectors,
        origin: DevRef,
    },
    /// The `onfail=ro` fallback: the origin as a read-only linear device.
    CreateReadOnly {
        len: Sectors,
        origin: DevRef,
    },
}

/// What the pool device holds, as probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// The first MiB is all zeros: cowroot may format it.
    Blank,
    Ours {
        slot: usize,
        header: PoolHeader,
    },
    Foreign(&'static str),
    /// Not zero, not ours, nothing recognised: still refused at boot.
    Unrecognised,
}

/// Classifies a pool device from its first MiB. A valid header counts only
/// if nothing else is there: cowroot zeroes the whole region when it
/// formats, so other data next to a header means the device was reused
/// (repartitioned, mkfs'd) and the header is a leftover.
pub fn classify_pool(start: &[u8]) -> PoolState {
    let slot = |i: usize| {
        let offset = header::SLOT_OFFSETS[i] as usize;
        start.get(offset..offset + header::SLOT_BYTES).unwrap_or(&[])
    };
    // Everything but the encoded bodies of valid copies must be zero.
    let mut rest = start.to_vec();
    for (i, offset) in header::SLOT_OFFSETS.iter().enumerate() {
        if PoolHeader::decode(slot(i)).is_ok() {
            let offset = *offset as usize;
            rest[offset..offset + header::ENCODED_LEN].fill(0);
        }
    }
    let found = signature::detect(&rest);
    match header::newest([slot(0), slot(1)]) {
        Some((slot, header)) if signature::all_zero(&rest) => PoolState::Ours { slot, header },
        Some(_) => PoolState::Foreign(found.unwrap_or("data next to a stale cowroot header")),
        None if signature::all_zero(start) => PoolState::Blank,
        None => match signature::detect(start) {
            Some("a cowroot pool") => PoolState::Foreign("a damaged cowroot header (no valid copy)"),
            Some(found) => PoolState::Foreign(found),
            None => PoolState::Unrecognised,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFacts {
    pub device: String,
    pub size: Bytes,
    pub state: PoolState,
}

/// The origin as probed; in a dry run of an image file nothing is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginFacts {
    pub device: DevRef,
    pub size: Option<Bytes>,
    pub id: Option<OriginId>,
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
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Formatted => "formatted",
            Mode::FirstUse => "first use",
            Mode::Kept => "kept",
            Mode::Reset => "reset",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    pub steps: Vec<Step>,
    pub mode: Mode,
    /// The header as it stands after the plan ran, and the slot it is in.
    pub header: PoolHeader,
    pub header_slot: Option<usize>,
}

/// Mounting the image host and attaching the image (if the origin is a file).
pub fn plan_origin(cfg: &Config, host_device: Option<&str>, origin_device: Option<&str>) -> Vec<Step> {
    if let (Source::Device(_), Some(device)) = (&cfg.source, origin_device) {
        return vec![Step::SetReadOnly { device: device.to_string() }];
    }
    match (&cfg.source, host_device) {
        (Source::File(path), Some(device)) => vec![
            Step::SetReadOnly { device: device.to_string() },
            Step::MountHost { device: device.to_string(), fstype: cfg.host_fstype.clone() },
            Step::AttachLoop { file: format!("{HOST_MOUNT}{path}") },
        ],
        _ => Vec::new(),
    }
}

/// A fresh header for a device of `size` laid out as `layout`.
pub fn new_header(size: Bytes, layout: &Layout, pool_uuid: [u8; 16]) -> PoolHeader {
    PoolHeader {
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
    }
}

/// Appends header writes, alternating slots and counting `seq` up.
struct HeaderWriter<'a> {
    device: &'a str,
    slot: Option<usize>,
    header: PoolHeader,
}

impl HeaderWriter<'_> {
    fn write(
        &mut self,
        steps: &mut Vec<Step>,
        zero_meta: bool,
        why: &'static str,
        change: impl FnOnce(&mut PoolHeader),
    ) {
        change(&mut self.header);
        let slot = header::slot_for_next_write(self.slot);
        if self.slot.is_some() {
            self.header.seq += 1;
        }
        self.slot = Some(slot);
        steps.push(Step::WriteHeader {
            device: self.device.to_string(),
            slot,
            header: self.header.clone(),
            zero_meta,
            why,
        });
    }
}

/// Plans the pool side. `format_layout` is the layout to format a blank
/// device with (computed by the caller from its size and block size), and
/// `pool_uuid` the random id to give a newly formatted pool.
pub fn plan_pool(
    cfg: &Config,
    pool: &PoolFacts,
    origin: &OriginFacts,
    format_layout: Option<Layout>,
    pool_uuid: [u8; 16],
) -> Result<PoolPlan> {
    let mut steps = Vec::new();
    let mut mode = None;
    let (slot, header) = match &pool.state {
        PoolState::Foreign(found) => {
            return Err(Error::ForeignPool { device: pool.device.clone(), found: found.to_string() })
        }
        PoolState::Unrecognised => return Err(Error::NotAPool { device: pool.device.clone() }),
        PoolState::Ours { slot, header } => (Some(*slot), header.clone()),
        PoolState::Blank => {
            let layout = format_layout.ok_or_else(|| Error::NotAPool { device: pool.device.clone() })?;
            mode = Some(Mode::Formatted);
            (None, new_header(pool.size, &layout, pool_uuid))
        }
    };
    if header.device_sectors > pool.size.sectors() {
        return Err(Error::Inconsistent(format!(
            "{} was {} sectors when formatted but is {} now; it was shrunk or replaced",
            pool.device,
            header.device_sectors,
            pool.size.sectors()
        )));
    }
    let mut writer = HeaderWriter { device: &pool.device, slot, header };
    if mode == Some(Mode::Formatted) {
        writer.write(&mut steps, true, "format", |_| {});
    }

    let h = &writer.header;
    steps.push(Step::CreateLinear {
        role: Role::Meta,
        dev: DevRef::Path(pool.device.clone()),
        offset: h.meta.start,
        len: h.meta.len,
    });
    steps.push(Step::CreateLinear {
        role: Role::Data,
        dev: DevRef::Path(pool.device.clone()),
        offset: h.data.start,
        len: h.data.len,
    });
    steps.push(Step::CreatePool { len: h.data.len, block_sectors: h.block_sectors, device: pool.device.clone() });

    // A reset interrupted by power loss can leave one thin id behind.
    let garbage = h.garbage_thin;
    if garbage != 0 && garbage != h.active_thin {
        steps.push(Step::DeleteThinId { id: garbage, missing_ok: true });
        writer.write(&mut steps, false, "forget leftover thin", |h| h.garbage_thin = 0);
    }

    let reset_requested = cfg.reset || writer.header.flags & FLAG_RESET_NEXT_BOOT != 0;
    let old = writer.header.active_thin;
    let mode = if old == 0 {
        mode.unwrap_or(Mode::FirstUse)
    } else if reset_requested {
        Mode::Reset
    } else {
        check_origin(cfg, &writer.header, origin)?;
        Mode::Kept
    };

    if mode != Mode::Kept {
        // New thin first, header second, old thin last: power lost between
        // any two steps leaves a header that names a thin that exists.
        let new = writer.header.next_thin;
        writer.write(&mut steps, false, "reserve thin id", |h| {
            h.next_thin = new + 1;
            h.garbage_thin = new;
        });
        steps.push(Step::CreateThinId { id: new });
        writer.write(&mut steps, false, "switch to new thin", |h| {
            h.active_thin = new;
            h.garbage_thin = old;
            h.generation += 1;
            h.flags &= !FLAG_RESET_NEXT_BOOT;
            if origin.id.is_some() {
                h.origin = origin.id;
            }
        });
        if old != 0 {
            steps.push(Step::DeleteThinId { id: old, missing_ok: true });
            writer.write(&mut steps, false, "done", |h| h.garbage_thin = 0);
        }
    }

    let len = match origin.size {
        Some(size) => size.sectors(),
        None => Sectors(0),
    };
    steps.push(Step::CreateThin { id: writer.header.active_thin, len, origin: origin.device.clone() });
    Ok(PoolPlan { steps, mode, header: writer.header, header_slot: writer.slot })
}

fn check_origin(cfg: &Config, header: &PoolHeader, origin: &OriginFacts) -> Result<()> {
    let (Some(recorded), Some(now)) = (&header.origin, &origin.id) else {
        // Unknown in a dry run of an image file; a pool formatted by an old
        // version never has a thin without an origin record.
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

/// Quotes a value for a POSIX shell, so a printed plan is safe to paste.
pub fn sh_quote(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._+-:=@,".contains(&b)) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Renders steps as the shell commands a person would type (for
/// `--dry-run`); header writes have no command and show as comments.
pub fn render(name: &DeviceName, steps: &[Step]) -> String {
    let mut out = String::new();
    let dev = |d: &DevRef| match d {
        DevRef::Path(p) => sh_quote(p),
        DevRef::Loop => "$LOOP".to_string(),
        DevRef::Dm(role) => name.mapper_path(*role),
    };
    let pool = name.dm_name(Role::Pool);
    for step in steps {
        let _ = match step {
            Step::MountHost { device, fstype } => writeln!(
                out,
                "mkdir -p {HOST_MOUNT} && mount -o ro{} {} {HOST_MOUNT}",
                fstype.as_ref().map(|t| format!(" -t {t}")).unwrap_or_default(),
                sh_quote(device)
            ),
            Step::AttachLoop { file } => writeln!(out, "LOOP=$(losetup -r -f --show {})", sh_quote(file)),
            Step::WriteHeader { slot, header, zero_meta, why, .. } => {
                if *zero_meta {
                    let _ = writeln!(
                        out,
                        "# zero the first metadata block at sector {} (the kernel formats fresh metadata)",
                        header.meta.start
                    );
                }
                writeln!(
                    out,
                    "# write header copy {slot} (seq {}, {why}): active thin {}, generation {}",
                    header.seq, header.active_thin, header.generation
                )
            }
            Step::CreateLinear { role, dev: d, offset, len } => writeln!(
                out,
                "dmsetup create {} --uuid {} --table '0 {len} linear {} {offset}'",
                name.dm_name(*role),
                name.dm_uuid(*role),
                dev(d)
            ),
            Step::SetReadOnly { device } => writeln!(out, "blockdev --setro {}", sh_quote(device)),
            Step::CreateReadOnly { len, origin } => writeln!(
                out,
                "dmsetup create {} --readonly --uuid {} --table \"0 {} linear {} 0\"",
                name.dm_name(Role::ReadOnly),
                name.dm_uuid(Role::ReadOnly),
                if len.0 == 0 { "$(blockdev --getsz $LOOP)".to_string() } else { len.to_string() },
                dev(origin)
            ),
            Step::CreatePool { len, block_sectors, .. } => writeln!(
                out,
                "dmsetup create {pool} --uuid {} --table '0 {len} thin-pool {} {} {block_sectors} 0 1 error_if_no_space'",
                name.dm_uuid(Role::Pool),
                name.mapper_path(Role::Meta),
                name.mapper_path(Role::Data)
            ),
            Step::CreateThinId { id } => writeln!(out, "dmsetup message {pool} 0 'create_thin {id}'"),
            Step::DeleteThinId { id, missing_ok } => writeln!(
                out,
                "dmsetup message {pool} 0 'delete {id}'{}",
                if *missing_ok { " || true" } else { "" }
            ),
            Step::CreateThin { id, len, origin } => {
                let len = if len.0 == 0 { "$(blockdev --getsz $LOOP)".to_string() } else { len.to_string() };
                writeln!(
                    out,
                    "dmsetup create {} --uuid {} --table \"0 {len} thin {} {id} {}\"",
                    name.dm_name(Role::Thin),
                    name.dm_uuid(Role::Thin),
                    name.mapper_path(Role::Pool),
                    dev(origin)
                )
            }
        };
    }
    out
}

/// The origin device reference for a config once resolved.
pub fn origin_ref(source: &Source, resolved_device: Option<&str>) -> DevRef {
    match (source, resolved_device) {
        (Source::Device(DevSpec::Path(p)), None) => DevRef::Path(p.clone()),
        (Source::Device(_), Some(p)) => DevRef::Path(p.to_string()),
        _ => DevRef::Loop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::split;
    use crate::layout::plan_layout;

    fn cfg(extra: &str) -> Config {
        Config::from_params(&split(&format!("cowroot=/images/root.img cowroot.dev=LABEL=img cowpool=/dev/vdc {extra}")))
            .unwrap()
            .unwrap()
    }

    const POOL_SIZE: Bytes = Bytes(256 << 20);

    fn layout() -> Layout {
        plan_layout("/dev/vdc", POOL_SIZE, 64 * 1024).unwrap()
    }

    fn origin(id_byte: u8) -> OriginFacts {
        OriginFacts {
            device: DevRef::Loop,
            size: Some(Bytes(64 << 20)),
            id: Some(OriginId { size_bytes: 64 << 20, digest: [id_byte; 32] }),
        }
    }

    fn facts(state: PoolState) -> PoolFacts {
        PoolFacts { device: "/dev/vdc".into(), size: POOL_SIZE, state }
    }

    /// Runs a plan's header writes to get the state the next boot sees.
    fn after(plan: &PoolPlan) -> PoolState {
        PoolState::Ours { slot: plan.header_slot.expect("a header exists"), header: plan.header.clone() }
    }

    fn kinds(plan: &PoolPlan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::WriteHeader { slot, header, why, .. } => format!("header{slot}:{why}:seq{}", header.seq),
                Step::CreateLinear { role, .. } => format!("linear:{role:?}"),
                Step::CreatePool { .. } => "pool".into(),
                Step::CreateThinId { id } => format!("create_thin {id}"),
                Step::DeleteThinId { id, .. } => format!("delete {id}"),
                Step::CreateThin { id, .. } => format!("thin {id}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn first_boot_formats_then_reuse_then_reset() {
        let first = plan_pool(&cfg(""), &facts(PoolState::Blank), &origin(1), Some(layout()), [5; 16]).unwrap();
        assert_eq!(first.mode, Mode::Formatted);
        assert_eq!(
            kinds(&first),
            [
                "header0:format:seq1",
                "linear:Meta",
                "linear:Data",
                "pool",
                "header1:reserve thin id:seq2",
                "create_thin 1",
                "header0:switch to new thin:seq3",
                "thin 1",
            ]
        );
        assert!(matches!(first.steps[0], Step::WriteHeader { zero_meta: true, .. }));
        assert_eq!(first.header.active_thin, 1);
        assert_eq!(first.header.generation, 1);
        assert_eq!(first.header.garbage_thin, 0);
        assert_eq!(first.header.origin, origin(1).id);
        // The header validates after every write.
        for step in &first.steps {
            if let Step::WriteHeader { header, .. } = step {
                assert_eq!(PoolHeader::decode(&header.encode()).as_ref(), Ok(header));
            }
        }

        let second = plan_pool(&cfg(""), &facts(after(&first)), &origin(1), None, [0; 16]).unwrap();
        assert_eq!(second.mode, Mode::Kept);
        assert_eq!(kinds(&second), ["linear:Meta", "linear:Data", "pool", "thin 1"]);
        assert_eq!(second.header, first.header);

        let third = plan_pool(&cfg("cowroot.reset=1"), &facts(after(&second)), &origin(1), None, [0; 16]).unwrap();
        assert_eq!(third.mode, Mode::Reset);
        assert_eq!(
            kinds(&third),
            [
                "linear:Meta",
                "linear:Data",
                "pool",
                "header1:reserve thin id:seq4",
                "create_thin 2",
                "header0:switch to new thin:seq5",
                "delete 1",
                "header1:done:seq6",
                "thin 2",
            ]
        );
        assert_eq!((third.header.active_thin, third.header.generation), (2, 2));
    }

    #[test]
    fn thin_matches_origin_size_and_device() {
        let o = OriginFacts { device: DevRef::Path("/dev/vdb".into()), ..origin(1) };
        let plan = plan_pool(&cfg(""), &facts(PoolState::Blank), &o, Some(layout()), [5; 16]).unwrap();
        assert_eq!(
            plan.steps.last(),
            Some(&Step::CreateThin { id: 1, len: Sectors(131072), origin: DevRef::Path("/dev/vdb".into()) })
        );
    }

    #[test]
    fn changed_origin_is_refused_until_reset() {
        let first = plan_pool(&cfg(""), &facts(PoolState::Blank), &origin(1), Some(layout()), [5; 16]).unwrap();
        let err = plan_pool(&cfg(""), &facts(after(&first)), &origin(2), None, [0; 16]).unwrap_err();
        assert!(matches!(err, Error::OriginChanged { .. }));
        assert!(err.to_string().contains("cowroot.reset=1"), "{err}");
        let mut bigger = origin(1);
        bigger.id.as_mut().unwrap().size_bytes += 4096;
        let err = plan_pool(&cfg(""), &facts(after(&first)), &bigger, None, [0; 16]).unwrap_err();
        assert!(err.to_string().contains("size was"), "{err}");
        let reset = plan_pool(&cfg("cowroot.reset=1"), &facts(after(&first)), &origin(2), None, [0; 16]).unwrap();
        assert_eq!(reset.header.origin, origin(2).id);
        let kept = plan_pool(&cfg(""), &facts(after(&reset)), &origin(2), None, [0; 16]).unwrap();
        assert_eq!(kept.mode, Mode::Kept);
    }

    #[test]
    fn interrupted_reset_is_cleaned_up_and_still_boots() {
        let first = plan_pool(&cfg(""), &facts(PoolState::Blank), &origin(1), Some(layout()), [5; 16]).unwrap();
        let reset = plan_pool(&cfg("cowroot.reset=1"), &facts(after(&first)), &origin(1), None, [0; 16]).unwrap();
        // Power lost right after each header write of the reset: the next
        // boot (without reset) must boot a thin that exists and clean up.
        for (index, step) in reset.steps.iter().enumerate() {
            let Step::WriteHeader { slot, header, .. } = step else {
                continue;
            };
            let state = PoolState::Ours { slot: *slot, header: header.clone() };
            let created: Vec<u32> = reset.steps[..=index]
                .iter()
                .filter_map(|s| if let Step::CreateThinId { id } = s { Some(*id) } else { None })
                .collect();
            let deleted: Vec<u32> = reset.steps[..=index]
                .iter()
                .filter_map(|s| if let Step::DeleteThinId { id, .. } = s { Some(*id) } else { None })
                .collect();
            let exists = |id: u32| (id == 1 || created.contains(&id)) && !deleted.contains(&id);
            let next = plan_pool(&cfg(""), &facts(state), &origin(1), None, [0; 16]).unwrap();
            let Some(Step::CreateThin { id, .. }) = next.steps.last() else { panic!() };
            assert!(exists(*id), "after write {index}, boots thin {id} which does not exist");
            assert_eq!(next.header.garbage_thin, 0, "after write {index}");
            for s in &next.steps {
                if let Step::DeleteThinId { id: gone, missing_ok } = s {
                    assert!(*missing_ok);
                    assert_ne!(gone, id, "deletes the thin it boots");
                }
            }
        }
    }

    #[test]
    fn foreign_or_unknown_pools_are_refused() {
        let err = plan_pool(
            &cfg(""),
            &facts(PoolState::Foreign("an ext2/3/4 filesystem")),
            &origin(1),
            Some(layout()),
            [0; 16],
        )
        .unwrap_err();
        assert!(err.to_string().contains("/dev/vdc holds an ext2/3/4 filesystem"), "{err}");
        let err =
            plan_pool(&cfg(""), &facts(PoolState::Unrecognised), &origin(1), Some(layout()), [0; 16]).unwrap_err();
        assert!(matches!(err, Error::NotAPool { .. }));
        // A pool header claiming more sectors than the device has.
        let first = plan_pool(&cfg(""), &facts(PoolState::Blank), &origin(1), Some(layout()), [5; 16]).unwrap();
        let mut small = facts(after(&first));
        small.size = Bytes(128 << 20);
        assert!(matches!(plan_pool(&cfg(""), &small, &origin(1), None, [0; 16]), Err(Error::Inconsistent(_))));
    }

    #[test]
    fn pool_classification_never_trusts_a_header_next_to_other_data() {
        let mut start = vec![0u8; signature::PROBE_BYTES];
        assert_eq!(classify_pool(&start), PoolState::Blank);
        let header = crate::header::sample();
        start[..header::SLOT_BYTES].copy_from_slice(&header.encode());
        assert_eq!(classify_pool(&start), PoolState::Ours { slot: 0, header: header.clone() });
        // Repartitioned: a GPT header overwrote sector 1, slot 1 survives.
        let mut gpt = vec![0u8; signature::PROBE_BYTES];
        let second = header::SLOT_OFFSETS[1] as usize;
        gpt[second..second + header::SLOT_BYTES].copy_from_slice(&header.encode());
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(classify_pool(&gpt), PoolState::Foreign("a GPT partition table"));
        // Unknown bytes elsewhere in the reserved MiB.
        for at in [300_000, 1000] {
            let mut junk = start.clone();
            junk[at] = 1;
            let want = PoolState::Foreign("data next to a stale cowroot header");
            assert_eq!(classify_pool(&junk), want, "{at}");
        }
        // Both copies damaged.
        let mut damaged = start.clone();
        damaged[100] ^= 1;
        assert_eq!(classify_pool(&damaged), PoolState::Foreign("a damaged cowroot header (no valid copy)"));
        let mut noise = vec![0u8; signature::PROBE_BYTES];
        noise[7] = 9;
        assert_eq!(classify_pool(&noise), PoolState::Unrecognised);
    }

    #[test]
    fn reset_flag_in_header_acts_like_reset() {
        let first = plan_pool(&cfg(""), &facts(PoolState::Blank), &origin(1), Some(layout()), [5; 16]).unwrap();
        let PoolState::Ours { slot, mut header } = after(&first) else { unreachable!() };
        header.flags |= FLAG_RESET_NEXT_BOOT;
        let plan = plan_pool(&cfg(""), &facts(PoolState::Ours { slot, header }), &origin(1), None, [0; 16]).unwrap();
        assert_eq!(plan.mode, Mode::Reset);
        assert_eq!(plan.header.flags & FLAG_RESET_NEXT_BOOT, 0);
    }

    #[test]
    fn printed_values_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("/dev/vdb"), "/dev/vdb");
        assert_eq!(sh_quote("/run/cowroot/host/my image.img"), "'/run/cowroot/host/my image.img'");
        assert_eq!(sh_quote("/a'$(rm -rf /)'.img"), "'/a'\\''$(rm -rf /)'\\''.img'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn dry_run_renders_commands() {
        let c = cfg("");
        let mut steps = plan_origin(&c, Some("/dev/vdb"), None);
        let o = OriginFacts { device: DevRef::Loop, size: None, id: None };
        steps.extend(plan_pool(&c, &facts(PoolState::Blank), &o, Some(layout()), [5; 16]).unwrap().steps);
        let text = render(&c.name, &steps);
        let want = [
            "blockdev --setro /dev/vdb",
            "mkdir -p /run/cowroot/host && mount -o ro /dev/vdb /run/cowroot/host",
            "LOOP=$(losetup -r -f --show /run/cowroot/host/images/root.img)",
            "dmsetup create cowroot-pool_tmeta --uuid COWROOT-tmeta-cowroot --table '0 ",
            " linear /dev/vdc 2048'",
            "thin-pool /dev/mapper/cowroot-pool_tmeta /dev/mapper/cowroot-pool_tdata 128 0 1 error_if_no_space'",
            "dmsetup message cowroot-pool 0 'create_thin 1'",
            "dmsetup create cowroot --uuid COWROOT-thin-cowroot --table \"0 $(blockdev --getsz $LOOP) thin /dev/mapper/cowroot-pool 1 $LOOP\"",
        ];
        for w in want {
            assert!(text.contains(w), "missing {w:?} in\n{text}");
        }
    }
}
