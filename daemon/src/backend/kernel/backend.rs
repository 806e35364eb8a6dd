//! `KernelBackend`: the `Backend` trait over the kernel's dm-snapshot targets.
//!
//! The pool's registry is the truth; the dm stacks are rebuilt from it (`assemble_all`, which
//! is also what `snapbackd activate` runs at boot). A monitor thread follows merges and COW
//! usage through the kernel's status lines, because the kernel merges on its own once
//! `snapshot-merge` is loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::dm::{self, DmControl, DmError};
use super::names;
use super::stack::{self, CowSpec, SetMember, VolumeSpec};
use super::status::KernelSnapshotStatus;
use super::table::{DevNum, OnFull, Segment};
use crate::backend::boot_side::BootSide;
use crate::backend::lifecycle::{self, Effect, Input};
use crate::backend::sets::{self, lock, pool_error};
use crate::backend::{
    Backend, BackendError, BackendEvent, BackendKind, BackendResult, EventSink, OpenedVolume,
    PoolStatus, RollbackOutcome, SnapshotId, SnapshotRequest, SnapshotSetInfo, VolumeInfo,
};
use crate::config::Config;
use crate::pool::{
    CowRecord, Pool, PoolError, Registry, SetState, SnapshotSetRecord, VolumeRecord,
};

/// The kernel's default chunk size (16 KiB), also the engine's.
pub const CHUNK_SECTORS: u32 = 32;
/// Bytes zeroed at the start of a new COW: header chunk and first metadata area.
const COW_ZERO_BYTES: u64 = 2 * CHUNK_SECTORS as u64 * 512;
/// A COW fuller than this is grown from the pool (LVM's autoextend threshold).
const AUTOEXTEND_THRESHOLD: f64 = 0.8;
const MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// Target types the kernel must have for this backend.
pub const REQUIRED_TARGETS: [&str; 3] = ["snapshot", "snapshot-origin", "snapshot-merge"];

fn dm_error(e: DmError) -> BackendError {
    BackendError::backend(e.to_string()).caused_by(e)
}

/// Refuses while a snapshot device of set `id` is open (mounted through `OpenVolume`, or read
/// by anyone): a merge removes that device and a delete frees the COW under it.
fn refuse_open_snapshots(
    dm: &DmControl,
    volumes: &BTreeMap<String, Volume>,
    set: &SnapshotSetRecord,
    doing: &str,
) -> BackendResult<()> {
    for name in set.volumes() {
        let Some(volume) = volumes.get(&name) else { continue };
        if let Err(e) = stack::check_snapshot_closed(dm, &volume.spec, set.id) {
            let device = dm::mapper_path(&volume.spec.name(names::Role::Snapshot(set.id)));
            return Err(BackendError::busy(format!(
                "cannot {doing} snapshot set {}: the snapshot of volume {name} is in use at {} \
                 (mounted?); unmount it first (snapbackctl umount {} {name})",
                set.id,
                device.display(),
                set.id
            ))
            .caused_by(e));
        }
    }
    Ok(())
}

/// Major and minor numbers of a block device node.
pub fn block_dev_num(path: &Path) -> Result<DevNum, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_block_device() {
        return Err(format!(
            "{} is not a block device; the kernel backend maps block devices only (attach a loop device to a file)",
            path.display()
        ));
    }
    let rdev = meta.rdev();
    Ok(DevNum { major: rustix::fs::major(rdev), minor: rustix::fs::minor(rdev) })
}

/// Whether this kernel can run the kernel backend, and why not.
pub fn kernel_supported() -> Result<(), String> {
    let dm = DmControl::open().map_err(|e| e.to_string())?;
    let targets = dm.target_versions().map_err(|e| e.to_string())?;
    let missing: Vec<&str> = REQUIRED_TARGETS
        .iter()
        .copied()
        .filter(|t| !targets.iter().any(|(name, ..)| name == t))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("device-mapper targets missing: {} (modprobe dm-snapshot)", missing.join(", ")))
    }
}

#[derive(Debug, Clone)]
struct Volume {
    spec: VolumeSpec,
    backing: PathBuf,
    auto: bool,
    cow_size: Option<u64>,
}

