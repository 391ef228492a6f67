//! Turns command-line parameters into validated, typed settings. Nothing
//! here touches the system; every error names the key it is about.

use crate::cmdline::Param;
use crate::error::{Error, Result};
use crate::names::DeviceName;
use crate::units::{parse_size, Bytes};
use crate::volume::{self, VolumeSpec};
use std::fmt;

/// How a block device is named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevSpec {
    Path(String),
    Label(String),
    Uuid(String),
    PartUuid(String),
    PartLabel(String),
}

/// Where the origin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on the filesystem of `cowroot.dev`, absolute within it.
    File(String),
    /// A block device used directly.
    Device(DevSpec),
    /// An export of an NBD server, connected read-only at boot.
    Nbd(crate::nbd::NbdServer),
}

/// How big a RAM pool may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamSize {
    Bytes(Bytes),
    /// A share of the machine's memory, 1 to 100.
    PercentOfRam(u8),
}

/// A RAM pool without a size may take half the memory, as tmpfs does: it
/// uses memory only for what is written, and a full pool fails writes
/// with an I/O error long before the machine runs out of memory.
pub const DEFAULT_RAM_SIZE: RamSize = RamSize::PercentOfRam(50);

/// Where the writes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSpec {
    Device(DevSpec),
    Lvm { vg: String, lv: String },
    Ram(Option<RamSize>),
}

impl PoolSpec {
    pub fn is_ram(&self) -> bool {
        matches!(self, PoolSpec::Ram(_))
    }
}

/// What happens to the kept state from one boot to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootMode {
    /// Changes are kept until a reset.
    #[default]
    Persist,
    /// The kept state is a base; every boot runs on a throwaway snapshot of
    /// it, except a maintenance boot, which writes into the base.
    Frozen,
    /// Every boot is a reset.
    Volatile,
}

/// What a boot does when the origin is not the one the kept changes were
/// made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// Fail closed: the user decides.
    #[default]
    Refuse,
    /// Start fresh on the new origin (labs rolling out a new version).
    Reset,
}

/// Pool use levels, in percent of data or metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseLevels {
    pub warn: u8,
    pub crit: u8,
}

impl Default for UseLevels {
    fn default() -> Self {
        UseLevels { warn: 80, crit: 95 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFail {
    #[default]
    Shell,
    Halt,
    ReadOnly,
    /// Boot on a RAM pool when the disk pool cannot be used.
    Ram,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    pub host_dev: Option<DevSpec>,
    pub host_fstype: Option<String>,
    pub pool: PoolSpec,
    pub reset: bool,
    pub name: DeviceName,
    pub timeout_secs: u64,
    pub onfail: OnFail,
    pub debug: bool,
    pub mode: RootMode,
    /// `cowroot.crypt=random`: the pool through dm-crypt with a key made
    /// at boot and never stored.
    pub crypt_random: bool,
    /// `cowroot.size`: the thin device's size, when larger than the origin.
    pub size: Option<Bytes>,
    pub onchange: OnChange,
    pub levels: UseLevels,
    /// `cowroot.maintenance=1`: in frozen mode, this boot writes the base.
    pub maintenance: bool,
    /// `cowroot.volume` (repeatable): persistent volumes to bring up.
    pub volumes: Vec<VolumeSpec>,
    /// `cowroot.keep`: how many of the states that resets replaced stay
    /// as checkpoints.
    pub keep: u32,
    /// `cowroot.hydrate`: the local device that takes a copy of a network
    /// origin.
    pub hydrate: Option<DevSpec>,
}

pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The most reset states `cowroot.keep` keeps: the rest of the pool's
/// checkpoint table stays free for named checkpoints.
pub const MAX_KEEP: usize = 16;
/// A day: anything longer is a typo, not a wish.
const MAX_TIMEOUT_SECS: u64 = 86_400;

pub(crate) const KEYS: &[&str] = &[
    "cowroot",
    "cowroot.dev",
    "cowroot.fstype",
    "cowpool",
    "cowroot.reset",
    "cowroot.name",
    "cowroot.timeout",
    "cowroot.onfail",
    "cowroot.debug",
    "cowroot.mode",
    "cowroot.crypt",
    "cowroot.size",
    "cowroot.onchange",
    "cowroot.warn",
    "cowroot.maintenance",
    "cowroot.volume",
    "cowroot.keep",
    "cowroot.hydrate",
];

/// Keys that may be given more than once, each time adding one more.
const REPEATABLE: &[&str] = &["cowroot.volume"];

impl fmt::Display for DevSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevSpec::Path(p) => write!(f, "{p}"),
            DevSpec::Label(v) => write!(f, "LABEL={v}"),
            DevSpec::Uuid(v) => write!(f, "UUID={v}"),
            DevSpec::PartUuid(v) => write!(f, "PARTUUID={v}"),
            DevSpec::PartLabel(v) => write!(f, "PARTLABEL={v}"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{p}"),
            Source::Device(d) => write!(f, "{d}"),
            Source::Nbd(server) => write!(f, "{server}"),
        }
    }
}

impl fmt::Display for PoolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolSpec::Device(d) => write!(f, "{d}"),
            PoolSpec::Lvm { vg, lv } => write!(f, "{vg}/{lv}"),
            PoolSpec::Ram(None) => write!(f, "ram"),
            PoolSpec::Ram(Some(RamSize::Bytes(size))) => write!(f, "ram:{}", size.0),
            PoolSpec::Ram(Some(RamSize::PercentOfRam(p))) => write!(f, "ram:{p}%"),
        }
    }
}

