//! Model-based property test: random interleavings of origin writes, snapshot writes, reads,
//! snapshot create/delete, merge start/steps, flushes, power loss and crashes at a random
//! instant, checked against a plain model holding one tag per 512-byte sector of every view.
//! The origin's write-back limit varies too (0: every write commits; a few sectors: batches
//! commit inside writes; the default: at flushes and merges).
//!
//! What it asserts:
//! - a snapshot reads exactly the origin as it was when taken, plus its own writes;
//! - during and after a merge the origin (and the merging snapshot) read exactly the
//!   snapshot's content plus later writes;
//! - after power loss every sector reads its value at the last flush or a value written since
//!   (nothing flushed is lost, nothing appears from nowhere);
//! - a merge resumed after crashes ends with the origin holding the merged content;
//! - a snapshot only becomes invalid / overflowed when its COW is small or a crash happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use snapback_engine::io::{BlockIo, MemIo, PowerLoss};
use snapback_engine::origin::{
    Origin, SnapshotId, SnapshotOptions, SnapshotState, DEFAULT_WRITE_BACK_BYTES,
};
use snapback_engine::EngineError;

const SECTOR: usize = 512;
const ORIGIN_SECTORS: usize = 80;

#[derive(Debug, Clone)]
enum Op {
    OriginWrite {
        sector: usize,
        len: usize,
    },
    SnapWrite {
        which: usize,
        sector: usize,
        len: usize,
    },
    Read {
        which: usize,
        sector: usize,
        len: usize,
    },
    Create {
        chunk_sectors: u32,
        small: bool,
        overflow: bool,
    },
    Delete {
        which: usize,
    },
    StartMerge {
        which: usize,
    },
    MergeStep {
        step_chunks: u64,
    },
    Flush,
    WriteBackLimit {
        bytes: u64,
    },
    PowerLoss {
        mode: u8,
        seed: u64,
    },
    /// The machine stops after `budget` more writes/flushes during `inner`; then power loss.
    Crash {
        budget: i64,
        inner: Box<Op>,
        mode: u8,
        seed: u64,
    },
}

fn range() -> impl Strategy<Value = (usize, usize)> {
    (0..ORIGIN_SECTORS).prop_flat_map(|s| (Just(s), 1..=(ORIGIN_SECTORS - s).min(12)))
}

fn write_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        range().prop_map(|(sector, len)| Op::OriginWrite { sector, len }),
        (0..4usize, range()).prop_map(|(which, (sector, len))| Op::SnapWrite {
            which,
            sector,
            len
        }),
        (1..32u64).prop_map(|step_chunks| Op::MergeStep { step_chunks }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => range().prop_map(|(sector, len)| Op::OriginWrite { sector, len }),
        4 => (0..4usize, range()).prop_map(|(which, (sector, len))| Op::SnapWrite { which, sector, len }),
        2 => (0..5usize, range()).prop_map(|(which, (sector, len))| Op::Read { which, sector, len }),
        2 => (prop_oneof![Just(1u32), Just(2), Just(4)], any::<bool>(), any::<bool>())
            .prop_map(|(chunk_sectors, small, overflow)| Op::Create { chunk_sectors, small, overflow }),
        1 => (0..4usize).prop_map(|which| Op::Delete { which }),
        1 => (0..4usize).prop_map(|which| Op::StartMerge { which }),
        3 => (1..32u64).prop_map(|step_chunks| Op::MergeStep { step_chunks }),
        1 => Just(Op::Flush),
        1 => prop_oneof![Just(DEFAULT_WRITE_BACK_BYTES), (0..8u64).prop_map(|sectors| sectors * 512)]
            .prop_map(|bytes| Op::WriteBackLimit { bytes }),
        1 => (0..3u8, any::<u64>()).prop_map(|(mode, seed)| Op::PowerLoss { mode, seed }),
        2 => (0..40i64, write_op(), 0..3u8, any::<u64>())
            .prop_map(|(budget, inner, mode, seed)| Op::Crash { budget, inner: Box::new(inner), mode, seed }),
    ]
}

