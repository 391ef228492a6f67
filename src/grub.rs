//! `cowroot grub`: GRUB menu entries for the machine's cowroot setup, from
//! /etc/cowroot.conf (`/etc/grub.d/42_cowroot` runs it for
//! `grub-mkconfig`). Normal, reset and (in frozen mode) maintenance boots;
//! the kernel and initramfs come from inside the origin (an image file
//! through GRUB's `loopback`), so the kernel always matches the modules of
//! the image. Plain GRUB script: the same on BIOS and UEFI.

use crate::cmdline::Param;
use crate::config::{Config, DevSpec, RootMode, Source};
use crate::error::{Error, Result};
use crate::names::Role;
use std::fmt::Write as _;

/// What GRUB needs to read an origin or its host: LVM and md RAID hosts
/// too (LUKS would need cryptomount), and the filesystems cowroot boots.
const FILESYSTEM_MODULES: [&str; 5] = ["lvm", "mdraid1x", "ext2", "xfs", "btrfs"];

/// How GRUB finds a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrubSearch {
    Label(String),
    FsUuid(String),
}

impl GrubSearch {
    fn command(&self, var: &str) -> String {
        match self {
            GrubSearch::Label(label) => format!("search --no-floppy --set={var} --label {}", quote(label)),
            GrubSearch::FsUuid(uuid) => format!("search --no-floppy --set={var} --fs-uuid {}", quote(uuid)),
        }
    }
}