impl fmt::Display for OnFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFail::Shell => "shell",
            OnFail::Halt => "halt",
            OnFail::ReadOnly => "ro",
            OnFail::Ram => "ram",
        })
    }
}

/// Characters no device value may contain: control characters would break
/// log lines and sysfs lookups.
fn check_plain(key: &str, value: &str) -> Result<()> {
    if value.chars().any(|c| c.is_control()) {
        return Err(Error::config(key, format!("value {value:?} contains a control character")));
    }
    Ok(())
}

/// Parses a device spec; `None` if the value is not one (a path or VG/LV).
pub fn parse_devspec(key: &str, value: &str) -> Result<Option<DevSpec>> {
    check_plain(key, value)?;
    let tagged = [
        ("LABEL=", DevSpec::Label as fn(String) -> DevSpec),
        ("UUID=", DevSpec::Uuid),
        ("PARTUUID=", DevSpec::PartUuid),
        ("PARTLABEL=", DevSpec::PartLabel),
    ];
    for (prefix, make) in tagged {
        if let Some(rest) = value.strip_prefix(prefix) {
            if rest.is_empty() {
                return Err(Error::config(key, format!("{prefix} needs a value")));
            }
            if rest.contains('/') && prefix != "PARTLABEL=" && prefix != "LABEL=" {
                return Err(Error::config(key, format!("{value:?} is not a valid {prefix}")));
            }
            return Ok(Some(make(rest.to_string())));
        }
    }
    if let Some(rest) = value.strip_prefix("/dev/") {
        if rest.is_empty() || rest.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(Error::config(key, format!("{value:?} is not a device path")));
        }
        return Ok(Some(DevSpec::Path(value.to_string())));
    }
    Ok(None)
}

fn parse_source(value: &str) -> Result<Source> {
    const KEY: &str = "cowroot";
    if value.is_empty() {
        return Err(Error::config(KEY, "needs a value: an image path or a device"));
    }
    if let Some(dev) = parse_devspec(KEY, value)? {
        return Ok(Source::Device(dev));
    }
    if let Some(server) = crate::nbd::NbdServer::parse(KEY, value)? {
        return Ok(Source::Nbd(server));
    }
    if !value.starts_with('/') {
        return Err(Error::config(
            KEY,
            format!("{value:?} is neither an absolute image path, a device spec (/dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=) nor nbd://HOST[:PORT]/EXPORT"),
        ));
    }
    let components: Vec<&str> = value.split('/').filter(|c| !c.is_empty()).collect();
    if components.is_empty() || components.contains(&"..") {
        return Err(Error::config(KEY, format!("{value:?} must name a file and not contain \"..\"")));
    }
    Ok(Source::File(format!("/{}", components.join("/"))))
}

fn is_lvm_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

fn parse_pool(value: &str) -> Result<PoolSpec> {
    const KEY: &str = "cowpool";
    if value.is_empty() {
        return Err(Error::config(KEY, "needs a value: a device, VG/LV or ram[:SIZE]"));
    }
    if value == "ram" {
        return Ok(PoolSpec::Ram(None));
    }
    if let Some(size) = value.strip_prefix("ram:") {
        let bad = || Error::config(KEY, format!("bad size {size:?} in {value:?}; use e.g. ram:512M or ram:25%"));
        if let Some(percent) = size.strip_suffix('%') {
            return match percent.parse::<u8>() {
                Ok(p @ 1..=100) => Ok(PoolSpec::Ram(Some(RamSize::PercentOfRam(p)))),
                _ => Err(bad()),
            };
        }
        // Below 1 MiB there is no room for the header and metadata.
        let bytes = parse_size(size).filter(|b| b.0 >= 1 << 20).ok_or_else(bad)?;
        return Ok(PoolSpec::Ram(Some(RamSize::Bytes(bytes))));
    }
    if let Some(dev) = parse_devspec(KEY, value)? {
        return Ok(PoolSpec::Device(dev));
    }
    match value.split_once('/') {
        Some((vg, lv)) if is_lvm_name(vg) && is_lvm_name(lv) => {
            Ok(PoolSpec::Lvm { vg: vg.to_string(), lv: lv.to_string() })
        }
        _ => Err(Error::config(
            KEY,
            format!(
                "{value:?} is not a device spec (/dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=), VG/LV or ram[:SIZE]"
            ),
        )),
    }
}

