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
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
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
        assert_eq!(Bytes(100).to_string(), "100 B");
        assert_eq!(Sectors(3).bytes(), Bytes(1536));
        assert_eq!(Bytes(1537).sectors(), Sectors(3));
    }
}
