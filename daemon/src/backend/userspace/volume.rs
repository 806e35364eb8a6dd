//! One managed volume: the engine origin over its backing device, the snapshots attached to
//! it, and the loop device that presents it. All engine calls of the backend live here.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use snapback_engine::io::{BlockIo, FileIo};
use snapback_engine::origin::{Origin, SnapshotOptions};
use snapback_engine::EngineError;

use super::fuse_fs::ServedFile;
use crate::backend::{BackendError, SnapshotId};
use crate::pool::ExtentIo;

/// The engine's handle for a snapshot attached to an origin.
pub type EngineSnapshot = snapback_engine::origin::SnapshotId;

/// Chunk size of new COWs: 16 KiB, the kernel's and LVM's default.
pub const CHUNK_SECTORS: u32 = 32;

/// What the monitor needs to know about one snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CowFigures {
    pub invalid: bool,
    pub overflow: bool,
    pub allocated_bytes: u64,
    pub total_bytes: u64,
}

/// Progress of an origin's merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeStep {
    pub chunks_left: u64,
    pub chunks_total: u64,
    pub finished: bool,
}

/// A snapshot attached to the volume's origin.
#[derive(Debug, Clone)]
pub struct AttachedCow {
    pub engine_id: EngineSnapshot,
    pub cow: Arc<ExtentIo>,
}

#[derive(Debug)]
pub struct Volume {
    pub name: String,
    pub backing: PathBuf,
    pub auto: bool,
    /// Initial COW size from the configuration.
    pub cow_size: Option<u64>,
    pub size_bytes: u64,
    origin: Arc<Origin>,
    attached: Mutex<BTreeMap<SnapshotId, AttachedCow>>,
    device: Mutex<Option<PathBuf>>,
    /// Set when the backend shuts down: from then on the volume refuses writes, so nothing
    /// reaches the origin that its snapshots did not see (FUSE may go on serving a volume
    /// that is still mounted).
    closed: Arc<AtomicBool>,
}

