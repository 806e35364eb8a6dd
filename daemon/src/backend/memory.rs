//! `MemoryBackend`: the `Backend` trait over RAM, for testing the service without root.
//!
//! It plays the part of the data path only. The pool is a real pool (registry slots, extents,
//! validation) on the engine's in-memory block device, and every state change goes through
//! the same [`lifecycle`] and [`sets`] functions as the kernel and userspace backends: what it
//! refuses, allows and records is theirs. What it fakes is the device work: a snapshot is
//! taken by committing its record, a merge is a thread that counts steps, and a volume is in
//! use when a test says so ([`MemoryBackend::set_busy`]).
//!
//! Tests steer it: [`MemoryBackend::hold_merges`] keeps merges from advancing,
//! [`MemoryBackend::fail_next_merge_step`] and [`MemoryBackend::fail_next_snapshot`] inject
//! data-path failures, and [`MemoryBackend::fail_next_pool_write`] makes the next registry
//! commit fail as a failing pool device would.
//!
//! Built with the `sim` feature only; `snapbackd`'s own dev-dependency turns it on, so its
//! tests have it and the daemon that ships does not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use snapback_engine::io::MemIo;

use super::lifecycle::{self, Effect, Input};
use super::sets::{self, lock, pool_error};
use super::{
    Backend, BackendError, BackendEvent, BackendKind, BackendResult, EventSink, PoolStatus,
    RollbackOutcome, SnapshotId, SnapshotRequest, SnapshotSetInfo, VolumeInfo,
};
use crate::pool::{format_io, CowRecord, FormatOptions, Pool, SnapshotSetRecord, VolumeRecord};

/// Pool extents are small so that a pool of a few MiB holds many sets.
const EXTENT_BYTES: u64 = 64 << 10;
/// Chunk size recorded in the COW records (the dm-snapshot default of 8 KiB).
const CHUNK_SECTORS: u32 = 16;

/// A volume of the memory backend, as a `[[volume]]` entry of the configuration gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryVolume {
    pub name: String,
    pub size_bytes: u64,
    /// Included in a `Snapshot` that names no volumes.
    pub auto: bool,
}

impl MemoryVolume {
    pub fn new(name: &str, size_bytes: u64, auto: bool) -> MemoryVolume {
        MemoryVolume { name: name.to_string(), size_bytes, auto }
    }
}

/// Sizes of the memory backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    pub volumes: Vec<MemoryVolume>,
    /// Size of the pool's data area.
    pub pool_bytes: u64,
    /// Steps a merge takes from start to end; progress is reported after each.
    pub merge_steps: u32,
    /// Time between two merge steps.
    pub merge_step_pause: Duration,
}

impl Default for MemoryOptions {
    fn default() -> MemoryOptions {
        MemoryOptions {
            volumes: vec![MemoryVolume::new("root", 64 << 20, true)],
            pool_bytes: 16 << 20,
            merge_steps: 4,
            merge_step_pause: Duration::from_millis(5),
        }
    }
}

/// Failures a test asked for, each used up by the operation it fails.
#[derive(Debug, Default)]
struct Faults {
    next_snapshot: Option<String>,
    next_merge_step: Option<String>,
}

/// How far a set's merge went: steps survive a failure, so a retry resumes, as a real
/// merge resumes from the COW's own metadata.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    done: u32,
}

struct State {
    pool: Pool,
    device: Arc<MemIo>,
    volumes: BTreeMap<String, MemoryVolume>,
    options: MemoryOptions,
    /// Held by every operation that changes a set, as the real backends' `ops` lock is.
    ops: Mutex<()>,
    busy: Mutex<BTreeSet<String>>,
    held: AtomicBool,
    stop: AtomicBool,
    faults: Mutex<Faults>,
    progress: Mutex<BTreeMap<SnapshotId, Progress>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    sink: RwLock<Option<EventSink>>,
}

