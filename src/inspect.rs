//! `cowroot inspect DEVICE`: what the pool header copies on a device say,
//! read-only, without device-mapper (works on an image of a pool, too).

use crate::error::Result;
use crate::header::{Copies, OtherCopy, SLOT_OFFSETS};
use crate::pool::{PoolState, END_PROBE_BYTES};
use crate::probe;
use crate::signature::PROBE_BYTES;
use crate::units::Bytes;
use std::fmt::Write as _;

pub fn inspect(device: &str) -> Result<String> {
    let size = probe::size_of(device)?;
    let start = probe::read_start(device, PROBE_BYTES)?;
    let end = probe::read_end(device, size.0, END_PROBE_BYTES, start.len() as u64)?;
    let state = crate::pool::classify_pool(&start, &end, size.0);
    let mut out = format!("{device}: {}\n", Bytes(size.0));
    let verdict = match &state {
        PoolState::Blank => "blank: `cowroot boot` would format it".to_string(),
        PoolState::Ours { slot, other: OtherCopy::InSync, .. } => {
            format!("a cowroot pool; copy {slot} is the newest, both copies agree")
        }
        PoolState::Ours { slot, other: OtherCopy::Stale, .. } => format!(
            "a cowroot pool; copy {slot} is the newest, copy {} is older (an interrupted update, or a pool of \
             cowroot 0.1) and is brought up to date by the next boot",
            1 - slot
        ),
        PoolState::Ours { slot, other: OtherCopy::Damaged(fault), .. } => format!(
            "a cowroot pool; copy {slot} is in use, copy {} is damaged ({fault}) and is rewritten by the next \
             header write",
            1 - slot
        ),
        PoolState::Foreign(found) => format!("holds {found}"),
        PoolState::Unrecognised => "holds data cowroot does not recognise".into(),
        PoolState::BothCopiesDamaged([a, b]) => format!("both header copies are damaged ({a}; {b})"),
        PoolState::NewerVersion(v) => format!("a pool of header version {v}, newer than this cowroot"),
    };
    let _ = writeln!(out, "verdict: {verdict}");
    let slot = |i: usize| {
        let offset = SLOT_OFFSETS[i] as usize;
        start.get(offset..offset + crate::header::SLOT_BYTES).unwrap_or(&[])
    };
    for (i, copy) in Copies::read([slot(0), slot(1)]).0.iter().enumerate() {
        match copy {
            Ok(h) => {
                let _ = writeln!(
                    out,
                    "copy {i} (byte {}): version {}, seq {}, generation {}, active thin {}, leftover thin {}, \
                     next thin {}, transaction {}, flags {:#x}, block {}, metadata at sector {} ({}), data at sector {} ({}), \
                     origin {}",
                    SLOT_OFFSETS[i],
                    h.version,
                    h.seq,
                    h.generation,
                    h.active_thin,
                    h.garbage_thin,
                    h.next_thin,
                    h.transaction,
                    h.flags,
                    Bytes(h.block_sectors as u64 * 512),
                    h.meta.start,
                    h.meta.len.bytes(),
                    h.data.start,
                    h.data.len.bytes(),
                    h.origin
                        .map(|o| format!("{} bytes, {}", o.size_bytes, crate::fingerprint::short_digest(&o)))
                        .unwrap_or_else(|| "none".into())
                );
                if h.base_thin != 0 || h.garbage_thin2 != 0 {
                    let _ =
                        writeln!(out, "  frozen base thin {}, second leftover thin {}", h.base_thin, h.garbage_thin2);
                }
                for v in &h.volumes {
                    let _ = writeln!(
                        out,
                        "  volume {}: thin {}, {}, {}",
                        v.name,
                        v.thin,
                        v.sectors.bytes(),
                        if v.formatted { "formatted" } else { "not formatted yet" }
                    );
                }
                for c in &h.checkpoints {
                    let _ = writeln!(
                        out,
                        "  checkpoint {}: thin {}, {}, generation {}, taken at {} s{}",
                        c.name,
                        c.thin,
                        c.kind.as_str(),
                        c.generation,
                        c.created,
                        if c.deleting { ", being deleted" } else { "" }
                    );
                }
            }
            Err(fault) => {
                let _ = writeln!(out, "copy {i} (byte {}): unreadable: {fault}", SLOT_OFFSETS[i]);
            }
        }
    }
    Ok(out)
}
