//! The plans of the checkpoint commands on the running system: take one of
//! the running root, delete one, roll back to one. Each follows the rule
//! of the boot's plans: a new thin is reserved in the header before the
//! kernel makes it and recorded after, and a thin is forgotten (marked
//! for deletion) before the kernel deletes it, so a power cut anywhere
//! leaves a header that names only thins that exist, and at most ids that
//! the next cleanup or boot deletes.

use crate::checkpoint::{self, CheckpointKind, CheckpointName, CheckpointRecord, MAX_CHECKPOINTS};
use crate::error::{Error, Result};
use crate::header::{PoolHeader, FLAG_RESERVED, FLAG_RESET_NEXT_BOOT, MAX_THIN_ID};
use crate::plan::{require_bound, state_exhausted, HeaderState, Step};

/// The leftover slots must be free: the new thin's reservation takes one.
/// (The running root, dropped by `rollback --discard`, waits for the next
/// boot and is no obstacle.)
fn require_no_leftover(header: &HeaderState, in_use: u32) -> Result<()> {
    let h = &header.header;
    if h.garbage_thin != 0 || h.garbage_thin2 != 0 || h.checkpoints.iter().any(|c| c.deleting && c.thin != in_use) {
        return Err(Error::Refused(format!(
            "{} still has a leftover thin to delete; run `cowroot cleanup` first, then try again",
            header.device
        )));
    }
    Ok(())
}

fn find(header: &HeaderState, name: CheckpointName) -> Result<(usize, CheckpointRecord)> {
    header
        .header
        .checkpoints
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name && !c.deleting)
        .map(|(i, c)| (i, *c))
        .ok_or_else(|| {
            Error::Usage(format!("{} holds no checkpoint {name} (see `cowroot checkpoint list`)", header.device))
        })
}

/// Reserves the next thin id: the first write of every plan that makes one.
fn reserve(state: &mut HeaderState, steps: &mut Vec<Step>, why: &'static str) -> Result<u32> {
    let id = state.header.next_thin;
    if id > MAX_THIN_ID {
        return Err(state.exhausted("all 2^24 thin ids have been used"));
    }
    state.write(steps, false, why, |h| {
        h.next_thin = id + 1;
        h.garbage_thin = id;
        h.flags |= FLAG_RESERVED;
    })?;
    Ok(id)
}

fn full(header: &HeaderState) -> Error {
    Error::Refused(format!(
        "{} already records {MAX_CHECKPOINTS} checkpoints, the most a pool holds; delete one with `cowroot \
         checkpoint delete NAME` first",
        header.device
    ))
}

/// `cowroot checkpoint create NAME`: a snapshot of the thin the root runs
/// on (`in_use`), taken with the root suspended, recorded under `name`.
pub fn plan_checkpoint_create(
    header: &HeaderState,
    metadata_transaction: u64,
    in_use: u32,
    name: CheckpointName,
    now: u64,
) -> Result<Vec<Step>> {
    let h = &header.header;
    if let Some(taken) = h.checkpoints.iter().find(|c| c.name == name) {
        return Err(Error::Refused(format!(
            "{} already has a checkpoint {name} ({} old); pick another name, or delete it first",
            header.device,
            checkpoint::age(taken.created, now)
        )));
    }
    if h.checkpoints.len() >= MAX_CHECKPOINTS {
        return Err(full(header));
    }
    require_no_leftover(header, in_use)?;
    require_bound(header, metadata_transaction)?;
    let origin = h.origin.ok_or_else(|| Error::Inconsistent(format!("{}: no origin recorded", header.device)))?;
    // After a rollback in this boot the root runs on what is now a
    // checkpoint of its own: the new one is of the same generation.
    let generation = h.checkpoints.iter().find(|c| c.thin == in_use).map_or(h.generation, |c| c.generation);
    let root_sectors = h.checkpoints.iter().find(|c| c.thin == in_use).map_or(h.root_sectors, |c| c.root_sectors);
    let mut state = header.clone();
    let mut steps = Vec::new();
    let id = reserve(&mut state, &mut steps, "reserve thin id for a checkpoint")?;
    let next_txn =
        state.header.transaction_after(metadata_transaction).ok_or_else(|| state_exhausted(&header.device))?;
    steps.push(Step::SnapshotLive { id, of: in_use });
    steps.push(Step::SetTransactionId { from: metadata_transaction, to: next_txn });
    let record = CheckpointRecord {
        name,
        thin: id,
        kind: CheckpointKind::Manual,
        deleting: false,
        created: now,
        generation,
        root_sectors,
        origin,
    };
    state.write(&mut steps, false, "record a checkpoint", |h| {
        h.checkpoints.push(record);
        h.garbage_thin = 0;
        h.flags &= !FLAG_RESERVED;
        h.transaction = next_txn;
    })?;
    state.write(&mut steps, false, "mirror to the other copy", |_| {})?;
    Ok(steps)
}

/// `cowroot checkpoint delete NAME`: marks it for deletion, deletes its
/// thin, forgets it.
pub fn plan_checkpoint_delete(
    header: &HeaderState,
    metadata_transaction: u64,
    in_use: u32,
    name: CheckpointName,
) -> Result<Vec<Step>> {
    let (_, record) = find(header, name)?;
    if record.thin == in_use {
        return Err(Error::Refused(format!(
            "checkpoint {name} is what this boot's root runs on (a rollback kept it); delete it after the next boot"
        )));
    }
    require_bound(header, metadata_transaction)?;
    let mut state = header.clone();
    let mut steps = Vec::new();
    mark_deleting(&mut state, &mut steps, &[record.thin])?;
    steps.extend(deletions(&state.header, in_use));
    forget_deleted(&mut state, &mut steps, in_use)?;
    state.write(&mut steps, false, "mirror to the other copy", |_| {})?;
    Ok(steps)
}

