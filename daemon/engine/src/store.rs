//! The persistent exception store on one COW device: open (or format) it, look exceptions
//! up, allocate and commit new ones in the kernel's order, account usage, invalidate, and the
//! two halves of a merge step (`prepare_merge`, `commit_merge`).

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::format::{
    self, area_location, chunk_bytes, exceptions_per_area, read_entry, skip_metadata,
    validate_entry, write_entry, Entry, Header, HeaderState, Usage, DEFAULT_CHUNK_SECTORS,
    DISK_VERSION, ENTRY_BYTES, FIRST_DATA_CHUNK, SECTOR_BYTES,
};
use crate::io::BlockIo;
use crate::table::ExceptionTable;

/// `count` consecutive exceptions: origin chunks `old..old+count` live in COW chunks
/// `new..new+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeRun {
    pub old: u64,
    pub new: u64,
    pub count: u64,
}

/// Where allocation stood, to undo allocations whose exceptions will never be committed.
#[derive(Debug, Clone, Copy)]
pub struct AllocationMark {
    next_free: u64,
    pending: u64,
}

/// A problem `check` found. `offset` is the byte offset in the COW when known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub offset: Option<u64>,
    pub message: String,
}

impl From<&EngineError> for Problem {
    fn from(e: &EngineError) -> Self {
        Problem { offset: e.corrupt_offset(), message: e.to_string() }
    }
}

/// An opened persistent store.
#[derive(Debug)]
pub struct PersistentStore {
    cow: Arc<dyn BlockIo>,
    chunk_sectors: u32,
    chunk_bytes: u64,
    epa: u64,
    valid: bool,
    next_free: u64,
    current_area: u64,
    /// Entries used in `area`, the in-memory copy of metadata area `current_area`.
    current_committed: u64,
    area: Vec<u8>,
    /// Allocated chunks whose exceptions are not committed yet.
    pending: u64,
    /// Exceptions whose data is written and which the table already maps, but which are not
    /// in a metadata area on disk yet: the next `commit_staged` writes them (group commit).
    staged: Vec<Entry>,
    table: ExceptionTable,
    /// Last known COW size; re-read when an allocation would not fit (COWs grow at run time).
    cow_bytes: u64,
    /// How many entries at the tail of the current area a failed `commit_merge` may have
    /// dropped on disk: its area write was issued, so until an area write succeeds the disk
    /// may hold the area with them or without them (or, torn, without a tail of them). Memory
    /// still maps them. See `settle_merge`.
    unsettled_merge: u64,
}

/// Why `commit_merge` failed; each says what the COW may now hold.
#[derive(Debug)]
pub enum MergeCommitError {
    /// The store is invalid; nothing was written.
    Invalid,
    /// Flushing the COW before the area write failed: the area was not written and the disk
    /// still lists the entries, but writes to the COW since its last flush may be lost.
    DataFlush(std::io::Error),
    /// Writing the area, or the flush after it, failed: the disk may list the entries or
    /// not, until an area write succeeds.
    Area(EngineError),
}

impl From<MergeCommitError> for EngineError {
    fn from(e: MergeCommitError) -> EngineError {
        match e {
            MergeCommitError::Invalid => EngineError::Invalid,
            MergeCommitError::DataFlush(e) => EngineError::io(DATA_FLUSH, e),
            MergeCommitError::Area(e) => e,
        }
    }
}

/// What a failed flush before an area write was doing.
const DATA_FLUSH: &str = "flushing exception data";

/// How far a durable area write got before it failed.
enum AreaWriteError {
    /// The flush before the area write: the area was not written.
    DataFlush(std::io::Error),
    /// The area write or the flush after it: the old or the new area may be on disk.
    Area(EngineError),
}

impl From<AreaWriteError> for EngineError {
    fn from(e: AreaWriteError) -> EngineError {
        match e {
            AreaWriteError::DataFlush(e) => EngineError::io(DATA_FLUSH, e),
            AreaWriteError::Area(e) => e,
        }
    }
}

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::io(context, e)
}

/// What reading the header found, before any formatting.
enum Opened {
    New,
    Existing(Header),
}

