//! A merge step failing at each of its I/Os, on each device it touches: the origin, the
//! merging snapshot's COW and another snapshot's COW. After every failure, against a plain
//! model (the bytes the origin must read):
//!
//! - the origin, the merging snapshot and the other snapshot read what they read before;
//! - origin writes made after the failure and flushed are never lost: not when the merge is
//!   resumed without a restart, not when the machine loses power and the merge is resumed
//!   from what the devices hold durably, not when it dies again inside the resumed merge;
//! - a flush after a failed flush of the origin or of the merging COW reports it once;
//! - the resumed merge ends with the origin device holding the snapshot's content plus those
//!   writes, and the other snapshot still holding the origin as it was before the merge.
//!
//! The step runs once with nothing buffered and once right after an origin write that waits in
//! the write-back buffer, so its first act, writing that batch (the other snapshot's commit,
//! then the buffered data), is covered too.
//!
//! Failures are one-shot (the device works again at once) with three exceptions: writes that
//! fail but land anyway, flushes that fail and forget what they were to make durable (Linux's
//! page cache after a writeback error), and a merging COW whose metadata areas cannot be
//! written at all until the fault is cleared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use snapback_engine::io::{MemIo, PowerLoss};
use snapback_engine::origin::{Origin, SnapshotId, SnapshotOptions, SnapshotState};
use snapback_engine::EngineError;

const CHUNK: usize = 4096; // 8-sector chunks: 256 entries per area, area 0 at chunk 1
const CHUNKS: usize = 24;
const SIZE: usize = CHUNK * CHUNKS;

fn opts() -> SnapshotOptions {
    SnapshotOptions { chunk_sectors: Some(8), overflow: false }
}

fn filled(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    Origin,
    Merging,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Read(u64),
    Write {
        nth: u64,
        lands: bool,
    },
    Flush {
        nth: u64,
        forgets: bool,
    },
    /// Every write to the merging COW's first metadata area fails until the faults are cleared.
    AreaWrites {
        lands: bool,
    },
}

/// What happens after the failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Writes, flush, then the merge resumed in the same process.
    Resume,
    /// Writes, flush, power loss, reopen, resume.
    Reopen,
    /// Power loss at once (unflushed writes torn), reopen, resume.
    TornReopen(u64),
    /// Writes, flush, then the machine dies after `n` I/Os of the resumed merge; reopen, resume.
    DieInResumed(i64),
}

struct World {
    dev: Arc<MemIo>,
    merging_cow: Arc<MemIo>,
    other_cow: Arc<MemIo>,
    budget: Arc<AtomicI64>,
    o: Origin,
    sid: SnapshotId,
    oid: SnapshotId,
    /// What the origin (and the merging snapshot) must read.
    want: Vec<u8>,
    /// What `want` was at the last flush that succeeded: what must survive power loss.
    durable_want: Vec<u8>,
    /// The origin as the other snapshot holds it: as it was before the merge started.
    other_view: Vec<u8>,
    /// The other snapshot went invalid for a reason the test accepts.
    other_invalid: bool,
    /// Origin writes since the last flush that succeeded (offset, data): what an application
    /// writes again when a flush reports an error, and what power loss may keep or drop.
    unflushed: Vec<(usize, Vec<u8>)>,
}

/// Step sizes: the first step merges chunk 13 alone; the step under test takes the run of
/// origin chunks 18..=20 (COW chunks 11..=13) and chunk 15.
const FIRST_STEP: u64 = CHUNK as u64;
const TESTED_STEP: u64 = 4 * CHUNK as u64;
const TESTED_CHUNKS: [u64; 4] = [15, 18, 19, 20];

