//! What a pool device holds, decided from its first and last MiB: blank,
//! ours (with a damaged copy, perhaps), foreign, or ours but unreadable.
//! Pure: bytes in, verdict out.

use crate::error::Error;
use crate::header::{Copies, PoolHeader, SlotFault, MAGIC, SLOT_BYTES, SLOT_OFFSETS};
use crate::signature;
use crate::units::Bytes;

/// How much of the device end is read: backup GPT, md 1.0 superblocks and
/// ZFS's last labels live there.
pub const END_PROBE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// The first and last MiB are all zeros: cowroot may format it.
    Blank,
    Ours {
        slot: usize,
        header: PoolHeader,
        /// The other copy, when it should be valid and is not; the next
        /// header write repairs it.
        damaged: Option<(usize, SlotFault)>,
    },
    Foreign(&'static str),
    /// Not zero, not ours, nothing recognised: still refused at boot.
    Unrecognised,
    /// Both copies are cowroot's but neither is readable.
    BothCopiesDamaged([SlotFault; 2]),
    /// A valid copy of a header version this cowroot does not know.
    NewerVersion(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFacts {
    pub device: String,
    pub size: Bytes,
    pub state: PoolState,
}

impl PoolFacts {
    /// The error to report for a state that cannot be used as a pool.
    pub fn refusal(&self) -> Option<Error> {
        let device = self.device.clone();
        match &self.state {
            PoolState::Blank | PoolState::Ours { .. } => None,
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

/// True when every non-zero byte of `bytes` lies inside a header slot.
fn only_slots_used(bytes: &[u8]) -> bool {
    let in_slot = |i: usize| SLOT_OFFSETS.iter().any(|&o| (o as usize..o as usize + SLOT_BYTES).contains(&i));
    bytes.iter().enumerate().all(|(i, &b)| b == 0 || in_slot(i))
}

/// Classifies a pool device from its first MiB (`start`) and last MiB
/// (`end`; empty for a device smaller than two MiB, whose `start` then
/// covers it), for a device of `size` bytes.
///
/// A valid header counts only if nothing foreign is next to it: cowroot
/// zeroes the whole first MiB when it formats, so other data there means the
/// device was reused (repartitioned, mkfs'd) and the header is a leftover.
/// A copy that starts with cowroot's magic but does not decode is ours,
/// damaged (flipped bits, a torn write): with the other copy valid the pool
/// is used and the copy repaired, never refused.
pub fn classify_pool(start: &[u8], end: &[u8], size: u64) -> PoolState {
    let copies = Copies::read([slot(start, 0), slot(start, 1)]);
    if let Some(version) = copies.newer_version() {
        return PoolState::NewerVersion(version);
    }
    // Blank out the slots that are ours (valid, or damaged behind our
    // magic) and look at what is left.
    let mut rest = start.to_vec();
    let mut ours = 0;
    for (i, copy) in copies.0.iter().enumerate() {
        let bytes = slot(start, i);
        if copy.is_ok() || bytes.starts_with(MAGIC) {
            let offset = SLOT_OFFSETS[i] as usize;
            rest[offset..offset + bytes.len()].fill(0);
            ours += 1;
        }
    }
    let found = signature::detect(&rest).or_else(|| signature::detect_end(end, size));
    match copies.newest() {
        Some((slot, header)) => match found {
            Some(found) => PoolState::Foreign(found),
            // A damaged copy without our magic left bytes in its slot only.
            None if only_slots_used(&rest) => {
                PoolState::Ours { slot, header: header.clone(), damaged: copies.damaged() }
            }
            None => PoolState::Foreign("data next to a stale cowroot header"),
        },
        None if signature::all_zero(start) && signature::all_zero(end) => PoolState::Blank,
        None => match found {
            Some(found) => PoolState::Foreign(found),
            None if ours > 0 && only_slots_used(start) => {
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
        assert_eq!(classify(&start), PoolState::Ours { slot: 0, header: h, damaged: None });
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
                    PoolState::Ours { slot: newest, header: h.clone(), damaged: Some((older, fault)) },
                    "writes {writes}"
                );
            }
            // Damage to the newest copy: the older one is used.
            let at = SLOT_OFFSETS[newest] as usize;
            let mut s = good.clone();
            s[at + 60] ^= 1;
            let PoolState::Ours { slot, header, damaged } = classify(&s) else { panic!("refused") };
            assert_eq!((slot, header.seq, damaged), (older, writes - 1, Some((newest, SlotFault::BadChecksum))));
        }
    }

    #[test]
    fn both_copies_damaged_is_its_own_error() {
        let (mut start, _) = pool(2);
        start[30] ^= 1;
        start[65536 + 30] ^= 1;
        let state = classify(&start);
        assert_eq!(state, PoolState::BothCopiesDamaged([SlotFault::BadChecksum, SlotFault::BadChecksum]));
        let facts = PoolFacts { device: "/dev/vdc".into(), size: Bytes(SIZE), state };
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