/// Kernel-style booleans (kstrtobool); a bare key means "on".
fn parse_bool(key: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None => Ok(true),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "y" | "yes" | "on" | "true" => Ok(true),
            "0" | "n" | "no" | "off" | "false" => Ok(false),
            _ => Err(Error::config(key, format!("expected 0 or 1, got {v:?}"))),
        },
    }
}

/// A key whose value is one of a few words: `None` when the key is absent.
fn choice<T: Copy>(key: &str, value: Option<Option<&str>>, words: &[(&str, T)], expected: &str) -> Result<Option<T>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let word = require(key, value)?;
    match words.iter().find(|(w, _)| *w == word) {
        Some((_, v)) => Ok(Some(*v)),
        None => Err(Error::config(key, format!("expected {expected}, got {word:?}"))),
    }
}

fn require<'a>(key: &str, value: Option<&'a str>) -> Result<&'a str> {
    value.ok_or_else(|| Error::config(key, "needs a value (key=value)"))
}

/// Where a word was read when it was not on the kernel command line: a
/// line of `/etc/cowroot.conf` or of one of dracut's `/etc/cmdline.d` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl Location {
    /// `err`, said to be about this line of this file.
    pub fn wrap(&self, err: Error) -> Error {
        Error::InFile { file: self.file.clone(), line: self.line, cause: Box::new(err) }
    }
}

/// `err` as it is for a word of the kernel command line (`None`), or said to
/// be about the line it was read from.
fn located(err: Error, at: Option<&Location>) -> Error {
    match at {
        Some(at) => at.wrap(err),
        None => err,
    }
}

/// Is this word one of cowroot's (known or not)?
pub fn is_ours(key: &str) -> bool {
    key == "cowroot" || key == "cowpool" || key.starts_with("cowroot.")
}

/// Each key's last value, and where that value was read.
type Latest<'a> = [(&'a str, Option<&'a str>, Option<&'a Location>)];

impl Config {
    /// `Ok(None)` when `cowroot=` is absent: cowroot has nothing to do.
    /// Repeated keys: the last one wins, as in the kernel, except for the
    /// `REPEATABLE` ones, where each word of one source adds one and a
    /// later source's words replace the earlier source's.
    pub fn from_params(params: &[Param]) -> Result<Option<Config>> {
        Config::from_located(params.iter().map(|p| (p, None)))
    }

