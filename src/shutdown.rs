//! The shutdown side. systemd-shutdown cannot unmount the root while it
//! runs from it, so it cannot remove the dm devices under the root, the
//! image's loop device or the image host either. When
//! `/run/initramfs/shutdown` is executable it pivots into `/run/initramfs`
//! (the old root moves to `/oldroot`) and runs it as PID 1. `cowroot boot`
//! puts a copy of this static binary there; run as `/shutdown` it unmounts
//! the old root, removes the dm devices (holders first), detaches loop
//! devices, unmounts the image host and powers off (or reboots, halts). It
//! needs nothing else from the initramfs: no shell, no library.
//!
//! The order below is the one part that matters: the image host holds the
//! loop device's file, the loop device is held by the thin device, and the
//! thin device by the root filesystem. So the host mount is moved out of
//! the old root first (it could not be unmounted before the devices are
//! gone, and it would keep `/oldroot/run` and so `/oldroot` busy), then the
//! old root is unmounted, the devices are removed, and the host last.

use crate::error::{Error, Result};
use crate::plan::HOST_MOUNT;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where systemd-shutdown looks for a shutdown program (and dracut keeps
/// its own, when it unpacks one there).
pub const EXITRD: &str = "/run/initramfs";
pub const SHUTDOWN: &str = "/run/initramfs/shutdown";
/// Where systemd-shutdown leaves the old root after the pivot.
const OLD_ROOT: &str = "/oldroot";
/// Where the image host mount is moved to, inside the shutdown root.
const HOST_PARKED: &str = "/cowroot-host";

/// What systemd asks for (`/shutdown VERB ...`); dracut's shutdown takes
/// the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
    Halt,
    Kexec,
}

impl Action {
    /// An unknown or missing verb reboots, as dracut's shutdown does: a
    /// machine that powers off when asked to restart is harder to reach.
    pub fn parse(verb: Option<&str>) -> Action {
        match verb {
            Some("poweroff") => Action::PowerOff,
            Some("halt") => Action::Halt,
            Some("kexec") => Action::Kexec,
            _ => Action::Reboot,
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Action::PowerOff => "powering off",
            Action::Reboot => "rebooting",
            Action::Halt => "halting",
            Action::Kexec => "rebooting with kexec",
        }
    }
}

/// Undoes the octal escapes of `/proc/self/mountinfo` (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = bytes[i + 1..i + 4].iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of `/proc/self/mountinfo`, in mount order.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).map(unescape).collect()
}

