//! `cowroot format DEVICE`: prepares a pool device or file, refusing
//! anything that carries a recognisable signature unless forced.

use crate::error::{Error, Result};
use crate::exec::System;
use crate::layout::plan_layout;
use crate::plan::new_header;
use crate::probe;
use crate::signature::{self, PROBE_BYTES};
use crate::sys::RealSystem;
use crate::units::Bytes;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::time::Duration;

pub fn format(device: &str, block_bytes: u64, force: bool) -> Result<String> {
    let meta = std::fs::metadata(device).map_err(|e| Error::io("stat", device, e))?;
    if meta.file_type().is_block_device() {
        // O_EXCL on a block device fails while it is mounted or held by
        // device-mapper, even with --force.
        OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_EXCL)
            .open(device)
            .map_err(|e| Error::io("open exclusively", device, format!("{e}; is it mounted or in use?")))?;
    } else if !meta.is_file() {
        return Err(Error::Usage(format!("{device} is neither a block device nor a regular file")));
    }
    let start = probe::read_start(device, PROBE_BYTES)?;
    if let Some(found) = signature::detect(&start) {
        if !force {
            return Err(Error::ForeignPool { device: device.to_string(), found: found.to_string() });
        }
        log::warn!("{device} holds {found}; overwriting it as asked (--force)");
    }
    let size = probe::size_of(device)?;
    let layout = plan_layout(device, size, block_bytes)?;
    let header = new_header(size, &layout, crate::boot::random_uuid());
    let mut sys = RealSystem::new(Duration::from_secs(1));
    sys.write_header(device, 0, &header, true)?;
    Ok(format!(
        "formatted {device} as a cowroot pool: {} in all, metadata {}, data {} in {} blocks",
        Bytes(size.0),
        layout.meta.len.bytes(),
        layout.data.len.bytes(),
        Bytes(block_bytes)
    ))
}
