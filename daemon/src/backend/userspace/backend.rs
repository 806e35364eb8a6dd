//! `UserspaceBackend`: the `Backend` trait over the engine, FUSE and loop devices.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::freeze;
use super::fuse_fs::FuseMount;
use super::loop_device;
use super::merge;
use super::monitor;
use super::state::{lock, pool_error, Shared, UserspaceOptions};
use super::volume::{Volume, CHUNK_SECTORS};
use crate::backend::boot_side::BootSide;
use crate::backend::lifecycle::{self, Effect, Input};
use crate::backend::sets;
use crate::backend::{
    Backend, BackendError, BackendEvent, BackendKind, BackendResult, EventSink, OpenedVolume,
    PoolStatus, RollbackOutcome, SnapshotId, SnapshotRequest, SnapshotSetInfo, VolumeInfo,
};
use crate::config::Config;
use crate::pool::{CowRecord, ExtentIo, Pool, SetState, SnapshotSetRecord, VolumeRecord};

/// Bytes zeroed at the start of a new COW: the header chunk and the first metadata area.
const COW_ZERO_BYTES: u64 = 2 * CHUNK_SECTORS as u64 * 512;

/// The userspace backend. Dropping it shuts it down.
pub struct UserspaceBackend {
    shared: Arc<Shared>,
    fuse: Mutex<Option<FuseMount>>,
}

impl fmt::Debug for UserspaceBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserspaceBackend")
            .field("pool", &self.shared.pool.path())
            .field("volumes", &self.shared.volumes.keys().collect::<Vec<_>>())
            .field("fuse_dir", &self.shared.options.fuse_dir)
            .finish()
    }
}

impl UserspaceBackend {
    /// Assembles every configured volume with default options.
    pub fn open(config: &Config, pool: Pool) -> BackendResult<UserspaceBackend> {
        UserspaceBackend::open_with(config, pool, UserspaceOptions::default())
    }

    /// Assembles every configured volume: engine origins, snapshots from the registry, the FUSE
    /// filesystem and loop devices; then resumes pending rollbacks.
    pub fn open_with(
        config: &Config,
        pool: Pool,
        options: UserspaceOptions,
    ) -> BackendResult<UserspaceBackend> {
        let mut volumes = BTreeMap::new();
        for volume in &config.volumes {
            let opened = Volume::open(&volume.name, &volume.device, volume.auto, volume.cow_size)?;
            if let Some(bytes) = options.merge_step_bytes {
                opened.set_merge_step_bytes(bytes);
            }
            volumes.insert(volume.name.clone(), Arc::new(opened));
        }
        register_volumes(&pool, &volumes)?;
        lifecycle::check_start(&pool.registry(), |name| volumes.contains_key(name))?;
        let shared = Arc::new(Shared::new(pool, options, volumes, BootSide::new(&config.boot)));
        let backend = UserspaceBackend { shared: shared.clone(), fuse: Mutex::new(None) };

        attach_registered_snapshots(&shared);
        for (name, volume) in &shared.volumes {
            shared.files.insert(name, volume.served_file());
        }
        detach_stale_loops(&shared);
        let mount = FuseMount::mount(
            &shared.options.fuse_dir,
            shared.files.clone(),
            shared.options.fuse_threads,
            shared.options.io_trace.as_deref(),
        )
            .map_err(|err| {
                BackendError::backend(format!(
                    "cannot mount the volume filesystem at {}: {err} (is /dev/fuse there and are we root?)",
                    shared.options.fuse_dir.display()
                ))
            })?;
        *lock(&backend.fuse) = Some(mount);
        // Before any merge resumes: a merge that finishes forgets its set's boot records.
        shared.boot.settle_all(&shared.pool);
        resume_pending_rollbacks(&shared);
        for (name, volume) in &shared.volumes {
            let file = shared.options.fuse_dir.join(name);
            let device = loop_device::attach(&file).map_err(|err| {
                BackendError::backend(format!("volume {name}: cannot attach a loop device: {err}"))
            })?;
            tracing::info!(volume = %name, device = %device.display(), "volume {name} assembled at {}", device.display());
            volume.set_device(Some(device));
        }
        monitor::spawn(&shared)
            .map_err(|err| BackendError::backend(format!("cannot start the monitor: {err}")))?;
        Ok(backend)
    }

