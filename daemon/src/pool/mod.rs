//! The pool: a block device or file that snapback formats, holding the registry and COW space.
//!
//! Layout (details in [`layout`]): two registry slots of 2 MiB each at the start, written
//! alternately (sequence `n` goes to slot `n % 2`), each a checksummed frame around the
//! registry as JSON; then the data area, cut into extents (4 MiB by default) that snapshot
//! COWs are made of. A COW is the concatenation of its extents ([`ExtentIo`]).
//!
//! Every change of the registry is one [`Pool::update`]: the new registry is written to the
//! slot not holding the newest copy and flushed; only then does the in-memory copy change. On
//! load the valid copy with the highest sequence wins; a torn or corrupt copy is ignored with a
//! warning; two bad copies are an error that names both problems.

mod extent_io;
mod format;
mod io;
pub mod layout;
pub mod registry;
mod sticky_flush;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pool::io::{BlockIo, FileIo};
use thiserror::Error;

pub use extent_io::ExtentIo;
pub use format::{detect_contents, format, format_io, sparse_file_note, FormatOptions};
pub use registry::{
    is_plain_relative, is_sha256_hex, BlobRecord, BootFile, BootRecord, BootRestore, BootRoot,
    CowRecord, Registry, SetState, SnapshotSetRecord, VolumeRecord,
};

use layout::{SlotError, HEADER_BYTES};

/// Everything that can go wrong with a pool.
#[derive(Debug, Error)]
pub enum PoolError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a snapback pool (no registry found; format it with `snapbackd init`)")]
    NotAPool { path: PathBuf },
    #[error("both registry copies of pool {path} are unusable: slot 0: {slot0}; slot 1: {slot1}")]
    Corrupt { path: PathBuf, slot0: String, slot1: String },
    #[error("refusing to format {path}: {reason}; use --force to overwrite it")]
    HoldsData { path: PathBuf, reason: String },
    #[error("{path} is too small for a pool: {size} bytes, need at least {needed}")]
    TooSmall { path: PathBuf, size: u64, needed: u64 },
    #[error("pool is full: {wanted} extents of {extent_bytes} bytes wanted, {free} free")]
    NoSpace { wanted: u64, free: u64, extent_bytes: u64 },
    #[error(
        "the registry would grow to {bytes} bytes, more than the {limit} that leave room for \
         every later state change; delete snapshot sets or shorten their userdata"
    )]
    RegistryTooLarge { bytes: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
}

impl PoolError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> PoolError {
        PoolError::Io { context: context.into(), source }
    }
}

/// The committed registry and the sequence number of its copy on disk.
#[derive(Debug)]
struct Committed {
    registry: Registry,
    sequence: u64,
    /// Size of the committed registry's JSON.
    payload_bytes: usize,
}

/// A change that grows the registry past this is refused. The rest of the slot is headroom
/// for changes that do not grow it much (a state, a merge-failure message, a finished merge),
/// so that a registry full of sets and userdata can never block a rollback's bookkeeping.
pub const REGISTRY_GROWTH_LIMIT: usize = layout::MAX_PAYLOAD / 4 * 3;

/// An open pool. Registry updates are serialized by an internal lock.
#[derive(Debug)]
pub struct Pool {
    path: PathBuf,
    dev: Arc<dyn BlockIo>,
    committed: Mutex<Committed>,
}

/// Linux reports a write-back error that nobody has seen yet to the first fsync of any file
/// opened on the device afterwards (a daemon that died, or one whose flush failed and that
/// was restarted, leaves one behind), and keeps the pages it could not write in the page cache
/// as if they were on the device. Left alone, the first commit of this process would fail for
/// a write of an earlier one, and the registry read below could be a copy that never reached
/// the disk. So: take the error now, and read from the device.
fn settle_earlier_write_back(dev: &FileIo, path: &Path) -> Result<(), PoolError> {
    if let Err(err) = dev.flush() {
        tracing::warn!(pool = %path.display(), error = %err,
            "an earlier write to the pool failed; reading the registry from the device");
    }
    dev.drop_cache().map_err(|err| {
        PoolError::io(format!("dropping the cached pages of {}", path.display()), err)
    })
}

impl Pool {
    /// Opens the pool at `path` (a block device or a file).
    pub fn open(path: &Path) -> Result<Pool, PoolError> {
        let dev = FileIo::open(path, true)
            .map_err(|err| PoolError::io(format!("opening pool {}", path.display()), err))?;
        settle_earlier_write_back(&dev, path)?;
        Pool::open_io(Arc::new(dev), path)
    }

