//! Read-only facts about the machine: which block device a spec names, what
//! a pool device holds, how big things are. Never writes anything.

use crate::blkid::{self, FS_PROBE_BYTES};
use crate::config::DevSpec;
use crate::error::{Error, Result};
use crate::fingerprint;
use crate::header::{Copies, OriginId, OtherCopy, RESERVED_BYTES, SLOT_BYTES, SLOT_OFFSETS};
use crate::names::UUID_PREFIX;
use crate::pool::{PoolFacts, END_PROBE_BYTES};
use crate::signature::PROBE_BYTES;
use crate::table::DevNum;
use crate::units::Bytes;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(100);

/// Reads up to `len` bytes from the start; shorter for a smaller device.
pub fn read_start(path: &str, len: usize) -> Result<Vec<u8>> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut buf = Vec::with_capacity(len);
    (&mut file).take(len as u64).read_to_end(&mut buf).map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// Size of a block device or regular file.
/// The first of `candidates` (a tool's usual paths) that exists.
pub fn installed(candidates: &[&'static str]) -> Option<&'static str> {
    candidates.iter().copied().find(|p| Path::new(p).exists())
}

pub fn size_of(path: &str) -> Result<Bytes> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    file.seek(SeekFrom::End(0)).map(Bytes).map_err(|e| Error::io("size of", path, e))
}

/// The machine's memory (MemTotal of /proc/meminfo).
pub fn memory_bytes() -> Result<u64> {
    const MEMINFO: &str = "/proc/meminfo";
    let text = fs::read_to_string(MEMINFO).map_err(|e| Error::io("read", MEMINFO, e))?;
    mem_total(&text).ok_or_else(|| Error::io("read", MEMINFO, "no MemTotal line"))
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// MAJ:MIN of a block device node.
pub fn dev_num(path: &str) -> Result<DevNum> {
    let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if !meta.file_type().is_block_device() {
        return Err(Error::io("use", path, "not a block device"));
    }
    let rdev = meta.rdev();
    Ok(DevNum { major: nix::sys::stat::major(rdev) as u32, minor: nix::sys::stat::minor(rdev) as u32 })
}

/// Reads up to `len` bytes ending at the device's end, but none of the
/// first `skip` bytes (already read from the start).
pub fn read_end(path: &str, size: u64, len: usize, skip: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let from = size.saturating_sub(len as u64).max(skip).min(size);
    let mut buf = vec![0u8; (size - from) as usize];
    file.read_exact_at(&mut buf, from).map_err(|e| Error::io("read the end of", path, e))?;
    Ok(buf)
}

/// Reads up to `len` bytes at `offset` (fewer at the end), bypassing the
/// page cache where the device allows it: one request rather than a train
/// of read-ahead ones, and the bytes on the disk rather than a cached copy.
pub fn read_direct(path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
    const ALIGN: usize = 4096;
    let fill = |file: &File, buf: &mut [u8]| -> std::io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    };
    if offset.is_multiple_of(ALIGN as u64) && len.is_multiple_of(ALIGN) {
        let direct = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_DIRECT).open(path);
        if let Ok(file) = direct {
            let mut raw = vec![0u8; len + ALIGN];
            let skip = raw.as_ptr().align_offset(ALIGN);
            if let Ok(got) = fill(&file, &mut raw[skip..skip + len]) {
                raw.copy_within(skip..skip + got, 0);
                raw.truncate(got);
                return Ok(raw);
            }
        }
    }
    // Not aligned, or a file or device that refuses O_DIRECT.
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut buf = vec![0u8; len];
    let got = fill(&file, &mut buf).map_err(|e| Error::io("read", path, e))?;
    buf.truncate(got);
    Ok(buf)
}

/// What a boot reads of a pool device when all is well, all at once: both
/// header slots, the 4 KiB after slot 0 (where LVM's metadata area and an
/// md 1.2 superblock start: tools that reuse a device without writing over
/// slot 0 write there), and the first metadata block.
const QUICK_RANGES: [(u64, u64); 3] = [(0, 8192), (64 * 1024, 4096), (RESERVED_BYTES, 4096)];

