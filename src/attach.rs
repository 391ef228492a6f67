//! `cowroot attach`, `detach` and `list` on a running system: the boot's
//! stack (read-only origin, thin pool, thin device) for any image and pool,
//! as `/dev/mapper/NAME`, with the boot's safety rules: the origin is read
//! through a read-only loop (or made read-only), a pool with a foreign
//! signature is refused, the origin's identity is checked against the
//! pool's. It is the manual `losetup`/`dmsetup` procedure as one command:
//! mount a backup image, write on top of it, throw the writes away.

use crate::cmdline::Param;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::System;
use crate::names::{DeviceName, Role, UUID_PREFIX};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// What `cowroot attach` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// An image file or a block device.
    pub source: String,
    /// A block device (or a file, attached to a writable loop device).
    pub pool: String,
    pub name: DeviceName,
    /// Discard what an earlier attach of this pool wrote.
    pub reset: bool,
}

/// The device name `attach` uses when none is given: the image's file name
/// without its extension (`backup.img` → `backup`), if it is a valid name.
pub fn default_name(source: &str) -> Option<DeviceName> {
    let file = source.rsplit('/').next()?;
    let stem = file.split_once('.').map_or(file, |(stem, _)| stem);
    DeviceName::parse(stem).ok().filter(|n| *n != DeviceName::default())
}

/// Fails with what holds `path` when something has it open exclusively (a
/// mount, a device-mapper table, a running pool): attaching a pool that is
/// in use would run two pools on one metadata area.
fn require_unused(path: &str, what: &str) -> Result<()> {
    match std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_EXCL).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => Err(Error::Refused(format!(
            "{what} {path} is in use (mounted, or part of a device-mapper stack such as a running pool); \
             unmount or detach it first"
        ))),
        Err(e) => Err(Error::io("open", path, e)),
    }
}

fn is_block_device(path: &str) -> Result<bool> {
    Ok(std::fs::metadata(path).map_err(|e| Error::io("find", path, e))?.file_type().is_block_device())
}

fn param(key: &str, value: &str) -> Param {
    Param { key: key.into(), value: Some(value.into()), utf8: true }
}

/// The keys the boot would take for this request, validated the same way.
fn config(req: &AttachRequest, source: &str, pool: &str) -> Result<Config> {
    let mut params = vec![param("cowroot", source), param("cowpool", pool), param("cowroot.name", req.name.as_str())];
    let file = !source.starts_with("/dev/");
    if file {
        // The image is on the running system's own filesystems: no host
        // device (the key is required at boot only).
        params.push(param("cowroot.dev", "/dev/null"));
    }
    if req.reset {
        params.push(param("cowroot.reset", "1"));
    }
    let mut cfg = Config::from_params(&params)?.ok_or_else(|| Error::Usage("cowroot attach: no source".into()))?;
    if file {
        cfg.host_dev = None;
    }
    Ok(cfg)
}

/// `cowroot attach SOURCE --pool POOL [--name NAME] [--reset]`.
pub fn attach<S: System>(sys: &mut S, req: &AttachRequest) -> Result<String> {
    let source = std::fs::canonicalize(&req.source)
        .map_err(|e| Error::io("find", &req.source, e))?
        .to_string_lossy()
        .into_owned();
    let origin_device = is_block_device(&source)?;
    if origin_device {
        require_unused(&source, "the origin")?;
    }
    let mut pool = req.pool.clone();
    let mut pool_loop = None;
    if !is_block_device(&pool)? {
        // A pool file: on a writable loop device that goes with the stack.
        let file = std::fs::canonicalize(&pool).map_err(|e| Error::io("find", &pool, e))?;
        let file = file.to_string_lossy().into_owned();
        if same_file(&file, &source) {
            return Err(Error::Usage(format!("the pool {file} is the image itself; give another file or device")));
        }
        // Another loop device on the same file would be a second pool on
        // the same metadata.
        if let Some(other) = loop_of(&file) {
            return Err(Error::Refused(format!(
                "the pool file {file} is already on {other} (attached, or in use as a pool); `cowroot list` shows \
                 what is attached"
            )));
        }
        let path = sys.attach_loop(&file, true)?;
        pool_loop = Some(path.clone());
        pool = path;
    }
    let result = require_unused(&pool, "the pool")
        .and_then(|()| config(req, &source, &pool))
        .and_then(|cfg| follow_pool_mode(cfg, &pool))
        .and_then(|cfg| crate::boot::attach_stack(sys, &cfg, origin_device.then(|| source.clone()), pool.clone()));
    if let (Err(_), Some(path)) = (&result, &pool_loop) {
        let _ = sys.detach_loop(path);
    }
    let summary = result?;
    Ok(format!(
        "{summary}\nmount it, write on it, then `cowroot detach {}`; the image {source} is never written \
         (`cowroot attach --reset` discards what was written)",
        req.name
    ))
}

/// Whether two paths are the same file (device and inode).
fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The loop device backed by `file`, if one is.
fn loop_of(file: &str) -> Option<String> {
    std::fs::read_dir("/sys/block").ok()?.flatten().find_map(|entry| {
        let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
        (backing.trim_end_matches('\n') == file).then(|| format!("/dev/{}", entry.file_name().to_string_lossy()))
    })
}