/// The in-memory backend. Dropping it stops its merge threads.
pub struct MemoryBackend {
    state: Arc<State>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("volumes", &self.state.volumes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MemoryBackend {
    /// A backend over a freshly formatted pool in RAM.
    pub fn new(options: MemoryOptions) -> BackendResult<MemoryBackend> {
        let device = Arc::new(MemIo::new(crate::pool::layout::DATA_OFFSET + options.pool_bytes));
        let pool = format_io(
            device.clone(),
            Path::new("memory"),
            FormatOptions { force: false, extent_bytes: EXTENT_BYTES },
        )
        .map_err(pool_error)?;
        let records: Vec<VolumeRecord> = options
            .volumes
            .iter()
            .map(|volume| VolumeRecord {
                name: volume.name.clone(),
                backing: PathBuf::from(format!("memory:{}", volume.name)),
                size_bytes: volume.size_bytes,
            })
            .collect();
        sets::register_volumes(&pool, &records)?;
        let volumes = options.volumes.iter().map(|v| (v.name.clone(), v.clone())).collect();
        Ok(MemoryBackend {
            state: Arc::new(State {
                pool,
                device,
                volumes,
                options,
                ops: Mutex::new(()),
                busy: Mutex::new(BTreeSet::new()),
                held: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                faults: Mutex::new(Faults::default()),
                progress: Mutex::new(BTreeMap::new()),
                threads: Mutex::new(Vec::new()),
                sink: RwLock::new(None),
            }),
        })
    }

    /// Marks `volume` in use (mounted) or not: a rollback of a set over a volume in use is
    /// scheduled for the next assembly instead of merging now.
    pub fn set_busy(&self, volume: &str, busy: bool) {
        let mut set = lock(&self.state.busy);
        if busy {
            set.insert(volume.to_string());
        } else {
            set.remove(volume);
        }
    }

    /// While held, running merges do not advance (a test can look at a set while it merges).
    pub fn hold_merges(&self, held: bool) {
        self.state.held.store(held, Ordering::SeqCst);
    }

    /// The next `create_snapshot` fails after its checks, as a failing device would.
    pub fn fail_next_snapshot(&self, message: &str) {
        lock(&self.state.faults).next_snapshot = Some(message.to_string());
    }

    /// The next step of any merge fails with `message`.
    pub fn fail_next_merge_step(&self, message: &str) {
        lock(&self.state.faults).next_merge_step = Some(message.to_string());
    }

    /// The next write to the pool device fails, so the next registry commit does.
    pub fn fail_next_pool_write(&self) {
        self.state.device.fail_nth_write(1);
    }

    /// The committed record of set `id`, with what the bus does not show (`merge_started`,
    /// `message`).
    pub fn record(&self, id: SnapshotId) -> Option<SnapshotSetRecord> {
        self.state.pool.registry().set(id).cloned()
    }
}

impl State {
    fn emit(&self, event: BackendEvent) {
        let sink = self.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            sink(event);
        }
    }

    fn record(&self, id: SnapshotId) -> BackendResult<SnapshotSetRecord> {
        sets::record(&self.pool, id)
    }

    fn info(&self, record: &SnapshotSetRecord) -> SnapshotSetInfo {
        let extent_bytes = self.pool.registry().extent_bytes;
        let done = lock(&self.progress).get(&record.id).map_or(0, |p| p.done);
        let progress = f64::from(done) / f64::from(self.options.merge_steps.max(1));
        // No data path writes here: a snapshot uses its first chunk (its header) only.
        let used_bytes = record.cows.len() as u64 * u64::from(CHUNK_SECTORS) * 512;
        sets::info(record, extent_bytes, used_bytes, progress, None)
    }

    fn busy_volumes(&self, record: &SnapshotSetRecord) -> Vec<String> {
        let busy = lock(&self.busy);
        record.volumes().into_iter().filter(|name| busy.contains(name)).collect()
    }

    fn take_fault(&self, pick: impl FnOnce(&mut Faults) -> &mut Option<String>) -> Option<String> {
        pick(&mut lock(&self.faults)).take()
    }
}

/// Starts the merge thread of a set the lifecycle has just put in `merging`.
fn spawn_merge(state: &Arc<State>, id: SnapshotId) {
    let merging = state.clone();
    let spawned = thread::Builder::new()
        .name(format!("memory-merge-{id}"))
        .spawn(move || run_merge(&merging, id));
    match spawned {
        Ok(handle) => {
            let mut threads = lock(&state.threads);
            threads.retain(|thread| !thread.is_finished());
            threads.push(handle);
        }
        Err(err) => fail_merge(state, id, format!("cannot start the merge thread: {err}")),
    }
}

fn run_merge(state: &Arc<State>, id: SnapshotId) {
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        if state.held.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(2));
            continue;
        }
        if let Some(message) = state.take_fault(|f| &mut f.next_merge_step) {
            let _ops = lock(&state.ops);
            fail_merge(state, id, message);
            return;
        }
        let done = {
            let mut progress = lock(&state.progress);
            let entry = progress.entry(id).or_default();
            entry.done = (entry.done + 1).min(state.options.merge_steps);
            entry.done
        };
        if done >= state.options.merge_steps {
            finish_merge(state, id);
            return;
        }
        state.emit(BackendEvent::SnapshotChanged(id));
        thread::sleep(state.options.merge_step_pause);
    }
}

