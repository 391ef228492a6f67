//! Sizing a pool device: the header region, then thin-pool metadata sized by
//! the kernel's rule (Documentation/admin-guide/device-mapper/
//! thin-provisioning.rst: 48 bytes per data block, at least 2 MiB), then data.

use crate::error::{Error, Result};
use crate::header::{Extent, RESERVED_BYTES};
use crate::units::Bytes;

/// Chosen by measurement (`qemu-tests/bench.sh`, README "Performance"):
/// dm-thin splits every I/O at block boundaries, so small blocks read
/// slowly (64 KiB: a third of the origin's speed), while big ones make
/// scattered first writes slow and costly in pool space (1 MiB: 0.8× the
/// manual 64 KiB setup's speed, ten times its space). 512 KiB, LVM's
/// "performance" chunk size, is the largest that keeps scattered first
/// writes at least as fast as that setup.
pub const DEFAULT_BLOCK_BYTES: u64 = 512 * 1024;
const META_MIN_BYTES: u64 = 2 << 20;
/// The kernel uses at most this much metadata (DM_THIN_METADATA_MAX_SECTORS:
/// 255 * 2^14 blocks of 4 KiB, just under 16 GiB); more would be ignored.
const META_MAX_BYTES: u64 = 255 * (1 << 14) * 4096;
const META_BLOCK_BYTES: u64 = 4096;
/// Metadata the kernel needs per data block (thin-provisioning.rst).
const META_PER_BLOCK: u64 = 48;
/// A pool smaller than this is of no use (and the kernel needs room).
pub const MIN_DATA_BLOCKS: u64 = 16;
const MAX_BLOCK_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub meta: Extent,
    pub data: Extent,
    pub block_sectors: u32,
}

/// The thin-pool block size: chosen, or the default grown until the
/// metadata the kernel can use maps the whole device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSize {
    Auto,
    Exact(u64),
}

