//! Rules on snapshot sets that do not depend on the data path, shared by both backends: how
//! a request picks volumes, which state allows which action, and the registry updates that go
//! with them. Each backend adds only its device work around these.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    BackendError, BackendResult, PoolStatus, RollbackOutcome, SnapshotId, SnapshotRequest,
    SnapshotSetInfo, SnapshotState,
};
use crate::pool::{Pool, PoolError, Registry, SetState, SnapshotSetRecord, VolumeRecord};

/// Microseconds since the Unix epoch (the `Created` property).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Locks a mutex even if a panicking thread poisoned it: every value guarded this way stays
/// whole (registry changes only land through `Pool::update`).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn pool_error(err: PoolError) -> BackendError {
    match err {
        PoolError::NoSpace { .. } => BackendError::NoSpace(err.to_string()),
        other => BackendError::Backend(other.to_string()),
    }
}

/// The bus state of a registry state.
pub fn bus_state(state: SetState) -> SnapshotState {
    match state {
        SetState::Active => SnapshotState::Active,
        SetState::Invalid => SnapshotState::Invalid,
        SetState::Overflow => SnapshotState::Overflow,
        SetState::MergeScheduled => SnapshotState::MergeScheduled,
        SetState::Merging => SnapshotState::Merging,
        SetState::MergeFailed => SnapshotState::MergeFailed,
    }
}

/// The pool figures of `Status`.
pub fn pool_status(pool: &Pool) -> PoolStatus {
    PoolStatus { path: pool.path().to_path_buf(), size_bytes: pool.size_bytes(), used_bytes: pool.used_bytes() }
}

pub fn record(pool: &Pool, id: SnapshotId) -> BackendResult<SnapshotSetRecord> {
    pool.registry()
        .set(id)
        .cloned()
        .ok_or_else(|| BackendError::NotFound(format!("no snapshot set with id {id}")))
}

/// Sets the state of set `id` (and the message that explains it) in the registry.
pub fn set_state(pool: &Pool, id: SnapshotId, state: SetState, message: Option<String>) -> BackendResult<()> {
    pool.update(|registry| {
        let set = registry
            .set_mut(id)
            .ok_or_else(|| PoolError::Invalid(format!("snapshot set {id} vanished")))?;
        set.state = state;
        set.message = message;
        Ok(())
    })
    .map_err(pool_error)
}

/// Records the configured volumes; refuses a volume whose backing device changed while
/// snapshots of it exist (their COWs describe the old device).
pub fn register_volumes(pool: &Pool, records: &[VolumeRecord]) -> BackendResult<()> {
    let registry = pool.registry();
    let mut changed = false;
    for record in records {
        match registry.volume(&record.name) {
            Some(known) if known == record => {}
            Some(known) if registry.snapshot_sets.iter().any(|s| s.volumes().contains(&record.name)) => {
                return Err(BackendError::Backend(format!(
                    "volume {} was {} ({} bytes) when its snapshots were taken, now {} ({} bytes); \
                     restore the configuration or delete its snapshots with the old one",
                    record.name,
                    known.backing.display(),
                    known.size_bytes,
                    record.backing.display(),
                    record.size_bytes
                )));
            }
            _ => changed = true,
        }
    }
    if changed {
        pool.update(|registry| {
            for record in records {
                registry.volumes.retain(|known| known.name != record.name);
                registry.volumes.push(record.clone());
            }
            Ok(())
        })
        .map_err(pool_error)?;
    }
    Ok(())
}

/// The volume names a `Snapshot` request covers: the named ones, or every `auto` volume.
/// `configured` yields `(name, auto)`. Unknown names are NotFound.
pub fn requested_volumes<'a>(
    request: &SnapshotRequest,
    configured: impl Iterator<Item = (&'a str, bool)>,
) -> BackendResult<Vec<String>> {
    let configured: BTreeMap<&str, bool> = configured.collect();
    let names: BTreeSet<String> = if request.volumes.is_empty() {
        configured.iter().filter(|(_, auto)| **auto).map(|(name, _)| name.to_string()).collect()
    } else {
        request.volumes.iter().cloned().collect()
    };
    if names.is_empty() {
        return Err(BackendError::InvalidArgument(
            "no volumes given and none is configured with auto = true".into(),
        ));
    }
    if let Some(unknown) = names.iter().find(|name| !configured.contains_key(name.as_str())) {
        return Err(BackendError::NotFound(format!("no volume named {unknown:?} is configured")));
    }
    if request.cow_size_bytes == Some(0) {
        return Err(BackendError::InvalidArgument("cow-size must be more than 0 bytes".into()));
    }
    Ok(names.into_iter().collect())
}

/// A new set cannot include a volume that is rolling back (or about to).
pub fn refuse_if_rolling_back(registry: &Registry, volumes: &[String]) -> BackendResult<()> {
    for volume in volumes {
        if let Some(set) = registry
            .snapshot_sets
            .iter()
            .find(|set| set.state.rollback_pending() && set.volumes().contains(volume))
        {
            return Err(BackendError::Busy(format!(
                "volume {volume} has a rollback to snapshot {} pending or running; wait for it or cancel it",
                set.id
            )));
        }
    }
    Ok(())
}

