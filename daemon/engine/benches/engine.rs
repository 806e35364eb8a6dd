//! Engine benchmark (not a test). Prints, each against a baseline measured in the same run on
//! the same /var/tmp files through `FileIo`:
//! - origin write throughput into fresh chunks with one snapshot ÷ without (1 MiB writes);
//!   as context, the same on devices whose flush takes `SNAPBACK_BENCH_FLUSH_MS` longer
//!   (default 8: a disk with a volatile write cache; 0 skips it);
//! - merge throughput ÷ a plain sequential copy of the same bytes with the same flushes, for
//!   sequential and for scattered single-chunk exceptions;
//! - as context, 4 KiB rewrites of a hot 1 MiB region through `FileIo` ÷ a plain `pwrite`;
//! - heap bytes per exception with 1,000,000 exceptions (counting allocator) and open time.
//!
//! `SNAPBACK_BENCH_DIR` overrides /var/tmp; `SNAPBACK_BENCH_MIB` the data size (default 128),
//! `SNAPBACK_BENCH_ROUNDS` how many rounds each ratio is the median of (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snapback_engine::format::{self, Entry, Header};
use snapback_engine::io::{BlockIo, FileIo};
use snapback_engine::origin::{Origin, SnapshotOptions};
use snapback_engine::store::PersistentStore;

/// Counts live heap bytes so the exception table's footprint can be measured.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// The only unsafe in the engine's tree: a global allocator must implement an unsafe trait.
// It forwards to the system allocator unchanged and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 16 << 10;

fn file(dir: &Path, name: &str, size: u64) -> Arc<FileIo> {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    Arc::new(FileIo::open(&path, true).unwrap())
}

/// Writes zeros over the whole device, durably: a pool-like, fully allocated COW (a sparse
/// file would make every fdatasync also commit block allocations).
fn preallocate(dev: &dyn BlockIo, size: u64) {
    let buf = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(MIB) as usize;
        dev.write_at(&buf[..n], at).unwrap();
        at += n as u64;
    }
    dev.flush().unwrap();
}

/// Fills a device with non-zero data, durably (so copies read real blocks).
fn fill(dev: &dyn BlockIo, size: u64, seed: u8) {
    let buf: Vec<u8> = (0..MIB as usize).map(|i| (i as u8).wrapping_add(seed) | 1).collect();
    let mut at = 0;
    while at < size {
        dev.write_at(&buf, at).unwrap();
        at += MIB;
    }
    dev.flush().unwrap();
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// One round: (baseline, baseline flushing every write, with one snapshot) durations.
fn origin_writes(dir: &Path, data: u64) -> (Duration, Duration, Duration) {
    let dev = file(dir, "origin.img", data);
    fill(dev.as_ref(), data, 3);
    let buf = vec![0x5au8; MIB as usize];
    // Baseline: the same 1 MiB writes, no snapshot, one flush at the end.
    let t = Instant::now();
    let o = Origin::new(dev.clone()).unwrap();
    for i in 0..data / MIB {
        o.write(i * MIB, &buf).unwrap();
    }
    o.flush().unwrap();
    let base = t.elapsed();
    // Context: the same writes when each one must be durable before the next (fdatasync).
    let t = Instant::now();
    for i in 0..data / MIB {
        o.write(i * MIB, &buf).unwrap();
        o.flush().unwrap();
    }
    let durable = t.elapsed();
    fill(dev.as_ref(), data, 4);
    let cow = file(dir, "cow-writes.img", data + data / 8);
    preallocate(cow.as_ref(), data + data / 8);
    let o = Origin::new(dev.clone()).unwrap();
    o.attach_snapshot(cow, SnapshotOptions::default()).unwrap();
    let t = Instant::now();
    for i in 0..data / MIB {
        o.write(i * MIB, &buf).unwrap();
    }
    o.flush().unwrap();
    let snap = t.elapsed();
    (base, durable, snap)
}

/// A device whose flush takes `delay` longer, like a disk that must empty its write cache
/// (the bench's /var/tmp may flush far faster than the disks snapback runs on).
#[derive(Debug)]
struct SlowFlush {
    dev: Arc<FileIo>,
    delay: Duration,
}

impl BlockIo for SlowFlush {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.dev.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.dev.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        std::thread::sleep(self.delay);
        self.dev.flush()
    }
    fn size_bytes(&self) -> std::io::Result<u64> {
        self.dev.size_bytes()
    }
}