    fn snapshot_file_name(volume: &str, id: SnapshotId) -> String {
        format!("{volume}@{id}")
    }

    fn publish_snapshot_files(&self, id: SnapshotId, volumes: &[String]) {
        if !self.shared.options.snapshot_files {
            return;
        }
        for name in volumes {
            if let Some(view) = self.shared.volumes.get(name).and_then(|v| v.snapshot_view(id)) {
                self.shared.files.insert(&Self::snapshot_file_name(name, id), view);
            }
        }
    }

    /// Picks the volumes of a new set.
    fn requested_volumes(&self, request: &SnapshotRequest) -> BackendResult<Vec<Arc<Volume>>> {
        let configured = self.shared.volumes.values().map(|v| (v.name.as_str(), v.auto));
        sets::requested_volumes(request, configured)?
            .iter()
            .map(|name| self.shared.volume(name).cloned())
            .collect()
    }

    fn cow_bytes(volume: &Volume, request: &SnapshotRequest) -> u64 {
        request.cow_size_bytes.or(volume.cow_size).unwrap_or(volume.size_bytes / 10)
    }
}

/// Records configured volumes in the registry; refuses a volume whose backing device changed
/// while snapshots of it exist.
fn register_volumes(pool: &Pool, volumes: &BTreeMap<String, Arc<Volume>>) -> BackendResult<()> {
    let records: Vec<VolumeRecord> = volumes
        .values()
        .map(|volume| VolumeRecord {
            name: volume.name.clone(),
            backing: volume.backing.clone(),
            size_bytes: volume.size_bytes,
        })
        .collect();
    sets::register_volumes(pool, &records)
}

/// Attaches every registered COW to its configured volume's origin. A set naming a volume
/// that is not configured keeps its state and its other COWs (a configuration change never
/// costs a set); a COW that cannot be attached makes its set invalid, unless its merge has
/// begun (the merge then reports the failure and the set stays whole for a retry).
fn attach_registered_snapshots(shared: &Shared) {
    let registry = shared.pool.registry();
    for set in &registry.snapshot_sets {
        let mut problem = None;
        for cow in &set.cows {
            let Some(volume) = shared.volumes.get(&cow.volume) else {
                tracing::warn!(snapshot_id = set.id, volume = %cow.volume,
                    "snapshot set {} includes volume {} that is not configured; the set is kept as it is",
                    set.id, cow.volume);
                continue;
            };
            let io = Arc::new(shared.pool.extent_io(&cow.extents));
            if let Err(err) = volume.attach(set.id, io) {
                tracing::error!(snapshot_id = set.id, volume = %cow.volume, %err, "cannot attach snapshot");
                problem = Some(err.to_string());
            }
        }
        if shared.options.snapshot_files {
            for cow in &set.cows {
                if let Some(view) =
                    shared.volumes.get(&cow.volume).and_then(|v| v.snapshot_view(set.id))
                {
                    shared
                        .files
                        .insert(&UserspaceBackend::snapshot_file_name(&cow.volume, set.id), view);
                }
            }
        }
        if let Some(problem) = problem {
            if let Err(err) = lifecycle::apply(&shared.pool, set.id, &Input::Invalidated(problem)) {
                tracing::error!(snapshot_id = set.id, %err, "cannot record invalid snapshot");
            }
        }
    }
}

