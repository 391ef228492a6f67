//! The real `System`: thin wrappers over the devicemapper and loopdev crates
//! and a few syscalls. No decisions are made here.

use crate::blkid::{self, FS_PROBE_BYTES};
use crate::error::{Error, Result};
use crate::exec::{DmInfo, DmLine, DmSpec, Fresh, System};
use crate::header::{PoolHeader, RESERVED_BYTES, SLOT_OFFSETS};
use crate::nbd::{self, NbdServer};
use crate::plan::HOST_MOUNT;
use crate::probe;
use crate::table::DevNum;
use crate::units::{Bytes, Sectors};
use devicemapper::{DevId, DmError, DmFlags, DmName, DmOptions, DmUuid, DM};
use loopdev::{LoopControl, LoopDevice};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

// Block-device read-only flag (include/uapi/linux/fs.h).
nix::ioctl_write_ptr_bad!(blk_ro_set, 0x125D, nix::libc::c_int);
nix::ioctl_read_bad!(blk_ro_get, 0x125E, nix::libc::c_int);
nix::ioctl_read_bad!(blk_ssz_get, 0x1268, nix::libc::c_int);

// struct loop_info64 and struct loop_config (include/uapi/linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const NBD_CLIENT_PATHS: [&str; 4] =
    ["/usr/sbin/nbd-client", "/sbin/nbd-client", "/usr/bin/nbd-client", "/bin/nbd-client"];

/// Runs `program` (never through a shell) and kills it after `limit`;
/// the error is its first line on stderr, or why it did not end well.
fn run_with_limit(program: &str, args: &[String], limit: Duration) -> std::result::Result<(), String> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let until = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} gave no answer within {} s", limit.as_secs()));
            }
            Err(e) => return Err(format!("{program}: {e}")),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    if status.success() {
        return Ok(());
    }
    let first = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
    Err(format!("{program} failed ({status}): {first}"))
}

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// Attaches `file` to the free loop device `device` in one LOOP_CONFIGURE
/// call (Linux 5.8): read-only, cleared on last close, 512-byte sectors,
/// direct I/O (the kernel keeps the loop buffered where the host cannot).
/// The older way takes three ioctls and, between them, the loop device is
/// briefly writable and buffered.
fn configure_loop(device: &LoopDevice, file: &fs::File, name: &str, writable: bool) -> nix::Result<()> {
    // A RAM pool's file is on tmpfs, which takes no direct I/O before
    // Linux 6.6; buffered is what it is anyway.
    let flags =
        if writable { LO_FLAGS_AUTOCLEAR } else { LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO };
    let mut info = LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset: 0,
        sizelimit: 0,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    let shown = name.as_bytes();
    let len = shown.len().min(info.file_name.len() - 1);
    info.file_name[..len].copy_from_slice(&shown[..len]);
    // 512-byte sectors, as the older way gives: with 0, newer kernels give
    // a direct-I/O loop the host disk's sector size (4096 on a 4Kn disk),
    // which an image made with 512-byte sectors (XFS, vfat) cannot mount
    // on. Direct I/O then needs the host to take 512-byte I/O, else the
    // kernel keeps the loop buffered.
    let config = LoopConfig { fd: file.as_raw_fd() as u32, block_size: 512, info, reserved: [0; 8] };
    // SAFETY: both fds are open for the call; the kernel reads the struct.
    unsafe { loop_configure(device.as_raw_fd(), &config) }.map(|_| ())
}

/// Blocks every signal that can be blocked until dropped (then the mask
/// is what it was, and a pending signal is delivered).
struct SignalsHeld(nix::libc::sigset_t);

