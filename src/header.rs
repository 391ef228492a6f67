//! The pool header: what cowroot keeps in the first MiB of the pool device.
//!
//! Two copies live at fixed offsets. Each carries a sequence number and a
//! CRC32C; a writer always overwrites the *older* copy, so a torn write can
//! only damage the copy that was not the newest, and the newest valid copy
//! wins on read (invariant 3).

use crate::units::Sectors;

pub const MAGIC: &[u8; 8] = b"COWROOT1";
pub const VERSION: u32 = 1;
/// The whole reserved region at the start of the pool device.
pub const RESERVED_BYTES: u64 = 1 << 20;
/// One copy occupies one 4 KiB block (written whole, with O_DIRECT-sized I/O).
pub const SLOT_BYTES: usize = 4096;
/// Byte offsets of the two copies (different 64 KiB-aligned regions).
pub const SLOT_OFFSETS: [u64; 2] = [0, 64 * 1024];
/// Encoded length covered by the checksum (the CRC sits right after it).
const BODY_LEN: usize = 252;
/// Bytes of a slot that a header uses; the rest of the slot is zero.
pub const ENCODED_LEN: usize = BODY_LEN + 4;

/// Set when `cowroot reset` asked the next boot to discard changes.
pub const FLAG_RESET_NEXT_BOOT: u32 = 1;

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
    /// reset); 0 for none.
    pub garbage_thin: u32,
    /// The id the next reset creates.
    pub next_thin: u32,
    /// Counts resets: generation N is the N-th fresh thin device.
    pub generation: u64,
    pub origin: Option<OriginId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotFault {
    NoMagic,
    BadChecksum,
    UnknownVersion(u32),
    Invalid(&'static str),
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
        match &self.origin {
            Some(origin) => {
                w.u32(1);
                w.u32(0);
                w.u64(origin.size_bytes);
                w.put(&origin.digest);
            }
            None => {
                w.u32(0);
                w.u32(0);
                w.u64(0);
                w.put(&[0u8; 32]);
            }
        }
        debug_assert!(w.pos <= BODY_LEN);
        let crc = crc32c(&buf[..BODY_LEN]);
        buf[BODY_LEN..BODY_LEN + 4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    pub fn decode(slot: &[u8]) -> Result<PoolHeader, SlotFault> {
        if slot.len() < BODY_LEN + 4 || &slot[..8] != MAGIC {
            return Err(SlotFault::NoMagic);
        }
        let stored = u32::from_le_bytes(slot[BODY_LEN..BODY_LEN + 4].try_into().unwrap_or([0; 4]));
        if crc32c(&slot[..BODY_LEN]) != stored {
            return Err(SlotFault::BadChecksum);
        }
        let mut r = Reader { buf: slot, pos: 8 };
        let version = r.u32();
        if version != VERSION {
            return Err(SlotFault::UnknownVersion(version));
        }
        let _body_len = r.u32();
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
        let _pad = r.u32();
        let generation = r.u64();
        let has_origin = r.u32();
        let _pad = r.u32();
        let size_bytes = r.u64();
        let digest = r.take::<32>();
        let origin = (has_origin == 1).then_some(OriginId { size_bytes, digest });
        let header = PoolHeader {
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
        };
        header.validate().map_err(SlotFault::Invalid)?;
        Ok(header)
    }

    /// Checks that a header that passed its checksum also makes sense, so a
    /// bug or a hand edit cannot point the pool at the header region.
    fn validate(&self) -> Result<(), &'static str> {
        let reserved = RESERVED_BYTES / 512;
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
        if self.next_thin == 0 || self.active_thin >= self.next_thin {
            return Err("thin ids");
        }
        Ok(())
    }
}

/// The newest valid copy, and which slot it came from.
pub fn newest(slots: [&[u8]; 2]) -> Option<(usize, PoolHeader)> {
    let decoded = slots.map(PoolHeader::decode);
    let mut best: Option<(usize, PoolHeader)> = None;
    for (index, result) in decoded.into_iter().enumerate() {
        if let Ok(header) = result {
            if best.as_ref().is_none_or(|(_, b)| header.seq > b.seq) {
                best = Some((index, header));
            }
        }
    }
    best
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

    #[test]
    fn corrupted_copies_are_rejected() {
        let good = sample().encode();
        assert_eq!(PoolHeader::decode(&[0u8; SLOT_BYTES]), Err(SlotFault::NoMagic));
        for flip in [8, 16, 100, 200, BODY_LEN] {
            let mut bad = good;
            bad[flip] ^= 0x40;
            assert_eq!(PoolHeader::decode(&bad), Err(SlotFault::BadChecksum), "byte {flip}");
        }
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
    fn newest_valid_copy_wins() {
        let older = sample();
        let mut newer = sample();
        newer.seq = 8;
        newer.generation = 2;
        let (a, b) = (older.encode(), newer.encode());
        assert_eq!(newest([&a, &b]), Some((1, newer.clone())));
        assert_eq!(newest([&b, &a]), Some((0, newer.clone())));
        // A torn write of the newer copy (second half still old bytes)
        // leaves the older copy in charge.
        let mut torn = b;
        torn[SLOT_BYTES / 2..].copy_from_slice(&a[SLOT_BYTES / 2..]);
        torn[40..60].copy_from_slice(&[0xff; 20]);
        assert_eq!(newest([&a, &torn]), Some((0, older)));
        assert_eq!(newest([&[0u8; SLOT_BYTES], &[0u8; SLOT_BYTES]]), None);
        assert_eq!(slot_for_next_write(Some(1)), 0);
        assert_eq!(slot_for_next_write(Some(0)), 1);
        assert_eq!(slot_for_next_write(None), 0);
    }
}
