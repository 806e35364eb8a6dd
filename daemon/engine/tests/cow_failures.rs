//! A snapshot's COW failing never fails the origin: an invalid snapshot is not flushed at all,
//! and a valid one whose COW fails its flush is invalidated while the origin's flush succeeds
//! (dm-snapshot invalidates a snapshot whose COW fails and completes the origin's I/O). Only
//! the merging snapshot's COW, which holds origin data, can fail the origin's flush.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use snapback_engine::io::{MemIo, PowerLoss};
use snapback_engine::offline;
use snapback_engine::origin::{Origin, SnapshotOptions, SnapshotState};
use snapback_engine::EngineError;

const CHUNK: usize = 4096;

fn opts() -> SnapshotOptions {
    SnapshotOptions { chunk_sectors: Some(8), overflow: false }
}

fn filled(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A snapshot's COW and its id.
type Snap = (Arc<MemIo>, u64);

/// An origin of 16 chunks with two snapshots on roomy COWs.
fn two_snapshots() -> (Arc<MemIo>, Origin, [Snap; 2], Vec<u8>) {
    let initial = filled(16 * CHUNK, 1);
    let dev = Arc::new(MemIo::from_bytes(initial.clone()));
    let o = Origin::new(dev.clone()).unwrap();
    let snaps = [0, 1].map(|_| {
        let cow = Arc::new(MemIo::new(64 * CHUNK as u64));
        let id = o.attach_snapshot(cow.clone(), opts()).unwrap();
        (cow, id)
    });
    (dev, o, snaps, initial)
}

fn read_origin(o: &Origin) -> Vec<u8> {
    let mut buf = vec![0u8; o.size_bytes() as usize];
    o.read(0, &mut buf).unwrap();
    buf
}

fn read_snap(o: &Origin, id: u64) -> Vec<u8> {
    let mut buf = vec![0u8; o.size_bytes() as usize];
    o.snapshot_read(id, 0, &mut buf).unwrap();
    buf
}

#[test]
fn a_dead_invalid_snapshot_never_fails_origin_writes_or_flushes() {
    let (dev, o, [(dead, dead_id), (live, live_id)], initial) = two_snapshots();
    // The COW dies: every read, write and flush fails from the next write on, so even the
    // header that would say "invalid" cannot be written.
    dead.die_after(0);
    let mut want = initial.clone();
    o.write(3 * CHUNK as u64, &[0x33; 100]).unwrap();
    want[3 * CHUNK..3 * CHUNK + 100].fill(0x33);
    assert_eq!(o.snapshot_status(dead_id).unwrap().state, SnapshotState::Invalid);
    assert!(matches!(o.snapshot_read(dead_id, 0, &mut [0u8; 512]), Err(EngineError::Invalid)));
    o.flush().unwrap();
    // More writes, chunks new to the live snapshot and chunks it already copied, and flushes.
    for (i, chunk) in [3usize, 7, 8, 15].into_iter().enumerate() {
        let data = filled(CHUNK / 2, 0x40 + i as u8);
        o.write((chunk * CHUNK + 512) as u64, &data).unwrap();
        want[chunk * CHUNK + 512..chunk * CHUNK + 512 + data.len()].copy_from_slice(&data);
        o.flush().unwrap();
    }
    o.set_write_back_limit(0);
    o.write(0, &[0x50; 512]).unwrap();
    want[..512].fill(0x50);
    o.flush().unwrap();
    assert_eq!(read_origin(&o), want);
    assert_eq!(dev.durable_bytes(), want, "every write is durable on the origin device");
    // The live snapshot kept the origin as it was, durably.
    assert_eq!(o.snapshot_status(live_id).unwrap().state, SnapshotState::Active);
    assert_eq!(read_snap(&o, live_id), initial);
    assert_eq!(offline::inspect(live.clone()).unwrap().exceptions, 5);
    live.power_loss(PowerLoss::DropAll);
    dev.power_loss(PowerLoss::DropAll);
    let reopened = Origin::new(dev.clone()).unwrap();
    let id = reopened.attach_snapshot(live.clone(), opts()).unwrap();
    assert_eq!(read_snap(&reopened, id), initial);
}

#[test]
fn a_snapshot_whose_cow_flush_fails_goes_invalid_and_the_origin_flush_succeeds() {
    let (dev, o, [(failing, failing_id), (other, other_id)], initial) = two_snapshots();
    o.write(2 * CHUNK as u64, &[0x22; 64]).unwrap();
    o.flush().unwrap();
    // A write into the failing snapshot's own chunk waits in its COW for a flush, which fails:
    // that write may be lost, so the snapshot's content can no longer be vouched for.
    o.snapshot_write(failing_id, 2 * CHUNK as u64, &[0x99; 64]).unwrap();
    // The origin changes a chunk both snapshots copied already: no commit, only the flush.
    o.write(2 * CHUNK as u64 + 64, &[0x23; 64]).unwrap();
    failing.fail_nth_flush(1);
    o.flush().unwrap();
    assert_eq!(o.snapshot_status(failing_id).unwrap().state, SnapshotState::Invalid);
    assert_eq!(&failing.durable_bytes()[4..8], &[0, 0, 0, 0], "header valid = 0 on disk");
    assert!(!offline::inspect(failing.clone()).unwrap().valid);
    // The other snapshot and the origin are untouched by it.
    assert_eq!(o.snapshot_status(other_id).unwrap().state, SnapshotState::Active);
    assert_eq!(read_snap(&o, other_id), initial);
    let mut want = initial.clone();
    want[2 * CHUNK..2 * CHUNK + 64].fill(0x22);
    want[2 * CHUNK + 64..2 * CHUNK + 128].fill(0x23);
    assert_eq!(read_origin(&o), want);
    assert_eq!(dev.durable_bytes(), want);
    // Later flushes no longer touch the invalid COW.
    let (_, _, flushes) = failing.counters();
    o.write(9 * CHUNK as u64, &[0x90; 64]).unwrap();
    o.flush().unwrap();
    assert_eq!(failing.counters().2, flushes);
    assert_eq!(o.snapshot_status(other_id).unwrap().exceptions, 2);
    assert_eq!(read_snap(&o, other_id), initial);
    assert_eq!(offline::inspect(other.clone()).unwrap().exceptions, 2);
}

#[test]
fn the_merging_snapshots_cow_flush_failure_fails_the_origin_flush() {
    let (_dev, o, [(merging, merging_id), (_other, other_id)], initial) = two_snapshots();
    o.write(0, &vec![0x11; 4 * CHUNK]).unwrap();
    o.flush().unwrap();
    o.start_merge(merging_id).unwrap();
    // Chunk 1 is not merged yet: the write lands in the merging COW, which holds the origin's
    // data for it until the merge gets there.
    o.write(CHUNK as u64, &[0x77; 512]).unwrap();
    merging.fail_nth_flush(1);
    let e = o.flush().unwrap_err();
    assert!(e.to_string().starts_with("flushing the merging snapshot's COW"), "{e}");
    assert_eq!(
        o.snapshot_status(merging_id).unwrap().state,
        SnapshotState::Merging,
        "never invalidated"
    );
    o.flush().unwrap();
    let mut want = initial.clone();
    want[CHUNK..CHUNK + 512].fill(0x77);
    while !o.merge_step().unwrap().finished {}
    assert_eq!(read_origin(&o), want);
    assert_eq!(o.snapshot_status(other_id).unwrap().state, SnapshotState::Active);
}
