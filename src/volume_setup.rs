//! The booted system's side of persistent volumes. The boot brings their
//! devices up and lists them in `volume::MARKER`; here they get a
//! filesystem on first use (`cowroot volumes --prepare`, run by
//! cowroot-volume@NAME.service), are mounted by systemd through mount units
//! that `cowroot-volume-generator` writes, or by `cowroot volumes --mount`
//! on a system without systemd.
//!
//! Only a volume the pool header records as never formatted, and that
//! holds no signature, is formatted: a fresh thin reads as zeros, so what
//! such a volume holds can only be a first mkfs that did not finish.

use crate::blkid;
use crate::error::{Error, Result};
use crate::exec::System;
use crate::names::{DeviceName, Role};
use crate::probe;
use crate::signature;
use crate::status;
use crate::table::Thin;
use crate::volume::{mount_unit, ActiveVolume, VolumeFs, VolumeName, MARKER};
use std::path::Path;
use std::process::Command;

/// This boot's volumes; none when the boot brought none up.
pub fn active() -> Result<Vec<ActiveVolume>> {
    match std::fs::read_to_string(MARKER) {
        Ok(text) => ActiveVolume::parse_marker(&text).map_err(|why| {
            Error::Inconsistent(format!("{MARKER}: {why}; the boot wrote it, so it was changed since: reboot"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", MARKER, e)),
    }
}

/// Makes a filesystem on each of this boot's volumes (or only on `only`)
/// that has none yet, and records it in the pool header. One volume's
/// trouble does not stop the others: each gets its line, and the errors
/// are returned together at the end.
pub fn prepare<S: System>(sys: &mut S, name: &DeviceName, only: Option<VolumeName>) -> Result<Vec<String>> {
    let volumes: Vec<ActiveVolume> = active()?.into_iter().filter(|v| only.is_none_or(|o| o == v.name)).collect();
    if let (Some(only), true) = (only, volumes.is_empty()) {
        return Err(Error::Usage(format!("this boot brought up no volume {only} (see `cowroot volumes`)")));
    }
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for volume in &volumes {
        match prepare_one(sys, name, volume) {
            Ok(line) => report.push(line),
            Err(e) => failed.push(format!("volume {}: {e}", volume.name)),
        }
    }
    if failed.is_empty() {
        Ok(report)
    } else {
        report.extend(failed);
        Err(Error::Refused(report.join("\n")))
    }
}

fn prepare_one<S: System>(sys: &mut S, name: &DeviceName, volume: &ActiveVolume) -> Result<String> {
    // The device must be this pool's thin for the volume the header
    // records, whatever the marker says, before anything is written to it.
    let expected = name.mapper_path(Role::Volume(volume.name));
    let record = status::volume_record(sys, name, volume.name)?.ok_or_else(|| {
        Error::Inconsistent(format!("{MARKER} names it, but the pool header records no such volume: reboot"))
    })?;
    let line = sys.dm_line(&name.dm_name(Role::Volume(volume.name)), false)?;
    let thin: Option<Thin> = line.params.parse().ok();
    if volume.device != expected || line.target != "thin" || thin.is_none_or(|t| t.id != record.thin) {
        return Err(Error::Inconsistent(format!(
            "{} is not thin {} of this pool as recorded (table: {} {}); nothing was written: reboot",
            volume.device, record.thin, line.target, line.params
        )));
    }
    let start = probe::read_start(&volume.device, 1 << 20)?;
    let fs = blkid::probe_fs(&start).map(|f| f.fstype);
    match (record.formatted, fs, signature::detect(&start)) {
        (_, Some(found), _) if !fits(found, volume.fs) => Err(Error::config(
            "cowroot.volume",
            format!(
                "volume {} holds {found}, but the key asks for {}; a volume is never formatted again: write :{found} \
                 in cowroot.volume (or give this one up and use a new name)",
                volume.name,
                volume.fs.as_str()
            ),
        )),
        (_, _, Some(what)) => {
            status::record_formatted(sys, name, volume.name)?;
            Ok(format!("{} ({}): holds {what}", volume.name, volume.device))
        }
        (true, _, None) => Err(Error::Refused(format!(
            "{} was formatted before, but no filesystem is found on it now; it is left as it is. Look at it with \
             `blkid {}`; to make a new {} filesystem on it, losing what it holds: mkfs.{} {}",
            volume.device,
            volume.device,
            volume.fs.as_str(),
            volume.fs.as_str(),
            volume.device
        ))),
        (false, _, None) => {
            make_filesystem(volume)?;
            status::record_formatted(sys, name, volume.name)?;
            Ok(format!("{} ({}): made {}", volume.name, volume.device, volume.fs.as_str()))
        }
    }
}

/// Whether a filesystem found on a volume is the one asked for (mount -t
/// ext4 mounts ext2 and ext3 too).
fn fits(found: &str, asked: VolumeFs) -> bool {
    match asked {
        VolumeFs::Ext4 => matches!(found, "ext2" | "ext3" | "ext4"),
        other => found == other.as_str(),
    }
}

/// Where to look for mkfs when PATH is not set (an init script's
/// environment may have none, and musl's default lacks the sbin dirs).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(DEFAULT_PATH.split(':'))
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
}

fn make_filesystem(volume: &ActiveVolume) -> Result<()> {
    let (program, args) = volume.fs.mkfs();
    log::info!("making {} on volume {} ({})", volume.fs.as_str(), volume.name, volume.device);
    let found = find_program(program).ok_or_else(|| {
        Error::io(
            "find",
            program,
            format!(
                "not in PATH nor in {DEFAULT_PATH}; install the package that has it (e2fsprogs, xfsprogs, \
                 btrfs-progs) to format volume {}",
                volume.name
            ),
        )
    })?;
    let output = Command::new(&found).args(args).arg(&volume.device).output().map_err(|e| {
        Error::io(
            "run",
            program,
            format!(
                "{e}; install the package that has it (e2fsprogs, xfsprogs, btrfs-progs) to format volume {}",
                volume.name
            ),
        )
    })?;
    if !output.status.success() {
        return Err(Error::Inconsistent(format!(
            "{program} {} failed ({}): {}",
            volume.device,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// `prepare`, then mounts each volume not yet mounted (parents first);
/// a volume that could not be prepared is not mounted, the others are.
pub fn mount_all<S: System>(sys: &mut S, name: &DeviceName) -> Result<Vec<String>> {
    let (mut report, failed) = match prepare(sys, name, None) {
        Ok(report) => (report, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let failed_text = failed.as_ref().map(|e| e.to_string()).unwrap_or_default();
    let mut volumes = active()?;
    volumes.retain(|v| !failed_text.contains(&format!("volume {}:", v.name)));
    volumes.sort_by_key(|v| v.mount_point.matches('/').count());
    for volume in volumes {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
        match crate::grow::mount_source(&mounts, &volume.mount_point) {
            Some(source) if source == volume.device => {
                report.push(format!("{}: already mounted at {}", volume.name, volume.mount_point));
                continue;
            }
            // Something else there (an fstab line, a tmpfs): mounting over
            // it would hide it; say so instead.
            Some(source) => {
                return Err(Error::Refused(format!(
                    "{}{}{source} is mounted at {}, where volume {} belongs; unmount it (or take it out of fstab)",
                    report.join("\n"),
                    if report.is_empty() { "" } else { "\n" },
                    volume.mount_point,
                    volume.name
                )))
            }
            None => {}
        }
        std::fs::create_dir_all(&volume.mount_point).map_err(|e| Error::io("mkdir", &volume.mount_point, e))?;
        nix::mount::mount(
            Some(volume.device.as_str()),
            volume.mount_point.as_str(),
            Some(volume.fs.as_str()),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            Error::io("mount", &volume.mount_point, format!("{} ({}): {e}", volume.device, volume.fs.as_str()))
        })?;
        report.push(format!("{}: mounted at {}", volume.name, volume.mount_point));
    }
    match failed {
        None => Ok(report),
        Some(e) if report.is_empty() => Err(e),
        Some(e) => Err(Error::Refused(format!("{}\n{e}", report.join("\n")))),
    }
}

/// The mount unit of one volume.
pub fn unit_text(volume: &ActiveVolume) -> String {
    format!(
        "# Written by cowroot-volume-generator from {MARKER}.\n\
         [Unit]\n\
         Description=cowroot persistent volume {name}\n\
         Documentation=file:/usr/share/doc/cowroot/README.md\n\
         SourcePath={MARKER}\n\
         Requires=cowroot-volume@{name}.service\n\
         After=cowroot-volume@{name}.service\n\
         Before=local-fs.target\n\
         \n\
         [Mount]\n\
         What={device}\n\
         Where={mount_point}\n\
         Type={fs}\n",
        name = volume.name,
        device = volume.device,
        mount_point = volume.mount_point,
        fs = volume.fs.as_str()
    )
}

/// The systemd generator: a mount unit per volume of this boot, required
/// by local-fs.target as fstab's entries are. In the initrd, or when the
/// boot brought up no volume, it writes nothing.
pub fn generate(dir: &Path) -> Result<()> {
    if Path::new("/etc/initrd-release").exists() {
        return Ok(());
    }
    let volumes = active()?;
    if volumes.is_empty() {
        return Ok(());
    }
    let wants = dir.join("local-fs.target.requires");
    std::fs::create_dir_all(&wants).map_err(|e| Error::io("mkdir", wants.display().to_string(), e))?;
    for volume in &volumes {
        let unit = mount_unit(&volume.mount_point);
        let path = dir.join(&unit);
        std::fs::write(&path, unit_text(volume)).map_err(|e| Error::io("write", path.display().to_string(), e))?;
        let link = wants.join(&unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{unit}"), &link)
            .map_err(|e| Error::io("symlink", link.display().to_string(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{VolumeFs, VolumeName};

    #[test]
    fn mount_units_name_the_volume_device_and_the_format_service() {
        let v = ActiveVolume {
            name: VolumeName::parse("log").unwrap(),
            device: "/dev/mapper/cowroot-vol-log".into(),
            mount_point: "/var/log".into(),
            fs: VolumeFs::Xfs,
        };
        let text = unit_text(&v);
        for want in [
            "Requires=cowroot-volume@log.service\n",
            "After=cowroot-volume@log.service\n",
            "Before=local-fs.target\n",
            "What=/dev/mapper/cowroot-vol-log\n",
            "Where=/var/log\n",
            "Type=xfs\n",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
