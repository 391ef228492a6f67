//! Recognising what a device already holds, from its first MiB, so nothing
//! foreign is ever formatted (invariant 2). Pure: bytes in, verdict out.

use crate::header::{MAGIC, SLOT_OFFSETS};

/// How much of the device start `detect` wants to see.
pub const PROBE_BYTES: usize = 1 << 20;

struct Magic {
    what: &'static str,
    offset: usize,
    bytes: &'static [u8],
}

const MAGICS: &[Magic] = &[
    Magic { what: "an ext2/3/4 filesystem", offset: 1080, bytes: &[0x53, 0xEF] },
    Magic { what: "an XFS filesystem", offset: 0, bytes: b"XFSB" },
    Magic { what: "a btrfs filesystem", offset: 65536 + 64, bytes: b"_BHRfS_M" },
    Magic { what: "a squashfs filesystem", offset: 0, bytes: b"hsqs" },
    Magic { what: "an ISO 9660 filesystem", offset: 32769, bytes: b"CD001" },
    Magic { what: "an F2FS filesystem", offset: 1024, bytes: &[0x10, 0x20, 0xF5, 0xF2] },
    Magic { what: "an EROFS filesystem", offset: 1024, bytes: &[0xE2, 0xE1, 0xF5, 0xE0] },
    Magic { what: "an NTFS filesystem", offset: 3, bytes: b"NTFS    " },
    Magic { what: "a FAT filesystem", offset: 54, bytes: b"FAT1" },
    Magic { what: "a FAT filesystem", offset: 82, bytes: b"FAT32" },
    Magic { what: "a LUKS volume", offset: 0, bytes: b"LUKS\xba\xbe" },
    Magic { what: "a LUKS volume", offset: 0, bytes: b"SKUL\xba\xbe" },
    Magic { what: "a swap area", offset: 4086, bytes: b"SWAPSPACE2" },
    Magic { what: "a swap area", offset: 4086, bytes: b"SWAP-SPACE" },
    Magic { what: "a GPT partition table", offset: 512, bytes: b"EFI PART" },
    Magic { what: "an MD RAID member", offset: 0, bytes: &[0xFC, 0x4E, 0x2B, 0xA9] },
    Magic { what: "an MD RAID member", offset: 4096, bytes: &[0xFC, 0x4E, 0x2B, 0xA9] },
    Magic {
        what: "a device-mapper thin-pool metadata device",
        offset: 32,
        bytes: &[0xBA, 0x53, 0x9C, 0x01, 0, 0, 0, 0],
    },
    Magic { what: "a ReiserFS filesystem", offset: 65536 + 52, bytes: b"ReIsEr" },
    Magic { what: "a JFS filesystem", offset: 32768, bytes: b"JFS1" },
    Magic { what: "an HFS+ filesystem", offset: 1024, bytes: b"H+\0\x04" },
    Magic { what: "an HFSX filesystem", offset: 1024, bytes: b"HX\0\x05" },
    Magic { what: "a NILFS2 filesystem", offset: 1024 + 6, bytes: &[0x34, 0x34] },
    Magic { what: "a VDO volume", offset: 0, bytes: b"dmvdo001" },
    Magic { what: "a Stratis pool member", offset: 4096 + 32, bytes: b"!Stra0tis\x86\xff\x02^\x41rh" },
    Magic { what: "a dm-integrity device", offset: 0, bytes: b"integrt\0" },
    Magic { what: "a Ceph BlueStore device", offset: 0, bytes: b"bluestore block device" },
    Magic {
        what: "a bcachefs filesystem",
        offset: 4096 + 24,
        bytes: &[0xC6, 0x85, 0x73, 0xF6, 0x66, 0xCE, 0x90, 0xA9, 0xD9, 0x6A, 0x60, 0xCF, 0x80, 0x3D, 0xF7, 0xEF],
    },
    Magic {
        what: "a bcache device",
        offset: 4096 + 24,
        bytes: &[0xC6, 0x85, 0x73, 0xF6, 0x4E, 0x1A, 0x45, 0xCA, 0x82, 0x65, 0xF5, 0x7F, 0x48, 0xBA, 0x6D, 0x81],
    },
];

