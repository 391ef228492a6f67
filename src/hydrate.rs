//! `cowroot.hydrate=DEVSPEC`: a local copy of a network origin, so the
//! machine stops needing the server. The boot that finds the copy
//! incomplete runs on the server and leaves a marker; `cowroot hydrate`
//! (cowroot-hydrate.service) then copies the origin in the background,
//! resuming where an earlier boot stopped, checks the copy by reading it
//! back, and moves the running root onto it (a table reload of the root,
//! as brief as a checkpoint's suspend). Boots after that use the copy;
//! the server is still asked first, so a new image there is noticed and
//! `cowroot.onchange` decides, but a server that does not answer no longer
//! stops the boot.
//!
//! (The guest kernels this was built for have no dm-clone, which would
//! copy in the kernel; a copy in user space needs nothing the distribution
//! kernels lack, and its progress lives in a header of our own.)
//!
//! The device: a 4 KiB header at offset 0, the copy from `DATA_OFFSET`.
//! Only a blank device or one with this header is ever written.

use crate::error::{Error, Result};
use crate::exec::{DmSpec, Executor, System};
use crate::header::OriginId;
use crate::names::{DeviceName, Role};
use crate::nbd;
use crate::plan::{DevRef, Step};
use crate::probe;
use crate::units::Bytes;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

pub const MAGIC: &[u8; 8] = b"COWHYDR1";
const VERSION: u32 = 1;
/// Where the copy starts: the header's block, then room to grow.
pub const DATA_OFFSET: u64 = 1 << 20;
pub const HEADER_BYTES: usize = 4096;
/// A network origin's boot: `DEVICE NBD-DEVICE NAME SERVER`; DEVICE is
/// `-` without `cowroot.hydrate`, NBD-DEVICE `-` once the root reads the
/// complete copy.
pub const MARKER: &str = "/run/cowroot/network-origin";

const SERVER_MAX: usize = 256;
const LOCK: &str = "/run/cowroot/hydrate.lock";
const CHECKSUM_AT: usize = 106 + SERVER_MAX;

/// What the header of the copy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyHeader {
    /// The origin this is (or is becoming) a copy of.
    pub origin: OriginId,
    /// Bytes copied and flushed, from the start.
    pub copied: u64,
    /// SHA-256 of the whole origin, once the copy is complete and read back.
    pub image_sha256: Option<[u8; 32]>,
    /// Where it was copied from, for `status`.
    pub server: String,
}

impl CopyHeader {
    pub fn fresh(origin: OriginId, server: &str) -> CopyHeader {
        CopyHeader { origin, copied: 0, image_sha256: None, server: server.to_string() }
    }

    pub fn complete(&self) -> bool {
        self.image_sha256.is_some() && self.copied == self.origin.size_bytes
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&u32::from(self.image_sha256.is_some()).to_le_bytes());
        b[16..24].copy_from_slice(&self.origin.size_bytes.to_le_bytes());
        b[24..56].copy_from_slice(&self.origin.digest);
        b[56..64].copy_from_slice(&self.copied.to_le_bytes());
        b[64..96].copy_from_slice(&self.image_sha256.unwrap_or([0; 32]));
        b[96..104].copy_from_slice(&DATA_OFFSET.to_le_bytes());
        let server = &self.server.as_bytes()[..self.server.len().min(SERVER_MAX)];
        b[104..106].copy_from_slice(&(server.len() as u16).to_le_bytes());
        b[106..106 + server.len()].copy_from_slice(server);
        let sum: [u8; 32] = Sha256::digest(&b[..CHECKSUM_AT]).into();
        b[CHECKSUM_AT..CHECKSUM_AT + 32].copy_from_slice(&sum);
        b
    }
}

/// What a hydration device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    /// Nothing: free to use.
    Blank,
    Ours(CopyHeader),
    /// Our magic with a header that does not check out (a write cut short,
    /// or a newer version): ours, but nothing in it can be trusted.
    Damaged(String),
    /// Something else: never written.
    Foreign(String),
}

