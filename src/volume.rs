//! Persistent volumes (`cowroot.volume=NAME:SIZE:MOUNTPOINT[:FSTYPE]`):
//! thin volumes in the root's pool that no reset, frozen boot or rollback
//! touches, for `/home` or `/var/log` beside a throwaway root. This module
//! holds what the boot and the booted system share: the validated spec,
//! the record the pool header keeps, and the marker the boot leaves in
//! /run for the booted system to format and mount them.

use crate::error::{Error, Result};
use crate::units::{parse_size, Bytes, Sectors};
use std::fmt;

const KEY: &str = "cowroot.volume";
/// The most volumes one pool records (the header has room for them).
pub const MAX_VOLUMES: usize = 8;
/// The longest volume name (it becomes part of a dm name and uuid).
pub const VOLUME_NAME_MAX: usize = 24;
/// The largest volume (1 PiB): past it a typo, not a wish.
const MAX_VOLUME_BYTES: u64 = 1 << 50;
/// Mount points that hold the system itself: an empty filesystem mounted
/// at or under one of them breaks the booted system (or, under /run,
/// hides cowroot's own markers).
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",
    "/var/lock",
];
/// Holding the package database and more: refused as they are, allowed
/// below (`/var/log`, `/var/lib/docker`).
const SYSTEM_PARENTS: &[&str] = &["/var", "/var/lib"];
/// Where the boot lists this boot's volumes for the booted system.
pub const MARKER: &str = "/run/cowroot/volumes";

/// A volume's name: 1 to 24 of letters, digits, `_` and `-`, not starting
/// with `-`. Fixed-size so that a dm `Role` naming it stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VolumeName {
    bytes: [u8; VOLUME_NAME_MAX],
    len: u8,
}

impl VolumeName {
    pub fn parse(text: &str) -> std::result::Result<VolumeName, String> {
        VolumeName::parse_as(text, "volume")
    }

    /// `parse` for a name of another thing (a checkpoint's, say).
    pub fn parse_as(text: &str, what: &str) -> std::result::Result<VolumeName, String> {
        if text.is_empty() || text.len() > VOLUME_NAME_MAX {
            return Err(format!("a {what} name is 1 to {VOLUME_NAME_MAX} characters, got {text:?}"));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') || text.starts_with('-') {
            return Err(format!("a {what} name uses only letters, digits, _ and - (not first), got {text:?}"));
        }
        let mut bytes = [0u8; VOLUME_NAME_MAX];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Ok(VolumeName { bytes, len: text.len() as u8 })
    }

    /// From a header record's NUL-padded field.
    pub fn from_field(field: &[u8; VOLUME_NAME_MAX]) -> Option<VolumeName> {
        let len = field.iter().position(|&b| b == 0).unwrap_or(VOLUME_NAME_MAX);
        if field[len..].iter().any(|&b| b != 0) {
            return None;
        }
        VolumeName::parse(std::str::from_utf8(&field[..len]).ok()?).ok()
    }

    pub fn field(&self) -> [u8; VOLUME_NAME_MAX] {
        self.bytes
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `parse`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The filesystems cowroot makes on a new volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeFs {
    #[default]
    Ext4,
    Xfs,
    Btrfs,
}

impl VolumeFs {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeFs::Ext4 => "ext4",
            VolumeFs::Xfs => "xfs",
            VolumeFs::Btrfs => "btrfs",
        }
    }

    pub fn parse(text: &str) -> Option<VolumeFs> {
        [VolumeFs::Ext4, VolumeFs::Xfs, VolumeFs::Btrfs].into_iter().find(|fs| fs.as_str() == text)
    }

    /// The smallest filesystem its mkfs makes (xfsprogs refuses under 300
    /// MiB, mkfs.btrfs under 109 MiB).
    pub fn min_bytes(self) -> u64 {
        match self {
            VolumeFs::Ext4 => 16 << 20,
            VolumeFs::Xfs => 300 << 20,
            VolumeFs::Btrfs => 114_294_784,
        }
    }

    /// The program that makes it, and its arguments before the device.
    pub fn mkfs(self) -> (&'static str, &'static [&'static str]) {
        match self {
            VolumeFs::Ext4 => ("mkfs.ext4", &["-q"]),
            VolumeFs::Xfs => ("mkfs.xfs", &["-q"]),
            VolumeFs::Btrfs => ("mkfs.btrfs", &["-q"]),
        }
    }
}

/// One `cowroot.volume=` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: VolumeName,
    pub size: Bytes,
    pub mount_point: String,
    pub fs: VolumeFs,
}