/// The world before the step under test. With `buffered`, an origin write to chunk 23 (which
/// the merging snapshot never copied) waits in the write-back buffer, with the other
/// snapshot's copy of it staged: the step starts by writing that batch.
fn world(buffered: bool) -> World {
    let initial = filled(SIZE, 1);
    let budget = Arc::new(AtomicI64::new(i64::MAX));
    let dev = Arc::new(MemIo::from_bytes(initial.clone()));
    let merging_cow = Arc::new(MemIo::new(64 * CHUNK as u64));
    let other_cow = Arc::new(MemIo::new(64 * CHUNK as u64));
    for d in [&dev, &merging_cow, &other_cow] {
        d.share_crash_budget(budget.clone());
    }
    let o = Origin::new(dev.clone()).unwrap();
    let sid = o.attach_snapshot(merging_cow.clone(), opts()).unwrap();
    // Exceptions from origin writes: a run of five, four single chunks, a run of three.
    for (i, (first, n)) in
        [(0, 5), (7, 1), (9, 1), (12, 1), (15, 1), (18, 3)].into_iter().enumerate()
    {
        o.write((first * CHUNK) as u64, &filled(n * CHUNK, 50 + i as u8)).unwrap();
    }
    // And one the snapshot wrote itself, the newest entry.
    let mut want = initial.clone();
    o.snapshot_write(sid, (13 * CHUNK + 512) as u64, &[0x5a; 1024]).unwrap();
    want[13 * CHUNK + 512..13 * CHUNK + 1536].fill(0x5a);
    o.flush().unwrap();
    let mut other_view = vec![0u8; SIZE];
    o.read(0, &mut other_view).unwrap();
    let oid = o.attach_snapshot(other_cow.clone(), opts()).unwrap();
    o.start_merge(sid).unwrap();
    o.set_merge_step_bytes(FIRST_STEP);
    assert_eq!(o.merge_step().unwrap().chunks_left, 12);
    o.set_merge_step_bytes(TESTED_STEP);
    let mut w = World {
        dev,
        merging_cow,
        other_cow,
        budget,
        o,
        sid,
        oid,
        durable_want: want.clone(),
        want,
        other_view,
        other_invalid: false,
        unflushed: Vec::new(),
    };
    if buffered {
        w.write(23 * CHUNK, filled(2048, 0x33)).unwrap();
        assert!(w.o.write_back_bytes() > 0, "the write waits for its batch");
    }
    w
}

impl World {
    fn device(&self, d: Dev) -> &MemIo {
        match d {
            Dev::Origin => &self.dev,
            Dev::Merging => &self.merging_cow,
            Dev::Other => &self.other_cow,
        }
    }

    fn counters(&self) -> [(u64, u64, u64); 3] {
        [self.dev.counters(), self.merging_cow.counters(), self.other_cow.counters()]
    }

    fn inject(&self, d: Dev, fault: Fault) {
        let m = self.device(d);
        match fault {
            Fault::Read(n) => m.fail_nth_read(n),
            Fault::Write { nth, lands } => {
                if lands {
                    m.failed_writes_land();
                }
                m.fail_nth_write(nth);
            }
            Fault::Flush { nth, forgets } => {
                if forgets {
                    m.failed_flushes_forget();
                }
                m.fail_nth_flush(nth);
            }
            Fault::AreaWrites { lands } => {
                if lands {
                    m.failed_writes_land();
                }
                m.fail_writes_in(CHUNK as u64..2 * CHUNK as u64);
            }
        }
    }

    /// Every view reads what the model says.
    fn verify(&mut self, what: &str) {
        let mut buf = vec![0u8; SIZE];
        self.o.read(0, &mut buf).unwrap();
        assert!(
            buf == self.want,
            "{what}: origin view differs at byte {:?}",
            first_difference(&buf, &self.want)
        );
        self.o.snapshot_read(self.sid, 0, &mut buf).unwrap();
        assert!(buf == self.want, "{what}: the merging snapshot reads like the origin");
        let state = self.o.snapshot_status(self.sid).unwrap().state;
        assert!(
            matches!(state, SnapshotState::Merging | SnapshotState::MergeFailed),
            "{what}: merging snapshot {state:?}"
        );
        match self.o.snapshot_status(self.oid).unwrap().state {
            SnapshotState::Invalid => {
                assert!(self.other_invalid, "{what}: the other snapshot went invalid")
            }
            state => {
                assert_eq!(state, SnapshotState::Active, "{what}");
                self.o.snapshot_read(self.oid, 0, &mut buf).unwrap();
                assert!(
                    buf == self.other_view,
                    "{what}: other snapshot differs at {:?}",
                    first_difference(&buf, &self.other_view)
                );
            }
        }
    }