/// Every step done: the set goes, as the real backends remove a merged set.
fn finish_merge(state: &State, id: SnapshotId) {
    let outcome = {
        let _ops = lock(&state.ops);
        lifecycle::apply(&state.pool, id, &Input::MergeFinished)
            .and_then(|_| lifecycle::forget(&state.pool, id))
    };
    match outcome {
        Ok(()) => {
            lock(&state.progress).remove(&id);
            state.emit(BackendEvent::MergeFinished { id, ok: true, message: String::new() });
            state.emit(BackendEvent::SnapshotRemoved(id));
        }
        Err(err) => {
            let _ops = lock(&state.ops);
            fail_merge(state, id, format!("merge finished but the registry update failed: {err}"));
        }
    }
}

/// Records a failed merge and tells the service. The caller holds `ops`.
fn fail_merge(state: &State, id: SnapshotId, message: String) {
    let message = format!("{message}; run Rollback again to resume the merge");
    if let Err(err) = lifecycle::apply(&state.pool, id, &Input::MergeFailed(message.clone())) {
        tracing::error!(snapshot_id = id, %err, "recording the failed merge");
    }
    state.emit(BackendEvent::MergeFinished { id, ok: false, message });
    state.emit(BackendEvent::SnapshotChanged(id));
}

impl Backend for MemoryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        let registry = self.state.pool.registry();
        self.state
            .volumes
            .values()
            .map(|volume| VolumeInfo {
                name: volume.name.clone(),
                backing: PathBuf::from(format!("memory:{}", volume.name)),
                device: Some(PathBuf::from(format!("memory:{}", volume.name))),
                auto: volume.auto,
                state: sets::volume_state(&registry, &volume.name, true),
                size_bytes: volume.size_bytes,
            })
            .collect()
    }

    fn pool(&self) -> PoolStatus {
        sets::pool_status(&self.state.pool)
    }

    fn snapshots(&self) -> Vec<SnapshotSetInfo> {
        self.state.pool.registry().snapshot_sets.iter().map(|set| self.state.info(set)).collect()
    }

    fn snapshot(&self, id: SnapshotId) -> BackendResult<SnapshotSetInfo> {
        Ok(self.state.info(&self.state.record(id)?))
    }

    fn create_snapshot(&self, request: SnapshotRequest) -> BackendResult<SnapshotSetInfo> {
        let configured = self.state.volumes.values().map(|v| (v.name.as_str(), v.auto));
        let names = sets::requested_volumes(&request, configured)?;
        let _ops = lock(&self.state.ops);
        let registry = self.state.pool.registry();
        sets::refuse_if_rolling_back(&registry, &names)?;
        let counts: Vec<u64> = names
            .iter()
            .map(|name| {
                let size = self.state.volumes.get(name).map_or(0, |v| v.size_bytes);
                let bytes = request.cow_size_bytes.unwrap_or(size / 10);
                bytes.div_ceil(registry.extent_bytes).max(1)
            })
            .collect();
        let picked = registry.pick_free_extents(&counts).map_err(pool_error)?;
        if let Some(message) = self.state.take_fault(|f| &mut f.next_snapshot) {
            return Err(BackendError::backend(message));
        }
        let cows = names
            .iter()
            .zip(picked)
            .map(|(volume, extents)| CowRecord {
                volume: volume.clone(),
                chunk_sectors: CHUNK_SECTORS,
                extents,
            })
            .collect();
        let record = sets::new_record(registry.next_snapshot_id, &request, cows);
        sets::commit_new_set(&self.state.pool, &record)?;
        Ok(self.state.info(&record))
    }

    fn rollback(&self, id: SnapshotId) -> BackendResult<RollbackOutcome> {
        let _ops = lock(&self.state.ops);
        let record = self.state.record(id)?;
        let missing =
            lifecycle::missing_volumes(&record, |name| self.state.volumes.contains_key(name));
        let defer = !self.state.busy_volumes(&record).is_empty();
        let (_, effect) =
            lifecycle::apply(&self.state.pool, id, &Input::Rollback { defer, missing })?;
        self.state.emit(BackendEvent::SnapshotChanged(id));
        if effect != Effect::Merge {
            return Ok(RollbackOutcome::Scheduled);
        }
        spawn_merge(&self.state, id);
        Ok(RollbackOutcome::Merging)
    }

    fn cancel_rollback(&self, id: SnapshotId) -> BackendResult<()> {
        let _ops = lock(&self.state.ops);
        lifecycle::apply(&self.state.pool, id, &Input::CancelRollback)?;
        self.state.emit(BackendEvent::SnapshotChanged(id));
        Ok(())
    }

    fn open_volume(&self, id: SnapshotId, volume: &str) -> BackendResult<super::OpenedVolume> {
        lifecycle::check_open(&self.state.record(id)?, volume)?;
        Err(BackendError::backend(
            "the memory backend keeps its volumes in RAM and has no devices to open",
        ))
    }

    fn delete(&self, id: SnapshotId) -> BackendResult<()> {
        let _ops = lock(&self.state.ops);
        lifecycle::apply(&self.state.pool, id, &Input::Delete)?;
        lifecycle::forget(&self.state.pool, id)?;
        lock(&self.state.progress).remove(&id);
        self.state.emit(BackendEvent::SnapshotRemoved(id));
        Ok(())
    }

    fn update_metadata(
        &self,
        id: SnapshotId,
        description: Option<String>,
        userdata: BTreeMap<String, String>,
    ) -> BackendResult<SnapshotSetInfo> {
        let _ops = lock(&self.state.ops);
        sets::update_metadata(&self.state.pool, id, description, userdata)?;
        self.state.emit(BackendEvent::SnapshotChanged(id));
        Ok(self.state.info(&self.state.record(id)?))
    }

    fn refresh_boot_entries(&self) -> BackendResult<Vec<PathBuf>> {
        // No boot side: there is no /boot to write entries into.
        Ok(Vec::new())
    }

    fn set_event_sink(&self, sink: EventSink) {
        *self.state.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    fn shutdown(&self) -> BackendResult<()> {
        self.state.stop.store(true, Ordering::SeqCst);
        let threads: Vec<_> = lock(&self.state.threads).drain(..).collect();
        for thread in threads {
            if thread.join().is_err() {
                return Err(BackendError::backend("a merge thread of the memory backend panicked"));
            }
        }
        Ok(())
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!(%err, "shutting down the memory backend");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::{ErrorKind, SetState};

    fn backend() -> MemoryBackend {
        MemoryBackend::new(MemoryOptions {
            volumes: vec![MemoryVolume::new("root", 8 << 20, true)],
            ..MemoryOptions::default()
        })
        .unwrap()
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn a_merge_runs_its_steps_and_removes_the_set() {
        let backend = backend();
        let set = backend.create_snapshot(SnapshotRequest::default()).unwrap();
        assert_eq!(
            (set.id, set.state, set.volumes.clone()),
            (1, SetState::Active, vec!["root".into()])
        );
        assert_eq!(backend.rollback(1), Ok(RollbackOutcome::Merging));
        wait_until("the merged set to go", || backend.record(1).is_none());
        assert_eq!(backend.snapshot(1).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(backend.pool().used_bytes, 0, "its extents are free again");
    }

    #[test]
    fn a_busy_volume_schedules_and_a_failed_step_leaves_merge_failed_with_the_set_kept() {
        let backend = backend();
        backend.create_snapshot(SnapshotRequest::default()).unwrap();
        backend.set_busy("root", true);
        assert_eq!(backend.rollback(1), Ok(RollbackOutcome::Scheduled));
        assert_eq!(backend.snapshot(1).unwrap().state, SetState::MergeScheduled);
        backend.cancel_rollback(1).unwrap();
        backend.set_busy("root", false);

        backend.fail_next_merge_step("injected");
        assert_eq!(backend.rollback(1), Ok(RollbackOutcome::Merging));
        wait_until("the merge to fail", || {
            backend.record(1).is_some_and(|r| r.state == SetState::MergeFailed)
        });
        let record = backend.record(1).unwrap();
        assert!(record.merge_started);
        assert!(record.message.as_deref().is_some_and(|m| m.starts_with("injected")));
        // The lifecycle's rule, not one of this backend: a begun merge keeps its set.
        assert_eq!(backend.delete(1).unwrap_err().kind, ErrorKind::Busy);
        assert_eq!(backend.rollback(1), Ok(RollbackOutcome::Merging));
        wait_until("the retried merge to finish", || backend.record(1).is_none());
    }

    #[test]
    fn a_failing_pool_write_changes_nothing() {
        let backend = backend();
        backend.create_snapshot(SnapshotRequest::default()).unwrap();
        backend.fail_next_pool_write();
        assert_eq!(backend.delete(1).unwrap_err().kind, ErrorKind::Backend);
        assert_eq!(backend.record(1).map(|r| r.state), Some(SetState::Active));
        backend.delete(1).unwrap();
        assert!(backend.snapshots().is_empty());
    }
}
