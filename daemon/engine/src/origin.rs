//! An origin device and its snapshots: the data path of dm-snapshot's snapshot-origin and
//! snapshot targets, and the snapshot-merge target's merge.
//!
//! Concurrency: one `RwLock` over the metadata. Reads share it; every write (origin or
//! snapshot) and every merge step holds it exclusively, so a write never runs while chunks
//! are being merged and a chunk is never merged while a write to it is in flight. A separate
//! gate implements `suspend` / `resume`.
//!
//! Group commit: an origin write that needs copies copies the old data into the COWs and
//! stages the exceptions, but keeps its new data in a write-back buffer (see `writeback`)
//! instead of writing the origin. The batch is committed, then the buffer written, when the
//! buffer reaches its limit and on `flush`, `suspend`, attach / detach, merge start and every
//! merge step, and drop. Everything that reads the origin device overlays the buffer.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{EngineError, Result};
use crate::format::{Entry, Usage};
use crate::io::BlockIo;
use crate::store::{MergeCommitError, MergeRun, PersistentStore};
use crate::writeback::WriteBack;

/// Identifies a snapshot attached to an origin.
pub type SnapshotId = u64;

/// How a snapshot is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Chunk size in sectors for a new store (default 32); an existing store's size wins.
    pub chunk_sectors: Option<u32>,
    /// The kernel's `PO` mode: a full COW fails snapshot writes instead of invalidating.
    pub overflow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SnapshotState {
    Active,
    Invalid,
    Overflow,
    Merging,
    MergeFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub state: SnapshotState,
    /// None when the snapshot is invalid (the kernel prints just "Invalid").
    pub usage: Option<Usage>,
    pub exceptions: u64,
    pub chunk_sectors: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MergeProgress {
    pub chunks_left: u64,
    pub chunks_total: u64,
    pub finished: bool,
}

/// Default bytes copied by one merge step.
pub const DEFAULT_MERGE_STEP_BYTES: u64 = 8 << 20;

/// Default limit of the write-back buffer: origin data held while its exceptions wait for
/// their commit. Larger batches save commits (two COW flushes each) but hold more memory,
/// touch more fresh pages and make each `flush` wait longer. 16 MiB and 32 MiB measured alike
/// within the benchmark's noise, with cheap and with 8 ms flushes; 16 MiB holds less.
pub const DEFAULT_WRITE_BACK_BYTES: u64 = 16 << 20;

#[derive(Debug)]
struct Snapshot {
    store: PersistentStore,
    overflow_option: bool,
    overflowed: bool,
}

#[derive(Debug)]
struct MergeState {
    id: SnapshotId,
    total: u64,
    failed: bool,
}

#[derive(Debug, Default)]
struct State {
    snapshots: BTreeMap<SnapshotId, Snapshot>,
    next_id: SnapshotId,
    merge: Option<MergeState>,
    /// Reused copy buffer: a fresh multi-MiB buffer per write or merge step costs page
    /// faults and zeroing that show in throughput.
    scratch: Vec<u8>,
    /// New origin data waiting for the exceptions staged for it to be committed.
    write_back: WriteBack,
    /// The first failure since the last `flush` that may have lost data users wrote before
    /// it, which the next `flush` reports (as the page cache reports a writeback error at the
    /// next fsync): a failed write of buffered data to the origin, or a merge step's failed
    /// flush of the origin or of the merging COW. A failed flush may have dropped what it was
    /// to make durable (Linux marks such pages clean), and the next flush, succeeding, would
    /// not know.
    unreported_error: Option<EngineError>,
}

#[derive(Debug, Default)]
struct Gate {
    suspended: bool,
    in_flight: u64,
}

/// An origin and the snapshots attached to it. Send + Sync.
#[derive(Debug)]
pub struct Origin {
    dev: Arc<dyn BlockIo>,
    size: u64,
    state: RwLock<State>,
    gate: Mutex<Gate>,
    gate_changed: Condvar,
    merge_step_bytes: std::sync::atomic::AtomicU64,
    write_back_limit: std::sync::atomic::AtomicU64,
}

/// Holds a place among the in-flight writes; leaving it lets `suspend` proceed.
struct WriteTicket<'a>(&'a Origin);

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock_gate();
        g.in_flight -= 1;
        self.0.gate_changed.notify_all();
    }
}