impl SignalsHeld {
    fn new() -> SignalsHeld {
        use nix::libc::{sigfillset, sigprocmask, sigset_t, SIG_BLOCK};
        // SAFETY: both sets are plain memory owned here; sigfillset and
        // sigprocmask only write into them.
        unsafe {
            let mut all: sigset_t = std::mem::zeroed();
            let mut before: sigset_t = std::mem::zeroed();
            sigfillset(&mut all);
            sigprocmask(SIG_BLOCK, &all, &mut before);
            SignalsHeld(before)
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe { nix::libc::sigprocmask(nix::libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

pub struct RealSystem {
    dm: Option<DM>,
    /// Attached loop devices stay open until cowroot exits: they are set to
    /// auto-clear, so closing them before dm holds them would detach them.
    loops: Vec<LoopDevice>,
    timeout: Duration,
    /// udev did not answer a dm cookie once: do not wait long again.
    udev_silent: bool,
    /// Time spent in mount, loop and dm calls (see `System::kernel_time`).
    kernel: Duration,
}

/// How long a dm call may wait for udev to confirm it, at most: udev
/// answers in well under a second when its dm rules are there.
const UDEV_CONFIRM_MAX: Duration = Duration::from_secs(10);
const UDEV_CONFIRM_MIN: Duration = Duration::from_secs(2);

/// The errno of a failed dm ioctl, if that is what failed.
fn dm_errno(err: &DmError) -> Option<nix::errno::Errno> {
    match err {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => Some(**errno),
        _ => None,
    }
}

/// Turns a devicemapper error into ours, keeping the errno readable.
fn dm_error(op: &str, target: &str, err: DmError) -> Error {
    match dm_errno(&err) {
        Some(errno) => Error::io(op, target, errno),
        None => Error::io(op, target, err),
    }
}

fn dm_name(name: &str) -> Result<&DmName> {
    DmName::new(name).map_err(|e| Error::io("name", name, e))
}

/// Random bytes for a new pool's uuid.
pub fn random_uuid() -> [u8; 16] {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let filled = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok();
    if !filled {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes.copy_from_slice(&now.as_nanos().to_le_bytes());
    }
    bytes
}

fn udev_flags(private: bool) -> DmOptions {
    if private {
        DmOptions::private()
    } else {
        DmOptions::default()
    }
}

impl RealSystem {
    pub fn new(timeout: Duration) -> RealSystem {
        RealSystem { dm: None, loops: Vec::new(), timeout, udev_silent: false, kernel: Duration::ZERO }
    }

    /// Runs a mount, loop or dm call, adding its time to `kernel`.
    fn timed<T>(&mut self, call: impl FnOnce(&mut Self) -> T) -> T {
        let started = Instant::now();
        let result = call(self);
        self.kernel += started.elapsed();
        result
    }

    pub fn dm(&mut self) -> Result<&DM> {
        if self.dm.is_none() {
            let dm = DM::new().map_err(|e| {
                Error::io(
                    "open",
                    "/dev/mapper/control",
                    format!("{e}; is the dm-mod module loaded (and dm-thin-pool)?"),
                )
            })?;
            self.dm = Some(dm);
        }
        // Just set above.
        self.dm.as_ref().ok_or_else(|| Error::Inconsistent("no dm context".into()))
    }

    /// Runs a dm call that may wait for udev, bounded (see `udev`).
    fn udev_bounded<T>(&mut self, what: &str, call: impl FnOnce(&DM) -> T) -> Result<T> {
        let limit = if self.udev_silent {
            Duration::from_millis(500)
        } else {
            self.timeout.clamp(UDEV_CONFIRM_MIN, UDEV_CONFIRM_MAX)
        };
        let dog = crate::udev::Watchdog::start(limit);
        let result = call(self.dm()?);
        if dog.finish() && !self.udev_silent {
            self.udev_silent = true;
            log::warn!(
                "udev did not confirm {what} within {} s: the device-mapper udev rules (95-dm-notify.rules, \
                 from dmsetup) seem to be missing from the initramfs; going on without them",
                limit.as_secs()
            );
        }
        Ok(result)
    }

    /// Filesystem types to try for the image host, best guess first.
    fn fstypes(device: &str) -> Vec<String> {
        let mut types = Vec::new();
        if let Some(info) = probe::read_start(device, FS_PROBE_BYTES).ok().and_then(|b| blkid::probe_fs(&b)) {
            types.push(info.fstype.to_string());
            if info.fstype.starts_with("ext") {
                types.push("ext4".into());
            }
        }
        if let Ok(list) = fs::read_to_string("/proc/filesystems") {
            for line in list.lines().filter(|l| !l.starts_with("nodev")) {
                let name = line.trim().to_string();
                if !name.is_empty() && !types.contains(&name) {
                    types.push(name);
                }
            }
        }
        types
    }
}

impl System for RealSystem {
    fn kernel_time(&self) -> Duration {
        self.kernel
    }

    fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn resume_hibernation(&mut self, device: DevNum, offset_pages: u64) -> Result<()> {
        // What the generators' resume steps write; the kernel reads the
        // image and jumps into it, or comes back here.
        if offset_pages != 0 {
            let path = "/sys/power/resume_offset";
            fs::write(path, format!("{offset_pages}\n")).map_err(|e| Error::io("write", path, e))?;
        }
        let path = "/sys/power/resume";
        fs::write(path, format!("{device}\n")).map_err(|e| Error::io("write", path, e))
    }

    fn mount_ro(&mut self, device: &str, dir: &str, fstype: Option<&str>) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))?;
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        // A read-only mount still replays a dirty journal, which writes.
        let probed = probe::read_start(device, FS_PROBE_BYTES).ok().and_then(|b| blkid::probe_fs(&b));
        if probed.is_some_and(|info| info.needs_recovery) {
            return Err(Error::io(
                "mount read-only",
                device,
                "its journal needs recovery, and replaying it would write to the device; \
                 check the filesystem (e2fsck) or mount it read-write once elsewhere, then boot again",
            ));
        }
        let candidates = match fstype {
            Some(t) => vec![t.to_string()],
            None => Self::fstypes(device),
        };
        let mut last = String::from("no filesystem type recognised");
        for t in &candidates {
            // The device is read-only at the block layer by now, so ext4
            // skips orphan cleanup and XFS refuses a log that needs
            // replaying (EROFS) instead of mounting it inconsistent, as
            // `norecovery` would. btrfs would fail on a log tree ("log
            // replay required on RO media"); its log only holds fsyncs
            // since the last commit, so it is ignored, as `-o ro` on
            // read-only media does elsewhere.
            let data = (t == "btrfs").then_some("nologreplay");
            match self.timed(|_| mount(Some(device), dir, Some(t.as_str()), flags, data)) {
                Ok(()) => {
                    log::debug!("mounted {device} ({t}) read-only on {dir}");
                    return Ok(());
                }
                Err(nix::errno::Errno::EROFS) if t == "xfs" => {
                    return Err(Error::io(
                        "mount read-only",
                        device,
                        "its XFS log needs recovery, and replaying it would write to the device; \
                         mount it read-write once on another system (or check it with xfs_repair there), \
                         then boot again",
                    ));
                }
                Err(e) => last = format!("{t}: {e}"),
            }
        }
        Err(Error::io(
            "mount read-only",
            format!("{device} on {dir}"),
            format!("{last}; set cowroot.fstype= or check that the filesystem module is in the initramfs"),
        ))
    }

    fn unmount(&mut self, dir: &str) -> Result<()> {
        umount2(dir, MntFlags::empty()).map_err(|e| Error::io("umount", dir, e))
    }

    fn mount_ram(&mut self, dir: &str, file: &str, bytes: Bytes) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))?;
        let options = format!("size={},mode=0700", bytes.0);
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        self.timed(|_| mount(Some("cowroot-ram"), dir, Some("tmpfs"), flags, Some(options.as_str())))
            .map_err(|e| Error::io(format!("mount a tmpfs of {bytes} on"), dir, e))?;
        let made = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .and_then(|f| f.set_len(bytes.0));
        if let Err(e) = made {
            let _ = umount2(dir, MntFlags::empty());
            return Err(Error::io("create", file, e));
        }
        Ok(())
    }

    fn zero_start(&mut self, dev: DevNum, bytes: usize) -> Result<()> {
        // devtmpfs makes /dev/dm-N for every dm device, private ones too.
        let path = probe::dev_path(dev).unwrap_or_else(|| format!("/dev/dm-{}", dev.minor));
        let file = OpenOptions::new().write(true).open(&path).map_err(|e| Error::io("open", &path, e))?;
        file.write_all_at(&vec![0u8; bytes], 0).map_err(|e| Error::io("zero the start of", &path, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &path, e))
    }

    fn unmount_lazy(&mut self, dir: &str) -> Result<()> {
        umount2(dir, MntFlags::MNT_DETACH).map_err(|e| Error::io("umount -l", dir, e))
    }

    fn attach_loop(&mut self, file: &str, writable: bool) -> Result<String> {
        self.timed(|this| {
            if !Path::new(file).is_file() {
                let path = file.strip_prefix(HOST_MOUNT).unwrap_or(file);
                return Err(Error::ImageMissing { path: path.to_string(), host: "cowroot.dev".into() });
            }
            let control = LoopControl::open()
                .map_err(|e| Error::io("open", "/dev/loop-control", format!("{e}; is the loop module loaded?")))?;
            let backing =
                OpenOptions::new().read(true).write(writable).open(file).map_err(|e| Error::io("open", file, e))?;
            // Another process may take the free device first: try the next.
            let mut tries = 0;
            let device = loop {
                let device = control.next_free().map_err(|e| Error::io("find a free loop device for", file, e))?;
                match configure_loop(&device, &backing, file, writable) {
                    Ok(()) => break device,
                    Err(nix::errno::Errno::EBUSY) if tries < 10 => tries += 1,
                    Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOTTY) => {
                        // A kernel before 5.8: the three-step way.
                        device
                            .with()
                            .read_only(!writable)
                            .autoclear(true)
                            .attach(file)
                            .map_err(|e| Error::io("attach loop device to", file, e))?;
                        let direct = if writable { Ok(()) } else { device.set_direct_io(true) };
                        if let Err(e) = direct {
                            log::debug!("loop direct I/O not enabled: {e}");
                        }
                        break device;
                    }
                    Err(e) => return Err(Error::io("attach loop device to", file, e)),
                }
            };
            let path = device.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            this.loops.push(device);
            Ok(path)
        })
    }

    fn detach_loop(&mut self, path: &str) -> Result<()> {
        let index = self.loops.iter().position(|l| l.path().is_some_and(|p| p == Path::new(path)));
        let device = match index {
            Some(i) => self.loops.remove(i),
            None => LoopDevice::open(path).map_err(|e| Error::io("open", path, e))?,
        };
        device.detach().map_err(|e| Error::io("detach loop device", path, e))
    }

    fn dev_num(&mut self, path: &str) -> Result<DevNum> {
        probe::dev_num(path)
    }

    fn nbd_connect(&mut self, server: &NbdServer, seconds: u64) -> Result<String> {
        let client = probe::installed(&NBD_CLIENT_PATHS).ok_or_else(|| {
            Error::config(
                "cowroot",
                format!(
                    "{server} needs nbd-client, which is not in this initramfs; install the nbd-client package \
                     and rebuild the initramfs"
                ),
            )
        })?;
        let sys_block = Path::new("/sys/block");
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let device = nbd::free_device(sys_block).ok_or_else(|| {
                Error::config(
                    "cowroot",
                    format!("{server}: no free /dev/nbdN; is the nbd module in the initramfs (and loaded)?"),
                )
            })?;
            // One try may not outlast the deadline: a connect to a host
            // that does not answer would wait minutes for TCP to give up.
            let limit = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(2));
            let why = match run_with_limit(client, &server.client_args(&device), limit) {
                Ok(()) if nbd::connected_bytes(sys_block, &device) > 0 => return Ok(device),
                Ok(()) => format!("nbd-client succeeded but {device} has no size"),
                Err(why) => {
                    // Cut off after the kernel took the connection: let it go.
                    if nbd::connected_bytes(sys_block, &device) > 0 {
                        run_with_limit(client, &["-d".to_string(), device.clone()], Duration::from_secs(5)).map_err(
                            |e| {
                                Error::io(
                                    "disconnect",
                                    &device,
                                    format!("{e} (nbd-client was cut off after connecting it)"),
                                )
                            },
                        )?;
                    }
                    why
                }
            };
            if Instant::now() >= deadline {
                return Err(Error::ServerUnreachable { server: server.to_string(), seconds, why });
            }
            log::debug!("{server}: {why}; trying again");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn nbd_disconnect(&mut self, device: &str) -> Result<()> {
        let client = probe::installed(&NBD_CLIENT_PATHS).unwrap_or("nbd-client");
        run_with_limit(client, &["-d".to_string(), device.to_string()], Duration::from_secs(10))
            .map_err(|why| Error::io("disconnect", device, why))
    }

    fn set_read_only(&mut self, device: &str, read_only: bool) -> Result<bool> {
        let file = OpenOptions::new().read(true).open(device).map_err(|e| Error::io("open", device, e))?;
        let fd = file.as_raw_fd();
        let mut was: nix::libc::c_int = 0;
        // SAFETY: fd is open for the duration; the kernel writes one int.
        unsafe { blk_ro_get(fd, &mut was) }.map_err(|e| Error::io("BLKROGET", device, e))?;
        let value: nix::libc::c_int = read_only.into();
        // SAFETY: fd is open; the kernel reads one int.
        unsafe { blk_ro_set(fd, &value) }.map_err(|e| Error::io("BLKROSET", device, e))?;
        Ok(was != 0)
    }

    fn logical_block_size(&mut self, device: &str) -> Result<u32> {
        let file = OpenOptions::new().read(true).open(device).map_err(|e| Error::io("open", device, e))?;
        if !file.metadata().map_err(|e| Error::io("stat", device, e))?.file_type().is_block_device() {
            return Ok(512);
        }
        let mut size: nix::libc::c_int = 0;
        // SAFETY: the fd is open for the duration; the kernel writes one int.
        unsafe { blk_ssz_get(file.as_raw_fd(), &mut size) }.map_err(|e| Error::io("BLKSSZGET", device, e))?;
        Ok(size.max(512) as u32)
    }

    fn dm_info(&mut self, name: &str) -> Result<Option<DmInfo>> {
        self.timed(|this| {
            let Ok(dm_name) = DmName::new(name) else {
                return Ok(None);
            };
            match this.dm()?.device_info(&DevId::Name(dm_name)) {
                Ok(info) => Ok(Some(DmInfo {
                    uuid: info.uuid().map(|u| u.to_string()).unwrap_or_default(),
                    active: info.flags().contains(DmFlags::DM_ACTIVE_PRESENT),
                })),
                Err(e) if dm_errno(&e) == Some(nix::errno::Errno::ENXIO) => Ok(None),
                Err(e) => Err(dm_error("look up dm device", name, e)),
            }
        })
    }

    fn dm_line(&mut self, name: &str, status: bool) -> Result<DmLine> {
        self.timed(|this| {
            let options =
                if status { DmOptions::default() } else { DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE) };
            let what = if status { "read status of" } else { "read table of" };
            let (_, lines) =
                this.dm()?.table_status(&DevId::Name(dm_name(name)?), options).map_err(|e| dm_error(what, name, e))?;
            let (_, len, target, params) =
                lines.into_iter().next().ok_or_else(|| Error::Inconsistent(format!("{name} has no table")))?;
            Ok(DmLine { len: Sectors(len), target, params })
        })
    }

    fn write_header(&mut self, device: &str, slot: usize, header: &PoolHeader, fresh: Fresh) -> Result<()> {
        let file = OpenOptions::new().write(true).open(device).map_err(|e| Error::io("open for writing", device, e))?;
        let write = |offset: u64, data: &[u8]| {
            file.write_all_at(data, offset).map_err(|e| Error::io("write", format!("{device} at byte {offset}"), e))
        };
        if fresh == Fresh::Wipe {
            // Wipe any old signature in the header region, and the last
            // MiB (data blocks not in use yet), so a backup GPT or an
            // md/ZFS label there does not outlive the format.
            write(0, &vec![0u8; RESERVED_BYTES as usize])?;
            let size = probe::size_of(device)?.0;
            let tail = size.saturating_sub(RESERVED_BYTES).max(header.data.start.bytes().0);
            write(tail, &vec![0u8; (size - tail.min(size)) as usize])?;
        }
        if fresh != Fresh::No {
            // The first metadata block, so the kernel formats fresh metadata.
            write(header.meta.start.bytes().0, &[0u8; 4096])?;
            // Durable before the new header exists: a power cut leaves
            // either a blank device or a complete pool.
            file.sync_all().map_err(|e| Error::io("flush", device, e))?;
        }
        write(SLOT_OFFSETS[slot], &header.encode())?;
        file.sync_all().map_err(|e| Error::io("flush", device, e))
    }

    fn dm_create(&mut self, spec: &DmSpec) -> Result<DevNum> {
        self.timed(|this| {
            let name = dm_name(&spec.name)?;
            let uuid = DmUuid::new(&spec.uuid).map_err(|e| Error::io("uuid", &spec.uuid, e))?;
            let id = DevId::Name(name);
            this.dm()?.device_create(name, Some(uuid), udev_flags(spec.private)).map_err(|e| match e {
                e if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) => Error::io(
                    "create dm device",
                    &spec.name,
                    format!(
                        "it exists already (left over from an earlier attempt?); \
                             remove it with `dmsetup remove {}`",
                        spec.name
                    ),
                ),
                other => dm_error("create dm device", &spec.name, other),
            })?;
            let load_options = if spec.read_only {
                DmOptions::default().set_flags(DmFlags::DM_READONLY)
            } else {
                DmOptions::default()
            };
            let table = [(0u64, spec.len.0, spec.target.to_string(), spec.params.clone())];
            let loaded = this.dm()?.table_load(&id, &table, load_options).map_err(|e| {
                // A crypt table holds its key: never in a message.
                let params = if spec.target == "crypt" { "(key and device hidden)" } else { spec.params.as_str() };
                dm_error(&format!("load table '0 {} {} {params}' into", spec.len, spec.target), &spec.name, e)
            });
            let activated = match loaded {
                Ok(_) => this
                    .udev_bounded(&format!("the activation of {}", spec.name), |dm| {
                        dm.device_suspend(&id, udev_flags(spec.private))
                    })?
                    .map_err(|e| dm_error("activate", &spec.name, e)),
                Err(e) => Err(e),
            };
            match activated {
                Ok(info) => {
                    let dev = info.device();
                    Ok(DevNum { major: dev.major, minor: dev.minor })
                }
                Err(e) => {
                    let _ = this.udev_bounded("a removal", |dm| dm.device_remove(&id, DmOptions::default()));
                    Err(e)
                }
            }
        })
    }

    fn dm_reload(&mut self, spec: &DmSpec) -> Result<()> {
        use nix::sys::mman::{mlockall, munlockall, MlockAllFlags};
        // As for a live snapshot: the root is suspended, so nothing of this
        // program may need a read from it, nor a signal cut the swap short.
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
            .map_err(|e| Error::io("lock in memory", "cowroot", e))?;
        let id = DevId::Name(dm_name(&spec.name)?);
        let signals = SignalsHeld::new();
        let result = self.timed(|this| {
            let table = [(0u64, spec.len.0, spec.target.to_string(), spec.params.clone())];
            this.dm()?.table_load(&id, &table, DmOptions::default()).map_err(|e| {
                dm_error(&format!("load table '0 {} {} {}' into", spec.len, spec.target, spec.params), &spec.name, e)
            })?;
            let suspend = DmOptions::default().set_flags(DmFlags::DM_SUSPEND);
            if let Err(e) = this.dm()?.device_suspend(&id, suspend) {
                let _ = this.dm()?.table_clear(&id);
                return Err(dm_error("suspend", &spec.name, e));
            }
            // Resuming makes the loaded table the live one. Should that
            // fail, the old table comes back rather than a root left frozen.
            match this.dm()?.device_suspend(&id, DmOptions::default()) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = this.dm()?.table_clear(&id);
                    let _ = this.dm()?.device_suspend(&id, DmOptions::default());
                    Err(dm_error("resume with the new table", &spec.name, e))
                }
            }
        });
        drop(signals);
        let _ = munlockall();
        result
    }

    fn dm_remove(&mut self, name: &str) -> Result<()> {
        self.timed(|this| {
            let id = DevId::Name(dm_name(name)?);
            this.udev_bounded(&format!("the removal of {name}"), |dm| dm.device_remove(&id, DmOptions::default()))?
                .map(|_| ())
                .map_err(|e| dm_error("remove dm device", name, e))
        })
    }

    fn dm_message(&mut self, name: &str, message: &str, missing_ok: bool) -> Result<()> {
        self.timed(|this| match this.dm()?.target_msg(&DevId::Name(dm_name(name)?), None, message) {
            Ok(_) => Ok(()),
            Err(e) if missing_ok && dm_errno(&e) == Some(nix::errno::Errno::ENODATA) => {
                log::debug!("{message}: no such thin, nothing to delete");
                Ok(())
            }
            Err(e) => Err(dm_error(&format!("send '{message}' to"), name, e)),
        })
    }

    fn message_suspended(&mut self, device: &str, pool: &str, message: &str) -> Result<()> {
        use nix::sys::mman::{mlockall, munlockall, MlockAllFlags};
        // While the root is suspended, a page fault on this program's own
        // pages (read from the root) would wait for the resume that only
        // this program can do: keep all of it in memory first, as LVM does.
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
            .map_err(|e| Error::io("lock in memory", "cowroot", e))?;
        let id = DevId::Name(dm_name(device)?);
        let suspend = DmOptions::default().set_flags(DmFlags::DM_SUSPEND);
        // Ctrl-C, a hang-up or `systemctl stop` between suspend and resume
        // would leave the root frozen: every signal that can wait, waits.
        let signals = SignalsHeld::new();
        let result = self.timed(|this| {
            // A suspend with its filesystem frozen (no DM_SKIP_LOCKFS):
            // the snapshot holds what a crash at this instant would.
            this.dm()?.device_suspend(&id, suspend).map_err(|e| dm_error("suspend", device, e))?;
            let sent = this.dm()?.target_msg(&DevId::Name(dm_name(pool)?), None, message);
            let resumed = this.dm()?.device_suspend(&id, DmOptions::default());
            sent.map_err(|e| dm_error(&format!("send '{message}' to"), pool, e))?;
            resumed.map(|_| ()).map_err(|e| dm_error("resume", device, e))
        });
        drop(signals);
        let _ = munlockall();
        result
    }

    fn make_node(&mut self, name: &str, dev: DevNum) -> Result<bool> {
        let path = format!("/dev/mapper/{name}");
        if probe::udev_running() {
            // udev makes the node; don't race it, but don't wait for ever
            // either: without its dm rules it never will.
            let limit =
                if self.udev_silent { Duration::ZERO } else { self.timeout.clamp(UDEV_CONFIRM_MIN, UDEV_CONFIRM_MAX) };
            let start = Instant::now();
            while start.elapsed() <= limit {
                if Path::new(&path).exists() {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            log::warn!("udev did not create {path} within {} s; creating it", limit.as_secs());
        }
        fs::create_dir_all("/dev/mapper").map_err(|e| Error::io("mkdir", "/dev/mapper", e))?;
        if Path::new(&path).exists() {
            fs::remove_file(&path).map_err(|e| Error::io("remove stale", &path, e))?;
        }
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        let devt = nix::sys::stat::makedev(dev.major as u64, dev.minor as u64);
        nix::sys::stat::mknod(path.as_str(), nix::sys::stat::SFlag::S_IFBLK, mode, devt)
            .map_err(|e| Error::io("mknod", &path, e))?;
        Ok(true)
    }

    fn remove_node(&mut self, name: &str) -> Result<()> {
        let path = format!("/dev/mapper/{name}");
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))
    }
}

