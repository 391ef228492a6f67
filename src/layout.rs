//! Sizing a pool device: the header region, then thin-pool metadata sized by
//! the kernel's rule (Documentation/admin-guide/device-mapper/
//! thin-provisioning.rst: 48 bytes per data block, at least 2 MiB), then data.

use crate::error::{Error, Result};
use crate::header::{Extent, RESERVED_BYTES};
use crate::units::{Bytes, Sectors};

pub const DEFAULT_BLOCK_BYTES: u64 = 64 * 1024;
const META_MIN_BYTES: u64 = 2 << 20;
/// The kernel uses at most this much metadata (DM_THIN_METADATA_MAX_SECTORS:
/// 255 * 2^14 blocks of 4 KiB, just under 16 GiB); more would be ignored.
const META_MAX_BYTES: u64 = 255 * (1 << 14) * 4096;
const META_BLOCK_BYTES: u64 = 4096;
/// A pool smaller than this is of no use (and the kernel needs room).
pub const MIN_DATA_BLOCKS: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub meta: Extent,
    pub data: Extent,
    pub block_sectors: u32,
}

/// Validates a thin-pool block size: 64 KiB to 1 GiB, a multiple of 64 KiB.
pub fn check_block_size(bytes: u64) -> std::result::Result<u32, String> {
    if !(64 * 1024..=1 << 30).contains(&bytes) || !bytes.is_multiple_of(64 * 1024) {
        return Err(format!(
            "block size {bytes} bytes is invalid: it must be a multiple of 64 KiB from 64 KiB to 1 GiB"
        ));
    }
    Ok((bytes / 512) as u32)
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// Splits a device of `device_bytes` into header, metadata and data.
pub fn plan_layout(device: &str, device_bytes: Bytes, block_bytes: u64) -> Result<Layout> {
    let block_sectors = check_block_size(block_bytes).map_err(|m| Error::config("--block-size", m))?;
    let usable = device_bytes.0.saturating_sub(RESERVED_BYTES);
    // data + 48 * data / block = usable  =>  data = usable * block / (block + 48)
    let data_guess = (usable as u128 * block_bytes as u128 / (block_bytes as u128 + 48)) as u64;
    let meta_bytes = round_up(48 * (data_guess / block_bytes), META_BLOCK_BYTES).clamp(META_MIN_BYTES, META_MAX_BYTES);
    let data_bytes = usable.saturating_sub(meta_bytes) / block_bytes * block_bytes;
    let need = RESERVED_BYTES + META_MIN_BYTES + MIN_DATA_BLOCKS * block_bytes;
    if data_bytes < MIN_DATA_BLOCKS * block_bytes {
        return Err(Error::PoolTooSmall { device: device.to_string(), bytes: device_bytes.0, need });
    }
    let meta_start = Bytes(RESERVED_BYTES).sectors();
    let meta = Extent { start: meta_start, len: Bytes(meta_bytes).sectors() };
    let data = Extent { start: Sectors(meta_start.0 + meta.len.0), len: Bytes(data_bytes).sectors() };
    Ok(Layout { meta, data, block_sectors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_follow_the_kernel_rule() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        for (device, block) in [
            (64 * MIB, 64 * 1024),
            (256 * MIB, 64 * 1024),
            (10 * GIB, 64 * 1024),
            (1 << 40, 64 * 1024),
            (100 << 40, 64 * 1024),
            (10 * GIB, 512 * 1024),
            (10 * GIB + 12345, 128 * 1024),
        ] {
            let l = plan_layout("d", Bytes(device), block).unwrap();
            let (meta, data) = (l.meta.len.bytes().0, l.data.len.bytes().0);
            assert_eq!(l.meta.start.bytes().0, RESERVED_BYTES);
            assert_eq!(l.data.start.0, l.meta.start.0 + l.meta.len.0);
            assert!(l.data.start.bytes().0 + data <= device, "fits {device}");
            assert_eq!(data % block, 0);
            assert_eq!(meta % 4096, 0);
            assert!((META_MIN_BYTES..=META_MAX_BYTES).contains(&meta));
            // Enough metadata for every data block, unless capped.
            let rule = 48 * (data / block);
            assert!(meta >= rule.min(META_MAX_BYTES), "{device}: {meta} < {rule}");
            // And little waste: less than one block plus one metadata block.
            if meta > META_MIN_BYTES && meta < META_MAX_BYTES {
                assert!(device - RESERVED_BYTES - meta - data < block + 4096 + 48, "{device}");
            }
            assert_eq!(l.block_sectors as u64 * 512, block);
        }
        // 100 TiB at 64 KiB blocks wants more than the kernel's maximum.
        let l = plan_layout("d", Bytes(100 << 40), 64 * 1024).unwrap();
        assert_eq!(l.meta.len.bytes().0, META_MAX_BYTES);
    }

    #[test]
    fn too_small_and_bad_block_sizes_are_refused() {
        let err = plan_layout("/dev/vdc", Bytes(2 << 20), 64 * 1024).unwrap_err();
        assert!(matches!(err, Error::PoolTooSmall { .. }), "{err}");
        assert!(plan_layout("/dev/vdc", Bytes(5 << 20), 64 * 1024).is_ok());
        for bad in [0, 4096, 96 * 1024, 2 << 30] {
            assert!(check_block_size(bad).is_err(), "{bad}");
        }
        assert_eq!(check_block_size(1 << 20), Ok(2048));
    }
}
