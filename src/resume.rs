//! Hibernation comes first. A hibernated system resumes with the pool as
//! it was active in memory; if this boot wrote to the pool before the
//! resume (a reset, a pending reset, a format, a repaired header, even a
//! new thin device), the resumed kernel would commit its stale metadata
//! over those writes. The generators try to resume late (initramfs-tools in
//! `local-premount`, after cowroot), so cowroot looks at the `resume=`
//! device first: if it holds a hibernation image, cowroot asks the kernel to
//! resume it (writing the device number to `/sys/power/resume`, as the
//! generators' own resume steps do) before anything is written. The kernel
//! either resumes, and this boot ends there, or clears the image's
//! signature and goes on.

use crate::cmdline::Param;
use crate::config::{parse_devspec, DevSpec};
use crate::error::{Error, Result};
use crate::table::DevNum;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The kernel's page size on x86_64: the unit of `resume_offset=` and the
/// size of the swap header that holds the signature.
pub const PAGE: u64 = 4096;

/// Signatures in the last 10 bytes of the swap header page while a
/// hibernation image is stored (the kernel's swsusp, uswsusp, and the older
/// ones blkid knows).
const SIGNATURES: [&[u8]; 4] = [b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001"];

/// The kernel's keys read here; dracut may put them in `cmdline.d`.
pub const KEYS: [&str; 4] = ["resume", "resume_offset", "noresume", "hibernate"];

/// The device named by `resume=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeDevice {
    Spec(DevSpec),
    Number(DevNum),
}

impl std::fmt::Display for ResumeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResumeDevice::Spec(spec) => write!(f, "{spec}"),
            ResumeDevice::Number(num) => write!(f, "{num}"),
        }
    }
}

/// What the command line asks about resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No `resume=`, or `noresume` / `hibernate=noresume`.
    None,
    /// `resume=` in a form cowroot cannot look up: the value, for a
    /// warning.
    Unknown(String),
    Resume {
        device: ResumeDevice,
        offset_pages: u64,
    },
}

/// The same keys as initramfs-tools' init exports them to its scripts:
/// `resume` (from `resume=`, or `RESUME=` of its configuration, which
/// Debian's resume hook writes for the largest swap device when the
/// command line names none), `resume_offset`, and `noresume=y`. `var`
/// reads one environment variable. They go before the command line's words,
/// so those win.
pub fn environment_params(var: impl Fn(&str) -> Option<String>) -> Vec<Param> {
    let mut params = Vec::new();
    for key in ["resume", "resume_offset"] {
        if let Some(value) = var(key).filter(|v| !v.is_empty()) {
            params.push(Param { key: key.into(), value: Some(value), utf8: true });
        }
    }
    if var("noresume").is_some_and(|v| !v.is_empty()) {
        params.push(Param { key: "noresume".into(), value: None, utf8: true });
    }
    params
}

/// Reads `resume=`, `resume_offset=`, `noresume` and `hibernate=` the way
/// the kernel does: the last value of a key wins.
pub fn request(params: &[Param]) -> Request {
    let last = |key: &str| params.iter().rev().find(|p| p.key == key && p.utf8);
    if params.iter().any(|p| p.key == "noresume")
        || last("hibernate").and_then(|p| p.value.as_deref()).is_some_and(|v| v.split(',').any(|w| w == "noresume"))
    {
        return Request::None;
    }
    let Some(value) = last("resume").and_then(|p| p.value.clone()).filter(|v| !v.is_empty()) else {
        return Request::None;
    };
    let offset_pages = last("resume_offset").and_then(|p| p.value.as_deref()?.parse().ok()).unwrap_or(0);
    let device = if let Some(num) = value.parse::<DevNum>().ok().filter(|_| value.contains(':')) {
        ResumeDevice::Number(num)
    } else if let Some(num) = kernel_hex_devnum(&value) {
        // The kernel reads 0 as no device at all.
        if num == (DevNum { major: 0, minor: 0 }) {
            return Request::None;
        }
        ResumeDevice::Number(num)
    } else {
        match parse_devspec("resume", &value) {
            Ok(Some(spec)) => ResumeDevice::Spec(spec),
            _ => return Request::Unknown(value),
        }
    };
    Request::Resume { device, offset_pages }
}

/// The kernel's older form of a device number: hex digits alone, as
/// `new_encode_dev` packs them (minor's low byte last, its upper bits
/// above the major), so `0803` is 8:3, as for `root=`.
fn kernel_hex_devnum(value: &str) -> Option<DevNum> {
    if value.is_empty() || value.len() > 8 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dev = u32::from_str_radix(value, 16).ok()?;
    Some(DevNum { major: (dev & 0xfff00) >> 8, minor: (dev & 0xff) | ((dev >> 12) & 0xfff00) })
}