    /// As `from_params`, for words that may come from files: an error about
    /// a key whose value was read from a file names the file and line.
    pub fn from_located<'a>(
        words: impl IntoIterator<Item = (&'a Param, Option<&'a Location>)>,
    ) -> Result<Option<Config>> {
        let mut latest: Vec<(&str, Option<&str>, Option<&Location>)> = Vec::new();
        for (param, at) in words {
            let key = param.key.as_str();
            if !is_ours(key) {
                continue;
            }
            if !KEYS.contains(&key) {
                let err = Error::config(key, format!("unknown key; cowroot knows {}", KEYS.join(", ")));
                return Err(located(err, at));
            }
            if !param.utf8 {
                let err = Error::config(
                    key,
                    "the value holds bytes that are not UTF-8 (a mistyped or mis-encoded boot entry?); \
                     write it in plain ASCII or UTF-8",
                );
                return Err(located(err, at));
            }
            if REPEATABLE.contains(&key) {
                // The list a later source gives replaces an earlier
                // source's, as a single value would.
                let source = at.map(|l| l.file.as_str());
                latest.retain(|(k, _, a)| *k != key || a.map(|l| l.file.as_str()) == source);
            } else {
                latest.retain(|(k, _, _)| *k != key);
            }
            latest.push((key, param.value.as_deref(), at));
        }
        // A value is checked only where it wins: an error about a key is
        // about the word that gave it its last value.
        Config::from_latest(&latest).map_err(|err| {
            let at = match &err {
                Error::Config { key, .. } => latest.iter().find(|(k, _, _)| k == key).and_then(|(_, _, at)| *at),
                _ => None,
            };
            located(err, at)
        })
    }

    fn from_latest(latest: &Latest<'_>) -> Result<Option<Config>> {
        let get = |key: &str| latest.iter().find(|(k, _, _)| *k == key).map(|(_, v, _)| *v);

        let Some(source) = get("cowroot") else {
            return Ok(None);
        };
        let source = parse_source(require("cowroot", source)?)?;

        let host_dev = match get("cowroot.dev") {
            None => None,
            Some(v) => {
                let v = require("cowroot.dev", v)?;
                Some(parse_devspec("cowroot.dev", v)?.ok_or_else(|| {
                    Error::config(
                        "cowroot.dev",
                        format!("{v:?} is not a device spec (/dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=)"),
                    )
                })?)
            }
        };
        match (&source, &host_dev) {
            (Source::File(_), None) => {
                return Err(Error::config(
                    "cowroot.dev",
                    "required when cowroot= is an image path: name the device whose filesystem holds the image",
                ))
            }
            (Source::Device(_) | Source::Nbd(_), Some(_)) => {
                return Err(Error::config(
                    "cowroot.dev",
                    "only applies when cowroot= is an image path, but cowroot= names a device",
                ))
            }
            _ => {}
        }

        let host_fstype = match get("cowroot.fstype") {
            None => None,
            Some(v) => {
                let v = require("cowroot.fstype", v)?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                    return Err(Error::config("cowroot.fstype", format!("invalid filesystem type {v:?}")));
                }
                Some(v.to_string())
            }
        };

        let pool = match get("cowpool") {
            None => {
                return Err(Error::config(
                    "cowpool",
                    "required: name the device that takes the writes (a device, VG/LV or ram)",
                ))
            }
            Some(v) => parse_pool(require("cowpool", v)?)?,
        };

        let reset = match get("cowroot.reset") {
            None => false,
            Some(v) => parse_bool("cowroot.reset", v)?,
        };
        let debug = match get("cowroot.debug") {
            None => false,
            Some(v) => parse_bool("cowroot.debug", v)?,
        };
        let name = match get("cowroot.name") {
            None => DeviceName::default(),
            Some(v) => DeviceName::parse(require("cowroot.name", v)?)?,
        };
        let timeout_secs = match get("cowroot.timeout") {
            None => DEFAULT_TIMEOUT_SECS,
            Some(v) => {
                let v = require("cowroot.timeout", v)?;
                match v.parse::<u64>() {
                    Ok(n) if n <= MAX_TIMEOUT_SECS => n,
                    _ => {
                        return Err(Error::config(
                            "cowroot.timeout",
                            format!("expected whole seconds from 0 to {MAX_TIMEOUT_SECS}, got {v:?}"),
                        ))
                    }
                }
            }
        };
        let onfail = choice(
            "cowroot.onfail",
            get("cowroot.onfail"),
            &[("shell", OnFail::Shell), ("halt", OnFail::Halt), ("ro", OnFail::ReadOnly), ("ram", OnFail::Ram)],
            "shell, halt, ro or ram",
        )?
        .unwrap_or_default();
        let mode = choice(
            "cowroot.mode",
            get("cowroot.mode"),
            &[("persist", RootMode::Persist), ("frozen", RootMode::Frozen), ("volatile", RootMode::Volatile)],
            "persist, frozen or volatile",
        )?
        .unwrap_or_default();
        let crypt_random = choice(
            "cowroot.crypt",
            get("cowroot.crypt"),
            &[("random", true), ("off", false), ("none", false)],
            "random (a fresh key every boot, never stored) or off",
        )?
        .unwrap_or(false);
        let size = match get("cowroot.size") {
            None => None,
            Some(v) => {
                let v = require("cowroot.size", v)?;
                Some(parse_size(v).filter(|b| b.0 >= 1 << 20).ok_or_else(|| {
                    Error::config("cowroot.size", format!("expected a size of at least 1M such as 20G, got {v:?}"))
                })?)
            }
        };
        let onchange = choice(
            "cowroot.onchange",
            get("cowroot.onchange"),
            &[("refuse", OnChange::Refuse), ("reset", OnChange::Reset)],
            "refuse or reset",
        )?
        .unwrap_or_default();
        let maintenance = match get("cowroot.maintenance") {
            None => false,
            Some(v) => parse_bool("cowroot.maintenance", v)?,
        };
        let levels = match get("cowroot.warn") {
            None => UseLevels::default(),
            Some(v) => parse_levels(require("cowroot.warn", v)?)?,
        };
        // `cowroot.volume=` (or `=none`) gives no volumes: a later source
        // drops what an earlier one set.
        let volumes = latest
            .iter()
            .filter(|(k, v, _)| *k == "cowroot.volume" && !matches!(v, Some("" | "none")))
            .map(|(_, v, at)| VolumeSpec::parse(require("cowroot.volume", *v)?).map_err(|e| located(e, *at)))
            .collect::<Result<Vec<_>>>()?;
        volume::check_all(&volumes)?;
        let keep = match get("cowroot.keep") {
            None => 0,
            Some(v) => {
                let v = require("cowroot.keep", v)?;
                match v.parse::<u32>() {
                    Ok(n) if n as usize <= MAX_KEEP => n,
                    _ => {
                        return Err(Error::config(
                            "cowroot.keep",
                            format!("expected how many reset states to keep, 0 to {MAX_KEEP}, got {v:?}"),
                        ))
                    }
                }
            }
        };

        let hydrate = match get("cowroot.hydrate") {
            None => None,
            Some(v) => {
                let v = require("cowroot.hydrate", v)?;
                if !matches!(source, Source::Nbd(_)) {
                    return Err(Error::config(
                        "cowroot.hydrate",
                        "only applies when cowroot= is nbd://...: a local origin needs no local copy",
                    ));
                }
                Some(parse_devspec("cowroot.hydrate", v)?.ok_or_else(|| {
                    Error::config(
                        "cowroot.hydrate",
                        format!("{v:?} is not a device spec (/dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=)"),
                    )
                })?)
            }
        };

        let cfg = Config {
            source,
            host_dev,
            host_fstype,
            pool,
            reset,
            name,
            timeout_secs,
            onfail,
            debug,
            mode,
            crypt_random,
            size,
            onchange,
            levels,
            maintenance,
            volumes,
            keep,
            hydrate,
        };
        cfg.check_combinations()?;
        Ok(Some(cfg))
    }

    /// Does this boot start from a fresh pool whatever it holds (nothing
    /// of it survives the boot)?
    pub fn pool_is_throwaway(&self) -> bool {
        self.pool.is_ram() || self.crypt_random
    }

    /// Keys that contradict each other: an error naming both.
    fn check_combinations(&self) -> Result<()> {
        let throwaway = if self.pool.is_ram() {
            Some(("cowpool", "cowpool=ram keeps nothing across boots"))
        } else if self.crypt_random {
            Some(("cowroot.crypt", "cowroot.crypt=random makes a new key, so a new pool, every boot"))
        } else {
            None
        };
        if let (Some((key, why)), false) = (throwaway, self.volumes.is_empty()) {
            return Err(Error::config(
                "cowroot.volume",
                format!("a persistent volume needs a pool that survives boots, but {why}; drop one of cowroot.volume and {key}"),
            ));
        }
        if let (Some((key, why)), true) = (throwaway, self.keep > 0) {
            return Err(Error::config(
                "cowroot.keep",
                format!(
                    "kept reset states need a pool that survives boots, but {why}; drop one of cowroot.keep and {key}"
                ),
            ));
        }
        if let (Some((key, why)), RootMode::Frozen) = (throwaway, self.mode) {
            return Err(Error::config(
                "cowroot.mode",
                format!("frozen needs a pool that survives boots to hold the base, but {why}; drop one of cowroot.mode=frozen and {key}"),
            ));
        }
        if self.maintenance && self.mode != RootMode::Frozen {
            return Err(Error::config(
                "cowroot.maintenance",
                "a maintenance boot writes into the base of cowroot.mode=frozen, but this boot is not frozen; add cowroot.mode=frozen or drop cowroot.maintenance",
            ));
        }
        if self.onfail == OnFail::Ram && self.pool.is_ram() {
            return Err(Error::config(
                "cowroot.onfail",
                "ram falls back to a RAM pool when the disk pool cannot be used, but cowpool=ram already is one; choose shell, halt or ro",
            ));
        }
        Ok(())
    }
}

