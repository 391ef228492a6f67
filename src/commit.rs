//! `cowroot commit`: the state of a checkpoint, an attached device or the
//! running root, written into a new image (a file, sparse, or a device),
//! with a sha256 that is checked by reading the image back. The source is
//! always a snapshot (one is taken, with the filesystem frozen, when the
//! state is live), shown to the kernel as a private read-only device; the
//! old image and the pool are never written.

use crate::checkpoint::{self, CheckpointName};
use crate::error::{Error, Result};
use crate::exec::{DmSpec, System};
use crate::names::{DeviceName, Role, UUID_PREFIX};
use crate::probe;
use crate::table::{DevNum, Thin};
use crate::units::Bytes;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;

const CHUNK: usize = 1 << 20;

/// Where the state to commit comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitSource {
    /// The running state of a stack (the root, or an attached device).
    Live(DeviceName),
    /// A checkpoint in a stack's pool.
    Checkpoint(DeviceName, CheckpointName),
}

/// Reads `len` bytes of `input` in chunks, hands each to `each` with the
/// bytes done after it, and returns the sha256 of them all.
fn hash_chunks(
    input: &mut impl Read,
    len: u64,
    mut each: impl FnMut(&[u8], u64) -> std::io::Result<()>,
) -> std::io::Result<[u8; 32]> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(CHUNK as u64) as usize;
        input.read_exact(&mut buf[..want])?;
        hash.update(&buf[..want]);
        done += want as u64;
        each(&buf[..want], done)?;
    }
    Ok(hash.finalize().into())
}

/// Copies `input` (`len` bytes) to `output`, leaving holes for all-zero
/// chunks when `sparse`; returns the sha256 of all `len` bytes. `progress`
/// gets the bytes done so far after each chunk.
pub fn copy_sparse(
    input: &mut impl Read,
    output: &mut (impl Write + Seek),
    len: u64,
    sparse: bool,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<[u8; 32]> {
    hash_chunks(input, len, |chunk, done| {
        if sparse && chunk.iter().all(|&b| b == 0) {
            output.seek(SeekFrom::Current(chunk.len() as i64))?;
        } else {
            output.write_all(chunk)?;
        }
        progress(done);
        Ok(())
    })
}

/// The sha256 of the first `len` bytes of `input`.
pub fn digest(input: &mut impl Read, len: u64) -> std::io::Result<[u8; 32]> {
    hash_chunks(input, len, |_, _| Ok(()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the target: a new file (never an existing one), or a block device
/// that nothing uses, is large enough, and is not part of the source's
/// stack (the origin, its host, the pool).
/// Returns the file and, for a new file, the name it is written under.
fn open_target(target: &str, len: u64, stack: &[DevNum], force: bool) -> Result<(std::fs::File, Option<String>)> {
    let sys = std::path::Path::new("/sys");
    match std::fs::metadata(target) {
        Ok(meta) if meta.file_type().is_block_device() => {
            let num = probe::dev_num(target)?;
            if probe::overlaps(&probe::stack(sys, num), stack) {
                return Err(Error::Refused(format!(
                    "{target} is part of what the state is read from (the origin, its host or the pool); \
                     commit writes a new image elsewhere"
                )));
            }
            let size = probe::size_of(target)?;
            if size.0 < len {
                return Err(Error::Refused(format!("{target} holds {size}, but the image needs {}", Bytes(len))));
            }
            // Signatures at the end too (md 0.90/1.0, a backup GPT), and
            // any data at all, as `cowroot format` checks.
            let start = probe::read_start(target, crate::signature::PROBE_BYTES)?;
            let end = probe::read_end(target, size.0, crate::pool::END_PROBE_BYTES, start.len() as u64)?;
            if let (Some(what), false) = (crate::format::contents(&start, &end, size.0), force) {
                return Err(Error::Refused(format!(
                    "{target} holds {what}; commit writes over a device only with --force"
                )));
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags_excl()
                .open(target)
                .map_err(|e| Error::io("open", target, e))?;
            Ok((file, None))
        }
        Ok(_) => Err(Error::Refused(format!(
            "{target} exists; commit writes a new image and never overwrites a file: name one that does not exist"
        ))),
        Err(_) => {
            // Not on the filesystem being read: the copy would fill the
            // pool it reads from.
            use std::os::unix::fs::MetadataExt;
            let dir = directory_of(target);
            let meta = std::fs::metadata(dir).map_err(|e| Error::io("find", dir.display().to_string(), e))?;
            let holder = DevNum {
                major: nix::sys::stat::major(meta.dev()) as u32,
                minor: nix::sys::stat::minor(meta.dev()) as u32,
            };
            if probe::overlaps(&probe::stack(sys, holder), stack) {
                return Err(Error::Refused(format!(
                    "{target} would be on the device the state is read from (the root, its pool or its origin); \
                     write the image to another filesystem"
                )));
            }
            // Under another name until verified: an interrupted commit
            // leaves no half image where cowroot= will point.
            let partial = format!("{target}.partial");
            let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&partial).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Refused(format!(
                        "{partial} exists (an interrupted commit left it?); remove it, then commit again"
                    ))
                } else {
                    Error::io("create", &partial, e)
                }
            })?;
            Ok((file, Some(partial)))
        }
    }
}

/// The directory a new file `target` goes into.
fn directory_of(target: &str) -> &std::path::Path {
    std::path::Path::new(target).parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."))
}

/// Gives the verified image its name (never over a file that appeared
/// meanwhile) and makes the rename durable.
fn finish_file(partial: &str, target: &str) -> Result<()> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(Error::Refused(format!("{target} appeared while committing; the verified image is {partial}")));
    }
    std::fs::rename(partial, target).map_err(|e| Error::io("name the image", target, e))?;
    let dir = directory_of(target);
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("sync", dir.display().to_string(), e))
}