/// Marks the checkpoints on `thins` as being deleted.
pub(crate) fn mark_deleting(state: &mut HeaderState, steps: &mut Vec<Step>, thins: &[u32]) -> Result<()> {
    state.write(steps, false, "mark checkpoints for deletion", |h| {
        for c in h.checkpoints.iter_mut().filter(|c| thins.contains(&c.thin)) {
            c.deleting = true;
        }
    })
}

/// The kernel's half of deleting what is marked (again, after a power cut:
/// missing is fine).
/// The one the root runs on (`in_use`: a `rollback --discard` marked it)
/// waits for the next boot; at boot `in_use` is 0.
pub(crate) fn deletions(header: &PoolHeader, in_use: u32) -> Vec<Step> {
    header
        .checkpoints
        .iter()
        .filter(|c| c.deleting && c.thin != in_use)
        .map(|c| Step::DeleteThinId { id: c.thin, missing_ok: true })
        .collect()
}

/// The header's half, once `deletions` ran.
pub(crate) fn forget_deleted(state: &mut HeaderState, steps: &mut Vec<Step>, in_use: u32) -> Result<()> {
    state.write(steps, false, "forget deleted checkpoints", |h| {
        h.checkpoints.retain(|c| !c.deleting || c.thin == in_use)
    })
}

/// What a rollback did, for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    pub steps: Vec<Step>,
    /// The checkpoint the replaced state was kept as, if it was.
    pub kept_as: Option<CheckpointName>,
    /// Whether a pending `cowroot reset` was cancelled by it.
    pub reset_cancelled: bool,
    /// The running root is what was kept: it goes on writing into it.
    pub kept_running: bool,
}

/// `cowroot rollback NAME`: the next boot continues from a new snapshot of
/// the checkpoint (the checkpoint itself stays, to roll back to again).
/// What it replaces (the kept root, or in frozen mode the base) is kept as
/// a checkpoint unless `keep_current` is false; the running root goes on
/// writing into it until the machine reboots.
pub fn plan_rollback(
    header: &HeaderState,
    metadata_transaction: u64,
    in_use: u32,
    name: CheckpointName,
    keep_current: bool,
    now: u64,
) -> Result<Rollback> {
    let h = &header.header;
    let (_, target) = find(header, name)?;
    if h.origin != Some(target.origin) {
        return Err(Error::Refused(format!(
            "checkpoint {name} was taken on another image ({} bytes then, {} now): its changes would land on \
             an image they were not made on. Point cowroot= back at that image to roll back to it",
            target.origin.size_bytes,
            h.origin.map_or(0, |o| o.size_bytes)
        )));
    }
    require_no_leftover(header, in_use)?;
    require_bound(header, metadata_transaction)?;
    let frozen = h.base_thin != 0;
    let current = if frozen { h.base_thin } else { h.active_thin };
    // In a persistent pool the active thin differs from the running one
    // only after a rollback in this boot: an untouched snapshot, dropped.
    let worth_keeping = frozen || current == in_use;
    let keep = keep_current && worth_keeping;
    // A running root that is dropped cannot be deleted before the reboot:
    // it is recorded as a checkpoint being deleted, which the next boot
    // deletes (the leftover slots stay free for this boot's commands).
    let drop_running = !keep && current == in_use;
    if (keep || drop_running) && h.checkpoints.len() >= MAX_CHECKPOINTS {
        return Err(full(header));
    }
    let generation = h.generation.checked_add(1).ok_or_else(|| state_exhausted(&header.device))?;
    let kept_as = keep.then(|| checkpoint::auto_name("rollback", h.generation, current, &h.checkpoints));
    let dropped_name = drop_running.then(|| checkpoint::auto_name("dropped", h.generation, current, &h.checkpoints));
    let kept = kept_as.or(dropped_name).map(|name| CheckpointRecord {
        name,
        thin: current,
        kind: CheckpointKind::Rollback,
        deleting: drop_running,
        created: now,
        generation: h.generation,
        root_sectors: h.root_sectors,
        origin: target.origin,
    });

    let mut state = header.clone();
    let mut steps = Vec::new();
    let id = reserve(&mut state, &mut steps, "reserve thin id for a rollback")?;
    let next_txn =
        state.header.transaction_after(metadata_transaction).ok_or_else(|| state_exhausted(&header.device))?;
    // The running root may itself be a checkpoint (kept by an earlier
    // rollback in this boot): a snapshot of it needs it suspended.
    if target.thin == in_use {
        steps.push(Step::SnapshotLive { id, of: target.thin });
    } else {
        steps.push(Step::CreateSnapId { id, of: target.thin });
    }
    steps.push(Step::SetTransactionId { from: metadata_transaction, to: next_txn });
    let active = h.active_thin;
    state.write(&mut steps, false, "switch to a snapshot of a checkpoint", |h| {
        if frozen {
            h.base_thin = id;
            if active == current {
                h.active_thin = id;
            }
        } else {
            h.active_thin = id;
        }
        h.garbage_thin = if keep || drop_running { 0 } else { current };
        h.checkpoints.extend(kept);
        h.generation = generation;
        h.root_sectors = target.root_sectors;
        h.flags &= !(FLAG_RESERVED | FLAG_RESET_NEXT_BOOT);
        h.transaction = next_txn;
    })?;
    state.write(&mut steps, false, "mirror to the other copy", |_| {})?;
    Ok(Rollback {
        steps,
        kept_as,
        reset_cancelled: h.flags & FLAG_RESET_NEXT_BOOT != 0,
        kept_running: keep && current == in_use,
    })
}
