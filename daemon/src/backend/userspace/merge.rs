//! Running a snapshot set's merge: one thread per volume stepping its origin's merge, and a
//! coordinator that removes the set when every volume is done.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::state::{lock, Shared, VolumeProgress};
use super::volume::Volume;
use crate::backend::lifecycle::{self, Input};
use crate::backend::{BackendEvent, SnapshotId};

/// How often a merging set reports progress on the bus.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

enum Outcome {
    Finished,
    Stopped,
    Failed(String),
}

/// Starts the merge threads of set `id` (the engine merges must already be started).
pub fn spawn(shared: &Arc<Shared>, id: SnapshotId, volumes: Vec<Arc<Volume>>) {
    let coordinator_shared = shared.clone();
    let handle = thread::Builder::new()
        .name(format!("merge-{id}"))
        .spawn(move || coordinate(&coordinator_shared, id, volumes));
    match handle {
        Ok(handle) => {
            let mut threads = lock(&shared.threads);
            threads.retain(|thread| !thread.is_finished());
            threads.push(handle);
        }
        // Called from start_merges, whose caller holds `ops`.
        Err(err) => fail(shared, id, format!("cannot start the merge thread: {err}")),
    }
}

fn coordinate(shared: &Arc<Shared>, id: SnapshotId, volumes: Vec<Arc<Volume>>) {
    let started = Instant::now();
    let workers: Vec<_> = volumes
        .iter()
        .map(|volume| {
            let shared = shared.clone();
            let volume = volume.clone();
            thread::Builder::new()
                .name(format!("merge-{id}-{}", volume.name))
                .spawn(move || step_until_done(&shared, id, &volume))
        })
        .collect();
    let mut failures = Vec::new();
    let mut stopped = false;
    for (volume, worker) in volumes.iter().zip(workers) {
        let outcome = match worker {
            Ok(handle) => {
                handle.join().unwrap_or_else(|_| Outcome::Failed("merge thread panicked".into()))
            }
            Err(err) => Outcome::Failed(format!("cannot start merge thread: {err}")),
        };
        match outcome {
            Outcome::Finished => {}
            Outcome::Stopped => stopped = true,
            Outcome::Failed(message) => failures.push(format!("volume {}: {message}", volume.name)),
        }
    }
    if !failures.is_empty() {
        let _ops = lock(&shared.ops);
        fail(shared, id, failures.join("; "));
    } else if stopped {
        tracing::info!(
            snapshot_id = id,
            "merge paused for shutdown; it resumes when snapbackd starts again"
        );
    } else {
        finish(shared, id, &volumes, started.elapsed());
    }
}

/// Steps in a row that may leave the remaining chunk count unchanged before the merge is
/// declared stuck (a step always merges at least one chunk when it works).
const STALLED_STEPS: u32 = 3;

fn step_until_done(shared: &Shared, id: SnapshotId, volume: &Volume) -> Outcome {
    let mut last_report = Instant::now();
    let mut last_left = None;
    let mut stalled = 0;
    loop {
        if shared.stopping() {
            return Outcome::Stopped;
        }
        let step = match volume.merge_step() {
            Ok(step) => step,
            Err(err) => return Outcome::Failed(err.to_string()),
        };
        lock(&shared.progress).entry(id).or_default().insert(
            volume.name.clone(),
            VolumeProgress { chunks_left: step.chunks_left, chunks_total: step.chunks_total },
        );
        if step.finished {
            return Outcome::Finished;
        }
        if last_left == Some(step.chunks_left) {
            stalled += 1;
            if stalled >= STALLED_STEPS {
                return Outcome::Failed(format!(
                    "the merge makes no progress ({} chunks left after {STALLED_STEPS} steps)",
                    step.chunks_left
                ));
            }
        } else {
            stalled = 0;
        }
        last_left = Some(step.chunks_left);
        // Let waiting volume I/O in between steps (a step holds the origin's state lock).
        match shared.options.merge_step_pause {
            Some(pause) => thread::sleep(pause),
            None => thread::yield_now(),
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            shared.emit(BackendEvent::SnapshotChanged(id));
        }
    }
}

/// Every volume merged: detach the snapshots, free the COW, forget the set. The devices go
/// first: a crash before the registry update finds the set merging at the next start, whose
/// merge then has nothing left to copy and finishes again.
fn finish(shared: &Shared, id: SnapshotId, volumes: &[Arc<Volume>], took: Duration) {
    let outcome = {
        let _ops = lock(&shared.ops);
        // The boot side of the rollback is done before its records go with the set.
        shared.boot.settle(&shared.pool, id).and_then(|()| lifecycle::apply(&shared.pool, id, &Input::MergeFinished)).and_then(|_| {
            for volume in volumes {
                shared.files.remove(&format!("{}@{id}", volume.name));
                if let Err(err) = volume.detach(id) {
                    tracing::warn!(snapshot_id = id, volume = %volume.name, %err, "detaching merged snapshot");
                }
            }
            lifecycle::forget(&shared.pool, id)
        })
    };
    lock(&shared.progress).remove(&id);
    match outcome {
        Ok(()) => {
            shared.boot.refresh_entries(&shared.pool);
            tracing::info!(
                snapshot_id = id,
                seconds = took.as_secs_f64(),
                "merge finished; snapshot set removed"
            );
            shared.emit(BackendEvent::MergeFinished { id, ok: true, message: String::new() });
            shared.emit(BackendEvent::SnapshotRemoved(id));
        }
        Err(err) => {
            let _ops = lock(&shared.ops);
            fail(shared, id, format!("merge finished but the registry update failed: {err}"));
        }
    }
}

/// Records a failed (or unstartable) merge as `merge-failed` and tells the bus. The caller
/// holds `Shared::ops`.
pub fn fail(shared: &Shared, id: SnapshotId, message: String) {
    tracing::error!(snapshot_id = id, %message, "merge failed");
    let message = format!("{message}. The merge resumes where it stopped with another Rollback.");
    if let Err(err) = lifecycle::apply(&shared.pool, id, &Input::MergeFailed(message.clone())) {
        tracing::error!(snapshot_id = id, %err, "recording the failed merge");
    }
    shared.emit(BackendEvent::MergeFinished { id, ok: false, message });
    shared.emit(BackendEvent::SnapshotChanged(id));
}