/// A pool of ours with both header copies valid and nothing else in the
/// bytes of `QUICK_RANGES`: the usual boot. Anything else (blank, foreign,
/// a damaged copy) is None, and `pool_facts` reads the first and last MiB.
fn quick_pool_facts(device: &str, size: Bytes) -> Result<Option<PoolFacts>> {
    use crate::pool::{classify_pool, PoolState};
    if size.0 < RESERVED_BYTES + 4096 {
        return Ok(None);
    }
    let parts = read_all(device, &QUICK_RANGES)?;
    if parts.iter().zip(QUICK_RANGES).any(|(part, (_, len))| part.len() as u64 != len) {
        return Ok(None);
    }
    // The first 68 KiB as far as read; the bytes not read count as zero.
    let mut start = vec![0u8; 68 * 1024];
    start[..8192].copy_from_slice(&parts[0]);
    start[64 * 1024..].copy_from_slice(&parts[1]);
    let state = classify_pool(&start, &[], size.0);
    let metadata_blank = crate::signature::all_zero(&parts[2]);
    Ok(match &state {
        PoolState::Ours { header, other, .. }
            if header.meta.start.bytes().0 == RESERVED_BYTES && !matches!(other, OtherCopy::Damaged(_)) =>
        {
            Some(PoolFacts { device: device.to_string(), size, state, metadata_blank })
        }
        _ => None,
    })
}

/// Classifies what a pool device holds, from its first and last MiB. One
/// read covers the first MiB and the first metadata block behind it; for a
/// pool of ours only the few bytes past its data region are read from the
/// end (nothing, mostly), for anything else the whole last MiB.
pub fn pool_facts(device: &str) -> Result<PoolFacts> {
    use crate::pool::{classify_pool, PoolState};
    let size = size_of(device)?;
    if let Some(facts) = quick_pool_facts(device, size)? {
        return Ok(facts);
    }
    let head = read_direct(device, 0, PROBE_BYTES + 4096)?;
    let start = &head[..head.len().min(PROBE_BYTES)];
    // Behind a valid header only the bytes past its data region count.
    let slot = |i: usize| start.get(SLOT_OFFSETS[i] as usize..SLOT_OFFSETS[i] as usize + SLOT_BYTES).unwrap_or(&[]);
    let tail = match Copies::read([slot(0), slot(1)]).newest() {
        Some((_, header)) => {
            let data_end = header.data.start.0.saturating_add(header.data.len.0).saturating_mul(512);
            size.0.saturating_sub(data_end).min(END_PROBE_BYTES as u64) as usize
        }
        None => END_PROBE_BYTES,
    };
    let end = if tail > 0 { read_end(device, size.0, tail, start.len() as u64)? } else { Vec::new() };
    let state = classify_pool(start, &end, size.0);
    let metadata_blank = match &state {
        PoolState::Ours { header, .. } => {
            let at = header.meta.start.bytes().0;
            let block = match head.get(at as usize..at as usize + 4096) {
                Some(block) => block.to_vec(),
                None => read_direct(device, at, 4096)?,
            };
            if block.len() < 4096 {
                return Err(Error::io("read the thin-pool metadata of", device, "the device ends before it"));
            }
            block.iter().all(|&b| b == 0)
        }
        _ => false,
    };
    Ok(PoolFacts { device: device.to_string(), size, state, metadata_blank })
}

/// The origin's identity, from a fixed number of reads, all in flight at
/// once (a disk, or a loop device over one, serves them in parallel).
pub fn origin_id(path: &str) -> Result<OriginId> {
    let size = size_of(path)?.0;
    let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    let mtime = meta.is_file().then(|| (meta.mtime(), meta.mtime_nsec()));
    let ranges = fingerprint::sample_ranges(size);
    let mut samples = read_all(path, &ranges)?.into_iter();
    fingerprint::fingerprint(size, mtime, |_, buf| {
        let sample = samples.next().filter(|s| s.len() == buf.len());
        let sample = sample.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&sample);
        Ok(())
    })
    .map_err(|e| Error::io("read", path, e))
}

