//! Reading filesystem labels and uuids, and GPT/MBR partition ids, from raw
//! bytes, so `LABEL=`/`UUID=`/`PARTUUID=`/`PARTLABEL=` resolve without udev
//! or blkid in the initramfs. Pure: bytes in, names out.

/// How many bytes from the device start `probe_fs` needs.
pub const FS_PROBE_BYTES: usize = 68 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub fstype: &'static str,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// An ext3/4 journal waiting to be replayed: even a read-only mount
    /// would write to the device.
    pub needs_recovery: bool,
}

fn get(buf: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    buf.get(offset..offset + len)
}

fn le16(buf: &[u8], offset: usize) -> Option<u16> {
    get(buf, offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le32(buf: &[u8], offset: usize) -> Option<u32> {
    get(buf, offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le64(buf: &[u8], offset: usize) -> Option<u64> {
    get(buf, offset, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// The standard 8-4-4-4-12 form of 16 bytes in on-disk (big-endian) order.
fn uuid_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

/// GPT stores the first three fields little-endian.
fn guid_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    let mut swapped = [0u8; 16];
    swapped.copy_from_slice(b);
    swapped[0..4].reverse();
    swapped[4..6].reverse();
    swapped[6..8].reverse();
    uuid_string(&swapped)
}

fn label_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    let text = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!text.is_empty()).then_some(text)
}

/// Identifies the filesystem at the start of `buf` (first 68 KiB).
pub fn probe_fs(buf: &[u8]) -> Option<FsInfo> {
    if le16(buf, 1024 + 56) == Some(0xEF53) {
        let incompat = le32(buf, 1024 + 96).unwrap_or(0);
        let compat = le32(buf, 1024 + 92).unwrap_or(0);
        let fstype = if incompat & 0x40 != 0 || incompat & 0x200 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Some(FsInfo {
            fstype,
            uuid: get(buf, 1024 + 104, 16).and_then(uuid_string),
            label: get(buf, 1024 + 120, 16).and_then(label_string),
            needs_recovery: incompat & 0x4 != 0,
        });
    }
    if get(buf, 0, 4) == Some(b"XFSB") {
        return Some(FsInfo {
            fstype: "xfs",
            uuid: get(buf, 32, 16).and_then(uuid_string),
            label: get(buf, 108, 12).and_then(label_string),
            needs_recovery: false,
        });
    }
    if get(buf, 65536 + 64, 8) == Some(b"_BHRfS_M") {
        return Some(FsInfo {
            fstype: "btrfs",
            uuid: get(buf, 65536 + 32, 16).and_then(uuid_string),
            label: get(buf, 65536 + 299, 256).and_then(label_string),
            needs_recovery: false,
        });
    }
    if get(buf, 0, 4) == Some(b"hsqs") {
        return Some(FsInfo { fstype: "squashfs", uuid: None, label: None, needs_recovery: false });
    }
    if le32(buf, 1024) == Some(0xE0F5_E1E2) {
        return Some(FsInfo {
            fstype: "erofs",
            uuid: get(buf, 1024 + 48, 16).and_then(uuid_string),
            label: get(buf, 1024 + 64, 16).and_then(label_string),
            needs_recovery: false,
        });
    }
    let fat = |serial_at: usize, label_at: usize| FsInfo {
        fstype: "vfat",
        uuid: le32(buf, serial_at).filter(|&s| s != 0).map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xffff)),
        label: get(buf, label_at, 11).and_then(label_string).filter(|l| l != "NO NAME"),
        needs_recovery: false,
    };
    if get(buf, 82, 5) == Some(b"FAT32") {
        return Some(fat(67, 71));
    }
    if get(buf, 54, 4) == Some(b"FAT1") {
        return Some(fat(39, 43));
    }
    None
}

/// One partition's ids, as the kernel's `root=PARTUUID=` and udev see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartIds {
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
}