/// Reads the state from the device's first block and, to tell blank from
/// foreign, its last bytes (`contents` says what a device holds, as
/// `cowroot format` checks).
pub fn decode(start: &[u8], contents: Option<String>) -> CopyState {
    if start.len() < HEADER_BYTES || &start[0..8] != MAGIC {
        return match contents {
            None => CopyState::Blank,
            Some(what) => CopyState::Foreign(what),
        };
    }
    let b = &start[..HEADER_BYTES];
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let sum: [u8; 32] = Sha256::digest(&b[..CHECKSUM_AT]).into();
    if sum[..] != b[CHECKSUM_AT..CHECKSUM_AT + 32] {
        return CopyState::Damaged("its checksum does not match".into());
    }
    if u32_at(8) != VERSION || u64_at(96) != DATA_OFFSET {
        return CopyState::Damaged(format!("version {} is not this cowroot's", u32_at(8)));
    }
    let server_len = usize::from(u16::from_le_bytes([b[104], b[105]])).min(SERVER_MAX);
    let image_sha256 = (u32_at(12) == 1).then(|| b[64..96].try_into().expect("32 bytes"));
    CopyState::Ours(CopyHeader {
        origin: OriginId { size_bytes: u64_at(16), digest: b[24..56].try_into().expect("32 bytes") },
        copied: u64_at(56),
        image_sha256,
        server: String::from_utf8_lossy(&b[106..106 + server_len]).into_owned(),
    })
}

/// The device must hold the header and a whole copy.
pub fn check_size(device: &str, device_bytes: u64, origin_bytes: u64) -> Result<()> {
    let need = DATA_OFFSET + origin_bytes;
    if device_bytes < need {
        return Err(Error::config(
            "cowroot.hydrate",
            format!(
                "{device} holds {}, but a copy of the origin ({}) needs {}; name a larger device",
                Bytes(device_bytes),
                Bytes(origin_bytes),
                Bytes(need)
            ),
        ));
    }
    Ok(())
}

/// What the boot left for `cowroot hydrate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub device: String,
    pub nbd: String,
    pub name: String,
    pub server: String,
}

impl Pending {
    pub fn line(&self) -> String {
        format!("{} {} {} {}\n", self.device, self.nbd, self.name, self.server)
    }

    pub fn parse(text: &str) -> Option<Pending> {
        let mut words = text.split_whitespace().map(str::to_string);
        let pending = Pending { device: words.next()?, nbd: words.next()?, name: words.next()?, server: words.next()? };
        words.next().is_none().then_some(pending)
    }
}

/// The root's thin table with `origin` (MAJ:MIN) as its external origin
/// instead of `was`; `None` when the table has no such origin.
pub fn retarget_thin(params: &str, was: &str, origin: &str) -> Option<String> {
    let fields: Vec<&str> = params.split_whitespace().collect();
    match fields.as_slice() {
        [pool, id, old] if *old == was => Some(format!("{pool} {id} {origin}")),
        _ => None,
    }
}

/// One line of progress: how much, how fast.
/// (Integer arithmetic only: float formatting would add 30 KB to the
/// binary.)
pub fn progress(copied: u64, total: u64, elapsed: Duration) -> String {
    let percent = copied.saturating_mul(100).checked_div(total).unwrap_or(100);
    format!("{percent}% ({} of {}), {} MiB/s", Bytes(copied), Bytes(total), rate(copied, elapsed))
}

