//! `cowroot=nbd://HOST[:PORT]/EXPORT`: an origin served over the network by
//! an NBD server (nbd-server, qemu-nbd, nbdkit). The distribution's own
//! `nbd-client` connects it to a free `/dev/nbdN`, read-only; from there on
//! it is an origin device like any other. The network is the generator's
//! business (`ip=`, dracut's network module, initramfs-tools'
//! configure_networking): cowroot only retries until `cowroot.timeout`.

use crate::error::{Error, Result};
use std::fmt;
use std::path::Path;

/// The IANA port of NBD, nbd-client's default too.
pub const DEFAULT_PORT: u16 = 10809;

const SCHEME: &str = "nbd://";

/// Where the origin is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdServer {
    /// A host name or an IPv4/IPv6 address (without brackets).
    pub host: String,
    pub port: u16,
    pub export: String,
}

impl NbdServer {
    /// `None` when `value` is not an `nbd://` URL at all.
    pub fn parse(key: &str, value: &str) -> Result<Option<NbdServer>> {
        let Some(rest) = value.strip_prefix(SCHEME) else {
            return Ok(None);
        };
        let bad = |why: &str| Error::config(key, format!("{value:?} is not nbd://HOST[:PORT]/EXPORT: {why}"));
        let (authority, export) = rest.split_once('/').ok_or_else(|| bad("the export name is missing"))?;
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').ok_or_else(|| bad("expected :PORT after ]"))?)),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let host_char = |c: char| c.is_ascii_alphanumeric() || ".-:_".contains(c);
        if host.is_empty() || !host.chars().all(host_char) || host.starts_with('-') {
            return Err(bad("the host must be a name or an address"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        // nbd-client takes the name as an argument of its own: no dash
        // first, nothing a server could not name.
        let export_char = |c: char| c.is_ascii_alphanumeric() || "._-/+@=".contains(c);
        if export.is_empty() || export.starts_with('-') || !export.chars().all(export_char) {
            return Err(bad("the export name must be letters, digits and . _ - / + @ ="));
        }
        Ok(Some(NbdServer { host: host.to_string(), port, export: export.to_string() }))
    }

    /// The arguments that make nbd-client connect `device` to this export:
    /// read-only whatever the server allows, 512-byte blocks (what every
    /// filesystem can sit on), no request timeout (a server that hangs is
    /// waited for; one that goes away fails the requests at once).
    pub fn client_args(&self, device: &str) -> Vec<String> {
        vec![
            self.host.clone(),
            self.port.to_string(),
            device.to_string(),
            "-N".into(),
            self.export.clone(),
            "-R".into(),
            "-b".into(),
            "512".into(),
        ]
    }
}

impl fmt::Display for NbdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{SCHEME}{host}:{}/{}", self.port, self.export)
    }
}

/// The first `/dev/nbdN` no client holds: size 0 and no connection.
pub fn free_device(sys_block: &Path) -> Option<String> {
    (0..256).map(|n| format!("nbd{n}")).take_while(|name| sys_block.join(name).exists()).find_map(|name| {
        let dir = sys_block.join(&name);
        let size = std::fs::read_to_string(dir.join("size")).ok()?;
        (size.trim() == "0" && !dir.join("pid").exists()).then(|| format!("/dev/{name}"))
    })
}

/// The device's size in bytes as the kernel has it (0: not connected).
pub fn connected_bytes(sys_block: &Path, device: &str) -> u64 {
    let name = device.trim_start_matches("/dev/");
    std::fs::read_to_string(sys_block.join(name).join("size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(0, |sectors| sectors * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u16, export: &str) -> NbdServer {
        NbdServer { host: host.into(), port, export: export.into() }
    }

    #[test]
    fn nbd_urls_parse_with_and_without_port() {
        let parse = |v| NbdServer::parse("cowroot", v).unwrap();
        assert_eq!(parse("nbd://10.0.2.2/lab"), Some(server("10.0.2.2", DEFAULT_PORT, "lab")));
        assert_eq!(parse("nbd://images.lan:10810/lab/v2"), Some(server("images.lan", 10810, "lab/v2")));
        assert_eq!(parse("nbd://[fd00::1]:9000/root"), Some(server("fd00::1", 9000, "root")));
        assert_eq!(parse("nbd://[fd00::1]/root"), Some(server("fd00::1", DEFAULT_PORT, "root")));
        assert_eq!(parse("/images/root.img"), None);
    }

    #[test]
    fn bad_nbd_urls_name_the_key_and_the_shape() {
        for bad in [
            "nbd://host",
            "nbd:///lab",
            "nbd://host:0/lab",
            "nbd://host:99999/lab",
            "nbd://host:x/lab",
            "nbd://host/",
            "nbd://host/-x",
            "nbd://-host/lab",
            "nbd://ho st/lab",
            "nbd://[fd00::1/lab",
            "nbd://[fd00::1]x/lab",
            "nbd://host/a;b",
        ] {
            let err = NbdServer::parse("cowroot", bad).unwrap_err().to_string();
            assert!(err.contains("cowroot") && err.contains("nbd://HOST[:PORT]/EXPORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for url in ["nbd://10.0.2.2:10809/lab", "nbd://[fd00::1]:9000/root"] {
            assert_eq!(NbdServer::parse("cowroot", url).unwrap().unwrap().to_string(), url);
        }
    }

    #[test]
    fn the_client_connects_read_only_with_the_export_named() {
        let args = server("10.0.2.2", 10809, "lab").client_args("/dev/nbd0");
        assert_eq!(args[..3], ["10.0.2.2", "10809", "/dev/nbd0"]);
        assert!(args.windows(2).any(|w| w == ["-N", "lab"]));
        assert!(args.iter().any(|a| a == "-R"), "read-only");
    }

    #[test]
    fn the_first_unused_nbd_device_is_taken() {
        let dir = std::env::temp_dir().join(format!("cowroot-nbd-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, size, pid) in [("nbd0", "131072", true), ("nbd1", "0", true), ("nbd2", "0", false)] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("size"), format!("{size}\n")).unwrap();
            if pid {
                std::fs::write(dir.join(name).join("pid"), "1\n").unwrap();
            }
        }
        assert_eq!(free_device(&dir).as_deref(), Some("/dev/nbd2"));
        assert_eq!(connected_bytes(&dir, "/dev/nbd0"), 131072 * 512);
        assert_eq!(connected_bytes(&dir, "/dev/nbd9"), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