fn read_header(cow: &dyn BlockIo, requested_chunk_sectors: u32, cow_bytes: u64) -> Result<Opened> {
    if cow_bytes < SECTOR_BYTES {
        return Err(EngineError::CowTooSmall { cow_bytes, chunk_bytes: SECTOR_BYTES });
    }
    let mut sector = vec![0u8; SECTOR_BYTES as usize];
    cow.read_at(&mut sector, 0).map_err(io_err("reading the COW header"))?;
    let magic_is_zero = sector[0..4] == [0, 0, 0, 0];
    let rest_is_zero = if magic_is_zero && sector.iter().all(|&b| b == 0) {
        // "New" means the whole first chunk (of the size we would format with) is zero.
        let want = chunk_bytes(requested_chunk_sectors).min(cow_bytes);
        let mut rest = vec![0u8; (want - SECTOR_BYTES) as usize];
        cow.read_at(&mut rest, SECTOR_BYTES).map_err(io_err("reading the COW header chunk"))?;
        match rest.iter().position(|&b| b != 0) {
            None => true,
            Some(p) => return Err(EngineError::NotZeroed { offset: SECTOR_BYTES + p as u64 }),
        }
    } else {
        false
    };
    Ok(match format::parse_header(&sector, rest_is_zero)? {
        HeaderState::New => Opened::New,
        HeaderState::Existing(h) => Opened::Existing(h),
    })
}

/// The result of reading every metadata area.
struct Loaded {
    pairs: Vec<(u64, u64)>,
    next_free: u64,
    current_area: u64,
    current_committed: u64,
    area: Vec<u8>,
}

fn entry_offset(epa: u64, chunk_bytes: u64, index: usize) -> u64 {
    let index = index as u64;
    area_location(epa, index / epa) * chunk_bytes + (index % epa) * ENTRY_BYTES as u64
}

/// Reads all areas like the kernel's `read_exceptions`, reporting every corruption to `sink`
/// (which returns false to stop). Errors returned directly are fatal (I/O, area past end).
fn load_areas(
    cow: &dyn BlockIo,
    chunk_sectors: u32,
    cow_bytes: u64,
    sink: &mut dyn FnMut(EngineError) -> bool,
) -> Result<Option<Loaded>> {
    let cbytes = chunk_bytes(chunk_sectors);
    let epa = exceptions_per_area(chunk_sectors);
    let cow_chunks = cow_bytes / cbytes;
    let mut pairs = Vec::new();
    let mut next_free = FIRST_DATA_CHUNK;
    let mut area = vec![0u8; cbytes as usize];
    let mut area_index = 0u64;
    loop {
        let loc = area_location(epa, area_index);
        if loc >= cow_chunks {
            let e = EngineError::AreaPastEnd { offset: loc.saturating_mul(cbytes), cow_bytes };
            sink(e);
            return Ok(None);
        }
        cow.read_at(&mut area, loc * cbytes).map_err(io_err("reading a metadata area"))?;
        let mut used = epa;
        for i in 0..epa as usize {
            let e = read_entry(&area, i);
            if e.new == 0 {
                used = i as u64;
                break;
            }
            let offset = loc * cbytes + (i * ENTRY_BYTES) as u64;
            if let Err(err) = validate_entry(e, epa, cow_chunks, offset) {
                if !sink(err) {
                    return Ok(None);
                }
            }
            pairs.push((e.old, e.new));
            next_free = next_free.max(e.new.saturating_add(1));
        }
        if used < epa {
            return Ok(Some(Loaded {
                pairs,
                next_free: skip_metadata(epa, next_free),
                current_area: area_index,
                current_committed: used,
                area,
            }));
        }
        area_index += 1;
    }
}

/// Finds origin chunks mapped twice and COW chunks used twice; reports each to `sink`.
/// Returns the pairs sorted by origin chunk.
fn check_duplicates(
    pairs: &[(u64, u64)],
    epa: u64,
    cbytes: u64,
    sink: &mut dyn FnMut(EngineError) -> bool,
) -> Option<Vec<(u64, u64)>> {
    let offset_of = |pred: &dyn Fn(&(u64, u64)) -> bool| -> Vec<u64> {
        pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| pred(p))
            .map(|(i, _)| entry_offset(epa, cbytes, i))
            .collect()
    };
    let mut news: Vec<u64> = pairs.iter().map(|p| p.1).collect();
    news.sort_unstable();
    for w in news.windows(2) {
        if w[0] == w[1] {
            let offs = offset_of(&|p| p.1 == w[0]);
            let (first, later) =
                (offs.first().copied().unwrap_or(0), offs.get(1).copied().unwrap_or(0));
            let e =
                EngineError::SharedNewChunk { offset: later, new_chunk: w[0], first_offset: first };
            if !sink(e) {
                return None;
            }
        }
    }
    drop(news);
    let mut sorted = pairs.to_vec();
    sorted.sort_unstable();
    let mut ok = true;
    for w in sorted.windows(2) {
        if w[0].0 == w[1].0 {
            let offs = offset_of(&|p| p.0 == w[0].0);
            let (first, later) =
                (offs.first().copied().unwrap_or(0), offs.get(1).copied().unwrap_or(0));
            ok = false;
            let e = EngineError::DuplicateOldChunk {
                offset: later,
                old_chunk: w[0].0,
                first_offset: first,
            };
            if !sink(e) {
                return None;
            }
        }
    }
    if ok {
        Some(sorted)
    } else {
        None
    }
}

