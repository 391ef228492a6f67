//! Plans as the shell commands a person would type (`--dry-run`, and one
//! step per debug line). Every value a user gave is quoted so the output is
//! safe to paste, whatever the device path or file name holds.

use crate::names::{DeviceName, Role};
use crate::plan::{DevRef, Step, HOST_MOUNT, RAM_POOL_DIR, RAM_POOL_FILE};
use crate::table::{KeyText, Target};
use std::fmt::{self, Write as _};

/// Quotes a value as one POSIX shell word.
pub fn sh_quote(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._+-:=@,".contains(&b)) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// A piece of a double-quoted shell word: a literal (escaped), or an
/// expansion the shell is meant to perform (`$LOOP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellArg {
    Literal(String),
    Expansion(&'static str),
}

impl fmt::Display for ShellArg {
    /// Written for use inside double quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShellArg::Expansion(raw) => f.write_str(raw),
            ShellArg::Literal(text) => {
                for c in text.chars() {
                    if matches!(c, '\\' | '"' | '$' | '`') {
                        f.write_char('\\')?;
                    }
                    f.write_char(c)?;
                }
                Ok(())
            }
        }
    }
}

const LOOP: ShellArg = ShellArg::Expansion("$LOOP");
const RAM_POOL: ShellArg = ShellArg::Expansion("$POOL");
const LOOP_SECTORS: ShellArg = ShellArg::Expansion("$(blockdev --getsz \"$LOOP\")");
const NBD: ShellArg = ShellArg::Expansion("$NBD");
const NBD_SECTORS: ShellArg = ShellArg::Expansion("$(blockdev --getsz \"$NBD\")");

fn shell_dev(name: &DeviceName, dev: &DevRef) -> ShellArg {
    match dev {
        DevRef::Path(p) => ShellArg::Literal(p.clone()),
        DevRef::Loop => LOOP,
        DevRef::Nbd => NBD,
        DevRef::RamPool => RAM_POOL,
        DevRef::Dm(role) => ShellArg::Literal(name.mapper_path(*role)),
    }
}

/// One step as a command line (or a comment, for header writes).
pub fn render_step(name: &DeviceName, step: &Step) -> String {
    let pool = name.dm_name(Role::Pool);
    if let Some(Ok(mut table)) = step.dm_table(|d| Ok::<_, ()>(shell_dev(name, d))) {
        // A key is never shown: the dry run makes its own.
        let mut make_key = "";
        if let Target::Crypt(crypt) = &mut table.target {
            crypt.key = KeyText::Shell("$KEY");
            make_key = "KEY=$(od -An -vtx1 -N64 /dev/urandom | tr -d ' \\n') && ";
        }
        // A length not known before the origin is there: the origin's.
        let on_nbd = matches!(
            step,
            Step::CreateThin { origin: DevRef::Nbd, .. } | Step::CreateReadOnly { origin: DevRef::Nbd, .. }
        );
        let origin_sectors = if on_nbd { NBD_SECTORS } else { LOOP_SECTORS };
        let len = if table.len.0 == 0 { origin_sectors.to_string() } else { table.len.to_string() };
        let read_only = if table.role == Role::ReadOnly { " --readonly" } else { "" };
        return format!(
            "{make_key}dmsetup create {}{read_only} --uuid {} --table \"0 {len} {} {}\"",
            name.dm_name(table.role),
            name.dm_uuid(table.role),
            table.target.kind(),
            table.target
        );
    }
    if let Some(message) = step.pool_message() {
        let tolerate = matches!(step, Step::DeleteThinId { missing_ok: true, .. });
        return format!("dmsetup message {pool} 0 '{message}'{}", if tolerate { " || true" } else { "" });
    }
    match step {
        Step::SnapshotLive { id, of } => format!(
            "sync && dmsetup suspend {root} && dmsetup message {pool} 0 'create_snap {id} {of}'; dmsetup resume {root}",
            root = name.dm_name(Role::Thin)
        ),
        Step::SetReadOnly { device } => format!("blockdev --setro {}", sh_quote(device)),
        Step::MountHost { device, fstype } => format!(
            "mkdir -p {HOST_MOUNT} && mount -o ro{}{} {} {HOST_MOUNT}",
            if fstype.as_deref() == Some("btrfs") { ",nologreplay" } else { "" },
            fstype.as_ref().map(|t| format!(" -t {}", sh_quote(t))).unwrap_or_default(),
            sh_quote(device)
        ),
        Step::ZeroStart { role } => format!(
            "dd if=/dev/zero of={} bs=4096 count=1 oflag=sync  # fresh metadata under the new key",
            name.mapper_path(*role)
        ),
        Step::AttachLoop { file } => format!("LOOP=$(losetup -r -f --show {})", sh_quote(file)),
        Step::ConnectNbd { server, .. } => {
            let args: Vec<String> = server
                .client_args("$NBD")
                .iter()
                .map(|a| if a == "$NBD" { "\"$NBD\"".into() } else { sh_quote(a) })
                .collect();
            format!(
                "NBD=$(for d in /sys/block/nbd*; do [ \"$(cat \"$d/size\")\" = 0 ] && echo \"/dev/${{d##*/}}\" && break; done) && nbd-client {}",
                args.join(" ")
            )
        }
        Step::CreateRamPool { bytes } => format!(
            "mkdir -p {RAM_POOL_DIR} && mount -t tmpfs -o size={},mode=0700 cowroot-ram {RAM_POOL_DIR} && \
             truncate -s {} {RAM_POOL_FILE} && POOL=$(losetup -f --show {RAM_POOL_FILE}) && umount -l {RAM_POOL_DIR}",
            bytes.0, bytes.0
        ),
        Step::WriteHeader { slot, header, zero_meta, why, .. } => {
            let mut text = String::new();
            if *zero_meta {
                text = format!(
                    "# zero the first metadata block at sector {} (the kernel formats fresh metadata)\n",
                    header.meta.start
                );
            }
            let _ = write!(
                text,
                "# write header copy {slot} (seq {}, {why}): active thin {}, generation {}, transaction {}",
                header.seq, header.active_thin, header.generation, header.transaction
            );
            text
        }
        // Tables and messages were handled above.
        _ => format!("# {step:?}"),
    }
}

