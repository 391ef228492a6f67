//! The origin's identity (invariant 6), computed from a fixed number of reads
//! whatever the image size: its size, its first MiB (where every common
//! filesystem keeps the superblock that any read-write mount rewrites), its
//! last 64 KiB, and 16 blocks spread evenly between.

use crate::header::OriginId;
use sha2::{Digest, Sha256};
use std::io;

const HEAD_BYTES: u64 = 1 << 20;
const TAIL_BYTES: u64 = 64 * 1024;
const SPREAD_SAMPLES: u64 = 16;
const SAMPLE_BYTES: u64 = 4096;

/// The byte ranges read, in order; clipped to the origin's size.
pub fn sample_ranges(size: u64) -> Vec<(u64, u64)> {
    let mut ranges = vec![(0, HEAD_BYTES.min(size))];
    for i in 1..=SPREAD_SAMPLES {
        let offset = size / (SPREAD_SAMPLES + 1) * i / SAMPLE_BYTES * SAMPLE_BYTES;
        ranges.push((offset, SAMPLE_BYTES.min(size - offset.min(size))));
    }
    let tail = size.saturating_sub(TAIL_BYTES);
    ranges.push((tail, size - tail));
    ranges
}

/// Computes the identity with `read_at(offset, buf)` filling `buf` exactly.
/// `file_mtime` (seconds, nanoseconds) is folded in for image files, so an
/// in-place edit anywhere in the file changes the identity too.
pub fn fingerprint(
    size: u64,
    file_mtime: Option<(i64, i64)>,
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> io::Result<OriginId> {
    let mut hash = Sha256::new();
    hash.update(size.to_le_bytes());
    if let Some((secs, nanos)) = file_mtime {
        hash.update(secs.to_le_bytes());
        hash.update(nanos.to_le_bytes());
    }
    let mut buf = Vec::new();
    for (offset, len) in sample_ranges(size) {
        buf.resize(len as usize, 0);
        read_at(offset, &mut buf)?;
        hash.update(offset.to_le_bytes());
        hash.update(&buf);
    }
    Ok(OriginId { size_bytes: size, digest: hash.finalize().into() })
}

/// A short human form of a digest for logs and status.
pub fn short_digest(id: &OriginId) -> String {
    id.digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(data: &[u8]) -> OriginId {
        fingerprint(data.len() as u64, None, |offset, buf| {
            buf.copy_from_slice(&data[offset as usize..offset as usize + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn reads_are_bounded_whatever_the_size() {
        for size in [0u64, 100, 1 << 20, 10 << 30, 1 << 44] {
            let ranges = sample_ranges(size);
            let total: u64 = ranges.iter().map(|r| r.1).sum();
            assert!(total <= HEAD_BYTES + TAIL_BYTES + SPREAD_SAMPLES * SAMPLE_BYTES);
            assert!(ranges.iter().all(|(o, l)| o + l <= size), "{size}");
        }
    }

    #[test]
    fn identity_changes_with_superblock_tail_or_size() {
        let image = vec![7u8; 8 << 20];
        let base = of(&image);
        assert_eq!(base, of(&image.clone()));
        let mut sb = image.clone();
        sb[1024 + 48] ^= 1; // ext4 s_wtime
        assert_ne!(of(&sb), base);
        let mut tail = image.clone();
        let last = tail.len() - 1;
        tail[last] ^= 1;
        assert_ne!(of(&tail), base);
        let longer = vec![7u8; (8 << 20) + 4096];
        assert_ne!(of(&longer), base);
        let touched = fingerprint(image.len() as u64, Some((1, 2)), |offset, buf| {
            buf.copy_from_slice(&image[offset as usize..offset as usize + buf.len()]);
            Ok(())
        })
        .unwrap();
        assert_ne!(touched, base);
        assert_eq!(short_digest(&base).len(), 12);
    }
}