/// MiB/s with one decimal.
fn rate(bytes: u64, elapsed: Duration) -> String {
    let tenths = (u128::from(bytes) * 10_000 / (elapsed.as_millis().max(1) << 20)) as u64;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// `cowroot hydrate` on the booted system (cowroot-hydrate.service): copies
/// what the boot left to copy, then moves the running root onto the copy.
/// Safe to stop at any time: the header records what was copied and
/// flushed, and the next run (this boot or a later one) goes on from there.
pub fn run<S: System>(sys: &mut S) -> Result<String> {
    let text = match std::fs::read_to_string(MARKER) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Refused(format!(
                "nothing to copy: this boot has no network origin with cowroot.hydrate ({MARKER} is absent)"
            )))
        }
        Err(e) => return Err(Error::io("read", MARKER, e)),
    };
    let pending = Pending::parse(&text).ok_or_else(|| Error::Inconsistent(format!("{MARKER} reads {text:?}")))?;
    if pending.device == "-" {
        return Ok(format!("nothing to copy: this boot's origin {} has no cowroot.hydrate device", pending.server));
    }
    if pending.nbd == "-" {
        return Ok(format!("the root already reads the complete local copy on {}; nothing to do", pending.device));
    }
    let name = DeviceName::parse(&pending.name)?;
    // One run at a time: two would interleave their header writes.
    let lock = File::create(LOCK).map_err(|e| Error::io("create", LOCK, e))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        Error::Refused("another `cowroot hydrate` is running (cowroot-hydrate.service?); it goes on alone".into())
    })?;
    let device = pending.device.as_str();
    let copy_name = name.dm_name(Role::Copy);
    if sys.dm_info(&copy_name)?.is_some() {
        let nbd_num = sys.dev_num(&pending.nbd).ok().map(|n| n.to_string());
        let origin =
            sys.dm_line(&name.dm_name(Role::Thin), false)?.params.split_whitespace().nth(2).map(str::to_string);
        if nbd_num.is_some() && origin == nbd_num {
            // An earlier run stopped before the move: its device goes.
            sys.dm_remove(&copy_name)?;
        } else {
            // An earlier run moved the root and stopped before it said so.
            finish(sys, &pending)?;
            return Ok(format!("the root already reads the local copy on {device}; nothing to do"));
        }
    }
    if nbd::connected_bytes(Path::new("/sys/block"), &pending.nbd) == 0 {
        return Err(Error::Refused(format!(
            "{} is no longer connected to {} (the server went away?): the copy goes on at the next boot that \
             reaches the server",
            pending.nbd, pending.server
        )));
    }
    let origin = probe::origin_id(&pending.nbd)?;
    check_size(device, probe::size_of(device)?.0, origin.size_bytes)?;
    // Nobody else may hold it: not mounted, not mapped (O_EXCL).
    let copy = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(device)
        .map_err(|e| Error::io("open exclusively", device, format!("{e}; is it mounted or in use?")))?;
    let mut header = match read_state(device)? {
        CopyState::Foreign(what) => {
            return Err(Error::Refused(format!("{device} holds {what}; cowroot copies only onto an empty device")))
        }
        // A complete copy that no longer reads as its image starts again.
        CopyState::Ours(header) if header.origin == origin && (!header.complete() || intact(device, &header)?) => {
            header
        }
        CopyState::Ours(_) | CopyState::Blank | CopyState::Damaged(_) => CopyHeader::fresh(origin, &pending.server),
    };
    let mut summary = String::new();
    if !header.complete() {
        summary = copy_origin(&pending, &copy, &mut header)?;
    }
    // The copy's dm device claims it next.
    drop(copy);
    switch_origin(sys, &name, &pending, &header)?;
    finish(sys, &pending)?;
    Ok(format!(
        "{summary}the root now reads the local copy on {device}: {} is no longer needed by this machine",
        pending.server
    ))
}

/// The root reads the copy: the NBD device goes, and the marker says so.
fn finish<S: System>(sys: &mut S, pending: &Pending) -> Result<()> {
    if nbd::connected_bytes(Path::new("/sys/block"), &pending.nbd) > 0 {
        if let Err(e) = sys.nbd_disconnect(&pending.nbd) {
            log::warn!("the root reads the copy, but {} stays connected: {e}", pending.nbd);
        }
    }
    let done = Pending { nbd: "-".into(), ..pending.clone() };
    std::fs::write(MARKER, done.line()).map_err(|e| Error::io("write", MARKER, e))
}

