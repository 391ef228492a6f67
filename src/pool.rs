//! What a pool device holds, decided from its first and last MiB: blank,
//! ours (with a damaged copy, perhaps), foreign, or ours but unreadable.
//! Pure: bytes in, verdict out.

use crate::error::Error;
use crate::header::{self, Copies, OtherCopy, PoolHeader, SlotFault, ENCODED_LEN, SLOT_BYTES, SLOT_OFFSETS};
use crate::signature;
use crate::units::Bytes;

/// How much of the device end is read: backup GPT, md 1.0 superblocks and
/// ZFS's last labels live there.
pub const END_PROBE_BYTES: usize = 1 << 20;

// One of these exists per command; boxing the header would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// The first and last MiB are all zeros: cowroot may format it.
    Blank,
    Ours {
        slot: usize,
        header: PoolHeader,
        /// The other copy: in sync, stale or damaged (then the next header
        /// write rewrites it).
        other: OtherCopy,
    },
    Foreign(&'static str),
    /// Not zero, not ours, nothing recognised: still refused at boot.
    Unrecognised,
    /// Both copies are cowroot's but neither is readable.
    BothCopiesDamaged([SlotFault; 2]),
    /// A valid copy of a header version this cowroot does not know.
    NewerVersion(u32),
}

impl PoolState {
    /// The damaged copy of a pool that is ours, if one is.
    pub fn damaged_copy(&self) -> Option<(usize, SlotFault)> {
        match self {
            PoolState::Ours { slot, other: OtherCopy::Damaged(fault), .. } => Some((1 - slot, fault.clone())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFacts {
    pub device: String,
    pub size: Bytes,
    pub state: PoolState,
    /// The thin-pool metadata's first block is all zero (the kernel would
    /// format fresh, empty metadata over it). Only read for our pools.
    pub metadata_blank: bool,
}

impl PoolFacts {
    /// The error to report for a state that cannot be used as a pool.
    pub fn refusal(&self) -> Option<Error> {
        let device = self.device.clone();
        match &self.state {
            PoolState::Blank => None,
            PoolState::Ours { header, .. } => {
                // Metadata that was used and is now blank: activating it
                // would let the kernel format it, losing every kept change.
                let used = header.active_thin != 0 || header.garbage_thin != 0 || header.transaction != 0;
                (used && self.metadata_blank).then_some(Error::MetadataBlank { device, generation: header.generation })
            }
            PoolState::Foreign(found) => Some(Error::ForeignPool { device, found: found.to_string() }),
            PoolState::Unrecognised => Some(Error::NotAPool { device }),
            PoolState::BothCopiesDamaged([a, b]) => {
                Some(Error::HeaderDamaged { device, faults: [a.to_string(), b.to_string()] })
            }
            PoolState::NewerVersion(version) => Some(Error::NewerPool { device, version: *version }),
        }
    }
}

fn slot(start: &[u8], index: usize) -> &[u8] {
    let offset = SLOT_OFFSETS[index] as usize;
    start.get(offset..offset + SLOT_BYTES).unwrap_or(&[])
}

/// The bytes each slot's copy uses: its version's, or all a header may
/// use for a copy that does not decode (a damaged one of any version).
fn used_bytes(copies: &Copies) -> [usize; 2] {
    [0, 1].map(|i| copies.0[i].as_ref().map(|h| header::encoded_len(h.version)).unwrap_or(ENCODED_LEN))
}

/// `bytes` with the part of each slot that a header uses set to zero.
fn without_header_bytes(bytes: &[u8], keep: [bool; 2], used: [usize; 2]) -> Vec<u8> {
    let mut rest = bytes.to_vec();
    for (i, &offset) in SLOT_OFFSETS.iter().enumerate() {
        let offset = offset as usize;
        if !keep[i] && offset < rest.len() {
            let end = (offset + used[i]).min(rest.len());
            rest[offset..end].fill(0);
        }
    }
    rest
}

/// Whether every byte of `bytes` is zero but the bytes the two header
/// copies use.
fn zero_outside_headers(bytes: &[u8], used: [usize; 2]) -> bool {
    let mut from = 0;
    for (i, &offset) in SLOT_OFFSETS.iter().enumerate() {
        let offset = (offset as usize).min(bytes.len());
        if !signature::all_zero(&bytes[from.min(offset)..offset]) {
            return false;
        }
        from = offset + used[i];
    }
    signature::all_zero(bytes.get(from..).unwrap_or(&[]))
}

/// Classifies a pool device from its first MiB (`start`) and last MiB
/// (`end`; empty for a device smaller than two MiB, whose `start` then
/// covers it), for a device of `size` bytes.
///
/// A valid header counts only if nothing foreign is next to it: cowroot
/// zeroes the whole first MiB when it formats, so other data there means the
/// device was reused (repartitioned, mkfs'd) and the header is a leftover.
/// A copy that does not decode but keeps within the bytes a header uses
/// and carries no foreign signature is ours, damaged (flipped bits, a torn
/// write): with the other copy valid the pool is used and the copy
/// rewritten, never refused.
pub fn classify_pool(start: &[u8], end: &[u8], size: u64) -> PoolState {
    let copies = Copies::read([slot(start, 0), slot(start, 1)]);
    if let Some(version) = copies.newer_version() {
        return PoolState::NewerVersion(version);
    }
    let used = used_bytes(&copies);
    // The usual case, decided without copying a MiB: both copies valid,
    // nothing else in the first MiB, nothing past the data region.
    if let (Ok(_), Ok(_), Some((slot, header))) = (&copies.0[0], &copies.0[1], copies.newest()) {
        let data_end = header.data.start.0.saturating_add(header.data.len.0).saturating_mul(512);
        let tail_from = end.len().saturating_sub(size.saturating_sub(data_end) as usize);
        if zero_outside_headers(start, used) && signature::detect_end(&end[tail_from.min(end.len())..], size).is_none()
        {
            return PoolState::Ours { slot, header: header.clone(), other: copies.other().unwrap_or(OtherCopy::Stale) };
        }
    }
    // Foreign signatures, with only valid copies out of the way: a
    // signature inside a broken copy's bytes counts.
    let valid = [copies.0[0].is_ok(), copies.0[1].is_ok()];
    let found = signature::detect_foreign(&without_header_bytes(start, [!valid[0], !valid[1]], used));
    let only_headers = signature::all_zero(&without_header_bytes(start, [false, false], used));
    match copies.newest() {
        Some((slot, header)) => {
            // The data region runs to the device end: only the few bytes
            // past it are ours to check there.
            let data_end = header.data.start.0.saturating_add(header.data.len.0).saturating_mul(512);
            let tail_from = end.len().saturating_sub(size.saturating_sub(data_end) as usize);
            let found = found.or_else(|| signature::detect_end(&end[tail_from.min(end.len())..], size));
            match found {
                Some(found) => PoolState::Foreign(found),
                None if only_headers => {
                    PoolState::Ours { slot, header: header.clone(), other: copies.other().unwrap_or(OtherCopy::Stale) }
                }
                None => PoolState::Foreign("data next to a stale cowroot header"),
            }
        }
        None if signature::all_zero(start) && signature::all_zero(end) => PoolState::Blank,
        None => match found.or_else(|| signature::detect_end(end, size)) {
            Some(found) => PoolState::Foreign(found),
            None if only_headers && (0..2).any(|i| slot(start, i).starts_with(crate::header::MAGIC)) => {
                let [a, b] = copies.0.map(|c| c.err().unwrap_or(SlotFault::Empty));
                PoolState::BothCopiesDamaged([a, b])
            }
            None => PoolState::Unrecognised,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header;

    const SIZE: u64 = 256 << 20;

    fn blank() -> (Vec<u8>, Vec<u8>) {
        (vec![0u8; signature::PROBE_BYTES], vec![0u8; END_PROBE_BYTES])
    }

    fn classify(start: &[u8]) -> PoolState {
        classify_pool(start, &vec![0u8; END_PROBE_BYTES], SIZE)
    }

    /// A pool whose header was written `writes` times (both slots used
    /// once it was written twice).
    fn pool(writes: u64) -> (Vec<u8>, PoolHeader) {
        let mut start = vec![0u8; signature::PROBE_BYTES];
        let mut h = header::sample();
        for seq in 1..=writes {
            h.seq = seq;
            let at = SLOT_OFFSETS[((seq - 1) % 2) as usize] as usize;
            start[at..at + SLOT_BYTES].copy_from_slice(&h.encode());
        }
        (start, h)
    }

    #[test]
    fn blank_and_ours() {
        let (start, end) = blank();
        assert_eq!(classify_pool(&start, &end, SIZE), PoolState::Blank);
        let (start, h) = pool(3);
        assert_eq!(classify(&start), PoolState::Ours { slot: 0, header: h, other: OtherCopy::InSync });
        // Both copies the same state: in sync.
        let mut twin = vec![0u8; signature::PROBE_BYTES];
        let mut h = header::sample();
        twin[..SLOT_BYTES].copy_from_slice(&h.encode());
        h.seq += 1;
        twin[65536..65536 + SLOT_BYTES].copy_from_slice(&h.encode());
        assert_eq!(classify(&twin), PoolState::Ours { slot: 1, header: h, other: OtherCopy::InSync });
    }

    #[test]
    fn one_damaged_copy_never_refuses_the_pool() {
        for writes in [2, 3] {
            let (good, h) = pool(writes);
            let newest = ((writes - 1) % 2) as usize;
            let older = 1 - newest;
            // Flip bytes inside the older copy, at its start, in its body,
            // in its checksum; zero it; tear it.
            let at = SLOT_OFFSETS[older] as usize;
            let mut cases: Vec<(Vec<u8>, SlotFault)> = Vec::new();
            for byte in [20, 100, 254] {
                let mut s = good.clone();
                s[at + byte] ^= 0x5a;
                cases.push((s, SlotFault::BadChecksum));
            }
            let mut s = good.clone();
            s[at] ^= 0xff;
            cases.push((s, SlotFault::NoMagic));
            let mut s = good.clone();
            s[at..at + SLOT_BYTES].fill(0);
            cases.push((s, SlotFault::Empty));
            for (start, fault) in cases {
                let state = classify(&start);
                assert_eq!(
                    state,
                    PoolState::Ours { slot: newest, header: h.clone(), other: OtherCopy::Damaged(fault) },
                    "writes {writes}"
                );
            }
            // Damage to the newest copy: the older one is used.
            let at = SLOT_OFFSETS[newest] as usize;
            let mut s = good.clone();
            s[at + 60] ^= 1;
            let state = classify(&s);
            assert_eq!(state.damaged_copy(), Some((newest, SlotFault::BadChecksum)));
            let PoolState::Ours { slot, header, .. } = state else { panic!("refused") };
            assert_eq!((slot, header.seq), (older, writes - 1));
        }
    }

    #[test]
    fn both_copies_damaged_is_its_own_error() {
        let (mut start, _) = pool(2);
        start[30] ^= 1;
        start[65536 + 30] ^= 1;
        let state = classify(&start);
        assert_eq!(state, PoolState::BothCopiesDamaged([SlotFault::BadChecksum, SlotFault::BadChecksum]));
        let facts = PoolFacts { device: "/dev/vdc".into(), size: Bytes(SIZE), state, metadata_blank: false };
        let text = facts.refusal().unwrap().to_string();
        assert!(text.contains("both copies"), "{text}");
        // Saving the device comes before any suggestion to format it.
        let save = text.find("dd if=/dev/vdc").expect("says how to save it");
        assert!(text.find("--force").is_none_or(|force| force > save), "{text}");
    }

    #[test]
    fn a_header_next_to_foreign_data_is_a_leftover() {
        let (start, _) = pool(1);
        // Repartitioned: a GPT header overwrote sector 1, slot 1 survives.
        let mut gpt = vec![0u8; signature::PROBE_BYTES];
        let second = SLOT_OFFSETS[1] as usize;
        gpt[second..second + SLOT_BYTES].copy_from_slice(&start[..SLOT_BYTES]);
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(classify(&gpt), PoolState::Foreign("a GPT partition table"));
        // Unknown bytes elsewhere in the reserved MiB.
        for at in [300_000, 70_000] {
            let mut junk = start.clone();
            junk[at] = 1;
            assert_eq!(classify(&junk), PoolState::Foreign("data next to a stale cowroot header"), "{at}");
        }
        let mut noise = vec![0u8; signature::PROBE_BYTES];
        noise[7] = 9;
        assert_eq!(classify(&noise), PoolState::Unrecognised);
    }

    #[test]
    fn foreign_bytes_in_a_slot_are_not_a_damaged_copy() {
        let (start, _) = pool(2);
        // Past the bytes a header uses, inside slot 1.
        let mut s = start.clone();
        s[65536 + header::ENCODED_LEN + 10] = 1;
        assert_eq!(classify(&s), PoolState::Foreign("data next to a stale cowroot header"));
        // A foreign signature where the older copy was.
        let mut s = start.clone();
        s[65536..65536 + header::ENCODED_LEN].fill(0);
        s[65536 + 64..65536 + 72].copy_from_slice(b"_BHRfS_M");
        assert_eq!(classify(&s), PoolState::Foreign("a btrfs filesystem"));
    }

    #[test]
    fn pool_data_at_the_device_end_is_not_foreign() {
        let (start, h) = pool(2);
        // The data region ends where the device does: anything may be there.
        let size = h.data.start.0 * 512 + h.data.len.0 * 512;
        let mut end = vec![0u8; END_PROBE_BYTES];
        end[END_PROBE_BYTES - 512..END_PROBE_BYTES - 504].copy_from_slice(b"EFI PART");
        assert!(matches!(classify_pool(&start, &end, size), PoolState::Ours { .. }));
        // Past the data region it is not ours.
        let bigger = size + 4096;
        let mut end = vec![0u8; END_PROBE_BYTES];
        end[END_PROBE_BYTES - 512..END_PROBE_BYTES - 504].copy_from_slice(b"EFI PART");
        assert_eq!(classify_pool(&start, &end, bigger), PoolState::Foreign("a GPT partition table (backup copy)"));
    }

    #[test]
    fn used_metadata_that_reads_blank_is_refused() {
        let (start, h) = pool(2);
        let state = classify(&start);
        let mut facts = PoolFacts { device: "/dev/vdc".into(), size: Bytes(SIZE), state, metadata_blank: false };
        assert!(facts.refusal().is_none());
        facts.metadata_blank = true;
        let err = facts.refusal().unwrap().to_string();
        assert!(err.contains(&format!("generation {}", h.generation)), "{err}");
        assert!(err.contains("thin_restore"), "{err}");
    }

    #[test]
    fn the_device_end_counts_for_blank() {
        let (start, mut end) = blank();
        // A backup GPT header in the last sector.
        end[END_PROBE_BYTES - 512..END_PROBE_BYTES - 504].copy_from_slice(b"EFI PART");
        assert_eq!(classify_pool(&start, &end, SIZE), PoolState::Foreign("a GPT partition table (backup copy)"));
        let (start, mut end) = blank();
        end[END_PROBE_BYTES - 100] = 1;
        assert_eq!(classify_pool(&start, &end, SIZE), PoolState::Unrecognised);
    }

    #[test]
    fn a_newer_header_is_refused_with_its_version() {
        let (mut start, _) = pool(1);
        start[8..12].copy_from_slice(&9u32.to_le_bytes());
        let crc = header::crc32c(&start[..252]);
        start[252..256].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(classify(&start), PoolState::NewerVersion(9));
    }
}