/// One view (origin or snapshot) as tags per sector.
#[derive(Debug, Clone)]
struct View {
    cur: Vec<u32>,
    durable: Vec<u32>,
    since_flush: Vec<Vec<u32>>,
}

impl View {
    fn new(cur: Vec<u32>) -> View {
        View { durable: cur.clone(), since_flush: vec![Vec::new(); cur.len()], cur }
    }
    fn write(&mut self, sector: usize, len: usize, tag: u32) {
        for s in sector..sector + len {
            self.cur[s] = tag;
            self.since_flush[s].push(tag);
        }
    }
    fn flush(&mut self) {
        self.durable = self.cur.clone();
        self.since_flush.iter_mut().for_each(Vec::clear);
    }
    /// After power loss: every sector must hold its flushed value or one written since.
    fn adopt_after_power_loss(&mut self, observed: Vec<u32>, what: &str) {
        for (s, &o) in observed.iter().enumerate() {
            assert!(
                o == self.durable[s] || self.since_flush[s].contains(&o),
                "{what}: sector {s} reads tag {o} after power loss; flushed {}, written since {:?}",
                self.durable[s],
                self.since_flush[s]
            );
        }
        *self = View::new(observed);
    }
}

struct Snap {
    id: SnapshotId,
    cow: Arc<MemIo>,
    opts: SnapshotOptions,
    small: bool,
    view: View,
    /// Invalid (or overflowed) for a reason the model accepts; content no longer checked.
    invalid: bool,
    overflowed: bool,
}

struct World {
    dev: Arc<MemIo>,
    origin: Origin,
    view: View,
    snaps: Vec<Snap>,
    /// Index into `snaps` of the merging snapshot.
    merging: Option<usize>,
    budget: Arc<AtomicI64>,
    next_tag: u32,
    write_back_limit: u64,
}

fn pattern(tag: u32, len: usize) -> Vec<u8> {
    tag.to_le_bytes().iter().copied().cycle().take(len * SECTOR).collect()
}

fn tags_of(bytes: &[u8], what: &str) -> Vec<u32> {
    bytes
        .chunks(SECTOR)
        .enumerate()
        .map(|(i, s)| {
            let tag = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            assert_eq!(
                s,
                &pattern(tag, 1)[..],
                "{what}: sector {i} is not one whole write (torn inside a sector?)"
            );
            tag
        })
        .collect()
}

impl World {
    fn new() -> World {
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let mut bytes = Vec::new();
        for s in 0..ORIGIN_SECTORS {
            bytes.extend(pattern(1_000_000 + s as u32, 1));
        }
        let dev = Arc::new(MemIo::from_bytes(bytes.clone()));
        dev.share_crash_budget(budget.clone());
        let origin = Origin::new(dev.clone()).unwrap();
        World {
            view: View::new(tags_of(&bytes, "init")),
            dev,
            origin,
            snaps: Vec::new(),
            merging: None,
            budget,
            next_tag: 1,
            write_back_limit: DEFAULT_WRITE_BACK_BYTES,
        }
    }

    fn tag(&mut self) -> u32 {
        self.next_tag += 1;
        self.next_tag
    }

    fn live(&self, which: usize) -> Option<usize> {
        if self.snaps.is_empty() {
            None
        } else {
            Some(which % self.snaps.len())
        }
    }

    /// Applies a write of `tag` to the merged/origin view or to snapshot `idx`'s view.
    fn model_write(&mut self, target: Option<usize>, sector: usize, len: usize, tag: u32) {
        match target {
            Some(i) if Some(i) != self.merging => self.snaps[i].view.write(sector, len, tag),
            _ => {
                self.view.write(sector, len, tag);
                if let Some(m) = self.merging {
                    self.snaps[m].view = self.view.clone();
                }
            }
        }
    }

