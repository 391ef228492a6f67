//! Device-mapper table parameters as types that print to, and parse from,
//! the kernel's text form, so tests can round-trip them without root.
//!
//! The device fields are generic: the executor fills them with MAJ:MIN
//! (`DevNum`), the dry run with the shell words a person would type, so
//! both print the very same table. (devicemapper-rs has similar parameter
//! types, but they hold device numbers only, which a dry run does not have.)

use crate::units::{Sectors, Tenths};
use std::fmt;
use std::str::FromStr;

/// A block device as the kernel's tables name it: MAJ:MIN (the dm major is
/// dynamic, so names are never guessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linear<D = DevNum> {
    pub dev: D,
    pub offset: Sectors,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinPool<D = DevNum> {
    pub meta: D,
    pub data: D,
    pub block_sectors: u32,
    pub low_water_blocks: u64,
    /// Invariant 4: a full pool fails writes at once instead of queueing.
    pub error_if_no_space: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thin<D = DevNum> {
    pub pool: D,
    pub id: u32,
    pub external_origin: Option<D>,
}

/// A dm-crypt layer (`cowroot.crypt=random`): `crypt::CIPHER`, IV offset 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypt<D = DevNum> {
    pub key: KeyText,
    pub dev: D,
    pub offset: Sectors,
}

/// A crypt table's key as printed.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyText {
    /// The key itself, in hex: only ever sent to the kernel.
    Hex(String),
    /// A shell expansion standing for it (the dry run).
    Shell(&'static str),
    /// Not known (parsed from a live table, which cowroot does not read
    /// keys from).
    Hidden,
}

/// One table line's target and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<D = DevNum> {
    Linear(Linear<D>),
    ThinPool(ThinPool<D>),
    Thin(Thin<D>),
    Crypt(Crypt<D>),
}

impl<D> Target<D> {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Linear(_) => "linear",
            Target::ThinPool(_) => "thin-pool",
            Target::Thin(_) => "thin",
            Target::Crypt(_) => "crypt",
        }
    }
}

impl<D: fmt::Display> fmt::Display for Target<D> {
    /// The parameters, as `dmsetup table` prints them after the target.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Linear(t) => t.fmt(f),
            Target::ThinPool(t) => t.fmt(f),
            Target::Thin(t) => t.fmt(f),
            Target::Crypt(t) => t.fmt(f),
        }
    }
}

impl fmt::Debug for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyText::Hex(_) => f.write_str("Hex(secret)"),
            KeyText::Shell(expansion) => write!(f, "Shell({expansion})"),
            KeyText::Hidden => f.write_str("Hidden"),
        }
    }
}

impl<D: fmt::Display> fmt::Display for Crypt<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            KeyText::Hex(hex) => hex.as_str(),
            KeyText::Shell(expansion) => expansion,
            KeyText::Hidden => "-",
        };
        write!(f, "{} {key} 0 {} {}", crate::crypt::CIPHER, self.dev, self.offset)
    }
}

impl FromStr for Crypt {
    type Err = ParseError;
    /// `CIPHER KEY IV_OFFSET DEV OFFSET [FEATURES]`; the key is not kept.
    fn from_str(s: &str) -> Result<Crypt, ParseError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            [_cipher, _key, _iv, dev, offset, ..] => Ok(Crypt {
                key: KeyText::Hidden,
                dev: dev.parse()?,
                // Never the line itself in an error: it holds the key.
                offset: Sectors(
                    offset.parse().map_err(|_| ParseError(format!("bad offset {offset:?} in a crypt table")))?,
                ),
            }),
            _ => Err(ParseError("crypt wants at least 5 words".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevNum {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<DevNum, ParseError> {
        let (major, minor) = s.split_once(':').ok_or_else(|| ParseError(format!("not MAJ:MIN: {s:?}")))?;
        let num = |t: &str| t.parse::<u32>().map_err(|_| ParseError(format!("not MAJ:MIN: {s:?}")));
        Ok(DevNum { major: num(major)?, minor: num(minor)? })
    }
}

impl<D: fmt::Display> fmt::Display for Linear<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.dev, self.offset)
    }
}

