//! Where cowroot's keys come from and which value wins. Three places, in
//! rising precedence, key by key:
//!
//! 1. `/etc/cowroot.conf`, copied into the initramfs when it is built: the
//!    same `key=value` words as the kernel command line, split by the
//!    kernel's rules, plus `#` comments. Only cowroot's keys belong there;
//!    any other word is an error naming the word, the file and the line.
//!    It alone can turn cowroot on.
//! 2. dracut's `/etc/cmdline.d/*.conf`, in name order: command-line words
//!    for everyone in the initramfs. cowroot takes its own keys and the
//!    kernel's resume keys (see `resume`), and ignores the rest.
//! 3. The kernel command line.
//!
//! The words are kept in that order, so `Config`'s rule that the last value
//! of a key wins gives the precedence. Nothing here reads a file: the
//! binary hands in the bytes.

use crate::cmdline::{self, Param};
use crate::config::{is_ours, Config, Location};
use crate::error::{Error, Result};

/// The configuration file, in the initramfs and on the installed system.
pub const CONFIG_FILE: &str = "/etc/cowroot.conf";
/// dracut's directory of command-line words.
pub const CMDLINE_D: &str = "/etc/cmdline.d";

/// Every cowroot word from every place, lowest precedence first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Each word with the line it was read from; `None` for the kernel
    /// command line.
    words: Vec<(Param, Option<Location>)>,
    /// Words of the configuration file that are not cowroot's: a boot
    /// refuses them, but they do not hide the root device's name from the
    /// initramfs hooks (which then wait for it and fail closed).
    foreign: Vec<Error>,
    /// The last `root=` of dracut's cmdline.d and the kernel command line
    /// (dracut's `getarg root=`): the device the initramfs would have
    /// mounted without cowroot.
    root_arg: Option<String>,
}

/// The words of a file, each with its line number (from 1).
fn file_words(path: &str, bytes: &[u8], comments: bool) -> Vec<(Param, Location)> {
    let mut words = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        for param in cmdline::split_line(line, comments) {
            words.push((param, Location { file: path.to_string(), line: index + 1 }));
        }
    }
    words
}

/// A word as it was written (without the quotes).
fn word(param: &Param) -> String {
    match &param.value {
        Some(value) => format!("{}={value}", param.key),
        None => param.key.clone(),
    }
}

/// The names in dracut's `cmdline.d` that dracut reads (its `*.conf` glob:
/// no hidden files), in the order it reads them.
pub fn cmdline_d_order(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().filter(|n| n.ends_with(".conf") && !n.starts_with('.')).collect();
    names.sort();
    names
}

impl Settings {
    /// `config_file`: the path and bytes of `/etc/cowroot.conf` (or of
    /// `--config`), if there is one. `cmdline_d`: dracut's files, path and
    /// bytes, in the order `cmdline_d_order` gives. `cmdline`: the kernel
    /// command line.
    pub fn merge(config_file: Option<(&str, &[u8])>, cmdline_d: &[(String, Vec<u8>)], cmdline: &[u8]) -> Settings {
        let mut settings = Settings::default();
        if let Some((path, bytes)) = config_file {
            for (param, at) in file_words(path, bytes, true) {
                if is_ours(&param.key) {
                    settings.words.push((param, Some(at)));
                } else {
                    settings.foreign.push(at.wrap(Error::config(
                        &word(&param),
                        "not one of cowroot's keys (cowroot=, cowpool=, cowroot.*); this file holds only \
                         those, other parameters belong on the kernel command line",
                    )));
                }
            }
        }
        // A root= that is not UTF-8 is no name a hook could use.
        let last_root = |words: &mut dyn Iterator<Item = &Param>, root: &mut Option<String>| {
            for p in words.filter(|p| p.key == "root") {
                *root = p.value.clone().filter(|_| p.utf8);
            }
        };
        for (path, bytes) in cmdline_d {
            let words = file_words(path, bytes, false);
            last_root(&mut words.iter().map(|(p, _)| p), &mut settings.root_arg);
            // dracut writes resume= there too (host-only images).
            let ours =
                words.into_iter().filter(|(p, _)| is_ours(&p.key) || crate::resume::KEYS.contains(&p.key.as_str()));
            settings.words.extend(ours.map(|(p, at)| (p, Some(at))));
        }
        let words = cmdline::split_bytes(cmdline);
        last_root(&mut words.iter(), &mut settings.root_arg);
        settings.words.extend(words.into_iter().map(|p| (p, None)));
        settings
    }