/// Detaches the loop devices an earlier snapbackd left (see [`loop_device::detach_stale`]) and
/// remembers those still mounted: the file system on such a device is the volume's, still
/// mounted from before this start (its I/O fails, the daemon serving it is gone), so no
/// scheduled rollback may merge under it. Under systemd this is the normal case of a restart
/// with a volume mounted: the service's mount namespace, and the FUSE mount in it, go with
/// every stop.
fn detach_stale_loops(shared: &Shared) {
    let served: Vec<(String, u64)> =
        shared.volumes.values().map(|v| (v.name.clone(), v.size_bytes)).collect();
    let mut in_use = Vec::new();
    for stale in
        loop_device::detach_stale(&shared.options.fuse_dir, &served, &shared.files.inodes())
    {
        if loop_device::wait_detached(&stale.device, std::time::Duration::from_secs(2)) {
            tracing::warn!(device = %stale.device.display(), "detached a loop device left by an earlier snapbackd");
        } else if let Some(volume) = stale.volume() {
            tracing::warn!(device = %stale.device.display(), volume = %volume,
                "{} (volume {volume}) is still in use from before this start (mounted?): unmount it and use \
                 the volume's new device; it detaches when released, and rollbacks of the volume wait until then",
                stale.device.display());
            in_use.push(stale);
        } else {
            tracing::warn!(device = %stale.device.display(), "a loop device left by an earlier snapbackd is still in use; it detaches when released");
        }
    }
    *lock(&shared.stale_in_use) = in_use;
}

/// Starts the merges of sets whose rollback was scheduled, running when snapbackd stopped, or
/// failed (a half-merged volume is only whole again through its snapshot, so it is retried).
/// A rollback that has not begun waits while a volume of its set is still mounted from before
/// this start; one that has begun always resumes, since the engine's merge is also what makes
/// the volume read as the snapshot while the rest is still in the COW.
fn resume_pending_rollbacks(shared: &Arc<Shared>) {
    let registry = shared.pool.registry();
    for id in registry.pending_rollbacks() {
        let Some(set) = registry.set(id) else { continue };
        let missing = lifecycle::missing_volumes(set, |name| shared.volumes.contains_key(name));
        let busy: Vec<String> = set
            .volumes()
            .into_iter()
            .filter(|name| shared.stale_device_in_use(name).is_some())
            .collect();
        let defer = !set.merge_started && !busy.is_empty();
        match lifecycle::apply(&shared.pool, id, &Input::Start { defer, missing: missing.clone() }) {
            Ok((_, Effect::Merge)) => {
                tracing::info!(snapshot_id = id, "starting pending rollback of snapshot set {id}");
                if let Err(err) = start_merges(shared, id) {
                    tracing::error!(snapshot_id = id, %err, "cannot start pending rollback");
                }
            }
            Ok(_) if !missing.is_empty() => tracing::warn!(snapshot_id = id, ?missing,
                "rollback of snapshot set {id} waits: a volume of it is not configured"),
            Ok(_) => tracing::info!(snapshot_id = id, ?busy,
                "rollback of snapshot set {id} stays scheduled: volumes still mounted from before this start"),
            Err(err) => tracing::error!(snapshot_id = id, %err, "cannot resume rollback"),
        }
    }
}

/// The engine side of a merge the lifecycle has committed (state `merging`): starts the engine
/// merge of every volume and the merge threads. A failure is recorded as `merge-failed`.
fn start_merges(shared: &Arc<Shared>, id: SnapshotId) -> BackendResult<()> {
    let record = shared.record(id)?;
    let started = record
        .volumes()
        .iter()
        .map(|name| shared.volume(name).cloned())
        .collect::<BackendResult<Vec<_>>>()
        .and_then(|volumes| {
            for volume in &volumes {
                volume.start_merge(id)?;
            }
            Ok(volumes)
        });
    match started {
        Ok(volumes) => {
            merge::spawn(shared, id, volumes);
            Ok(())
        }
        Err(err) => {
            // Whatever started is resumed by the next Rollback or start: merge-failed keeps
            // the set, and Delete refuses a set whose merge has begun.
            merge::fail(shared, id, err.to_string());
            Err(err)
        }
    }
}