impl VolumeSpec {
    pub fn parse(value: &str) -> Result<VolumeSpec> {
        let bad = |why: String| {
            Error::config(KEY, format!("{why}; expected NAME:SIZE:MOUNTPOINT[:FSTYPE] such as home:8G:/home"))
        };
        let fields: Vec<&str> = value.split(':').collect();
        let (name, size, mount_point, fs) = match fields[..] {
            [name, size, mount_point] => (name, size, mount_point, None),
            [name, size, mount_point, fs] => (name, size, mount_point, Some(fs)),
            _ => return Err(bad(format!("{value:?} has {} fields", fields.len()))),
        };
        let name = VolumeName::parse(name).map_err(bad)?;
        check_mount_point(mount_point).map_err(bad)?;
        let fs = match fs {
            None => VolumeFs::default(),
            Some(fs) => {
                VolumeFs::parse(fs).ok_or_else(|| bad(format!("filesystem {fs:?} is not ext4, xfs or btrfs")))?
            }
        };
        let min = fs.min_bytes();
        let size = parse_size(size).filter(|b| (min..=MAX_VOLUME_BYTES).contains(&b.0)).ok_or_else(|| {
            bad(format!("size {size:?} is not a size from {} to 1024T (the least {} makes)", Bytes(min), fs.as_str()))
        })?;
        Ok(VolumeSpec { name, size, mount_point: mount_point.to_string(), fs })
    }
}

/// An absolute, normalised path other than `/`, in characters that need no
/// quoting in fstab, mount units or the marker.
fn check_mount_point(path: &str) -> std::result::Result<(), String> {
    let plain = path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b));
    let normal = path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path[1..].split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if !plain || !normal || path.len() > 255 || mount_unit(path).len() > 255 {
        return Err(format!(
            "mount point {path:?} must be an absolute path other than / without . or .. parts, in letters, digits and / . _ - + @"
        ));
    }
    let under = |dir: &str| path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'));
    if let Some(dir) = SYSTEM_DIRS.iter().find(|d| under(d)).or(SYSTEM_PARENTS.iter().find(|d| path == **d)) {
        return Err(format!(
            "mount point {dir} holds the system itself; a volume over it would hide it (use /home, /var/log, /srv, ...)"
        ));
    }
    Ok(())
}