    /// Runs one op. `crashing` tolerates errors (the machine is dying).
    fn run(&mut self, op: &Op, crashing: bool) {
        match op {
            Op::OriginWrite { sector, len } => {
                let tag = self.tag();
                let r = self.origin.write((sector * SECTOR) as u64, &pattern(tag, *len));
                assert!(r.is_ok() || crashing, "origin write failed: {r:?}");
                self.model_write(None, *sector, *len, tag);
            }
            Op::SnapWrite { which, sector, len } => {
                let Some(i) = self.live(*which) else { return };
                if self.snaps[i].invalid {
                    return;
                }
                let tag = self.tag();
                let r = self.origin.snapshot_write(
                    self.snaps[i].id,
                    (sector * SECTOR) as u64,
                    &pattern(tag, *len),
                );
                match r {
                    Ok(()) => self.model_write(Some(i), *sector, *len, tag),
                    Err(EngineError::Overflow)
                        if self.snaps[i].small && self.snaps[i].opts.overflow =>
                    {
                        self.snaps[i].overflowed = true;
                    }
                    Err(EngineError::NoSpace) if self.snaps[i].small => {
                        self.snaps[i].invalid = true
                    }
                    Err(_) if self.snaps[i].overflowed => {}
                    Err(e) => {
                        assert!(crashing, "snapshot write failed: {e}");
                        self.model_write(Some(i), *sector, *len, tag);
                    }
                }
            }
            Op::Read { which, sector, len } => {
                let mut buf = vec![0u8; len * SECTOR];
                let off = (sector * SECTOR) as u64;
                let (got, want) = match self.live(*which).filter(|_| which % 2 == 1) {
                    Some(i) if !self.snaps[i].invalid => {
                        self.origin.snapshot_read(self.snaps[i].id, off, &mut buf).unwrap();
                        (
                            tags_of(&buf, "snapshot read"),
                            self.snaps[i].view.cur[*sector..sector + len].to_vec(),
                        )
                    }
                    _ => {
                        self.origin.read(off, &mut buf).unwrap();
                        (
                            tags_of(&buf, "origin read"),
                            self.view.cur[*sector..sector + len].to_vec(),
                        )
                    }
                };
                assert_eq!(got, want, "partial read at sector {sector}");
            }
            Op::Create { chunk_sectors, small, overflow } => {
                if self.snaps.len() >= 3 {
                    return;
                }
                if self.merging.is_some()
                    && !self.origin.merge_progress().is_some_and(|p| p.finished)
                {
                    let cow = Arc::new(MemIo::new(64 << 10));
                    let r = self.origin.attach_snapshot(cow, SnapshotOptions::default());
                    assert!(matches!(r, Err(EngineError::AlreadyMerging)), "{r:?}");
                    return;
                }
                // Taking a snapshot flushes the origin first (the kernel's suspend does).
                self.origin.flush().unwrap();
                self.flush_model();
                let chunk_bytes = u64::from(*chunk_sectors) * 512;
                let origin_chunks = (ORIGIN_SECTORS * SECTOR) as u64 / chunk_bytes;
                let chunks = if *small { 6 + origin_chunks / 8 } else { origin_chunks + 8 };
                let cow = Arc::new(MemIo::new(chunks * chunk_bytes));
                cow.share_crash_budget(self.budget.clone());
                let opts =
                    SnapshotOptions { chunk_sectors: Some(*chunk_sectors), overflow: *overflow };
                let id = self.origin.attach_snapshot(cow.clone(), opts).unwrap();
                let view = View::new(self.view.cur.clone());
                self.snaps.push(Snap {
                    id,
                    cow,
                    opts,
                    small: *small,
                    view,
                    invalid: false,
                    overflowed: false,
                });
            }
            Op::Delete { which } => {
                let Some(i) = self.live(*which) else { return };
                if let Some(m) = self.merging {
                    let finished = self.origin.merge_progress().is_some_and(|p| p.finished);
                    if m == i && !finished {
                        return; // the model keeps a running merge attached
                    }
                }
                self.origin.detach_snapshot(self.snaps[i].id).unwrap();
                self.snaps.remove(i);
                self.merging = match self.merging {
                    Some(m) if m == i => None,
                    Some(m) if m > i => Some(m - 1),
                    other => other,
                };
            }
            Op::StartMerge { which } => {
                let Some(i) = self.live(*which) else { return };
                let r = self.origin.start_merge(self.snaps[i].id);
                match (&r, self.merging) {
                    (Err(EngineError::AlreadyMerging), Some(_)) => {}
                    (Err(EngineError::Invalid), _) if self.snaps[i].invalid => {}
                    (Ok(()), None) if !self.snaps[i].invalid => {
                        self.merging = Some(i);
                        // The origin now presents the snapshot's content.
                        self.view = self.snaps[i].view.clone();
                    }
                    _ => panic!("start_merge {r:?} with merging {:?}", self.merging),
                }
            }
            Op::MergeStep { step_chunks } => {
                if self.merging.is_none() {
                    assert!(matches!(self.origin.merge_step(), Err(EngineError::NotMerging)));
                    return;
                }
                self.origin.set_merge_step_bytes(step_chunks * 512);
                let r = self.origin.merge_step();
                assert!(r.is_ok() || crashing, "merge step failed: {r:?}");
            }
            Op::Flush => {
                self.origin.flush().unwrap();
                self.flush_model();
            }
            Op::WriteBackLimit { bytes } => {
                self.write_back_limit = *bytes;
                self.origin.set_write_back_limit(*bytes);
            }
            Op::PowerLoss { mode, seed } => self.power_loss(*mode, *seed),
            Op::Crash { budget, inner, mode, seed } => {
                self.budget.store(*budget, Ordering::SeqCst);
                self.run(inner, true);
                self.power_loss(*mode, *seed);
            }
        }
    }

