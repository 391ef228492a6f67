//! The pool header: what cowroot keeps in the first MiB of the pool device.
//!
//! Two copies live at fixed offsets. Each carries a sequence number and a
//! CRC32C; a writer always overwrites the *older* copy, so a torn write can
//! only damage the copy that was not the newest, and the newest valid copy
//! wins on read (invariant 3).

use crate::checkpoint::{self, CheckpointKind, CheckpointRecord, MAX_CHECKPOINTS};
use crate::units::Sectors;
use crate::volume::{VolumeName, VolumeRecord, MAX_VOLUMES, VOLUME_NAME_MAX};
use std::fmt;

pub const MAGIC: &[u8; 8] = b"COWROOT1";
/// The version this cowroot writes. Version 1 (cowroot 0.1) had no
/// transaction binding; it is read as transaction 0 (0.1 never set one) and
/// upgraded in place by the next header write. A newer version is refused.
/// Version 2 added it; version 3 the image file's identity (read as none
/// from older copies); version 4 the random-key flag (an older cowroot
/// must not take such a pool for a plaintext one) and the root's size;
/// version 5 the persistent volumes, in a longer body; version 6 the
/// checkpoints, in a second extension.
pub const VERSION: u32 = 6;
const OLDEST_VERSION: u32 = 1;
/// The whole reserved region at the start of the pool device.
pub const RESERVED_BYTES: u64 = 1 << 20;
/// One copy occupies one 4 KiB block (written whole, with O_DIRECT-sized I/O).
pub const SLOT_BYTES: usize = 4096;
/// Byte offsets of the two copies (different 64 KiB-aligned regions).
pub const SLOT_OFFSETS: [u64; 2] = [0, 64 * 1024];
/// Encoded length covered by the checksum (the CRC sits right after it).
/// Every version has it, each using more of it, so an older cowroot still
/// finds a newer copy's checksum right and refuses it by its version.
const BODY_LEN: usize = 252;
/// Bytes of a slot that versions 1 to 4 use.
const BASE_LEN: usize = BODY_LEN + 4;
/// Version 5's extension (the volume table), after the base, with a
/// checksum of its own in its last 4 bytes.
const EXT_END: usize = 1020;
/// Bytes of a slot that a version 5 copy uses.
const V5_LEN: usize = EXT_END + 4;
/// Version 6's extension (the checkpoint table), with its own checksum.
const CKPT_END: usize = V5_LEN + 8 + MAX_CHECKPOINTS * checkpoint::RECORD_BYTES;
/// Bytes of a slot that a header uses; the rest of the slot is zero.
pub const ENCODED_LEN: usize = CKPT_END + 4;

/// The bytes of a slot that a copy of `version` uses.
pub fn encoded_len(version: u32) -> usize {
    match version {
        6.. => ENCODED_LEN,
        5 => V5_LEN,
        _ => BASE_LEN,
    }
}

/// Sets the checksums of a slot after its bytes changed (tests and the
/// fuzzer craft copies with it).
pub fn seal(slot: &mut [u8; SLOT_BYTES]) {
    let crc = crc32c(&slot[..BODY_LEN]);
    slot[BODY_LEN..BASE_LEN].copy_from_slice(&crc.to_le_bytes());
    let version = u32::from_le_bytes([slot[8], slot[9], slot[10], slot[11]]);
    if version >= 5 {
        let crc = crc32c(&slot[BASE_LEN..EXT_END]);
        slot[EXT_END..V5_LEN].copy_from_slice(&crc.to_le_bytes());
    }
    if version >= 6 {
        let crc = crc32c(&slot[V5_LEN..CKPT_END]);
        slot[CKPT_END..ENCODED_LEN].copy_from_slice(&crc.to_le_bytes());
    }
}
/// dm-thin device ids are 24-bit numbers.
pub const MAX_THIN_ID: u32 = (1 << 24) - 1;

/// Set when `cowroot reset` asked the next boot to discard changes.
pub const FLAG_RESET_NEXT_BOOT: u32 = 1;
/// The pool holds a `cowroot.crypt=random` session: its metadata and data
/// are encrypted with keys that were never stored.
pub const FLAG_CRYPT_RANDOM: u32 = 2;
/// Set when `cowroot maintenance` asked the next boot to write into the
/// frozen base; that boot clears it.
pub const FLAG_MAINTENANCE_NEXT_BOOT: u32 = 4;
/// Set by the write that reserves new thin ids, cleared by the one that
/// switches to them: only then may the metadata be a transaction ahead.
pub const FLAG_RESERVED: u32 = 8;
const KNOWN_FLAGS: u32 = FLAG_RESET_NEXT_BOOT | FLAG_CRYPT_RANDOM | FLAG_MAINTENANCE_NEXT_BOOT | FLAG_RESERVED;

/// Where the thin-pool's metadata and data live on the pool device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: Sectors,
    pub len: Sectors,
}