/// Describes the first signature found, or `None` for a device cowroot may
/// format. A cowroot header counts: formatting over it destroys a pool.
pub fn detect(start: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, bytes: &[u8]| start.get(offset..offset + bytes.len()) == Some(bytes);
    if SLOT_OFFSETS.iter().any(|&o| at(o as usize, MAGIC)) {
        return Some("a cowroot pool");
    }
    detect_foreign(start)
}

/// `detect`, but blind to cowroot's own magic.
pub fn detect_foreign(start: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, bytes: &[u8]| start.get(offset..offset + bytes.len()) == Some(bytes);
    // LVM writes its label into one of the first four sectors.
    if (0..4).any(|s| at(s * 512, b"LABELONE") && at(s * 512 + 24, b"LVM2 001")) {
        return Some("an LVM physical volume");
    }
    if let Some(m) = MAGICS.iter().find(|m| at(m.offset, m.bytes)) {
        return Some(m.what);
    }
    // ZFS: the uberblock array of label 0 starts at 128 KiB, 1 KiB apart.
    if (0..128).any(|i| at(128 * 1024 + i * 1024, &ZFS_UBERBLOCK_MAGIC)) {
        return Some("a ZFS pool member");
    }
    if at(510, &[0x55, 0xAA]) {
        return Some("a partition table or boot sector (MBR)");
    }
    None
}

/// `ub_magic` 0x00bab10c, little-endian.
const ZFS_UBERBLOCK_MAGIC: [u8; 8] = [0x0c, 0xb1, 0xba, 0, 0, 0, 0, 0];

/// Describes a signature kept at the end of a device of `size` bytes, from
/// its last bytes `end`: a backup GPT header, an md 0.90/1.0 superblock,
/// ZFS's last two labels.
pub fn detect_end(end: &[u8], size: u64) -> Option<&'static str> {
    let len = end.len() as u64;
    if len == 0 || size < len {
        return None;
    }
    let base = size - len;
    // Bytes at absolute device offset `offset`, if they are in `end`.
    let at = |offset: u64, bytes: &[u8]| {
        offset.checked_sub(base).and_then(|i| end.get(i as usize..(i as usize).checked_add(bytes.len())?))
            == Some(bytes)
    };
    for sector in [512, 4096] {
        if size >= sector && at(size - sector, b"EFI PART") {
            return Some("a GPT partition table (backup copy)");
        }
    }
    const MD_MAGIC: [u8; 4] = [0xFC, 0x4E, 0x2B, 0xA9];
    let sectors = size / 512;
    // md 1.0: 8 KiB from the end, 4 KiB aligned; md 0.90: 64 KiB aligned.
    let md10 = (sectors.saturating_sub(16) & !7) * 512;
    let md090 = ((sectors & !127).saturating_sub(128)) * 512;
    if (sectors >= 16 && at(md10, &MD_MAGIC)) || (sectors >= 128 && at(md090, &MD_MAGIC)) {
        return Some("an MD RAID member (superblock at the end)");
    }
    let aligned = size & !(256 * 1024 - 1);
    for label in [512 * 1024, 256 * 1024] {
        if let Some(start) = aligned.checked_sub(label) {
            if (0..128).any(|i| at(start + 128 * 1024 + i * 1024, &ZFS_UBERBLOCK_MAGIC)) {
                return Some("a ZFS pool member");
            }
        }
    }
    None
}

/// The offset of the first byte that is not zero.
pub fn first_non_zero(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b != 0)
}