/// Reads every (offset, length) range of `path` at once, one thread each
/// (one after the other where a thread cannot be made); the first error
/// is the result.
fn read_all(path: &str, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
    std::thread::scope(|scope| {
        let reads: Vec<_> = ranges
            .iter()
            .map(|&(offset, len)| {
                let read = move || read_direct(path, offset, len as usize);
                std::thread::Builder::new().spawn_scoped(scope, read).map_err(|_| read)
            })
            .collect();
        reads
            .into_iter()
            .map(|read| match read {
                Ok(thread) => {
                    thread.join().unwrap_or_else(|_| Err(Error::Inconsistent("a sample read panicked".into())))
                }
                Err(read) => read(),
            })
            .collect()
    })
}

/// The identity of an image file as its filesystem keeps it: the
/// filesystem's id, the inode and its generation, size, modification and
/// change times to the nanosecond; and the file's first and last 4 KiB (its
/// own filesystem's superblock, uuid and write time), as tools that write
/// a host filesystem offline can set times and reuse inode numbers. Only
/// for hosts whose inode numbers and times are stable (ext2/3/4, XFS,
/// btrfs); elsewhere (vfat, ...) None, and the content is sampled at every
/// boot. Times in whole seconds (ext2/3 inodes, files written by `mke2fs
/// -d`) still move: a change is made seconds after the identity was taken,
/// at a boot, with the host mounted read-only.
pub fn file_identity(path: &str) -> Option<[u8; 16]> {
    use sha2::{Digest, Sha256};
    // ext4, XFS, btrfs (linux/magic.h; ext2/3 share ext4's).
    const STABLE: [u64; 3] = [0xEF53, 0x5846_5342, 0x9123_683E];
    nix::ioctl_read!(inode_generation, b'v', 1, std::ffi::c_long);
    let fs = nix::sys::statfs::statfs(path).ok()?;
    #[allow(clippy::unnecessary_cast)] // the field's width differs between libcs
    let kind = fs.filesystem_type().0 as u64;
    if !STABLE.contains(&kind) {
        return None;
    }
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok().filter(|m| m.is_file())?;
    let mut generation: std::ffi::c_long = 0;
    // SAFETY: the fd is open for the call; the kernel writes one long.
    let generation = unsafe { inode_generation(file.as_raw_fd(), &mut generation) }.ok().map(|_| generation);
    let edges =
        read_all(path, &[(0, 4096.min(meta.size())), (meta.size().saturating_sub(4096), 4096.min(meta.size()))]);
    let edges = edges.ok()?;
    let mut hash = Sha256::new();
    hash.update(format!("{:?}", fs.filesystem_id()).as_bytes());
    for value in [meta.ino(), meta.size(), kind] {
        hash.update(value.to_le_bytes());
    }
    for value in [meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec()] {
        hash.update(value.to_le_bytes());
    }
    hash.update(generation.unwrap_or(-1).to_le_bytes());
    for edge in &edges {
        hash.update(edge);
    }
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Some(id)
}

/// A block device as sysfs lists it.
struct BlockDev {
    name: String,
    /// Partition number and the disk's name, for partitions.
    partition: Option<(u32, String)>,
}

fn read_sys(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Block devices a spec may name: not loop devices without a backing file,
/// not ram disks, and never cowroot's own dm devices.
fn block_devices() -> Vec<BlockDev> {
    let Ok(entries) = fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut devs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let sys = format!("/sys/class/block/{name}");
        if name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        if name.starts_with("loop") && !Path::new(&format!("{sys}/loop")).exists() {
            continue;
        }
        if read_sys(&format!("{sys}/dm/uuid")).is_some_and(|u| u.starts_with(UUID_PREFIX)) {
            continue;
        }
        let partition = read_sys(&format!("{sys}/partition")).and_then(|n| n.parse().ok()).and_then(|n| {
            let parent = fs::canonicalize(format!("{sys}/..")).ok()?;
            Some((n, parent.file_name()?.to_string_lossy().into_owned()))
        });
        devs.push(BlockDev { name, partition });
    }
    devs.sort_by(|a, b| a.name.cmp(&b.name));
    devs
}

