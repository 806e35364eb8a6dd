//! State shared by the backend's API calls, its merge threads and its monitor thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::fuse_fs::FileTable;
use super::loop_device::StaleLoop;
use super::volume::Volume;
pub use crate::backend::sets::{self, lock, pool_error};
use crate::backend::{BackendError, BackendEvent, EventSink, SnapshotId, SnapshotSetInfo};
use crate::pool::{Pool, SnapshotSetRecord};

/// Tunables of the userspace backend.
#[derive(Debug, Clone)]
pub struct UserspaceOptions {
    /// Where the volume filesystem is mounted (`SNAPBACK_FUSE_DIR`, default
    /// `/run/snapback/fuse`).
    pub fuse_dir: std::path::PathBuf,
    /// FUSE request-serving threads.
    pub fuse_threads: usize,
    /// How often the monitor looks at COW usage and snapshot validity.
    pub monitor_interval: Duration,
    /// A COW fuller than this fraction is grown from the pool.
    pub autoextend_threshold: f64,
    /// Growth step as a fraction of the COW's current size (at least one extent).
    pub autoextend_fraction: f64,
    /// Also serve each snapshot as a read-only file `<volume>@<id>`.
    pub snapshot_files: bool,
    /// Bytes one merge step copies (None: the engine's default).
    pub merge_step_bytes: Option<u64>,
    /// A pause after every merge step, for tests that must act while a merge runs however
    /// fast the machine's flushes are (None in production).
    pub merge_step_pause: Option<Duration>,
    /// A file that gets a line for every FUSE write and fsync of a served file, for tests
    /// chasing a write that did not last (None in production).
    pub io_trace: Option<std::path::PathBuf>,
}

impl Default for UserspaceOptions {
    fn default() -> UserspaceOptions {
        UserspaceOptions {
            fuse_dir: std::env::var_os("SNAPBACK_FUSE_DIR")
                .map(Into::into)
                .unwrap_or_else(|| "/run/snapback/fuse".into()),
            fuse_threads: 4,
            monitor_interval: Duration::from_secs(1),
            autoextend_threshold: 0.8,
            autoextend_fraction: 0.2,
            snapshot_files: true,
            merge_step_bytes: None,
            merge_step_pause: None,
            io_trace: None,
        }
    }
}

/// Merge progress of one volume of a merging set.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeProgress {
    pub chunks_left: u64,
    pub chunks_total: u64,
}

pub struct Shared {
    pub pool: Pool,
    pub boot: crate::backend::boot_side::BootSide,
    pub options: UserspaceOptions,
    pub volumes: BTreeMap<String, Arc<Volume>>,
    pub files: Arc<FileTable>,
    sink: RwLock<Option<EventSink>>,
    /// Serializes every change of snapshot sets (API calls, merge completion, monitor).
    pub ops: Mutex<()>,
    pub progress: Mutex<BTreeMap<SnapshotId, BTreeMap<String, VolumeProgress>>>,
    pub stop: AtomicBool,
    /// Merge and monitor threads, joined at shutdown.
    pub threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Loop devices of volumes that an earlier snapbackd left still in use (mounted) when it
    /// stopped: while one is still bound its volume counts as busy for rollbacks.
    pub stale_in_use: Mutex<Vec<StaleLoop>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("pool", &self.pool.path())
            .field("volumes", &self.volumes.keys().collect::<Vec<_>>())
            .field("stop", &self.stopping())
            .finish()
    }
}

impl Shared {
    pub fn new(
        pool: Pool,
        options: UserspaceOptions,
        volumes: BTreeMap<String, Arc<Volume>>,
        boot: crate::backend::boot_side::BootSide,
    ) -> Shared {
        let files =
            Arc::new(FileTable::new(super::fuse_fs::pool_inodes(&pool.registry().pool_uuid)));
        Shared {
            pool,
            boot,
            options,
            volumes,
            files,
            sink: RwLock::new(None),
            ops: Mutex::new(()),
            progress: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            stale_in_use: Mutex::new(Vec::new()),
        }
    }

    pub fn set_sink(&self, sink: EventSink) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    pub fn emit(&self, event: BackendEvent) {
        let sink = self.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            sink(event);
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn volume(&self, name: &str) -> Result<&Arc<Volume>, BackendError> {
        self.volumes.get(name).ok_or_else(|| {
            BackendError::not_found(format!("no volume named {name:?} is configured"))
        })
    }

    /// The loop device an earlier snapbackd left mounted for `volume`, while it still is.
    pub fn stale_device_in_use(&self, volume: &str) -> Option<std::path::PathBuf> {
        lock(&self.stale_in_use)
            .iter()
            .find(|stale| stale.volume() == Some(volume) && stale.still_bound())
            .map(|stale| stale.device.clone())
    }

    pub fn record(&self, id: SnapshotId) -> Result<SnapshotSetRecord, BackendError> {
        sets::record(&self.pool, id)
    }

    pub fn merge_progress(&self, id: SnapshotId) -> f64 {
        let progress = lock(&self.progress);
        let Some(volumes) = progress.get(&id) else {
            return 0.0;
        };
        let total: u64 = volumes.values().map(|v| v.chunks_total).sum();
        let left: u64 = volumes.values().map(|v| v.chunks_left).sum();
        if total == 0 {
            return 0.0;
        }
        (total - left.min(total)) as f64 / total as f64
    }

    /// The bus view of a set: registry record + live engine figures.
    pub fn info(&self, record: &SnapshotSetRecord) -> SnapshotSetInfo {
        let extent_bytes = self.pool.registry().extent_bytes;
        let used_bytes = record
            .cows
            .iter()
            .filter_map(|cow| self.volumes.get(&cow.volume)?.figures(record.id))
            .map(|figures| figures.allocated_bytes)
            .sum();
        sets::info(
            record,
            extent_bytes,
            used_bytes,
            self.merge_progress(record.id),
            self.boot.entry_path(record),
        )
    }
}
