//! The one error type of cowroot. Every variant carries what a user needs to
//! act: which key, which device, which operation, the errno.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A kernel command-line value that cowroot cannot accept.
    Config { key: String, message: String },
    /// A command-line option of the binary itself.
    Usage(String),
    /// A device named on the command line did not show up in time.
    DeviceTimeout { spec: String, key: String, seconds: u64 },
    /// The NBD server of `cowroot=nbd://...` did not serve the export in time.
    ServerUnreachable { server: String, seconds: u64, why: String },
    /// `boot --no-wait`: a device is not there yet; try again later.
    DeviceNotYet { spec: String, key: String },
    /// The image file does not exist on the host filesystem.
    ImageMissing { path: String, host: String },
    /// The pool device carries something that is not ours.
    ForeignPool { device: String, found: String },
    /// The pool device has no valid cowroot header and is not blank.
    NotAPool { device: String },
    /// The pool cannot hold what is asked of it.
    PoolTooSmall { device: String, bytes: u64, need: u64 },
    /// The kernel refuses to use the pool's metadata as it is.
    PoolDegraded { device: String, state: String },
    /// The thin-pool's metadata area is full: the kernel made it read-only.
    MetadataFull { device: String },
    /// The metadata of a pool in use reads blank.
    MetadataBlank { device: String, generation: u64 },
    /// Neither header copy can be read, though both are cowroot's.
    HeaderDamaged { device: String, faults: [String; 2] },
    /// The header was written by a newer cowroot.
    NewerPool { device: String, version: u32 },
    /// The header and the thin-pool metadata do not belong together.
    HeaderMismatch { device: String, header: u64, metadata: u64 },
    /// The origin differs from the one the kept changes were made on.
    OriginChanged { origin: String, detail: String },
    /// The pool header and what the kernel reports disagree.
    Inconsistent(String),
    /// A request that cannot be carried out in the present state; the
    /// message says what to do first.
    Refused(String),
    /// A system call or ioctl failed.
    Io { op: String, target: String, errno: String },
    /// Setting up failed and so did undoing part of it.
    Rollback { cause: Box<Error>, failures: Vec<String> },
    /// A hibernation image waits on the resume device and was not resumed.
    HibernationPending { spec: String, device: String, why: String },
    /// A problem with a word read from a file (`/etc/cowroot.conf`,
    /// dracut's `/etc/cmdline.d`) rather than the kernel command line.
    InFile { file: String, line: usize, cause: Box<Error> },
}

impl Error {
    pub fn config(key: &str, message: impl Into<String>) -> Error {
        Error::Config { key: key.to_string(), message: message.into() }
    }