/// Holds every loop device that presents a snapshot of `record` (`OpenVolume`) exclusively, or
/// refuses with `Busy` naming the first one in use (mounted, or held exclusively by someone):
/// a merge or a delete must never run under a mounted snapshot. The holds keep anyone from
/// mounting one until [`release_snapshot_loops`].
fn hold_snapshot_loops(
    shared: &Shared,
    record: &SnapshotSetRecord,
    doing: &str,
) -> BackendResult<Vec<(PathBuf, loop_device::ExclusiveHold)>> {
    let mut holds = Vec::new();
    for name in record.volumes() {
        let file =
            shared.options.fuse_dir.join(UserspaceBackend::snapshot_file_name(&name, record.id));
        for device in loop_device::bound_to(&file) {
            match loop_device::hold_exclusive(&device) {
                Ok(Some(hold)) => holds.push((device, hold)),
                Ok(None) => {
                    let points = loop_device::mount_points(&device);
                    let where_ = if points.is_empty() {
                        "in use".to_string()
                    } else {
                        format!("mounted at {}", points.join(", "))
                    };
                    return Err(BackendError::busy(format!(
                        "cannot {doing} snapshot set {}: the snapshot of volume {name} is open at {} \
                         ({where_}); unmount it first (snapbackctl umount {} {name})",
                        record.id,
                        device.display(),
                        record.id
                    )));
                }
                Err(err) => {
                    return Err(BackendError::backend(format!(
                        "checking whether {} is in use: {err}",
                        device.display()
                    ))
                    .caused_by(err))
                }
            }
        }
    }
    Ok(holds)
}

/// Detaches the snapshot loop devices held by [`hold_snapshot_loops`]: detached while still
/// held, the kernel lets each go at the hold's close, so nothing can mount it in between.
fn release_snapshot_loops(holds: Vec<(PathBuf, loop_device::ExclusiveHold)>) {
    for (device, hold) in holds {
        if let Err(err) = loop_device::detach(&device) {
            tracing::warn!(device = %device.display(), %err, "cannot detach a snapshot's loop device");
        }
        drop(hold);
    }
}

/// Whether the engine already found a snapshot of the set invalid (the monitor may not have
/// reported it yet). A set never rolls back halfway: every member must be mergeable first.
fn invalid_member(shared: &Shared, record: &SnapshotSetRecord) -> Option<String> {
    record.volumes().into_iter().find(|name| {
        shared.volumes.get(name).and_then(|v| v.figures(record.id)).is_some_and(|f| f.invalid)
    })
}