/// Renders steps as the shell commands a person would type.
pub fn render(name: &DeviceName, steps: &[Step]) -> String {
    steps.iter().map(|s| render_step(name, s) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Sectors;

    /// What a POSIX shell makes of `word`.
    fn shell_says(word: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("LOOP=/dev/loop7; printf '%s' {word}"))
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{word}");
        String::from_utf8(out.stdout).unwrap()
    }

    const HOSTILE: &str = "/run/cowroot/host/a b'c\"d$(touch /tmp/cowroot-pwned)`id`\\e.img";

    #[test]
    fn printed_values_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("/dev/vdb"), "/dev/vdb");
        assert_eq!(sh_quote("/run/cowroot/host/my image.img"), "'/run/cowroot/host/my image.img'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(shell_says(&sh_quote(HOSTILE)), HOSTILE);
        let word = format!("\"{} {LOOP}\"", ShellArg::Literal(HOSTILE.into()));
        assert_eq!(shell_says(&word), format!("{HOSTILE} /dev/loop7"));
    }

    #[test]
    fn tables_with_hostile_paths_paste_safely() {
        let name = DeviceName::default();
        let steps = [
            Step::SetReadOnly { device: HOSTILE.into() },
            Step::AttachLoop { file: HOSTILE.into() },
            Step::CreateLinear {
                role: Role::Meta,
                dev: DevRef::Path(HOSTILE.into()),
                offset: Sectors(2048),
                len: Sectors(8),
            },
            Step::CreateThin { id: 1, len: Sectors(0), origin: DevRef::Path(HOSTILE.into()) },
        ];
        let text = render(&name, &steps);
        // `sh -n` parses it, and the table words hold the path verbatim.
        let status = std::process::Command::new("sh").arg("-n").arg("-c").arg(&text).status().unwrap();
        assert!(status.success(), "{text}");
        let table = text.lines().nth(2).unwrap().split_once("--table ").unwrap().1;
        assert_eq!(shell_says(table), format!("0 8 linear {HOSTILE} 2048"));
        let thin = text.lines().nth(3).unwrap().split_once("--table ").unwrap().1;
        assert!(thin.contains("$(blockdev --getsz \"$LOOP\")"), "{thin}");
        assert!(!std::path::Path::new("/tmp/cowroot-pwned").exists());
    }

    #[test]
    fn an_nbd_origin_renders_as_nbd_client_and_its_device() {
        let name = DeviceName::default();
        let server = crate::nbd::NbdServer { host: "10.0.2.2".into(), port: 10809, export: "lab".into() };
        let steps = [
            Step::ConnectNbd { server, seconds: 30 },
            Step::CreateThin { id: 1, len: Sectors(0), origin: DevRef::Nbd },
        ];
        let text = render(&name, &steps);
        let status = std::process::Command::new("sh").arg("-n").arg("-c").arg(&text).status().unwrap();
        assert!(status.success(), "{text}");
        assert!(text.contains("&& nbd-client 10.0.2.2 10809 \"$NBD\" -N lab -R -b 512"), "{text}");
        let thin = text.lines().nth(1).unwrap();
        assert!(thin.contains("$(blockdev --getsz \"$NBD\")") && thin.ends_with(" $NBD\""), "{thin}");
    }
}