/// What identifies an origin: its size and a digest of fixed samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginId {
    pub size_bytes: u64,
    pub digest: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHeader {
    /// The version the copy was read as (a new or changed header is
    /// always written as `VERSION`).
    pub version: u32,
    pub seq: u64,
    pub pool_uuid: [u8; 16],
    /// Size of the pool device when it was formatted.
    pub device_sectors: Sectors,
    pub block_sectors: u32,
    pub flags: u32,
    pub meta: Extent,
    pub data: Extent,
    /// The thin device the machine boots from; 0 before first boot.
    pub active_thin: u32,
    /// A thin id that may exist and must be deleted (left by an interrupted
    /// reset); 0 for none. While it is set, the pool's metadata may be one
    /// transaction ahead of `transaction`.
    pub garbage_thin: u32,
    /// The id the next reset creates.
    pub next_thin: u32,
    /// Counts resets: generation N is the N-th fresh thin device.
    pub generation: u64,
    pub origin: Option<OriginId>,
    /// The thin-pool metadata's transaction id this header goes with: it
    /// binds the header to its metadata, as LVM binds its own metadata, so
    /// a restored or copied header is caught instead of acted upon.
    pub transaction: u64,
    /// The identity of the image file `origin` was sampled from (see
    /// `probe::file_identity`): while the file's identity is unchanged, its
    /// content is not sampled again at boot. None for device origins.
    pub origin_file: Option<[u8; 16]>,
    /// The size of the thin device the kept changes live on, when
    /// `cowroot.size` made it larger than the origin; 0: the origin's.
    /// Kept so that dropping the key later never shrinks a grown root.
    pub root_sectors: Sectors,
    /// `cowroot.mode=frozen`: the thin holding the base every boot
    /// snapshots (the active thin is then that boot's snapshot, or the base
    /// itself in a maintenance boot); 0 when not frozen.
    pub base_thin: u32,
    /// A second thin id to delete with `garbage_thin` (a frozen reset
    /// leaves both the old base and the old snapshot); 0 for none.
    pub garbage_thin2: u32,
    /// The persistent volumes (`cowroot.volume`), in the order first made.
    pub volumes: Vec<VolumeRecord>,
    /// The checkpoints, oldest first.
    pub checkpoints: Vec<CheckpointRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotFault {
    /// All zero: never written, or wiped.
    Empty,
    NoMagic,
    BadChecksum,
    /// A valid copy written by a newer cowroot.
    NewerVersion(u32),
    Invalid(&'static str),
}

impl fmt::Display for SlotFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotFault::Empty => write!(f, "all zero"),
            SlotFault::NoMagic => write!(f, "no cowroot magic"),
            SlotFault::BadChecksum => write!(f, "checksum mismatch"),
            SlotFault::NewerVersion(v) => write!(f, "version {v}, newer than this cowroot's {VERSION}"),
            SlotFault::Invalid(what) => write!(f, "checksum valid but {what} impossible"),
        }
    }
}

/// CRC32C (Castagnoli), as used by ext4, btrfs and dm-persistent-data.
pub fn crc32c(data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    }
    static TABLE: [u32; 256] = table();
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

