//! The snapshot-set lifecycle: one state machine, used by both backends.
//!
//! Every call and event that can change a set goes through [`next`], which knows nothing of
//! devices: it says what the set's registry record becomes and what device work the backend
//! must do ([`Effect`]). [`apply`] commits that record before the backend does the work, so a
//! crash after it leaves a registry from which the next start redoes the work (device work is
//! idempotent: assembly, a merge resumed from the COW's own metadata, a detach).
//!
//! The invariants (docs/set-lifecycle.md has the tables):
//! - once a merge of a set has started on any volume (`merge_started`), the set is never
//!   deleted, detached, made active or invalid, until the merge has finished on every volume:
//!   only the rest of its snapshot makes the volumes whole again;
//! - one rollback per volume: a set sharing a volume with another set whose rollback is
//!   scheduled, running or failed part way cannot be rolled back;
//! - a configuration change never changes a set's state: a set naming a volume that is not
//!   configured is kept as it is, and a start refuses to go on without a volume whose merge
//!   has started (serving the rest of such a set would hide that it is half rolled back).

use super::{BackendError, BackendResult, SnapshotId};
use crate::pool::{BootRestore, Pool, PoolError, Registry, SetState, SnapshotSetRecord};

/// What happens to a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `Rollback`. `defer`: a volume of the set is in use and not already merging, so the
    /// merge must wait for the next assembly. `missing`: volumes of the set that are not in
    /// the configuration.
    Rollback { defer: bool, missing: Vec<String> },
    /// `CancelRollback`.
    CancelRollback,
    /// `Delete`, and the cleanup policy's deletions.
    Delete,
    /// The merge stopped on an error (or could not be started).
    MergeFailed(String),
    /// Every volume of the set has merged.
    MergeFinished,
    /// The data path found a snapshot of the set unusable (COW full or failing).
    Invalidated(String),
    /// A snapshot of the set ran out of COW space with the overflow option.
    Overflowed,
    /// The daemon starts, or boot activation assembles the volumes. `defer` and `missing` as
    /// for `Rollback`.
    Start { defer: bool, missing: Vec<String> },
}

/// The device work a transition asks of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing (the state may still have changed).
    Nothing,
    /// The rollback waits for the next assembly of the volumes.
    Scheduled,
    /// Start or resume the merge on every volume of the set.
    Merge,
    /// Stop copy-on-write for the set, free its COWs and forget it ([`forget`]).
    Remove,
}

/// The record a transition leads to, and the work that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: SetState,
    pub merge_started: bool,
    pub message: Option<String>,
    pub effect: Effect,
    /// The boot configuration the boot side must put in place after this commit: a
    /// rollback of a set that recorded one restores the snapshot's, a cancelled one the
    /// configuration the rollback replaced (see `backend::boot_side`).
    pub boot_restore: Option<BootRestore>,
}

impl Transition {
    fn keep(set: &SnapshotSetRecord, effect: Effect) -> Transition {
        Transition::to(set.state, set.merge_started, set.message.clone(), effect)
    }

    fn to(
        state: SetState,
        merge_started: bool,
        message: Option<String>,
        effect: Effect,
    ) -> Transition {
        Transition { state, merge_started, message, effect, boot_restore: None }
    }

    fn changes(&self, set: &SnapshotSetRecord) -> bool {
        self.state != set.state
            || self.merge_started != set.merge_started
            || self.message != set.message
            || self.boot_restore != set.boot_restore
    }
}

/// Whether the volumes of `set` may hold part of its snapshot's data, or are about to: its
/// rollback was asked for and has not finished.
pub fn rollback_under_way(set: &SnapshotSetRecord) -> bool {
    set.merge_started || set.state.rollback_requested()
}

/// Another set sharing a volume with `set` whose rollback is under way.
fn conflicting_rollback<'a>(
    registry: &'a Registry,
    set: &SnapshotSetRecord,
) -> Option<(&'a SnapshotSetRecord, String)> {
    set.volumes().into_iter().find_map(|volume| {
        registry
            .snapshot_sets
            .iter()
            .find(|other| {
                other.id != set.id && rollback_under_way(other) && other.volumes().contains(&volume)
            })
            .map(|other| (other, volume))
    })
}