fn io_err(context: &'static str) -> impl FnOnce(std::io::Error) -> EngineError {
    move |e| EngineError::io(context, e)
}

/// Where a piece of a view lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Origin(u64),
    Cow(u64),
}

/// Splits `[offset, offset+len)` into pieces at chunk boundaries and maps each through
/// `store` (COW when it has an exception, origin otherwise), coalescing contiguous pieces.
/// Yields (position in the buffer, source, length).
fn map_view(store: Option<&PersistentStore>, offset: u64, len: u64) -> Vec<(u64, Source, u64)> {
    let Some(store) = store.filter(|s| s.is_valid() && s.exception_count() > 0) else {
        return vec![(0, Source::Origin(offset), len)];
    };
    let cb = store.chunk_bytes();
    let mut out: Vec<(u64, Source, u64)> = Vec::new();
    let mut pos = 0;
    while pos < len {
        let abs = offset + pos;
        let in_chunk = abs % cb;
        let n = (cb - in_chunk).min(len - pos);
        let src = match store.lookup(abs / cb) {
            Some(new) => Source::Cow(new * cb + in_chunk),
            None => Source::Origin(abs),
        };
        if let Some(last) = out.last_mut() {
            let contiguous = match (last.1, src) {
                (Source::Origin(a), Source::Origin(b)) | (Source::Cow(a), Source::Cow(b)) => {
                    a + last.2 == b
                }
                _ => false,
            };
            if contiguous {
                last.2 += n;
                pos += n;
                continue;
            }
        }
        out.push((pos, src, n));
        pos += n;
    }
    out
}

/// Reads the view of `store`'s snapshot of `dev` (exception → COW, else origin).
pub(crate) fn read_through(
    dev: &dyn BlockIo,
    store: &PersistentStore,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    if !store.is_valid() {
        return Err(EngineError::Invalid);
    }
    read_mapped(dev, &WriteBack::default(), Some(store), offset, buf)
}

/// Reads a view: COW pieces from the COW, origin pieces from the device overlaid with the
/// write-back buffer `wb`.
fn read_mapped(
    dev: &dyn BlockIo,
    wb: &WriteBack,
    store: Option<&PersistentStore>,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    for (pos, src, n) in map_view(store, offset, buf.len() as u64) {
        let piece = &mut buf[pos as usize..(pos + n) as usize];
        match (src, store) {
            (Source::Origin(at), _) => {
                wb.read_origin(dev, at, piece).map_err(io_err("reading the origin"))?
            }
            (Source::Cow(at), Some(s)) => {
                s.cow().read_at(piece, at).map_err(io_err("reading a COW"))?
            }
            (Source::Cow(_), None) => unreachable_cow()?,
        }
    }
    Ok(())
}

/// `map_view` never yields COW pieces without a store; kept as an error, not a panic.
fn unreachable_cow() -> Result<()> {
    Err(EngineError::io("mapping a view", std::io::Error::other("COW piece without a store")))
}