/// Names and mount points must not repeat; at most `MAX_VOLUMES`.
pub fn check_all(specs: &[VolumeSpec]) -> Result<()> {
    if specs.len() > MAX_VOLUMES {
        return Err(Error::config(
            KEY,
            format!("{} volumes asked for; a pool holds at most {MAX_VOLUMES}", specs.len()),
        ));
    }
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            if a.name == b.name || a.mount_point == b.mount_point {
                return Err(Error::config(
                    KEY,
                    format!(
                        "two volumes share the name or mount point ({}:{} and {}:{}); give each its own",
                        b.name, b.mount_point, a.name, a.mount_point
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What the pool header keeps of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: VolumeName,
    pub thin: u32,
    /// The volume device's size; it only ever grows.
    pub sectors: Sectors,
    /// Set once a filesystem was made on it (or found on it): from then on
    /// nothing formats it again.
    pub formatted: bool,
}

/// One line of the marker: what the booted system formats and mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveVolume {
    pub name: VolumeName,
    pub device: String,
    pub mount_point: String,
    pub fs: VolumeFs,
}

impl ActiveVolume {
    pub fn line(&self) -> String {
        format!("{} {} {} {}\n", self.name, self.device, self.mount_point, self.fs.as_str())
    }

    /// Reads the marker's lines; a line that does not parse is an error (a
    /// half-written marker must not mount something half right).
    pub fn parse_marker(text: &str) -> std::result::Result<Vec<ActiveVolume>, String> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| Self::parse_line(line).ok_or_else(|| format!("bad line {line:?}")))
            .collect()
    }
}

impl ActiveVolume {
    fn parse_line(line: &str) -> Option<ActiveVolume> {
        let [name, device, mount_point, fs] = line.split(' ').collect::<Vec<_>>()[..] else {
            return None;
        };
        check_mount_point(mount_point).ok()?;
        Some(ActiveVolume {
            name: VolumeName::parse(name).ok()?,
            device: device.to_string(),
            mount_point: mount_point.to_string(),
            fs: VolumeFs::parse(fs)?,
        })
        .filter(|v| v.device.starts_with("/dev/mapper/"))
    }
}

/// The systemd unit name of a mount point (`systemd-escape --path
/// --suffix=mount`), for the characters `check_mount_point` allows.
pub fn mount_unit(path: &str) -> String {
    let mut out = String::new();
    for (i, b) in path.trim_start_matches('/').bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => out.push(b as char),
            b'.' if i > 0 => out.push('.'),
            other => out.push_str(&format!("\\x{other:02x}")),
        }
    }
    out.push_str(".mount");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_words_parse_or_name_the_key() {
        let v = VolumeSpec::parse("home:8G:/home").unwrap();
        assert_eq!(
            (v.name.as_str(), v.size, v.mount_point.as_str(), v.fs),
            ("home", Bytes(8 << 30), "/home", VolumeFs::Ext4)
        );
        let v = VolumeSpec::parse("log_1:300M:/var/log:xfs").unwrap();
        assert_eq!((v.name.as_str(), v.fs), ("log_1", VolumeFs::Xfs));
        for bad in [
            "",
            "home",
            "home:8G",
            "home:8G:/home:ext4:x",
            "-x:8G:/home",
            "a/b:8G:/home",
            &format!("{}:8G:/home", "n".repeat(VOLUME_NAME_MAX + 1)),
            "home:1M:/home",
            "home:64M:/home:xfs",
            "home:100M:/home:btrfs",
            "home:2P:/home",
            "home:8G:/etc",
            "home:8G:/usr",
            "home:8G:/usr/lib",
            "home:8G:/run/cowroot",
            "home:8G:/var/run",
            "home:8G:/var",
            "home:8G:/var/lib",
            "home:299M:/home:xfs",
            "home:lots:/home",
            "home:8G:/",
            "home:8G:home",
            "home:8G:/home/",
            "home:8G:/a//b",
            "home:8G:/a/../b",
            "home:8G:/my home",
            "home:8G:/home:vfat",
        ] {
            let err = VolumeSpec::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("cowroot.volume:"), "{bad}: {err}");
        }
    }

    #[test]
    fn repeated_names_or_mount_points_are_refused() {
        let a = VolumeSpec::parse("home:8G:/home").unwrap();
        let b = VolumeSpec::parse("log:1G:/var/log").unwrap();
        assert!(check_all(&[a.clone(), b.clone()]).is_ok());
        assert!(check_all(&[a.clone(), VolumeSpec::parse("home:1G:/srv").unwrap()]).is_err());
        assert!(check_all(&[b, VolumeSpec::parse("other:1G:/home").unwrap(), a]).is_err());
        let many: Vec<VolumeSpec> =
            (0..=MAX_VOLUMES).map(|i| VolumeSpec::parse(&format!("v{i}:16M:/v{i}")).unwrap()).collect();
        assert!(check_all(&many).is_err());
    }

    #[test]
    fn names_round_trip_through_the_header_field() {
        let name = VolumeName::parse("home-2").unwrap();
        assert_eq!(VolumeName::from_field(&name.field()), Some(name));
        let mut field = [0u8; VOLUME_NAME_MAX];
        field[0] = b'a';
        field[2] = b'b';
        assert_eq!(VolumeName::from_field(&field), None);
        assert_eq!(VolumeName::from_field(&[0u8; VOLUME_NAME_MAX]), None);
    }

    #[test]
    fn markers_round_trip_and_bad_lines_are_refused() {
        let v = ActiveVolume {
            name: VolumeName::parse("home").unwrap(),
            device: "/dev/mapper/cowroot-vol-home".into(),
            mount_point: "/var/lib/my-data".into(),
            fs: VolumeFs::Btrfs,
        };
        assert_eq!(ActiveVolume::parse_marker(&v.line()).unwrap(), vec![v]);
        assert!(ActiveVolume::parse_marker("home /dev/vda /home ext4\n").is_err());
        assert!(ActiveVolume::parse_marker("home /dev/mapper/x /home\n").is_err());
    }

    #[test]
    fn mount_units_are_named_as_systemd_escape_names_them() {
        assert_eq!(mount_unit("/home"), "home.mount");
        assert_eq!(mount_unit("/var/log"), "var-log.mount");
        assert_eq!(mount_unit("/srv/my-data/x.y"), "srv-my\\x2ddata-x.y.mount");
        assert_eq!(mount_unit("/.hidden"), "\\x2ehidden.mount");
        assert_eq!(mount_unit("/a+b@c"), "a\\x2bb\\x40c.mount");
    }
}