fn names(volumes: &[String]) -> String {
    volumes.join(", ")
}

fn reason(set: &SnapshotSetRecord) -> &str {
    set.message.as_deref().unwrap_or("see the journal: journalctl -u snapbackd")
}

/// The transition of `set` (a record of `registry`) under `input`, or why it is refused.
/// Pure: nothing is written.
pub fn next(
    registry: &Registry,
    set: &SnapshotSetRecord,
    input: &Input,
) -> BackendResult<Transition> {
    let mut transition = next_state(registry, set, input)?;
    transition.boot_restore = match input {
        // Committed with the state, so a crash before the files are back redoes them at start.
        Input::Rollback { .. } if transition.state != set.state && set.boot.is_some() => {
            Some(BootRestore::Snapshot)
        }
        Input::CancelRollback if set.boot_undo.is_some() => Some(BootRestore::Undo),
        Input::CancelRollback => None,
        // A scheduled rollback that can no longer happen must not leave the snapshot's kernels
        // as the default under the upgraded root: the upgrade's boot configuration goes back.
        Input::Invalidated(_)
            if set.state == SetState::MergeScheduled
                && transition.state == SetState::Invalid
                && set.boot_undo.is_some() =>
        {
            Some(BootRestore::Undo)
        }
        _ => set.boot_restore,
    };
    Ok(transition)
}