impl FromStr for Linear {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Linear, ParseError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            [dev, offset] => Ok(Linear {
                dev: dev.parse()?,
                offset: Sectors(offset.parse().map_err(|_| ParseError(format!("bad offset in {s:?}")))?),
            }),
            _ => Err(ParseError(format!("linear wants 2 words: {s:?}"))),
        }
    }
}

impl<D: fmt::Display> fmt::Display for ThinPool<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.meta, self.data, self.block_sectors, self.low_water_blocks)?;
        if self.error_if_no_space {
            write!(f, " 1 error_if_no_space")
        } else {
            write!(f, " 0")
        }
    }
}

impl FromStr for ThinPool {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<ThinPool, ParseError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.len() < 5 {
            return Err(ParseError(format!("thin-pool wants at least 5 words: {s:?}")));
        }
        let num = |t: &str| t.parse::<u64>().map_err(|_| ParseError(format!("bad number {t:?} in {s:?}")));
        let count = num(words[4])? as usize;
        let features = &words[5..];
        if features.len() != count {
            return Err(ParseError(format!("feature count {count} does not match {s:?}")));
        }
        Ok(ThinPool {
            meta: words[0].parse()?,
            data: words[1].parse()?,
            block_sectors: num(words[2])? as u32,
            low_water_blocks: num(words[3])?,
            error_if_no_space: features.contains(&"error_if_no_space"),
        })
    }
}

impl<D: fmt::Display> fmt::Display for Thin<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pool, self.id)?;
        if let Some(origin) = &self.external_origin {
            write!(f, " {origin}")?;
        }
        Ok(())
    }
}

impl FromStr for Thin {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Thin, ParseError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let (pool, id, origin) = match words.as_slice() {
            [pool, id] => (pool, id, None),
            [pool, id, origin] => (pool, id, Some(origin.parse()?)),
            _ => return Err(ParseError(format!("thin wants 2 or 3 words: {s:?}"))),
        };
        Ok(Thin {
            pool: pool.parse()?,
            id: id.parse().map_err(|_| ParseError(format!("bad thin id in {s:?}")))?,
            external_origin: origin,
        })
    }
}

/// The kernel's thin-pool status line (see thin-provisioning.rst).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub transaction_id: u64,
    pub meta_used: u64,
    pub meta_total: u64,
    pub data_used: u64,
    pub data_total: u64,
    /// `rw`, `ro`, `out_of_data_space` or `Fail`.
    pub mode: String,
    pub needs_check: bool,
}

impl PoolStatus {
    /// Percent of the data blocks in use.
    pub fn data_percent(&self) -> Tenths {
        percent(self.data_used, self.data_total)
    }

    pub fn meta_percent(&self) -> Tenths {
        percent(self.meta_used, self.meta_total)
    }

    /// The metadata area is (nearly) full: the kernel keeps a reserve and
    /// switches the pool to read-only before the last block is used.
    pub fn metadata_full(&self) -> bool {
        self.meta_total > 0 && self.meta_used.saturating_add(self.meta_total / 64 + 1) >= self.meta_total
    }
}

/// `used` in percent of `total`, to a tenth (0 for an empty total).
pub fn percent(used: u64, total: u64) -> Tenths {
    Tenths::ratio(used.saturating_mul(100), total)
}

/// Whether `used` is at least `level` percent of `total`, exactly.
pub fn at_least_percent(used: u64, total: u64, level: u8) -> bool {
    total > 0 && u128::from(used) * 100 >= u128::from(total) * u128::from(level)
}