    /// What `root=` says (the last one, as dracut reads it), if anything.
    pub fn root_arg(&self) -> Option<&str> {
        self.root_arg.as_deref()
    }

    /// The validated settings (`None`: no `cowroot=` anywhere). An error
    /// about a value read from a file names the file and line.
    pub fn config(&self) -> Result<Option<Config>> {
        if let Some(err) = self.foreign.first() {
            return Err(err.clone());
        }
        Config::from_located(self.words.iter().map(|(p, at)| (p, at.as_ref())))
    }

    /// Every word, lowest precedence first: for what must be read even when
    /// the settings are not valid (the root device's name, the onfail
    /// policy).
    pub fn params(&self) -> Vec<Param> {
        self.words.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Where the value of `key` that wins was read: a file's path, or `the
    /// kernel command line`.
    pub fn origin(&self, key: &str) -> Option<String> {
        self.words.iter().rev().find(|(p, _)| p.key == key).map(|(_, at)| match at {
            Some(at) => at.file.clone(),
            None => "the kernel command line".to_string(),
        })
    }

    /// Which of cowroot's keys came from where, for the debug log:
    /// `cowroot, cowpool from /etc/cowroot.conf; cowroot.reset from the
    /// kernel command line`.
    pub fn describe(&self) -> String {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (param, _) in self.words.iter().rev() {
            let key = param.key.as_str();
            if !is_ours(key) || seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let from = self.origin(key).unwrap_or_default();
            match groups.iter_mut().find(|(f, _)| *f == from) {
                Some((_, keys)) => keys.push(key),
                None => groups.push((from, vec![key])),
            }
        }
        if groups.is_empty() {
            return "no cowroot keys anywhere".into();
        }
        // Lowest precedence first, keys in the order they were written.
        groups.reverse();
        let parts: Vec<String> = groups
            .into_iter()
            .map(|(from, mut keys)| {
                keys.reverse();
                format!("{} from {from}", keys.join(", "))
            })
            .collect();
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DevSpec, OnFail, PoolSpec, Source};

    const KIOSK: &str = "\
# /etc/cowroot.conf of the kiosk image: after editing, run update-initramfs -u
cowroot=/images/kiosk.img        # the image, on the partition below
cowroot.dev=LABEL=images

cowpool=PARTLABEL=cowpool
\tcowroot.reset=0
cowroot.onfail=halt   # a kiosk powers off rather than open a shell
";

    fn merge(file: &str, cmdline_d: &[(&str, &str)], cmdline: &str) -> Settings {
        let d: Vec<(String, Vec<u8>)> = cmdline_d.iter().map(|(p, b)| (p.to_string(), b.as_bytes().to_vec())).collect();
        let file = (!file.is_empty()).then_some((CONFIG_FILE, file.as_bytes()));
        Settings::merge(file, &d, cmdline.as_bytes())
    }

    #[test]
    fn the_file_alone_turns_cowroot_on() {
        let s = merge(KIOSK, &[], "BOOT_IMAGE=/vmlinuz root=UUID=abcd ro quiet\n");
        let cfg = s.config().unwrap().unwrap();
        assert_eq!(cfg.source, Source::File("/images/kiosk.img".into()));
        assert_eq!(cfg.host_dev, Some(DevSpec::Label("images".into())));
        assert_eq!(cfg.pool, PoolSpec::Device(DevSpec::PartLabel("cowpool".into())));
        assert!(!cfg.reset);
        assert_eq!(cfg.onfail, OnFail::Halt);
        assert_eq!(crate::config::onfail_policy(&s.params()), OnFail::Halt);
        assert_eq!(crate::config::root_device_name(&s.params()).unwrap().as_str(), "cowroot");
        assert_eq!(s.describe(), "cowroot, cowroot.dev, cowpool, cowroot.reset, cowroot.onfail from /etc/cowroot.conf");
    }

    #[test]
    fn the_command_line_wins_key_by_key() {
        let s = merge(
            KIOSK,
            &[("/etc/cmdline.d/10-dracut.conf", "rd.lvm=0 cowroot.timeout=5\ncowroot.onfail=ro rd.md=0\n")],
            "root=UUID=abcd ro cowroot.reset=1 cowroot.name=kiosk\n",
        );
        let cfg = s.config().unwrap().unwrap();
        assert!(cfg.reset, "the command line's cowroot.reset=1 over the file's 0");
        assert_eq!(cfg.name.as_str(), "kiosk");
        assert_eq!(cfg.timeout_secs, 5, "cmdline.d over the built-in default");
        assert_eq!(cfg.onfail, OnFail::ReadOnly, "cmdline.d over the file");
        assert_eq!(cfg.source, Source::File("/images/kiosk.img".into()), "from the file");
        assert_eq!(s.origin("cowroot.reset").as_deref(), Some("the kernel command line"));
        assert_eq!(s.origin("cowroot.onfail").as_deref(), Some("/etc/cmdline.d/10-dracut.conf"));
        assert_eq!(s.origin("cowroot").as_deref(), Some(CONFIG_FILE));
        assert_eq!(s.origin("cowroot.debug"), None);
        assert_eq!(
            s.describe(),
            "cowroot, cowroot.dev, cowpool from /etc/cowroot.conf; cowroot.timeout, cowroot.onfail from \
             /etc/cmdline.d/10-dracut.conf; cowroot.reset, cowroot.name from the kernel command line"
        );
        // cmdline.d files in the order given (cmdline_d_order sorts them);
        // a later file wins.
        let s = merge(
            "",
            &[
                ("/etc/cmdline.d/10-a.conf", "cowroot=/dev/vda cowpool=/dev/vdb cowroot.timeout=7"),
                ("/etc/cmdline.d/20-b.conf", "cowroot.timeout=9"),
            ],
            "ro",
        );
        assert_eq!(s.config().unwrap().unwrap().timeout_secs, 9);
    }

    #[test]
    fn a_later_source_replaces_the_volume_list_and_errors_name_their_line() {
        let conf = format!("{KIOSK}\ncowroot.volume=home:1G:/home\ncowroot.volume=log:64M:/var/log\n");
        let names = |s: &Settings| -> Vec<String> {
            s.config().unwrap().unwrap().volumes.iter().map(|v| v.name.to_string()).collect()
        };
        assert_eq!(names(&merge(&conf, &[], "ro")), ["home", "log"]);
        // The command line's list replaces the file's, even the same word.
        assert_eq!(names(&merge(&conf, &[], "ro cowroot.volume=home:2G:/home")), ["home"]);
        let s = merge(&conf, &[], "ro cowroot.volume=home:2G:/home");
        assert_eq!(s.config().unwrap().unwrap().volumes[0].size, crate::units::Bytes(2 << 30));
        // An empty value (or none) drops the file's volumes for this boot.
        assert!(names(&merge(&conf, &[], "ro cowroot.volume=")).is_empty());
        assert!(names(&merge(&conf, &[], "ro cowroot.volume=none")).is_empty());
        // A bad word is named by its own line.
        let bad = format!("{KIOSK}\ncowroot.volume=home:1G:/home\ncowroot.volume=log:1M:/var/log\n");
        let err = merge(&bad, &[], "ro").config().unwrap_err().to_string();
        let line = bad.lines().position(|l| l.contains("log:1M")).unwrap() + 1;
        assert!(err.contains(&format!("{CONFIG_FILE}:{line}")), "{err}");
    }

    #[test]
    fn resume_keys_of_cmdline_d_are_kept_and_the_command_line_wins() {
        use crate::resume::{request, Request, ResumeDevice};
        let d = [("/etc/cmdline.d/95resume.conf", " resume=UUID=5wap rd.lvm=0 ")];
        let s = merge(KIOSK, &d, "root=UUID=abcd ro");
        let want = Request::Resume { device: ResumeDevice::Spec(DevSpec::Uuid("5wap".into())), offset_pages: 0 };
        assert_eq!(request(&s.params()), want);
        assert!(s.params().iter().all(|p| p.key != "rd.lvm"), "dracut's own keys stay dracut's");
        assert_eq!(request(&merge(KIOSK, &d, "ro noresume").params()), Request::None);
    }

    #[test]
    fn cmdline_d_is_read_in_name_order_as_dracut_globs_it() {
        let names = ["99-z.conf", "10-a.conf", ".hidden.conf", "50-m.conf.bak", "README", "01-b.conf", "A.conf"];
        assert_eq!(
            cmdline_d_order(names.iter().map(|n| n.to_string())),
            ["01-b.conf", "10-a.conf", "99-z.conf", "A.conf"]
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err =
            |file: &str, d: &[(&str, &str)], cmdline: &str| merge(file, d, cmdline).config().unwrap_err().to_string();
        // A bad value in the file, while the command line is fine.
        assert_eq!(
            err("cowroot=/dev/vda\n# comment\ncowroot.reset=maybe\n", &[], "cowpool=/dev/vdb"),
            "/etc/cowroot.conf:3: cowroot.reset: expected 0 or 1, got \"maybe\""
        );
        // The same bad value overridden on the command line is not an error.
        let s = merge("cowroot=/dev/vda cowroot.reset=maybe", &[], "cowpool=/dev/vdb cowroot.reset=1");
        assert!(s.config().unwrap().unwrap().reset);
        // An unknown key, a word that is not cowroot's, a value that is not UTF-8.
        assert_eq!(
            err("cowroot=/dev/vda\n\ncowroot.rest=1", &[], ""),
            format!("/etc/cowroot.conf:3: cowroot.rest: unknown key; cowroot knows {}", crate::config::KEYS.join(", "))
        );
        let e = err("cowroot=/dev/vda cowpool=/dev/vdb\nquiet root=/dev/sda1\n", &[], "");
        assert!(e.starts_with("/etc/cowroot.conf:2: quiet: not one of cowroot's keys"), "{e}");
        let e = err("cowroot=/dev/vda cowpool=/dev/vdb -- init=/bin/sh", &[], "");
        assert!(e.starts_with("/etc/cowroot.conf:1: --: not one of cowroot's keys"), "{e}");
        let s = Settings::merge(Some((CONFIG_FILE, b"cowroot=/dev/vd\xffa\ncowpool=/dev/vdb")), &[], b"");
        let e = s.config().unwrap_err().to_string();
        assert!(e.starts_with("/etc/cowroot.conf:1: cowroot: the value holds bytes that are not UTF-8"), "{e}");
        // Errors from cmdline.d name their file too; other words there are dracut's.
        assert_eq!(
            err(
                "",
                &[("/etc/cmdline.d/90-x.conf", "rd.break\nrd.luks.uuid=luks-é cowroot.timeout=soon")],
                "cowroot=/dev/vda cowpool=/dev/vdb"
            ),
            "/etc/cmdline.d/90-x.conf:2: cowroot.timeout: expected whole seconds from 0 to 86400, got \"soon\""
        );
        // A key that is missing, or wrong on the command line, says nothing of files.
        assert_eq!(
            err("cowroot=/dev/vda", &[], "ro"),
            "cowpool: required: name the device that takes the writes (a device, VG/LV or ram)"
        );
        assert_eq!(
            err("cowroot=/dev/vda cowpool=/dev/vdb", &[], "cowroot.name=a/b"),
            "cowroot.name: invalid name \"a/b\": use only letters, digits and . _ + -"
        );
    }

    #[test]
    fn a_foreign_word_does_not_hide_the_root_device() {
        // The boot refuses the file, but the hooks still learn the root
        // device's name, wait for it and fail closed instead of mounting root=.
        let s = merge("cowroot=/dev/vda cowpool=/dev/vdb cowroot.name=kiosk\nsplash\n", &[], "ro");
        assert!(s.config().is_err());
        assert_eq!(crate::config::root_device_name(&s.params()).unwrap().as_str(), "kiosk");
    }

    #[test]
    fn root_arg_is_the_last_root_as_dracut_reads_it() {
        assert_eq!(merge("", &[], "ro root=UUID=a cowroot=/x root=LABEL=b quiet").root_arg(), Some("LABEL=b"));
        assert_eq!(merge("", &[("/etc/cmdline.d/95root-dev.conf", "root=UUID=c\n")], "ro").root_arg(), Some("UUID=c"));
        assert_eq!(
            merge("", &[("/etc/cmdline.d/95root-dev.conf", "root=UUID=c")], "root=/dev/vda").root_arg(),
            Some("/dev/vda")
        );
        assert_eq!(merge("", &[], "ro cowroot=/x -- root=/dev/vda").root_arg(), None, "after -- the words are init's");
        assert_eq!(merge("", &[], "ro cowroot=/x").root_arg(), None);
    }

    #[test]
    fn nothing_anywhere_is_nothing_to_do() {
        assert_eq!(merge("", &[], "root=/dev/sda1 ro quiet\n").config(), Ok(None));
        assert_eq!(merge("# cowroot is off for now\n\n   \n", &[], "ro").config(), Ok(None));
        assert_eq!(merge("", &[("/etc/cmdline.d/x.conf", "rd.break cowroot.reset=1")], "ro").config(), Ok(None));
        assert_eq!(merge("", &[], "ro").describe(), "no cowroot keys anywhere");
        // Quotes group within a line; CR LF line ends are white space.
        let s =
            merge("cowroot=\"/my images/a.img\" # the image\r\ncowroot.dev=/dev/vda\r\ncowpool=/dev/vdb\r\n", &[], "");
        assert_eq!(s.config().unwrap().unwrap().source, Source::File("/my images/a.img".into()));
    }
}