fn next_state(
    registry: &Registry,
    set: &SnapshotSetRecord,
    input: &Input,
) -> BackendResult<Transition> {
    let id = set.id;
    let started = set.merge_started;
    match input {
        Input::Rollback { defer, missing } => {
            match set.state {
                SetState::Invalid => return Err(invalid_error(set)),
                SetState::Merging => {
                    return Err(BackendError::already_merging(format!("snapshot set {id} is already merging")))
                }
                // Asking again for what is already arranged is not an error.
                SetState::MergeScheduled => return Ok(Transition::keep(set, Effect::Scheduled)),
                SetState::Active | SetState::Overflow | SetState::MergeFailed => {}
            }
            if !missing.is_empty() {
                return Err(BackendError::not_found(format!(
                    "snapshot set {id} includes volume {} that is not in the configuration; restore its \
                     [[volume]] entry in snapback.toml and restart snapbackd to roll back",
                    names(missing)
                )));
            }
            if let Some((other, volume)) = conflicting_rollback(registry, set) {
                return Err(BackendError::already_merging(format!(
                    "volume {volume} is already rolling back to snapshot set {} ({}); only one rollback \
                     per volume at a time",
                    other.id,
                    other.state.as_str()
                )));
            }
            if *defer {
                // A failed merge keeps its message: the volumes are still half rolled back.
                let message = if started { set.message.clone() } else { None };
                Ok(Transition::to(SetState::MergeScheduled, started, message, Effect::Scheduled))
            } else {
                Ok(Transition::to(SetState::Merging, true, None, Effect::Merge))
            }
        }
        Input::CancelRollback => match set.state {
            SetState::MergeScheduled if started => Ok(Transition::to(
                SetState::MergeFailed,
                true,
                set.message.clone().or_else(|| Some("the merge failed part way and its retry was cancelled".into())),
                Effect::Nothing,
            )),
            SetState::MergeScheduled => Ok(Transition::to(SetState::Active, false, None, Effect::Nothing)),
            SetState::Merging => Err(BackendError::already_merging(format!(
                "the merge of snapshot set {id} is running and cannot be cancelled; it finishes on its own"
            ))),
            state => Err(BackendError::invalid_argument(format!(
                "snapshot set {id} has no scheduled rollback to cancel (state: {})",
                state.as_str()
            ))),
        },
        Input::Delete => {
            if set.state == SetState::Merging {
                return Err(BackendError::busy(format!(
                    "snapshot set {id} is merging into its volumes; it is removed when the merge finishes"
                )));
            }
            if started {
                return Err(BackendError::busy(format!(
                    "the merge of snapshot set {id} began and has not finished ({}); deleting it would leave \
                     its volumes half rolled back. Fix the cause and run Rollback again to finish it",
                    reason(set)
                )));
            }
            if set.state == SetState::MergeScheduled {
                return Err(BackendError::busy(format!(
                    "snapshot set {id} has a rollback scheduled; cancel it first (CancelRollback)"
                )));
            }
            // Committed as invalid before any device goes: a crash after the snapshot stopped
            // taking copies, and before the set is forgotten, must not bring it back whole
            // (the next start would serve a snapshot that missed every write since).
            if set.state == SetState::Invalid {
                return Ok(Transition::keep(set, Effect::Remove));
            }
            Ok(Transition::to(
                SetState::Invalid,
                false,
                Some("its deletion was interrupted; delete it again".into()),
                Effect::Remove,
            ))
        }
        Input::MergeFailed(message) => {
            if !rollback_under_way(set) {
                return Ok(Transition::keep(set, Effect::Nothing));
            }
            Ok(Transition::to(SetState::MergeFailed, started, Some(message.clone()), Effect::Nothing))
        }
        Input::MergeFinished => {
            if set.state != SetState::Merging {
                return Err(BackendError::backend(format!(
                    "snapshot set {id} finished a merge it was not running (state {})",
                    set.state.as_str()
                )));
            }
            Ok(Transition::keep(set, Effect::Remove))
        }
        Input::Invalidated(why) => match set.state {
            SetState::Active | SetState::Overflow => {
                Ok(Transition::to(SetState::Invalid, false, Some(why.clone()), Effect::Nothing))
            }
            // Nothing merged yet: the rollback simply cannot happen any more.
            SetState::MergeScheduled if !started => Ok(Transition::to(
                SetState::Invalid,
                false,
                Some(format!("{why}; its scheduled rollback cannot happen")),
                Effect::Nothing,
            )),
            // Part of it may be merged: the merge reports what it finds.
            _ => Ok(Transition::keep(set, Effect::Nothing)),
        },
        Input::Overflowed => match set.state {
            SetState::Active => Ok(Transition::to(SetState::Overflow, false, None, Effect::Nothing)),
            _ => Ok(Transition::keep(set, Effect::Nothing)),
        },
        Input::Start { defer, missing } => {
            if !missing.is_empty() {
                if started || set.state == SetState::Merging {
                    return Err(BackendError::backend(format!(
                        "snapshot set {id} is rolling back volumes {} but volume {} is not in the \
                         configuration; restore its [[volume]] entry in snapback.toml: the volumes stay \
                         half rolled back until the merge can finish",
                        names(&set.volumes()),
                        names(missing)
                    )));
                }
                return Ok(Transition::keep(set, Effect::Nothing));
            }
            if !set.state.rollback_requested() {
                return Ok(Transition::keep(set, Effect::Nothing));
            }
            if *defer {
                let state = if set.state == SetState::Merging { SetState::MergeScheduled } else { set.state };
                return Ok(Transition::to(state, started, set.message.clone(), Effect::Scheduled));
            }
            Ok(Transition::to(SetState::Merging, true, None, Effect::Merge))
        }
    }
}

/// Runs `input` on set `id`: computes the transition against the committed registry and
/// commits the new record before returning, so the backend's device work comes after it.
/// `Effect::Remove` changes nothing yet: the backend forgets the set ([`forget`]) once the
/// devices are done with it.
pub fn apply(
    pool: &Pool,
    id: SnapshotId,
    input: &Input,
) -> BackendResult<(SnapshotSetRecord, Effect)> {
    let registry = pool.registry();
    let set = registry.set(id).ok_or_else(|| not_found(id))?;
    let transition = next(&registry, set, input)?;
    let mut record = set.clone();
    if transition.changes(set) {
        pool.update(|registry| {
            // `pool` serializes updates, but the record is read again under its lock so that a
            // change made since the look above is never overwritten.
            let live = registry
                .set_mut(id)
                .ok_or_else(|| PoolError::Invalid(format!("snapshot set {id} vanished")))?;
            if live.state != set.state || live.merge_started != set.merge_started {
                return Err(PoolError::Invalid(format!(
                    "snapshot set {id} changed state meanwhile; try again"
                )));
            }
            live.state = transition.state;
            live.merge_started = transition.merge_started;
            live.message = transition.message.clone();
            live.boot_restore = transition.boot_restore;
            Ok(())
        })
        .map_err(super::sets::pool_error)?;
        record.state = transition.state;
        record.merge_started = transition.merge_started;
        record.message = transition.message.clone();
        record.boot_restore = transition.boot_restore;
        tracing::debug!(
            snapshot_id = id,
            ?input,
            from = set.state.as_str(),
            to = record.state.as_str(),
            "set state"
        );
    }
    Ok((record, transition.effect))
}