    fn flush_model(&mut self) {
        self.view.flush();
        for s in &mut self.snaps {
            s.view.flush();
        }
    }

    /// Drops or tears unflushed writes everywhere, then reopens everything from disk.
    fn power_loss(&mut self, mode: u8, seed: u64) {
        let mode = match mode {
            0 => PowerLoss::DropAll,
            1 => PowerLoss::KeepSome(seed),
            _ => PowerLoss::Tear(seed),
        };
        self.budget.store(i64::MAX, Ordering::SeqCst);
        self.dev.power_loss(mode);
        for s in &self.snaps {
            s.cow.power_loss(mode);
        }
        // The machine died with the old origin: no destructor runs, so its write-back buffer
        // must not reach the devices now (dropping it would drain the buffer after the crash).
        std::mem::forget(std::mem::replace(
            &mut self.origin,
            Origin::new(self.dev.clone()).unwrap(),
        ));
        self.origin.set_write_back_limit(self.write_back_limit);
        for (i, s) in self.snaps.iter_mut().enumerate() {
            s.id = self.origin.attach_snapshot(s.cow.clone(), s.opts).unwrap();
            s.overflowed = false;
            let status = self.origin.snapshot_status(s.id).unwrap();
            if status.state == SnapshotState::Invalid {
                assert!(Some(i) != self.merging, "a merging snapshot never becomes invalid");
                s.invalid = true;
            } else if s.invalid && !s.small {
                // Invalidated in memory by the crash, but the header write never landed:
                // the store is whole and its content is checked again.
                s.invalid = false;
            } else if s.invalid {
                s.invalid = false;
            }
        }
        if let Some(m) = self.merging {
            self.origin.start_merge(self.snaps[m].id).unwrap();
        }
        let mut buf = vec![0u8; ORIGIN_SECTORS * SECTOR];
        self.origin.read(0, &mut buf).unwrap();
        self.view.adopt_after_power_loss(tags_of(&buf, "origin"), "origin");
        for i in 0..self.snaps.len() {
            if self.snaps[i].invalid {
                continue;
            }
            if Some(i) == self.merging {
                self.snaps[i].view = self.view.clone();
                continue;
            }
            self.origin.snapshot_read(self.snaps[i].id, 0, &mut buf).unwrap();
            let what = format!("snapshot {i}");
            self.snaps[i].view.adopt_after_power_loss(tags_of(&buf, &what), &what);
        }
    }