impl FromStr for PoolStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<PoolStatus, ParseError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        // The kernel prints a bare `Fail` for a failed pool and `Error`
        // when it cannot read the pool's state.
        if let Some(&word @ ("Fail" | "Error")) = words.first() {
            return Ok(PoolStatus {
                transaction_id: 0,
                meta_used: 0,
                meta_total: 0,
                data_used: 0,
                data_total: 0,
                mode: word.into(),
                needs_check: false,
            });
        }
        if words.len() < 5 {
            return Err(ParseError(format!("short thin-pool status: {s:?}")));
        }
        let pair = |t: &str| -> Result<(u64, u64), ParseError> {
            let (a, b) = t.split_once('/').ok_or_else(|| ParseError(format!("bad used/total {t:?}")))?;
            let n = |x: &str| x.parse::<u64>().map_err(|_| ParseError(format!("bad used/total {t:?}")));
            Ok((n(a)?, n(b)?))
        };
        let (meta_used, meta_total) = pair(words[1])?;
        let (data_used, data_total) = pair(words[2])?;
        Ok(PoolStatus {
            transaction_id: words[0].parse().map_err(|_| ParseError(format!("bad transaction id in {s:?}")))?,
            meta_used,
            meta_total,
            data_used,
            data_total,
            mode: words[4].to_string(),
            needs_check: words.contains(&"needs_check"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_tables_print_their_key_and_parse_without_it() {
        let t = Target::Crypt(Crypt {
            key: KeyText::Hex("00ff".into()),
            dev: DevNum { major: 7, minor: 1 },
            offset: Sectors(2048),
        });
        assert_eq!(t.to_string(), "aes-xts-plain64 00ff 0 7:1 2048");
        assert_eq!(t.kind(), "crypt");
        let live: Crypt = "aes-xts-plain64 :64:logon:x 0 254:3 2048 1 allow_discards".parse().unwrap();
        assert_eq!(
            (live.key, live.dev, live.offset),
            (KeyText::Hidden, DevNum { major: 254, minor: 3 }, Sectors(2048))
        );
        let err = "aes-xts-plain64 deadbeef 0 254:3 x".parse::<Crypt>().unwrap_err();
        assert!(!err.0.contains("deadbeef"), "{}", err.0);
    }

    #[test]
    fn tables_round_trip() {
        let a = DevNum { major: 254, minor: 3 };
        let b = DevNum { major: 7, minor: 0 };
        let linear = Linear { dev: DevNum { major: 252, minor: 16 }, offset: Sectors(2048) };
        assert_eq!(linear.to_string(), "252:16 2048");
        assert_eq!(linear.to_string().parse::<Linear>(), Ok(linear));
        let pool = ThinPool { meta: a, data: b, block_sectors: 128, low_water_blocks: 0, error_if_no_space: true };
        assert_eq!(pool.to_string(), "254:3 7:0 128 0 1 error_if_no_space");
        assert_eq!(pool.to_string().parse::<ThinPool>(), Ok(pool));
        let thin = Thin { pool: a, id: 5, external_origin: Some(b) };
        assert_eq!(thin.to_string(), "254:3 5 7:0");
        assert_eq!(thin.to_string().parse::<Thin>(), Ok(thin));
        let bare = Thin { pool: a, id: 1, external_origin: None };
        assert_eq!(bare.to_string().parse::<Thin>(), Ok(bare));
        for bad in ["", "254:3", "254-3 1", "254:3 x", "1:2 3 4:5 6"] {
            assert!(bad.parse::<Thin>().is_err(), "{bad:?}");
        }
        assert!("1:2 3:4 128 0 2 error_if_no_space".parse::<ThinPool>().is_err());
    }

    #[test]
    fn pool_status_parses() {
        let s: PoolStatus = "1 30/512 100/4000 - rw discard_passdown error_if_no_space - 1024".parse().unwrap();
        assert_eq!((s.meta_used, s.meta_total, s.data_used, s.data_total), (30, 512, 100, 4000));
        assert_eq!(s.mode, "rw");
        assert!(!s.needs_check);
        let s: PoolStatus =
            "0 30/512 4000/4000 - out_of_data_space discard_passdown error_if_no_space needs_check 1024"
                .parse()
                .unwrap();
        assert_eq!(s.mode, "out_of_data_space");
        assert!(s.needs_check);
        assert_eq!("Fail".parse::<PoolStatus>().unwrap().mode, "Fail");
        assert_eq!("Error".parse::<PoolStatus>().unwrap().mode, "Error");
        assert!("0 x/1 1/1 - rw".parse::<PoolStatus>().is_err());
        let s: PoolStatus = "7 30/512 1000/4000 - rw x".parse().unwrap();
        assert_eq!((s.transaction_id, s.data_percent(), s.metadata_full()), (7, Tenths(250), false));
        let full: PoolStatus = "7 510/512 1000/4000 - ro x".parse().unwrap();
        assert!(full.metadata_full());
        assert_eq!(percent(1, 0), Tenths(0));
        assert!(at_least_percent(95, 100, 95) && !at_least_percent(9499, 10000, 95) && !at_least_percent(1, 0, 0));
    }
}