fn is_at_or_under(path: &str, root: &str) -> bool {
    path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// The mounts at or under `root`, children before their parents (a mount
/// comes after its parent in mount order, so the reverse of that order).
pub fn unmount_order(points: &[String], root: &str) -> Vec<String> {
    points.iter().rev().filter(|p| is_at_or_under(p, root)).cloned().collect()
}

/// One dm device as sysfs shows it: its dm name, its kernel name (`dm-3`)
/// and the kernel names of the devices stacked on it.
#[derive(Debug, Clone)]
pub struct DmDev {
    pub name: String,
    pub kernel: String,
    pub holders: Vec<String>,
}

/// dm names in an order that removes every holder before what it holds.
pub fn removal_order(devices: &[DmDev]) -> Vec<String> {
    fn visit(i: usize, devices: &[DmDev], state: &mut [u8], out: &mut Vec<String>) {
        // 0 new, 1 in progress (a cycle cannot happen in sysfs; ignore it), 2 done.
        if state[i] != 0 {
            return;
        }
        state[i] = 1;
        for holder in &devices[i].holders {
            if let Some(j) = devices.iter().position(|d| &d.kernel == holder) {
                visit(j, devices, state, out);
            }
        }
        state[i] = 2;
        out.push(devices[i].name.clone());
    }
    let mut state = vec![0u8; devices.len()];
    let mut out = Vec::new();
    for i in 0..devices.len() {
        visit(i, devices, &mut state, &mut out);
    }
    out
}

/// Puts this binary at `/run/initramfs/shutdown` (run in the initramfs
/// after a successful setup; `/run` outlives switch-root). Leaves one that
/// is there already alone. Returns whether it installed it.
pub fn install() -> Result<bool> {
    if Path::new(SHUTDOWN).exists() {
        return Ok(false);
    }
    fs::create_dir_all(EXITRD).map_err(|e| Error::io("mkdir", EXITRD, e))?;
    // initramfs-tools and dracut without systemd mount /run noexec, and
    // systemd-shutdown pivots only into an executable /shutdown: give it a
    // tmpfs of its own, which systemd leaves mounted until the end (it
    // never unmounts /run/initramfs). No size limit of ours (tmpfs takes
    // memory only as it is written): at shutdown dracut-initramfs-restore,
    // or Debian's mdadm-shutdown, may unpack a whole initramfs here, and
    // when that fails for want of space dracut removes /shutdown. dracut
    // with systemd has an exec /run, whose /run/initramfs holds state of
    // dracut's own, so it is used as it is.
    let noexec = nix::sys::statvfs::statvfs(EXITRD)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
        .map_err(|e| Error::io("statvfs", EXITRD, e))?;
    if noexec {
        mount(Some("tmpfs"), EXITRD, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))
            .map_err(|e| Error::io("mount tmpfs on", EXITRD, e))?;
    }
    // The host mount is moved here at shutdown, when this root may be
    // read-only already.
    let parked = format!("{EXITRD}{HOST_PARKED}");
    fs::create_dir_all(&parked).map_err(|e| Error::io("mkdir", &parked, e))?;
    let temp = format!("{SHUTDOWN}.cowroot");
    fs::copy("/proc/self/exe", &temp).map_err(|e| Error::io("copy /proc/self/exe to", &temp, e))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o755)).map_err(|e| Error::io("chmod", &temp, e))?;
    fs::rename(&temp, SHUTDOWN).map_err(|e| Error::io("rename to", SHUTDOWN, e))?;
    Ok(true)
}

fn read_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo").map(|t| mount_points(&t)).unwrap_or_default()
}

fn is_mounted(path: &str) -> bool {
    read_mounts().iter().any(|p| p == path)
}

/// The dm devices sysfs shows.
fn dm_devices() -> Vec<DmDev> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else { return out };
    for entry in entries.flatten() {
        let kernel = entry.file_name().to_string_lossy().into_owned();
        if !kernel.starts_with("dm-") {
            continue;
        }
        let base = entry.path();
        let Ok(name) = fs::read_to_string(base.join("dm/name")) else { continue };
        let holders = fs::read_dir(base.join("holders"))
            .map(|d| d.flatten().map(|h| h.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        out.push(DmDev { name: name.trim().to_string(), kernel, holders });
    }
    out.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    out
}

/// Loop devices that still have a backing file.
fn bound_loops() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/sys/block") else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|k| k.starts_with("loop") && Path::new(&format!("/sys/block/{k}/loop/backing_file")).exists())
        .map(|k| format!("/dev/{k}"))
        .collect();
    out.sort();
    out
}

