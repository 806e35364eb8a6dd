//! The backend trait: what the D-Bus service needs from a storage stack.
//!
//! Two implementations sit behind it (as stratisd's engine trait does): the kernel
//! device-mapper backend and the userspace backend built on the exception engine. The service
//! layer only ever sees `dyn Backend`, and calls it from `spawn_blocking`, because every
//! method may do blocking device I/O.

pub mod boot_side;
pub mod kernel;
pub mod lifecycle;
#[cfg(feature = "sim")]
pub mod memory;
pub mod sets;

pub mod userspace;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use snapback_dbus::{SetState, VolumeState};

/// Identifier of a snapshot set: stable for the life of the set, never reused in a pool.
pub type SnapshotId = u32;

/// Which data path serves the volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The kernel's dm-snapshot targets.
    Kernel,
    /// The exception engine, served through FUSE and a loop device.
    Userspace,
    /// RAM only, for tests (`memory::MemoryBackend`).
    #[cfg(feature = "sim")]
    Memory,
}

impl BackendKind {
    /// Name used on the bus (`Backend` property) and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Kernel => "kernel",
            BackendKind::Userspace => "userspace",
            #[cfg(feature = "sim")]
            BackendKind::Memory => "memory",
        }
    }
}

/// A volume as `Status` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    pub name: String,
    /// The backing block device or file from the configuration.
    pub backing: PathBuf,
    /// The block device users mount instead of the backing one (None while not assembled).
    pub device: Option<PathBuf>,
    pub auto: bool,
    pub state: VolumeState,
    pub size_bytes: u64,
}

/// A snapshot set as the `Snapshot` objects expose it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSetInfo {
    pub id: SnapshotId,
    pub description: String,
    /// Microseconds since the Unix epoch.
    pub created_us: u64,
    pub volumes: Vec<String>,
    pub state: SetState,
    /// COW bytes in use, summed over the set's volumes (kernel "allocated" figure).
    pub used_bytes: u64,
    /// COW bytes reserved for the set.
    pub size_bytes: u64,
    /// 0.0 ..= 1.0 while merging; 0.0 otherwise.
    pub merge_progress: f64,
    pub userdata: BTreeMap<String, String>,
    pub important: bool,
    /// The set's boot-menu entry ("Roll back to snapshot N"), when it recorded /boot.
    pub boot_entry: Option<PathBuf>,
}

/// What `Snapshot` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotRequest {
    /// Empty means every volume with `auto = true`.
    pub volumes: Vec<String>,
    pub description: String,
    pub userdata: BTreeMap<String, String>,
    pub important: bool,
    /// Initial COW size per volume; None lets the backend choose.
    pub cow_size_bytes: Option<u64>,
}

/// Result of a rollback request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// The merge runs now.
    Merging,
    /// An origin is busy: the merge starts when the volume is next assembled (next boot).
    Scheduled,
}

impl RollbackOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackOutcome::Merging => "merging",
            RollbackOutcome::Scheduled => "scheduled",
        }
    }
}

/// A volume of a snapshot set opened read-only (`OpenVolume`): the block device that shows the
/// volume as it was when the set was taken, and a read-only descriptor of it, opened while the
/// backend's lock was held (so the device cannot have gone between the two).
#[derive(Debug)]
pub struct OpenedVolume {
    pub device: PathBuf,
    pub file: std::fs::File,
}

/// Pool figures for `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// Something the service must tell the bus about.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// Any property of the set changed (state, usage, merge progress).
    SnapshotChanged(SnapshotId),
    /// The set is gone (deleted, or removed after a finished merge).
    SnapshotRemoved(SnapshotId),
    /// A merge ended; `ok == false` carries what went wrong and what to do.
    MergeFinished { id: SnapshotId, ok: bool, message: String },
    /// A snapshot ran out of space or hit an I/O error and can no longer be used.
    SnapshotInvalidated { id: SnapshotId, volume: String, reason: String },
}

/// Where backends deliver events; called from backend threads.
pub type EventSink = Arc<dyn Fn(BackendEvent) + Send + Sync>;

/// The kinds of failure, one per named error of the D-Bus API.
pub use snapback_dbus::ErrorKind;

/// A failure of a backend operation: its kind (which decides the D-Bus error name), the
/// sentence for the caller, and the error underneath when there is one (kept for the log and
/// for `source()`; the sentence already says what it means).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError { kind, message: message.into(), source: None }
    }

    /// The same error with `source` as its cause.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub fn not_found(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::NotFound, message)
    }
    pub fn busy(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Busy, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::InvalidArgument, message)
    }
    pub fn snapshot_invalid(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::SnapshotInvalid, message)
    }
    pub fn no_space(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::NoSpace, message)
    }
    pub fn already_merging(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::AlreadyMerging, message)
    }
    /// The storage stack itself failed.
    pub fn backend(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Backend, message)
    }
}

impl PartialEq for BackendError {
    /// Same kind and sentence (the cause is detail for the log).
    fn eq(&self, other: &BackendError) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl From<crate::pool::PoolError> for BackendError {
    fn from(err: crate::pool::PoolError) -> BackendError {
        let kind = match err {
            crate::pool::PoolError::NoSpace { .. } => ErrorKind::NoSpace,
            _ => ErrorKind::Backend,
        };
        BackendError::new(kind, err.to_string()).caused_by(err)
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// A storage stack that can snapshot, merge and report. All methods may block.
pub trait Backend: Send + Sync + fmt::Debug {
    fn kind(&self) -> BackendKind;
    fn volumes(&self) -> Vec<VolumeInfo>;
    fn pool(&self) -> PoolStatus;
    fn snapshots(&self) -> Vec<SnapshotSetInfo>;
    fn snapshot(&self, id: SnapshotId) -> BackendResult<SnapshotSetInfo>;
    fn create_snapshot(&self, request: SnapshotRequest) -> BackendResult<SnapshotSetInfo>;
    fn rollback(&self, id: SnapshotId) -> BackendResult<RollbackOutcome>;
    fn cancel_rollback(&self, id: SnapshotId) -> BackendResult<()>;
    fn delete(&self, id: SnapshotId) -> BackendResult<()>;
    /// Opens `volume` of set `id` read-only as it was when the set was taken (which states
    /// allow it: `lifecycle::check_open`). While the device is mounted or held exclusively,
    /// `rollback` and `delete` of the set refuse with `Busy`.
    fn open_volume(&self, id: SnapshotId, volume: &str) -> BackendResult<OpenedVolume>;
    /// Replace the description (when Some) and merge `userdata` into the set's userdata.
    fn update_metadata(
        &self,
        id: SnapshotId,
        description: Option<String>,
        userdata: BTreeMap<String, String>,
    ) -> BackendResult<SnapshotSetInfo>;
    /// Writes the boot-menu entry of every set that recorded /boot again (and removes those of
    /// sets that are gone); returns the entries written.
    fn refresh_boot_entries(&self) -> BackendResult<Vec<PathBuf>>;
    /// Register where events go; backends start emitting after this call.
    fn set_event_sink(&self, sink: EventSink);
    /// Stop background work and release devices, leaving every volume consistent on disk.
    fn shutdown(&self) -> BackendResult<()>;
}