struct Inner {
    pool: Pool,
    boot: BootSide,
    pool_dev: DevNum,
    dm: DmControl,
    volumes: BTreeMap<String, Volume>,
    sink: RwLock<Option<EventSink>>,
    /// Serializes every change of snapshot sets (API calls and the monitor).
    ops: Mutex<()>,
    /// Merge progress per merging set (0..1), from the kernel's status lines.
    progress: Mutex<BTreeMap<SnapshotId, f64>>,
    /// Sets the kernel invalidated, or whose merge it stopped, with the new state not recorded
    /// yet (the pool failed): the monitor retries every tick, and says so once.
    unrecorded_failures: Mutex<BTreeSet<SnapshotId>>,
    stop: AtomicBool,
}

/// The kernel backend. Dropping it stops the monitor; the dm stacks stay up (they are the
/// system's volumes, in use by mounted filesystems).
pub struct KernelBackend {
    inner: Arc<Inner>,
    monitor: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for KernelBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelBackend")
            .field("pool", &self.inner.pool.path())
            .field("volumes", &self.inner.volumes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Inner {
    fn emit(&self, event: BackendEvent) {
        let sink = self.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            sink(event);
        }
    }

    fn volume(&self, name: &str) -> BackendResult<&Volume> {
        self.volumes.get(name).ok_or_else(|| {
            BackendError::not_found(format!("no volume named {name:?} is configured"))
        })
    }

    fn record(&self, id: SnapshotId) -> BackendResult<SnapshotSetRecord> {
        sets::record(&self.pool, id)
    }

    /// Runs a lifecycle input on set `id` and reports a state change on the bus.
    fn apply(&self, id: SnapshotId, input: &Input) -> BackendResult<(SnapshotSetRecord, Effect)> {
        let before = self.record(id)?.state;
        let result = lifecycle::apply(&self.pool, id, input)?;
        if result.0.state != before {
            self.emit(BackendEvent::SnapshotChanged(id));
        }
        Ok(result)
    }

    fn cow_spec(&self, registry: &Registry, id: SnapshotId, cow: &CowRecord) -> CowSpec {
        let sectors_per_extent = registry.extent_bytes / 512;
        let base = registry.data_offset / 512;
        CowSpec {
            id,
            pool: self.pool_dev,
            segments: cow
                .extents
                .iter()
                .map(|&e| Segment {
                    start_sector: base + e * sectors_per_extent,
                    sectors: sectors_per_extent,
                })
                .collect(),
            chunk_sectors: cow.chunk_sectors,
        }
    }

    /// Builds (or checks) every volume's stack from the registry. Rollbacks that were asked
    /// for become running merges here (the lifecycle's `Start`, committed before the devices
    /// change), and a volume that is already merging is never turned back into a plain origin:
    /// its `-real` device holds part of the snapshot's data.
    fn assemble_all(&self) -> BackendResult<()> {
        lifecycle::check_start(&self.pool.registry(), |name| self.volumes.contains_key(name))?;
        let registry = self.pool.registry();
        self.remove_strays(&registry);
        for id in registry.pending_rollbacks() {
            let Some(set) = registry.set(id) else { continue };
            let missing = lifecycle::missing_volumes(set, |name| self.volumes.contains_key(name));
            let defer = !self.must_wait(set)?.is_empty();
            let (record, effect) = self.apply(id, &Input::Start { defer, missing })?;
            match effect {
                Effect::Merge if set.state == SetState::Merging => {
                    tracing::info!(snapshot_id = id, "merge of snapshot set {id} is running; following it")
                }
                Effect::Merge => tracing::info!(snapshot_id = id, "pending rollback of snapshot set {id} started"),
                _ => tracing::warn!(snapshot_id = id, state = record.state.as_str(),
                    "a volume of snapshot set {id} is in use or not configured: its rollback waits for the next boot"),
            }
        }
        let registry = self.pool.registry();
        for (name, volume) in &self.volumes {
            let already_merging = self.merging_now(volume)?;
            let mut snapshots = Vec::new();
            let mut merging = None;
            for set in &registry.snapshot_sets {
                let Some(cow) = set.cows.iter().find(|c| &c.volume == name) else { continue };
                // An invalid set gets no new device: the kernel could not read it anyway, and
                // when its COW failed the kernel may not have been able to mark the COW's
                // header invalid, so loading it again (at the next boot) would present an
                // incomplete snapshot as whole. One still loaded (a restart in the same boot)
                // stays until Delete: it holds `-real`, so the origin must stay over it.
                if set.state == SetState::Invalid
                    && !stack::snapshot_loaded(&self.dm, &volume.spec, set.id).map_err(dm_error)?
                {
                    continue;
                }
                let spec = self.cow_spec(&registry, set.id, cow);
                let merge_here = set.state == SetState::Merging
                    || (already_merging && lifecycle::rollback_under_way(set));
                if merge_here {
                    merging = Some(spec);
                } else {
                    snapshots.push(spec);
                }
            }
            let device = stack::assemble(
                &self.dm,
                &volume.spec,
                &snapshots,
                merging.as_ref(),
                OnFull::Invalidate,
            )
            .map_err(dm_error)?;
            tracing::info!(volume = %name, device = %device.display(), merging = merging.is_some(),
                "volume {name} assembled at {}{}", device.display(), if merging.is_some() { " (merging)" } else { "" });
        }
        Ok(())
    }

    /// `snapback.rollback=N` from the boot menu: the set's rollback is committed before any
    /// volume is assembled, so `assemble_all` starts its merge before root is mounted. Any
    /// refusal (no such set, invalid, another rollback under way) boots normally and says why
    /// on the console and in the journal.
    fn rollback_at_boot(&self, id: SnapshotId) {
        let outcome = self.record(id).and_then(|record| {
            let missing =
                lifecycle::missing_volumes(&record, |name| self.volumes.contains_key(name));
            if record.state == SetState::Merging {
                return Ok(());
            }
            // Nothing is mounted yet at this point of the boot: nothing makes it wait.
            self.apply(id, &Input::Rollback { defer: false, missing }).map(drop)
        });
        match outcome {
            Ok(()) => tracing::info!(
                snapshot_id = id,
                "snapback.rollback={id} on the kernel command line: rolling back snapshot set {id}"
            ),
            Err(err) => {
                eprintln!("snapback: snapback.rollback={id} ignored, booting normally: {err}");
                tracing::warn!(snapshot_id = id, %err, "snapback.rollback={id} on the kernel command line ignored; booting normally");
            }
        }
    }

    /// Whether the volume's device is already `snapshot-merge`.
    fn merging_now(&self, volume: &Volume) -> BackendResult<bool> {
        Ok(stack::origin_target(&self.dm, &volume.spec).map_err(dm_error)?.as_deref()
            == Some("snapshot-merge"))
    }

    /// The volumes of `set` a merge cannot start on now: in use (mounted) and not already
    /// merging, since starting a merge under a mounted file system would change its data under
    /// it; and merging, but stopped by the kernel (`Merge failed`): the kernel refuses a second
    /// `snapshot-merge` table over the same COW (EINVAL, seen in the VM), so a failed kernel
    /// merge starts again only on a freshly assembled volume, at the next boot. At boot
    /// (`activate`) no volume exists yet, so nothing waits.
    fn must_wait(&self, set: &SnapshotSetRecord) -> BackendResult<Vec<String>> {
        let mut wait = Vec::new();
        for name in set.volumes() {
            let Some(volume) = self.volumes.get(&name) else { continue };
            let busy = stack::origin_busy(&self.dm, &volume.spec).map_err(dm_error)?;
            let merging = self.merging_now(volume)?;
            let stopped = merging
                && matches!(
                    stack::merge_status(&self.dm, &volume.spec),
                    Ok(KernelSnapshotStatus::MergeFailed)
                );
            if (busy && !merging) || stopped {
                wait.push(name);
            }
        }
        Ok(wait)
    }

    /// Removes dm devices of this pool that the registry does not know (left by a crash
    /// between creating devices and committing the registry).
    fn remove_strays(&self, registry: &Registry) {
        let Ok(devices) = self.dm.list() else { return };
        let known: BTreeSet<SnapshotId> = registry.snapshot_sets.iter().map(|s| s.id).collect();
        for device in devices {
            let Some(parsed) = device.uuid.as_deref().and_then(super::names::parse_uuid) else {
                continue;
            };
            if parsed.pool_uuid != registry.pool_uuid {
                continue;
            }
            let stray = match parsed.role {
                super::names::Role::Snapshot(id) | super::names::Role::Cow(id) => {
                    !known.contains(&id)
                }
                _ => false,
            };
            if stray {
                tracing::warn!(device = %device.name, "removing device of an unknown snapshot (crash recovery)");
                let _ = self.dm.remove(&device.name);
            }
        }
    }

    fn used_bytes(&self, record: &SnapshotSetRecord) -> u64 {
        let mut used = 0;
        for cow in &record.cows {
            let Ok(volume) = self.volume(&cow.volume) else { continue };
            let status = if record.state == SetState::Merging {
                stack::merge_status(&self.dm, &volume.spec)
            } else {
                stack::snapshot_status(&self.dm, &volume.spec, record.id)
            };
            if let Ok(status) = status {
                used += status.used_bytes();
            }
        }
        used
    }

    fn info(&self, record: &SnapshotSetRecord) -> SnapshotSetInfo {
        let extent_bytes = self.pool.registry().extent_bytes;
        let progress = lock(&self.progress).get(&record.id).copied().unwrap_or(0.0);
        sets::info(
            record,
            extent_bytes,
            self.used_bytes(record),
            progress,
            self.boot.entry_path(record),
        )
    }

    /// One look at every set: merge progress and completion, invalidation, autoextend.
    fn monitor_once(&self) {
        let _ops = lock(&self.ops);
        let registry = self.pool.registry();
        for set in &registry.snapshot_sets {
            match set.state {
                SetState::Merging => self.follow_merge(&registry, set),
                SetState::Active | SetState::Overflow => self.watch_snapshot(&registry, set),
                // Its snapshot still takes copies until the next boot and can fill up meanwhile.
                SetState::MergeScheduled if !set.merge_started => {
                    self.watch_snapshot(&registry, set)
                }
                _ => {}
            }
        }
    }

    fn follow_merge(&self, registry: &Registry, set: &SnapshotSetRecord) {
        let mut done = 0usize;
        let mut fractions = Vec::new();
        for cow in &set.cows {
            let Ok(volume) = self.volume(&cow.volume) else { continue };
            match stack::merge_status(&self.dm, &volume.spec) {
                Ok(status @ KernelSnapshotStatus::Usage { .. }) => {
                    let cow_sectors = cow.extents.len() as u64 * registry.extent_bytes / 512;
                    fractions.extend(status.merge_done_fraction(cow_sectors));
                    if status.merge_finished() {
                        done += 1;
                    }
                }
                Ok(KernelSnapshotStatus::MergeFailed) | Ok(KernelSnapshotStatus::Invalid) => {
                    let message = format!(
                        "the kernel reports the merge into volume {} failed; the snapshot is kept: check the \
                         kernel log (journalctl -k), then run Rollback again to resume it",
                        cow.volume
                    );
                    let recorded = self.apply(set.id, &Input::MergeFailed(message.clone()));
                    let first_try = lock(&self.unrecorded_failures).insert(set.id);
                    match recorded {
                        Ok(_) => {
                            lock(&self.unrecorded_failures).remove(&set.id);
                            tracing::error!(snapshot_id = set.id, volume = %cow.volume, "merge failed");
                        }
                        Err(e) if first_try => {
                            tracing::error!(snapshot_id = set.id, volume = %cow.volume, error = %e,
                                "the kernel stopped the merge; recording it failed, retrying");
                        }
                        Err(_) => return,
                    }
                    self.emit(BackendEvent::MergeFinished { id: set.id, ok: false, message });
                    return;
                }
                Ok(_) | Err(_) => {}
            }
        }
        // The kernel's figure is coarse (allocated counts chunks not yet merged); good enough.
        let progress = if fractions.is_empty() {
            0.0
        } else {
            fractions.iter().sum::<f64>() / fractions.len() as f64
        };
        let previous = lock(&self.progress).insert(set.id, progress.clamp(0.0, 1.0));
        if previous != Some(progress.clamp(0.0, 1.0)) {
            self.emit(BackendEvent::SnapshotChanged(set.id));
        }
        if done == set.cows.len() {
            self.finish_merge(registry, set);
        }
    }

    /// Every volume merged: plain mappings again (devices first: redone at the next start if
    /// we die before the registry forgets the set), then the set goes.
    fn finish_merge(&self, registry: &Registry, set: &SnapshotSetRecord) {
        if let Err(e) = lifecycle::next(registry, set, &Input::MergeFinished) {
            tracing::error!(snapshot_id = set.id, error = %e, "finishing the merge");
            return;
        }
        // The boot side of the rollback is done before its records go with the set; retried
        // at the next look while it fails.
        if let Err(e) = self.boot.settle(&self.pool, set.id) {
            tracing::error!(snapshot_id = set.id, error = %e, "finishing the merge");
            return;
        }
        for cow in &set.cows {
            let Ok(volume) = self.volume(&cow.volume) else { continue };
            let others = registry
                .snapshot_sets
                .iter()
                .any(|s| s.id != set.id && s.cows.iter().any(|c| c.volume == cow.volume));
            if let Err(e) = stack::finish_merge(&self.dm, &volume.spec, set.id, others) {
                tracing::error!(snapshot_id = set.id, volume = %cow.volume, error = %e, "returning the volume to a plain mapping");
                return;
            }
        }
        if let Err(e) = lifecycle::forget(&self.pool, set.id) {
            tracing::error!(snapshot_id = set.id, error = %e, "removing the merged snapshot set from the registry");
            return;
        }
        lock(&self.progress).remove(&set.id);
        self.boot.refresh_entries(&self.pool);
        tracing::info!(snapshot_id = set.id, "merge finished; snapshot set removed");
        self.emit(BackendEvent::MergeFinished { id: set.id, ok: true, message: String::new() });
        self.emit(BackendEvent::SnapshotRemoved(set.id));
    }

    fn watch_snapshot(&self, registry: &Registry, set: &SnapshotSetRecord) {
        for cow in &set.cows {
            let Ok(volume) = self.volume(&cow.volume) else { continue };
            match stack::snapshot_status(&self.dm, &volume.spec, set.id) {
                Ok(KernelSnapshotStatus::Invalid) => {
                    let reason = format!(
                        "the snapshot of volume {} filled up or failed; the volume keeps working",
                        cow.volume
                    );
                    let recorded = self.apply(set.id, &Input::Invalidated(reason.clone()));
                    let first_try = lock(&self.unrecorded_failures).insert(set.id);
                    if let Err(e) = &recorded {
                        if first_try {
                            tracing::error!(snapshot_id = set.id, volume = %cow.volume, error = %e,
                                "the kernel invalidated the snapshot; recording it failed, retrying");
                        }
                    }
                    if let Ok((record, _)) = recorded {
                        lock(&self.unrecorded_failures).remove(&set.id);
                        tracing::warn!(snapshot_id = set.id, volume = %cow.volume, "snapshot invalidated");
                        if let Err(e) = self.boot.settle(&self.pool, set.id) {
                            tracing::error!(snapshot_id = set.id, error = %e, "putting back the boot configuration of an invalidated rollback");
                        }
                        if record.state == SetState::Invalid {
                            self.emit(BackendEvent::SnapshotInvalidated {
                                id: set.id,
                                volume: cow.volume.clone(),
                                reason,
                            });
                        }
                    }
                    return;
                }
                Ok(KernelSnapshotStatus::Overflow) if set.state != SetState::Overflow => {
                    let _ = self.apply(set.id, &Input::Overflowed);
                }
                Ok(status) if status.filled_above(AUTOEXTEND_THRESHOLD) => {
                    self.grow(registry, set.id, cow, volume);
                }
                _ => {}
            }
        }
    }

    /// Adds a fifth of the COW's size (at least one extent) from the pool.
    fn grow(&self, registry: &Registry, id: SnapshotId, cow: &CowRecord, volume: &Volume) {
        let more = (cow.extents.len() as u64 / 5).max(1);
        let picked = match registry.pick_free_extents(&[more]) {
            Ok(mut picked) => picked.pop().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(snapshot_id = id, volume = %cow.volume, error = %e, "COW nearly full and the pool has no room to grow it");
                return;
            }
        };
        let mut grown = cow.clone();
        grown.extents.extend(&picked);
        let result = self
            .pool
            .update(|registry| {
                let set = registry
                    .set_mut(id)
                    .ok_or_else(|| PoolError::Invalid(format!("set {id} vanished")))?;
                if let Some(c) = set.cows.iter_mut().find(|c| c.volume == cow.volume) {
                    c.extents = grown.extents.clone();
                }
                Ok(())
            })
            .map_err(pool_error)
            .and_then(|()| {
                let registry = self.pool.registry();
                stack::grow_cow(&self.dm, &volume.spec, &self.cow_spec(&registry, id, &grown))
                    .map_err(dm_error)
            });
        match result {
            Ok(()) => {
                tracing::warn!(snapshot_id = id, volume = %cow.volume, extents = grown.extents.len(), "COW nearly full: grown from the pool");
                self.emit(BackendEvent::SnapshotChanged(id));
            }
            Err(e) => {
                tracing::error!(snapshot_id = id, volume = %cow.volume, error = %e, "growing the COW")
            }
        }
    }
}