    /// An origin write, in the model too when it succeeds.
    fn write(&mut self, at: usize, data: Vec<u8>) -> Result<(), EngineError> {
        self.o.write(at as u64, &data)?;
        self.want[at..at + data.len()].copy_from_slice(&data);
        self.unflushed.push((at, data));
        Ok(())
    }

    /// Writes a new pattern into part of every chunk the failed step touched, into chunks
    /// not merged yet (their data is in the COW), into one merged before, and into one that
    /// never had an exception. A write may fail only when `may_fail`; then it changed nothing.
    fn write_everywhere(&mut self, seed: u8, may_fail: bool) {
        for (i, chunk) in TESTED_CHUNKS.into_iter().chain([4, 12, 13, 22]).enumerate() {
            let at = chunk as usize * CHUNK + 1024;
            let data = filled(1536, seed.wrapping_add(i as u8));
            let len = data.len();
            if let Err(e) = self.write(at, data) {
                assert!(may_fail, "write to chunk {chunk} failed: {e}");
                let mut now = vec![0u8; len];
                self.o.read(at as u64, &mut now).unwrap();
                assert_eq!(
                    now,
                    self.want[at..at + len],
                    "a failed write to chunk {chunk} changed it"
                );
            }
        }
    }

    fn flush(&mut self) {
        self.o.flush().unwrap();
        self.durable_want = self.want.clone();
        self.unflushed.clear();
    }

    /// What an application does when a flush reports an error: what it wrote since its last
    /// good flush may be lost, so it writes all of it again and flushes.
    fn rewrite_and_flush(&mut self) {
        for (at, data) in &self.unflushed {
            self.o.write(*at as u64, data).unwrap();
        }
        self.flush();
    }

    /// Power loss on every device, then a new origin over what they hold, both snapshots
    /// attached again, the merge resumed.
    fn reopen(&mut self, mode: PowerLoss) {
        self.budget.store(i64::MAX, Ordering::SeqCst);
        for d in [&self.dev, &self.merging_cow, &self.other_cow] {
            d.power_loss(mode);
        }
        // The machine stopped: the old origin's destructor must not write anything now.
        let fresh = Origin::new(self.dev.clone()).unwrap();
        std::mem::forget(std::mem::replace(&mut self.o, fresh));
        self.sid = self.o.attach_snapshot(self.merging_cow.clone(), opts()).unwrap();
        self.oid = self.o.attach_snapshot(self.other_cow.clone(), opts()).unwrap();
        if self.o.snapshot_status(self.oid).unwrap().state == SnapshotState::Invalid {
            assert!(self.other_invalid, "the other snapshot is invalid after the restart");
        } else {
            // A snapshot invalid in memory whose header write failed opens valid; with
            // one-shot faults the header always lands, so that does not happen here.
            assert!(
                !self.other_invalid,
                "the other snapshot's invalidation did not reach its header"
            );
        }
        self.o.start_merge(self.sid).unwrap();
        // Each sector of a write not flushed holds its old or its new bytes; none other.
        let mut now = vec![0u8; SIZE];
        self.o.read(0, &mut now).unwrap();
        let latest = std::mem::replace(&mut self.want, self.durable_want.clone());
        for (at, data) in std::mem::take(&mut self.unflushed) {
            for s in (at..at + data.len()).step_by(512) {
                let sector = &now[s..s + 512];
                assert!(
                    sector == &self.durable_want[s..s + 512] || sector == &latest[s..s + 512],
                    "sector at byte {s}: neither the flushed nor the unflushed data"
                );
                self.want[s..s + 512].copy_from_slice(sector);
            }
        }
        self.durable_want = self.want.clone();
    }

