//! Sizes as newtypes so sectors, bytes and blocks are never mixed up.

use std::fmt;

pub const SECTOR: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Sectors(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Bytes(pub u64);

impl Sectors {
    pub fn bytes(self) -> Bytes {
        Bytes(self.0 * SECTOR)
    }
}

impl Bytes {
    /// Whole sectors, rounding down.
    pub fn sectors(self) -> Sectors {
        Sectors(self.0 / SECTOR)
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Bytes {
    /// Human units, one decimal, binary prefixes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut unit = 0;
        while unit + 1 < UNITS.len() && self.0 >> (10 * (unit + 1)) > 0 {
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{} {}", Tenths::ratio(self.0, 1 << (10 * unit)), UNITS[unit])
        }
    }
}

/// A number with one decimal, in tenths: shown as `12.3`. Integer
/// arithmetic keeps float formatting (12 KiB of code) out of the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tenths(pub u64);

impl Tenths {
    /// `num / den`, rounded half up to a tenth; 0 for a zero `den`.
    pub fn ratio(num: u64, den: u64) -> Tenths {
        if den == 0 {
            return Tenths(0);
        }
        let (num, den) = (u128::from(num), u128::from(den));
        Tenths(((num * 20 + den) / (den * 2)).min(u128::from(u64::MAX)) as u64)
    }
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

/// Parses `SIZE` with an optional K/M/G/T suffix (binary, optional `iB`/`B`).
pub fn parse_size(text: &str) -> Option<Bytes> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits_end == 0 {
        return None;
    }
    let number: u64 = text[..digits_end].parse().ok()?;
    let shift = match text[digits_end..].to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift).map(Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        let cases = [
            ("512", Some(512)),
            ("64K", Some(65536)),
            ("64KiB", Some(65536)),
            ("2m", Some(2 << 20)),
            ("1G", Some(1 << 30)),
            ("", None),
            ("K", None),
            ("12X", None),
            ("-1", None),
            ("99999999999999999999T", None),
            ("18446744073709551615T", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), want.map(Bytes), "{text:?}");
        }
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1024).to_string(), "1.0 KiB");
        assert_eq!(Bytes((1 << 20) - 1).to_string(), "1024.0 KiB");
        assert_eq!(Bytes(253 << 20).to_string(), "253.0 MiB");
        assert_eq!(Bytes(3 << 40).to_string(), "3.0 TiB");
        assert_eq!(Bytes(5 << 50).to_string(), "5120.0 TiB");
        assert_eq!(Tenths::ratio(1, 3).to_string(), "0.3");
        assert_eq!(Tenths::ratio(1, 20).to_string(), "0.1");
        assert_eq!(Tenths::ratio(u64::MAX, 1).0, u64::MAX);
        assert_eq!(Bytes(100).to_string(), "100 B");
        assert_eq!(Sectors(3).bytes(), Bytes(1536));
        assert_eq!(Bytes(1537).sectors(), Sectors(3));
    }
}