/// Copy-before-write without the commit: makes sure `store` holds its own copy of every
/// chunk overlapping `[offset, offset+len)` of the origin (allocate, copy the origin's current
/// data as users see it) and stages the new exceptions: the origin must not change on disk
/// before they are committed.
fn copy_out(
    dev: &dyn BlockIo,
    wb: &WriteBack,
    origin_size: u64,
    store: &mut PersistentStore,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let cb = store.chunk_bytes();
    let end = offset.saturating_add(len).min(origin_size);
    if len == 0 || offset >= end {
        return Ok(());
    }
    let missing: Vec<u64> =
        (offset / cb..=(end - 1) / cb).filter(|&c| store.lookup(c).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut entries = Vec::with_capacity(missing.len());
    for old in missing {
        entries.push(Entry { old, new: store.allocate()? });
    }
    // Copy runs consecutive in both origin and COW with one read and one write each.
    let mut i = 0;
    while i < entries.len() {
        let mut j = i + 1;
        while j < entries.len()
            && entries[j].old == entries[j - 1].old + 1
            && entries[j].new == entries[j - 1].new + 1
        {
            j += 1;
        }
        let from = entries[i].old * cb;
        let bytes = ((j - i) as u64 * cb).min(origin_size - from);
        if buf.len() < bytes as usize {
            buf.resize(bytes as usize, 0);
        }
        wb.read_origin(dev, from, &mut buf[..bytes as usize])
            .map_err(io_err("reading the origin for a copy"))?;
        store
            .cow()
            .write_at(&buf[..bytes as usize], entries[i].new * cb)
            .map_err(io_err("copying a chunk into a COW"))?;
        i = j;
    }
    store.stage(&entries)
}

/// Returns `e` as an engine error now, and keeps it (the first one only) for the next `flush`
/// to report: a failure that may have lost data users wrote before it.
fn report_now_and_at_flush(
    unreported: &mut Option<EngineError>,
    context: &str,
    e: std::io::Error,
) -> EngineError {
    let now = std::io::Error::new(e.kind(), e.to_string());
    unreported.get_or_insert(EngineError::io(context, e));
    EngineError::io(context, now)
}

/// Marks a snapshot invalid on disk, best effort: if even that fails, it is invalid in memory.
fn invalidate(snap: &mut Snapshot) {
    let _ = snap.store.invalidate();
}

impl Origin {
    pub fn new(dev: Arc<dyn BlockIo>) -> Result<Origin> {
        let size = dev.size_bytes().map_err(io_err("reading the origin size"))?;
        Ok(Origin {
            dev,
            size,
            state: RwLock::new(State::default()),
            gate: Mutex::new(Gate::default()),
            gate_changed: Condvar::new(),
            merge_step_bytes: std::sync::atomic::AtomicU64::new(DEFAULT_MERGE_STEP_BYTES),
            write_back_limit: std::sync::atomic::AtomicU64::new(DEFAULT_WRITE_BACK_BYTES),
        })
    }

    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Bytes one merge step copies at most (at least one chunk is always copied).
    pub fn set_merge_step_bytes(&self, bytes: u64) {
        self.merge_step_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of origin data the write-back buffer may hold before its batch is committed and
    /// written (default `DEFAULT_WRITE_BACK_BYTES`). 0 commits every write before it returns,
    /// as dm-snapshot does.
    pub fn set_write_back_limit(&self, bytes: u64) {
        self.write_back_limit.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of origin data in the write-back buffer now.
    pub fn write_back_bytes(&self) -> u64 {
        self.read_state().write_back.bytes()
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
    fn lock_gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while suspended, then counts a write in flight.
    fn enter_write(&self) -> WriteTicket<'_> {
        let mut g = self.lock_gate();
        while g.suspended {
            g = self.gate_changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.in_flight += 1;
        WriteTicket(self)
    }

    /// Blocks new writes, waits for the ones in flight and drains the write-back buffer, so a
    /// snapshot attached now finds the origin's data on the device. A failed origin write
    /// stays buffered (reads see it) and the next `flush` reports it.
    pub fn suspend(&self) {
        let mut g = self.lock_gate();
        g.suspended = true;
        while g.in_flight > 0 {
            g = self.gate_changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        drop(g);
        let _ = self.drain(&mut self.write_state());
    }

    pub fn resume(&self) {
        self.lock_gate().suspended = false;
        self.gate_changed.notify_all();
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(EngineError::OutOfRange { offset, len: len as u64, size: self.size }),
        }
    }

    /// The merging snapshot whose view the origin presents, if any (valid ones only: an
    /// invalid merging snapshot sends all access to the origin).
    fn merging_store(st: &State) -> Option<(SnapshotId, &PersistentStore)> {
        let m = st.merge.as_ref()?;
        let snap = st.snapshots.get(&m.id)?;
        snap.store.is_valid().then_some((m.id, &snap.store))
    }

    /// Reads the origin device as users see it (through a merging snapshot, if any).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let st = self.read_state();
        read_mapped(
            self.dev.as_ref(),
            &st.write_back,
            Self::merging_store(&st).map(|m| m.1),
            offset,
            buf,
        )
    }

    /// Writes the origin: first writes to chunks copy the old data into every valid,
    /// non-merging snapshot. The new data then waits in the write-back buffer until those
    /// exceptions are committed (see the module comment); like a disk's write cache, a
    /// returned write is durable only after `flush`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let _ticket = self.enter_write();
        let mut st = self.write_state();
        self.write_locked(&mut st, offset, buf)
    }

    fn write_locked(&self, st: &mut State, offset: u64, buf: &[u8]) -> Result<()> {
        Self::settle_merge_before_write(st, offset, buf.len() as u64)?;
        let Some((mid, mstore)) = Self::merging_store(st) else {
            return self.origin_write(st, None, offset, buf);
        };
        // Chunks still held by the merging snapshot are written in its COW; the rest go to
        // the origin (with copy-before-write into the other snapshots).
        let pieces = map_view(Some(mstore), offset, buf.len() as u64);
        for (pos, src, n) in pieces {
            let data = &buf[pos as usize..(pos + n) as usize];
            match src {
                Source::Cow(at) => {
                    let snap = st.snapshots.get(&mid).ok_or(EngineError::NoSuchSnapshot(mid))?;
                    snap.store.cow().write_at(data, at).map_err(io_err("writing a merging COW"))?;
                }
                Source::Origin(at) => self.origin_write(st, Some(mid), at, data)?,
            }
        }
        Ok(())
    }

    /// A merge step whose metadata commit failed after its area write was issued leaves its
    /// chunks listed in memory but maybe not on disk. They read the same from the COW and
    /// the origin, but a write must land where a restart will look: the COW if the disk lists
    /// the chunk (a resumed merge copies it over the origin), the origin if not. So a write to
    /// one of them first finishes that commit; if it cannot, the write fails and changes nothing.
    fn settle_merge_before_write(st: &mut State, offset: u64, len: u64) -> Result<()> {
        let Some(m) = st.merge.as_ref() else { return Ok(()) };
        let Some(snap) = st.snapshots.get_mut(&m.id) else { return Ok(()) };
        if len == 0 || !snap.store.is_valid() {
            return Ok(());
        }
        let cb = snap.store.chunk_bytes();
        if snap.store.merge_unsettled_in(offset / cb..=(offset + len - 1) / cb) {
            snap.store.settle_merge()?;
        }
        Ok(())
    }

    fn origin_write(
        &self,
        st: &mut State,
        exclude: Option<SnapshotId>,
        offset: u64,
        buf: &[u8],
    ) -> Result<()> {
        let len = buf.len() as u64;
        let State { snapshots, write_back, scratch, .. } = &mut *st;
        for (id, snap) in snapshots.iter_mut() {
            if Some(*id) == exclude || !snap.store.is_valid() {
                continue;
            }
            if copy_out(
                self.dev.as_ref(),
                write_back,
                self.size,
                &mut snap.store,
                offset,
                len,
                scratch,
            )
            .is_err()
            {
                // A full or failing COW costs the snapshot, never the origin write.
                invalidate(snap);
            }
        }
        // While a batch is open (this write's copies included) every origin write joins it:
        // a chunk whose exception is only staged is not protected yet, and bytes already
        // buffered must not be overtaken by an older buffered write landing after this one.
        if Self::batch_open(st) {
            return self.buffer_write(st, offset, buf);
        }
        self.dev.write_at(buf, offset).map_err(io_err("writing the origin"))
    }

    /// True while origin data is buffered or exceptions wait for their commit.
    fn batch_open(st: &State) -> bool {
        !st.write_back.is_empty()
            || st.snapshots.values().any(|s| s.store.is_valid() && s.store.has_staged())
    }

    /// Keeps origin data in the write-back buffer until its exceptions are committed; drains
    /// the buffer when it reaches its limit.
    fn buffer_write(&self, st: &mut State, offset: u64, buf: &[u8]) -> Result<()> {
        let limit = self.write_back_limit.load(std::sync::atomic::Ordering::Relaxed);
        // Only a drain that failed leaves the buffer at its limit. Try again; if the origin
        // still fails writes, refuse this one rather than let memory grow without bound.
        if !st.write_back.is_empty() && st.write_back.bytes() >= limit {
            self.drain(st)?;
        }
        st.write_back.insert(offset, buf);
        if st.write_back.bytes() >= limit {
            // This write is accepted either way; a failed origin write stays buffered and
            // the next flush reports it.
            let _ = self.drain(st);
        }
        Ok(())
    }

    /// Commits every staged exception, then writes the buffered origin data: the order that
    /// keeps snapshots whole across a crash. A COW whose commit fails costs its snapshot (as
    /// a failed copy does) and the origin data is written anyway. An origin write that fails
    /// stays buffered, is recorded for the next `flush` and is returned.
    fn drain(&self, st: &mut State) -> Result<()> {
        for snap in st.snapshots.values_mut() {
            if snap.store.is_valid()
                && snap.store.has_staged()
                && snap.store.commit_staged().is_err()
            {
                invalidate(snap);
            }
        }
        st.write_back.write_out(self.dev.as_ref()).map_err(|e| {
            report_now_and_at_flush(
                &mut st.unreported_error,
                "writing buffered data to the origin",
                e,
            )
        })
    }

    /// Commits what is staged and writes the buffered origin data, without flushing any
    /// device: what the kernel's dirty-page expiry does, not an fsync. A failed origin write
    /// stays buffered and recorded, and the next `flush` reports it; nothing here consumes an
    /// error a later `flush` must see (a device flush would take the backing file's writeback
    /// error away from the caller of the next fsync).
    pub fn write_back(&self) -> Result<()> {
        let mut st = self.write_state();
        let drained = self.drain(&mut st);
        st.write_back.release();
        drained
    }

    /// Commits what is staged, writes the buffered origin data, then flushes the origin and
    /// the COW of every valid snapshot. Reports, once, a failure since the last flush that may
    /// have lost data written before it (see `State::unreported_error`), even if a retry
    /// succeeded, as fsync reports a writeback error.
    ///
    /// Only the origin and the merging snapshot's COW can fail it: the merging COW holds the
    /// origin's data for every chunk not merged yet. Any other snapshot whose COW fails its
    /// flush is invalidated instead, as dm-snapshot invalidates a snapshot whose COW fails a
    /// write and still completes the origin's I/O: its writes since its last flush may be
    /// lost, so its content can no longer be vouched for, and what it had to protect (the
    /// copies and their metadata) was made durable by its commits, not by this flush. Invalid
    /// snapshots are not flushed at all: nothing of them is kept.
    pub fn flush(&self) -> Result<()> {
        let unreported = {
            let mut st = self.write_state();
            // A failure is recorded in `unreported_error`, reported below.
            let _ = self.drain(&mut st);
            st.write_back.release();
            st.unreported_error.take()
        };
        let flushed = self.flush_devices();
        match unreported {
            Some(e) => Err(e),
            None => flushed,
        }
    }

    fn flush_devices(&self) -> Result<()> {
        let (mut first_error, failed) = {
            // Everything this flush covers is on the devices now: reads go on while they flush.
            let st = self.read_state();
            let merging = st.merge.as_ref().map(|m| m.id);
            let mut first_error = self.dev.flush().map_err(io_err("flushing the origin")).err();
            let mut failed = Vec::new();
            for (&id, snap) in &st.snapshots {
                if !snap.store.is_valid() {
                    continue;
                }
                if let Err(e) = snap.store.cow().flush() {
                    if Some(id) == merging {
                        first_error.get_or_insert(EngineError::io(
                            "flushing the merging snapshot's COW",
                            e,
                        ));
                    } else {
                        failed.push((id, e));
                    }
                }
            }
            (first_error, failed)
        };
        if !failed.is_empty() {
            let mut st = self.write_state();
            for (id, e) in failed {
                // A merge may have started on it while it was flushed: then the origin's
                // data is in it, and the failure is the flush's to report.
                if st.merge.as_ref().map(|m| m.id) == Some(id) {
                    first_error
                        .get_or_insert(EngineError::io("flushing the merging snapshot's COW", e));
                } else if let Some(snap) = st.snapshots.get_mut(&id) {
                    invalidate(snap);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Opens the store on `cow` (formatting an all-zero one) and attaches it. Refused with
    /// `AlreadyMerging` while a merge has chunks left (like LVM: no snapshot of a merging
    /// origin); re-attach existing snapshots before restarting a merge.
    pub fn attach_snapshot(
        &self,
        cow: Arc<dyn BlockIo>,
        opts: SnapshotOptions,
    ) -> Result<SnapshotId> {
        if Self::progress_of(&self.read_state()).is_some_and(|p| !p.finished) {
            return Err(EngineError::AlreadyMerging);
        }
        let store = PersistentStore::open(cow, opts.chunk_sectors, self.dev.logical_block_size())?;
        Ok(self.attach_store(store, opts))
    }

    /// Attaches an already opened store (offline merge, or a store the caller opened with
    /// `PersistentStore::open_existing` so nothing gets formatted).
    pub fn attach_store(&self, store: PersistentStore, opts: SnapshotOptions) -> SnapshotId {
        let mut st = self.write_state();
        // The new snapshot starts from the origin as the device holds it: nothing may stay
        // buffered that it would not know about. A failed origin write stays buffered (so
        // the snapshot reads it through the overlay) and the next flush reports it.
        let _ = self.drain(&mut st);
        let id = st.next_id;
        st.next_id += 1;
        st.snapshots
            .insert(id, Snapshot { store, overflow_option: opts.overflow, overflowed: false });
        id
    }

    pub fn detach_snapshot(&self, id: SnapshotId) -> Result<()> {
        let mut st = self.write_state();
        // Its staged exceptions go to disk before the origin data they protect can: the COW
        // may be attached again later. A failed origin write is kept for the next flush.
        let _ = self.drain(&mut st);
        st.snapshots.remove(&id).ok_or(EngineError::NoSuchSnapshot(id))?;
        if st.merge.as_ref().map(|m| m.id) == Some(id) {
            st.merge = None;
        }
        Ok(())
    }

    pub fn snapshot_ids(&self) -> Vec<SnapshotId> {
        self.read_state().snapshots.keys().copied().collect()
    }

    fn is_merging(st: &State, id: SnapshotId) -> bool {
        st.merge.as_ref().map(|m| m.id) == Some(id)
    }

    /// Reads a snapshot. The merging snapshot reads like the origin (it is the merged device).
    pub fn snapshot_read(&self, id: SnapshotId, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let st = self.read_state();
        let snap = st.snapshots.get(&id).ok_or(EngineError::NoSuchSnapshot(id))?;
        if Self::is_merging(&st, id) {
            return read_mapped(
                self.dev.as_ref(),
                &st.write_back,
                Self::merging_store(&st).map(|m| m.1),
                offset,
                buf,
            );
        }
        if !snap.store.is_valid() {
            return Err(EngineError::Invalid);
        }
        read_mapped(self.dev.as_ref(), &st.write_back, Some(&snap.store), offset, buf)
    }

    /// Writes a snapshot: chunks with an exception are written in place; others get a new
    /// exception (copying the origin chunk unless the write covers it), committed durably.
    pub fn snapshot_write(&self, id: SnapshotId, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let _ticket = self.enter_write();
        let mut st = self.write_state();
        if !st.snapshots.contains_key(&id) {
            return Err(EngineError::NoSuchSnapshot(id));
        }
        if Self::is_merging(&st, id) {
            return self.write_locked(&mut st, offset, buf);
        }
        let State { snapshots, write_back, .. } = &mut *st;
        let snap = snapshots.get_mut(&id).ok_or(EngineError::NoSuchSnapshot(id))?;
        if !snap.store.is_valid() {
            return Err(EngineError::Invalid);
        }
        match self.snapshot_write_new(snap, write_back, offset, buf) {
            Ok(()) => Ok(()),
            Err(EngineError::NoSpace) if snap.overflow_option => {
                snap.overflowed = true;
                Err(EngineError::Overflow)
            }
            Err(EngineError::Overflow) => Err(EngineError::Overflow),
            Err(e) => {
                invalidate(snap);
                Err(e)
            }
        }
    }

    fn snapshot_write_new(
        &self,
        snap: &mut Snapshot,
        wb: &WriteBack,
        offset: u64,
        buf: &[u8],
    ) -> Result<()> {
        let store = &mut snap.store;
        let cb = store.chunk_bytes();
        let end = offset + buf.len() as u64;
        if buf.is_empty() {
            return Ok(());
        }
        let chunks = offset / cb..=(end - 1) / cb;
        let missing: Vec<u64> = chunks.clone().filter(|&c| store.lookup(c).is_none()).collect();
        // Like the kernel: once overflowed, only writes needing a new exception fail.
        if snap.overflowed && !missing.is_empty() {
            return Err(EngineError::Overflow);
        }
        let mark = store.allocation_mark();
        let mut entries = Vec::with_capacity(missing.len());
        for &old in &missing {
            match store.allocate() {
                Ok(new) => entries.push(Entry { old, new }),
                Err(e) => {
                    store.rollback_allocations(mark);
                    return Err(e);
                }
            }
        }
        let mut chunk_buf = Vec::new();
        for c in chunks {
            let c_start = c * cb;
            let c_end = (c_start + cb).min(self.size);
            let w_start = offset.max(c_start);
            let w_end = end.min(c_end);
            let data = &buf[(w_start - offset) as usize..(w_end - offset) as usize];
            if let Some(e) = entries.iter().find(|e| e.old == c) {
                // New exception: the chunk's bytes the write does not cover come from the origin.
                chunk_buf.resize((c_end - c_start) as usize, 0);
                if w_start > c_start || w_end < c_end {
                    wb.read_origin(self.dev.as_ref(), c_start, &mut chunk_buf)
                        .map_err(io_err("reading the origin for a copy"))?;
                }
                chunk_buf[(w_start - c_start) as usize..(w_end - c_start) as usize]
                    .copy_from_slice(data);
                store.cow().write_at(&chunk_buf, e.new * cb).map_err(io_err("writing a COW"))?;
            } else if let Some(new) = store.lookup(c) {
                let at = new * cb + (w_start - c_start);
                store.cow().write_at(data, at).map_err(io_err("writing a COW"))?;
            }
        }
        store.commit(&entries)
    }

    pub fn snapshot_status(&self, id: SnapshotId) -> Result<SnapshotStatus> {
        let st = self.read_state();
        let snap = st.snapshots.get(&id).ok_or(EngineError::NoSuchSnapshot(id))?;
        let merge = st.merge.as_ref().filter(|m| m.id == id);
        let state = if !snap.store.is_valid() {
            SnapshotState::Invalid
        } else if let Some(m) = merge {
            if m.failed {
                SnapshotState::MergeFailed
            } else {
                SnapshotState::Merging
            }
        } else if snap.overflowed {
            SnapshotState::Overflow
        } else {
            SnapshotState::Active
        };
        let usage = if snap.store.is_valid() { Some(snap.store.usage()?) } else { None };
        Ok(SnapshotStatus {
            state,
            usage,
            exceptions: snap.store.exception_count(),
            chunk_sectors: snap.store.chunk_sectors(),
        })
    }

    /// Starts merging snapshot `id` into the origin. Restarting a failed merge resumes it.
    /// Refused while buffered origin data cannot be written: from now on the origin shows the
    /// snapshot, and a buffered write landing later would overwrite merged chunks.
    pub fn start_merge(&self, id: SnapshotId) -> Result<()> {
        let mut st = self.write_state();
        self.drain(&mut st)?;
        let snap = st.snapshots.get(&id).ok_or(EngineError::NoSuchSnapshot(id))?;
        if !snap.store.is_valid() {
            return Err(EngineError::Invalid);
        }
        let left = snap.store.exception_count();
        match st.merge.as_mut() {
            Some(m) if m.id == id && m.failed => {
                m.failed = false;
                Ok(())
            }
            Some(_) => Err(EngineError::AlreadyMerging),
            None => {
                st.merge = Some(MergeState { id, total: left, failed: false });
                Ok(())
            }
        }
    }

    fn progress_of(st: &State) -> Option<MergeProgress> {
        let m = st.merge.as_ref()?;
        let left = st.snapshots.get(&m.id).map(|s| s.store.exception_count()).unwrap_or(0);
        Some(MergeProgress { chunks_left: left, chunks_total: m.total, finished: left == 0 })
    }

    pub fn merge_progress(&self) -> Option<MergeProgress> {
        Self::progress_of(&self.read_state())
    }

    /// One bounded merge step: takes runs of consecutive exceptions from the newest end,
    /// gives every other snapshot its own copy of those origin chunks, copies COW → origin,
    /// flushes the origin once, and drops the merged entries with one durable area write.
    pub fn merge_step(&self) -> Result<MergeProgress> {
        let _ticket = self.enter_write();
        let mut st = self.write_state();
        let st = &mut *st;
        let m = st.merge.as_ref().ok_or(EngineError::NotMerging)?;
        let (mid, failed) = (m.id, m.failed);
        if failed {
            return Err(EngineError::MergeFailed);
        }
        let snap = st.snapshots.get_mut(&mid).ok_or(EngineError::NoSuchSnapshot(mid))?;
        if !snap.store.is_valid() {
            return Err(EngineError::Invalid);
        }
        let max_chunks = (self.merge_step_bytes.load(std::sync::atomic::Ordering::Relaxed)
            / snap.store.chunk_bytes())
        .max(1);
        let result = self.merge_runs(st, mid, max_chunks);
        if result.is_err() {
            if let Some(m) = st.merge.as_mut() {
                m.failed = true;
            }
        }
        result?;
        Self::progress_of(st).ok_or(EngineError::NotMerging)
    }

    fn merge_runs(&self, st: &mut State, mid: SnapshotId, max_chunks: u64) -> Result<()> {
        // The step writes the origin: what is buffered goes first, in its own order.
        self.drain(st)?;
        let snap = st.snapshots.get_mut(&mid).ok_or(EngineError::NoSuchSnapshot(mid))?;
        let runs: Vec<MergeRun> = snap.store.prepare_merge(max_chunks)?;
        if runs.is_empty() {
            return Ok(());
        }
        let cb = snap.store.chunk_bytes();
        // The origin chunks are about to change: other snapshots keep their old content.
        let mut buf = std::mem::take(&mut st.scratch);
        for run in &runs {
            let from = run.old.saturating_mul(cb);
            for (id, other) in st.snapshots.iter_mut() {
                if *id != mid && other.store.is_valid() {
                    let len = run.count * cb;
                    let copied = copy_out(
                        self.dev.as_ref(),
                        &st.write_back,
                        self.size,
                        &mut other.store,
                        from,
                        len,
                        &mut buf,
                    );
                    // Committed at once: the merge writes these origin chunks next.
                    if copied.and_then(|()| other.store.commit_staged()).is_err() {
                        invalidate(other);
                    }
                }
            }
        }
        let result = self.copy_runs_back(st, mid, &runs, &mut buf);
        st.scratch = buf;
        result
    }

    /// Copies merge runs COW → origin, flushes the origin once, commits with one area write.
    ///
    /// On failure the merged entries stay in the table (the store changes memory only after
    /// its commit is durable), so reads and writes of their chunks keep going to the COW and a
    /// resumed merge copies them again, now or after a restart. A failed flush of the origin
    /// or of the merging COW is also kept for the next `flush` to report: it may have lost
    /// writes users made before the step.
    fn copy_runs_back(
        &self,
        st: &mut State,
        mid: SnapshotId,
        runs: &[MergeRun],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let State { snapshots, unreported_error, .. } = st;
        let snap = snapshots.get_mut(&mid).ok_or(EngineError::NoSuchSnapshot(mid))?;
        let cb = snap.store.chunk_bytes();
        let mut merged = 0;
        for run in runs {
            merged += run.count;
            let from = run.old.saturating_mul(cb);
            if from >= self.size {
                continue; // an exception beyond the origin's end has nothing to merge into
            }
            let bytes = (run.count * cb).min(self.size - from) as usize;
            if buf.len() < bytes {
                buf.resize(bytes, 0);
            }
            let piece = &mut buf[..bytes];
            snap.store
                .cow()
                .read_at(piece, run.new * cb)
                .map_err(io_err("reading a COW to merge"))?;
            self.dev.write_at(piece, from).map_err(io_err("writing merged data to the origin"))?;
        }
        self.dev.flush().map_err(|e| {
            report_now_and_at_flush(unreported_error, "flushing the origin after a merge step", e)
        })?;
        snap.store.commit_merge(merged).map_err(|e| match e {
            MergeCommitError::DataFlush(e) => report_now_and_at_flush(
                unreported_error,
                "flushing the merging COW before a merge commit",
                e,
            ),
            other => other.into(),
        })
    }
}

impl Drop for Origin {
    /// Writes that returned reach the devices when the origin goes away, as a closed file's
    /// data stays in the page cache: commit what is staged, then write the buffer. Making
    /// them durable is still `flush`'s job.
    fn drop(&mut self) {
        let _ = self.drain(&mut self.write_state());
    }
}
