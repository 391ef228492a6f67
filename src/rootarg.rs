//! The device `root=` names, as dracut and systemd name it. With `cowroot=`
//! the root is `/dev/mapper/NAME` whatever `root=` says, but dracut's
//! systemd generator still makes the boot wait for the `root=` device (a
//! finished hook in the initqueue and an `initrd.target` want, with no
//! timeout): a stale UUID never appears and the boot hangs. The hooks stand
//! those waits down by name; the names are made here, so that no shell
//! reads `root=` (invariant 7), and only names made of inert characters are
//! handed out.

/// The path dracut's `label_uuid_to_dev` makes of a `root=` value (dracut
/// 059): `None` for what is not a block device (`nfs:...`, `tmpfs`, ...).
pub fn dracut_device_path(root: &str) -> Option<String> {
    let dev = root.strip_prefix("block:").unwrap_or(root);
    let label = |v: &str| v.replace('/', "\\x2f").replace(' ', "\\x20");
    let path = if let Some(v) = dev.strip_prefix("LABEL=") {
        format!("/dev/disk/by-label/{}", label(v))
    } else if let Some(v) = dev.strip_prefix("PARTLABEL=") {
        format!("/dev/disk/by-partlabel/{}", label(v))
    } else if let Some(v) = dev.strip_prefix("UUID=") {
        format!("/dev/disk/by-uuid/{v}")
    } else if let Some(v) = dev.strip_prefix("PARTUUID=") {
        format!("/dev/disk/by-partuuid/{v}")
    } else if dev.starts_with("/dev/") && dev != "/dev/nfs" {
        dev.to_string()
    } else {
        return None;
    };
    Some(path)
}

/// Characters a hook may pass around unquoted without any effect.
fn inert(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-\\+,@".contains(&b))
}

/// The name dracut's `wait_for_dev` gives the device's initqueue hooks
/// (`finished/devexists-NAME.sh`, `emergency/80-NAME.sh`): the path with
/// `/` as `\x2f`. `None` when it holds anything but inert characters.
pub fn dracut_hook_name(path: &str) -> Option<String> {
    let name = path.replace('/', "\\x2f");
    inert(&name).then_some(name)
}

/// The systemd device unit of a path (`systemd-escape --path
/// --suffix=device`, as dracut's `dev_unit_name` does): `None` for a path
/// systemd would refuse (`.` or `..` components).
pub fn device_unit(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return None;
    }
    let mut unit = String::new();
    for (i, b) in parts.join("/").bytes().enumerate() {
        match b {
            b'/' => unit.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b':' => unit.push(b as char),
            b'.' if i > 0 => unit.push('.'),
            other => unit.push_str(&format!("\\x{other:02x}")),
        }
    }
    unit.push_str(".device");
    Some(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_dracut_makes_them() {
        let cases = [
            (
                "UUID=5eedc0de-0000-4000-8000-00000000c0de",
                Some("/dev/disk/by-uuid/5eedc0de-0000-4000-8000-00000000c0de"),
            ),
            ("block:PARTUUID=0badc0de-01", Some("/dev/disk/by-partuuid/0badc0de-01")),
            ("LABEL=my root/x", Some("/dev/disk/by-label/my\\x20root\\x2fx")),
            ("PARTLABEL=root", Some("/dev/disk/by-partlabel/root")),
            ("/dev/vda2", Some("/dev/vda2")),
            ("block:/dev/mapper/vg-root", Some("/dev/mapper/vg-root")),
            ("/dev/nfs", None),
            ("nfs:10.0.0.1:/srv", None),
            ("tmpfs", None),
            ("", None),
        ];
        for (root, want) in cases {
            assert_eq!(dracut_device_path(root).as_deref(), want, "root={root}");
        }
    }

    #[test]
    fn names_match_dracut_and_systemd_escape() {
        // `systemd-escape --path --suffix=device` and dracut 059's
        // str_replace "$dev" '/' '\x2f', as run on Debian bookworm.
        let path = "/dev/disk/by-uuid/0badc0de-0000-4000-8000-00000000dead";
        assert_eq!(
            device_unit(path).as_deref(),
            Some("dev-disk-by\\x2duuid-0badc0de\\x2d0000\\x2d4000\\x2d8000\\x2d00000000dead.device")
        );
        assert_eq!(
            dracut_hook_name(path).as_deref(),
            Some("\\x2fdev\\x2fdisk\\x2fby-uuid\\x2f0badc0de-0000-4000-8000-00000000dead")
        );
        assert_eq!(
            device_unit("/dev/disk/by-label/my\\x20root").as_deref(),
            Some("dev-disk-by\\x2dlabel-my\\x5cx20root.device")
        );
        assert_eq!(device_unit("//dev//vda/").as_deref(), Some("dev-vda.device"));
        assert_eq!(device_unit("/dev/.hidden").as_deref(), Some("dev-.hidden.device"));
        assert_eq!(device_unit("/dev/../etc"), None);
        assert_eq!(device_unit("/"), None);
    }

    #[test]
    fn only_inert_hook_names() {
        assert_eq!(dracut_hook_name("/dev/disk/by-label/a$(reboot)"), None);
        assert_eq!(dracut_hook_name("/dev/disk/by-label/a\"b"), None);
        assert_eq!(dracut_hook_name("/dev/disk/by-label/a*"), None);
        assert!(dracut_hook_name("/dev/disk/by-label/my\\x20root").is_some());
    }
}