impl PersistentStore {
    /// Opens the store on `cow`, formatting it when its first chunk is all zero.
    /// `requested_chunk_sectors` is used for a new store (default 32); an existing store's
    /// on-disk chunk size wins. `origin_block_size` is the origin's logical block size.
    pub fn open(
        cow: Arc<dyn BlockIo>,
        requested_chunk_sectors: Option<u32>,
        origin_block_size: u32,
    ) -> Result<PersistentStore> {
        let requested = requested_chunk_sectors.unwrap_or(DEFAULT_CHUNK_SECTORS);
        let block_sizes = [cow.logical_block_size(), origin_block_size];
        format::validate_chunk_sectors(u64::from(requested), &block_sizes, 0)?;
        let cow_bytes = cow.size_bytes().map_err(io_err("reading the COW size"))?;
        match read_header(cow.as_ref(), requested, cow_bytes)? {
            Opened::New => PersistentStore::format(cow, requested, cow_bytes),
            Opened::Existing(h) => {
                format::validate_chunk_sectors(u64::from(h.chunk_sectors), &block_sizes, 12)?;
                PersistentStore::load(cow, h, cow_bytes)
            }
        }
    }

    /// Opens an existing store; an all-zero COW is `NotFormatted` and is left untouched.
    pub fn open_existing(cow: Arc<dyn BlockIo>) -> Result<PersistentStore> {
        let cow_bytes = cow.size_bytes().map_err(io_err("reading the COW size"))?;
        match read_header(cow.as_ref(), 1, cow_bytes)? {
            Opened::New => Err(EngineError::NotFormatted),
            Opened::Existing(h) => PersistentStore::load(cow, h, cow_bytes),
        }
    }

    /// Full validation without stopping at the first problem. I/O errors are returned as Err.
    pub fn check(cow: &dyn BlockIo) -> Result<Vec<Problem>> {
        let cow_bytes = cow.size_bytes().map_err(io_err("reading the COW size"))?;
        let header = match read_header(cow, 1, cow_bytes) {
            Ok(Opened::New) => return Ok(vec![Problem::from(&EngineError::NotFormatted)]),
            Ok(Opened::Existing(h)) => h,
            Err(e @ EngineError::Io { .. }) => return Err(e),
            Err(e) => return Ok(vec![Problem::from(&e)]),
        };
        let mut problems = Vec::new();
        let cbytes = chunk_bytes(header.chunk_sectors);
        if cow_bytes < 2 * cbytes {
            problems
                .push(Problem::from(&EngineError::CowTooSmall { cow_bytes, chunk_bytes: cbytes }));
            return Ok(problems);
        }
        if !header.valid {
            return Ok(problems);
        }
        let mut sink = |e: EngineError| {
            problems.push(Problem::from(&e));
            problems.len() < 1000
        };
        if let Some(loaded) = load_areas(cow, header.chunk_sectors, cow_bytes, &mut sink)? {
            let epa = exceptions_per_area(header.chunk_sectors);
            check_duplicates(&loaded.pairs, epa, cbytes, &mut sink);
        }
        Ok(problems)
    }

    fn format(
        cow: Arc<dyn BlockIo>,
        chunk_sectors: u32,
        cow_bytes: u64,
    ) -> Result<PersistentStore> {
        let cbytes = chunk_bytes(chunk_sectors);
        if cow_bytes < 2 * cbytes {
            return Err(EngineError::CowTooSmall { cow_bytes, chunk_bytes: cbytes });
        }
        // Zero area 0 durably before the header makes the store exist: a crash in between
        // leaves either a zero COW (new again) or a valid empty store.
        let zeros = vec![0u8; cbytes as usize];
        cow.write_at(&zeros, cbytes).map_err(io_err("zeroing metadata area 0"))?;
        cow.flush().map_err(io_err("flushing the COW"))?;
        let header = Header { valid: true, version: DISK_VERSION, chunk_sectors };
        cow.write_at(&format::pack_header(&header), 0).map_err(io_err("writing the COW header"))?;
        cow.flush().map_err(io_err("flushing the COW header"))?;
        Ok(PersistentStore::empty(cow, chunk_sectors, true, cow_bytes))
    }