/// Mounts the API filesystems the steps below read, where systemd did not
/// bind them already.
fn api_filesystems() {
    for (dir, fstype) in [("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "devtmpfs")] {
        let _ = fs::create_dir_all(dir);
        let probe = match dir {
            "/proc" => "/proc/self",
            "/sys" => "/sys/block",
            _ => "/dev/null",
        };
        if !Path::new(probe).exists() {
            let _ = mount(Some(fstype), dir, Some(fstype), MsFlags::empty(), None::<&str>);
        }
    }
}

/// What the teardown did, for one summary line (and a warning per problem).
#[derive(Default)]
struct Report {
    root_unmounted: bool,
    removed: Vec<String>,
    detached: Vec<String>,
    host: Option<bool>,
    problems: Vec<String>,
}

/// Removes the dm devices there are, holders first. Only the last pass
/// reports what could not be removed: in the first, the image host's mount
/// still holds the devices under it.
fn remove_dm_devices(report: &mut Report, last: bool) {
    match crate::sys::RealSystem::new(std::time::Duration::from_secs(1)).dm() {
        Ok(dm) => {
            for name in removal_order(&dm_devices()) {
                let Ok(dm_name) = devicemapper::DmName::new(&name) else { continue };
                let id = devicemapper::DevId::Name(dm_name);
                match dm.device_remove(&id, devicemapper::DmOptions::default()) {
                    Ok(_) => report.removed.push(name),
                    Err(e) if last => report.problems.push(format!("could not remove dm device {name}: {e}")),
                    Err(_) => {}
                }
            }
        }
        Err(e) if last => report.problems.push(format!("cannot remove the dm devices: {e}")),
        Err(_) => {}
    }
}

fn teardown() -> Report {
    let mut report = Report::default();
    // The image host: moved out of the old root (see the module comment).
    let host = format!("{OLD_ROOT}{HOST_MOUNT}");
    let mut parked = false;
    if is_mounted(&host) {
        let _ = fs::create_dir_all(HOST_PARKED);
        match mount(Some(host.as_str()), HOST_PARKED, None::<&str>, MsFlags::MS_MOVE, None::<&str>) {
            Ok(()) => parked = true,
            Err(e) => {
                // Detached lazily, it is unmounted once its loop device lets go.
                report.problems.push(format!("could not move the image host mount {host} ({e}); detached it lazily"));
                let _ = umount2(host.as_str(), MntFlags::MNT_DETACH);
            }
        }
    }
    // The old root and everything under it, children first, in passes
    // while any pass gets further.
    loop {
        let mut progress = false;
        for point in unmount_order(&read_mounts(), OLD_ROOT) {
            if umount2(point.as_str(), MntFlags::empty()).is_ok() {
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    // Whatever is left below the old root (API filesystems that something
    // still holds): detached lazily, then the old root once more.
    for point in unmount_order(&read_mounts(), OLD_ROOT) {
        if point != OLD_ROOT {
            let _ = umount2(point.as_str(), MntFlags::MNT_DETACH);
        }
    }
    let _ = umount2(OLD_ROOT, MntFlags::empty());
    report.root_unmounted = !is_mounted(OLD_ROOT);
    if !report.root_unmounted {
        // systemd-shutdown remounted it read-only and synced already.
        report
            .problems
            .push(format!("could not unmount the old root {OLD_ROOT}; it stays read-only and its devices stay set up"));
    }
    // The dm devices, holders first: a thin device is removed before its
    // pool, the pool before its metadata and data layers. The pool commits
    // its metadata when it is removed. Not while the root is mounted: all
    // would fail, held by it. Those under the image host (its LV, its LUKS
    // device) are held by its mount: they go in a second pass, after it.
    if report.root_unmounted {
        remove_dm_devices(&mut report, false);
    }
    // The image's loop device auto-clears when the thin device lets go;
    // any other still bound is detached here.
    for path in bound_loops() {
        match loopdev::LoopDevice::open(&path).and_then(|l| l.detach()) {
            Ok(()) => report.detached.push(path),
            Err(e) => report.problems.push(format!("could not detach loop device {path}: {e}")),
        }
    }
    if parked {
        match umount2(HOST_PARKED, MntFlags::empty()) {
            Ok(()) => report.host = Some(true),
            Err(e) => {
                report.host = Some(false);
                report.problems.push(format!("could not unmount the image host ({e}); detached it lazily"));
                let _ = umount2(HOST_PARKED, MntFlags::MNT_DETACH);
            }
        }
    }
    if report.root_unmounted {
        remove_dm_devices(&mut report, true);
    }
    // Said plainly, so a test (or a person) sees what was left behind.
    let left: Vec<String> = dm_devices().into_iter().map(|d| d.name).chain(bound_loops()).collect();
    if !left.is_empty() {
        report.problems.push(format!("still set up: {}", left.join(", ")));
    }
    report
}

/// Runs as PID 1 in `/run/initramfs`: tears everything down and ends the
/// machine as asked. Never returns (PID 1 exiting panics the kernel).
pub fn run(action: Action) -> ! {
    crate::klog::init(true, log::LevelFilter::Info);
    api_filesystems();
    // systemd may have remounted this root read-only.
    let _ = mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REMOUNT, None::<&str>);
    // The old /run, bound here by systemd, still has udev's control socket:
    // device-mapper would wait for a udev that is gone. Not needed here.
    let _ = umount2("/run", MntFlags::MNT_DETACH);
    let report = teardown();
    let mut line = String::from("shutdown: ");
    if report.root_unmounted {
        line.push_str("unmounted the root");
    } else {
        line.push_str("the root is still mounted (read-only)");
    }
    if !report.removed.is_empty() {
        let _ = write!(line, "; removed {}", report.removed.join(", "));
    }
    if !report.detached.is_empty() {
        let _ = write!(line, "; detached {}", report.detached.join(", "));
    }
    match report.host {
        Some(true) => line.push_str("; unmounted the image host"),
        Some(false) => line.push_str("; the image host is still mounted (read-only)"),
        None => {}
    }
    let _ = write!(line, "; {}", action.doing());
    for problem in &report.problems {
        log::warn!("shutdown: {problem}");
    }
    log::info!("{line}");
    nix::unistd::sync();
    use nix::sys::reboot::{reboot, RebootMode};
    let mode = match action {
        Action::PowerOff => RebootMode::RB_POWER_OFF,
        Action::Halt => RebootMode::RB_HALT_SYSTEM,
        Action::Kexec => RebootMode::RB_KEXEC,
        Action::Reboot => RebootMode::RB_AUTOBOOT,
    };
    let err = reboot(mode).err();
    if action == Action::Kexec {
        let _ = reboot(RebootMode::RB_AUTOBOOT);
    }
    log::error!("shutdown: {} failed ({err:?}); halt the machine by hand", action.doing());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // /proc/self/mountinfo after systemd-shutdown's pivot (trimmed).
    const MOUNTINFO: &str = "\
24 1 253:3 / /oldroot rw,relatime shared:1 - ext4 /dev/mapper/cowroot ro
25 24 0:22 / /oldroot/sys rw shared:2 - sysfs sysfs rw
26 24 0:5 / /oldroot/dev rw shared:3 - devtmpfs udev rw
27 24 0:24 / /oldroot/run rw shared:5 - tmpfs tmpfs rw
28 27 7:0 / /oldroot/run/cowroot/host ro shared:6 - ext4 /dev/vda ro
29 27 0:30 / /oldroot/run/my\\040dir rw - tmpfs tmpfs rw
30 1 0:24 /initramfs / rw - tmpfs tmpfs rw
31 30 0:5 / /dev rw - devtmpfs udev rw
32 24 0:6 / /oldroot2 rw - tmpfs tmpfs rw
";

    #[test]
    fn children_are_unmounted_before_parents_and_only_under_the_old_root() {
        let points = mount_points(MOUNTINFO);
        assert_eq!(points[5], "/oldroot/run/my dir");
        assert_eq!(
            unmount_order(&points, "/oldroot"),
            [
                "/oldroot/run/my dir",
                "/oldroot/run/cowroot/host",
                "/oldroot/run",
                "/oldroot/dev",
                "/oldroot/sys",
                "/oldroot"
            ]
        );
    }

    #[test]
    fn holders_are_removed_before_what_they_hold() {
        let dev = |name: &str, kernel: &str, holders: &[&str]| DmDev {
            name: name.into(),
            kernel: kernel.into(),
            holders: holders.iter().map(|h| h.to_string()).collect(),
        };
        // As sysfs lists them: the layers first, the thin device last.
        let devices = [
            dev("cowroot-pool_tmeta", "dm-0", &["dm-2"]),
            dev("cowroot-pool_tdata", "dm-1", &["dm-2"]),
            dev("cowroot-pool", "dm-2", &["dm-3"]),
            dev("cowroot", "dm-3", &[]),
            dev("cowvg-pool", "dm-4", &["dm-0", "dm-1"]),
        ];
        assert_eq!(
            removal_order(&devices),
            ["cowroot", "cowroot-pool", "cowroot-pool_tmeta", "cowroot-pool_tdata", "cowvg-pool"]
        );
    }

    #[test]
    fn verbs_are_systemds() {
        assert_eq!(Action::parse(Some("poweroff")), Action::PowerOff);
        assert_eq!(Action::parse(Some("reboot")), Action::Reboot);
        assert_eq!(Action::parse(Some("halt")), Action::Halt);
        assert_eq!(Action::parse(Some("kexec")), Action::Kexec);
        assert_eq!(Action::parse(None), Action::Reboot);
        assert_eq!(Action::parse(Some("exit")), Action::Reboot);
    }
}