    fn finish_merge(&mut self, what: &str) {
        if self.o.snapshot_status(self.sid).unwrap().state == SnapshotState::MergeFailed {
            self.o.start_merge(self.sid).unwrap();
        }
        let mut steps = 0;
        while !self.o.merge_step().unwrap().finished {
            steps += 1;
            assert!(steps < 100, "{what}: the merge makes no progress");
        }
        self.verify(&format!("{what}, merge finished"));
        self.o.flush().unwrap();
        assert!(
            self.dev.durable_bytes() == self.want,
            "{what}: the origin device does not hold the merged content at {:?}",
            first_difference(&self.dev.durable_bytes(), &self.want)
        );
        assert_eq!(self.o.snapshot_status(self.sid).unwrap().exceptions, 0);
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Every fault the step can meet: each read, write and flush it does on each device (counted
/// on a step that does not fail), and the persistent area failure on the merging COW.
fn every_fault(buffered: bool) -> Vec<(Dev, Fault)> {
    let w = world(buffered);
    let before = w.counters();
    w.o.merge_step().unwrap();
    let after = w.counters();
    let mut faults = Vec::new();
    for (i, d) in [Dev::Origin, Dev::Merging, Dev::Other].into_iter().enumerate() {
        let (r, wr, f) =
            (after[i].0 - before[i].0, after[i].1 - before[i].1, after[i].2 - before[i].2);
        faults.extend((1..=r).map(|n| (d, Fault::Read(n))));
        for variant in [false, true] {
            faults.extend((1..=wr).map(|nth| (d, Fault::Write { nth, lands: variant })));
            faults.extend((1..=f).map(|nth| (d, Fault::Flush { nth, forgets: variant })));
        }
    }
    faults.push((Dev::Merging, Fault::AreaWrites { lands: false }));
    faults.push((Dev::Merging, Fault::AreaWrites { lands: true }));
    // What a step of two runs with another snapshot attached does: reads the origin (copies
    // into the other snapshot) and both runs from the merging COW; writes both runs into the
    // other COW with an area after each, both runs into the origin, one merging area; flushes
    // the origin once, the merging COW around its area, the other COW around each of its.
    // Writing a batch first adds the other snapshot's commit (an area between two flushes)
    // and the buffered origin write.
    let count = |d: Dev, pick: fn(&Fault) -> bool| {
        faults.iter().filter(|(x, f)| *x == d && pick(f)).count()
    };
    let reads = |f: &Fault| matches!(f, Fault::Read(_));
    let writes = |f: &Fault| matches!(f, Fault::Write { lands: false, .. });
    let flushes = |f: &Fault| matches!(f, Fault::Flush { forgets: false, .. });
    let per_device: Vec<[usize; 3]> = [Dev::Origin, Dev::Merging, Dev::Other]
        .into_iter()
        .map(|d| [count(d, reads), count(d, writes), count(d, flushes)])
        .collect();
    let batch = usize::from(buffered);
    assert_eq!(per_device, vec![[2, 2 + batch, 1], [2, 1, 2], [0, 4 + batch, 4 + 2 * batch]]);
    faults
}

fn run_case(buffered: bool, dev: Dev, fault: Fault, after: After) {
    let what = format!(
        "{fault:?} on {dev:?}, then {after:?}{}",
        if buffered { ", batch buffered" } else { "" }
    );
    let mut w = world(buffered);
    w.inject(dev, fault);
    let stepped = w.o.merge_step();
    // What fails the step, and what only costs the other snapshot (a failed copy into it).
    let other_read = matches!((dev, fault), (Dev::Origin, Fault::Read(_)));
    match dev {
        Dev::Other => {
            assert!(stepped.is_ok(), "{what}: {stepped:?}");
            w.other_invalid = true;
        }
        Dev::Origin if other_read => {
            assert!(stepped.is_ok(), "{what}: {stepped:?}");
            w.other_invalid = true;
        }
        _ => {
            assert!(stepped.is_err(), "{what}: the step succeeded");
            assert_eq!(
                w.o.snapshot_status(w.sid).unwrap().state,
                SnapshotState::MergeFailed,
                "{what}"
            );
        }
    }
    w.verify(&format!("{what}: right after the step"));
    if let After::TornReopen(seed) = after {
        w.reopen(PowerLoss::Tear(seed));
        w.verify(&format!("{what}: reopened"));
        w.finish_merge(&what);
        return;
    }
    let persistent = matches!(fault, Fault::AreaWrites { .. });
    w.write_everywhere(0x90, persistent);
    w.verify(&format!("{what}: after the writes"));
    // A flush after a failed flush of the origin or of the merging COW's data reports it,
    // once; so does one after a failed write of buffered data, even though a retry wrote it.
    let reported = match (dev, fault) {
        (Dev::Origin, Fault::Flush { .. }) => Some("flushing the origin after a merge step"),
        (Dev::Merging, Fault::Flush { nth: 1, .. }) => {
            Some("flushing the merging COW before a merge commit")
        }
        (Dev::Origin, Fault::Write { nth: 1, .. }) if buffered => {
            Some("writing buffered data to the origin")
        }
        _ => None,
    };
    match reported {
        Some(context) => {
            let e = w.o.flush().expect_err(&what);
            assert!(e.to_string().starts_with(context), "{what}: {e}");
            w.rewrite_and_flush();
        }
        None => w.flush(),
    }
    if persistent {
        w.merging_cow.clear_faults();
        w.write_everywhere(0xa0, false);
        w.flush();
    }
    match after {
        After::Resume => {
            w.finish_merge(&what);
            w.reopen(PowerLoss::DropAll);
            w.verify(&format!("{what}: reopened after the merge"));
        }
        After::Reopen => {
            w.reopen(PowerLoss::DropAll);
            w.verify(&format!("{what}: reopened"));
        }
        After::DieInResumed(budget) => {
            if w.o.snapshot_status(w.sid).unwrap().state == SnapshotState::MergeFailed {
                w.o.start_merge(w.sid).unwrap();
            }
            w.budget.store(budget, Ordering::SeqCst);
            while let Ok(p) = w.o.merge_step() {
                if p.finished {
                    break;
                }
            }
            w.reopen(PowerLoss::Tear(budget as u64));
            w.verify(&format!("{what}: reopened after dying"));
        }
        After::TornReopen(_) => unreachable!(),
    }
    w.finish_merge(&what);
}

#[test]
fn every_failure_point_of_a_merge_step_then_resume() {
    for buffered in [false, true] {
        for (dev, fault) in every_fault(buffered) {
            run_case(buffered, dev, fault, After::Resume);
        }
    }
}

#[test]
fn every_failure_point_of_a_merge_step_then_power_loss() {
    for buffered in [false, true] {
        for (dev, fault) in every_fault(buffered) {
            run_case(buffered, dev, fault, After::Reopen);
            for seed in [7, 8] {
                run_case(buffered, dev, fault, After::TornReopen(seed));
            }
        }
    }
}

#[test]
fn every_failure_point_of_a_merge_step_then_death_in_the_resumed_merge() {
    for buffered in [false, true] {
        for (dev, fault) in every_fault(buffered) {
            for budget in 0..24 {
                run_case(buffered, dev, fault, After::DieInResumed(budget));
            }
        }
    }
}

/// The bug this file was written for, by itself: the merging COW's area write fails, so the
/// disk still lists the step's chunks; a write to one of them is flushed; after a power loss
/// the resumed merge must not copy the snapshot's old data over it.
#[test]
fn flushed_write_after_a_failed_merge_commit_survives_the_resumed_merge() {
    let mut w = world(false);
    w.merging_cow.fail_nth_write(1);
    assert!(w.o.merge_step().is_err());
    w.o.write(18 * CHUNK as u64, &[0xee; CHUNK]).unwrap();
    w.want[18 * CHUNK..19 * CHUNK].fill(0xee);
    w.flush();
    w.reopen(PowerLoss::DropAll);
    w.finish_merge("area write failed");
    assert!(w.dev.durable_bytes()[18 * CHUNK..19 * CHUNK] == [0xee; CHUNK], "the write survived");
}

/// The other way round: the area write lands though it reports an error, so the disk no
/// longer lists the chunks. A write to one of them must then reach the origin, not the COW.
#[test]
fn flushed_write_after_a_merge_commit_that_failed_but_landed_survives() {
    let mut w = world(false);
    w.merging_cow.failed_writes_land();
    w.merging_cow.fail_nth_write(1);
    assert!(w.o.merge_step().is_err());
    let (_, cow_writes, _) = w.merging_cow.counters();
    w.o.write(18 * CHUNK as u64, &[0xee; CHUNK]).unwrap();
    w.want[18 * CHUNK..19 * CHUNK].fill(0xee);
    assert_eq!(
        w.merging_cow.counters().1,
        cow_writes + 1,
        "the area was written again before the write"
    );
    w.flush();
    assert!(
        w.dev.durable_bytes()[18 * CHUNK..19 * CHUNK] == [0xee; CHUNK],
        "the write is in the origin"
    );
    w.reopen(PowerLoss::DropAll);
    w.finish_merge("area write landed");
    assert!(w.dev.durable_bytes()[18 * CHUNK..19 * CHUNK] == [0xee; CHUNK], "the write survived");
}

/// While the area cannot be written, writes to the step's chunks fail and change nothing;
/// writes elsewhere (other chunks in the COW, chunks without exception) go on.
#[test]
fn writes_to_unsettled_chunks_fail_while_the_area_cannot_be_written() {
    let mut w = world(false);
    w.merging_cow.fail_writes_in(CHUNK as u64..2 * CHUNK as u64);
    assert!(w.o.merge_step().is_err());
    let e = w.o.write(19 * CHUNK as u64, &[1; 512]).unwrap_err();
    assert!(e.to_string().starts_with("writing a metadata area"), "{e}");
    w.o.write(4 * CHUNK as u64, &[2; 512]).unwrap();
    w.want[4 * CHUNK..4 * CHUNK + 512].fill(2);
    w.o.write(22 * CHUNK as u64, &[3; 512]).unwrap();
    w.want[22 * CHUNK..22 * CHUNK + 512].fill(3);
    w.flush();
    w.verify("area unwritable");
    w.merging_cow.clear_faults();
    w.o.write(19 * CHUNK as u64, &[1; 512]).unwrap();
    w.want[19 * CHUNK..19 * CHUNK + 512].fill(1);
    w.flush();
    w.reopen(PowerLoss::DropAll);
    w.finish_merge("area unwritable, then healed");
}

/// A merge step's failed origin flush may have lost what users wrote before the step (with
/// Linux's page cache a later fsync succeeds without it): the next flush must say so.
#[test]
fn a_merge_step_failing_to_flush_the_origin_fails_the_next_flush() {
    let w = world(false);
    w.o.write(23 * CHUNK as u64, &[0x77; 512]).unwrap();
    w.dev.failed_flushes_forget();
    w.dev.fail_nth_flush(1);
    assert!(w.o.merge_step().is_err());
    let e = w.o.flush().unwrap_err();
    assert!(e.to_string().starts_with("flushing the origin after a merge step"), "{e}");
    w.o.flush().unwrap();
    w.dev.power_loss(PowerLoss::DropAll);
    assert!(
        w.dev.durable_bytes()[23 * CHUNK..23 * CHUNK + 512] != [0x77; 512],
        "lost, and the flush said so"
    );
}