    /// Reads every view whole and compares with the model; updates allowed invalidity.
    fn verify(&mut self) {
        let mut buf = vec![0u8; ORIGIN_SECTORS * SECTOR];
        self.origin.read(0, &mut buf).unwrap();
        assert_eq!(tags_of(&buf, "origin"), self.view.cur, "origin view");
        for i in 0..self.snaps.len() {
            let id = self.snaps[i].id;
            let status = self.origin.snapshot_status(id).unwrap();
            match status.state {
                SnapshotState::Invalid => {
                    assert!(
                        self.snaps[i].small || self.snaps[i].invalid,
                        "snapshot {i} invalid with a big COW"
                    );
                    self.snaps[i].invalid = true;
                    continue;
                }
                SnapshotState::Overflow => {
                    assert!(self.snaps[i].small && self.snaps[i].opts.overflow)
                }
                SnapshotState::MergeFailed => panic!("merge failed without a fault"),
                _ => {}
            }
            if self.snaps[i].invalid {
                continue;
            }
            self.origin.snapshot_read(id, 0, &mut buf).unwrap();
            assert_eq!(tags_of(&buf, "snapshot"), self.snaps[i].view.cur, "snapshot {i} view");
        }
    }

    /// Ends any merge and checks it finished where the model says.
    fn finish(&mut self) {
        if let Some(m) = self.merging {
            self.origin.set_merge_step_bytes(64 << 10);
            for _ in 0..10_000 {
                if self.origin.merge_step().unwrap().finished {
                    break;
                }
            }
            let p = self.origin.merge_progress().unwrap();
            assert!(p.finished && p.chunks_left == 0);
            let st = self.origin.snapshot_status(self.snaps[m].id).unwrap();
            assert_eq!(st.exceptions, 0);
            let u = st.usage.unwrap();
            assert_eq!(u.allocated_sectors, u.metadata_sectors, "a merged store is empty");
            // Detached, the origin device alone holds the merged content.
            self.origin.detach_snapshot(self.snaps[m].id).unwrap();
            self.snaps.remove(m);
            self.merging = None;
        }
        self.verify();
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..48)) {
        let mut w = World::new();
        for op in &ops {
            w.run(op, false);
            w.verify();
        }
        w.finish();
    }
}

/// A fixed scenario that always exercises merge + power loss + other snapshots.
#[test]
fn merge_with_crashes_everywhere_matches_model() {
    for budget in 0..60 {
        let mut w = World::new();
        w.run(&Op::Create { chunk_sectors: 1, small: false, overflow: false }, false);
        for s in 0..20 {
            w.run(&Op::OriginWrite { sector: (s * 7) % 80, len: 3 }, false);
        }
        w.run(&Op::Create { chunk_sectors: 2, small: false, overflow: false }, false);
        w.run(&Op::SnapWrite { which: 0, sector: 10, len: 20 }, false);
        w.run(&Op::StartMerge { which: 0 }, false);
        w.run(&Op::MergeStep { step_chunks: 4 }, false);
        let inner = Box::new(Op::MergeStep { step_chunks: 16 });
        w.run(&Op::Crash { budget, inner, mode: (budget % 3) as u8, seed: budget as u64 }, false);
        w.verify();
        w.run(&Op::OriginWrite { sector: 5, len: 30 }, false);
        w.finish();
    }
}

#[test]
fn model_devices_are_block_io() {
    // Keeps the trait object path used by the model honest.
    let m: Arc<dyn BlockIo> = Arc::new(MemIo::new(4096));
    assert_eq!(m.size_bytes().unwrap(), 4096);
}
