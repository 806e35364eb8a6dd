//! The lifecycle against a model of the data path: random sequences of Snapshot, writes,
//! Rollback, CancelRollback, Delete, merge steps, merge failures, invalidation, busy and idle
//! volumes, daemon restarts, reboots, and a configuration that loses and regains a volume.
//!
//! The model keeps what the devices would hold (each volume's backing data, each snapshot's
//! exceptions, which volumes are merging which set) and what the user must see: the latest
//! data written, or, from the moment a rollback engages a volume, the snapshot's data plus what
//! was written after. After every step each volume must read exactly that, every snapshot not
//! yet merging must read as it was taken, and a set whose merge has begun must never have been
//! dropped, made active or invalid. Any interleaving that mixes two states of a volume fails.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::backend::{sets, ErrorKind, SnapshotRequest};
use crate::pool::{CowRecord, VolumeRecord};

const VOLUMES: [&str; 3] = ["root", "var", "home"];
const CHUNKS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Merging(SnapshotId),
}

#[derive(Debug)]
struct Model {
    registry: Registry,
    configured: BTreeSet<&'static str>,
    busy: BTreeSet<&'static str>,
    /// The daemon refused to start (a half-merged set lost a volume from the configuration).
    down: bool,
    real: BTreeMap<&'static str, Vec<u32>>,
    mode: BTreeMap<&'static str, Mode>,
    /// Exceptions of each set's snapshot of each volume: chunk -> the data saved there.
    cows: BTreeMap<(SnapshotId, &'static str), BTreeMap<usize, u32>>,
    /// What each snapshot held when it was taken.
    taken: BTreeMap<(SnapshotId, &'static str), Vec<u32>>,
    /// What a reader of each volume must see.
    expected: BTreeMap<&'static str, Vec<u32>>,
    next_value: u32,
    log: Vec<String>,
    /// Sets that were ever merge-failed, and how many merges (of those) finished.
    ever_failed: BTreeSet<SnapshotId>,
    merges_finished: u64,
    failed_merges_finished: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

impl Model {
    fn new() -> Model {
        let mut registry = Registry::new(4096, 8192, 1024);
        for name in VOLUMES {
            registry.volumes.push(VolumeRecord {
                name: name.into(),
                backing: format!("/dev/{name}").into(),
                size_bytes: 1,
            });
        }
        Model {
            registry,
            configured: VOLUMES.into_iter().collect(),
            busy: BTreeSet::new(),
            down: false,
            real: VOLUMES.iter().map(|v| (*v, vec![0; CHUNKS])).collect(),
            mode: VOLUMES.iter().map(|v| (*v, Mode::Plain)).collect(),
            cows: BTreeMap::new(),
            taken: BTreeMap::new(),
            expected: VOLUMES.iter().map(|v| (*v, vec![0; CHUNKS])).collect(),
            next_value: 1,
            log: Vec::new(),
            ever_failed: BTreeSet::new(),
            merges_finished: 0,
            failed_merges_finished: 0,
        }
    }

    fn read(&self, volume: &'static str, chunk: usize) -> u32 {
        if let Mode::Merging(id) = self.mode[volume] {
            if let Some(&data) = self.cows.get(&(id, volume)).and_then(|cow| cow.get(&chunk)) {
                return data;
            }
        }
        self.real[volume][chunk]
    }

    fn snapshot_read(&self, id: SnapshotId, volume: &'static str, chunk: usize) -> u32 {
        self.cows[&(id, volume)].get(&chunk).copied().unwrap_or(self.real[volume][chunk])
    }

    /// Snapshots that still take copies before the volume's data changes.
    fn copying(&self, volume: &'static str) -> Vec<SnapshotId> {
        self.registry
            .snapshot_sets
            .iter()
            .filter(|set| {
                set.state != SetState::Invalid && set.volumes().iter().any(|v| v == volume)
            })
            .filter(|set| self.mode[volume] != Mode::Merging(set.id))
            .map(|set| set.id)
            .collect()
    }

    fn copy_before_change(&mut self, volume: &'static str, chunk: usize) {
        let old = self.real[volume][chunk];
        for id in self.copying(volume) {
            self.cows.entry((id, volume)).or_default().entry(chunk).or_insert(old);
        }
    }

    fn write(&mut self, volume: &'static str, chunk: usize) {
        let value = self.next_value;
        self.next_value += 1;
        match self.mode[volume] {
            Mode::Merging(id) if self.cows[&(id, volume)].contains_key(&chunk) => {
                if let Some(cow) = self.cows.get_mut(&(id, volume)) {
                    cow.insert(chunk, value);
                }
            }
            _ => {
                self.copy_before_change(volume, chunk);
                if let Some(data) = self.real.get_mut(volume) {
                    data[chunk] = value;
                }
            }
        }
        if let Some(data) = self.expected.get_mut(volume) {
            data[chunk] = value;
        }
    }

    fn set(&self, id: SnapshotId) -> SnapshotSetRecord {
        self.registry.set(id).cloned().expect("set exists")
    }

    /// What `apply` does, on the in-memory registry.
    fn run(&mut self, id: SnapshotId, input: Input) -> BackendResult<Effect> {
        let before = self.set(id);
        let transition = next(&self.registry, &before, &input)?;
        let live = self.registry.set_mut(id).expect("set exists");
        live.state = transition.state;
        live.merge_started = transition.merge_started;
        live.message = transition.message.clone();
        if transition.state == SetState::MergeFailed {
            self.ever_failed.insert(id);
        }
        self.log.push(format!(
            "set {id} {input:?}: {:?} -> {:?} {:?}",
            before.state, transition.state, transition.effect
        ));
        // A started merge is never undone by anything but its end.
        if before.merge_started {
            assert!(transition.merge_started, "set {id} forgot that its merge began");
            assert!(
                !matches!(
                    transition.state,
                    SetState::Active | SetState::Invalid | SetState::Overflow
                ),
                "set {id} with a begun merge became {:?}",
                transition.state
            );
        }
        Ok(transition.effect)
    }

    /// The device side of `Effect::Merge`: every volume of the set merges it from now on.
    fn engage(&mut self, id: SnapshotId) {
        self.engage_some(id, usize::MAX);
    }

    /// As `engage`, but starting the merge fails on the volume after the first `count` (as a
    /// kernel table load can), which the backend records as a failed merge.
    fn engage_some(&mut self, id: SnapshotId, count: usize) {
        for (index, volume) in self.set(id).volumes().into_iter().enumerate() {
            if index == count {
                self.run(
                    id,
                    Input::MergeFailed(format!("starting the merge into {volume} failed")),
                )
                .expect("a merge that could not start is recorded");
                return;
            }
            let volume = VOLUMES.into_iter().find(|v| *v == volume).expect("known volume");
            if self.mode[volume] != Mode::Merging(id) {
                assert_eq!(self.mode[volume], Mode::Plain, "two merges on volume {volume}");
                self.mode.insert(volume, Mode::Merging(id));
                let snapshot: Vec<u32> =
                    (0..CHUNKS).map(|c| self.snapshot_read(id, volume, c)).collect();
                self.expected.insert(volume, snapshot);
            }
        }
    }

    fn remove(&mut self, id: SnapshotId) {
        let set = self.set(id);
        for volume in set.volumes() {
            let volume = VOLUMES.into_iter().find(|v| *v == volume).expect("known volume");
            if self.mode[volume] == Mode::Merging(id) {
                assert!(
                    self.cows[&(id, volume)].is_empty(),
                    "set {id} removed with chunks left to merge into {volume}"
                );
                self.mode.insert(volume, Mode::Plain);
            }
            self.cows.remove(&(id, volume));
            self.taken.remove(&(id, volume));
        }
        self.registry.snapshot_sets.retain(|set| set.id != id);
        self.log.push(format!("set {id} removed"));
    }

    fn snapshot(&mut self, volumes: Vec<&'static str>) {
        let names: Vec<String> = volumes.iter().map(|v| v.to_string()).collect();
        if sets::refuse_if_rolling_back(&self.registry, &names).is_err() {
            return;
        }
        let id = self.registry.next_snapshot_id;
        self.registry.next_snapshot_id += 1;
        for volume in &volumes {
            assert_eq!(self.mode[volume], Mode::Plain, "snapshot of {volume} while it merges");
            self.cows.insert((id, volume), BTreeMap::new());
            self.taken.insert((id, volume), self.real[volume].clone());
        }
        let cows = names
            .into_iter()
            .map(|volume| CowRecord { volume, chunk_sectors: 8, extents: vec![] })
            .collect();
        self.registry.snapshot_sets.push(sets::new_record(id, &SnapshotRequest::default(), cows));
        self.log.push(format!("snapshot {id} of {volumes:?}"));
    }

    fn rollback(&mut self, id: SnapshotId) {
        self.rollback_failing_after(id, usize::MAX);
    }

    fn rollback_failing_after(&mut self, id: SnapshotId, count: usize) {
        let set = self.set(id);
        let missing = missing_volumes(&set, |v| self.configured.contains(v));
        let defer = set.volumes().iter().any(|v| {
            let v = VOLUMES.into_iter().find(|n| n == v).expect("known volume");
            self.busy.contains(v) && self.mode[v] != Mode::Merging(id)
        });
        if let Ok(Effect::Merge) = self.run(id, Input::Rollback { defer, missing }) {
            self.engage_some(id, count);
        }
    }

    fn merge_step(&mut self, id: SnapshotId, rng: &mut Rng) {
        let volumes: Vec<&'static str> =
            VOLUMES.into_iter().filter(|v| self.mode[v] == Mode::Merging(id)).collect();
        let Some(&volume) = volumes.get(rng.below(volumes.len().max(1))) else { return };
        let Some((&chunk, &data)) = self.cows[&(id, volume)].iter().next_back() else { return };
        // Other snapshots get their own copy before the origin chunk changes.
        self.copy_before_change(volume, chunk);
        if let Some(d) = self.real.get_mut(volume) {
            d[chunk] = data;
        }
        if let Some(cow) = self.cows.get_mut(&(id, volume)) {
            cow.remove(&chunk);
        }
        self.log.push(format!("merged chunk {chunk} of set {id} into {volume}"));
        let set = self.set(id);
        let done = set.volumes().iter().all(|v| {
            self.cows[&(id, VOLUMES.into_iter().find(|n| n == v).expect("known"))].is_empty()
        });
        if done {
            if let Ok(Effect::Remove) = self.run(id, Input::MergeFinished) {
                self.remove(id);
                self.merges_finished += 1;
                self.failed_merges_finished += u64::from(self.ever_failed.contains(&id));
            }
        }
    }

    /// A daemon start (or, with `reboot`, boot activation: nothing is mounted yet).
    fn start(&mut self, reboot: bool) {
        if reboot {
            self.busy.clear();
        }
        if check_start(&self.registry, |v| self.configured.contains(v)).is_err() {
            self.down = true;
            self.log.push("start refused".into());
            return;
        }
        self.down = false;
        for id in self.registry.pending_rollbacks() {
            let set = self.set(id);
            let missing = missing_volumes(&set, |v| self.configured.contains(v));
            let defer = set.volumes().iter().any(|v| {
                let v = VOLUMES.into_iter().find(|n| n == v).expect("known volume");
                self.busy.contains(v) && self.mode[v] != Mode::Merging(id)
            });
            match self.run(id, Input::Start { defer, missing }) {
                Ok(Effect::Merge) => self.engage(id),
                Ok(_) => {}
                Err(err) => panic!("a start that check_start allowed refused set {id}: {err}"),
            }
        }
    }

    fn check(&self) {
        for volume in VOLUMES {
            if !self.configured.contains(volume) {
                continue;
            }
            let seen: Vec<u32> = (0..CHUNKS).map(|c| self.read(volume, c)).collect();
            assert_eq!(seen, self.expected[volume], "volume {volume} reads a mix of states");
        }
        for set in &self.registry.snapshot_sets {
            if set.state == SetState::Invalid {
                continue;
            }
            for volume in set.volumes() {
                let volume = VOLUMES.into_iter().find(|v| *v == volume).expect("known volume");
                if self.mode[volume] == Mode::Merging(set.id) {
                    continue;
                }
                let seen: Vec<u32> =
                    (0..CHUNKS).map(|c| self.snapshot_read(set.id, volume, c)).collect();
                assert_eq!(
                    seen,
                    self.taken[&(set.id, volume)],
                    "snapshot {} of {volume} changed",
                    set.id
                );
            }
        }
    }
}

fn random_step(model: &mut Model, rng: &mut Rng) {
    let ids: Vec<SnapshotId> = model.registry.snapshot_sets.iter().map(|s| s.id).collect();
    let some_set = |rng: &mut Rng| ids.get(rng.below(ids.len().max(1))).copied();
    if model.down {
        // Nothing runs until the configuration is whole again.
        model.configured = VOLUMES.into_iter().collect();
        model.log.push("configuration restored".into());
        model.start(rng.chance(50));
        return;
    }
    match rng.below(15) {
        0 | 1 => {
            let volumes: Vec<&'static str> = VOLUMES
                .into_iter()
                .filter(|v| model.configured.contains(v) && rng.chance(60))
                .collect();
            if !volumes.is_empty() {
                model.snapshot(volumes);
            }
        }
        2 | 3 => {
            let configured: Vec<&'static str> = model.configured.iter().copied().collect();
            if let Some(&volume) = configured.get(rng.below(configured.len().max(1))) {
                let chunk = rng.below(CHUNKS);
                model.write(volume, chunk);
            }
        }
        4 | 5 => {
            if let Some(id) = some_set(rng) {
                let fail_after = if rng.chance(20) { rng.below(VOLUMES.len()) } else { usize::MAX };
                model.rollback_failing_after(id, fail_after);
            }
        }
        6 => {
            if let Some(id) = some_set(rng) {
                let _ = model.run(id, Input::CancelRollback);
            }
        }
        7 => {
            if let Some(id) = some_set(rng) {
                if let Ok(Effect::Remove) = model.run(id, Input::Delete) {
                    model.remove(id);
                }
            }
        }
        8 | 9 => {
            let merging: Vec<SnapshotId> = model
                .registry
                .snapshot_sets
                .iter()
                .filter(|s| s.state == SetState::Merging)
                .map(|s| s.id)
                .collect();
            if let Some(&id) = merging.get(rng.below(merging.len().max(1))) {
                model.merge_step(id, rng);
            }
        }
        10 => {
            if let Some(id) = some_set(rng) {
                if model.set(id).state == SetState::Merging {
                    let _ = model.run(id, Input::MergeFailed("I/O error".into()));
                }
            }
        }
        11 => {
            if let Some(id) = some_set(rng) {
                let was = model.set(id).state;
                if model.run(id, Input::Invalidated("COW full".into())).is_ok()
                    && model.set(id).state == SetState::Invalid
                {
                    assert_ne!(was, SetState::Merging);
                }
            }
        }
        12 => {
            let volume = VOLUMES[rng.below(VOLUMES.len())];
            if !model.busy.remove(volume) {
                model.busy.insert(volume);
            }
        }
        13 => {
            // The configuration loses a volume, or regains every volume; then a restart.
            if rng.chance(50) {
                let volume = VOLUMES[rng.below(VOLUMES.len())];
                model.configured.remove(volume);
                model.log.push(format!("configuration lost {volume}"));
            } else {
                model.configured = VOLUMES.into_iter().collect();
            }
            model.start(rng.chance(30));
        }
        _ => {
            let reboot = rng.chance(50);
            model.log.push(format!("restart (reboot: {reboot})"));
            model.start(reboot);
        }
    }
}

#[test]
fn random_call_sequences_keep_every_volume_in_one_whole_state() {
    let seeds: u64 =
        std::env::var("SNAPBACK_LIFECYCLE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let (mut merges_finished, mut failed_then_finished) = (0, 0);
    for seed in 0..seeds {
        let mut rng = Rng(seed);
        let mut model = Model::new();
        for _ in 0..300 {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                random_step(&mut model, &mut rng);
                model.check();
            }));
            if let Err(panic) = result {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let tail: Vec<&String> = model.log.iter().rev().take(25).collect();
                panic!("seed {seed}: {what}\nlast steps, newest first:\n{tail:#?}");
            }
        }
        merges_finished += model.merges_finished;
        failed_then_finished += model.failed_merges_finished;
    }
    // The sequences reach the cases that matter, not only the happy path.
    assert!(merges_finished > seeds, "only {merges_finished} merges finished");
    assert!(
        failed_then_finished > seeds / 10,
        "only {failed_then_finished} failed merges were resumed to their end"
    );
    eprintln!("{seeds} sequences: {merges_finished} merges finished, {failed_then_finished} of them after a failure");
}

fn two_volume_model() -> (Model, SnapshotId) {
    let mut model = Model::new();
    model.write("root", 0);
    model.write("var", 1);
    model.snapshot(vec!["root", "var"]);
    model.write("root", 0);
    model.write("root", 2);
    model.write("var", 1);
    (model, 1)
}

#[test]
fn a_half_merged_set_retried_while_busy_cancels_back_to_merge_failed() {
    let (mut model, id) = two_volume_model();
    model.rollback(id);
    model.merge_step(id, &mut Rng(1));
    model.run(id, Input::MergeFailed("read-only origin".into())).unwrap();
    model.busy.insert("var");
    model.rollback(id);
    // var is merging already, so a busy var does not defer it: the retry goes ahead.
    assert_eq!(model.set(id).state, SetState::Merging);
    model.run(id, Input::MergeFailed("read-only origin".into())).unwrap();

    // A set whose merge began but whose volume is not merging yet is deferred when busy.
    let mut record = model.set(id);
    record.state = SetState::MergeFailed;
    let busy_volume =
        next(&model.registry, &record, &Input::Rollback { defer: true, missing: vec![] }).unwrap();
    assert_eq!((busy_volume.state, busy_volume.merge_started), (SetState::MergeScheduled, true));
    assert!(busy_volume.message.as_deref().unwrap_or("").contains("read-only origin"));
    model.registry.set_mut(id).unwrap().state = SetState::MergeScheduled;
    model.run(id, Input::CancelRollback).unwrap();
    assert_eq!(model.set(id).state, SetState::MergeFailed);
    let err = model.run(id, Input::Delete).unwrap_err();
    assert!(
        matches!(&err, BackendError { kind: ErrorKind::Busy, message: m, .. } if m.contains("half rolled back")),
        "{err}"
    );
    model.check();
}

#[test]
fn one_rollback_per_volume_even_after_a_failure() {
    let (mut model, first) = two_volume_model();
    model.snapshot(vec!["home"]);
    // A second set over var, taken before the rollback.
    model.snapshot(vec!["var"]);
    let second = 3;
    model.rollback(first);
    model.run(first, Input::MergeFailed("I/O error".into())).unwrap();
    let err = model.run(second, Input::Rollback { defer: false, missing: vec![] }).unwrap_err();
    assert!(
        matches!(&err, BackendError { kind: ErrorKind::AlreadyMerging, message: m, .. } if m.contains("volume var") && m.contains("set 1")),
        "{err}"
    );
    assert_eq!(model.set(second).state, SetState::Active);
    // Sets over other volumes are not held up.
    assert!(model.run(2, Input::Rollback { defer: false, missing: vec![] }).is_ok());
}

#[test]
fn a_configuration_change_never_changes_a_set() {
    let (mut model, id) = two_volume_model();
    model.configured.remove("var");
    model.start(false);
    assert!(!model.down);
    assert_eq!(model.set(id).state, SetState::Active);
    let err =
        model.run(id, Input::Rollback { defer: false, missing: vec!["var".into()] }).unwrap_err();
    assert!(
        matches!(&err, BackendError { kind: ErrorKind::NotFound, message: m, .. } if m.contains("volume var")),
        "{err}"
    );
    assert_eq!(model.set(id).state, SetState::Active);

    // Scheduled but not begun: kept scheduled, visible, not merged.
    model.configured.insert("var");
    model.busy.insert("root");
    model.rollback(id);
    assert_eq!(model.set(id).state, SetState::MergeScheduled);
    model.configured.remove("var");
    model.start(true);
    assert!(!model.down);
    assert_eq!(model.set(id).state, SetState::MergeScheduled);
    assert_eq!(model.mode["root"], Mode::Plain);

    // Begun: the start is refused, naming the volume, and nothing changes.
    model.configured.insert("var");
    model.start(true);
    assert_eq!(model.set(id).state, SetState::Merging);
    model.configured.remove("var");
    let err = check_start(&model.registry, |v| model.configured.contains(v)).unwrap_err();
    assert!(err.to_string().contains("volume var is not in the configuration"), "{err}");
    assert_eq!(model.set(id).state, SetState::Merging);
}

#[test]
fn a_scheduled_rollback_whose_snapshot_fills_up_becomes_invalid_unless_begun() {
    let (mut model, id) = two_volume_model();
    model.busy.insert("root");
    model.rollback(id);
    model.run(id, Input::Invalidated("COW full".into())).unwrap();
    let set = model.set(id);
    assert_eq!(set.state, SetState::Invalid);
    assert!(set.message.unwrap_or_default().contains("scheduled rollback cannot happen"));

    let (mut model, id) = two_volume_model();
    model.rollback(id);
    model.run(id, Input::MergeFailed("x".into())).unwrap();
    model.run(id, Input::Invalidated("COW full".into())).unwrap();
    assert_eq!(model.set(id).state, SetState::MergeFailed);
}

/// A Delete commits the set invalid before its devices go: if the process dies between the
/// two, the set must not come back as an active snapshot that missed every write since.
#[test]
fn delete_commits_the_set_invalid_before_the_devices_go() {
    let (mut model, id) = two_volume_model();
    assert!(matches!(model.run(id, Input::Delete), Ok(Effect::Remove)));
    let interrupted = model.set(id);
    assert_eq!(interrupted.state, SetState::Invalid);
    assert_eq!(
        interrupted.message.as_deref(),
        Some("its deletion was interrupted; delete it again")
    );
    // the next Delete removes it, its message untouched
    assert!(matches!(model.run(id, Input::Delete), Ok(Effect::Remove)));
    assert_eq!(model.set(id).message, interrupted.message);
    // and a set the data path invalidated keeps saying why
    let (mut model, id) = two_volume_model();
    model.run(id, Input::Invalidated("COW full".into())).unwrap();
    model.run(id, Input::Delete).unwrap();
    assert_eq!(model.set(id).message.as_deref(), Some("COW full"));
}

#[test]
fn merging_sets_cannot_be_cancelled_deleted_or_rolled_back_again() {
    let (mut model, id) = two_volume_model();
    model.rollback(id);
    assert!(matches!(
        model.run(id, Input::CancelRollback),
        Err(BackendError { kind: ErrorKind::AlreadyMerging, .. })
    ));
    assert!(matches!(
        model.run(id, Input::Delete),
        Err(BackendError { kind: ErrorKind::Busy, .. })
    ));
    assert!(matches!(
        model.run(id, Input::Rollback { defer: false, missing: vec![] }),
        Err(BackendError { kind: ErrorKind::AlreadyMerging, .. })
    ));
    assert!(matches!(model.run(id, Input::Invalidated("x".into())), Ok(Effect::Nothing)));
    assert_eq!(model.set(id).state, SetState::Merging);
    // A finished merge of a set that is not merging is a bug, refused.
    let (model, id) = two_volume_model();
    assert!(next(&model.registry, &model.set(id), &Input::MergeFinished).is_err());
}

#[test]
fn the_boot_side_is_committed_with_the_state() {
    let (mut model, id) = two_volume_model();
    let boot = crate::pool::BootRecord::default();
    model.registry.set_mut(id).unwrap().boot = Some(boot.clone());
    // A rollback asks for the snapshot's boot files; a repeat asks nothing new.
    let scheduled =
        next(&model.registry, &model.set(id), &Input::Rollback { defer: true, missing: vec![] })
            .unwrap();
    assert_eq!(scheduled.boot_restore, Some(BootRestore::Snapshot));
    // Once they are back (boot_restore cleared, the upgrade's kept as undo), a cancel asks
    // for the undo, and so does a snapshot that fills up before the scheduled rollback ran.
    let mut record = model.set(id);
    record.state = SetState::MergeScheduled;
    record.boot_undo = Some(boot);
    model.registry.set_mut(id).unwrap().clone_from(&record);
    let cancelled = next(&model.registry, &record, &Input::CancelRollback).unwrap();
    assert_eq!(
        (cancelled.state, cancelled.boot_restore),
        (SetState::Active, Some(BootRestore::Undo))
    );
    let invalid = next(&model.registry, &record, &Input::Invalidated("COW full".into())).unwrap();
    assert_eq!((invalid.state, invalid.boot_restore), (SetState::Invalid, Some(BootRestore::Undo)));
    // Without an undo record nothing is due; a set without boot files never asks.
    record.boot_undo = None;
    assert_eq!(next(&model.registry, &record, &Input::CancelRollback).unwrap().boot_restore, None);
    let (model, id) = two_volume_model();
    let plain =
        next(&model.registry, &model.set(id), &Input::Rollback { defer: false, missing: vec![] })
            .unwrap();
    assert_eq!(plain.boot_restore, None);
}

#[test]
fn only_a_snapshot_that_still_holds_the_old_volume_can_be_opened() {
    let record = |state: SetState, merge_started: bool| SnapshotSetRecord {
        id: 4,
        description: String::new(),
        created_us: 0,
        userdata: BTreeMap::new(),
        important: false,
        state,
        merge_started,
        message: None,
        boot: None,
        boot_undo: None,
        boot_restore: None,
        cows: vec![CowRecord { volume: "root".into(), chunk_sectors: 32, extents: vec![] }],
    };
    for (state, started) in
        [(SetState::Active, false), (SetState::Overflow, false), (SetState::MergeScheduled, false)]
    {
        assert_eq!(check_open(&record(state, started), "root"), Ok(()), "{state:?}");
    }
    for (state, started, kind) in [
        (SetState::Invalid, false, ErrorKind::SnapshotInvalid),
        (SetState::Merging, true, ErrorKind::AlreadyMerging),
        (SetState::MergeFailed, true, ErrorKind::AlreadyMerging),
        (SetState::MergeScheduled, true, ErrorKind::AlreadyMerging),
    ] {
        let refused = check_open(&record(state, started), "root");
        assert!(
            matches!(&refused, Err(BackendError { kind: k, message, .. }) if *k == kind && message.contains("set 4")),
            "{state:?}: {refused:?}"
        );
    }
    let other = check_open(&record(SetState::Active, false), "home");
    assert!(
        matches!(&other, Err(BackendError { kind: ErrorKind::NotFound, message, .. }) if message.contains("\"home\"") && message.contains("root")),
        "{other:?}"
    );
}