/// Context: (baseline, one snapshot) durations of the same writes as `origin_writes` with
/// every flush of the origin and the COW `delay` slower.
fn origin_writes_slow_flush(dir: &Path, data: u64, delay: Duration) -> (Duration, Duration) {
    let slow =
        |dev: &Arc<FileIo>| -> Arc<dyn BlockIo> { Arc::new(SlowFlush { dev: dev.clone(), delay }) };
    let dev = file(dir, "origin.img", data);
    fill(dev.as_ref(), data, 3);
    let buf = vec![0x5au8; MIB as usize];
    let t = Instant::now();
    let o = Origin::new(slow(&dev)).unwrap();
    for i in 0..data / MIB {
        o.write(i * MIB, &buf).unwrap();
    }
    o.flush().unwrap();
    let base = t.elapsed();
    fill(dev.as_ref(), data, 4);
    let cow = file(dir, "cow-writes.img", data + data / 8);
    preallocate(cow.as_ref(), data + data / 8);
    let o = Origin::new(slow(&dev)).unwrap();
    o.attach_snapshot(slow(&cow), SnapshotOptions::default()).unwrap();
    let t = Instant::now();
    for i in 0..data / MIB {
        o.write(i * MIB, &buf).unwrap();
    }
    o.flush().unwrap();
    (base, t.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn origin_write_rounds(dir: &Path, data: u64, rounds: usize) {
    let runs: Vec<_> = (0..rounds).map(|_| origin_writes(dir, data)).collect();
    let ratio = median(runs.iter().map(|r| r.0.as_secs_f64() / r.2.as_secs_f64()).collect());
    let durable_ratio =
        median(runs.iter().map(|r| r.1.as_secs_f64() / r.2.as_secs_f64()).collect());
    let mbs = |f: fn(&(Duration, Duration, Duration)) -> Duration| {
        median(runs.iter().map(|r| mib_per_s(data, f(r))).collect())
    };
    println!(
        "origin writes, 1 MiB into fresh chunks (median of {rounds}): no snapshot {:.0} MiB/s, one snapshot {:.0} MiB/s, ratio {ratio:.2} (goal >= 0.40: {})",
        mbs(|r| r.0),
        mbs(|r| r.2),
        if ratio >= 0.4 { "met" } else { "NOT met" }
    );
    println!(
        "  context: no snapshot but a flush after every write {:.0} MiB/s; the snapshot path is {durable_ratio:.2} of that",
        mbs(|r| r.1)
    );
    let flush_ms: u64 =
        std::env::var("SNAPBACK_BENCH_FLUSH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    if flush_ms > 0 {
        let delay = Duration::from_millis(flush_ms);
        let slow: Vec<_> =
            (0..rounds).map(|_| origin_writes_slow_flush(dir, data, delay)).collect();
        let ratio = median(slow.iter().map(|r| r.0.as_secs_f64() / r.1.as_secs_f64()).collect());
        println!(
            "  context: every flush {flush_ms} ms slower (simulated disk cache): no snapshot {:.0} MiB/s, one snapshot {:.0} MiB/s, ratio {ratio:.2}",
            median(slow.iter().map(|r| mib_per_s(data, r.0)).collect()),
            median(slow.iter().map(|r| mib_per_s(data, r.1)).collect()),
        );
    }
}

/// Times a merge of `exceptions` (made by origin writes of the given chunk offsets) against a
/// sequential copy of the same bytes with the same number of origin and COW flushes.
fn merge_case(dir: &Path, name: &str, data: u64, chunks: &[u64]) -> f64 {
    let dev = file(dir, "merge-origin.img", data);
    fill(dev.as_ref(), data, 5);
    let cow_size = 2 * CHUNK + chunks.len() as u64 * CHUNK + data / 64 + CHUNK;
    let cow = file(dir, "merge-cow.img", cow_size);
    preallocate(cow.as_ref(), cow_size);
    let o = Origin::new(dev.clone()).unwrap();
    let id = o.attach_snapshot(cow.clone(), SnapshotOptions::default()).unwrap();
    let chunk_buf = vec![0x77u8; CHUNK as usize];
    for &c in chunks {
        o.write(c * CHUNK, &chunk_buf).unwrap();
    }
    o.flush().unwrap();
    // The (COW chunk -> origin chunk) copies the merge will do, for the baseline.
    let mut pairs: Vec<(u64, u64)> = PersistentStore::open_existing(cow.clone())
        .unwrap()
        .exceptions()
        .map(|(old, new)| (new, old))
        .collect();
    pairs.sort_unstable();
    let bytes = chunks.len() as u64 * CHUNK;
    let step = 8 * MIB;
    o.set_merge_step_bytes(step);
    o.start_merge(id).unwrap();
    let t = Instant::now();
    let mut steps = 0u64;
    while !o.merge_step().unwrap().finished {
        steps += 1;
    }
    let merge = t.elapsed();
    // Baseline: a plain copy of the same bytes (same COW chunks to the same origin chunks,
    // consecutive chunks copied as one I/O up to 8 MiB), and per 8 MiB the same flushes as a
    // merge step: flush the origin, then flush + write + flush one COW area.
    let area = vec![0u8; CHUNK as usize];
    let mut buf = vec![0u8; step as usize];
    let t = Instant::now();
    let mut i = 0;
    let mut since_flush = 0;
    while i < pairs.len() {
        let mut j = i + 1;
        while j < pairs.len()
            && pairs[j].0 == pairs[j - 1].0 + 1
            && pairs[j].1 == pairs[j - 1].1 + 1
            && ((j - i) as u64 * CHUNK) < step
        {
            j += 1;
        }
        let n = ((j - i) as u64 * CHUNK) as usize;
        cow.read_at(&mut buf[..n], pairs[i].0 * CHUNK).unwrap();
        dev.write_at(&buf[..n], pairs[i].1 * CHUNK).unwrap();
        since_flush += n as u64;
        i = j;
        if since_flush >= step || i == pairs.len() {
            dev.flush().unwrap();
            cow.flush().unwrap();
            cow.write_at(&area, CHUNK).unwrap();
            cow.flush().unwrap();
            since_flush = 0;
        }
    }
    let base = t.elapsed();
    let ratio = base.as_secs_f64() / merge.as_secs_f64();
    println!(
        "  merge, {name}: {} exceptions in {steps} steps, merge {:.0} MiB/s, plain copy of the same chunks {:.0} MiB/s, ratio {:.2}",
        chunks.len(),
        mib_per_s(bytes, merge),
        mib_per_s(bytes, base),
        ratio
    );
    ratio
}

fn merges(dir: &Path, data: u64, rounds: usize) {
    let n = data / CHUNK / 2;
    let sequential: Vec<u64> = (0..n).collect();
    let r = median((0..rounds).map(|_| merge_case(dir, "sequential", data, &sequential)).collect());
    println!(
        "merge, sequential exceptions: median ratio {r:.2} (goal >= 0.8: {})",
        if r >= 0.8 { "met" } else { "NOT met" }
    );
    // Every other chunk, in a shuffled order: runs of one chunk, scattered in the COW too.
    let mut scattered: Vec<u64> = (0..n).map(|i| i * 2).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..scattered.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        scattered.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let r = median(
        (0..rounds).map(|_| merge_case(dir, "scattered single chunks", data, &scattered)).collect(),
    );
    println!(
        "merge, scattered single chunks: median ratio {r:.2} (goal >= 0.5: {})",
        if r >= 0.5 { "met" } else { "NOT met" }
    );
}

/// Writes a store with `count` exceptions directly (areas built in memory), then opens it.
fn million(dir: &Path) {
    let count: u64 = 1_000_000;
    let cs = 32u32;
    let epa = format::exceptions_per_area(cs);
    let areas = count / epa + 1;
    let chunks = 1 + areas * (epa + 1) + 1;
    let cow = file(dir, "million.img", chunks * CHUNK);
    cow.write_at(&format::pack_header(&Header { valid: true, version: 1, chunk_sectors: cs }), 0)
        .unwrap();
    let mut area = vec![0u8; CHUNK as usize];
    let mut next = 2u64;
    for a in 0..areas {
        area.fill(0);
        for i in 0..epa {
            let k = a * epa + i;
            if k >= count {
                break;
            }
            next = format::skip_metadata(epa, next);
            // Origin chunks spread over a 4x larger origin, COW chunks in allocation order.
            format::write_entry(&mut area, i as usize, Entry { old: (k * 4) ^ (k & 3), new: next });
            next += 1;
        }
        cow.write_at(&area, format::area_location(epa, a) * CHUNK).unwrap();
    }
    cow.flush().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let store = PersistentStore::open_existing(cow).unwrap();
    let open = t.elapsed();
    let live = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(store.exception_count(), count);
    println!(
        "1,000,000 exceptions: open {:.0} ms (goal <= 1000), {:.1} heap bytes per exception (whole store; table alone {:.1}; goal <= 16)",
        open.as_secs_f64() * 1000.0,
        live as f64 / count as f64,
        store.table_heap_bytes() as f64 / count as f64
    );
}

/// Context: what `FileIo`'s write-behind costs a workload that rewrites the same
/// blocks (a journal, a database page): 4 KiB writes cycling over a hot 1 MiB region through
/// `FileIo`, against the same writes through a plain `pwrite`, each ended by one flush.
fn hot_rewrites(dir: &Path, rounds: usize) {
    use std::os::unix::fs::FileExt;
    const WRITES: u64 = 16384;
    let block = vec![0x6bu8; 4096];
    let run = |write: &dyn Fn(u64), flush: &dyn Fn()| {
        let t = Instant::now();
        for i in 0..WRITES {
            write((i % 256) * 4096);
        }
        flush();
        t.elapsed()
    };
    let mut ratios = Vec::new();
    let mut last = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let dev = file(dir, "hot-fileio.img", MIB);
        preallocate(dev.as_ref(), MIB);
        let engine = run(&|at| dev.write_at(&block, at).unwrap(), &|| dev.flush().unwrap());
        let path = dir.join("hot-plain.img");
        let plain_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        plain_file.set_len(MIB).unwrap();
        plain_file.write_all_at(&vec![0u8; MIB as usize], 0).unwrap();
        plain_file.sync_data().unwrap();
        let plain = run(&|at| plain_file.write_all_at(&block, at).unwrap(), &|| {
            plain_file.sync_data().unwrap()
        });
        ratios.push(plain.as_secs_f64() / engine.as_secs_f64());
        last = (engine, plain);
    }
    let mbs = |d: Duration| mib_per_s(WRITES * 4096, d);
    println!(
        "  context: 4 KiB rewrites of a hot 1 MiB region: FileIo {:.0} MiB/s, plain pwrite {:.0} MiB/s, ratio {:.2} (median of {rounds}; what the write-behind costs rewrites)",
        mbs(last.0),
        mbs(last.1),
        median(ratios)
    );
}

fn main() {
    let base: PathBuf = std::env::var_os("SNAPBACK_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp".into());
    let mib: u64 =
        std::env::var("SNAPBACK_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let rounds: usize =
        std::env::var("SNAPBACK_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = base.join(format!("snapback-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("snapback engine benchmark: {mib} MiB of data, files in {}", dir.display());
    let t = Instant::now();
    origin_write_rounds(&dir, mib * MIB, rounds);
    hot_rewrites(&dir, rounds);
    merges(&dir, mib * MIB, rounds);
    million(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    println!("total {:.1} s", t.elapsed().as_secs_f64());
}
