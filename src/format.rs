//! `cowroot format DEVICE`: prepares a pool device or file. Without
//! `--force` only a blank device (first and last MiB all zero) is
//! formatted: whatever else it holds, recognised or not, is refused.

use crate::error::{Error, Result};
use crate::exec::{Fresh, System};
use crate::layout::{plan_layout, BlockSize};
use crate::plan::new_header;
use crate::pool::END_PROBE_BYTES;
use crate::probe;
use crate::signature::{self, PROBE_BYTES};
use crate::units::Bytes;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// What a device holds that formatting would destroy, if anything.
pub(crate) fn contents(start: &[u8], end: &[u8], size: u64) -> Option<String> {
    if let Some(found) = signature::detect(start).or_else(|| signature::detect_end(end, size)) {
        return Some(found.to_string());
    }
    let at = signature::first_non_zero(start)
        .map(|i| i as u64)
        .or_else(|| signature::first_non_zero(end).map(|i| size - end.len() as u64 + i as u64))?;
    Some(format!("data cowroot does not recognise (the first non-zero byte is at offset {at})"))
}

pub fn format<S: System>(sys: &mut S, device: &str, block: BlockSize, force: bool) -> Result<String> {
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
    let size = probe::size_of(device)?;
    let start = probe::read_start(device, PROBE_BYTES)?;
    let end = probe::read_end(device, size.0, END_PROBE_BYTES, start.len() as u64)?;
    if let Some(found) = contents(&start, &end, size.0) {
        if !force {
            return Err(Error::ForeignPool { device: device.to_string(), found });
        }
        log::warn!("{device} holds {found}; overwriting it as asked (--force)");
    }
    let layout = plan_layout(device, size, block)?;
    let header = new_header(size, &layout, crate::sys::random_uuid());
    sys.write_header(device, 0, &header, Fresh::Wipe)?;
    // Both copies, so damage to either one leaves a readable header.
    let mirror = header.next().map_err(|m| Error::Inconsistent(m.into()))?;
    sys.write_header(device, 1, &mirror, Fresh::No)?;
    Ok(format!(
        "formatted {device} as a cowroot pool: {} in all, metadata {}, data {} in {} blocks",
        Bytes(size.0),
        layout.meta.len.bytes(),
        layout.data.len.bytes(),
        Bytes(layout.block_sectors as u64 * 512)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blank_devices_format_without_force() {
        let size = 64 << 20;
        let (zero, end) = (vec![0u8; PROBE_BYTES], vec![0u8; END_PROBE_BYTES]);
        assert_eq!(contents(&zero, &end, size), None);
        // Unrecognised data anywhere in the first or last MiB is refused.
        let mut start = zero.clone();
        start[123_456] = 7;
        assert!(contents(&start, &end, size).unwrap().contains("offset 123456"));
        let mut tail = end.clone();
        tail[10] = 1;
        assert!(contents(&zero, &tail, size).unwrap().contains(&format!("offset {}", size - (1 << 20) + 10)));
        let mut ext = zero.clone();
        ext[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        assert_eq!(contents(&ext, &end, size).as_deref(), Some("an ext2/3/4 filesystem"));
    }
}