fn matches(dev: &BlockDev, spec: &DevSpec) -> bool {
    let path = format!("/dev/{}", dev.name);
    match spec {
        DevSpec::Path(_) => false,
        DevSpec::Label(want) | DevSpec::Uuid(want) => {
            let Ok(buf) = read_start(&path, FS_PROBE_BYTES) else {
                return false;
            };
            let Some(info) = blkid::probe_fs(&buf) else {
                return false;
            };
            let same = match spec {
                DevSpec::Label(_) => info.label.as_deref() == Some(want.as_str()),
                _ => info.uuid.is_some_and(|u| u.eq_ignore_ascii_case(want)),
            };
            // A member of an md array with its superblock at the end (0.90,
            // 1.0) shows the array's filesystem at its start; blkid calls
            // it a raid member, and so does cowroot: the array is meant
            // (not yet assembled, or degraded, it must not be used alone).
            same && !md_member_at_end(&path)
        }
        DevSpec::PartUuid(want) | DevSpec::PartLabel(want) => {
            let Some((number, disk)) = &dev.partition else {
                return false;
            };
            let sector = read_sys(&format!("/sys/class/block/{disk}/queue/logical_block_size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(512usize);
            let Ok(buf) = read_start(&format!("/dev/{disk}"), 64 * 1024) else {
                return false;
            };
            let Some(ids) = blkid::partition_ids(&buf, sector, *number) else {
                return false;
            };
            match spec {
                DevSpec::PartUuid(_) => ids.partuuid.is_some_and(|u| u.eq_ignore_ascii_case(want)),
                _ => ids.partlabel.as_deref() == Some(want.as_str()),
            }
        }
    }
}

/// Finds the device a spec names now: `Ok(None)` if it is not there (yet),
/// an error if several devices match (cowroot never guesses).
pub fn resolve(spec: &DevSpec, key: &str) -> Result<Option<String>> {
    if let DevSpec::Path(path) = spec {
        // Keep the name the user gave (a udev link such as
        // /dev/mapper/vg-lv reads better than /dev/dm-0); stat follows it.
        return match fs::metadata(path) {
            Ok(m) if m.file_type().is_block_device() => Ok(Some(path.clone())),
            Ok(_) => Err(Error::config(key, format!("{path} exists but is not a block device"))),
            Err(_) => Ok(None),
        };
    }
    let found: Vec<String> =
        block_devices().iter().filter(|d| matches(d, spec)).map(|d| format!("/dev/{}", d.name)).collect();
    let found = if found.len() > 1 {
        let numbered = found.into_iter().map(|p| dev_num(&p).map(|n| (p, n))).collect::<Result<Vec<_>>>()?;
        topmost(Path::new("/sys"), numbered)
    } else {
        found
    };
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        _ => {
            Err(Error::config(key, format!("{spec} matches several devices ({}); name one by path", found.join(", "))))
        }
    }
}

/// Waits until `deadline` for a spec to resolve; returns the path and the
/// time spent waiting. `timeout_secs` is what the user set, for the message.
/// `None` for `deadline` looks once (`boot --no-wait`).
pub fn wait_for(spec: &DevSpec, key: &str, deadline: Option<Instant>, timeout_secs: u64) -> Result<(String, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(path) = resolve(spec, key)? {
            return Ok((path, start.elapsed()));
        }
        let Some(deadline) = deadline else {
            return Err(Error::DeviceNotYet { spec: spec.to_string(), key: key.to_string() });
        };
        if Instant::now() >= deadline {
            return Err(Error::DeviceTimeout { spec: spec.to_string(), key: key.to_string(), seconds: timeout_secs });
        }
        std::thread::sleep(POLL);
    }
}

/// Is udev managing /dev? (Then it makes /dev/mapper nodes, not us.)
pub fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// The device node name of MAJ:MIN, from sysfs.
pub fn dev_path(num: DevNum) -> Option<String> {
    let uevent = fs::read_to_string(format!("/sys/dev/block/{num}/uevent")).ok()?;
    uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).map(|n| format!("/dev/{n}"))
}

