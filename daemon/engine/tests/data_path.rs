//! Scenario tests of the origin / snapshot data path: copy-before-write, exact on-disk
//! results, full COWs, error injection, merge with other snapshots, suspend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use snapback_engine::format::{parse_area, Entry};
use snapback_engine::io::{BlockIo, MemIo, PowerLoss};
use snapback_engine::origin::{Origin, SnapshotOptions, SnapshotState};
use snapback_engine::EngineError;

const CHUNK: usize = 4096; // 8-sector chunks: 256 entries per area

fn opts() -> SnapshotOptions {
    SnapshotOptions { chunk_sectors: Some(8), overflow: false }
}

fn filled(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn setup(origin_chunks: usize, cow_chunks: u64) -> (Arc<MemIo>, Origin, Arc<MemIo>, u64, Vec<u8>) {
    let initial = filled(origin_chunks * CHUNK, 1);
    let dev = Arc::new(MemIo::from_bytes(initial.clone()));
    let origin = Origin::new(dev.clone()).unwrap();
    let cow = Arc::new(MemIo::new(cow_chunks * CHUNK as u64));
    let id = origin.attach_snapshot(cow.clone(), opts()).unwrap();
    (dev, origin, cow, id, initial)
}

fn read_snap(o: &Origin, id: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    o.snapshot_read(id, 0, &mut buf).unwrap();
    buf
}

#[test]
fn first_origin_write_copies_once_in_kernel_order() {
    let (dev, o, cow, id, initial) = setup(16, 64);
    let (_, w0, f0) = cow.counters();
    o.write(5 * CHUNK as u64 + 100, &[0xaa; 10]).unwrap();
    assert_eq!(cow.counters().1 - w0, 1, "the copy at once; its commit waits for a batch");
    o.flush().unwrap();
    let (_, w1, f1) = cow.counters();
    // The commit: flush (data), area, flush; then flush()'s own flush of every COW.
    assert_eq!((w1 - w0, f1 - f0), (2, 3), "data, then area between two flushes");
    // COW chunk 2 holds the old origin chunk 5, durably; area 0 holds {5, 2}.
    let disk = cow.durable_bytes();
    assert_eq!(&disk[2 * CHUNK..3 * CHUNK], &initial[5 * CHUNK..6 * CHUNK]);
    assert_eq!(parse_area(&disk[CHUNK..2 * CHUNK]).0, vec![Entry { old: 5, new: 2 }]);
    // A second write to the same chunk copies nothing.
    o.write(5 * CHUNK as u64, &[0xbb; 10]).unwrap();
    assert_eq!(cow.counters().1, w1);
    assert_eq!(read_snap(&o, id, initial.len()), initial);
    let mut now = vec![0u8; 10];
    dev.read_at(&mut now, 5 * CHUNK as u64 + 100).unwrap();
    assert_eq!(now, [0xaa; 10]);
    assert_eq!(o.snapshot_status(id).unwrap().usage.unwrap().to_string(), "24/512 16");
}

#[test]
fn origin_write_spanning_chunks_is_one_commit() {
    let (_dev, o, cow, id, initial) = setup(64, 128);
    let (_, w0, f0) = cow.counters();
    o.write(0, &vec![7u8; 40 * CHUNK]).unwrap();
    o.flush().unwrap();
    let (_, w1, f1) = cow.counters();
    assert_eq!(w1 - w0, 2, "one copy of the 40 consecutive chunks, one area write");
    assert_eq!(f1 - f0, 3, "one flush before and one after the single area write, then flush()'s");
    assert_eq!(o.snapshot_status(id).unwrap().exceptions, 40);
    assert_eq!(read_snap(&o, id, initial.len()), initial);
}

#[test]
fn snapshot_writes_keep_the_origin_and_partial_chunks_copy_the_rest() {
    let (dev, o, _cow, id, initial) = setup(8, 64);
    o.snapshot_write(id, 3 * CHUNK as u64 + 10, &[9u8; 20]).unwrap();
    let mut want = initial.clone();
    want[3 * CHUNK + 10..3 * CHUNK + 30].fill(9);
    assert_eq!(read_snap(&o, id, initial.len()), want);
    assert_eq!(dev.current_bytes(), initial, "origin untouched");
    // Last chunk of the origin, whole-chunk write.
    o.snapshot_write(id, 7 * CHUNK as u64, &vec![4u8; CHUNK]).unwrap();
    want[7 * CHUNK..].fill(4);
    assert_eq!(read_snap(&o, id, initial.len()), want);
}

#[test]
fn full_cow_invalidates_the_snapshot_never_the_origin_write() {
    let (dev, o, cow, id, _initial) = setup(16, 4); // room for 2 data chunks
    o.write(0, &vec![1u8; 2 * CHUNK]).unwrap();
    o.write(5 * CHUNK as u64, &[2u8; 100]).unwrap();
    assert_eq!(o.snapshot_status(id).unwrap().state, SnapshotState::Invalid);
    assert_eq!(&cow.durable_bytes()[4..8], &[0, 0, 0, 0], "header valid = 0 on disk");
    o.flush().unwrap();
    assert_eq!(&dev.current_bytes()[5 * CHUNK..5 * CHUNK + 100], &[2u8; 100]);
    assert!(matches!(o.snapshot_read(id, 0, &mut [0u8; 512]), Err(EngineError::Invalid)));
    assert!(o.snapshot_status(id).unwrap().usage.is_none());
}

#[test]
fn overflow_option_fails_only_snapshot_writes() {
    let (_dev, o, _cow, _, initial) = setup(16, 4);
    let cow = Arc::new(MemIo::new(4 * CHUNK as u64));
    let id =
        o.attach_snapshot(cow, SnapshotOptions { chunk_sectors: Some(8), overflow: true }).unwrap();
    o.snapshot_write(id, 0, &vec![1u8; 2 * CHUNK]).unwrap();
    assert!(matches!(
        o.snapshot_write(id, 9 * CHUNK as u64, &[1u8; 512]),
        Err(EngineError::Overflow)
    ));
    assert_eq!(o.snapshot_status(id).unwrap().state, SnapshotState::Overflow);
    let mut buf = vec![0u8; CHUNK];
    o.snapshot_read(id, 9 * CHUNK as u64, &mut buf).unwrap();
    assert_eq!(buf, &initial[9 * CHUNK..10 * CHUNK], "reads keep working");
    assert!(matches!(
        o.snapshot_write(id, 10 * CHUNK as u64, &[1u8; 512]),
        Err(EngineError::Overflow)
    ));
    // Chunks that already have an exception stay writable (as in the kernel).
    o.snapshot_write(id, 100, &[6u8; 10]).unwrap();
    o.snapshot_read(id, 0, &mut buf).unwrap();
    assert_eq!(&buf[100..110], &[6u8; 10]);
    // An origin write that needs a copy still invalidates it.
    o.write(12 * CHUNK as u64, &[3u8; 512]).unwrap();
    assert_eq!(o.snapshot_status(id).unwrap().state, SnapshotState::Invalid);
}

#[test]
fn copy_error_invalidates_only_that_snapshot() {
    let (dev, o, cow1, id1, initial) = setup(16, 64);
    let cow2 = Arc::new(MemIo::new(64 * CHUNK as u64));
    let id2 = o.attach_snapshot(cow2.clone(), opts()).unwrap();
    cow1.fail_nth_write(1); // the data copy into snapshot 1
    o.write(3 * CHUNK as u64, &[5u8; 64]).unwrap();
    assert_eq!(o.snapshot_status(id1).unwrap().state, SnapshotState::Invalid);
    assert_eq!(o.snapshot_status(id2).unwrap().state, SnapshotState::Active);
    assert_eq!(read_snap(&o, id2, initial.len()), initial);
    o.flush().unwrap();
    assert_eq!(&dev.current_bytes()[3 * CHUNK..3 * CHUNK + 64], &[5u8; 64]);
    // A failing commit flush is the same story (the commit runs at the flush).
    cow2.fail_nth_flush(1);
    o.write(9 * CHUNK as u64, &[6u8; 64]).unwrap();
    o.flush().unwrap();
    assert_eq!(o.snapshot_status(id2).unwrap().state, SnapshotState::Invalid);
    assert_eq!(
        &dev.current_bytes()[9 * CHUNK..9 * CHUNK + 64],
        &[6u8; 64],
        "the origin write still lands"
    );
}

#[test]
fn failing_origin_write_fails_cleanly_after_the_copy() {
    let (dev, o, _cow, id, initial) = setup(16, 64);
    dev.fail_nth_write(1);
    // The write is buffered; writing it to the origin fails at the flush, which says so.
    o.write(2 * CHUNK as u64, &[5u8; 64]).unwrap();
    assert!(o.flush().is_err());
    assert_eq!(read_snap(&o, id, initial.len()), initial, "the snapshot still shows the old data");
    assert_eq!(dev.current_bytes(), initial);
}

#[test]
fn merge_restores_the_snapshot_and_other_snapshots_keep_their_view() {
    let (dev, o, cow, id, initial) = setup(32, 64);
    // Sequential and scattered exceptions, plus a snapshot write.
    o.write(0, &vec![1u8; 8 * CHUNK]).unwrap();
    o.write(20 * CHUNK as u64, &[2u8; 10]).unwrap();
    o.write(13 * CHUNK as u64, &[3u8; 10]).unwrap();
    o.snapshot_write(id, 30 * CHUNK as u64, &[4u8; 100]).unwrap();
    let mut want = initial.clone();
    want[30 * CHUNK..30 * CHUNK + 100].fill(4);
    // Another snapshot taken now must keep the pre-merge origin.
    let mut before_merge = vec![0u8; want.len()];
    o.read(0, &mut before_merge).unwrap();
    let cow2 = Arc::new(MemIo::new(64 * CHUNK as u64));
    let other = o
        .attach_snapshot(cow2, SnapshotOptions { chunk_sectors: Some(16), overflow: false })
        .unwrap();
    o.start_merge(id).unwrap();
    assert!(matches!(o.start_merge(other), Err(EngineError::AlreadyMerging)));
    assert_eq!(o.snapshot_status(id).unwrap().state, SnapshotState::Merging);
    let mut seen = vec![0u8; want.len()];
    o.read(0, &mut seen).unwrap();
    assert_eq!(seen, want, "the origin reads the snapshot's content at once");
    o.set_merge_step_bytes(2 * CHUNK as u64);
    let mut steps = 0;
    let total = o.merge_progress().unwrap().chunks_total;
    assert_eq!(total, 11);
    loop {
        let p = o.merge_step().unwrap();
        steps += 1;
        o.read(0, &mut seen).unwrap();
        assert_eq!(seen, want, "during the merge");
        assert_eq!(read_snap(&o, other, want.len()), before_merge, "other snapshot");
        if p.finished {
            break;
        }
    }
    assert!(steps >= 5);
    assert_eq!(dev.current_bytes(), want, "the origin device itself holds the merged content");
    assert_eq!(dev.durable_bytes(), want, "and durably");
    let st = o.snapshot_status(id).unwrap();
    assert_eq!(st.exceptions, 0);
    assert_eq!(st.usage.unwrap().to_string(), "16/512 16");
    let reopened = snapback_engine::offline::inspect(cow).unwrap();
    assert_eq!(reopened.exceptions, 0);
}

#[test]
fn writes_during_merge_go_to_the_cow_or_the_origin() {
    let (dev, o, _cow, id, initial) = setup(16, 64);
    o.write(0, &vec![1u8; 4 * CHUNK]).unwrap();
    o.start_merge(id).unwrap();
    let mut want = initial.clone();
    // Chunk 1 still has an exception: the write lands in the COW and survives the merge.
    o.write(CHUNK as u64 + 5, &[8u8; 3]).unwrap();
    want[CHUNK + 5..CHUNK + 8].fill(8);
    // Chunk 10 has none: plain origin write.
    o.snapshot_write(id, 10 * CHUNK as u64, &[9u8; 3]).unwrap();
    want[10 * CHUNK..10 * CHUNK + 3].fill(9);
    while !o.merge_step().unwrap().finished {}
    assert_eq!(dev.current_bytes(), want);
}

#[test]
fn failed_merge_copy_resumes() {
    let (dev, o, _cow, id, initial) = setup(16, 64);
    o.write(0, &vec![1u8; 6 * CHUNK]).unwrap();
    o.start_merge(id).unwrap();
    o.set_merge_step_bytes(CHUNK as u64);
    dev.fail_nth_write(2);
    o.merge_step().unwrap();
    assert!(o.merge_step().is_err());
    assert_eq!(o.snapshot_status(id).unwrap().state, SnapshotState::MergeFailed);
    assert!(matches!(o.merge_step(), Err(EngineError::MergeFailed)));
    let mut seen = vec![0u8; initial.len()];
    o.read(0, &mut seen).unwrap();
    assert_eq!(seen, initial, "a failed merge still reads the snapshot's content");
    o.start_merge(id).unwrap();
    while !o.merge_step().unwrap().finished {}
    assert_eq!(dev.current_bytes(), initial);
}

#[test]
fn failed_read_of_the_previous_metadata_area_is_retried_not_skipped() {
    // 300 exceptions: area 0 full (256 entries), area 1 holds 44. The merge empties area 1,
    // then must read area 0 back; that read fails once.
    let (dev, o, cow, id, initial) = setup(300, 320);
    o.write(0, &vec![7u8; 300 * CHUNK]).unwrap();
    o.start_merge(id).unwrap();
    o.set_merge_step_bytes(44 * CHUNK as u64);
    let first = o.merge_step().unwrap();
    assert_eq!(first.chunks_left, 256, "area 1 merged in one step");
    cow.fail_nth_read(1);
    assert!(o.merge_step().is_err(), "the area read fails");
    o.start_merge(id).unwrap();
    o.set_merge_step_bytes(64 * CHUNK as u64);
    let mut steps = 0;
    loop {
        let progress = o.merge_step().unwrap();
        if progress.finished {
            break;
        }
        steps += 1;
        assert!(steps < 100, "the merge makes no progress: {progress:?}");
    }
    assert_eq!(dev.current_bytes(), initial, "every chunk of area 0 was merged too");
}

#[test]
fn merge_crashing_at_every_instant_resumes_to_the_same_end() {
    for crash_after in 0..40 {
        let (dev, o, cow, id, initial) = setup(16, 64);
        o.write(0, &vec![1u8; 3 * CHUNK]).unwrap();
        o.write(8 * CHUNK as u64, &vec![2u8; 5 * CHUNK]).unwrap();
        o.flush().unwrap();
        o.start_merge(id).unwrap();
        o.set_merge_step_bytes(2 * CHUNK as u64);
        dev.die_after(crash_after);
        cow.die_after(crash_after);
        while let Ok(p) = o.merge_step() {
            if p.finished {
                break;
            }
        }
        drop(o);
        dev.power_loss(PowerLoss::Tear(crash_after));
        cow.power_loss(PowerLoss::Tear(crash_after + 1));
        let o = Origin::new(dev.clone()).unwrap();
        let id = o.attach_snapshot(cow.clone(), opts()).unwrap();
        o.start_merge(id).unwrap();
        let mut seen = vec![0u8; initial.len()];
        o.read(0, &mut seen).unwrap();
        assert_eq!(seen, initial, "crash after {crash_after}: view after reopen");
        while !o.merge_step().unwrap().finished {}
        assert_eq!(dev.current_bytes(), initial, "crash after {crash_after}: merged result");
    }
}

#[test]
fn suspend_blocks_writes_until_resume() {
    let (dev, o, _cow, _id, _initial) = setup(16, 64);
    let o = Arc::new(o);
    o.suspend();
    let o2 = o.clone();
    let t = std::thread::spawn(move || o2.write(0, &[9u8; 512]).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 512];
    o.read(0, &mut buf).unwrap(); // reads are not blocked
    assert_ne!(buf, [9u8; 512], "write held while suspended");
    o.resume();
    t.join().unwrap();
    o.read(0, &mut buf).unwrap();
    assert_eq!(buf, [9u8; 512]);
    o.flush().unwrap();
    assert_eq!(&dev.current_bytes()[..512], &[9u8; 512]);
}

#[test]
fn concurrent_writers_and_readers_stay_consistent() {
    let (_dev, o, _cow, id, initial) = setup(64, 256);
    let o = Arc::new(o);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let o = o.clone();
            std::thread::spawn(move || {
                for i in 0..16u64 {
                    let chunk = (i * 4 + u64::from(t)) % 64;
                    o.write(chunk * CHUNK as u64, &vec![t + 1; CHUNK]).unwrap();
                    let mut b = vec![0u8; CHUNK];
                    o.read(chunk * CHUNK as u64, &mut b).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(read_snap(&o, id, initial.len()), initial);
}

#[test]
fn out_of_range_access_is_refused() {
    let (_dev, o, _cow, id, _) = setup(4, 64);
    assert!(matches!(
        o.write(4 * CHUNK as u64 - 1, &[0u8; 2]),
        Err(EngineError::OutOfRange { .. })
    ));
    assert!(matches!(
        o.snapshot_read(id, u64::MAX, &mut [0u8; 2]),
        Err(EngineError::OutOfRange { .. })
    ));
    assert!(matches!(o.snapshot_status(99), Err(EngineError::NoSuchSnapshot(99))));
}

#[test]
fn origin_with_a_partial_last_chunk_copies_and_merges_only_its_bytes() {
    let size = 10 * CHUNK + 1536; // the last chunk is 3 sectors long
    let initial = filled(size, 9);
    let dev = Arc::new(MemIo::from_bytes(initial.clone()));
    let o = Origin::new(dev.clone()).unwrap();
    let cow = Arc::new(MemIo::new(64 * CHUNK as u64));
    let id = o.attach_snapshot(cow, opts()).unwrap();
    o.write(10 * CHUNK as u64, &[1u8; 1536]).unwrap();
    o.snapshot_write(id, 10 * CHUNK as u64 + 512, &[2u8; 512]).unwrap();
    let mut want = initial.clone();
    want[10 * CHUNK + 512..10 * CHUNK + 1024].fill(2);
    assert_eq!(read_snap(&o, id, size), want);
    assert!(o.write(size as u64 - 512, &[0u8; 1024]).is_err(), "past the end");
    o.start_merge(id).unwrap();
    while !o.merge_step().unwrap().finished {}
    assert_eq!(dev.current_bytes(), want);
}

#[test]
fn exceptions_beyond_the_origin_end_merge_to_nothing() {
    use snapback_engine::store::PersistentStore;
    let initial = filled(8 * CHUNK, 3);
    let dev = Arc::new(MemIo::from_bytes(initial.clone()));
    let cow = Arc::new(MemIo::new(64 * CHUNK as u64));
    let mut store = PersistentStore::open(cow.clone(), Some(8), 512).unwrap();
    for old in [u64::MAX / 2, u64::MAX - 1, u64::MAX, 3] {
        let new = store.allocate().unwrap();
        cow.write_at(&vec![0xabu8; CHUNK], new * CHUNK as u64).unwrap();
        store.commit(&[Entry { old, new }]).unwrap();
    }
    let o = Origin::new(dev.clone()).unwrap();
    let other = o.attach_snapshot(Arc::new(MemIo::new(64 * CHUNK as u64)), opts()).unwrap();
    let id = o.attach_store(store, opts());
    o.start_merge(id).unwrap();
    while !o.merge_step().unwrap().finished {}
    let mut want = initial.clone();
    want[3 * CHUNK..4 * CHUNK].fill(0xab);
    assert_eq!(dev.current_bytes(), want);
    assert_eq!(read_snap(&o, other, initial.len()), initial);
}