impl Backend for UserspaceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        let registry = self.shared.pool.registry();
        self.shared
            .volumes
            .values()
            .map(|volume| {
                let device = volume.device();
                let state = sets::volume_state(&registry, &volume.name, device.is_some());
                VolumeInfo {
                    name: volume.name.clone(),
                    backing: volume.backing.clone(),
                    device,
                    auto: volume.auto,
                    state,
                    size_bytes: volume.size_bytes,
                }
            })
            .collect()
    }

    fn pool(&self) -> PoolStatus {
        sets::pool_status(&self.shared.pool)
    }

    fn snapshots(&self) -> Vec<SnapshotSetInfo> {
        self.shared.pool.registry().snapshot_sets.iter().map(|set| self.shared.info(set)).collect()
    }

    fn snapshot(&self, id: SnapshotId) -> BackendResult<SnapshotSetInfo> {
        Ok(self.shared.info(&self.shared.record(id)?))
    }

    fn create_snapshot(&self, request: SnapshotRequest) -> BackendResult<SnapshotSetInfo> {
        let volumes = self.requested_volumes(&request)?;
        let _ops = lock(&self.shared.ops);
        let registry = self.shared.pool.registry();
        let names: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
        sets::refuse_if_rolling_back(&registry, &names)?;
        // 1. Pick every extent first: a full pool fails here, before anything changed.
        let counts = volumes
            .iter()
            .map(|volume| Self::cow_bytes(volume, &request).div_ceil(registry.extent_bytes).max(1))
            .collect::<Vec<u64>>();
        let picked = registry.pick_free_extents(&counts).map_err(pool_error)?;
        let all: Vec<u64> = picked.iter().flatten().copied().collect();
        // 2. Zero the COW starts so the engine makes new stores there.
        self.shared.pool.zero_extent_starts(&all, COW_ZERO_BYTES).map_err(pool_error)?;
        let id = registry.next_snapshot_id;
        let cows: Vec<Arc<ExtentIo>> =
            picked.iter().map(|extents| Arc::new(self.shared.pool.extent_io(extents))).collect();
        // 3. Take the set: flush and freeze the file systems on the volumes, suspend every
        // origin, attach, resume, thaw.
        flush_filesystems();
        let devices: Vec<PathBuf> = volumes.iter().filter_map(|volume| volume.device()).collect();
        let frozen = freeze::freeze_mounted(&devices);
        let suspended_at = Instant::now();
        for volume in &volumes {
            volume.suspend();
        }
        let mut attached = Vec::new();
        let mut failure = None;
        for (volume, cow) in volumes.iter().zip(&cows) {
            match volume.attach(id, cow.clone()) {
                Ok(()) => attached.push(volume.clone()),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if failure.is_some() {
            for volume in &attached {
                let _ = volume.detach(id);
            }
        }
        for volume in &volumes {
            volume.resume();
        }
        let suspended = suspended_at.elapsed();
        let frozen_count = frozen.mountpoints().len();
        // Thaw before anything logs: the journal may live on one of these file systems.
        drop(frozen);
        if let Some(err) = failure {
            return Err(err);
        }
        tracing::info!(
            snapshot_id = id,
            suspended_us = suspended.as_micros() as u64,
            frozen_filesystems = frozen_count,
            "origins suspended while taking the set"
        );
        // 4. One registry commit makes the set real.
        let cows = volumes
            .iter()
            .zip(&picked)
            .map(|(volume, extents)| CowRecord {
                volume: volume.name.clone(),
                chunk_sectors: CHUNK_SECTORS,
                extents: extents.clone(),
            })
            .collect();
        let record = sets::new_record(id, &request, cows);
        if let Err(err) = sets::commit_new_set(&self.shared.pool, &record) {
            for volume in &volumes {
                let _ = volume.detach(id);
            }
            return Err(err);
        }
        let names = record.volumes();
        self.publish_snapshot_files(id, &names);
        self.shared.boot.record_new_set(&self.shared.pool, &record, |name| {
            self.shared.volumes.get(name).and_then(|v| v.device())
        });
        tracing::info!(snapshot_id = id, volumes = ?names, description = %record.description, "snapshot set created");
        // Read again: the boot side may have added the set's boot record since.
        Ok(self.shared.info(&self.shared.record(id).unwrap_or(record)))
    }

    fn rollback(&self, id: SnapshotId) -> BackendResult<RollbackOutcome> {
        let _ops = lock(&self.shared.ops);
        let record = self.shared.record(id)?;
        let missing =
            lifecycle::missing_volumes(&record, |name| self.shared.volumes.contains_key(name));
        // Refusals and the idempotent repeat come before any device is touched.
        lifecycle::next(
            &self.shared.pool.registry(),
            &record,
            &Input::Rollback { defer: true, missing: missing.clone() },
        )?;
        if record.state == SetState::MergeScheduled {
            return Ok(RollbackOutcome::Scheduled);
        }
        if !record.merge_started {
            if let Some(volume) = invalid_member(&self.shared, &record) {
                let why = format!("the snapshot of volume {volume} filled up or failed");
                let (record, _) =
                    lifecycle::apply(&self.shared.pool, id, &Input::Invalidated(why))?;
                self.shared.emit(BackendEvent::SnapshotChanged(id));
                return Err(lifecycle::invalid_error(&record));
            }
        }
        // A mounted snapshot refuses the rollback outright (it is no state of the volumes the
        // next start could wait for: it is the user's, and the merge would pull it away).
        let snapshot_holds = if record.merge_started {
            Vec::new()
        } else {
            hold_snapshot_loops(&self.shared, &record, "roll back")?
        };
        // Busy = a volume's device is mounted or held exclusively: then the whole set waits
        // for the next assembly. Holding every device exclusively keeps it unmounted until the
        // merges have started.
        let mut holds = Vec::new();
        let mut busy = Vec::new();
        for name in record.volumes() {
            let volume = self.shared.volume(&name)?;
            if self.shared.stale_device_in_use(&name).is_some() {
                busy.push(name.clone());
                continue;
            }
            let Some(device) = volume.device() else { continue };
            match loop_device::hold_exclusive(&device) {
                Ok(Some(hold)) => holds.push((device, hold)),
                Ok(None) => busy.push(name.clone()),
                Err(err) => {
                    return Err(BackendError::backend(format!(
                        "checking whether {} is in use: {err}",
                        device.display()
                    )))
                }
            }
        }
        if !busy.is_empty() {
            self.shared.boot.keep_undo(&self.shared.pool, &record)?;
        }
        let (_, effect) = lifecycle::apply(
            &self.shared.pool,
            id,
            &Input::Rollback { defer: !busy.is_empty(), missing },
        )?;
        if let Err(err) = self.shared.boot.settle(&self.shared.pool, id) {
            self.shared.emit(BackendEvent::SnapshotChanged(id));
            return Err(err);
        }
        if effect != Effect::Merge {
            tracing::info!(snapshot_id = id, busy = ?busy, "volumes in use: rollback scheduled for the next start");
            self.shared.emit(BackendEvent::SnapshotChanged(id));
            return Ok(RollbackOutcome::Scheduled);
        }
        for (device, _) in &holds {
            if let Err(err) = loop_device::flush_buffers(device) {
                tracing::warn!(device = %device.display(), %err, "dropping the buffer cache before the merge");
            }
        }
        let started = start_merges(&self.shared, id);
        release_snapshot_loops(snapshot_holds);
        drop(holds);
        self.shared.emit(BackendEvent::SnapshotChanged(id));
        started?;
        tracing::info!(snapshot_id = id, "rollback merging");
        Ok(RollbackOutcome::Merging)
    }

    fn cancel_rollback(&self, id: SnapshotId) -> BackendResult<()> {
        let _ops = lock(&self.shared.ops);
        lifecycle::apply(&self.shared.pool, id, &Input::CancelRollback)?;
        self.shared.emit(BackendEvent::SnapshotChanged(id));
        self.shared.boot.settle(&self.shared.pool, id)
    }

    fn delete(&self, id: SnapshotId) -> BackendResult<()> {
        let _ops = lock(&self.shared.ops);
        let current = self.shared.record(id)?;
        // Refusals of the lifecycle come first, so that "cancel first" is not hidden behind
        // "unmount first"; then nothing is committed while a snapshot is mounted.
        lifecycle::next(&self.shared.pool.registry(), &current, &Input::Delete)?;
        let snapshot_holds = hold_snapshot_loops(&self.shared, &current, "delete")?;
        let (record, _) = lifecycle::apply(&self.shared.pool, id, &Input::Delete)?;
        release_snapshot_loops(snapshot_holds);
        // Registry first: the extents are only reused after this (under the same lock).
        lifecycle::forget(&self.shared.pool, id)?;
        for name in record.volumes() {
            self.shared.files.remove(&Self::snapshot_file_name(&name, id));
            if let Some(volume) = self.shared.volumes.get(&name) {
                if let Err(err) = volume.detach(id) {
                    tracing::warn!(snapshot_id = id, volume = %name, %err, "detaching deleted snapshot");
                }
            }
        }
        tracing::info!(snapshot_id = id, "snapshot set deleted");
        self.shared.boot.refresh_entries(&self.shared.pool);
        self.shared.emit(BackendEvent::SnapshotRemoved(id));
        Ok(())
    }

    fn open_volume(&self, id: SnapshotId, volume: &str) -> BackendResult<OpenedVolume> {
        let _ops = lock(&self.shared.ops);
        lifecycle::check_open(&self.shared.record(id)?, volume)?;
        let attached = self.shared.volume(volume)?.attached(id).is_some();
        if !attached || !self.shared.options.snapshot_files {
            return Err(BackendError::backend(format!(
                "snapshot set {id}: the snapshot of volume {volume} is not served (see the journal: \
                 journalctl -u snapbackd)"
            )));
        }
        let file = self.shared.options.fuse_dir.join(Self::snapshot_file_name(volume, id));
        let device = loop_device::attach_read_only(&file).map_err(|err| {
            BackendError::backend(format!(
                "snapshot set {id}: cannot attach a loop device to {}: {err}",
                file.display()
            ))
            .caused_by(err)
        })?;
        let opened = std::fs::File::open(&device).map_err(|err| {
            BackendError::backend(format!("cannot open {}: {err}", device.display())).caused_by(err)
        })?;
        tracing::info!(snapshot_id = id, volume, device = %device.display(), "snapshot opened read-only");
        Ok(OpenedVolume { device, file: opened })
    }

    fn update_metadata(
        &self,
        id: SnapshotId,
        description: Option<String>,
        userdata: BTreeMap<String, String>,
    ) -> BackendResult<SnapshotSetInfo> {
        let _ops = lock(&self.shared.ops);
        sets::update_metadata(&self.shared.pool, id, description, userdata)?;
        self.shared.emit(BackendEvent::SnapshotChanged(id));
        Ok(self.shared.info(&self.shared.record(id)?))
    }

    fn refresh_boot_entries(&self) -> BackendResult<Vec<PathBuf>> {
        let _ops = lock(&self.shared.ops);
        Ok(self.shared.boot.refresh_entries(&self.shared.pool))
    }

    fn set_event_sink(&self, sink: EventSink) {
        self.shared.set_sink(sink);
    }

    fn shutdown(&self) -> BackendResult<()> {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
        let mut problems = Vec::new();
        for volume in self.shared.volumes.values() {
            // Closed before anything else: a volume still mounted keeps being served by FUSE
            // until its last user goes, and must not take writes its snapshots would miss.
            if let Err(err) = volume.close() {
                problems.push(err.to_string());
            }
            if let Some(device) = volume.device() {
                if let Err(err) = loop_device::detach(&device) {
                    problems.push(format!("detaching {}: {err}", device.display()));
                } else if !loop_device::wait_detached(&device, std::time::Duration::from_secs(5)) {
                    tracing::warn!(volume = %volume.name, device = %device.display(),
                        "loop device still in use (mounted?); it detaches when released, and writes to it \
                         fail until then: unmount it and use the volume's device after the next start");
                }
                volume.set_device(None);
            }
        }
        // The snapshots' loop devices (`OpenVolume`) go too: left bound, they would keep the
        // volume filesystem mounted after we exit. One still mounted detaches at its last
        // close; its reads fail from now on, and no byte of the snapshot changes.
        for set in &self.shared.pool.registry().snapshot_sets {
            for name in set.volumes() {
                let file =
                    self.shared.options.fuse_dir.join(Self::snapshot_file_name(&name, set.id));
                for device in loop_device::bound_to(&file) {
                    if let Err(err) = loop_device::detach(&device) {
                        problems.push(format!("detaching {}: {err}", device.display()));
                    } else if !loop_device::wait_detached(
                        &device,
                        std::time::Duration::from_secs(5),
                    ) {
                        tracing::warn!(snapshot_id = set.id, volume = %name, device = %device.display(),
                            "a snapshot's loop device is still in use (mounted?); it detaches when released");
                    }
                }
            }
        }
        if let Some(mut mount) = lock(&self.fuse).take() {
            mount.unmount();
        }
        // Snapshots are never detached here: their COWs are committed by the flush above, and
        // an engine origin without them would no longer copy before writing.
        tracing::info!("userspace backend shut down");
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BackendError::backend(problems.join("; ")))
        }
    }
}

impl Drop for UserspaceBackend {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!(%err, "shutting down the userspace backend");
        }
    }
}

/// Flushes every file system before the freeze, so the freeze itself is short. Done by a child
/// `sync`, never by a sync(2) of our own: flushing a file system on one of our volumes waits for
/// FUSE requests that this process serves, and a thread of ours waiting uninterruptibly for
/// them would keep a SIGKILLed daemon from ever exiting (its FUSE threads are gone, so nothing
/// answers, and the FUSE connection is aborted only when the process has exited). A child
/// stuck that way is released when we exit; a failure only costs a longer freeze.
fn flush_filesystems() {
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            tracing::warn!(%status, "sync before the snapshot failed; the freeze flushes")
        }
        Err(err) => tracing::warn!(%err, "cannot run sync before the snapshot; the freeze flushes"),
    }
}