/// The file behind a loop device, if it is one.
pub fn loop_backing_file(num: DevNum) -> Option<String> {
    read_sys(&format!("/sys/dev/block/{num}/loop/backing_file"))
}

/// A device and every device it is built from: the disk of a partition,
/// the members of a dm or md device (sysfs `slaves/`), the filesystem
/// device holding a loop device's file; recursively. `sys` is the sysfs
/// mount point.
pub fn stack(sys: &Path, num: DevNum) -> Vec<DevNum> {
    let mut seen = vec![num];
    let mut next = 0;
    while next < seen.len() && seen.len() < 256 {
        let dev = seen[next];
        next += 1;
        let dir = sys.join(format!("dev/block/{dev}"));
        let mut found = Vec::new();
        if dir.join("partition").exists() {
            if let Some(disk) = fs::read_to_string(dir.join("../dev")).ok().and_then(|t| t.trim().parse().ok()) {
                found.push(disk);
            }
        }
        if let Ok(entries) = fs::read_dir(dir.join("slaves")) {
            for entry in entries.flatten() {
                if let Some(slave) =
                    fs::read_to_string(entry.path().join("dev")).ok().and_then(|t| t.trim().parse().ok())
                {
                    found.push(slave);
                }
            }
        }
        if let Ok(file) = fs::read_to_string(dir.join("loop/backing_file")) {
            if let Ok(meta) = fs::metadata(file.trim()) {
                let st_dev = meta.dev();
                found.push(DevNum {
                    major: nix::sys::stat::major(st_dev) as u32,
                    minor: nix::sys::stat::minor(st_dev) as u32,
                });
            }
        }
        for dev in found {
            if !seen.contains(&dev) {
                seen.push(dev);
            }
        }
    }
    seen
}

fn md_member_at_end(path: &str) -> bool {
    let Ok(size) = size_of(path) else { return false };
    read_end(path, size.0, 128 * 1024, 0)
        .is_ok_and(|end| crate::signature::detect_end(&end, size.0).is_some_and(|what| what.contains("MD RAID")))
}

/// Of several devices that match one spec, those that no other match is
/// built on: the members of an md RAID1 (metadata at the end) and the
/// paths of a multipath device carry the filesystem of the array or the
/// multipath device above them, which is the one meant.
pub fn topmost(sys: &Path, found: Vec<(String, DevNum)>) -> Vec<String> {
    let stacks: Vec<Vec<DevNum>> = found.iter().map(|(_, num)| stack(sys, *num)).collect();
    found
        .iter()
        .filter(|(_, num)| !stacks.iter().any(|s| s.first() != Some(num) && s[1..].contains(num)))
        .map(|(path, _)| path.clone())
        .collect()
}