/// Commits a new set, making sure its id is still the next one (ids are never reused).
pub fn commit_new_set(pool: &Pool, record: &SnapshotSetRecord) -> BackendResult<()> {
    pool.update(|registry| {
        if registry.next_snapshot_id != record.id {
            return Err(PoolError::Invalid("registry changed while taking the snapshot".into()));
        }
        registry.next_snapshot_id += 1;
        registry.snapshot_sets.push(record.clone());
        Ok(())
    })
    .map_err(pool_error)
}

/// What a rollback request may do given the set's state: `Ok(Some(Scheduled))` when it is
/// already scheduled (asking again is idempotent), `Ok(None)` to go on, or why not.
pub fn rollback_allowed(registry: &Registry, record: &SnapshotSetRecord) -> BackendResult<Option<RollbackOutcome>> {
    let id = record.id;
    match record.state {
        SetState::Invalid => {
            return Err(BackendError::SnapshotInvalid(format!(
                "snapshot {id} is invalid ({}); it cannot be rolled back, only deleted",
                record.message.as_deref().unwrap_or("its COW filled up or failed")
            )))
        }
        SetState::Merging => return Err(BackendError::AlreadyMerging(format!("snapshot {id} is already merging"))),
        SetState::MergeScheduled => return Ok(Some(RollbackOutcome::Scheduled)),
        SetState::Active | SetState::Overflow | SetState::MergeFailed => {}
    }
    for name in record.volumes() {
        if let Some(other) = registry
            .snapshot_sets
            .iter()
            .find(|set| set.id != id && set.state.rollback_pending() && set.volumes().contains(&name))
        {
            return Err(BackendError::AlreadyMerging(format!(
                "volume {name} is already rolling back to snapshot {}",
                other.id
            )));
        }
    }
    Ok(None)
}

/// Un-schedules a pending rollback.
pub fn cancel_rollback(pool: &Pool, id: SnapshotId) -> BackendResult<()> {
    let record = record(pool, id)?;
    match record.state {
        SetState::MergeScheduled => {
            set_state(pool, id, SetState::Active, None)?;
            tracing::info!(snapshot = id, "scheduled rollback cancelled");
            Ok(())
        }
        SetState::Merging => Err(BackendError::AlreadyMerging(format!(
            "the merge of snapshot {id} is running and cannot be cancelled; it finishes on its own"
        ))),
        _ => Err(BackendError::InvalidArgument(format!("snapshot {id} has no scheduled rollback"))),
    }
}

/// Whether a set may be deleted: not while it merges, nor after a merge failed part way.
pub fn delete_allowed(record: &SnapshotSetRecord) -> BackendResult<()> {
    let id = record.id;
    match record.state {
        SetState::Merging => Err(BackendError::Busy(format!(
            "snapshot {id} is merging; it is removed when the merge finishes"
        ))),
        // Part of it is already merged: dropping the rest would leave the volumes half
        // rolled back. The merge resumes with Rollback (and at every start).
        SetState::MergeFailed => Err(BackendError::Busy(format!(
            "the merge of snapshot {id} failed part way; deleting it would leave its volumes \
             half rolled back. Fix the cause ({}) and run Rollback again to finish it",
            record.message.as_deref().unwrap_or("see the log")
        ))),
        SetState::MergeScheduled => Err(BackendError::Busy(format!(
            "snapshot {id} has a rollback scheduled; cancel it first (CancelRollback)"
        ))),
        _ => Ok(()),
    }
}

/// Removes a set from the registry (its extents become free).
pub fn forget(pool: &Pool, id: SnapshotId) -> BackendResult<()> {
    pool.update(|registry| {
        registry.snapshot_sets.retain(|set| set.id != id);
        Ok(())
    })
    .map_err(pool_error)
}

/// Replaces the description (when given) and merges `userdata` into the set's userdata.
pub fn update_metadata(
    pool: &Pool,
    id: SnapshotId,
    description: Option<String>,
    userdata: BTreeMap<String, String>,
) -> BackendResult<()> {
    record(pool, id)?;
    pool.update(|registry| {
        let set = registry
            .set_mut(id)
            .ok_or_else(|| PoolError::Invalid(format!("snapshot set {id} vanished")))?;
        if let Some(description) = description {
            set.description = description;
        }
        set.userdata.extend(userdata);
        Ok(())
    })
    .map_err(pool_error)
}

/// The `state` a volume reports in `Status`.
pub fn volume_state(registry: &Registry, volume: &str, assembled: bool) -> &'static str {
    let states: Vec<SetState> = registry
        .snapshot_sets
        .iter()
        .filter(|set| set.volumes().iter().any(|v| v == volume))
        .map(|set| set.state)
        .collect();
    if states.contains(&SetState::Merging) {
        "merging"
    } else if states.contains(&SetState::MergeScheduled) {
        "merge-scheduled"
    } else if assembled {
        "active"
    } else {
        "inactive"
    }
}