trait ExclusiveOpen {
    fn custom_flags_excl(&mut self) -> &mut Self;
}

impl ExclusiveOpen for std::fs::OpenOptions {
    /// O_EXCL on a block device: refused while mounted or held by dm.
    fn custom_flags_excl(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(nix::libc::O_EXCL)
    }
}

/// `cowroot commit [--from CHECKPOINT|NAME] --to TARGET [--force]`.
pub fn commit<S: System>(sys: &mut S, source: &CommitSource, target: &str, force: bool) -> Result<String> {
    // A checkpoint the root runs on (a rollback kept it) is live.
    let source = match source {
        CommitSource::Checkpoint(name, checkpoint) => {
            let live = crate::status::live(sys, name)?;
            let running = live.header.checkpoints.iter().any(|c| c.name == *checkpoint && c.thin == live.thin.id);
            if running {
                CommitSource::Live(name.clone())
            } else {
                source.clone()
            }
        }
        CommitSource::Live(_) => source.clone(),
    };
    // A device an interrupted commit left.
    let (CommitSource::Live(name) | CommitSource::Checkpoint(name, _)) = &source;
    let stale = format!("{}-commit", name.as_str());
    if sys.dm_info(&stale)?.is_some_and(|i| i.uuid == format!("{UUID_PREFIX}commit-{name}")) {
        sys.dm_remove(&stale)?;
    }
    let (name, wanted, temporary) = match &source {
        CommitSource::Checkpoint(name, checkpoint) => (name.clone(), *checkpoint, false),
        CommitSource::Live(name) => {
            // A snapshot first, with the filesystem frozen for an instant:
            // the image is what a clean shutdown would have left.
            let temp = checkpoint::parse_name(&format!("commit-{}", std::process::id() % 1_000_000))
                .map_err(Error::Inconsistent)?;
            crate::status::create_checkpoint(sys, name, temp)?;
            (name.clone(), temp, true)
        }
    };
    let result = commit_checkpoint(sys, &name, wanted, target, force);
    if temporary {
        if let Err(e) = crate::status::delete_checkpoint(sys, &name, wanted) {
            log::warn!(
                "could not delete the temporary checkpoint {wanted} ({e}): `cowroot checkpoint delete {wanted}`"
            );
        }
    }
    result
}