    /// Opens a pool on any block I/O (`path` only names it in messages).
    pub fn open_io(dev: Arc<dyn BlockIo>, path: &Path) -> Result<Pool, PoolError> {
        // Flush errors stick: see sticky_flush.rs for why one failed flush fails them all.
        let dev: Arc<dyn BlockIo> = Arc::new(sticky_flush::StickyFlushIo::new(dev));
        let mut problems = Vec::new();
        let mut best: Option<(u64, Registry)> = None;
        for slot in 0..2u64 {
            match read_slot(dev.as_ref(), slot) {
                Ok((sequence, registry)) => {
                    if best.as_ref().is_none_or(|(seen, _)| sequence > *seen) {
                        best = Some((sequence, registry));
                    }
                    problems.push(None);
                }
                Err(problem) => problems.push(Some(problem)),
            }
        }
        let Some((sequence, registry)) = best else {
            let no_magic =
                |p: &Option<SlotProblem>| matches!(p, Some(SlotProblem::Frame(SlotError::NoMagic)));
            if problems.iter().all(no_magic) {
                return Err(PoolError::NotAPool { path: path.to_path_buf() });
            }
            let describe =
                |p: &Option<SlotProblem>| p.as_ref().map(ToString::to_string).unwrap_or_default();
            return Err(PoolError::Corrupt {
                path: path.to_path_buf(),
                slot0: describe(&problems[0]),
                slot1: describe(&problems[1]),
            });
        };
        for (slot, problem) in problems.iter().enumerate() {
            if let Some(problem) = problem {
                tracing::warn!(pool = %path.display(), slot, %problem, "ignoring unusable registry copy");
            }
        }
        let payload_bytes = serialize(&registry)?.len();
        Ok(Pool {
            path: path.to_path_buf(),
            dev,
            committed: Mutex::new(Committed { registry, sequence, payload_bytes }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Committed> {
        // A panic while holding the lock cannot leave a half-updated registry: the in-memory
        // copy only changes after a successful commit, so the poisoned value is still whole.
        self.committed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device the pool lives on.
    pub fn device(&self) -> Arc<dyn BlockIo> {
        self.dev.clone()
    }

    /// A copy of the committed registry.
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// Sequence number of the newest registry copy on disk.
    pub fn sequence(&self) -> u64 {
        self.lock().sequence
    }

    /// Total size of the data area in bytes.
    pub fn size_bytes(&self) -> u64 {
        let committed = self.lock();
        committed.registry.extent_count * committed.registry.extent_bytes
    }

    /// Bytes of the data area given to COWs.
    pub fn used_bytes(&self) -> u64 {
        let committed = self.lock();
        committed.registry.used_extent_count() * committed.registry.extent_bytes
    }

    /// Changes the registry: `change` edits a copy; if it succeeds the copy is validated,
    /// written to the other slot and flushed, and only then becomes the committed registry.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Registry) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        let mut committed = self.lock();
        let mut registry = committed.registry.clone();
        let result = change(&mut registry)?;
        registry.validate().map_err(PoolError::Invalid)?;
        let payload = serialize(&registry)?;
        let growing = payload.len() > committed.payload_bytes;
        if (growing && payload.len() > REGISTRY_GROWTH_LIMIT) || payload.len() > layout::MAX_PAYLOAD
        {
            let limit = if growing { REGISTRY_GROWTH_LIMIT } else { layout::MAX_PAYLOAD };
            return Err(PoolError::RegistryTooLarge { bytes: payload.len(), limit });
        }
        let sequence = committed.sequence + 1;
        write_slot(self.dev.as_ref(), sequence, &payload)?;
        committed.registry = registry;
        committed.sequence = sequence;
        committed.payload_bytes = payload.len();
        Ok(result)
    }

    /// A COW made of `extents`, presented as one device.
    pub fn extent_io(&self, extents: &[u64]) -> ExtentIo {
        let committed = self.lock();
        ExtentIo::new(
            self.dev.clone(),
            committed.registry.data_offset,
            committed.registry.extent_bytes,
            extents.to_vec(),
        )
    }

    /// Zeroes the first `bytes` of each extent and flushes, so a COW made of them starts as a
    /// new, empty exception store. Done before the registry names the extents.
    pub fn zero_extent_starts(&self, extents: &[u64], bytes: u64) -> Result<(), PoolError> {
        let (data_offset, extent_bytes) = {
            let committed = self.lock();
            (committed.registry.data_offset, committed.registry.extent_bytes)
        };
        let zeros = vec![0u8; bytes.min(extent_bytes) as usize];
        for &extent in extents {
            self.dev
                .write_at(&zeros, data_offset + extent * extent_bytes)
                .map_err(|err| PoolError::io(format!("zeroing pool extent {extent}"), err))?;
        }
        self.dev.flush().map_err(|err| PoolError::io("flushing pool", err))
    }
}

/// Why one slot could not be used.
#[derive(Debug, Error)]
enum SlotProblem {
    #[error(transparent)]
    Frame(#[from] SlotError),
    #[error("unreadable: {0}")]
    Io(std::io::Error),
    #[error("registry does not parse: {0}")]
    Parse(serde_json::Error),
    #[error("registry is inconsistent: {0}")]
    Inconsistent(String),
}

fn read_slot(dev: &dyn BlockIo, slot: u64) -> Result<(u64, Registry), SlotProblem> {
    let offset = layout::slot_offset(slot);
    let mut header = vec![0u8; HEADER_BYTES];
    dev.read_at(&mut header, offset).map_err(SlotProblem::Io)?;
    let (_, length) = layout::decode_header(&header)?;
    let mut payload = vec![0u8; length];
    dev.read_at(&mut payload, offset + HEADER_BYTES as u64).map_err(SlotProblem::Io)?;
    let frame = layout::verify_slot(&header, payload)?;
    let registry: Registry = serde_json::from_slice(&frame.payload).map_err(SlotProblem::Parse)?;
    registry.validate().map_err(SlotProblem::Inconsistent)?;
    Ok((frame.sequence, registry))
}

fn serialize(registry: &Registry) -> Result<Vec<u8>, PoolError> {
    serde_json::to_vec(registry)
        .map_err(|err| PoolError::Invalid(format!("registry does not serialize: {err}")))
}

fn write_slot(dev: &dyn BlockIo, sequence: u64, payload: &[u8]) -> Result<(), PoolError> {
    let image = layout::encode_slot(sequence, payload);
    dev.write_at(&image, layout::slot_offset(sequence))
        .map_err(|err| PoolError::io(format!("writing registry copy {sequence}"), err))?;
    dev.flush().map_err(|err| PoolError::io(format!("flushing registry copy {sequence}"), err))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