/// The bus view of a set from its record and the backend's live figures.
pub fn info(record: &SnapshotSetRecord, extent_bytes: u64, used_bytes: u64, merge_progress: f64) -> SnapshotSetInfo {
    SnapshotSetInfo {
        id: record.id,
        description: record.description.clone(),
        created_us: record.created_us,
        volumes: record.volumes(),
        state: bus_state(record.state),
        used_bytes,
        size_bytes: record.extent_count() * extent_bytes,
        merge_progress: if record.state == SetState::Merging { merge_progress.clamp(0.0, 1.0) } else { 0.0 },
        userdata: record.userdata.clone(),
        important: record.important,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: SnapshotId, state: SetState, volumes: &[&str]) -> SnapshotSetRecord {
        SnapshotSetRecord {
            id,
            description: String::new(),
            created_us: 0,
            userdata: BTreeMap::new(),
            important: false,
            state,
            message: None,
            cows: volumes
                .iter()
                .map(|v| crate::pool::CowRecord { volume: v.to_string(), chunk_sectors: 32, extents: vec![] })
                .collect(),
        }
    }

    fn registry(sets: Vec<SnapshotSetRecord>) -> Registry {
        let mut registry = Registry::new(4 << 20, 8 << 20, 16);
        registry.snapshot_sets = sets;
        registry
    }

    #[test]
    fn requests_pick_auto_volumes_or_the_named_ones() {
        let configured = [("root", true), ("var", true), ("home", false)];
        let auto = requested_volumes(&SnapshotRequest::default(), configured.iter().copied());
        assert_eq!(auto, Ok(vec!["root".to_string(), "var".to_string()]));
        let named = SnapshotRequest { volumes: vec!["home".into()], ..Default::default() };
        assert_eq!(requested_volumes(&named, configured.iter().copied()), Ok(vec!["home".to_string()]));
        let unknown = SnapshotRequest { volumes: vec!["nope".into()], ..Default::default() };
        assert!(matches!(requested_volumes(&unknown, configured.iter().copied()), Err(BackendError::NotFound(m)) if m.contains("nope")));
        let none = requested_volumes(&SnapshotRequest::default(), [("home", false)].into_iter());
        assert!(matches!(none, Err(BackendError::InvalidArgument(_))));
        let zero = SnapshotRequest { cow_size_bytes: Some(0), ..Default::default() };
        assert!(matches!(requested_volumes(&zero, configured.iter().copied()), Err(BackendError::InvalidArgument(_))));
    }

    #[test]
    fn rollback_rules_follow_the_state() {
        let reg = registry(vec![set(1, SetState::Active, &["root"]), set(2, SetState::Merging, &["var"])]);
        assert_eq!(rollback_allowed(&reg, &set(1, SetState::Active, &["root"])), Ok(None));
        assert_eq!(rollback_allowed(&reg, &set(1, SetState::MergeScheduled, &["root"])), Ok(Some(RollbackOutcome::Scheduled)));
        assert!(matches!(rollback_allowed(&reg, &set(1, SetState::Invalid, &["root"])), Err(BackendError::SnapshotInvalid(_))));
        assert!(matches!(rollback_allowed(&reg, &set(2, SetState::Merging, &["var"])), Err(BackendError::AlreadyMerging(_))));
        // another set of the same volume is merging
        assert!(matches!(rollback_allowed(&reg, &set(3, SetState::Active, &["var"])), Err(BackendError::AlreadyMerging(m)) if m.contains("snapshot 2")));
        assert!(matches!(refuse_if_rolling_back(&reg, &["var".to_string()]), Err(BackendError::Busy(_))));
        assert_eq!(refuse_if_rolling_back(&reg, &["root".to_string()]), Ok(()));
    }

    #[test]
    fn deletes_are_refused_while_a_rollback_is_pending_running_or_half_done() {
        for state in [SetState::Merging, SetState::MergeFailed, SetState::MergeScheduled] {
            assert!(matches!(delete_allowed(&set(1, state, &["root"])), Err(BackendError::Busy(_))), "{state:?}");
        }
        for state in [SetState::Active, SetState::Invalid, SetState::Overflow] {
            assert_eq!(delete_allowed(&set(1, state, &["root"])), Ok(()), "{state:?}");
        }
    }

    #[test]
    fn volume_state_prefers_merging_over_scheduled() {
        let reg = registry(vec![set(1, SetState::MergeScheduled, &["root"]), set(2, SetState::Merging, &["root"])]);
        assert_eq!(volume_state(&reg, "root", true), "merging");
        assert_eq!(volume_state(&registry(vec![set(1, SetState::MergeScheduled, &["root"])]), "root", true), "merge-scheduled");
        assert_eq!(volume_state(&reg, "var", true), "active");
        assert_eq!(volume_state(&reg, "var", false), "inactive");
    }
}