/// Whether the copy on `device` reads as the image its header names (the
/// same sampled fingerprint as every origin's identity).
pub fn intact(device: &str, header: &CopyHeader) -> Result<bool> {
    let file = File::open(device).map_err(|e| Error::io("open", device, e))?;
    let size = header.origin.size_bytes;
    if probe::size_of(device)?.0 < DATA_OFFSET + size {
        return Ok(false);
    }
    let id = crate::fingerprint::fingerprint(size, None, |offset, buf| file.read_exact_at(buf, DATA_OFFSET + offset))
        .map_err(|e| Error::io("read", device, e))?;
    Ok(id == header.origin)
}

/// What a hydration device holds: its first 4 KiB decoded, and to tell
/// blank from foreign, the same probe as `cowroot format` (signatures in
/// the first and last MiB, any data there).
pub fn read_state(device: &str) -> Result<CopyState> {
    let start = probe::read_start(device, crate::signature::PROBE_BYTES)?;
    let size = probe::size_of(device)?.0;
    let end = probe::read_end(device, size, crate::pool::END_PROBE_BYTES, start.len() as u64)?;
    Ok(decode(&start, crate::format::contents(&start, &end, size)))
}

/// This boot's marker, if it has a network origin.
fn marker() -> Option<Pending> {
    Pending::parse(&std::fs::read_to_string(MARKER).ok()?)
}

/// For `cowroot status`: where a network origin comes from.
pub fn origin_label() -> Option<String> {
    let pending = marker()?;
    Some(match pending.nbd.as_str() {
        "-" => format!("{}, its local copy on {}", pending.server, pending.device),
        _ => pending.server,
    })
}

/// For `cowroot status`: how far the copy of `origin` (the one the pool
/// records for this boot) is, `None` without `cowroot.hydrate`.
pub fn describe(origin: Option<OriginId>) -> Option<String> {
    let pending = marker()?;
    if pending.device == "-" {
        return None;
    }
    if pending.nbd == "-" {
        return Some(format!(
            "complete: the root reads the local copy on {} ({} is not needed)",
            pending.device, pending.server
        ));
    }
    let start = probe::read_start(&pending.device, HEADER_BYTES).ok()?;
    let total = nbd::connected_bytes(Path::new("/sys/block"), &pending.nbd);
    if total == 0 {
        return Some(format!(
            "stopped: {} is no longer connected to {} (the server went away?); the copy goes on at the next boot \
             that reaches the server",
            pending.nbd, pending.server
        ));
    }
    let copied = match decode(&start, None) {
        // A copy of an earlier image counts for nothing.
        CopyState::Ours(header) if Some(header.origin) == origin => header.copied,
        _ => 0,
    };
    Some(format!(
        "{} copied from {} to {} (cowroot-hydrate.service); the root reads the server until it is complete",
        progress(copied, total, Duration::ZERO).split(',').next().unwrap_or_default(),
        pending.server,
        pending.device
    ))
}

fn write_header(copy: &File, device: &str, header: &CopyHeader) -> Result<()> {
    copy.write_all_at(&header.encode(), 0).and_then(|()| copy.sync_data()).map_err(|e| Error::io("write", device, e))
}

