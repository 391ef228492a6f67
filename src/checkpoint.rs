//! Checkpoints: named thin snapshots of the root that resets, frozen boots
//! and rollbacks leave alone until deleted. `cowroot checkpoint create`
//! takes one of the running root, `cowroot.keep=N` keeps what a reset
//! replaced as one, and `cowroot rollback NAME` makes the next boot
//! continue from one. This module holds the record the pool header keeps;
//! the plans are in `plan`.

use crate::header::OriginId;
use crate::units::Sectors;
use crate::volume::VolumeName;

/// The most checkpoints one pool records (the header has room for them).
pub const MAX_CHECKPOINTS: usize = 24;
/// Bytes of one record in the header.
pub const RECORD_BYTES: usize = 96;

/// A checkpoint's name: the same rules as a volume's (1 to 24 of letters,
/// digits, `_` and `-`).
pub type CheckpointName = VolumeName;

pub fn parse_name(text: &str) -> Result<CheckpointName, String> {
    VolumeName::parse_as(text, "checkpoint")
}

/// Why a checkpoint exists: `cowroot.keep` trims only those a reset made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// `cowroot checkpoint create`.
    Manual,
    /// The state a reset replaced, kept by `cowroot.keep=N`.
    Reset,
    /// The state a rollback replaced.
    Rollback,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Manual => "manual",
            CheckpointKind::Reset => "reset",
            CheckpointKind::Rollback => "rollback",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            CheckpointKind::Manual => 0,
            CheckpointKind::Reset => 1,
            CheckpointKind::Rollback => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<CheckpointKind> {
        [CheckpointKind::Manual, CheckpointKind::Reset, CheckpointKind::Rollback].into_iter().find(|k| k.code() == code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub name: CheckpointName,
    pub thin: u32,
    pub kind: CheckpointKind,
    /// Being deleted: the thin is deleted (again, if need be) by the next
    /// cleanup or boot, then the record goes. Never listed, never restored.
    pub deleting: bool,
    /// Seconds since the epoch when it was taken.
    pub created: u64,
    /// The generation the root was in.
    pub generation: u64,
    /// The root's size when grown by `cowroot.size` (0: the origin's).
    pub root_sectors: Sectors,
    /// The origin its changes were made on: a rollback onto another image
    /// is refused.
    pub origin: OriginId,
}

/// A name for a checkpoint cowroot makes itself (`reset-g3`), not taken
/// by another one; with the thin id appended when it is.
pub fn auto_name(prefix: &str, generation: u64, thin: u32, taken: &[CheckpointRecord]) -> CheckpointName {
    let free = |text: &str| parse_name(text).ok().filter(|n| taken.iter().all(|c| c.name != *n));
    // The table holds at most MAX_CHECKPOINTS names: one of these is free.
    free(&format!("{prefix}-g{generation}"))
        .or_else(|| free(&format!("{prefix}-t{thin}")))
        .or_else(|| (1..=MAX_CHECKPOINTS + 1).find_map(|n| free(&format!("t{thin}-{n}"))))
        .unwrap_or_else(|| parse_name("checkpoint").unwrap_or_else(|_| unreachable!()))
}

/// "3 h", "2 d": how long ago `created` was, at `now`.
pub fn age(created: u64, now: u64) -> String {
    let secs = now.saturating_sub(created);
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, thin: u32) -> CheckpointRecord {
        CheckpointRecord {
            name: parse_name(name).unwrap(),
            thin,
            kind: CheckpointKind::Manual,
            deleting: false,
            created: 0,
            generation: 1,
            root_sectors: Sectors(0),
            origin: OriginId { size_bytes: 4096, digest: [3; 32] },
        }
    }

    #[test]
    fn auto_names_avoid_taken_ones() {
        assert_eq!(auto_name("reset", 3, 9, &[]).as_str(), "reset-g3");
        assert_eq!(auto_name("reset", 3, 9, &[record("reset-g3", 4)]).as_str(), "reset-t9");
        let taken = [record("reset-g3", 4), record("reset-t9", 5), record("t9-1", 6)];
        assert_eq!(auto_name("reset", 3, 9, &taken).as_str(), "t9-2");
    }

    #[test]
    fn ages_read_in_a_sensible_unit() {
        assert_eq!(age(100, 130), "30 s");
        assert_eq!(age(0, 600), "10 min");
        assert_eq!(age(0, 3 * 3600), "3 h");
        assert_eq!(age(0, 5 * 86400), "5 d");
        assert_eq!(age(10, 0), "0 s");
    }

    #[test]
    fn kinds_round_trip_their_codes() {
        for kind in [CheckpointKind::Manual, CheckpointKind::Reset, CheckpointKind::Rollback] {
            assert_eq!(CheckpointKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(CheckpointKind::from_code(3), None);
    }
}