/// Validates the configuration against this kernel and the pool, and records the volumes.
fn open_inner(config: &Config, pool: Pool) -> BackendResult<Inner> {
    kernel_supported().map_err(BackendError::backend)?;
    let dm = DmControl::open().map_err(dm_error)?;
    let pool_dev = block_dev_num(pool.path()).map_err(BackendError::invalid_argument)?;
    let registry = pool.registry();
    let mut volumes = BTreeMap::new();
    let mut records = Vec::new();
    for v in &config.volumes {
        super::names::check_lengths(&registry.pool_uuid, &v.name)
            .map_err(BackendError::invalid_argument)?;
        let backing = block_dev_num(&v.device).map_err(BackendError::invalid_argument)?;
        let size_bytes = block_size_bytes(&v.device)?;
        records.push(VolumeRecord { name: v.name.clone(), backing: v.device.clone(), size_bytes });
        volumes.insert(
            v.name.clone(),
            Volume {
                spec: VolumeSpec {
                    pool_uuid: registry.pool_uuid.clone(),
                    name: v.name.clone(),
                    backing,
                    sectors: size_bytes / 512,
                },
                backing: v.device.clone(),
                auto: v.auto,
                cow_size: v.cow_size,
            },
        );
    }
    sets::register_volumes(&pool, &records)?;
    Ok(Inner {
        boot: BootSide::new(&config.boot),
        pool,
        pool_dev,
        dm,
        volumes,
        sink: RwLock::new(None),
        ops: Mutex::new(()),
        progress: Mutex::new(BTreeMap::new()),
        unrecorded_failures: Mutex::new(BTreeSet::new()),
        stop: AtomicBool::new(false),
    })
}