    fn empty(
        cow: Arc<dyn BlockIo>,
        chunk_sectors: u32,
        valid: bool,
        cow_bytes: u64,
    ) -> PersistentStore {
        let cbytes = chunk_bytes(chunk_sectors);
        PersistentStore {
            cow,
            chunk_sectors,
            chunk_bytes: cbytes,
            epa: exceptions_per_area(chunk_sectors),
            valid,
            next_free: FIRST_DATA_CHUNK,
            current_area: 0,
            current_committed: 0,
            area: vec![0u8; cbytes as usize],
            pending: 0,
            staged: Vec::new(),
            table: ExceptionTable::default(),
            cow_bytes,
            unsettled_merge: 0,
        }
    }

    fn load(cow: Arc<dyn BlockIo>, header: Header, cow_bytes: u64) -> Result<PersistentStore> {
        let cbytes = chunk_bytes(header.chunk_sectors);
        if cow_bytes < 2 * cbytes {
            return Err(EngineError::CowTooSmall { cow_bytes, chunk_bytes: cbytes });
        }
        if !header.valid {
            // Like the kernel: an invalid store's exceptions are never read.
            return Ok(PersistentStore::empty(cow, header.chunk_sectors, false, cow_bytes));
        }
        let mut first: Option<EngineError> = None;
        let mut sink = |e: EngineError| {
            first = Some(e);
            false
        };
        let loaded = load_areas(cow.as_ref(), header.chunk_sectors, cow_bytes, &mut sink)?;
        let epa = exceptions_per_area(header.chunk_sectors);
        let sorted = match loaded.as_ref() {
            Some(l) => check_duplicates(&l.pairs, epa, cbytes, &mut sink),
            None => None,
        };
        if let Some(e) = first {
            return Err(e);
        }
        let (Some(loaded), Some(sorted)) = (loaded, sorted) else {
            return Err(EngineError::io(
                "loading the exception table",
                std::io::Error::other("table rejected without a reason"),
            ));
        };
        let mut store = PersistentStore::empty(cow, header.chunk_sectors, true, cow_bytes);
        store.table = ExceptionTable::from_sorted(&sorted);
        store.next_free = loaded.next_free;
        store.current_area = loaded.current_area;
        store.current_committed = loaded.current_committed;
        store.area = loaded.area;
        Ok(store)
    }