    pub fn io(op: impl Into<String>, target: impl Into<String>, err: impl fmt::Display) -> Error {
        Error::Io { op: op.into(), target: target.into(), errno: err.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { key, message } => write!(f, "{key}: {message}"),
            Error::Usage(m) => write!(f, "{m}"),
            Error::DeviceTimeout { spec, key, seconds } => write!(
                f,
                "{key}: device {spec} did not appear within {seconds} s; check that the disk is \
                 attached and its driver is in the initramfs, or raise cowroot.timeout"
            ),
            Error::ServerUnreachable { server, seconds, why } => write!(
                f,
                "the NBD server {server} (cowroot=) did not serve its export within {seconds} s \
                 (last try: {why}); check that the network is configured (ip=) and the server runs and \
                 exports that name, or raise cowroot.timeout"
            ),
            Error::DeviceNotYet { spec, key } => {
                write!(f, "{key}: device {spec} is not there yet; nothing was done (--no-wait)")
            }
            Error::ImageMissing { path, host } => write!(
                f,
                "image {path} not found on {host}; check the path given as cowroot= (it is \
                 relative to the root of cowroot.dev's filesystem)"
            ),
            Error::ForeignPool { device, found } => write!(
                f,
                "cowpool: {device} holds {found}; refusing to use or format it. Use an empty \
                 device, or run `cowroot format --force {device}` if its contents may be destroyed"
            ),
            Error::NotAPool { device } => write!(
                f,
                "cowpool: {device} has no valid cowroot header and is not blank; refusing to \
                 format it at boot. Run `cowroot format {device}` to prepare it"
            ),
            Error::PoolTooSmall { device, bytes, need } => {
                write!(f, "cowpool: {device} has {bytes} bytes, at least {need} are needed")
            }
            Error::OriginChanged { origin, detail } => write!(
                f,
                "origin {origin} is not the image the kept changes were made on \
                 ({detail}); refusing to boot it. Boot with cowroot.reset=1 to discard the kept \
                 changes and start over on this image (or set cowroot.onchange=reset to do so whenever \
                 the image changes)"
            ),
            Error::PoolDegraded { device, state } => write!(
                f,
                "cowpool: the thin pool on {device} is {state}: the kernel found its metadata \
                 damaged. Check it with thin_check (thin-provisioning-tools) on the metadata \
                 region, or discard everything kept with `cowroot format --force {device}`"
            ),
            Error::MetadataFull { device } => write!(
                f,
                "cowpool: the thin-pool metadata on {device} is full, so the kernel switched the \
                 pool to read-only; the kept changes are intact but nothing can be added. Boot \
                 with cowroot.reset=1 cannot help here (it needs to write metadata): copy the \
                 changes off with the pool read-only, or start over with `cowroot format --force \
                 {device}` after saving what you need; a larger pool gets more metadata"
            ),
            Error::MetadataBlank { device, generation } => write!(
                f,
                "cowpool: the thin-pool metadata on {device} is blank (its first block is all zero), \
                 but the header says the pool holds kept changes (generation {generation}); \
                 activating it would make the kernel format empty metadata over them. Nothing was \
                 changed. Restore the metadata (thin_restore from a thin_dump backup, or thin_repair), \
                 or start over with `cowroot format --force {device}`"
            ),
            Error::HeaderDamaged { device, faults } => write!(
                f,
                "cowpool: both copies of the cowroot header on {device} are damaged (copy 0: {}, \
                 copy 1: {}); cowroot cannot tell where the pool's metadata and data are, so it \
                 leaves the device alone. The kept changes are most likely still there: save the \
                 device first (`dd if={device} of=FILE bs=1M`), look at the copies with `cowroot \
                 inspect {device}`, and only if the changes may be lost, start over with \
                 `cowroot format --force {device}`",
                faults[0], faults[1]
            ),
            Error::NewerPool { device, version } => write!(
                f,
                "cowpool: {device} holds a cowroot pool with header version {version}, written \
                 by a newer cowroot; this cowroot ({}) knows versions up to {}. Boot with an \
                 initramfs that has the newer cowroot; nothing was changed",
                env!("CARGO_PKG_VERSION"),
                crate::header::VERSION
            ),
            Error::HeaderMismatch { device, header, metadata } => write!(
                f,
                "cowpool: the cowroot header on {device} belongs to thin-pool metadata \
                 transaction {header}, but the metadata on the device is at transaction \
                 {metadata}: the header was restored from an older copy or came from another \
                 pool. Nothing was changed. Put back the header and metadata that belong \
                 together, or start over with `cowroot format --force {device}`"
            ),
            Error::HibernationPending { spec, device, why } => write!(
                f,
                "resume={spec}: {device} holds a hibernation image that the kernel did not resume \
                 ({why}); cowroot writes nothing to the pool while it may still be resumed, as the \
                 resumed system would overwrite what this boot wrote. Boot once with noresume to \
                 discard the image (the hibernated session is lost), or boot the kernel that wrote it"
            ),
            Error::Inconsistent(m) => write!(f, "pool is inconsistent: {m}"),
            Error::Refused(m) => write!(f, "{m}"),
            Error::Io { op, target, errno } => write!(f, "{op} {target}: {errno}"),
            Error::Rollback { cause, failures } => {
                write!(f, "{cause}; cleaning up also failed: {}", failures.join("; "))
            }
            Error::InFile { file, line, cause } => write!(f, "{file}:{line}: {cause}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
