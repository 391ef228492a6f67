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
nix::ioctl_read!(xfs_fs_geometry_v1, b'X', 100, XfsGeometryV1);
nix::ioctl_write_ptr!(xfs_growfs_data, b'X', 110, XfsGrowfsData);
nix::ioctl_write_ptr!(btrfs_resize, 0x94, 3, BtrfsVolArgs);
nix::ioctl_read!(btrfs_fs_info, 0x94, 31, BtrfsFsInfoArgs);
nix::ioctl_readwrite!(btrfs_dev_info, 0x94, 30, BtrfsDevInfoArgs);

/// `struct xfs_fsop_geom_v1` (xfs_fs.h).
#[repr(C)]
#[derive(Default)]
pub struct XfsGeometryV1 {
    blocksize: u32,
    rtextsize: u32,
    agblocks: u32,
    agcount: u32,
    logblocks: u32,
    sectsize: u32,
    inodesize: u32,
    imaxpct: u32,
    datablocks: u64,
    rtblocks: u64,
    rtextents: u64,
    logstart: u64,
    uuid: [u8; 16],
    sunit: u32,
    swidth: u32,
    version: i32,
    flags: u32,
    logsectsize: u32,
    rtsectsize: u32,
    dirblocksize: u32,
}

/// `struct btrfs_ioctl_fs_info_args` (btrfs.h), 1 KiB.
#[repr(C)]
pub struct BtrfsFsInfoArgs {
    max_id: u64,
    num_devices: u64,
    rest: [u8; 1008],
}

/// `struct btrfs_ioctl_dev_info_args` (btrfs.h), 4 KiB: the device id in,
/// its path out (at 3 KiB).
#[repr(C)]
pub struct BtrfsDevInfoArgs {
    devid: u64,
    uuid: [u8; 16],
    middle: [u8; 3048],
    path: [u8; 1024],
}

/// The btrfs device id of `device` in the filesystem open as `fd`: the
/// only device's, or the one whose path is `device`.
fn btrfs_devid(fd: std::os::fd::RawFd, device: &str) -> nix::Result<u64> {
    let mut info = BtrfsFsInfoArgs { max_id: 0, num_devices: 0, rest: [0; 1008] };
    // SAFETY: fd is open; the kernel writes a struct of this size.
    unsafe { btrfs_fs_info(fd, &mut info) }?;
    for devid in 1..=info.max_id {
        let mut dev = BtrfsDevInfoArgs { devid, uuid: [0; 16], middle: [0; 3048], path: [0; 1024] };
        // SAFETY: fd is open; the kernel reads devid and writes the struct.
        match unsafe { btrfs_dev_info(fd, &mut dev) } {
            Ok(_) => {
                let end = dev.path.iter().position(|&b| b == 0).unwrap_or(dev.path.len());
                if info.num_devices == 1 || &dev.path[..end] == device.as_bytes() {
                    return Ok(devid);
                }
            }
            Err(nix::Error::ENODEV) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(nix::Error::ENODEV)
}

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
    match mount_source(&text, mount_point) {
        Some(dev) if dev.starts_with('/') => Ok(dev.to_string()),
        Some(_) => Err(Error::io("find the device of", mount_point, "its mount source is not a device")),
        None => Err(Error::io("find the device of", mount_point, "not a mount point")),
    }
}

/// The source of the topmost mount at `mount_point` in a mountinfo text
/// (the field after " - " and the type).
pub fn mount_source<'a>(mountinfo: &'a str, mount_point: &str) -> Option<&'a str> {
    let line = mountinfo.lines().rev().find(|line| line.split(' ').nth(4) == Some(mount_point))?;
    line.split_once(" - ").and_then(|(_, rest)| rest.split(' ').nth(1))
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
            let mut geometry = XfsGeometryV1::default();
            // SAFETY: fd is open; the kernel writes a struct of this size.
            unsafe { xfs_fs_geometry_v1(fd, &mut geometry) }.map_err(failed)?;
            let new_blocks = device_bytes / u64::from(geometry.blocksize.max(512));
            if new_blocks > geometry.datablocks {
                let args = XfsGrowfsData { newblocks: new_blocks, imaxpct: geometry.imaxpct };
                // SAFETY: fd is open; the kernel reads the struct.
                unsafe { xfs_growfs_data(fd, &args) }.map_err(failed)?;
            }
        }
        BTRFS_MAGIC => {
            let devid = btrfs_devid(fd, &device).map_err(failed)?;
            let mut args = BtrfsVolArgs { fd: 0, name: [0; 4088] };
            let spec = format!("{devid}:max");
            args.name[..spec.len()].copy_from_slice(spec.as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<XfsGeometryV1>(), 112);
        assert_eq!(std::mem::size_of::<BtrfsFsInfoArgs>(), 1024);
        assert_eq!(std::mem::size_of::<BtrfsDevInfoArgs>(), 4096);
        assert_eq!(std::mem::offset_of!(BtrfsDevInfoArgs, path), 3072);
        assert_eq!(std::mem::offset_of!(XfsGeometryV1, datablocks), 32);
        assert_eq!(std::mem::size_of::<BtrfsVolArgs>(), 4096);
    }
}