    pub fn cow(&self) -> &Arc<dyn BlockIo> {
        &self.cow
    }
    pub fn chunk_sectors(&self) -> u32 {
        self.chunk_sectors
    }
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }
    pub fn is_valid(&self) -> bool {
        self.valid
    }
    pub fn exception_count(&self) -> u64 {
        self.table.len()
    }
    pub fn lookup(&self, old_chunk: u64) -> Option<u64> {
        if !self.valid {
            return None;
        }
        self.table.get(old_chunk)
    }
    /// Every exception, in origin-chunk order.
    pub fn exceptions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.table.iter()
    }
    /// Heap bytes of the exception table.
    pub fn table_heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }
    /// Folds recent additions into the compact table (memory measurement, idle time).
    pub fn compact_table(&mut self) {
        self.table.compact();
    }

    /// Usage as the kernel's status line reports it; re-reads the COW size.
    pub fn usage(&self) -> Result<Usage> {
        let total = self.cow.size_bytes().map_err(io_err("reading the COW size"))?;
        let cs = u64::from(self.chunk_sectors);
        // Counted as if the staged exceptions were committed: the figure must not depend on
        // when a batch happens to be written.
        let area =
            self.current_area + (self.current_committed + self.staged.len() as u64) / self.epa;
        Ok(Usage {
            allocated_sectors: self.next_free * cs,
            total_sectors: total / SECTOR_BYTES,
            metadata_sectors: (area + 2) * cs,
        })
    }

    pub fn allocation_mark(&self) -> AllocationMark {
        AllocationMark { next_free: self.next_free, pending: self.pending }
    }

    /// Undoes every allocation since `mark` (none of them may have been committed).
    pub fn rollback_allocations(&mut self, mark: AllocationMark) {
        self.next_free = mark.next_free;
        self.pending = mark.pending;
    }

    /// Allocates a COW chunk for a new exception (kernel `prepare_exception`). The caller
    /// writes the chunk's data and then commits the exception.
    pub fn allocate(&mut self) -> Result<u64> {
        if !self.valid {
            return Err(EngineError::Invalid);
        }
        let need = (self.next_free + 1) * self.chunk_bytes;
        // This entry will fill the current area (with the ones allocated before it): the
        // next area must exist to be zeroed, or the commit would fail.
        let slot = self.current_committed + self.pending;
        let next_area = (slot + 1) / self.epa;
        let area_need = if next_area > 0 {
            (area_location(self.epa, self.current_area + next_area) + 1) * self.chunk_bytes
        } else {
            0
        };
        let need = need.max(area_need);
        if self.cow_bytes < need {
            self.cow_bytes = self.cow.size_bytes().map_err(io_err("reading the COW size"))?;
            if self.cow_bytes < need {
                return Err(EngineError::NoSpace);
            }
        }
        let chunk = self.next_free;
        self.next_free = skip_metadata(self.epa, self.next_free + 1);
        self.pending += 1;
        Ok(chunk)
    }

    fn area_offset(&self, area: u64) -> u64 {
        area_location(self.epa, area) * self.chunk_bytes
    }

    /// Writes the in-memory area with flush before and after (the kernel's PREFLUSH + FUA):
    /// the data it points at is durable before it, and it is durable when this returns. Then
    /// the disk holds the current area exactly as memory does: nothing is unsettled any more.
    fn write_area_durably(&mut self) -> std::result::Result<(), AreaWriteError> {
        self.cow.flush().map_err(AreaWriteError::DataFlush)?;
        let area =
            |context: &'static str| move |e| AreaWriteError::Area(EngineError::io(context, e));
        self.cow
            .write_at(&self.area, self.area_offset(self.current_area))
            .map_err(area("writing a metadata area"))?;
        self.cow.flush().map_err(area("flushing a metadata area"))?;
        self.unsettled_merge = 0;
        Ok(())
    }

    /// Records allocated exceptions whose data is written, without writing metadata: lookups
    /// see them at once, the next `commit_staged` (or `commit`) makes them durable. Until then
    /// a crash forgets them, so the origin chunks they cover must not change on disk before.
    pub fn stage(&mut self, entries: &[Entry]) -> Result<()> {
        if !self.valid {
            return Err(EngineError::Invalid);
        }
        for &e in entries {
            self.table.insert(e.old, e.new);
        }
        self.staged.extend_from_slice(entries);
        Ok(())
    }

    /// True when staged exceptions wait for `commit_staged`.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Commits allocated exceptions whose data is written (kernel `commit_exception`, batched:
    /// one durable area write per batch, plus one per area that fills), together with any
    /// staged ones (those first, in the order they were allocated).
    pub fn commit(&mut self, entries: &[Entry]) -> Result<()> {
        self.stage(entries)?;
        self.commit_staged()
    }

    /// Writes every staged exception into the metadata areas durably: one flush of their data,
    /// one area write and one flush (plus the same for every area that fills on the way).
    pub fn commit_staged(&mut self) -> Result<()> {
        if !self.valid {
            return Err(EngineError::Invalid);
        }
        let entries = std::mem::take(&mut self.staged);
        let mut dirty = false;
        for &e in &entries {
            write_entry(&mut self.area, self.current_committed as usize, e);
            self.current_committed += 1;
            dirty = true;
            if self.current_committed == self.epa {
                // Zero the next area before this full one points the table at it.
                let zeros = vec![0u8; self.chunk_bytes as usize];
                self.cow
                    .write_at(&zeros, self.area_offset(self.current_area + 1))
                    .map_err(io_err("zeroing the next metadata area"))?;
                self.write_area_durably().map_err(EngineError::from)?;
                self.current_area += 1;
                self.current_committed = 0;
                self.area.fill(0);
                dirty = false;
            }
        }
        if dirty {
            self.write_area_durably().map_err(EngineError::from)?;
        }
        self.pending = self.pending.saturating_sub(entries.len() as u64);
        Ok(())
    }

    /// Marks the store invalid on disk (header valid = 0), like the kernel's `drop_snapshot`.
    pub fn invalidate(&mut self) -> Result<()> {
        self.valid = false;
        let header =
            Header { valid: false, version: DISK_VERSION, chunk_sectors: self.chunk_sectors };
        self.cow
            .write_at(&format::pack_header(&header), 0)
            .map_err(io_err("writing the invalidated header"))?;
        self.cow.flush().map_err(io_err("flushing the invalidated header"))
    }

    /// Picks the next exceptions to merge: runs of consecutive chunks taken from the tail of
    /// the current area, newest first, `max_chunks` at most. Empty when nothing is left.
    pub fn prepare_merge(&mut self, max_chunks: u64) -> Result<Vec<MergeRun>> {
        if !self.valid {
            return Err(EngineError::Invalid);
        }
        // Merging works on the areas: staged exceptions join them first.
        self.commit_staged()?;
        if self.current_committed == 0 {
            if self.current_area == 0 {
                return Ok(Vec::new());
            }
            // Read first, move after: a failed read leaves the position as it was, so a
            // retry reads the same area again instead of merging nothing forever.
            let previous = self.current_area - 1;
            let mut area = vec![0u8; self.chunk_bytes as usize];
            self.cow
                .read_at(&mut area, self.area_offset(previous))
                .map_err(io_err("reading a metadata area to merge"))?;
            self.current_area = previous;
            self.area = area;
            self.current_committed = self.epa;
        }
        let mut runs = Vec::new();
        let mut idx = self.current_committed;
        let mut taken = 0;
        while idx > 0 && taken < max_chunks.max(1) {
            let last = read_entry(&self.area, (idx - 1) as usize);
            let mut n = 1;
            while n < idx && taken + n < max_chunks && last.old >= n && last.new >= n {
                let e = read_entry(&self.area, (idx - 1 - n) as usize);
                if e.old != last.old - n || e.new != last.new - n {
                    break;
                }
                n += 1;
            }
            runs.push(MergeRun { old: last.old - (n - 1), new: last.new - (n - 1), count: n });
            idx -= n;
            taken += n;
        }
        Ok(runs)
    }

    /// Drops the last `count` entries of the current area after their data reached the
    /// origin durably (kernel `commit_merge`). Memory changes only once the area without them
    /// is durable, as the kernel's `merge_callback` drops exceptions only after its
    /// `commit_merge` succeeded: while the disk lists an entry, a resumed merge copies its COW
    /// chunk over the origin, so the chunk's writes must keep going to the COW until then.
    pub fn commit_merge(&mut self, count: u64) -> std::result::Result<(), MergeCommitError> {
        if !self.valid {
            return Err(MergeCommitError::Invalid);
        }
        let count = count.min(self.current_committed);
        let keep = self.current_committed - count;
        let dropped: Vec<Entry> =
            (keep..self.current_committed).map(|i| read_entry(&self.area, i as usize)).collect();
        for i in keep..self.current_committed {
            write_entry(&mut self.area, i as usize, Entry { old: 0, new: 0 });
        }
        if let Err(e) = self.write_area_durably() {
            for (i, &entry) in dropped.iter().enumerate() {
                write_entry(&mut self.area, keep as usize + i, entry);
            }
            return Err(match e {
                AreaWriteError::DataFlush(e) => MergeCommitError::DataFlush(e),
                AreaWriteError::Area(e) => {
                    // The tail the disk may lack grows to this commit's; it never shrinks
                    // but by an area write that succeeds (this very area, whole).
                    self.unsettled_merge = self.unsettled_merge.max(count);
                    MergeCommitError::Area(e)
                }
            });
        }
        for entry in dropped {
            self.table.remove(entry.old);
        }
        self.current_committed = keep;
        self.next_free = area_location(self.epa, self.current_area) + self.current_committed + 1;
        Ok(())
    }

    /// True when a failed `commit_merge` left an origin chunk in `chunks` listed in memory but
    /// maybe not on disk.
    pub fn merge_unsettled_in(&self, chunks: std::ops::RangeInclusive<u64>) -> bool {
        let cc = self.current_committed;
        (cc - self.unsettled_merge.min(cc)..cc)
            .any(|i| chunks.contains(&read_entry(&self.area, i as usize).old))
    }

    /// Finishes the commit a failed `commit_merge` left unsettled: writes the area without
    /// those entries durably, then drops them. Their data is in the origin (the merge step
    /// flushed it there before committing) as well as in the COW, so either is right to read
    /// until now; but a write must go to the one place the disk will use after a restart, and
    /// only a successful area write says which.
    pub fn settle_merge(&mut self) -> Result<()> {
        if self.unsettled_merge == 0 {
            return Ok(());
        }
        self.commit_merge(self.unsettled_merge).map_err(EngineError::from)
    }
}

#[cfg(test)]
mod tests;
