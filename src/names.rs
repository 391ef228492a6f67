//! Every device-mapper name and uuid cowroot creates comes from here, so the
//! private layers are recognisable (by name, and by the `COWROOT-` uuid
//! prefix) and their lengths provably fit the kernel's limits.

use crate::error::{Error, Result};
use crate::volume::VolumeName;
use std::borrow::Cow;
use std::fmt;

/// The kernel's limit on a dm name is 128 bytes including the NUL.
const DM_NAME_MAX: usize = 127;
/// The longest user-chosen name; the longest suffix below is 29 bytes
/// (`-vol-` and a volume name).
pub const NAME_MAX: usize = 64;
pub const UUID_PREFIX: &str = "COWROOT-";

/// A validated `cowroot.name`: the root device is `/dev/mapper/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

/// The device-mapper devices of one cowroot setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The thin device the machine boots from.
    Thin,
    /// The thin pool (private).
    Pool,
    /// Linear map of the pool device's metadata region (private).
    Meta,
    /// Linear map of the pool device's data region (private).
    Data,
    /// The `cowroot.onfail=ro` fallback: the origin itself, read-only,
    /// under the root device's name.
    ReadOnly,
    /// A persistent volume (`cowroot.volume`): `/dev/mapper/NAME-vol-VOLUME`.
    Volume(VolumeName),
    /// The complete local copy of a network origin (`cowroot.hydrate`),
    /// read-only (private: it carries the root filesystem's UUID).
    Copy,
}

impl Role {
    fn suffix(self) -> Cow<'static, str> {
        match self {
            Role::Thin => "".into(),
            Role::Pool => "-pool".into(),
            Role::Meta => "-pool_tmeta".into(),
            Role::Data => "-pool_tdata".into(),
            Role::ReadOnly => "".into(),
            Role::Volume(volume) => format!("-vol-{volume}").into(),
            Role::Copy => "-copy".into(),
        }
    }

    fn tag(self) -> Cow<'static, str> {
        match self {
            Role::Thin => "thin".into(),
            Role::Pool => "pool".into(),
            Role::Meta => "tmeta".into(),
            Role::Data => "tdata".into(),
            Role::ReadOnly => "ro".into(),
            Role::Volume(volume) => format!("vol-{volume}").into(),
            Role::Copy => "copy".into(),
        }
    }

    /// Private layers are hidden from udev's disk rules (invariant 8).
    pub fn is_private(self) -> bool {
        !matches!(self, Role::Thin | Role::ReadOnly | Role::Volume(_))
    }
}

impl DeviceName {
    pub fn parse(text: &str) -> Result<DeviceName> {
        let bad = |why: &str| Error::config("cowroot.name", format!("invalid name {text:?}: {why}"));
        if text.is_empty() || text.len() > NAME_MAX {
            return Err(bad(&format!("must be 1 to {NAME_MAX} characters")));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)) {
            return Err(bad("use only letters, digits and . _ + -"));
        }
        if text.starts_with('-') || text.starts_with('.') {
            return Err(bad("must not start with - or ."));
        }
        if text == "control" {
            return Err(bad("reserved by device-mapper"));
        }
        Ok(DeviceName(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dm name of one layer.
    pub fn dm_name(&self, role: Role) -> String {
        let name = format!("{}{}", self.0, role.suffix());
        debug_assert!(name.len() <= DM_NAME_MAX);
        name
    }

    /// The dm uuid of one layer.
    pub fn dm_uuid(&self, role: Role) -> String {
        format!("{UUID_PREFIX}{}-{}", role.tag(), self.0)
    }

    pub fn mapper_path(&self, role: Role) -> String {
        format!("/dev/mapper/{}", self.dm_name(role))
    }

    /// The systemd device unit of the root device (`systemd-escape --path
    /// --suffix=device /dev/mapper/NAME`), for generators.
    pub fn device_unit(&self) -> String {
        let mut escaped = String::from("dev-mapper-");
        for (i, b) in self.0.bytes().enumerate() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b':' => escaped.push(b as char),
                b'.' if i > 0 => escaped.push('.'),
                other => escaped.push_str(&format!("\\x{other:02x}")),
            }
        }
        escaped.push_str(".device");
        escaped
    }
}

impl Default for DeviceName {
    fn default() -> DeviceName {
        DeviceName("cowroot".to_string())
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_validate() {
        for good in ["cowroot", "root_2", "a", "kiosk.v1+test-x", &"x".repeat(NAME_MAX)] {
            assert!(DeviceName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "a b", "-x", ".x", "..", "control", "é", "a\"b", &"x".repeat(NAME_MAX + 1)] {
            let err = DeviceName::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("cowroot.name:"), "{bad}: {err}");
        }
    }

    #[test]
    fn longest_names_fit_the_kernel_limits() {
        let name = DeviceName::parse(&"n".repeat(NAME_MAX)).unwrap();
        let volume = Role::Volume(VolumeName::parse(&"v".repeat(crate::volume::VOLUME_NAME_MAX)).unwrap());
        for role in [Role::Thin, Role::Pool, Role::Meta, Role::Data, Role::ReadOnly, volume] {
            assert!(name.dm_name(role).len() <= DM_NAME_MAX);
            // DM_UUID_LEN is 129 including the NUL.
            assert!(name.dm_uuid(role).len() <= 128);
        }
        let name = DeviceName::default();
        assert_eq!(name.dm_name(Role::Pool), "cowroot-pool");
        assert_eq!(name.dm_uuid(Role::Thin), "COWROOT-thin-cowroot");
        assert_eq!(name.mapper_path(Role::Thin), "/dev/mapper/cowroot");
        assert_eq!(name.device_unit(), "dev-mapper-cowroot.device");
        let home = Role::Volume(VolumeName::parse("home").unwrap());
        assert_eq!(name.mapper_path(home), "/dev/mapper/cowroot-vol-home");
        assert_eq!(name.dm_uuid(home), "COWROOT-vol-home-cowroot");
        assert!(!home.is_private());
        let odd = DeviceName::parse("my-root.v2+x").unwrap();
        assert_eq!(odd.device_unit(), "dev-mapper-my\\x2droot.v2\\x2bx.device");
    }
}