/// Copies from where the header says, hashing as it goes (the part copied
/// by an earlier run is hashed from the local disk), then reads the whole
/// copy back from the disk and compares.
fn copy_origin(pending: &Pending, copy: &File, header: &mut CopyHeader) -> Result<String> {
    const CHUNK: usize = 1 << 20;
    const SAVE_EVERY: u64 = 16 << 20;
    let (device, total) = (pending.device.as_str(), header.origin.size_bytes);
    let source = File::open(&pending.nbd).map_err(|e| Error::io("open", &pending.nbd, e))?;
    write_header(copy, device, header)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let read_local = |hash: &mut Sha256, buf: &mut [u8], upto: u64| -> Result<()> {
        let mut at = 0;
        while at < upto {
            let n = (upto - at).min(CHUNK as u64) as usize;
            copy.read_exact_at(&mut buf[..n], DATA_OFFSET + at).map_err(|e| Error::io("read", device, e))?;
            hash.update(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    };
    read_local(&mut hash, &mut buf, header.copied)?;
    let (started, resumed_at) = (Instant::now(), header.copied);
    let mut last_report = Instant::now();
    log::info!("copying {} from {} to {device}, from {}", Bytes(total), pending.server, Bytes(resumed_at));
    let mut at = header.copied;
    while at < total {
        let n = (total - at).min(CHUNK as u64) as usize;
        source.read_exact_at(&mut buf[..n], at).map_err(|e| {
            Error::io("read", &pending.nbd, format!("{e}; the server went away? `cowroot hydrate` goes on from here"))
        })?;
        copy.write_all_at(&buf[..n], DATA_OFFSET + at).map_err(|e| Error::io("write", device, e))?;
        hash.update(&buf[..n]);
        at += n as u64;
        if at.is_multiple_of(SAVE_EVERY) || at == total {
            copy.sync_data().map_err(|e| Error::io("flush", device, e))?;
            header.copied = at;
            write_header(copy, device, header)?;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            log::info!("hydrate: {}", progress(at, total, started.elapsed()));
            last_report = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    let (copied, tenths) = (total - resumed_at, elapsed.as_millis() / 100);
    let digest: [u8; 32] = hash.finalize().into();
    // From the disk, not the page cache.
    let _ = nix::fcntl::posix_fadvise(copy, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    let mut check = Sha256::new();
    read_local(&mut check, &mut buf, total)?;
    if <[u8; 32]>::from(check.finalize()) != digest {
        header.copied = 0;
        write_header(copy, device, header)?;
        return Err(Error::Io {
            op: "verify the copy on".into(),
            target: device.into(),
            errno:
                "it does not read back as written; the copy starts again on the next `cowroot hydrate` (check the disk)"
                    .into(),
        });
    }
    header.image_sha256 = Some(digest);
    write_header(copy, device, header)?;
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    log::info!("hydrate: copied and read back, sha256 {hex}");
    Ok(format!("copied {} in {}.{} s ({} MiB/s); ", Bytes(copied), tenths / 10, tenths % 10, rate(copied, elapsed)))
}

/// Reloads the running root's table with the copy as its origin in place
/// of the NBD device, then lets the NBD device go.
fn switch_origin<S: System>(sys: &mut S, name: &DeviceName, pending: &Pending, header: &CopyHeader) -> Result<()> {
    let thin = name.dm_name(Role::Thin);
    let line = sys.dm_line(&thin, false)?;
    let nbd = sys.dev_num(&pending.nbd)?;
    if line.target != "thin" {
        return Err(Error::Refused(format!("{thin} is a {} device, not a thin one: nothing to move", line.target)));
    }
    let mut exec = Executor::new(sys, name);
    let created = exec.run(&[Step::CreateLinear {
        role: Role::Copy,
        dev: DevRef::Path(pending.device.clone()),
        offset: Bytes(DATA_OFFSET).sectors(),
        len: Bytes(header.origin.size_bytes).sectors(),
    }]);
    let moved = created.and_then(|()| {
        let copy = exec.dev(Role::Copy).ok_or_else(|| Error::Inconsistent("copy device not created".into()))?;
        let params = retarget_thin(&line.params, &nbd.to_string(), &copy.to_string()).ok_or_else(|| {
            Error::Refused(format!("the root's table ({}) does not read from {} ({nbd})", line.params, pending.nbd))
        })?;
        let spec = DmSpec {
            name: thin.clone(),
            uuid: name.dm_uuid(Role::Thin),
            target: "thin",
            len: line.len,
            params,
            private: false,
            read_only: false,
        };
        exec.system().dm_reload(&spec)
    });
    match moved {
        Ok(()) => exec.commit(),
        Err(e) => return Err(exec.rollback(e)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> CopyHeader {
        CopyHeader::fresh(OriginId { size_bytes: 64 << 20, digest: [7; 32] }, "nbd://10.0.2.2:10809/lab")
    }

    #[test]
    fn the_header_round_trips_and_says_when_the_copy_is_complete() {
        let mut h = header();
        assert_eq!(decode(&h.encode(), None), CopyState::Ours(h.clone()));
        assert!(!h.complete());
        h.copied = 64 << 20;
        assert!(!h.complete(), "copied but not read back");
        h.image_sha256 = Some([9; 32]);
        assert!(h.complete());
        assert_eq!(decode(&h.encode(), Some("ours".into())), CopyState::Ours(h));
    }

    #[test]
    fn a_torn_or_foreign_header_is_never_taken_for_a_copy() {
        let mut bytes = header().encode();
        bytes[60] ^= 1;
        assert!(matches!(decode(&bytes, None), CopyState::Damaged(_)));
        let zeros = [0u8; HEADER_BYTES];
        assert_eq!(decode(&zeros, None), CopyState::Blank);
        assert_eq!(decode(&zeros, Some("an ext4 filesystem".into())), CopyState::Foreign("an ext4 filesystem".into()));
    }

    #[test]
    fn the_device_must_hold_header_and_copy() {
        assert!(check_size("/dev/vdb", DATA_OFFSET + 100, 100).is_ok());
        let err = check_size("/dev/vdb", 64 << 20, 64 << 20).unwrap_err().to_string();
        assert!(err.starts_with("cowroot.hydrate: /dev/vdb holds 64.0 MiB"), "{err}");
    }

    #[test]
    fn the_marker_round_trips() {
        let p = Pending {
            device: "/dev/vdb".into(),
            nbd: "/dev/nbd0".into(),
            name: "cowroot".into(),
            server: "nbd://10.0.2.2:10809/lab".into(),
        };
        assert_eq!(Pending::parse(&p.line()), Some(p));
        assert_eq!(Pending::parse("/dev/vdb /dev/nbd0"), None);
    }

    #[test]
    fn progress_reads_in_whole_units() {
        let line = progress(16 << 20, 64 << 20, Duration::from_millis(3200));
        assert_eq!(line, "25% (16.0 MiB of 64.0 MiB), 5.0 MiB/s");
        assert!(progress(0, 0, Duration::ZERO).starts_with("100% "));
    }

    #[test]
    fn a_copy_is_intact_only_while_it_reads_as_its_image() {
        let path = std::env::temp_dir().join(format!("cowroot-copy-test-{}", std::process::id()));
        let data: Vec<u8> = (0..(256u32 << 10)).map(|i| (i * 7 + i / 4096) as u8).collect();
        let id = crate::fingerprint::fingerprint(data.len() as u64, None, |offset, buf| {
            buf.copy_from_slice(&data[offset as usize..offset as usize + buf.len()]);
            Ok(())
        })
        .unwrap();
        let header =
            CopyHeader { copied: data.len() as u64, image_sha256: Some([1; 32]), ..CopyHeader::fresh(id, "x") };
        let mut disk = header.encode().to_vec();
        disk.resize(DATA_OFFSET as usize, 0);
        disk.extend_from_slice(&data);
        std::fs::write(&path, &disk).unwrap();
        let device = path.to_str().unwrap();
        assert!(intact(device, &header).unwrap());
        disk[DATA_OFFSET as usize + 100] ^= 0xff;
        std::fs::write(&path, &disk).unwrap();
        assert!(!intact(device, &header).unwrap(), "a changed byte in the sampled head");
        disk.truncate(DATA_OFFSET as usize + 1000);
        std::fs::write(&path, &disk).unwrap();
        assert!(!intact(device, &header).unwrap(), "a device too short for the image");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn only_the_expected_origin_is_replaced() {
        assert_eq!(retarget_thin("254:3 1 43:0", "43:0", "254:5").as_deref(), Some("254:3 1 254:5"));
        assert_eq!(retarget_thin("254:3 1 43:0", "7:0", "254:5"), None);
        assert_eq!(retarget_thin("254:3 1", "43:0", "254:5"), None);
    }
}
