//! Group commit of origin writes: new origin data waits in the write-back buffer until the
//! exceptions protecting the old data are durable. What users read, what reaches the devices
//! and when, crashes at every I/O of a batch, the memory bound, and write errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use snapback_engine::io::{MemIo, PowerLoss};
use snapback_engine::offline;
use snapback_engine::origin::{Origin, SnapshotOptions, SnapshotState};
use snapback_engine::EngineError;

const CHUNK: usize = 4096; // 8-sector chunks

fn opts() -> SnapshotOptions {
    SnapshotOptions { chunk_sectors: Some(8), overflow: false }
}

fn filled(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// An origin of `chunks` chunks with one snapshot on a roomy COW.
fn setup(chunks: usize) -> (Arc<MemIo>, Origin, Arc<MemIo>, u64, Vec<u8>) {
    let initial = filled(chunks * CHUNK, 1);
    let dev = Arc::new(MemIo::from_bytes(initial.clone()));
    let origin = Origin::new(dev.clone()).unwrap();
    let cow = Arc::new(MemIo::new((2 * chunks as u64 + 8) * CHUNK as u64));
    let id = origin.attach_snapshot(cow.clone(), opts()).unwrap();
    (dev, origin, cow, id, initial)
}

fn read_origin(o: &Origin, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    o.read(0, &mut buf).unwrap();
    buf
}

fn read_snap(o: &Origin, id: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    o.snapshot_read(id, 0, &mut buf).unwrap();
    buf
}

#[test]
fn buffered_writes_are_read_back_at_once_and_reach_the_device_at_flush() {
    let (dev, o, cow, id, initial) = setup(16);
    let mut want = initial.clone();
    o.write(2 * CHUNK as u64, &vec![0xa1; 3 * CHUNK]).unwrap();
    want[2 * CHUNK..5 * CHUNK].fill(0xa1);
    // Part of a buffered range again, and across its end into a fresh chunk.
    o.write(4 * CHUNK as u64 + 100, &vec![0xb2; CHUNK]).unwrap();
    want[4 * CHUNK + 100..5 * CHUNK + 100].fill(0xb2);
    assert!(o.write_back_bytes() > 0);
    assert_eq!(read_origin(&o, want.len()), want, "the origin reads its writes at once");
    assert_eq!(read_snap(&o, id, initial.len()), initial, "the snapshot reads the copies");
    assert_eq!(dev.current_bytes(), initial, "nothing reached the origin device yet");
    assert_eq!(offline::inspect(cow.clone()).unwrap().exceptions, 0, "no exception on disk yet");

    o.flush().unwrap();
    assert_eq!(o.write_back_bytes(), 0);
    assert_eq!(
        dev.durable_bytes(),
        want,
        "after flush the origin device holds the writes, durably"
    );
    assert_eq!(offline::inspect(cow).unwrap().exceptions, 4, "and the COW the four exceptions");
    assert_eq!(read_snap(&o, id, initial.len()), initial);
}

#[test]
fn buffered_writes_during_a_merge_are_read_through_the_merge_view() {
    let (dev, o, _cow, id, initial) = setup(16);
    o.write(0, &vec![1u8; 4 * CHUNK]).unwrap(); // chunks 0-3: exceptions of the snapshot to merge
    o.flush().unwrap();
    let other = o.attach_snapshot(Arc::new(MemIo::new(64 * CHUNK as u64)), opts()).unwrap();
    let mut before_merge = initial.clone();
    before_merge[..4 * CHUNK].fill(1);
    o.start_merge(id).unwrap();
    o.set_merge_step_bytes(CHUNK as u64);
    o.merge_step().unwrap();
    // Chunk 9 is not held by the merging snapshot: it goes to the origin, copied into the
    // other snapshot first, and waits in the buffer.
    o.write(9 * CHUNK as u64, &vec![0xcc; CHUNK]).unwrap();
    assert!(o.write_back_bytes() > 0);
    let mut want = initial.clone();
    want[9 * CHUNK..10 * CHUNK].fill(0xcc);
    assert_eq!(read_origin(&o, want.len()), want, "the merged view shows the buffered write");
    assert_eq!(read_snap(&o, id, want.len()), want, "so does the merging snapshot");
    assert_eq!(read_snap(&o, other, want.len()), before_merge, "the other snapshot keeps its view");
    assert_eq!(&dev.current_bytes()[9 * CHUNK..10 * CHUNK], &initial[9 * CHUNK..10 * CHUNK]);
    // The next merge step drains the buffer before it writes the origin.
    o.merge_step().unwrap();
    assert_eq!(o.write_back_bytes(), 0);
    assert_eq!(&dev.current_bytes()[9 * CHUNK..10 * CHUNK], &want[9 * CHUNK..10 * CHUNK]);
    while !o.merge_step().unwrap().finished {}
    assert_eq!(dev.current_bytes(), want);
    assert_eq!(read_snap(&o, other, want.len()), before_merge);
}

#[test]
fn a_later_direct_write_is_not_overtaken_by_an_older_buffered_one() {
    let (dev, o, _cow, _id, _initial) = setup(16);
    o.write(3 * CHUNK as u64, &vec![1u8; CHUNK]).unwrap(); // buffered
                                                           // Chunk 3 has its exception now: this write needs no copy, but its bytes are buffered.
    o.write(3 * CHUNK as u64 + 512, &[2u8; 512]).unwrap();
    o.flush().unwrap();
    let mut want = vec![1u8; CHUNK];
    want[512..1024].fill(2);
    assert_eq!(&dev.durable_bytes()[3 * CHUNK..4 * CHUNK], &want[..]);
}

#[test]
fn suspend_detach_and_drop_drain_the_buffer() {
    let (dev, o, cow, id, _initial) = setup(16);
    o.write(0, &[7u8; 512]).unwrap();
    o.suspend();
    assert_eq!(o.write_back_bytes(), 0, "suspend returns with nothing buffered");
    assert_eq!(&dev.current_bytes()[..512], &[7u8; 512]);
    assert_eq!(offline::inspect(cow.clone()).unwrap().exceptions, 1, "committed first");
    o.resume();

    o.write(CHUNK as u64, &[8u8; 512]).unwrap();
    o.detach_snapshot(id).unwrap();
    assert_eq!(&dev.current_bytes()[CHUNK..CHUNK + 512], &[8u8; 512]);
    assert_eq!(
        offline::inspect(cow).unwrap().exceptions,
        2,
        "the detached COW holds its exception"
    );

    let cow2 = Arc::new(MemIo::new(64 * CHUNK as u64));
    o.attach_snapshot(cow2.clone(), opts()).unwrap();
    o.write(2 * CHUNK as u64, &[9u8; 512]).unwrap();
    drop(o);
    assert_eq!(
        &dev.current_bytes()[2 * CHUNK..2 * CHUNK + 512],
        &[9u8; 512],
        "drop writes the buffer"
    );
    assert_eq!(offline::inspect(cow2).unwrap().exceptions, 1, "after committing its exception");
}

#[test]
fn the_buffer_limit_bounds_memory() {
    let (dev, o, cow, id, initial) = setup(64);
    let limit = 4 * CHUNK as u64;
    o.set_write_back_limit(limit);
    let mut want = initial.clone();
    let (_, _, flushes_before) = cow.counters();
    for i in 0..30u64 {
        // Fresh chunks, 1.5 chunks per write, so batches end inside writes.
        let at = i * (CHUNK as u64 * 3 / 2);
        let data = vec![i as u8 + 1; CHUNK * 3 / 2];
        o.write(at, &data).unwrap();
        want[at as usize..at as usize + data.len()].copy_from_slice(&data);
        assert!(o.write_back_bytes() < limit, "write {i}: {} bytes buffered", o.write_back_bytes());
    }
    let (_, _, flushes) = cow.counters();
    let commits = (flushes - flushes_before) / 2;
    assert!((9..=15).contains(&commits), "about one commit per 4 of the 45 chunks: {commits}");
    assert_eq!(read_origin(&o, want.len()), want);
    assert_eq!(read_snap(&o, id, initial.len()), initial);
    o.flush().unwrap();
    assert_eq!(dev.durable_bytes(), want);

    // One write larger than the limit is committed and written at once.
    o.write(50 * CHUNK as u64, &vec![0xee; 4 * CHUNK]).unwrap();
    assert_eq!(o.write_back_bytes(), 0);
    assert_eq!(&dev.current_bytes()[50 * CHUNK..54 * CHUNK], &vec![0xee; 4 * CHUNK][..]);
    // Limit 0: every write commits before it returns, as dm-snapshot does.
    o.set_write_back_limit(0);
    let (_, _, f0) = cow.counters();
    o.write(59 * CHUNK as u64, &[0xdd; 512]).unwrap();
    assert_eq!(cow.counters().2 - f0, 2, "one commit");
    assert_eq!(&dev.current_bytes()[59 * CHUNK..59 * CHUNK + 512], &[0xdd; 512]);
}

#[test]
fn a_write_error_while_draining_is_reported_by_the_next_flush() {
    let (dev, o, _cow, id, initial) = setup(16);
    dev.fail_nth_write(1); // the buffered data's write to the origin
    o.write(5 * CHUNK as u64, &[0x55; 512]).unwrap();
    let err = o.flush().unwrap_err();
    assert!(matches!(err, EngineError::Io { .. }), "{err}");
    assert!(err.to_string().contains("buffered data"), "{err}");
    let mut want = initial.clone();
    want[5 * CHUNK..5 * CHUNK + 512].fill(0x55);
    assert_eq!(read_origin(&o, want.len()), want, "reads still see the write");
    assert_eq!(read_snap(&o, id, initial.len()), initial);
    assert_eq!(dev.current_bytes(), initial);
    // Reported once; the data stayed buffered and the next flush writes it.
    o.flush().unwrap();
    assert_eq!(dev.durable_bytes(), want);
}

#[test]
fn write_back_writes_the_buffer_without_flushing_and_leaves_errors_to_the_next_flush() {
    let (dev, o, cow, _id, initial) = setup(16);
    o.write(3 * CHUNK as u64, &[0x33; 512]).unwrap();
    let (_, _, origin_flushes) = dev.counters();
    o.write_back().unwrap();
    assert_eq!(o.write_back_bytes(), 0);
    assert_eq!(&dev.current_bytes()[3 * CHUNK..3 * CHUNK + 512], &[0x33; 512]);
    assert_eq!(dev.counters().2, origin_flushes, "the origin device is not flushed");
    assert_eq!(offline::inspect(cow).unwrap().exceptions, 1, "the exception was committed first");
    // A failed write is returned, and still reported by the next flush (once).
    dev.fail_nth_write(1);
    o.write(5 * CHUNK as u64, &[0x55; 512]).unwrap();
    assert!(o.write_back().is_err());
    assert!(o.flush().is_err(), "write_back did not consume the error");
    o.flush().unwrap();
    let mut want = initial.clone();
    want[3 * CHUNK..3 * CHUNK + 512].fill(0x33);
    want[5 * CHUNK..5 * CHUNK + 512].fill(0x55);
    assert_eq!(dev.durable_bytes(), want);
}

#[test]
fn an_origin_that_keeps_failing_writes_refuses_writes_and_merges_instead_of_growing() {
    let (dev, o, _cow, id, initial) = setup(16);
    o.set_write_back_limit(2 * CHUNK as u64);
    dev.fail_writes_in(0..initial.len() as u64); // the origin refuses every write
    o.write(0, &vec![1u8; 2 * CHUNK]).unwrap(); // accepted: reaching the limit drains, which fails
    assert_eq!(o.write_back_bytes(), 2 * CHUNK as u64);
    assert!(o.write(4 * CHUNK as u64, &[2u8; 512]).is_err(), "no room: refused");
    assert_eq!(o.write_back_bytes(), 2 * CHUNK as u64, "memory stays bounded");
    assert!(o.start_merge(id).is_err(), "a merge must not start under buffered data");
    assert!(o.flush().is_err());
    let mut want = initial.clone();
    want[..2 * CHUNK].fill(1);
    assert_eq!(read_origin(&o, want.len()), want, "accepted writes stay readable");
    dev.clear_faults();
    o.flush().unwrap();
    assert_eq!(dev.durable_bytes(), want);
    o.start_merge(id).unwrap();
    while !o.merge_step().unwrap().finished {}
    assert_eq!(dev.current_bytes(), initial);
}

/// A batch of origin writes with chunks of one sector (32 entries per metadata area), so
/// one commit fills an area: fresh chunks, a rewrite of buffered bytes, a direct write to a
/// chunk committed earlier, and a write across buffered and fresh chunks. Tags are < 0x80.
const BATCH: [(usize, usize, u8); 5] =
    [(10, 20, 2), (35, 15, 3), (20, 5, 4), (0, 2, 5), (28, 12, 6)];

const SECTOR: usize = 512;
const SECTORS: usize = 64;

/// Every sector of the origin before the snapshot: one byte value, >= 0x80.
fn initial_sectors() -> Vec<u8> {
    (0..SECTORS).map(|s| 0x80 | s as u8).collect()
}

fn to_bytes(sectors: &[u8]) -> Vec<u8> {
    sectors.iter().flat_map(|&v| [v; SECTOR]).collect()
}

/// The byte value of every sector; a sector must be one write whole.
fn sectors_of(bytes: &[u8], what: &str) -> Vec<u8> {
    bytes
        .chunks(SECTOR)
        .enumerate()
        .map(|(i, s)| {
            assert!(s.iter().all(|&b| b == s[0]), "{what}: sector {i} is torn inside");
            s[0]
        })
        .collect()
}

/// Runs a snapshot, a first flushed write, then `BATCH` and a flush, with the machine dying
/// after `budget` writes/flushes (on the origin and the COW together), then power loss and
/// reopen. Checks the snapshot equals the origin at snapshot time for every chunk and each
/// origin sector holds its value before the batch or one the batch wrote. Returns true when
/// the batch finished before the budget ran out.
fn crash_during_a_batch(budget: i64, limit: u64, mode: PowerLoss) -> bool {
    let initial = initial_sectors();
    let dev = Arc::new(MemIo::from_bytes(to_bytes(&initial)));
    let cow = Arc::new(MemIo::new(160 * SECTOR as u64));
    let crash = Arc::new(AtomicI64::new(i64::MAX));
    dev.share_crash_budget(crash.clone());
    cow.share_crash_budget(crash.clone());
    let one_sector = SnapshotOptions { chunk_sectors: Some(1), overflow: false };
    let o = Origin::new(dev.clone()).unwrap();
    o.set_write_back_limit(limit);
    o.attach_snapshot(cow.clone(), one_sector).unwrap();
    let mut before = initial.clone();
    o.write(0, &to_bytes(&[1; 4])).unwrap();
    before[..4].fill(1);
    o.flush().unwrap();

    crash.store(budget, Ordering::SeqCst);
    let mut after = before.clone();
    let mut allowed: Vec<Vec<u8>> = before.iter().map(|&v| vec![v]).collect();
    for (sector, len, tag) in BATCH {
        // Errors are expected once the machine died.
        let _ = o.write((sector * SECTOR) as u64, &to_bytes(&vec![tag; len]));
        for s in sector..sector + len {
            after[s] = tag;
            allowed[s].push(tag);
        }
    }
    let flushed = o.flush();
    let finished = crash.load(Ordering::SeqCst) >= 0;
    // The machine stops: while it is dead nothing more reaches the devices, so dropping the
    // origin now runs into failing I/O only (and a finished batch left nothing buffered).
    drop(o);
    crash.store(i64::MAX, Ordering::SeqCst);
    dev.power_loss(mode);
    cow.power_loss(mode);

    let o = Origin::new(dev.clone()).unwrap();
    let id = o.attach_snapshot(cow.clone(), one_sector).unwrap();
    let what = format!("budget {budget}, limit {limit}, {mode:?}");
    assert_ne!(o.snapshot_status(id).unwrap().state, SnapshotState::Invalid, "{what}");
    let snap = sectors_of(&read_snap(&o, id, SECTORS * SECTOR), &what);
    assert_eq!(snap, initial, "{what}: the snapshot must show the origin as it was when taken");
    let now = sectors_of(&read_origin(&o, SECTORS * SECTOR), &what);
    for (s, v) in now.iter().enumerate() {
        assert!(
            allowed[s].contains(v),
            "{what}: origin sector {s} holds {v:#x}, allowed {:x?}",
            allowed[s]
        );
    }
    if finished {
        flushed.unwrap();
        assert_eq!(now, after, "{what}: a finished flush keeps everything");
    }
    finished
}

#[test]
fn power_loss_at_every_io_of_a_batch_never_exposes_new_data_to_the_snapshot() {
    // Default limit: the batch is committed by the flush. Limit of 8 chunks: batches are
    // committed inside the writes too.
    for limit in [snapback_engine::origin::DEFAULT_WRITE_BACK_BYTES, 8 * SECTOR as u64] {
        let mut budget = 0;
        loop {
            let seed = budget as u64;
            let mode = match budget % 3 {
                0 => PowerLoss::DropAll,
                1 => PowerLoss::KeepSome(seed),
                _ => PowerLoss::Tear(seed),
            };
            if crash_during_a_batch(budget, limit, mode) {
                break;
            }
            budget += 1;
            assert!(budget < 1000, "the batch never finishes");
        }
        assert!(budget > 10, "the batch does I/O to crash in: {budget}");
    }
}

#[test]
fn a_failing_commit_costs_the_snapshot_and_the_buffered_data_is_still_written() {
    let (dev, o, cow, id, initial) = setup(16);
    o.write(CHUNK as u64, &[3u8; 512]).unwrap();
    cow.fail_nth_write(1); // the area write of the commit
    o.flush().unwrap();
    assert_eq!(o.snapshot_status(id).unwrap().state, SnapshotState::Invalid);
    assert_eq!(&dev.durable_bytes()[CHUNK..CHUNK + 512], &[3u8; 512]);
    assert_eq!(&dev.durable_bytes()[2 * CHUNK..], &initial[2 * CHUNK..]);
}

#[test]
fn without_a_snapshot_writes_go_straight_to_the_device() {
    let initial = filled(8 * CHUNK, 4);
    let dev = Arc::new(MemIo::from_bytes(initial));
    let o = Origin::new(dev.clone()).unwrap();
    o.write(CHUNK as u64, &[6u8; 512]).unwrap();
    assert_eq!(o.write_back_bytes(), 0);
    assert_eq!(&dev.current_bytes()[CHUNK..CHUNK + 512], &[6u8; 512]);
    let (_, w, _) = dev.counters();
    assert_eq!(w, 1);
}