/// A word for a GRUB script: as is when it holds only plain characters,
/// else single-quoted (a `'` as `'\''`, as in sh).
fn quote(word: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"._/=:,+-@%".contains(&b);
    if !word.is_empty() && word.bytes().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The filesystem a device spec names, as GRUB searches for it: labels and
/// filesystem uuids directly, anything else through `locate` (grub-probe).
fn search_for(spec: &DevSpec, key: &str, locate: &dyn Fn(&DevSpec) -> Option<String>) -> Result<GrubSearch> {
    match spec {
        DevSpec::Label(label) => Ok(GrubSearch::Label(label.clone())),
        DevSpec::Uuid(uuid) => Ok(GrubSearch::FsUuid(uuid.clone())),
        other => locate(other).map(GrubSearch::FsUuid).ok_or_else(|| {
            Error::config(
                key,
                format!(
                    "GRUB cannot be told where {other} is (grub-probe found no filesystem uuid for it); \
                     name it by LABEL= or UUID= in /etc/cowroot.conf"
                ),
            )
        }),
    }
}

/// The GRUB script of the entries. `words` are the configuration's own
/// key=value words (put on each kernel line, so the entries work whatever
/// initramfs the image has); `extra` is GRUB_CMDLINE_LINUX and its
/// _DEFAULT, as 10_linux adds them.
pub fn entries(
    cfg: &Config,
    words: &[Param],
    extra: &str,
    locate: &dyn Fn(&DevSpec) -> Option<String>,
) -> Result<String> {
    let mut find = String::new();
    match &cfg.source {
        Source::File(path) => {
            let host =
                cfg.host_dev.as_ref().ok_or_else(|| Error::config("cowroot.dev", "required for an image file"))?;
            let search = search_for(host, "cowroot.dev", locate)?;
            for module in FILESYSTEM_MODULES.iter().chain(&["loopback"]) {
                let _ = writeln!(find, "\tinsmod {module}");
            }
            let _ = writeln!(find, "\t{}", search.command("cowroot_host"));
            let _ = writeln!(find, "\tloopback -d cowroot_loop");
            let _ = writeln!(find, "\tloopback cowroot_loop ($cowroot_host){}", quote(path));
            let _ = writeln!(find, "\tset cowroot_image=cowroot_loop");
        }
        Source::Nbd(server) => {
            return Err(Error::config(
                "cowroot",
                format!("{server} is served over the network, where GRUB cannot read a kernel; netboot the machine (PXE) with the image's kernel and initramfs instead"),
            ))
        }
        Source::Device(spec) => {
            for module in FILESYSTEM_MODULES {
                let _ = writeln!(find, "\tinsmod {module}");
            }
            let _ = writeln!(find, "\t{}", search_for(spec, "cowroot", locate)?.command("cowroot_image"));
        }
    }
    // Debian links the newest kernel at / or at /boot.
    let _ = writeln!(
        find,
        "\tif test -e ($cowroot_image)/vmlinuz; then set cowroot_boot=; else set cowroot_boot=/boot; fi"
    );
    // GRUB passes ' " and \ to the kernel behind a backslash, which the
    // kernel keeps: the value the boot reads would not be the file's.
    if let Some(p) = words.iter().find(|p| p.value.as_deref().is_some_and(|v| v.contains(['\'', '"', '\\']))) {
        return Err(Error::config(
            &p.key,
            format!(
                "{} holds ' \" or \\, which GRUB passes to the kernel behind a backslash the kernel keeps; \
                 rename it without them",
                p.value.as_deref().unwrap_or_default()
            ),
        ));
    }
    let keys: Vec<String> = words
        .iter()
        .filter(|p| !matches!(p.key.as_str(), "cowroot.reset" | "cowroot.maintenance"))
        .map(|p| match &p.value {
            Some(v) => quote(&format!("{}={v}", p.key)),
            None => quote(&p.key),
        })
        .collect();
    let root = cfg.name.mapper_path(Role::Thin);
    let what = match cfg.mode {
        RootMode::Persist => "keep changes",
        RootMode::Frozen => "frozen: every boot from the saved base",
        RootMode::Volatile => "volatile: fresh every boot",
    };
    let mut boots = vec![("normal", what.to_string(), String::new())];
    if cfg.mode != RootMode::Volatile {
        boots.push(("reset", "reset: discard all changes".into(), " cowroot.reset=1".into()));
    }
    if cfg.mode == RootMode::Frozen {
        boots.push(("maintenance", "maintenance: write into the base".into(), " cowroot.maintenance=1".into()));
    }
    let mut out = String::from("### cowroot entries, from /etc/cowroot.conf by `cowroot grub` ###\n");
    for (id, title, key) in boots {
        let _ = writeln!(
            out,
            "menuentry {} --class gnu-linux --class os --id {} {{",
            quote(&format!("cowroot ({}): {title}", cfg.name)),
            quote(&format!("cowroot-{}-{id}", cfg.name))
        );
        out.push_str("\tinsmod part_gpt\n\tinsmod part_msdos\n\tinsmod test\n");
        out.push_str(&find);
        let extra = if extra.trim().is_empty() { String::new() } else { format!(" {}", extra.trim()) };
        let _ = writeln!(
            out,
            "\tlinux ($cowroot_image)${{cowroot_boot}}/vmlinuz root={root} ro {}{key}{extra}",
            keys.join(" ")
        );
        out.push_str("\tinitrd ($cowroot_image)${cowroot_boot}/initrd.img\n}\n");
    }
    Ok(out)
}

/// When this system runs a kernel whose modules its root no longer holds
/// (a kernel upgrade inside kept changes removed them), what to do.
/// `running` is the kernel release, `modules` the releases under
/// /lib/modules.
pub fn kernel_mismatch(running: &str, modules: &[String]) -> Option<String> {
    if modules.iter().any(|m| m == running) {
        let others: Vec<&str> = modules.iter().map(String::as_str).filter(|m| *m != running).collect();
        if others.is_empty() {
            return None;
        }
        return Some(format!(
            "this root also has kernel {} installed, but cowroot's boot entries start the image's kernel \
             ({running} is running): to boot the new one, turn this root into a new image (`cowroot commit --to \
             FILE`) and point cowroot= at it; keep {running}'s package installed meanwhile",
            others.join(", ")
        ));
    }
    let installed = if modules.is_empty() { "none".to_string() } else { modules.join(", ") };
    Some(format!(
        "the running kernel {running} has no modules in this root (it has {installed}): a kernel upgrade in the \
         kept changes replaced them, and cowroot's boot entries start the image's kernel. Before rebooting, \
         reinstall linux-image-{running} here, or turn this root into a new image (`cowroot commit --to FILE`) \
         and point cowroot= at it; booting with cowroot.reset=1 also brings the image's modules back"
    ))
}

/// `kernel_mismatch` for this system.
pub fn check_kernel() -> Option<String> {
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let modules: Vec<String> =
        std::fs::read_dir("/lib/modules").ok()?.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    kernel_mismatch(running.trim(), &modules)
}

/// grub-probe's filesystem uuid for a device spec, resolved on this system.
pub fn grub_probe(spec: &DevSpec) -> Option<String> {
    let path = crate::probe::resolve(spec, "cowroot.dev").ok()??;
    let out = std::process::Command::new("grub-probe").args(["--target=fs_uuid", "--device", &path]).output().ok()?;
    let uuid = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !uuid.is_empty()).then_some(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::split;

    fn cfg(words: &str) -> (Config, Vec<Param>) {
        let params = split(words);
        (Config::from_params(&params).unwrap().unwrap(), params)
    }

    #[test]
    fn an_image_file_boots_its_own_kernel_through_loopback() {
        let (c, p) = cfg("cowroot=/images/root.img cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.keep=2");
        let none = |_: &DevSpec| None;
        let text = entries(&c, &p, "quiet", &none).unwrap();
        assert!(text.contains("search --no-floppy --set=cowroot_host --label images"), "{text}");
        assert!(text.contains("loopback cowroot_loop ($cowroot_host)/images/root.img"), "{text}");
        assert!(text.contains(
            "linux ($cowroot_image)${cowroot_boot}/vmlinuz root=/dev/mapper/cowroot ro cowroot=/images/root.img \
             cowroot.dev=LABEL=images cowpool=/dev/vdb cowroot.keep=2 cowroot.reset=1 quiet"
        ));
        assert_eq!(text.matches("menuentry").count(), 2, "{text}");
        assert!(!text.contains("maintenance"), "{text}");
    }

    #[test]
    fn frozen_adds_maintenance_and_odd_words_are_quoted() {
        let (c, p) = cfg("cowroot=\"/my images/$it.img\" cowroot.dev=PARTLABEL=imgs cowpool=/dev/vdb cowroot.mode=frozen cowroot.reset=1");
        let locate = |_: &DevSpec| Some("1234-abcd".to_string());
        let text = entries(&c, &p, "", &locate).unwrap();
        assert!(text.contains("--fs-uuid 1234-abcd"), "{text}");
        assert!(text.contains("($cowroot_host)'/my images/$it.img'"), "{text}");
        assert!(text.contains("'cowroot=/my images/$it.img'"), "{text}");
        assert!(text.contains("cowroot.mode=frozen cowroot.maintenance=1\n"), "{text}");
        // The configuration's own reset is not every entry's.
        assert_eq!(text.matches("cowroot.reset=1").count(), 1, "{text}");
        assert_eq!(text.matches("menuentry").count(), 3, "{text}");
        let none = |_: &DevSpec| None;
        let err = entries(&c, &p, "", &none).unwrap_err().to_string();
        assert!(err.starts_with("cowroot.dev:") && err.contains("LABEL="), "{err}");
        // GRUB would hand the kernel these behind a backslash.
        for odd in ["it's", "say\"hi\"", "back\\slash"] {
            let (c, p) = cfg(&format!("cowroot=/images/{odd}.img cowroot.dev=LABEL=x cowpool=/dev/vdb"));
            let err = entries(&c, &p, "", &locate).unwrap_err().to_string();
            assert!(err.starts_with("cowroot:") && err.contains("rename"), "{odd}: {err}");
        }
    }

    #[test]
    fn a_missing_module_tree_is_what_to_warn_of() {
        assert_eq!(kernel_mismatch("6.1.0-57-amd64", &["6.1.0-57-amd64".into()]), None);
        let newer = kernel_mismatch("6.1.0-57-amd64", &["6.1.0-57-amd64".into(), "6.1.0-58-amd64".into()]).unwrap();
        assert!(newer.contains("also has kernel 6.1.0-58-amd64") && newer.contains("cowroot commit"), "{newer}");
        let warning = kernel_mismatch("6.1.0-57-amd64", &["6.1.0-58-amd64".into()]).unwrap();
        assert!(warning.contains("has 6.1.0-58-amd64") && warning.contains("linux-image-6.1.0-57-amd64"), "{warning}");
    }
}