/// Whether two device stacks overlap: one device is built on the other
/// (a partition of it, a dm/md/loop device over it). Two partitions of one
/// disk, or two LVs of one VG, do not overlap.
pub fn overlaps(a: &[DevNum], b: &[DevNum]) -> bool {
    a.first().is_some_and(|top| b.contains(top)) || b.first().is_some_and(|top| a.contains(top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_meminfo() {
        assert_eq!(mem_total("MemTotal:        2014232 kB\nMemFree: 1 kB\n"), Some(2014232 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
    }

    fn num(major: u32, minor: u32) -> DevNum {
        DevNum { major, minor }
    }

    /// A fake sysfs: vda (252:0) with partitions vda1 (252:1) and vda2
    /// (252:2); dm-0 (254:0) over vda1; dm-1 (254:1) over vda1 too; loop0
    /// (7:0) backed by a file on this test's filesystem.
    fn fake_sysfs(tag: &str) -> (std::path::PathBuf, DevNum) {
        let root = std::env::temp_dir().join(format!("cowroot-sysfs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let block = root.join("devices/block");
        let link = |name: &str, dev: &str| {
            let dir = root.join("dev/block");
            fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(block.join(name), dir.join(dev)).unwrap();
        };
        fs::create_dir_all(block.join("vda/vda1")).unwrap();
        fs::create_dir_all(block.join("vda/vda2")).unwrap();
        fs::write(block.join("vda/dev"), "252:0\n").unwrap();
        for (part, dev) in [("vda1", "252:1"), ("vda2", "252:2")] {
            fs::write(block.join(format!("vda/{part}/dev")), dev).unwrap();
            fs::write(block.join(format!("vda/{part}/partition")), "1").unwrap();
            link(&format!("vda/{part}"), dev);
        }
        link("vda", "252:0");
        for (dm, dev) in [("dm-0", "254:0"), ("dm-1", "254:1")] {
            fs::create_dir_all(block.join(format!("{dm}/slaves"))).unwrap();
            fs::write(block.join(format!("{dm}/dev")), dev).unwrap();
            std::os::unix::fs::symlink(block.join("vda/vda1"), block.join(format!("{dm}/slaves/vda1"))).unwrap();
            link(dm, dev);
        }
        let backing = root.join("image.img");
        fs::write(&backing, b"x").unwrap();
        fs::create_dir_all(block.join("loop0/loop")).unwrap();
        fs::write(block.join("loop0/loop/backing_file"), format!("{}\n", backing.display())).unwrap();
        link("loop0", "7:0");
        let st_dev = fs::metadata(&backing).unwrap().dev();
        let host = num(nix::sys::stat::major(st_dev) as u32, nix::sys::stat::minor(st_dev) as u32);
        (root, host)
    }

    #[test]
    fn stacked_devices_overlap_and_neighbours_do_not() {
        let (sys, host) = fake_sysfs("stack");
        let s = |d: DevNum| stack(&sys, d);
        let (vda, vda1, vda2, dm0, dm1, loop0) =
            (num(252, 0), num(252, 1), num(252, 2), num(254, 0), num(254, 1), num(7, 0));
        assert_eq!(s(vda1), [vda1, vda]);
        assert_eq!(s(dm0), [dm0, vda1, vda]);
        // The whole disk and its partition, a dm device and its member.
        assert!(overlaps(&s(vda), &s(vda1)));
        assert!(overlaps(&s(vda1), &s(vda)));
        assert!(overlaps(&s(dm0), &s(vda1)));
        assert!(overlaps(&s(dm0), &s(vda)));
        // A loop device over a file on the host filesystem's device.
        assert!(s(loop0).contains(&host));
        assert!(overlaps(&s(loop0), &[host]));
        // Two partitions of one disk; two LVs on one PV.
        assert!(!overlaps(&s(vda1), &s(vda2)));
        assert!(!overlaps(&s(dm0), &s(dm1)));
        assert!(!overlaps(&s(dm0), &s(vda2)));
        let _ = fs::remove_dir_all(&sys);
    }

    #[test]
    fn of_several_matches_the_device_built_on_the_others_is_meant() {
        let (sys, _) = fake_sysfs("topmost");
        let found = |names: &[(&str, DevNum)]| {
            topmost(&sys, names.iter().map(|(n, d)| (n.to_string(), *d)).collect::<Vec<_>>())
        };
        // An array (dm-0 stands for it) over its member, e.g. md RAID1 with
        // metadata at the end: the array.
        assert_eq!(found(&[("/dev/vda1", num(252, 1)), ("/dev/dm-0", num(254, 0))]), ["/dev/dm-0"]);
        assert_eq!(found(&[("/dev/vda", num(252, 0)), ("/dev/dm-0", num(254, 0))]), ["/dev/dm-0"]);
        // Unrelated devices, or two built on the same one: still ambiguous.
        assert_eq!(found(&[("/dev/vda1", num(252, 1)), ("/dev/vda2", num(252, 2))]).len(), 2);
        assert_eq!(found(&[("/dev/dm-0", num(254, 0)), ("/dev/dm-1", num(254, 1))]).len(), 2);
        let _ = fs::remove_dir_all(&sys);
    }
}