impl PoolHeader {
    /// Encodes as the current `VERSION`.
    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut buf = [0u8; SLOT_BYTES];
        let mut w = Writer { buf: &mut buf, pos: 0 };
        w.put(MAGIC);
        w.u32(VERSION);
        w.u32(BODY_LEN as u32);
        w.u64(self.seq);
        w.put(&self.pool_uuid);
        w.u64(self.device_sectors.0);
        w.u32(self.block_sectors);
        w.u32(self.flags);
        w.u64(self.meta.start.0);
        w.u64(self.meta.len.0);
        w.u64(self.data.start.0);
        w.u64(self.data.len.0);
        w.u32(self.active_thin);
        w.u32(self.garbage_thin);
        w.u32(self.next_thin);
        w.u32(0);
        w.u64(self.generation);
        let origin = self.origin.unwrap_or(OriginId { size_bytes: 0, digest: [0; 32] });
        w.u32(self.origin.is_some().into());
        w.u32(0);
        w.u64(origin.size_bytes);
        w.put(&origin.digest);
        w.u64(self.transaction);
        w.put(&self.origin_file.unwrap_or([0; 16]));
        w.u64(self.root_sectors.0);
        w.u32(self.base_thin);
        w.u32(self.garbage_thin2);
        debug_assert!(w.pos <= BODY_LEN);
        w.pos = BASE_LEN;
        w.u32(self.volumes.len() as u32);
        w.u32(0);
        for volume in self.volumes.iter().take(MAX_VOLUMES) {
            w.put(&volume.name.field());
            w.u32(volume.thin);
            w.u32(volume.formatted.into());
            w.u64(volume.sectors.0);
        }
        debug_assert!(w.pos <= EXT_END);
        w.pos = V5_LEN;
        w.u32(self.checkpoints.len() as u32);
        w.u32(0);
        for c in self.checkpoints.iter().take(MAX_CHECKPOINTS) {
            w.put(&c.name.field());
            w.u32(c.thin);
            w.put(&[c.kind.code(), c.deleting.into(), 0, 0]);
            w.u64(c.created);
            w.u64(c.generation);
            w.u64(c.root_sectors.0);
            w.u64(c.origin.size_bytes);
            w.put(&c.origin.digest);
        }
        debug_assert!(w.pos <= CKPT_END);
        seal(&mut buf);
        buf
    }

    pub fn decode(slot: &[u8]) -> Result<PoolHeader, SlotFault> {
        if slot.len() < SLOT_BYTES || slot[..BASE_LEN].iter().all(|&b| b == 0) {
            return Err(SlotFault::Empty);
        }
        if &slot[..8] != MAGIC {
            return Err(SlotFault::NoMagic);
        }
        let crc_at = |from: usize, to: usize| {
            let mut crc = [0u8; 4];
            crc.copy_from_slice(&slot[to..to + 4]);
            crc32c(&slot[from..to]) == u32::from_le_bytes(crc)
        };
        if !crc_at(0, BODY_LEN) {
            return Err(SlotFault::BadChecksum);
        }
        let mut r = Reader { buf: slot, pos: 8 };
        let version = r.u32();
        if version > VERSION {
            return Err(SlotFault::NewerVersion(version));
        }
        if version < OLDEST_VERSION {
            return Err(SlotFault::Invalid("version"));
        }
        if r.u32() as usize != BODY_LEN {
            return Err(SlotFault::Invalid("body length"));
        }
        if version >= 5 && !crc_at(BASE_LEN, EXT_END) {
            return Err(SlotFault::BadChecksum);
        }
        if version >= 6 && !crc_at(V5_LEN, CKPT_END) {
            return Err(SlotFault::BadChecksum);
        }
        let seq = r.u64();
        let pool_uuid = r.take::<16>();
        let device_sectors = Sectors(r.u64());
        let block_sectors = r.u32();
        let flags = r.u32();
        let meta = Extent { start: Sectors(r.u64()), len: Sectors(r.u64()) };
        let data = Extent { start: Sectors(r.u64()), len: Sectors(r.u64()) };
        let active_thin = r.u32();
        let garbage_thin = r.u32();
        let next_thin = r.u32();
        let pad1 = r.u32();
        let generation = r.u64();
        let has_origin = r.u32();
        let pad2 = r.u32();
        let size_bytes = r.u64();
        let digest = r.take::<32>();
        let transaction = if version >= 2 { r.u64() } else { 0 };
        let origin_file = if version >= 3 { Some(r.take::<16>()).filter(|f| f != &[0; 16]) } else { None };
        let root_sectors = Sectors(if version >= 4 { r.u64() } else { 0 });
        let (base_thin, garbage_thin2) = if version >= 4 { (r.u32(), r.u32()) } else { (0, 0) };
        if slot[r.pos..BODY_LEN].iter().any(|&b| b != 0) {
            return Err(SlotFault::Invalid("reserved bytes"));
        }
        let mut volumes = Vec::new();
        let mut pad3 = 0;
        if version >= 5 {
            r.pos = BASE_LEN;
            let count = r.u32() as usize;
            pad3 = r.u32();
            if count > MAX_VOLUMES {
                return Err(SlotFault::Invalid("volume count"));
            }
            for _ in 0..count {
                let name =
                    VolumeName::from_field(&r.take::<VOLUME_NAME_MAX>()).ok_or(SlotFault::Invalid("volume name"))?;
                let thin = r.u32();
                let formatted = match r.u32() {
                    0 => false,
                    1 => true,
                    _ => return Err(SlotFault::Invalid("volume flags")),
                };
                volumes.push(VolumeRecord { name, thin, sectors: Sectors(r.u64()), formatted });
            }
        }
        let ext_rest = if version >= 5 { &slot[r.pos..EXT_END] } else { &[][..] };
        if pad1 != 0 || pad2 != 0 || pad3 != 0 || ext_rest.iter().any(|&b| b != 0) {
            return Err(SlotFault::Invalid("reserved bytes"));
        }
        let checkpoints = if version >= 6 { decode_checkpoints(&slot[V5_LEN..CKPT_END])? } else { Vec::new() };
        let origin = match has_origin {
            0 if size_bytes == 0 && digest == [0; 32] => None,
            1 => Some(OriginId { size_bytes, digest }),
            _ => return Err(SlotFault::Invalid("origin record")),
        };
        let header = PoolHeader {
            version,
            seq,
            pool_uuid,
            device_sectors,
            block_sectors,
            flags,
            meta,
            data,
            active_thin,
            garbage_thin,
            next_thin,
            generation,
            origin,
            transaction,
            origin_file,
            root_sectors,
            base_thin,
            garbage_thin2,
            volumes,
            checkpoints,
        };
        header.validate().map_err(SlotFault::Invalid)?;
        Ok(header)
    }

    /// Checks that a header that passed its checksum also makes sense, so a
    /// bug, a hand edit or a crafted device cannot point the pool at the
    /// header region, skip the origin check or wrap a counter.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        let reserved = RESERVED_BYTES / 512;
        if self.seq == 0 || self.seq == u64::MAX {
            return Err("sequence number");
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err("flags");
        }
        if !(128..=2_097_152).contains(&self.block_sectors) || !self.block_sectors.is_multiple_of(128) {
            return Err("block size");
        }
        let meta_end = self.meta.start.0.checked_add(self.meta.len.0).ok_or("metadata extent")?;
        let data_end = self.data.start.0.checked_add(self.data.len.0).ok_or("data extent")?;
        if self.meta.start.0 < reserved || self.meta.len.0 == 0 {
            return Err("metadata extent");
        }
        if self.data.start.0 < meta_end || self.data.len.0 == 0 {
            return Err("data extent");
        }
        // Sectors are turned into bytes later: keep them far from overflow.
        if data_end > self.device_sectors.0 || self.device_sectors.0 > u64::MAX / 1024 {
            return Err("extents past the device end");
        }
        let ids_ok = self.next_thin != 0
            && self.next_thin <= MAX_THIN_ID + 1
            && self.active_thin < self.next_thin
            && self.garbage_thin < self.next_thin
            && (self.garbage_thin == 0 || self.garbage_thin != self.active_thin)
            && self.base_thin < self.next_thin
            && self.garbage_thin2 < self.next_thin
            && (self.garbage_thin2 == 0
                || ![self.active_thin, self.base_thin, self.garbage_thin].contains(&self.garbage_thin2))
            && (self.base_thin == 0 || (self.active_thin != 0 && self.base_thin != self.garbage_thin));
        if !ids_ok {
            return Err("thin ids");
        }
        // A thin in use always has the identity of the origin it was made
        // on: without one, a crafted pool could boot its changes over any
        // image.
        if self.active_thin != 0 && self.origin.is_none() {
            return Err("active thin without an origin record");
        }
        // A volume's thin is never one a reset or cleanup may delete.
        let others = [self.active_thin, self.base_thin, self.garbage_thin, self.garbage_thin2];
        for (i, volume) in self.volumes.iter().enumerate() {
            let clash = volume.thin == 0
                || volume.thin >= self.next_thin
                || others.contains(&volume.thin)
                || self.volumes[..i].iter().any(|v| v.thin == volume.thin || v.name == volume.name);
            if clash || volume.sectors.0 == 0 || volume.sectors.0 > u64::MAX / 1024 {
                return Err("volume record");
            }
        }
        if self.volumes.len() > MAX_VOLUMES {
            return Err("volume count");
        }
        // A checkpoint's thin is never the root's, a volume's or a
        // leftover's, so no reset or cleanup deletes it by another name.
        for (i, c) in self.checkpoints.iter().enumerate() {
            let clash = c.thin == 0
                || c.thin >= self.next_thin
                || others.contains(&c.thin)
                || self.volumes.iter().any(|v| v.thin == c.thin)
                || self.checkpoints[..i].iter().any(|o| o.thin == c.thin || o.name == c.name);
            let size_ok =
                c.root_sectors.0 <= self.device_sectors.0.max(1 << 40) * 1024 && c.root_sectors.0 <= u64::MAX / 1024;
            if clash || !size_ok || c.origin.size_bytes == 0 {
                return Err("checkpoint record");
            }
        }
        if self.checkpoints.len() > MAX_CHECKPOINTS {
            return Err("checkpoint count");
        }
        if self.root_sectors.0 > self.device_sectors.0.max(1 << 40) * 1024 || self.root_sectors.0 > u64::MAX / 1024 {
            return Err("root size");
        }
        if self.generation == u64::MAX || self.transaction == u64::MAX {
            return Err("counters");
        }
        Ok(())
    }

    /// The same state, whatever the sequence number and version.
    pub fn same_state(&self, other: &PoolHeader) -> bool {
        let strip = |h: &PoolHeader| PoolHeader { seq: 0, version: 0, ..h.clone() };
        strip(self) == strip(other)
    }

    /// The transaction id that follows `transaction` on this pool. The first
    /// one is derived from the pool's uuid, so two pools with the same
    /// history still have different transaction ids and a header copied
    /// from one does not bind to the other's metadata.
    pub fn transaction_after(&self, transaction: u64) -> Option<u64> {
        if transaction == 0 {
            let seed = u32::from_le_bytes([self.pool_uuid[0], self.pool_uuid[1], self.pool_uuid[2], self.pool_uuid[3]]);
            Some((u64::from(seed) << 16) | 1)
        } else {
            transaction.checked_add(1).filter(|&t| t != u64::MAX)
        }
    }

    /// The same header, as the next write will store it: one higher `seq`.
    pub fn next(&self) -> Result<PoolHeader, &'static str> {
        let mut next = self.clone();
        next.seq = self.seq.checked_add(1).filter(|&s| s != u64::MAX).ok_or("sequence number exhausted")?;
        next.version = VERSION;
        Ok(next)
    }
}