fn commit_checkpoint<S: System>(
    sys: &mut S,
    name: &DeviceName,
    wanted: CheckpointName,
    target: &str,
    force: bool,
) -> Result<String> {
    let live = crate::status::live(sys, name)?;
    let record =
        live.header.checkpoints.iter().find(|c| c.name == wanted && !c.deleting).copied().ok_or_else(|| {
            Error::Usage(format!("{} holds no checkpoint {wanted} (see `cowroot checkpoint list`)", live.pool_device))
        })?;
    if live.header.origin != Some(record.origin) {
        return Err(Error::Refused(format!(
            "checkpoint {wanted} was taken on another image than the one {} runs on; its changes cannot be \
             read over this one",
            name.mapper_path(Role::Thin)
        )));
    }
    let sectors = if record.root_sectors.0 > 0 { record.root_sectors.0 } else { live.size_sectors };
    let len = sectors * 512;
    let stack: Vec<DevNum> = [Some(live.thin.pool), live.thin.external_origin]
        .into_iter()
        .flatten()
        .flat_map(|n| probe::stack(std::path::Path::new("/sys"), n))
        .collect();
    let (mut out, partial) = open_target(target, len, &stack, force)?;
    let is_file = partial.is_some();
    let written_to = partial.clone().unwrap_or_else(|| target.to_string());
    // The checkpoint as a private, read-only device: no udev rules see a
    // second filesystem with the root's uuid.
    let spec = DmSpec {
        name: format!("{}-commit", name.as_str()),
        uuid: format!("{UUID_PREFIX}commit-{name}"),
        target: "thin",
        len: crate::units::Sectors(sectors),
        params: Thin { pool: live.thin.pool, id: record.thin, external_origin: live.thin.external_origin }.to_string(),
        private: true,
        read_only: true,
    };
    let dev = sys.dm_create(&spec)?;
    let started = std::time::Instant::now();
    let copied = (|| -> Result<([u8; 32], [u8; 32])> {
        let node = probe::dev_path(dev).ok_or_else(|| Error::io("find", dev.to_string(), "no device node"))?;
        let mut input = std::fs::File::open(&node).map_err(|e| Error::io("open", &node, e))?;
        let tty = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
        let mut shown = 0u64;
        let mut progress = |done: u64| {
            let step = if tty { len / 200 + 1 } else { len / 10 + 1 };
            if done - shown >= step || done == len {
                shown = done;
                let line = format!("commit: {} of {} ({}%)", Bytes(done), Bytes(len), crate::table::percent(done, len));
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
        };
        let written = copy_sparse(&mut input, &mut out, len, is_file, &mut progress)
            .and_then(|sum| {
                if is_file {
                    out.set_len(len)?;
                }
                out.sync_all()?;
                Ok(sum)
            })
            .map_err(|e| Error::io("write", &written_to, e))?;
        if tty {
            eprintln!();
        }
        // Read back what reached the disk, not the page cache.
        drop(out);
        let mut back = std::fs::File::open(&written_to).map_err(|e| Error::io("open", &written_to, e))?;
        let _ = nix::fcntl::posix_fadvise(&back, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        let read = digest(&mut back, len).map_err(|e| Error::io("read back", &written_to, e))?;
        Ok((written, read))
    })();
    let removed = sys.dm_remove(&spec.name);
    if is_file && (copied.is_err() || copied.as_ref().is_ok_and(|(w, r)| w != r)) {
        // Half an image must not pass for one.
        let _ = std::fs::remove_file(&written_to);
    }
    let (written, read) = copied?;
    removed?;
    if written != read {
        return Err(Error::io(
            "verify",
            &written_to,
            format!("read back sha256 {} but wrote {}; the image is not good", hex(&read), hex(&written)),
        ));
    }
    if let Some(partial) = &partial {
        finish_file(partial, target)?;
    }
    Ok(format!(
        "wrote {} ({}) to {target} in {} s, read back and verified: sha256 {}\n\
         to boot it: point cowroot= at it (cowroot.dev= at what holds it) and boot once with cowroot.reset=1 \
         (or cowroot.onchange=reset); checkpoints of the old image are refused on it",
        if is_file { "a sparse image" } else { "the image" },
        Bytes(len),
        started.elapsed().as_secs(),
        hex(&written)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn copies_are_sparse_and_hashed_whole() {
        let mut data = vec![0u8; 3 * CHUNK + 100];
        data[CHUNK + 5] = 7;
        data[3 * CHUNK + 99] = 9;
        let mut out = Cursor::new(Vec::new());
        let mut seen = Vec::new();
        let sum = copy_sparse(&mut Cursor::new(data.clone()), &mut out, data.len() as u64, true, &mut |d| seen.push(d))
            .unwrap();
        assert_eq!(sum, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(seen, [CHUNK as u64, 2 * CHUNK as u64, 3 * CHUNK as u64, data.len() as u64]);
        // The holes are skipped, not written: the output is as long as
        // the last chunk written (the caller sets the length).
        let written = out.into_inner();
        assert_eq!(written.len(), data.len());
        assert_eq!(written, data);
        assert_eq!(digest(&mut Cursor::new(data.clone()), data.len() as u64).unwrap(), sum);
        let mut short = Cursor::new(vec![0u8; 10]);
        assert!(copy_sparse(&mut short, &mut Cursor::new(Vec::new()), 20, true, &mut |_| {}).is_err());
    }
}
