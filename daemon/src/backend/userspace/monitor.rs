//! The monitor thread: grows COWs nearing full from the pool (like LVM autoextend), turns
//! snapshots the engine invalidated or overflowed into registry state and bus events, and
//! writes back origin writes the engine has held in memory for too long.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::state::{lock, pool_error, Shared};
use crate::backend::lifecycle::{self, Input};
use crate::backend::{BackendError, BackendEvent, SnapshotId};
use crate::pool::{PoolError, SetState};

pub fn spawn(shared: &Arc<Shared>) -> std::io::Result<()> {
    let worker = shared.clone();
    let handle = thread::Builder::new().name("cow-monitor".into()).spawn(move || run(&worker))?;
    lock(&shared.threads).push(handle);
    Ok(())
}

fn run(shared: &Shared) {
    // Last used-bytes figure reported per set, so usage changes reach the bus.
    let mut reported: BTreeMap<SnapshotId, u64> = BTreeMap::new();
    let mut pool_full_warned = false;
    let mut held_since: BTreeMap<String, Instant> = BTreeMap::new();
    while !shared.stopping() {
        let deadline = Instant::now() + shared.options.monitor_interval;
        check_once(shared, &mut reported, &mut pool_full_warned);
        write_back_expired(shared, &mut held_since);
        while !shared.stopping() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How long the engine may hold origin writes in memory (its write-back buffer) before the
/// monitor commits them and writes them to the backing device, like the kernel's periodic
/// writeback of dirty pages, so data nobody flushed does not wait in the daemon indefinitely.
pub const WRITE_BACK_EXPIRE: Duration = Duration::from_secs(5);

/// Writes back every volume whose write-back buffer has held data for `WRITE_BACK_EXPIRE`.
/// Not a `flush`: an fdatasync here would consume a writeback error of the backing file (and
/// the engine's recorded write error) that the user's next fsync must report.
fn write_back_expired(shared: &Shared, held_since: &mut BTreeMap<String, Instant>) {
    for (name, volume) in shared.volumes.iter() {
        if volume.write_back_bytes() == 0 {
            held_since.remove(name);
            continue;
        }
        let since = *held_since.entry(name.clone()).or_insert_with(Instant::now);
        if since.elapsed() >= WRITE_BACK_EXPIRE {
            held_since.remove(name);
            if let Err(err) = volume.write_back() {
                tracing::warn!(volume = %name, %err, "writing back held origin writes failed; the next flush reports it");
            }
        }
    }
}

/// One pass over every active set.
pub fn check_once(
    shared: &Shared,
    reported: &mut BTreeMap<SnapshotId, u64>,
    pool_full_warned: &mut bool,
) {
    let registry = shared.pool.registry();
    reported.retain(|id, _| registry.set(*id).is_some());
    for set in &registry.snapshot_sets {
        // A scheduled rollback's snapshot still takes copies until the next start, and can
        // fill up meanwhile; a set whose merge has begun is the merge's to report.
        let scheduled = set.state == SetState::MergeScheduled && !set.merge_started;
        if !matches!(set.state, SetState::Active | SetState::Overflow) && !scheduled {
            continue;
        }
        let mut used = 0;
        for cow in &set.cows {
            let Some(volume) = shared.volumes.get(&cow.volume) else { continue };
            let Some(figures) = volume.figures(set.id) else { continue };
            used += figures.allocated_bytes;
            if figures.invalid {
                invalidate(
                    shared,
                    set.id,
                    &cow.volume,
                    "the snapshot's COW filled up or hit an I/O error",
                );
                continue;
            }
            if figures.overflow && set.state != SetState::Overflow {
                mark_overflow(shared, set.id, &cow.volume);
            }
            let full = figures.allocated_bytes as f64 / figures.total_bytes.max(1) as f64;
            if full > shared.options.autoextend_threshold {
                match grow(shared, set.id, &cow.volume, figures.total_bytes) {
                    Ok(added) => {
                        *pool_full_warned = false;
                        tracing::warn!(snapshot_id = set.id, volume = %cow.volume, percent_full = full * 100.0, added_bytes = added,
                            "snapshot COW nearly full: grown from the pool");
                    }
                    Err(err) => {
                        if !*pool_full_warned {
                            tracing::warn!(snapshot_id = set.id, volume = %cow.volume, %err,
                                "snapshot COW nearly full and cannot grow; it is invalidated when full");
                            *pool_full_warned = true;
                        }
                    }
                }
            }
        }
        if reported.insert(set.id, used) != Some(used) {
            shared.emit(BackendEvent::SnapshotChanged(set.id));
        }
    }
}

/// Adds extents at the end of a COW: registry first, then the live device (if the daemon
/// dies in between, the registry merely lists extents the COW did not use yet).
fn grow(
    shared: &Shared,
    id: SnapshotId,
    volume: &str,
    current_bytes: u64,
) -> Result<u64, BackendError> {
    let _ops = lock(&shared.ops);
    let extent_bytes = shared.pool.registry().extent_bytes;
    let wanted = ((current_bytes as f64 * shared.options.autoextend_fraction) as u64)
        .div_ceil(extent_bytes)
        .max(1);
    let attached = shared.volumes.get(volume).and_then(|v| v.attached(id)).ok_or_else(|| {
        BackendError::backend(format!("snapshot {id} is not attached to {volume}"))
    })?;
    let added = shared
        .pool
        .update(|registry| {
            let picked: Vec<u64> =
                registry.pick_free_extents(&[wanted])?.into_iter().flatten().collect();
            let cow = registry
                .set_mut(id)
                .and_then(|set| set.cows.iter_mut().find(|cow| cow.volume == volume))
                .ok_or_else(|| {
                    PoolError::Invalid(format!("snapshot {id} has no COW for {volume}"))
                })?;
            cow.extents.extend_from_slice(&picked);
            Ok(picked)
        })
        .map_err(pool_error)?;
    attached.cow.grow(&added);
    Ok(added.len() as u64 * extent_bytes)
}

fn invalidate(shared: &Shared, id: SnapshotId, volume: &str, reason: &str) {
    let changed = {
        let _ops = lock(&shared.ops);
        let before = shared.record(id).map(|record| record.state);
        let changed = matches!(lifecycle::apply(&shared.pool, id, &Input::Invalidated(reason.to_string())),
            Ok((record, _)) if record.state == SetState::Invalid && before != Ok(SetState::Invalid));
        if let Err(err) = shared.boot.settle(&shared.pool, id) {
            tracing::error!(snapshot_id = id, %err, "putting back the boot configuration of an invalidated rollback");
        }
        changed
    };
    if changed {
        tracing::warn!(
            snapshot_id = id,
            volume,
            reason,
            "snapshot invalidated; the volume keeps working"
        );
        shared.emit(BackendEvent::SnapshotInvalidated {
            id,
            volume: volume.to_string(),
            reason: reason.to_string(),
        });
        shared.emit(BackendEvent::SnapshotChanged(id));
    }
}

fn mark_overflow(shared: &Shared, id: SnapshotId, volume: &str) {
    let changed = {
        let _ops = lock(&shared.ops);
        let before = shared.record(id).map(|record| record.state);
        matches!(lifecycle::apply(&shared.pool, id, &Input::Overflowed),
            Ok((record, _)) if record.state == SetState::Overflow && before != Ok(SetState::Overflow))
    };
    if changed {
        tracing::warn!(
            snapshot_id = id,
            volume,
            "snapshot overflowed: its writes fail, reads still work"
        );
        shared.emit(BackendEvent::SnapshotChanged(id));
    }
}