fn block_size_bytes(path: &Path) -> BackendResult<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)
        .map_err(|e| BackendError::invalid_argument(format!("{}: {e}", path.display())))?;
    file.seek(SeekFrom::End(0))
        .map_err(|e| BackendError::invalid_argument(format!("{}: size: {e}", path.display())))
}

/// `snapbackd activate`: build every volume's stack from the pool, starting pending
/// rollbacks, without a bus and without staying resident.
pub fn activate(
    config: &Config,
    pool: Pool,
    rollback: Option<SnapshotId>,
) -> BackendResult<Vec<PathBuf>> {
    let inner = open_inner(config, pool)?;
    if let Some(id) = rollback {
        inner.rollback_at_boot(id);
    }
    inner.assemble_all()?;
    Ok(inner.volumes.values().map(|v| v.spec.device_path()).collect())
}

impl KernelBackend {
    /// Assembles every configured volume and starts following merges and COW usage.
    pub fn open(config: &Config, pool: Pool) -> BackendResult<KernelBackend> {
        let inner = Arc::new(open_inner(config, pool)?);
        inner.assemble_all()?;
        // Not in `activate`: at that point of the boot /boot is not mounted yet. Before the
        // monitor runs: a merge it finds finished forgets its set's boot records.
        inner.boot.settle_all(&inner.pool);
        let for_thread = inner.clone();
        let monitor = std::thread::Builder::new()
            .name("snapback-kmon".into())
            .spawn(move || {
                while !for_thread.stop.load(Ordering::SeqCst) {
                    for_thread.monitor_once();
                    std::thread::sleep(MONITOR_INTERVAL);
                }
            })
            .map_err(|e| BackendError::backend(format!("cannot start the monitor thread: {e}")))?;
        Ok(KernelBackend { inner, monitor: Mutex::new(Some(monitor)) })
    }