/// Reads partition `number` (1-based) from the first bytes of its disk
/// (GPT header and entries, or the MBR). `sector` is the logical sector size.
pub fn partition_ids(disk_start: &[u8], sector: usize, number: u32) -> Option<PartIds> {
    if number == 0 {
        return None;
    }
    if get(disk_start, sector, 8) == Some(b"EFI PART") {
        let entries_lba = le64(disk_start, sector + 72)? as usize;
        let count = le32(disk_start, sector + 80)?;
        let size = le32(disk_start, sector + 84)? as usize;
        if number > count || size < 128 {
            return None;
        }
        let offset = entries_lba.checked_mul(sector)?.checked_add((number as usize - 1).checked_mul(size)?)?;
        let entry = get(disk_start, offset, 128)?;
        let name_units: Vec<u16> =
            entry[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
        let name = String::from_utf16_lossy(&name_units);
        return Some(PartIds { partuuid: guid_string(&entry[16..32]), partlabel: (!name.is_empty()).then_some(name) });
    }
    if get(disk_start, 510, 2) == Some(&[0x55, 0xAA]) {
        let signature = le32(disk_start, 440)?;
        return Some(PartIds { partuuid: Some(format!("{signature:08x}-{number:02x}")), partlabel: None });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf() -> Vec<u8> {
        vec![0u8; FS_PROBE_BYTES]
    }

    #[test]
    fn reads_ext4_xfs_btrfs_vfat() {
        let mut b = buf();
        b[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        b[1024 + 96] = 0x40; // extents
        let uuid = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8];
        b[1128..1144].copy_from_slice(&uuid);
        b[1144..1150].copy_from_slice(b"images");
        assert_eq!(
            probe_fs(&b),
            Some(FsInfo {
                fstype: "ext4",
                uuid: Some("12345678-9abc-def0-0102-030405060708".into()),
                label: Some("images".into()),
                needs_recovery: false,
            })
        );

        let mut b = buf();
        b[0..4].copy_from_slice(b"XFSB");
        b[32..48].copy_from_slice(&uuid);
        b[108..112].copy_from_slice(b"data");
        let info = probe_fs(&b).unwrap();
        assert_eq!((info.fstype, info.label.as_deref()), ("xfs", Some("data")));

        let mut b = buf();
        b[65600..65608].copy_from_slice(b"_BHRfS_M");
        b[65536 + 299..65536 + 302].copy_from_slice(b"bt!");
        let info = probe_fs(&b).unwrap();
        assert_eq!((info.fstype, info.label.as_deref(), info.uuid), ("btrfs", Some("bt!"), None));

        let mut b = buf();
        b[82..87].copy_from_slice(b"FAT32");
        b[67..71].copy_from_slice(&0x1234ABCDu32.to_le_bytes());
        b[71..82].copy_from_slice(b"EFI        ");
        let info = probe_fs(&b).unwrap();
        assert_eq!((info.uuid.as_deref(), info.label.as_deref()), (Some("1234-ABCD"), Some("EFI")));

        assert_eq!(probe_fs(&buf()), None);
        assert_eq!(probe_fs(&[0u8; 100]), None);
    }

    #[test]
    fn reads_gpt_and_mbr_partition_ids() {
        let mut disk = vec![0u8; 64 * 1024];
        disk[512..520].copy_from_slice(b"EFI PART");
        disk[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        disk[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        disk[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let entry = 1024 + 128; // partition 2
        let guid = [0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 1, 2, 3, 4, 5, 6, 7, 8];
        disk[entry + 16..entry + 32].copy_from_slice(&guid);
        for (i, c) in "pool".encode_utf16().enumerate() {
            disk[entry + 56 + 2 * i..entry + 58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        assert_eq!(
            partition_ids(&disk, 512, 2),
            Some(PartIds {
                partuuid: Some("12345678-9abc-def0-0102-030405060708".into()),
                partlabel: Some("pool".into())
            })
        );
        assert_eq!(partition_ids(&disk, 512, 1).unwrap().partuuid, None);
        assert_eq!(partition_ids(&disk, 512, 200), None);
        // A hostile entries LBA must not overflow.
        let mut hostile = disk.clone();
        hostile[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(partition_ids(&hostile, 512, 2), None);

        let mut mbr = vec![0u8; 4096];
        mbr[440..444].copy_from_slice(&0x0a1b2c3du32.to_le_bytes());
        mbr[510..512].copy_from_slice(&[0x55, 0xAA]);
        assert_eq!(partition_ids(&mbr, 512, 3).unwrap().partuuid.as_deref(), Some("0a1b2c3d-03"));
        assert_eq!(partition_ids(&vec![0u8; 4096], 512, 1), None);
    }
}