/// `WARN,CRIT` in percent, WARN below CRIT.
fn parse_levels(value: &str) -> Result<UseLevels> {
    const KEY: &str = "cowroot.warn";
    let bad = || {
        Error::config(
            KEY,
            format!("expected WARN,CRIT in percent with WARN < CRIT <= 100 such as 80,95, got {value:?}"),
        )
    };
    let (warn, crit) = value.split_once(',').ok_or_else(bad)?;
    let (warn, crit) = (warn.parse::<u8>().map_err(|_| bad())?, crit.parse::<u8>().map_err(|_| bad())?);
    if warn == 0 || warn >= crit || crit > 100 {
        return Err(bad());
    }
    Ok(UseLevels { warn, crit })
}

/// The root device initramfs hooks should wait for: `None` without
/// `cowroot=`. A command line cowroot cannot use still names a root device
/// (`cowroot.name` if valid, else the default), so the boot waits for it
/// and the setup's failure, with its message and onfail policy, is what
/// the user sees.
pub fn root_device_name(params: &[Param]) -> Option<DeviceName> {
    if let Ok(Some(cfg)) = Config::from_params(params) {
        return Some(cfg.name);
    }
    params.iter().any(|p| p.key == "cowroot").then(|| {
        params
            .iter()
            .rev()
            .find(|p| p.key == "cowroot.name")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| DeviceName::parse(v).ok())
            .unwrap_or_default()
    })
}