pub fn all_zero(bytes: &[u8]) -> bool {
    // Eight bytes at a time: this runs over a MiB at every boot, and in a
    // slow (emulated) guest a byte loop costs milliseconds.
    let mut words = bytes.chunks_exact(8);
    words.all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(offset: usize, bytes: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; PROBE_BYTES];
        buf[offset..offset + bytes.len()].copy_from_slice(bytes);
        buf
    }

    #[test]
    fn recognises_common_signatures() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with(1080, &[0x53, 0xEF]), "ext2/3/4"),
            (with(0, b"XFSB"), "XFS"),
            (with(65600, b"_BHRfS_M"), "btrfs"),
            (with(0, b"LUKS\xba\xbe\0\x02"), "LUKS"),
            (with(512, b"LABELONE\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0LVM2 001"), "LVM"),
            (with(4086, b"SWAPSPACE2"), "swap"),
            (with(512, b"EFI PART"), "GPT"),
            (with(510, &[0x55, 0xAA]), "MBR"),
            (with(0, b"hsqs"), "squashfs"),
            (with(32769, b"CD001"), "ISO"),
            (with(32, &[0xBA, 0x53, 0x9C, 0x01, 0, 0, 0, 0]), "thin-pool"),
            (with(0, MAGIC), "cowroot pool"),
            (with(65536, MAGIC), "cowroot pool"),
            (with(4096, &[0xFC, 0x4E, 0x2B, 0xA9]), "MD RAID"),
            (with(65536 + 52, b"ReIsEr2Fs"), "ReiserFS"),
            (with(32768, b"JFS1"), "JFS"),
            (with(1024, b"H+\0\x04"), "HFS+"),
            (with(0, b"dmvdo001"), "VDO"),
            (with(0, b"integrt\0"), "dm-integrity"),
            (with(0, b"bluestore block device\n"), "BlueStore"),
            (
                with(
                    4096 + 24,
                    &[0xC6, 0x85, 0x73, 0xF6, 0x66, 0xCE, 0x90, 0xA9, 0xD9, 0x6A, 0x60, 0xCF, 0x80, 0x3D, 0xF7, 0xEF],
                ),
                "bcachefs",
            ),
            (with(128 * 1024 + 5 * 1024, &ZFS_UBERBLOCK_MAGIC), "ZFS"),
        ];
        for (buf, want) in cases {
            let found = detect(&buf).unwrap_or("nothing");
            assert!(found.contains(want), "wanted {want}, found {found}");
        }
    }

    #[test]
    fn signatures_at_the_device_end() {
        let size: u64 = 100 << 20;
        let end_at = |offset: u64, bytes: &[u8]| {
            let mut end = vec![0u8; 1 << 20];
            let i = (offset - (size - (1 << 20))) as usize;
            end[i..i + bytes.len()].copy_from_slice(bytes);
            end
        };
        assert!(detect_end(&end_at(size - 512, b"EFI PART"), size).unwrap().contains("GPT"));
        let md10 = ((size / 512 - 16) & !7) * 512;
        assert!(detect_end(&end_at(md10, &[0xFC, 0x4E, 0x2B, 0xA9]), size).unwrap().contains("MD RAID"));
        let l3 = (size & !(256 * 1024 - 1)) - 256 * 1024 + 128 * 1024;
        assert!(detect_end(&end_at(l3, &ZFS_UBERBLOCK_MAGIC), size).unwrap().contains("ZFS"));
        assert_eq!(detect_end(&vec![0u8; 1 << 20], size), None);
        // Short or odd inputs are handled.
        assert_eq!(detect_end(&[], size), None);
        assert_eq!(detect_end(&[0u8; 100], 10), None);
    }

    #[test]
    fn blank_and_random_devices_carry_nothing() {
        let zero = vec![0u8; PROBE_BYTES];
        assert_eq!(detect(&zero), None);
        assert!(all_zero(&zero));
        // Deterministic noise without any magic at the probed offsets.
        let mut state = 0x1234_5678u32;
        let noise: Vec<u8> = (0..PROBE_BYTES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(detect(&noise), None);
        assert!(!all_zero(&noise));
        // A short read (tiny device) is handled.
        assert_eq!(detect(&[0u8; 10]), None);
    }
}
