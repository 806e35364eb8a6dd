//! Offline operations on a COW (and its origin) without a daemon: the library half of
//! `snapbackctl cow inspect|check|export|merge`.

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::format::DISK_VERSION;
use crate::io::BlockIo;
use crate::origin::{MergeProgress, Origin, SnapshotOptions};
use crate::store::{PersistentStore, Problem};

/// What `inspect` reports; the JSON keys are part of the CLI's interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CowReport {
    pub valid: bool,
    pub version: u32,
    pub chunk_sectors: u32,
    /// Exceptions in the table (0 for an invalid store: its table is never read).
    pub exceptions: u64,
    pub allocated_sectors: u64,
    pub total_sectors: u64,
    pub metadata_sectors: u64,
}

impl CowReport {
    /// The kernel status line's usage part, `<allocated>/<total> <metadata>`, or "Invalid".
    pub fn usage_line(&self) -> String {
        if self.valid {
            format!("{}/{} {}", self.allocated_sectors, self.total_sectors, self.metadata_sectors)
        } else {
            "Invalid".to_string()
        }
    }
}

/// Opens the store read-only and reports its header and usage. Never formats anything.
pub fn inspect(cow: Arc<dyn BlockIo>) -> Result<CowReport> {
    let store = PersistentStore::open_existing(cow)?;
    let usage = store.usage()?;
    Ok(CowReport {
        valid: store.is_valid(),
        version: DISK_VERSION,
        chunk_sectors: store.chunk_sectors(),
        exceptions: store.exception_count(),
        allocated_sectors: usage.allocated_sectors,
        total_sectors: usage.total_sectors,
        metadata_sectors: usage.metadata_sectors,
    })
}

/// Full validation: every problem found (empty = clean). I/O errors are Err.
pub fn check(cow: &dyn BlockIo) -> Result<Vec<Problem>> {
    PersistentStore::check(cow)
}

/// Writes the snapshot's full view (origin-sized) to `out`, then flushes it.
pub fn export(origin: Arc<dyn BlockIo>, cow: Arc<dyn BlockIo>, out: &dyn BlockIo) -> Result<()> {
    let store = PersistentStore::open_existing(cow)?;
    if !store.is_valid() {
        return Err(EngineError::Invalid);
    }
    let size = origin.size_bytes().map_err(|e| EngineError::io("reading the origin size", e))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        crate::origin::read_through(origin.as_ref(), &store, at, &mut buf[..n])?;
        out.write_at(&buf[..n], at).map_err(|e| EngineError::io("writing the export", e))?;
        at += n as u64;
    }
    out.flush().map_err(|e| EngineError::io("flushing the export", e))
}

/// Merges the snapshot into the origin, reporting progress after every step. Resumable: run
/// it again after an interruption. Refuses an invalid (or unformatted) store before
/// touching the origin. Returns the final progress.
pub fn merge(
    origin: Arc<dyn BlockIo>,
    cow: Arc<dyn BlockIo>,
    progress: &mut dyn FnMut(MergeProgress),
) -> Result<MergeProgress> {
    let store = PersistentStore::open_existing(cow)?;
    if !store.is_valid() {
        return Err(EngineError::Invalid);
    }
    let o = Origin::new(origin)?;
    let id = o.attach_store(store, SnapshotOptions::default());
    o.start_merge(id)?;
    loop {
        let p = o.merge_step()?;
        progress(p);
        if p.finished {
            o.flush()?;
            return Ok(p);
        }
    }
}