    fn requested_volumes(&self, request: &SnapshotRequest) -> BackendResult<Vec<Volume>> {
        let configured = self.inner.volumes.values().map(|v| (v.spec.name.as_str(), v.auto));
        sets::requested_volumes(request, configured)?
            .iter()
            .map(|name| self.inner.volume(name).cloned())
            .collect()
    }
}

impl Backend for KernelBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        let registry = self.inner.pool.registry();
        self.inner
            .volumes
            .values()
            .map(|volume| {
                let path = volume.spec.device_path();
                let present = path.exists();
                let state = sets::volume_state(&registry, &volume.spec.name, present);
                VolumeInfo {
                    name: volume.spec.name.clone(),
                    backing: volume.backing.clone(),
                    device: present.then_some(path),
                    auto: volume.auto,
                    state,
                    size_bytes: volume.spec.sectors * 512,
                }
            })
            .collect()
    }

    fn pool(&self) -> PoolStatus {
        sets::pool_status(&self.inner.pool)
    }

    fn snapshots(&self) -> Vec<SnapshotSetInfo> {
        self.inner.pool.registry().snapshot_sets.iter().map(|s| self.inner.info(s)).collect()
    }

    fn snapshot(&self, id: SnapshotId) -> BackendResult<SnapshotSetInfo> {
        Ok(self.inner.info(&self.inner.record(id)?))
    }

    fn create_snapshot(&self, request: SnapshotRequest) -> BackendResult<SnapshotSetInfo> {
        let volumes = self.requested_volumes(&request)?;
        let inner = &self.inner;
        let _ops = lock(&inner.ops);
        let registry = inner.pool.registry();
        let names: Vec<String> = volumes.iter().map(|v| v.spec.name.clone()).collect();
        sets::refuse_if_rolling_back(&registry, &names)?;
        // Space first: a full pool fails before any device exists.
        let counts: Vec<u64> = volumes
            .iter()
            .map(|v| {
                let bytes =
                    request.cow_size_bytes.or(v.cow_size).unwrap_or(v.spec.sectors * 512 / 10);
                bytes.div_ceil(registry.extent_bytes).max(1)
            })
            .collect();
        let picked = registry.pick_free_extents(&counts).map_err(pool_error)?;
        let all: Vec<u64> = picked.iter().flatten().copied().collect();
        inner.pool.zero_extent_starts(&all, COW_ZERO_BYTES).map_err(pool_error)?;
        let id = registry.next_snapshot_id;
        let cows: Vec<CowRecord> = volumes
            .iter()
            .zip(&picked)
            .map(|(v, extents)| CowRecord {
                volume: v.spec.name.clone(),
                chunk_sectors: CHUNK_SECTORS,
                extents: extents.clone(),
            })
            .collect();
        let specs: Vec<CowSpec> = cows.iter().map(|c| inner.cow_spec(&registry, id, c)).collect();
        let members: Vec<SetMember<'_>> =
            volumes.iter().zip(&specs).map(|(v, cow)| SetMember { volume: &v.spec, cow }).collect();
        let held =
            stack::take_snapshot_set(&inner.dm, &members, OnFull::Invalidate).map_err(dm_error)?;
        tracing::info!(
            snapshot_id = id,
            suspended_us = held.as_micros() as u64,
            "origins suspended while taking the set"
        );
        let record = sets::new_record(id, &request, cows);
        if let Err(e) = sets::commit_new_set(&inner.pool, &record) {
            for member in &members {
                let others = registry
                    .snapshot_sets
                    .iter()
                    .any(|s| s.volumes().contains(&member.volume.name));
                let _ = stack::remove_snapshot(&inner.dm, member.volume, id, others);
            }
            return Err(e);
        }
        inner.boot.record_new_set(&inner.pool, &record, |name| {
            inner.volumes.get(name).map(|v| v.spec.device_path())
        });
        // Read again: the boot side may have added the set's boot record since.
        Ok(inner.info(&inner.record(id).unwrap_or(record)))
    }

    fn rollback(&self, id: SnapshotId) -> BackendResult<RollbackOutcome> {
        let inner = &self.inner;
        let _ops = lock(&inner.ops);
        let record = inner.record(id)?;
        let missing = lifecycle::missing_volumes(&record, |name| inner.volumes.contains_key(name));
        // Refusals and the idempotent repeat come before any device is touched.
        lifecycle::next(
            &inner.pool.registry(),
            &record,
            &Input::Rollback { defer: true, missing: missing.clone() },
        )?;
        if record.state == SetState::MergeScheduled {
            return Ok(RollbackOutcome::Scheduled);
        }
        // The kernel may have invalidated a COW the monitor has not reported yet: a set with
        // an invalid member is never merged (nor scheduled), not even in part.
        if !record.merge_started {
            for name in record.volumes() {
                let volume = inner.volume(&name)?;
                if let Ok(KernelSnapshotStatus::Invalid) =
                    stack::snapshot_status(&inner.dm, &volume.spec, id)
                {
                    let why = format!("the snapshot of volume {name} filled up or failed");
                    let (record, _) = inner.apply(id, &Input::Invalidated(why))?;
                    return Err(lifecycle::invalid_error(&record));
                }
            }
        }
        if !record.merge_started {
            refuse_open_snapshots(&inner.dm, &inner.volumes, &record, "roll back")?;
        }
        let wait = inner.must_wait(&record)?;
        if !wait.is_empty() {
            inner.boot.keep_undo(&inner.pool, &record)?;
        }
        let (_, effect) = inner.apply(id, &Input::Rollback { defer: !wait.is_empty(), missing })?;
        inner.boot.settle(&inner.pool, id)?;
        if effect != Effect::Merge {
            tracing::info!(snapshot_id = id, busy = ?wait, "volumes in use: rollback scheduled for next boot");
            return Ok(RollbackOutcome::Scheduled);
        }
        // The registry says merging before any table changes: if we die after starting some
        // merges, the next start (or activation) finishes the set.
        let registry = inner.pool.registry();
        for cow in &record.cows {
            let volume = inner.volume(&cow.volume)?;
            let spec = inner.cow_spec(&registry, id, cow);
            if let Err(e) = stack::start_merge(&inner.dm, &volume.spec, &spec) {
                let message = format!("starting the merge into volume {}: {e}", cow.volume);
                inner.apply(id, &Input::MergeFailed(message.clone()))?;
                return Err(BackendError::backend(message));
            }
        }
        Ok(RollbackOutcome::Merging)
    }

    fn cancel_rollback(&self, id: SnapshotId) -> BackendResult<()> {
        let _ops = lock(&self.inner.ops);
        self.inner.apply(id, &Input::CancelRollback)?;
        self.inner.emit(BackendEvent::SnapshotChanged(id));
        self.inner.boot.settle(&self.inner.pool, id)
    }

    fn delete(&self, id: SnapshotId) -> BackendResult<()> {
        let inner = &self.inner;
        let _ops = lock(&inner.ops);
        // What the kernel would refuse is refused before the set is committed invalid.
        if let Some(set) = inner.pool.registry().set(id) {
            refuse_open_snapshots(&inner.dm, &inner.volumes, set, "delete")?;
        }
        let (record, _) = inner.apply(id, &Input::Delete)?;
        let registry = inner.pool.registry();
        // Devices before the registry forgets the set: its extents must not be handed to a
        // new set while the old snapshot can still write into them. A crash in between
        // leaves an invalid set (committed above): the next Delete removes what is left, and
        // after a reboot it gets no device at all.
        for name in record.volumes() {
            let Some(volume) = inner.volumes.get(&name) else { continue };
            let others =
                registry.snapshot_sets.iter().any(|s| s.id != id && s.volumes().contains(&name));
            stack::remove_snapshot(&inner.dm, &volume.spec, id, others).map_err(dm_error)?;
        }
        lifecycle::forget(&inner.pool, id)?;
        inner.boot.refresh_entries(&inner.pool);
        tracing::info!(snapshot_id = id, "snapshot set deleted");
        inner.emit(BackendEvent::SnapshotRemoved(id));
        Ok(())
    }

    fn open_volume(&self, id: SnapshotId, volume: &str) -> BackendResult<OpenedVolume> {
        let inner = &self.inner;
        let _ops = lock(&inner.ops);
        lifecycle::check_open(&inner.record(id)?, volume)?;
        let spec = &inner.volume(volume)?.spec;
        let name = spec.name(names::Role::Snapshot(id));
        let info = inner.dm.find(&name).map_err(dm_error)?.ok_or_else(|| {
            BackendError::backend(format!(
                "snapshot set {id}: the snapshot device {name} of volume {volume} is not loaded"
            ))
        })?;
        let device = dm::ensure_node(&name, info.dev).map_err(|e| {
            BackendError::backend(format!("cannot make the device node of {name}: {e}"))
                .caused_by(e)
        })?;
        let file = std::fs::File::open(&device).map_err(|e| {
            BackendError::backend(format!("cannot open {}: {e}", device.display())).caused_by(e)
        })?;
        Ok(OpenedVolume { device, file })
    }

    fn update_metadata(
        &self,
        id: SnapshotId,
        description: Option<String>,
        userdata: BTreeMap<String, String>,
    ) -> BackendResult<SnapshotSetInfo> {
        let _ops = lock(&self.inner.ops);
        sets::update_metadata(&self.inner.pool, id, description, userdata)?;
        self.inner.emit(BackendEvent::SnapshotChanged(id));
        Ok(self.inner.info(&self.inner.record(id)?))
    }

    fn refresh_boot_entries(&self) -> BackendResult<Vec<PathBuf>> {
        let _ops = lock(&self.inner.ops);
        Ok(self.inner.boot.refresh_entries(&self.inner.pool))
    }

    fn set_event_sink(&self, sink: EventSink) {
        *self.inner.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    fn shutdown(&self) -> BackendResult<()> {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = lock(&self.monitor).take() {
            let _ = handle.join();
        }
        Ok(())
    }
}

impl Drop for KernelBackend {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