/// A pool a frozen machine uses is attached frozen too: a throwaway
/// snapshot of its base, which stays the machine's. A maintenance boot the
/// machine is waiting for is its own, not an attach's.
fn follow_pool_mode(mut cfg: Config, pool: &str) -> Result<Config> {
    if let crate::pool::PoolState::Ours { header, .. } = crate::probe::pool_facts(pool)?.state {
        if header.base_thin != 0 {
            if header.flags & crate::header::FLAG_MAINTENANCE_NEXT_BOOT != 0 {
                return Err(Error::Refused(format!(
                    "{pool} is a frozen pool whose next boot is a maintenance boot (`cowroot maintenance`); attach \
                     it after that boot, or cancel it on that machine with `cowroot maintenance --cancel`"
                )));
            }
            cfg.mode = crate::config::RootMode::Frozen;
        }
    }
    Ok(cfg)
}

/// The names of the cowroot stacks on this system (their thin devices),
/// the root's included.
pub fn attached_names() -> Vec<DeviceName> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return names };
    for entry in entries.flatten() {
        let dm = entry.path().join("dm");
        let (Ok(name), Ok(uuid)) = (std::fs::read_to_string(dm.join("name")), std::fs::read_to_string(dm.join("uuid")))
        else {
            continue;
        };
        let Ok(name) = DeviceName::parse(name.trim()) else { continue };
        if uuid.trim() == name.dm_uuid(Role::Thin) && uuid.starts_with(UUID_PREFIX) {
            names.push(name);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names
}

/// `cowroot list`: one line a stack (the root's included).
pub fn list<S: System>(sys: &mut S) -> Result<String> {
    let mut out = String::new();
    for name in attached_names() {
        let device = name.mapper_path(Role::Thin);
        let place = match mount_point_of(&device) {
            Some(at) if at == "/" => "the running root".to_string(),
            Some(at) => format!("mounted at {at}"),
            None => "not mounted".to_string(),
        };
        match crate::status::gather(sys, &name, crate::status::Booted::default()) {
            Ok(info) => out.push_str(&format!(
                "{name}: {device} ({place}), origin {}, pool {}, generation {}, data {}% used\n",
                info.origin,
                info.pool_device,
                info.generation,
                crate::table::percent(info.data_used_bytes, info.data_total_bytes)
            )),
            Err(e) => out.push_str(&format!("{name}: {device} ({place}): {e}\n")),
        }
    }
    if out.is_empty() {
        out.push_str("no cowroot devices on this system (`cowroot attach SOURCE --pool POOL` makes one)\n");
    }
    Ok(out)
}

/// Where `device` (a /dev/mapper path) is mounted, if anywhere.
fn mount_point_of(device: &str) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let real = std::fs::canonicalize(device).ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (source, target) = (fields.next()?, fields.next()?);
        let same = source == device || std::fs::canonicalize(source).ok().as_ref() == Some(&real);
        same.then(|| target.replace("\\040", " "))
    })
}

/// `cowroot detach NAME`: removes the stack `attach` made (the thin, the
/// pool and its layers; the loop devices go with them). What was written
/// stays in the pool for the next attach.
pub fn detach<S: System>(sys: &mut S, name: &DeviceName) -> Result<String> {
    let thin = name.mapper_path(Role::Thin);
    let Some(info) = sys.dm_info(&name.dm_name(Role::Thin))? else {
        return Err(Error::Usage(format!("{thin} is not attached (see `cowroot list`)")));
    };
    if info.uuid != name.dm_uuid(Role::Thin) {
        return Err(Error::Refused(format!("{thin} is not a cowroot device; nothing was removed")));
    }
    if let Some(at) = mount_point_of(&thin) {
        let why = if at == "/" { "it is the running root".to_string() } else { format!("it is mounted at {at}") };
        return Err(Error::Refused(format!("{thin} stays: {why}; unmount it first")));
    }
    // Top down; each layer is flushed as it goes (the pool commits its
    // metadata when removed).
    let mut removed = 0;
    for role in [Role::Thin, Role::Pool, Role::Data, Role::Meta] {
        let dm = name.dm_name(role);
        if sys.dm_info(&dm)?.is_some() {
            sys.dm_remove(&dm)?;
            removed += 1;
            let node = format!("/dev/mapper/{dm}");
            if std::fs::symlink_metadata(&node).is_ok_and(|m| m.file_type().is_block_device()) {
                let _ = sys.remove_node(&dm);
            }
        }
    }
    Ok(format!("detached {thin} ({removed} device-mapper devices removed); what was written stays in its pool"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_come_from_the_file_name() {
        assert_eq!(default_name("/srv/backup.img").map(|n| n.to_string()), Some("backup".into()));
        assert_eq!(default_name("/srv/backup-2026.raw.img").map(|n| n.to_string()), Some("backup-2026".into()));
        assert_eq!(default_name("/dev/vdb").map(|n| n.to_string()), Some("vdb".into()));
        // Never the root's name, never an invalid one.
        assert_eq!(default_name("/srv/cowroot.img"), None);
        assert_eq!(default_name("/srv/.hidden"), None);
    }

    #[test]
    fn requests_become_the_boot_keys() {
        let req = AttachRequest {
            source: "/srv/backup.img".into(),
            pool: "/dev/vdc".into(),
            name: DeviceName::parse("backup").unwrap(),
            reset: true,
        };
        let cfg = config(&req, "/srv/backup.img", "/dev/vdc").unwrap();
        assert_eq!(cfg.source, crate::config::Source::File("/srv/backup.img".into()));
        assert_eq!((cfg.host_dev.is_none(), cfg.reset, cfg.name.as_str()), (true, true, "backup"));
        let cfg = config(&req, "/dev/vdb", "/dev/loop3").unwrap();
        assert!(matches!(cfg.source, crate::config::Source::Device(_)));
        let err = config(&req, "/srv/../etc/x.img", "/dev/vdc").unwrap_err().to_string();
        assert!(err.contains(".."), "{err}");
    }
}