pub fn engine_error(context: &str, err: EngineError) -> BackendError {
    match err {
        EngineError::NoSpace => {
            BackendError::no_space(format!("{context}: the snapshot's COW is full"))
        }
        EngineError::Invalid => {
            BackendError::snapshot_invalid(format!("{context}: {err}")).caused_by(err)
        }
        EngineError::AlreadyMerging => {
            BackendError::already_merging(format!("{context}: {err}")).caused_by(err)
        }
        other => BackendError::backend(format!("{context}: {other}")).caused_by(other),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Volume {
    /// Opens the backing device and builds the engine origin over it.
    pub fn open(
        name: &str,
        backing: &Path,
        auto: bool,
        cow_size: Option<u64>,
    ) -> Result<Volume, BackendError> {
        let dev = FileIo::open(backing, true).map_err(|err| {
            BackendError::backend(format!(
                "volume {name}: cannot open {}: {err}",
                backing.display()
            ))
        })?;
        let size_bytes = dev.size_bytes().map_err(|err| {
            BackendError::backend(format!("volume {name}: size of {}: {err}", backing.display()))
        })?;
        let origin = Origin::new(Arc::new(dev))
            .map_err(|err| engine_error(&format!("volume {name}"), err))?;
        Ok(Volume {
            name: name.to_string(),
            backing: backing.to_path_buf(),
            auto,
            cow_size,
            size_bytes,
            origin: Arc::new(origin),
            attached: Mutex::new(BTreeMap::new()),
            device: Mutex::new(None),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn set_merge_step_bytes(&self, bytes: u64) {
        self.origin.set_merge_step_bytes(bytes);
    }

    pub fn device(&self) -> Option<PathBuf> {
        lock(&self.device).clone()
    }

    pub fn set_device(&self, device: Option<PathBuf>) {
        *lock(&self.device) = device;
    }

    /// The file FUSE serves for the volume itself.
    pub fn served_file(&self) -> Arc<dyn ServedFile> {
        Arc::new(OriginFile {
            origin: self.origin.clone(),
            size: self.size_bytes,
            closed: self.closed.clone(),
        })
    }

    /// Refuses every later write (EIO), then writes back and flushes what was written before.
    /// Snapshots stay attached: a write already inside the engine is still copied on write.
    pub fn close(&self) -> Result<(), BackendError> {
        self.closed.store(true, Ordering::SeqCst);
        self.flush()
    }

    /// A read-only view of the volume as snapshot `set` holds it.
    pub fn snapshot_view(&self, set: SnapshotId) -> Option<Arc<dyn ServedFile>> {
        let attached = lock(&self.attached).get(&set)?.clone();
        Some(Arc::new(SnapshotView {
            origin: self.origin.clone(),
            engine_id: attached.engine_id,
            size: self.size_bytes,
        }))
    }

    pub fn attached(&self, set: SnapshotId) -> Option<AttachedCow> {
        lock(&self.attached).get(&set).cloned()
    }

    /// Attaches the COW of snapshot set `set` (a new store if the COW starts zeroed).
    pub fn attach(&self, set: SnapshotId, cow: Arc<ExtentIo>) -> Result<(), BackendError> {
        let options =
            SnapshotOptions { chunk_sectors: Some(CHUNK_SECTORS), ..SnapshotOptions::default() };
        let engine_id = self.origin.attach_snapshot(cow.clone(), options).map_err(|err| {
            engine_error(&format!("volume {}: attaching snapshot {set}", self.name), err)
        })?;
        lock(&self.attached).insert(set, AttachedCow { engine_id, cow });
        Ok(())
    }

    pub fn detach(&self, set: SnapshotId) -> Result<(), BackendError> {
        let Some(attached) = lock(&self.attached).remove(&set) else {
            return Ok(());
        };
        self.origin.detach_snapshot(attached.engine_id).map_err(|err| {
            engine_error(&format!("volume {}: detaching snapshot {set}", self.name), err)
        })
    }

    pub fn figures(&self, set: SnapshotId) -> Option<CowFigures> {
        let attached = self.attached(set)?;
        let status = self.origin.snapshot_status(attached.engine_id).ok()?;
        use snapback_engine::origin::SnapshotState as S;
        // An invalid store reports no usage (as the kernel prints just "Invalid").
        let (allocated_sectors, total_sectors) =
            status.usage.map(|u| (u.allocated_sectors, u.total_sectors)).unwrap_or((0, 0));
        Some(CowFigures {
            invalid: matches!(status.state, S::Invalid),
            overflow: matches!(status.state, S::Overflow),
            allocated_bytes: allocated_sectors * 512,
            total_bytes: total_sectors * 512,
        })
    }

    pub fn suspend(&self) {
        self.origin.suspend();
    }

    pub fn resume(&self) {
        self.origin.resume();
    }

    /// Origin writes the engine holds in memory until its next commit (write-back).
    pub fn write_back_bytes(&self) -> u64 {
        self.origin.write_back_bytes()
    }

    /// Writes the origin data the engine holds to the backing device without flushing it
    /// (`Origin::write_back`); a failure stays for the next `flush` to report.
    pub fn write_back(&self) -> Result<(), BackendError> {
        self.origin
            .write_back()
            .map_err(|err| engine_error(&format!("volume {}: write-back", self.name), err))
    }

    pub fn flush(&self) -> Result<(), BackendError> {
        self.origin
            .flush()
            .map_err(|err| engine_error(&format!("volume {}: flush", self.name), err))
    }

    /// Starts (or resumes) merging set `set` into this volume. Already merging that very
    /// snapshot is fine; merging another one is `AlreadyMerging`.
    pub fn start_merge(&self, set: SnapshotId) -> Result<(), BackendError> {
        let attached = self.attached(set).ok_or_else(|| {
            BackendError::backend(format!("volume {}: snapshot {set} is not attached", self.name))
        })?;
        match self.origin.start_merge(attached.engine_id) {
            Err(EngineError::AlreadyMerging)
                if self.origin.snapshot_status(attached.engine_id).is_ok_and(|status| {
                    status.state == snapback_engine::origin::SnapshotState::Merging
                }) =>
            {
                Ok(())
            }
            result => result.map_err(|err| {
                engine_error(&format!("volume {}: starting the merge of {set}", self.name), err)
            }),
        }
    }

    pub fn merge_step(&self) -> Result<MergeStep, BackendError> {
        let progress = self
            .origin
            .merge_step()
            .map_err(|err| engine_error(&format!("volume {}: merge step", self.name), err))?;
        Ok(MergeStep {
            chunks_left: progress.chunks_left,
            chunks_total: progress.chunks_total,
            finished: progress.finished,
        })
    }
}

/// A write refused because the backend is shutting down (FUSE answers EIO).
#[derive(Debug, thiserror::Error)]
#[error("snapbackd is stopping: the volume takes no more writes")]
pub struct VolumeClosed;

/// The volume as a FUSE file: the origin's data path.
#[derive(Debug)]
struct OriginFile {
    origin: Arc<Origin>,
    size: u64,
    closed: Arc<AtomicBool>,
}

fn to_io(err: EngineError) -> io::Error {
    match err {
        EngineError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl ServedFile for OriginFile {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.origin.read(offset, buf).map_err(to_io)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::other(VolumeClosed));
        }
        self.origin.write(offset, data).map_err(to_io)
    }
    fn flush(&self) -> io::Result<()> {
        self.origin.flush().map_err(to_io)
    }
    fn writable(&self) -> bool {
        true
    }
}

/// A snapshot as a read-only FUSE file.
#[derive(Debug)]
struct SnapshotView {
    origin: Arc<Origin>,
    engine_id: EngineSnapshot,
    size: u64,
}

impl ServedFile for SnapshotView {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.origin.snapshot_read(self.engine_id, offset, buf).map_err(to_io)
    }
    fn write(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn writable(&self) -> bool {
        false
    }
}