/// The checkpoint table of a version 6 copy.
fn decode_checkpoints(table: &[u8]) -> Result<Vec<CheckpointRecord>, SlotFault> {
    let mut r = Reader { buf: table, pos: 0 };
    let count = r.u32() as usize;
    if count > MAX_CHECKPOINTS {
        return Err(SlotFault::Invalid("checkpoint count"));
    }
    if r.u32() != 0 {
        return Err(SlotFault::Invalid("reserved bytes"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let name = VolumeName::from_field(&r.take::<VOLUME_NAME_MAX>()).ok_or(SlotFault::Invalid("checkpoint name"))?;
        let name = checkpoint::parse_name(name.as_str()).map_err(|_| SlotFault::Invalid("checkpoint name"))?;
        let thin = r.u32();
        let [kind, deleting, pad_a, pad_b] = r.take::<4>();
        let kind = CheckpointKind::from_code(kind).ok_or(SlotFault::Invalid("checkpoint kind"))?;
        let deleting = match deleting {
            0 => false,
            1 => true,
            _ => return Err(SlotFault::Invalid("checkpoint flags")),
        };
        if pad_a != 0 || pad_b != 0 {
            return Err(SlotFault::Invalid("reserved bytes"));
        }
        let created = r.u64();
        let generation = r.u64();
        let root_sectors = Sectors(r.u64());
        let origin = OriginId { size_bytes: r.u64(), digest: r.take::<32>() };
        out.push(CheckpointRecord { name, thin, kind, deleting, created, generation, root_sectors, origin });
    }
    if table[r.pos..].iter().any(|&b| b != 0) {
        return Err(SlotFault::Invalid("reserved bytes"));
    }
    Ok(out)
}

/// The copy that is not the newest. At rest both copies say the same, so
/// damage to either one loses nothing; a copy left behind by an interrupted
/// update, or by cowroot 0.1 (which kept only one copy current), is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtherCopy {
    InSync,
    Stale,
    Damaged(SlotFault),
}

/// Both copies as read: each decoded, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copies(pub [Result<PoolHeader, SlotFault>; 2]);

impl Copies {
    pub fn read(slots: [&[u8]; 2]) -> Copies {
        Copies(slots.map(PoolHeader::decode))
    }

    /// The newest valid copy, and which slot it came from.
    pub fn newest(&self) -> Option<(usize, &PoolHeader)> {
        let mut best: Option<(usize, &PoolHeader)> = None;
        for (index, result) in self.0.iter().enumerate() {
            if let Ok(header) = result {
                if best.is_none_or(|(_, b)| header.seq > b.seq) {
                    best = Some((index, header));
                }
            }
        }
        best
    }

    /// The state of the copy that is not the newest.
    pub fn other(&self) -> Option<OtherCopy> {
        let (newest_slot, newest) = self.newest()?;
        Some(match &self.0[1 - newest_slot] {
            Ok(other) if other.same_state(newest) => OtherCopy::InSync,
            Ok(_) => OtherCopy::Stale,
            // A pool formatted by 0.1 and never booted wrote one copy.
            Err(SlotFault::Empty) if newest.seq < 2 => OtherCopy::Stale,
            Err(fault) => OtherCopy::Damaged(fault.clone()),
        })
    }

    pub fn newer_version(&self) -> Option<u32> {
        self.0.iter().find_map(|c| match c {
            Err(SlotFault::NewerVersion(v)) => Some(*v),
            _ => None,
        })
    }
}

/// Which slot the next write goes to: never the one holding the newest copy.
pub fn slot_for_next_write(current_slot: Option<usize>) -> usize {
    match current_slot {
        Some(slot) => 1 - slot,
        None => 0,
    }
}

#[cfg(test)]
pub(crate) fn sample() -> PoolHeader {
    PoolHeader {
        version: VERSION,
        seq: 7,
        pool_uuid: [9; 16],
        device_sectors: Sectors(1 << 20),
        block_sectors: 128,
        flags: 0,
        meta: Extent { start: Sectors(2048), len: Sectors(8192) },
        data: Extent { start: Sectors(10240), len: Sectors(1_000_000) },
        active_thin: 1,
        garbage_thin: 0,
        next_thin: 2,
        generation: 1,
        origin: Some(OriginId { size_bytes: 4096, digest: [3; 32] }),
        transaction: 3,
        origin_file: Some([4; 16]),
        root_sectors: Sectors(0),
        base_thin: 0,
        garbage_thin2: 0,
        volumes: Vec::new(),
        checkpoints: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_reference_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn header_round_trips() {
        let header = sample();
        assert_eq!(PoolHeader::decode(&header.encode()), Ok(header.clone()));
        let mut bare = header;
        bare.origin = None;
        bare.active_thin = 0;
        assert_eq!(PoolHeader::decode(&bare.encode()), Ok(bare));
    }

    /// Re-seals a copy as versions 1 to 4 wrote it: nothing past the base.
    fn seal_short(buf: &mut [u8; SLOT_BYTES]) {
        buf[BASE_LEN..ENCODED_LEN].fill(0);
        seal(buf);
    }

    /// A copy in an older version's layout (fields past it zeroed).
    fn as_version(header: &PoolHeader, version: u32, used: usize) -> [u8; SLOT_BYTES] {
        let mut buf = header.encode();
        buf[8..12].copy_from_slice(&version.to_le_bytes());
        buf[used..BODY_LEN].fill(0);
        seal_short(&mut buf);
        buf
    }

    /// A copy as cowroot 0.1 wrote it: version 1, no transaction field.
    fn version_1(header: &PoolHeader) -> [u8; SLOT_BYTES] {
        as_version(header, 1, 160)
    }

    #[test]
    fn version_4_copies_read_without_volumes_and_version_5_keeps_them() {
        let mut h = sample();
        h.next_thin = 9;
        let read = PoolHeader::decode(&as_version(&h, 4, 200)).unwrap();
        assert_eq!((read.version, read.volumes.len(), read.next_thin), (4, 0, 9));
        let name = |n: &str| VolumeName::parse(n).unwrap();
        h.volumes = vec![
            VolumeRecord { name: name("home"), thin: 7, sectors: Sectors(1 << 21), formatted: true },
            VolumeRecord {
                name: name(&"l".repeat(VOLUME_NAME_MAX)),
                thin: 8,
                sectors: Sectors(32768),
                formatted: false,
            },
        ];
        assert_eq!(PoolHeader::decode(&h.encode()), Ok(h.clone()));
        // A version-4 copy has no volume table: what follows its base is
        // not read.
        let mut old = h.encode();
        old[8..12].copy_from_slice(&4u32.to_le_bytes());
        seal(&mut old);
        assert_eq!(PoolHeader::decode(&old).map(|h| h.volumes.len()), Ok(0));
        // A torn extension is a torn copy.
        let mut torn = h.encode();
        torn[300] ^= 1;
        assert_eq!(PoolHeader::decode(&torn), Err(SlotFault::BadChecksum));
        // An older cowroot checks only the base: a version-5 copy's base
        // checksum is right, so it refuses the copy by its version.
        let enc = h.encode();
        assert_eq!(crc32c(&enc[..252]).to_le_bytes(), enc[252..256]);
        // Volume thins that clash with each other, the active thin or the
        // unreserved ids are refused, as are repeated names.
        for (thin, other_name) in [(7, "x"), (1, "x"), (9, "x"), (0, "x"), (6, "home")] {
            let mut bad = h.clone();
            bad.volumes[1] = VolumeRecord { name: name(other_name), thin, sectors: Sectors(8), formatted: false };
            assert_eq!(PoolHeader::decode(&bad.encode()), Err(SlotFault::Invalid("volume record")), "{thin}");
        }
        let mut flags = h.encode();
        flags[BASE_LEN + 8 + VOLUME_NAME_MAX + 4] = 2;
        seal(&mut flags);
        assert_eq!(PoolHeader::decode(&flags), Err(SlotFault::Invalid("volume flags")));
    }

    #[test]
    fn version_5_copies_read_without_checkpoints_and_version_6_keeps_them() {
        let mut h = sample();
        h.next_thin = 12;
        h.volumes = vec![VolumeRecord {
            name: VolumeName::parse("home").unwrap(),
            thin: 7,
            sectors: Sectors(1 << 21),
            formatted: true,
        }];
        let record = |name: &str, thin: u32, kind: CheckpointKind| CheckpointRecord {
            name: checkpoint::parse_name(name).unwrap(),
            thin,
            kind,
            deleting: false,
            created: 1_700_000_000,
            generation: 3,
            root_sectors: Sectors(0),
            origin: OriginId { size_bytes: 4096, digest: [3; 32] },
        };
        h.checkpoints = vec![
            record("before-update", 9, CheckpointKind::Manual),
            record("reset-g2", 10, CheckpointKind::Reset),
            CheckpointRecord { deleting: true, ..record("rollback-g3", 11, CheckpointKind::Rollback) },
        ];
        assert_eq!(PoolHeader::decode(&h.encode()), Ok(h.clone()));
        // A version-5 copy has no checkpoint table: what follows is not read.
        let mut old = h.encode();
        old[8..12].copy_from_slice(&5u32.to_le_bytes());
        seal(&mut old);
        let read = PoolHeader::decode(&old).unwrap();
        assert_eq!((read.volumes.len(), read.checkpoints.len()), (1, 0));
        // A torn checkpoint table is a torn copy; the older parts' checksums
        // stay right, so an older cowroot refuses it by its version.
        let mut torn = h.encode();
        torn[V5_LEN + 20] ^= 1;
        assert_eq!(PoolHeader::decode(&torn), Err(SlotFault::BadChecksum));
        let enc = h.encode();
        assert_eq!(crc32c(&enc[..BODY_LEN]).to_le_bytes(), enc[BODY_LEN..BASE_LEN]);
        assert_eq!(crc32c(&enc[BASE_LEN..EXT_END]).to_le_bytes(), enc[EXT_END..V5_LEN]);
        // A checkpoint's thin may not be the root's, a volume's, another
        // checkpoint's or unreserved; names are unique.
        for (thin, name) in [(1, "x"), (7, "x"), (9, "x"), (12, "x"), (0, "x"), (8, "before-update")] {
            let mut bad = h.clone();
            bad.checkpoints[1] = record(name, thin, CheckpointKind::Reset);
            assert_eq!(PoolHeader::decode(&bad.encode()), Err(SlotFault::Invalid("checkpoint record")), "{thin}");
        }
        let mut kind = h.encode();
        kind[V5_LEN + 8 + VOLUME_NAME_MAX + 4] = 3;
        seal(&mut kind);
        assert_eq!(PoolHeader::decode(&kind), Err(SlotFault::Invalid("checkpoint kind")));
        const { assert!(ENCODED_LEN <= SLOT_BYTES) };
    }

    #[test]
    fn version_2_copies_read_without_a_file_identity() {
        let mut buf = as_version(&sample(), 2, 168);
        let read = PoolHeader::decode(&buf).unwrap();
        assert_eq!((read.version, read.origin_file, read.transaction), (2, None, 3));
        buf[170] = 1;
        seal_short(&mut buf);
        assert_eq!(PoolHeader::decode(&buf), Err(SlotFault::Invalid("reserved bytes")));
    }

    #[test]
    fn version_1_copies_read_as_transaction_0_and_upgrade_on_write() {
        let mut old = sample();
        old.transaction = 0;
        let read = PoolHeader::decode(&version_1(&old)).unwrap();
        assert_eq!((read.version, read.transaction), (1, 0));
        let next = read.next().unwrap();
        assert_eq!((next.version, next.seq), (VERSION, old.seq + 1));
        let written = PoolHeader::decode(&next.encode()).unwrap();
        assert_eq!(written.version, VERSION);
        // A version-1 copy with bytes in the later field is not one 0.1 wrote.
        let mut odd = version_1(&old);
        odd[165] = 1;
        seal_short(&mut odd);
        assert_eq!(PoolHeader::decode(&odd), Err(SlotFault::Invalid("reserved bytes")));
    }

    #[test]
    fn newer_versions_are_recognised_not_misread() {
        let mut buf = sample().encode();
        buf[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        // Only the base checksum: a newer version's extension is not ours
        // to check.
        let crc = crc32c(&buf[..BODY_LEN]);
        buf[BODY_LEN..BASE_LEN].copy_from_slice(&crc.to_le_bytes());
        buf[BASE_LEN] ^= 0x55;
        assert_eq!(PoolHeader::decode(&buf), Err(SlotFault::NewerVersion(VERSION + 1)));
        let copies = Copies::read([&buf, &sample().encode()]);
        assert_eq!(copies.newer_version(), Some(VERSION + 1));
    }

    /// Re-encodes with a valid checksum after `edit` changed the bytes.
    fn crafted(edit: impl FnOnce(&mut [u8; SLOT_BYTES])) -> Result<PoolHeader, SlotFault> {
        let mut buf = sample().encode();
        edit(&mut buf);
        seal(&mut buf);
        PoolHeader::decode(&buf)
    }

    #[test]
    fn checksum_valid_but_absurd_headers_are_refused() {
        let set32 = |at: usize, v: u32| move |b: &mut [u8; SLOT_BYTES]| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let set64 = |at: usize, v: u64| move |b: &mut [u8; SLOT_BYTES]| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        // has_origin other than 0/1.
        assert_eq!(crafted(set32(112, 2)), Err(SlotFault::Invalid("origin record")));
        // An active thin without an origin record.
        let no_origin = crafted(|b| {
            b[112..116].fill(0);
            b[120..160].fill(0);
        });
        assert_eq!(no_origin, Err(SlotFault::Invalid("active thin without an origin record")));
        // Thin ids past dm-thin's 24 bits, garbage at or past next.
        assert_eq!(crafted(set32(96, 1 << 25)), Err(SlotFault::Invalid("thin ids")));
        assert_eq!(crafted(set32(92, 2)), Err(SlotFault::Invalid("thin ids")));
        assert_eq!(crafted(set32(92, 1)), Err(SlotFault::Invalid("thin ids")));
        // seq that would wrap, or zero.
        assert_eq!(crafted(set64(16, u64::MAX)), Err(SlotFault::Invalid("sequence number")));
        assert_eq!(crafted(set64(16, 0)), Err(SlotFault::Invalid("sequence number")));
        // Unknown flags and padding.
        assert_eq!(crafted(set32(52, 16)), Err(SlotFault::Invalid("flags")));
        assert_eq!(crafted(set32(100, 1)), Err(SlotFault::Invalid("reserved bytes")));
        assert_eq!(crafted(|b| b[204] = 1), Err(SlotFault::Invalid("reserved bytes")));
        assert_eq!(crafted(|b| b[600] = 1), Err(SlotFault::Invalid("reserved bytes")));
        assert_eq!(crafted(set32(BASE_LEN, 1)), Err(SlotFault::Invalid("volume name")));
        assert_eq!(crafted(set32(BASE_LEN, 9)), Err(SlotFault::Invalid("volume count")));
        // A header at its last usable seq can be read but not advanced.
        let mut last = sample();
        last.seq = u64::MAX - 1;
        assert!(PoolHeader::decode(&last.encode()).is_ok());
        assert!(last.next().is_err());
    }

    #[test]
    fn corrupted_copies_are_rejected() {
        let good = sample().encode();
        assert_eq!(PoolHeader::decode(&[0u8; SLOT_BYTES]), Err(SlotFault::Empty));
        for flip in [8, 16, 100, 200, BODY_LEN, 300, EXT_END] {
            let mut bad = good;
            bad[flip] ^= 0x40;
            assert_eq!(PoolHeader::decode(&bad), Err(SlotFault::BadChecksum), "byte {flip}");
        }
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(PoolHeader::decode(&bad), Err(SlotFault::NoMagic));
        // Bytes after the checksum are not part of the header.
        let mut tail = good;
        tail[SLOT_BYTES - 1] = 1;
        assert!(PoolHeader::decode(&tail).is_ok());
        // A well-formed copy that points into the reserved region is refused.
        let mut h = sample();
        h.meta.start = Sectors(0);
        assert_eq!(PoolHeader::decode(&h.encode()), Err(SlotFault::Invalid("metadata extent")));
        let mut h = sample();
        h.data.len = Sectors(h.device_sectors.0);
        assert!(PoolHeader::decode(&h.encode()).is_err());
        let mut h = sample();
        h.data.len = Sectors(u64::MAX - 5);
        assert_eq!(PoolHeader::decode(&h.encode()), Err(SlotFault::Invalid("data extent")));
    }

    #[test]
    fn transactions_start_from_the_pool_uuid() {
        let mut a = sample();
        let mut b = sample();
        a.pool_uuid = [1; 16];
        b.pool_uuid = [2; 16];
        let (ta, tb) = (a.transaction_after(0).unwrap(), b.transaction_after(0).unwrap());
        assert_ne!(ta, tb);
        assert!(ta > 0 && tb > 0);
        assert_eq!(a.transaction_after(ta), Some(ta + 1));
        assert_eq!(a.transaction_after(u64::MAX - 1), None);
    }

    #[test]
    fn newest_valid_copy_wins_and_a_damaged_one_is_named() {
        let older = sample();
        let mut newer = sample();
        newer.seq = 8;
        newer.generation = 2;
        let (a, b) = (older.encode(), newer.encode());
        assert_eq!(Copies::read([&a, &b]).newest(), Some((1, &newer)));
        assert_eq!(Copies::read([&b, &a]).newest(), Some((0, &newer)));
        assert_eq!(Copies::read([&b, &a]).other(), Some(OtherCopy::Stale));
        let mut twin = newer.clone();
        twin.seq = 9;
        assert_eq!(Copies::read([&b, &twin.encode()]).other(), Some(OtherCopy::InSync));
        // A torn write of the newer copy (second half still old bytes)
        // leaves the older copy in charge, and the torn one is named.
        let mut torn = b;
        torn[SLOT_BYTES / 2..].copy_from_slice(&a[SLOT_BYTES / 2..]);
        torn[40..60].copy_from_slice(&[0xff; 20]);
        let copies = Copies::read([&a, &torn]);
        assert_eq!(copies.newest(), Some((0, &older)));
        assert_eq!(copies.other(), Some(OtherCopy::Damaged(SlotFault::BadChecksum)));
        // A zeroed copy next to a header that was written twice or more.
        let zero = [0u8; SLOT_BYTES];
        assert_eq!(Copies::read([&zero, &b]).other(), Some(OtherCopy::Damaged(SlotFault::Empty)));
        let mut first = sample();
        first.seq = 1;
        assert_eq!(Copies::read([&first.encode(), &zero]).other(), Some(OtherCopy::Stale));
        assert_eq!(Copies::read([&zero, &zero]).newest(), None);
        assert_eq!(slot_for_next_write(Some(1)), 0);
        assert_eq!(slot_for_next_write(Some(0)), 1);
        assert_eq!(slot_for_next_write(None), 0);
    }
}