/// Loads the kernel modules cowroot needs with modprobe, when the
/// initramfs has it and they are not loaded yet: nothing loads
/// device-mapper or loop on its own. Failures are left to the steps that
/// need the module, which say what is missing.
pub fn load_modules(need_loop: bool, need_crypt: bool, need_nbd: bool) {
    let mut wanted = vec![("dm-thin-pool", "dm_thin_pool")];
    if need_nbd {
        wanted.push(("nbd", "nbd"));
    }
    if need_loop {
        wanted.push(("loop", "loop"));
    }
    if need_crypt {
        // The kernel would ask modprobe for xts itself, but an initramfs
        // without a full modprobe cannot answer.
        wanted.extend([("dm-crypt", "dm_crypt"), ("xts", "xts")]);
    }
    let Some(modprobe) =
        probe::installed(&["/usr/sbin/modprobe", "/sbin/modprobe", "/usr/bin/modprobe", "/bin/modprobe"])
    else {
        return;
    };
    for (module, sys_name) in wanted {
        if Path::new(&format!("/sys/module/{sys_name}")).exists() {
            continue;
        }
        match std::process::Command::new(modprobe).args(["-q", module]).status() {
            Ok(status) if status.success() => log::debug!("loaded {module}"),
            Ok(status) => log::debug!("modprobe {module}: {status}"),
            Err(e) => log::debug!("modprobe {module}: {e}"),
        }
    }
}