/// Forgets a set whose removal [`next`] allowed (its extents, and boot blobs no other set
/// names, become free).
pub fn forget(pool: &Pool, id: SnapshotId) -> BackendResult<()> {
    pool.update(|registry| {
        registry.forget_set(id);
        Ok(())
    })
    .map_err(super::sets::pool_error)
}

/// Whether `volume` of `set` may be opened read-only as it was when the set was taken, and
/// why not. Both backends ask this before they hand out a snapshot device: only a snapshot
/// that still holds the whole old volume may be shown. `active`, `overflow` and a
/// `merge-scheduled` set whose merge has not begun do; a set whose merge has begun (its
/// snapshot is being folded into the volume), an `invalid` one (it missed writes), and a
/// volume the set does not include do not.
pub fn check_open(set: &SnapshotSetRecord, volume: &str) -> BackendResult<()> {
    let id = set.id;
    if !set.volumes().iter().any(|v| v == volume) {
        return Err(BackendError::not_found(format!(
            "snapshot set {id} has no volume named {volume:?} (it has: {})",
            names(&set.volumes())
        )));
    }
    match set.state {
        SetState::Invalid => Err(BackendError::snapshot_invalid(format!(
            "snapshot set {id} is invalid ({}); it cannot be opened, only deleted",
            set.message.as_deref().unwrap_or("its COW filled up or failed")
        ))),
        SetState::Merging | SetState::MergeFailed => Err(BackendError::already_merging(format!(
            "snapshot set {id} is {} into its volumes; its snapshot can no longer be opened",
            if set.state == SetState::Merging { "merging" } else { "part way merged" }
        ))),
        SetState::MergeScheduled if set.merge_started => {
            Err(BackendError::already_merging(format!(
                "the merge of snapshot set {id} began and has not finished; its snapshot can no \
                 longer be opened"
            )))
        }
        SetState::Active | SetState::Overflow | SetState::MergeScheduled => Ok(()),
    }
}

/// Why an invalid set cannot be rolled back.
pub fn invalid_error(set: &SnapshotSetRecord) -> BackendError {
    BackendError::snapshot_invalid(format!(
        "snapshot set {} is invalid ({}); it cannot be rolled back, only deleted",
        set.id,
        set.message.as_deref().unwrap_or("its COW filled up or failed")
    ))
}

pub fn not_found(id: SnapshotId) -> BackendError {
    BackendError::not_found(format!("no snapshot set with id {id}"))
}

/// Refuses a start (daemon or boot activation) that would serve the volumes of a set whose
/// merge has begun while one of its volumes is missing from the configuration.
pub fn check_start(
    registry: &Registry,
    mut configured: impl FnMut(&str) -> bool,
) -> BackendResult<()> {
    for set in &registry.snapshot_sets {
        let missing = missing_volumes(set, &mut configured);
        next(registry, set, &Input::Start { defer: true, missing })?;
    }
    Ok(())
}

/// The volumes of `set` that `configured` does not name.
pub fn missing_volumes(
    set: &SnapshotSetRecord,
    mut configured: impl FnMut(&str) -> bool,
) -> Vec<String> {
    set.volumes().into_iter().filter(|volume| !configured(volume)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "lifecycle_tests.rs"]
mod tests;
