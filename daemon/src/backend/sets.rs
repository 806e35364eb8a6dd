//! Rules on snapshot sets that do not depend on the data path, shared by both backends: how
//! a request picks volumes, which state allows which action, and the registry updates that go
//! with them. Each backend adds only its device work around these.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    BackendError, BackendResult, PoolStatus, SnapshotId, SnapshotRequest, SnapshotSetInfo,
    VolumeState,
};
use crate::pool::{
    CowRecord, Pool, PoolError, Registry, SetState, SnapshotSetRecord, VolumeRecord,
};

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
    BackendError::from(err)
}

/// The pool figures of `Status`.
pub fn pool_status(pool: &Pool) -> PoolStatus {
    PoolStatus {
        path: pool.path().to_path_buf(),
        size_bytes: pool.size_bytes(),
        used_bytes: pool.used_bytes(),
    }
}

pub fn record(pool: &Pool, id: SnapshotId) -> BackendResult<SnapshotSetRecord> {
    pool.registry()
        .set(id)
        .cloned()
        .ok_or_else(|| BackendError::not_found(format!("no snapshot set with id {id}")))
}

/// Records the configured volumes; refuses a volume whose backing device changed while
/// snapshots of it exist (their COWs describe the old device).
pub fn register_volumes(pool: &Pool, records: &[VolumeRecord]) -> BackendResult<()> {
    let registry = pool.registry();
    let mut changed = false;
    for record in records {
        match registry.volume(&record.name) {
            Some(known) if known == record => {}
            Some(known)
                if registry.snapshot_sets.iter().any(|s| s.volumes().contains(&record.name)) =>
            {
                return Err(BackendError::backend(format!(
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
        return Err(BackendError::invalid_argument(
            "no volumes given and none is configured with auto = true",
        ));
    }
    if let Some(unknown) = names.iter().find(|name| !configured.contains_key(name.as_str())) {
        return Err(BackendError::not_found(format!("no volume named {unknown:?} is configured")));
    }
    if request.cow_size_bytes == Some(0) {
        return Err(BackendError::invalid_argument("cow-size must be more than 0 bytes"));
    }
    Ok(names.into_iter().collect())
}

/// A new set cannot include a volume that is rolling back (or about to).
pub fn refuse_if_rolling_back(registry: &Registry, volumes: &[String]) -> BackendResult<()> {
    for volume in volumes {
        if let Some(set) = registry
            .snapshot_sets
            .iter()
            .find(|set| super::lifecycle::rollback_under_way(set) && set.volumes().contains(volume))
        {
            return Err(BackendError::busy(format!(
                "volume {volume} has a rollback to snapshot set {} under way ({}); wait for it, or cancel \
                 a scheduled one",
                set.id,
                set.state.as_str()
            )));
        }
    }
    Ok(())
}

/// The record of a new set: active, as the request describes it.
pub fn new_record(
    id: SnapshotId,
    request: &SnapshotRequest,
    cows: Vec<CowRecord>,
) -> SnapshotSetRecord {
    SnapshotSetRecord {
        id,
        description: request.description.clone(),
        created_us: now_us(),
        userdata: request.userdata.clone(),
        important: request.important,
        state: SetState::Active,
        merge_started: false,
        message: None,
        boot: None,
        boot_undo: None,
        boot_restore: None,
        cows,
    }
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

/// Most userdata entries a set holds, and the longest key and value, in bytes. A set at the
/// limits takes about 280 KiB of the registry; the pool refuses growth well before its slot is
/// full (`pool::REGISTRY_GROWTH_LIMIT`), so state changes always fit.
pub const MAX_USERDATA_ENTRIES: usize = 64;
pub const MAX_USERDATA_KEY_BYTES: usize = 256;
pub const MAX_USERDATA_VALUE_BYTES: usize = 4096;

/// Whether a set's whole userdata is within the limits, and why not.
pub fn check_userdata(userdata: &BTreeMap<String, String>) -> Result<(), String> {
    if userdata.len() > MAX_USERDATA_ENTRIES {
        return Err(format!(
            "userdata has {} entries, at most {MAX_USERDATA_ENTRIES} are allowed",
            userdata.len()
        ));
    }
    for (key, value) in userdata {
        if key.is_empty() || key.len() > MAX_USERDATA_KEY_BYTES {
            return Err(format!("userdata key '{key}' must be 1..={MAX_USERDATA_KEY_BYTES} bytes"));
        }
        if value.len() > MAX_USERDATA_VALUE_BYTES {
            return Err(format!(
                "userdata value of '{key}' is longer than {MAX_USERDATA_VALUE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// Replaces the description (when given) and merges `userdata` into the set's userdata.
pub fn update_metadata(
    pool: &Pool,
    id: SnapshotId,
    description: Option<String>,
    userdata: BTreeMap<String, String>,
) -> BackendResult<()> {
    let mut merged = record(pool, id)?.userdata;
    merged.extend(userdata);
    check_userdata(&merged).map_err(|why| {
        BackendError::invalid_argument(format!("snapshot set {id}: with this update {why}"))
    })?;
    pool.update(|registry| {
        let set = registry
            .set_mut(id)
            .ok_or_else(|| PoolError::Invalid(format!("snapshot set {id} vanished")))?;
        if let Some(description) = description {
            set.description = description;
        }
        set.userdata = merged;
        Ok(())
    })
    .map_err(pool_error)
}

/// The `state` a volume reports in `Status`.
pub fn volume_state(registry: &Registry, volume: &str, assembled: bool) -> VolumeState {
    let states: Vec<SetState> = registry
        .snapshot_sets
        .iter()
        .filter(|set| set.volumes().iter().any(|v| v == volume))
        .map(|set| set.state)
        .collect();
    if states.contains(&SetState::Merging) {
        VolumeState::Merging
    } else if states.contains(&SetState::MergeFailed) {
        VolumeState::MergeFailed
    } else if states.contains(&SetState::MergeScheduled) {
        VolumeState::MergeScheduled
    } else if assembled {
        VolumeState::Active
    } else {
        VolumeState::Inactive
    }
}

/// The bus view of a set from its record and the backend's live figures.
pub fn info(
    record: &SnapshotSetRecord,
    extent_bytes: u64,
    used_bytes: u64,
    merge_progress: f64,
    boot_entry: Option<std::path::PathBuf>,
) -> SnapshotSetInfo {
    SnapshotSetInfo {
        id: record.id,
        description: record.description.clone(),
        created_us: record.created_us,
        volumes: record.volumes(),
        state: record.state,
        used_bytes,
        size_bytes: record.extent_count() * extent_bytes,
        merge_progress: if record.state == SetState::Merging {
            merge_progress.clamp(0.0, 1.0)
        } else {
            0.0
        },
        userdata: record.userdata.clone(),
        important: record.important,
        boot_entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ErrorKind;

    fn set(id: SnapshotId, state: SetState, volumes: &[&str]) -> SnapshotSetRecord {
        SnapshotSetRecord {
            id,
            description: String::new(),
            created_us: 0,
            userdata: BTreeMap::new(),
            important: false,
            state,
            merge_started: false,
            message: None,
            boot: None,
            boot_undo: None,
            boot_restore: None,
            cows: volumes
                .iter()
                .map(|v| crate::pool::CowRecord {
                    volume: v.to_string(),
                    chunk_sectors: 32,
                    extents: vec![],
                })
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
        assert_eq!(
            requested_volumes(&named, configured.iter().copied()),
            Ok(vec!["home".to_string()])
        );
        let unknown = SnapshotRequest { volumes: vec!["nope".into()], ..Default::default() };
        assert!(
            matches!(requested_volumes(&unknown, configured.iter().copied()), Err(BackendError { kind: ErrorKind::NotFound, message: m, .. }) if m.contains("nope"))
        );
        let none = requested_volumes(&SnapshotRequest::default(), [("home", false)].into_iter());
        assert!(matches!(none, Err(BackendError { kind: ErrorKind::InvalidArgument, .. })));
        let zero = SnapshotRequest { cow_size_bytes: Some(0), ..Default::default() };
        assert!(matches!(
            requested_volumes(&zero, configured.iter().copied()),
            Err(BackendError { kind: ErrorKind::InvalidArgument, .. })
        ));
    }

    #[test]
    fn new_sets_are_refused_on_a_volume_whose_rollback_is_under_way() {
        let mut failed = set(2, SetState::MergeFailed, &["var"]);
        failed.merge_started = true;
        let reg = registry(vec![set(1, SetState::Active, &["root"]), failed]);
        assert!(
            matches!(refuse_if_rolling_back(&reg, &["var".to_string()]), Err(BackendError { kind: ErrorKind::Busy, message: m, .. }) if m.contains("merge-failed"))
        );
        assert_eq!(refuse_if_rolling_back(&reg, &["root".to_string()]), Ok(()));
    }

    #[test]
    fn merged_userdata_stays_within_the_limits() {
        let mut many = BTreeMap::new();
        for i in 0..MAX_USERDATA_ENTRIES {
            many.insert(format!("k{i}"), "v".to_string());
        }
        assert_eq!(check_userdata(&many), Ok(()));
        many.insert("one-more".into(), "v".into());
        assert!(check_userdata(&many).is_err_and(|why| why.contains("65 entries")));
    }

    #[test]
    fn volume_state_prefers_merging_over_scheduled() {
        let reg = registry(vec![
            set(1, SetState::MergeScheduled, &["root"]),
            set(2, SetState::Merging, &["root"]),
        ]);
        assert_eq!(volume_state(&reg, "root", true), VolumeState::Merging);
        assert_eq!(
            volume_state(
                &registry(vec![set(1, SetState::MergeScheduled, &["root"])]),
                "root",
                true
            ),
            VolumeState::MergeScheduled
        );
        assert_eq!(
            volume_state(&registry(vec![set(1, SetState::MergeFailed, &["root"])]), "root", true),
            VolumeState::MergeFailed
        );
        assert_eq!(volume_state(&reg, "var", true), VolumeState::Active);
        assert_eq!(volume_state(&reg, "var", false), VolumeState::Inactive);
    }
}