/// Validates a thin-pool block size: 64 KiB to 1 GiB, a multiple of 64 KiB.
pub fn check_block_size(bytes: u64) -> std::result::Result<u32, String> {
    if !(64 * 1024..=MAX_BLOCK_BYTES).contains(&bytes) || !bytes.is_multiple_of(64 * 1024) {
        return Err(format!(
            "block size {bytes} bytes is invalid: it must be a multiple of 64 KiB from 64 KiB to 1 GiB"
        ));
    }
    Ok((bytes / 512) as u32)
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// A pool this small gets smaller blocks than the default (down to 64 KiB),
/// so that it still has this many.
const AUTO_MIN_BLOCKS: u64 = 64;

/// The default block size, halved for a small device until it has
/// `AUTO_MIN_BLOCKS` blocks, or doubled for a huge one until its metadata,
/// capped by the kernel, maps every data block of `usable` bytes.
fn auto_block_size(usable: u64) -> u64 {
    let mut block = DEFAULT_BLOCK_BYTES;
    while block > 64 * 1024 && usable / block < AUTO_MIN_BLOCKS {
        block /= 2;
    }
    block.max(smallest_mappable_block(usable))
}

/// The smallest block size (64 KiB doubled) whose metadata, capped by the
/// kernel, maps every data block of `usable` bytes.
fn smallest_mappable_block(usable: u64) -> u64 {
    let mut block = 64 * 1024;
    while block < MAX_BLOCK_BYTES && usable / block * META_PER_BLOCK > META_MAX_BYTES {
        block *= 2;
    }
    block
}

/// Splits a device of `device_bytes` into header, metadata and data. The
/// data region starts aligned to the block size (and at least 1 MiB), so
/// blocks line up with RAID stripes and 4Kn sectors.
pub fn plan_layout(device: &str, device_bytes: Bytes, block: BlockSize) -> Result<Layout> {
    let usable = device_bytes.0.saturating_sub(RESERVED_BYTES);
    let block_bytes = match block {
        BlockSize::Exact(bytes) => bytes,
        BlockSize::Auto => auto_block_size(usable),
    };
    let block_sectors = check_block_size(block_bytes).map_err(|m| Error::config("--block-size", m))?;
    // data + 48 * data / block = usable  =>  data = usable * block / (block + 48)
    let data_guess = (usable as u128 * block_bytes as u128 / (block_bytes as u128 + 48)) as u64;
    let wanted_meta = round_up(META_PER_BLOCK * (data_guess / block_bytes), META_BLOCK_BYTES);
    if wanted_meta > META_MAX_BYTES {
        let fits = smallest_mappable_block(usable);
        return Err(Error::config(
            "--block-size",
            format!(
                "{device} is too big for {} blocks: the kernel's metadata limit (~16 GiB) would map only \
                 part of it; use --block-size {} or more",
                Bytes(block_bytes),
                Bytes(fits)
            ),
        ));
    }
    let meta_bytes = wanted_meta.max(META_MIN_BYTES);
    let align = block_bytes.max(RESERVED_BYTES);
    let data_start = round_up(RESERVED_BYTES + meta_bytes, align);
    let data_bytes = device_bytes.0.saturating_sub(data_start) / block_bytes * block_bytes;
    let need = RESERVED_BYTES + META_MIN_BYTES + MIN_DATA_BLOCKS * block_bytes;
    if data_bytes < MIN_DATA_BLOCKS * block_bytes {
        return Err(Error::PoolTooSmall { device: device.to_string(), bytes: device_bytes.0, need });
    }
    let meta = Extent { start: Bytes(RESERVED_BYTES).sectors(), len: Bytes(meta_bytes).sectors() };
    let data = Extent { start: Bytes(data_start).sectors(), len: Bytes(data_bytes).sectors() };
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
            (64 * MIB, BlockSize::Exact(64 * 1024)),
            (256 * MIB, BlockSize::Auto),
            (10 * GIB, BlockSize::Exact(64 * 1024)),
            (1 << 40, BlockSize::Auto),
            (100 << 40, BlockSize::Auto),
            (10 * GIB, BlockSize::Exact(512 * 1024)),
            (10 * GIB + 12345, BlockSize::Exact(128 * 1024)),
            (3 * GIB, BlockSize::Exact(2 * MIB)),
        ] {
            let l = plan_layout("d", Bytes(device), block).unwrap();
            let block = l.block_sectors as u64 * 512;
            let (meta, data) = (l.meta.len.bytes().0, l.data.len.bytes().0);
            assert_eq!(l.meta.start.bytes().0, RESERVED_BYTES);
            assert!(l.data.start.0 >= l.meta.start.0 + l.meta.len.0);
            assert_eq!(l.data.start.bytes().0 % block.max(MIB), 0, "data aligned");
            assert!(l.data.start.bytes().0 + data <= device, "fits {device}");
            assert_eq!(data % block, 0);
            assert_eq!(meta % 4096, 0);
            assert!((META_MIN_BYTES..=META_MAX_BYTES).contains(&meta));
            // Enough metadata for every data block, never capped short.
            assert!(meta >= META_PER_BLOCK * (data / block), "{device}: {meta}");
            // And little waste: the alignment plus one block.
            assert!(device - l.data.start.bytes().0 - data < block, "{device}");
        }
        // 1 PiB: the default grows until the metadata maps everything.
        let l = plan_layout("d", Bytes(1 << 50), BlockSize::Auto).unwrap();
        assert!(l.block_sectors as u64 * 512 > DEFAULT_BLOCK_BYTES);
        assert_eq!(plan_layout("d", Bytes(256 * MIB), BlockSize::Auto).unwrap().block_sectors, 1024);
        // A small pool gets smaller blocks, to keep enough of them.
        assert_eq!(plan_layout("d", Bytes(20 * MIB), BlockSize::Auto).unwrap().block_sectors, 512);
        assert_eq!(plan_layout("d", Bytes(5 * MIB), BlockSize::Auto).unwrap().block_sectors, 128);
    }

    #[test]
    fn too_small_too_big_and_bad_block_sizes_are_refused() {
        let err = plan_layout("/dev/vdc", Bytes(2 << 20), BlockSize::Auto).unwrap_err();
        assert!(matches!(err, Error::PoolTooSmall { .. }), "{err}");
        assert!(plan_layout("/dev/vdc", Bytes(5 << 20), BlockSize::Auto).is_ok());
        // 64 KiB blocks cannot map 30 TiB within the kernel's metadata limit.
        let err = plan_layout("/dev/vdc", Bytes(30 << 40), BlockSize::Exact(64 * 1024)).unwrap_err();
        assert!(err.to_string().contains("use --block-size 128.0 KiB or more"), "{err}");
        for bad in [0, 4096, 96 * 1024, 2 << 30] {
            assert!(check_block_size(bad).is_err(), "{bad}");
        }
        assert_eq!(check_block_size(1 << 20), Ok(2048));
    }
}
