//! `cowroot grow`: with `cowroot.size`, the root device is larger than the
//! filesystem made for the image; this grows the mounted filesystem to its
//! device, online, through the filesystem's own ioctl (ext4, XFS, btrfs),
//! so no resize tool needs to be installed. Growing to the size it has is
//! a no-op, so it runs safely at every boot.

use crate::error::{Error, Result};
use crate::probe;
use std::fs::File;
use std::os::fd::AsRawFd;

const EXT4_MAGIC: i64 = 0xEF53;
const XFS_MAGIC: i64 = 0x5846_5342;
const BTRFS_MAGIC: i64 = 0x9123_683E;

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
nix::ioctl_read!(xfs_fs_geometry_v1, b'X', 100, [u64; 14]);
nix::ioctl_write_ptr!(xfs_growfs_data, b'X', 110, XfsGrowfsData);
nix::ioctl_write_ptr!(btrfs_resize, 0x94, 3, BtrfsVolArgs);

#[repr(C)]
pub struct XfsGrowfsData {
    newblocks: u64,
    imaxpct: u32,
}

#[repr(C)]
pub struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// The block device a mount point is mounted from: mountinfo's source
/// field (after " - "), not its MAJ:MIN, which btrfs makes anonymous.
fn mounted_device(mount_point: &str) -> Result<String> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|e| Error::io("read", MOUNTINFO, e))?;
    let line = text
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4) == Some(mount_point))
        .ok_or_else(|| Error::io("find the device of", mount_point, "not a mount point"))?;
    let source = line.split_once(" - ").and_then(|(_, rest)| rest.split(' ').nth(1));
    match source {
        Some(dev) if dev.starts_with('/') => Ok(dev.to_string()),
        _ => Err(Error::io("find the device of", mount_point, "its mount source is not a device")),
    }
}

/// Grows the filesystem mounted on `mount_point` to the size of its
/// device; says what it did.
pub fn grow(mount_point: &str) -> Result<String> {
    let device = mounted_device(mount_point)?;
    let device_bytes = probe::size_of(&device)?.0;
    let dir = File::open(mount_point).map_err(|e| Error::io("open", mount_point, e))?;
    let fs = nix::sys::statfs::fstatfs(&dir).map_err(|e| Error::io("statfs", mount_point, e))?;
    let before = nix::sys::statvfs::fstatvfs(&dir).map_err(|e| Error::io("statvfs", mount_point, e))?;
    let block = before.fragment_size();
    let fd = dir.as_raw_fd();
    let new_blocks = device_bytes / block;
    let kind = fs.filesystem_type().0 as i64;
    let failed = |e: nix::Error| Error::io("grow the filesystem on", mount_point, e);
    match kind {
        EXT4_MAGIC => {
            // SAFETY: fd is open; the kernel reads one u64.
            unsafe { ext4_resize_fs(fd, &new_blocks) }.map_err(failed)?;
        }
        XFS_MAGIC => {
            let mut geometry = [0u64; 14];
            // SAFETY: fd is open; the kernel writes a struct of this size.
            unsafe { xfs_fs_geometry_v1(fd, &mut geometry) }.map_err(failed)?;
            // imaxpct is the eighth u32, datablocks the u64 after it.
            let imaxpct = (geometry[3] >> 32) as u32;
            let data_blocks = geometry[4];
            if new_blocks > data_blocks {
                let args = XfsGrowfsData { newblocks: new_blocks, imaxpct };
                // SAFETY: fd is open; the kernel reads the struct.
                unsafe { xfs_growfs_data(fd, &args) }.map_err(failed)?;
            }
        }
        BTRFS_MAGIC => {
            let mut args = BtrfsVolArgs { fd: 0, name: [0; 4088] };
            args.name[..5].copy_from_slice(b"1:max");
            // SAFETY: fd is open; the kernel reads the struct.
            unsafe { btrfs_resize(fd, &args) }.map_err(failed)?;
        }
        other => {
            return Err(Error::io(
                "grow the filesystem on",
                mount_point,
                format!("its type (magic {other:#x}) is not ext4, XFS or btrfs; grow it with its own tool"),
            ))
        }
    }
    let after = nix::sys::statvfs::fstatvfs(&dir).map_err(|e| Error::io("statvfs", mount_point, e))?;
    let size = |blocks: u64| crate::units::Bytes(blocks * block);
    Ok(if after.blocks() > before.blocks() {
        format!(
            "grew the filesystem on {mount_point} ({device}) from {} to {}",
            size(before.blocks()),
            size(after.blocks())
        )
    } else {
        format!("the filesystem on {mount_point} already fills {device} ({})", crate::units::Bytes(device_bytes))
    })
}