/// The `cowroot.onfail` policy, read on its own so that a failure caused by
/// some other bad key still gets the policy the user asked for; anything
/// unreadable means `shell`, the safe choice.
pub fn onfail_policy(params: &[Param]) -> OnFail {
    match params.iter().rev().find(|p| p.key == "cowroot.onfail").and_then(|p| p.value.as_deref()) {
        Some("halt") => OnFail::Halt,
        Some("ro") => OnFail::ReadOnly,
        // The agent itself falls back to a RAM pool; if that fails too,
        // the safe choice.
        _ => OnFail::Shell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::split;

    fn parse(line: &str) -> Result<Option<Config>> {
        Config::from_params(&split(line))
    }

    #[test]
    fn absent_cowroot_means_nothing_to_do() {
        for line in ["", "root=/dev/sda1 ro quiet\n", "cowpool=/dev/vdc", "cowroot.reset=1"] {
            assert_eq!(parse(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn full_cmdlines_parse() {
        let cfg = parse(
            "BOOT_IMAGE=/vmlinuz root=UUID=abcd ro cowroot=/images//root.img cowroot.dev=LABEL=images \
             cowpool=PARTUUID=0a1b-02 cowroot.reset=1 cowroot.name=kiosk cowroot.timeout=5 \
             cowroot.onfail=halt cowroot.debug cowroot.fstype=ext4\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(cfg.source, Source::File("/images/root.img".into()));
        assert_eq!(cfg.host_dev, Some(DevSpec::Label("images".into())));
        assert_eq!(cfg.host_fstype.as_deref(), Some("ext4"));
        assert_eq!(cfg.pool, PoolSpec::Device(DevSpec::PartUuid("0a1b-02".into())));
        assert!(cfg.reset && cfg.debug);
        assert_eq!(cfg.name.as_str(), "kiosk");
        assert_eq!(cfg.timeout_secs, 5);
        assert_eq!(cfg.onfail, OnFail::Halt);

        let cfg = parse("cowroot=UUID=1234-ABCD cowpool=/dev/vdc").unwrap().unwrap();
        assert_eq!(cfg.source, Source::Device(DevSpec::Uuid("1234-ABCD".into())));
        assert_eq!(cfg.name.as_str(), "cowroot");
        assert_eq!(cfg.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert!(!cfg.reset);
        assert_eq!(cfg.onfail, OnFail::Shell);

        let cfg = parse("cowroot=\"/my images/r.img\" cowroot.dev=/dev/vdb cowpool=vg0/thin").unwrap().unwrap();
        assert_eq!(cfg.source, Source::File("/my images/r.img".into()));
        assert_eq!(cfg.pool, PoolSpec::Lvm { vg: "vg0".into(), lv: "thin".into() });

        let cfg = parse("cowroot=/dev/vdb cowpool=ram:512M").unwrap().unwrap();
        assert_eq!(cfg.pool, PoolSpec::Ram(Some(RamSize::Bytes(Bytes(512 << 20)))));
        let cfg = parse("cowroot=/dev/vdb cowpool=ram:25% cowroot.mode=volatile cowroot.crypt=random cowroot.size=20G cowroot.onchange=reset cowroot.warn=70,90").unwrap().unwrap();
        assert_eq!(cfg.pool, PoolSpec::Ram(Some(RamSize::PercentOfRam(25))));
        assert_eq!(cfg.mode, RootMode::Volatile);
        assert!(cfg.crypt_random && cfg.pool_is_throwaway());
        assert_eq!(cfg.size, Some(Bytes(20 << 30)));
        assert_eq!(cfg.onchange, OnChange::Reset);
        assert_eq!(cfg.levels, UseLevels { warn: 70, crit: 90 });
        let cfg = parse("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.onfail=ram").unwrap().unwrap();
        assert_eq!(
            (cfg.onfail, cfg.mode, cfg.levels, cfg.onchange),
            (OnFail::Ram, RootMode::Persist, UseLevels { warn: 80, crit: 95 }, OnChange::Refuse)
        );
        assert!(!cfg.pool_is_throwaway());
        let cfg = parse("cowroot=PARTLABEL=root\\ a cowpool=ram").unwrap().unwrap();
        assert_eq!(cfg.pool, PoolSpec::Ram(None));
        assert_eq!(cfg.source, Source::Device(DevSpec::PartLabel("root\\".into())));
    }

    #[test]
    fn volumes_repeat_and_need_a_pool_that_survives_boots() {
        let cfg = parse("cowroot=/dev/vda cowpool=/dev/vdb cowroot.volume=home:1G:/home cowroot.mode=volatile cowroot.volume=log:512M:/var/log:xfs")
            .unwrap()
            .unwrap();
        let names: Vec<&str> = cfg.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["home", "log"]);
        for (extra, other) in [("cowpool=ram", "cowpool"), ("cowroot.crypt=random", "cowroot.crypt")] {
            let err = parse(&format!("cowroot=/dev/vda cowpool=/dev/vdb cowroot.volume=home:1G:/home {extra}"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("cowroot.volume:") && err.contains(other), "{extra}: {err}");
        }
        let err = parse("cowroot=/dev/vda cowpool=/dev/vdb cowroot.volume=home:1G:/home cowroot.volume=home:2G:/srv")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cowroot.volume:") && err.contains("share"), "{err}");
        let err = parse("cowroot=/dev/vda cowpool=/dev/vdb cowroot.volume").unwrap_err().to_string();
        assert!(err.starts_with("cowroot.volume:"), "{err}");
    }

    #[test]
    fn last_duplicate_wins() {
        let cfg = parse("cowroot=/dev/vda cowpool=/dev/vdb cowroot.reset=1 cowroot.reset=0 cowroot=/dev/vdd")
            .unwrap()
            .unwrap();
        assert_eq!(cfg.source, Source::Device(DevSpec::Path("/dev/vdd".into())));
        assert!(!cfg.reset);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("cowroot=/a.img cowpool=/dev/vdc", "cowroot.dev"),
            ("cowroot=/dev/vdb", "cowpool"),
            ("cowroot=/dev/vdb cowpool=", "cowpool"),
            ("cowroot=/dev/vdb cowpool", "cowpool"),
            ("cowroot= cowpool=/dev/vdc", "cowroot"),
            ("cowroot cowpool=/dev/vdc", "cowroot"),
            ("cowroot=images/root.img cowroot.dev=/dev/vdb cowpool=/dev/vdc", "cowroot"),
            ("cowroot=/../etc/shadow cowroot.dev=/dev/vdb cowpool=/dev/vdc", "cowroot"),
            ("cowroot=/ cowroot.dev=/dev/vdb cowpool=/dev/vdc", "cowroot"),
            ("cowroot=/dev/ cowpool=/dev/vdc", "cowroot"),
            ("cowroot=/dev/../x cowpool=/dev/vdc", "cowroot"),
            ("cowroot=LABEL= cowpool=/dev/vdc", "cowroot"),
            ("cowroot=/dev/vdb cowroot.dev=/dev/vdc cowpool=/dev/vdd", "cowroot.dev"),
            ("cowroot=/a.img cowroot.dev=images cowpool=/dev/vdd", "cowroot.dev"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.reset=2", "cowroot.reset"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.timeout=-1", "cowroot.timeout"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.timeout=ten", "cowroot.timeout"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.timeout=99999999", "cowroot.timeout"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.timeout=", "cowroot.timeout"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.name=a/b", "cowroot.name"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.name=", "cowroot.name"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.onfail=reboot", "cowroot.onfail"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.debug=maybe", "cowroot.debug"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.fstype=ext4;rm", "cowroot.fstype"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.rest=1", "cowroot.rest"),
            ("cowroot=/dev/vdb cowpool=vg0/lv/x", "cowpool"),
            ("cowroot=/dev/vdb cowpool=ram:0", "cowpool"),
            ("cowroot=/dev/vdb cowpool=ram:lots", "cowpool"),
            ("cowroot=/dev/vdb cowpool=ram:0%", "cowpool"),
            ("cowroot=/dev/vdb cowpool=ram:101%", "cowpool"),
            ("cowroot=/dev/vdb cowpool=ram:4K", "cowpool"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.mode=frost", "cowroot.mode"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.crypt=aes", "cowroot.crypt"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.size=big", "cowroot.size"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.size=0", "cowroot.size"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.onchange=ignore", "cowroot.onchange"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.warn=95,80", "cowroot.warn"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.warn=80", "cowroot.warn"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.warn=80,101", "cowroot.warn"),
            ("cowroot=/dev/vdb cowpool=ram cowroot.mode=frozen", "cowroot.mode"),
            ("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.crypt=random cowroot.mode=frozen", "cowroot.mode"),
            ("cowroot=/dev/vdb cowpool=ram cowroot.onfail=ram", "cowroot.onfail"),
            ("cowroot=/dev/vdb cowpool=\"/dev/vd\nc\"", "cowpool"),
            // An unknown key is an error even without cowroot=.
            ("cowroot.typo=1", "cowroot.typo"),
        ];
        for (line, key) in cases {
            let err = parse(line).expect_err(line);
            match &err {
                Error::Config { key: k, .. } => assert_eq!(k, key, "{line}: {err}"),
                other => panic!("{line}: unexpected {other:?}"),
            }
            assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_only_matter_in_our_keys() {
        let bytes = |b: &[u8]| Config::from_params(&crate::cmdline::split_bytes(b));
        let cfg = bytes(b"root=/dev/\xff quiet=\xc3 cowroot=/dev/vdb cowpool=/dev/vdc").unwrap().unwrap();
        assert_eq!(cfg.source, Source::Device(DevSpec::Path("/dev/vdb".into())));
        assert_eq!(bytes(b"root=/dev/\xff\xfe ro"), Ok(None));
        for line in [&b"cowroot=/dev/vd\xffb cowpool=/dev/vdc"[..], b"cowroot=/dev/vdb cowpool=/dev/\xe9"] {
            let err = bytes(line).unwrap_err();
            assert!(err.to_string().contains("not UTF-8"), "{err}");
        }
        // The root device is still named, so the initramfs waits for it and
        // fails closed instead of mounting root=.
        let params = crate::cmdline::split_bytes(b"cowroot=/dev/vd\xffb cowpool=/dev/vdc");
        assert_eq!(root_device_name(&params).map(|n| n.to_string()), Some("cowroot".into()));
    }

    #[test]
    fn root_device_is_named_even_when_setup_will_fail() {
        let name = |line: &str| root_device_name(&split(line)).map(|n| n.to_string());
        assert_eq!(name("root=/dev/sda1 ro"), None);
        assert_eq!(name("cowroot=/dev/vdb cowpool=/dev/vdc"), Some("cowroot".into()));
        assert_eq!(name("cowroot=/dev/vdb cowpool=/dev/vdc cowroot.name=kiosk"), Some("kiosk".into()));
        assert_eq!(name("cowroot=/dev/vdb cowroot.name=kiosk cowroot.timeout=x"), Some("kiosk".into()));
        assert_eq!(name("cowroot=/dev/vdb cowroot.name=a/b"), Some("cowroot".into()));
    }

    #[test]
    fn onfail_policy_survives_other_bad_keys() {
        for (line, want) in [
            ("cowroot=/dev/vdb cowroot.onfail=ro cowroot.timeout=x", OnFail::ReadOnly),
            ("cowroot.onfail=halt", OnFail::Halt),
            ("cowroot.onfail=ro cowroot.onfail=shell", OnFail::Shell),
            ("cowroot.onfail=explode", OnFail::Shell),
            ("cowroot.onfail", OnFail::Shell),
            ("", OnFail::Shell),
        ] {
            assert_eq!(onfail_policy(&split(line)), want, "{line}");
        }
    }

    #[test]
    fn an_nbd_origin_is_served_and_takes_no_host_device() {
        let cfg = parse("cowroot=nbd://10.0.2.2:10810/lab cowpool=/dev/vda").unwrap().unwrap();
        let server = crate::nbd::NbdServer { host: "10.0.2.2".into(), port: 10810, export: "lab".into() };
        assert_eq!(cfg.source, Source::Nbd(server));
        let err = parse("cowroot=nbd://10.0.2.2/lab cowroot.dev=/dev/vdb cowpool=/dev/vda").unwrap_err();
        assert!(err.to_string().starts_with("cowroot.dev:"), "{err}");
        let err = parse("cowroot=nbd://10.0.2.2 cowpool=/dev/vda").unwrap_err();
        assert!(err.to_string().contains("export name is missing"), "{err}");
    }
}