/// The signature of a stored hibernation image in a swap header page, if
/// there is one.
pub fn image_signature(page: &[u8]) -> Option<&'static str> {
    let sig = page.get(PAGE as usize - 10..PAGE as usize)?;
    SIGNATURES.iter().find(|s| sig.starts_with(s)).map(|s| std::str::from_utf8(s).unwrap_or("hibernation signature"))
}

/// Reads the header page of `device` at `offset_pages`, bypassing what
/// the page cache holds (the kernel clears the signature with a write that
/// does not go through it).
pub fn read_header_page(device: &str, offset_pages: u64) -> Result<Vec<u8>> {
    let mut file = File::open(device).map_err(|e| Error::io("open", device, e))?;
    let start = offset_pages.checked_mul(PAGE).ok_or_else(|| Error::config("resume_offset", "too large"))?;
    drop_cached(&file);
    file.seek(SeekFrom::Start(start)).map_err(|e| Error::io("seek", device, e))?;
    let mut page = vec![0u8; PAGE as usize];
    file.read_exact(&mut page).map_err(|e| Error::io("read", device, e))?;
    drop_cached(&file);
    Ok(page)
}

fn drop_cached(file: &File) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    // Best effort: a failure only means a stale page may be read.
    let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::split;

    #[test]
    fn reads_resume_keys_as_the_kernel_does() {
        assert_eq!(request(&split("root=/dev/vda ro")), Request::None);
        assert_eq!(
            request(&split("resume=/dev/vdc")),
            Request::Resume { device: ResumeDevice::Spec(DevSpec::Path("/dev/vdc".into())), offset_pages: 0 }
        );
        assert_eq!(
            request(&split("resume=UUID=1234 resume_offset=34816")),
            Request::Resume { device: ResumeDevice::Spec(DevSpec::Uuid("1234".into())), offset_pages: 34816 }
        );
        assert_eq!(
            request(&split("resume=/dev/vdc resume=254:3")),
            Request::Resume { device: ResumeDevice::Number(DevNum { major: 254, minor: 3 }), offset_pages: 0 }
        );
        assert_eq!(request(&split("resume=/dev/vdc noresume")), Request::None);
        assert_eq!(request(&split("resume=/dev/vdc hibernate=protect_image,noresume")), Request::None);
        assert_eq!(request(&split("resume=")), Request::None);
        assert_eq!(
            request(&split("resume=0803")),
            Request::Resume { device: ResumeDevice::Number(DevNum { major: 8, minor: 3 }), offset_pages: 0 }
        );
        // 259:65540 packed as the kernel's new_encode_dev does.
        assert_eq!(
            request(&split("resume=10010304")),
            Request::Resume { device: ResumeDevice::Number(DevNum { major: 259, minor: 65540 }), offset_pages: 0 }
        );
        assert_eq!(request(&split("resume=0")), Request::None);
        // The kernel takes no bare name (only MAJ:MIN or hex without
        // /dev/): cowroot warns and goes on.
        assert_eq!(request(&split("resume=sda2")), Request::Unknown("sda2".into()));
    }

    #[test]
    fn initramfs_tools_exports_count_and_the_command_line_wins() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
        };
        let mut params = environment_params(env(&[("resume", "UUID=5wap"), ("resume_offset", ""), ("noresume", "")]));
        assert_eq!(
            request(&params),
            Request::Resume { device: ResumeDevice::Spec(DevSpec::Uuid("5wap".into())), offset_pages: 0 }
        );
        params.extend(split("resume=/dev/vdc"));
        assert_eq!(
            request(&params),
            Request::Resume { device: ResumeDevice::Spec(DevSpec::Path("/dev/vdc".into())), offset_pages: 0 }
        );
        assert_eq!(request(&environment_params(env(&[("resume", "/dev/vdc"), ("noresume", "y")]))), Request::None);
        assert_eq!(request(&environment_params(env(&[]))), Request::None);
    }

    #[test]
    fn finds_the_signature_at_the_end_of_the_header_page() {
        let mut page = vec![0u8; PAGE as usize];
        page[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(image_signature(&page), None);
        page[4086..4096].copy_from_slice(b"S1SUSPEND\0");
        assert_eq!(image_signature(&page), Some("S1SUSPEND"));
        page[4086..4096].copy_from_slice(b"LINHIB0001");
        assert_eq!(image_signature(&page), Some("LINHIB0001"));
        assert_eq!(image_signature(&page[..100]), None);
    }
}
