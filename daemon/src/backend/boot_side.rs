//! The boot side of a set's lifecycle, the same for both backends: a new set that includes
//! the root volume records the boot configuration; a rollback puts it back (keeping the one it
//! replaces, for a cancel); a cancel puts that one back. The lifecycle commits which of the two
//! is due (`boot_restore`) with the set's state; this does the file work and clears it, and a
//! start redoes whatever a crash left due.
//!
//! The restore happens when the rollback is asked for, even when it is only scheduled: the
//! next boot must already pick the snapshot-time kernel, whose modules the rolled-back root
//! has, and it must not depend on the daemon running again before that boot.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{BackendError, BackendResult, SnapshotId};
use crate::boot::tree::{self, BootRoots, RealFs};
use crate::boot::{entries, store, BootConfig};
use crate::pool::{BootRecord, BootRestore, BootRoot, Pool, PoolError, SnapshotSetRecord};

#[derive(Debug, Clone)]
pub struct BootSide {
    config: BootConfig,
    roots: BootRoots,
}

/// The `major:minor` of what is mounted at `/`, from mountinfo.
fn root_mount_device() -> Option<(u32, u32)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = mountinfo.lines().find(|line| line.split(' ').nth(4) == Some("/"))?;
    let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn device_numbers(path: &Path) -> Option<(u32, u32)> {
    let rdev = std::fs::metadata(path).ok()?.rdev();
    Some((rustix::fs::major(rdev), rustix::fs::minor(rdev)))
}

impl BootSide {
    pub fn new(config: &BootConfig) -> BootSide {
        BootSide { roots: config.roots(), config: config.clone() }
    }

    /// Whether a set over `volumes` records the boot configuration: it includes the root
    /// volume, the configured one or else the one whose device is mounted at `/`.
    pub fn covers(&self, volumes: &[String], device_of: impl Fn(&str) -> Option<PathBuf>) -> bool {
        if !self.config.enabled {
            return false;
        }
        match &self.config.root_volume {
            Some(root) => volumes.contains(root),
            None => {
                let Some(root) = root_mount_device() else { return false };
                volumes
                    .iter()
                    .any(|volume| device_of(volume).and_then(|d| device_numbers(&d)) == Some(root))
            }
        }
    }

    fn capture(&self, pool: &Pool) -> Result<BootRecord, String> {
        tree::capture(&self.roots, |bytes| store::put(pool, bytes).map_err(std::io::Error::other))
            .map_err(|err| {
                format!("reading the boot files under {}: {err}", self.roots.boot.display())
            })
    }

    fn store_record(
        pool: &Pool,
        id: SnapshotId,
        undo: bool,
        record: BootRecord,
    ) -> Result<(), PoolError> {
        pool.update(|registry| {
            let set = registry
                .set_mut(id)
                .ok_or_else(|| PoolError::Invalid(format!("snapshot set {id} vanished")))?;
            if undo {
                set.boot_undo = Some(record);
            } else {
                set.boot = Some(record);
            }
            registry.drop_unnamed_blobs();
            Ok(())
        })
    }

    /// Records the boot configuration in the new set `record` when it covers the root
    /// volume. A failure leaves the set without one (a rollback of it then restores only
    /// the volumes, as before snapback recorded /boot) and is logged.
    pub fn record_new_set(
        &self,
        pool: &Pool,
        record: &SnapshotSetRecord,
        device_of: impl Fn(&str) -> Option<PathBuf>,
    ) {
        if !self.covers(&record.volumes(), device_of) {
            return;
        }
        let outcome = self.capture(pool).and_then(|boot| {
            let files = boot.files.len();
            Self::store_record(pool, record.id, false, boot)
                .map(|()| files)
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(files) => {
                tracing::info!(
                    snapshot_id = record.id,
                    files,
                    "boot configuration recorded with snapshot set {}",
                    record.id
                );
                self.refresh_entries(pool);
            }
            Err(err) => {
                // Blobs stored before the failure are named by no set: free them again.
                let _ = pool.update(|registry| {
                    registry.drop_unnamed_blobs();
                    Ok(())
                });
                tracing::warn!(snapshot_id = record.id, %err,
                    "the boot configuration was not recorded with snapshot set {}; a rollback of it restores the volumes only",
                    record.id)
            }
        }
    }

    /// Keeps the current boot configuration as the set's undo record, before a rollback that
    /// may be scheduled and then cancelled.
    pub fn keep_undo(&self, pool: &Pool, record: &SnapshotSetRecord) -> BackendResult<()> {
        if record.boot.is_none() || record.boot_restore.is_some() {
            // Nothing to put back, or a restore already under way: what is on disk now is
            // part snapshot, part upgrade, and the undo taken before it is the right one.
            return Ok(());
        }
        let undo = self.capture(pool).map_err(BackendError::backend)?;
        Self::store_record(pool, record.id, true, undo)
            .map_err(|err| BackendError::backend(err.to_string()).caused_by(err))
    }

    /// Puts in place the boot configuration the lifecycle committed as due for set `id`,
    /// then clears it. Idempotent: a crash part way is finished by the next call.
    pub fn settle(&self, pool: &Pool, id: SnapshotId) -> BackendResult<()> {
        let registry = pool.registry();
        let Some(set) = registry.set(id) else { return Ok(()) };
        let Some(due) = set.boot_restore else { return Ok(()) };
        let target = match due {
            BootRestore::Snapshot => set.boot.as_ref(),
            BootRestore::Undo => set.boot_undo.as_ref(),
        };
        if let Some(target) = target {
            let steps = tree::restore(&self.roots, target, &RealFs, |sha| store::get(pool, sha)).map_err(|err| {
                BackendError::backend(format!(
                    "the boot files of snapshot set {id} could not be put back under {}: {err}; snapbackd \
                     retries at every start (the set's state is already recorded)",
                    self.roots.boot.display()
                ))
            })?;
            tracing::info!(snapshot_id = id, steps, restored = ?due, "boot configuration of snapshot set {id} put back");
        }
        pool.update(|registry| {
            if let Some(set) = registry.set_mut(id) {
                set.boot_restore = None;
                if due == BootRestore::Undo {
                    set.boot_undo = None;
                }
            }
            registry.drop_unnamed_blobs();
            Ok(())
        })
        .map_err(|err| BackendError::backend(err.to_string()).caused_by(err))
    }

    /// At start: finishes every restore a crash left due, then brings the rollback entries
    /// up to date (an upgrade since the last start may have removed kernels they boot).
    pub fn settle_all(&self, pool: &Pool) {
        for set in pool.registry().snapshot_sets.iter().filter(|set| set.boot_restore.is_some()) {
            if let Err(err) = self.settle(pool, set.id) {
                tracing::error!(snapshot_id = set.id, %err, "finishing the boot side of a rollback");
            }
        }
        self.refresh_entries(pool);
    }

    /// Writes the boot-menu entry of every set that recorded the boot configuration (and the
    /// kept copies it boots) and removes those of sets that are gone. Returns the entries
    /// written. Failures are logged: the entries are a way back, not the rollback itself.
    pub fn refresh_entries(&self, pool: &Pool) -> Vec<PathBuf> {
        let mut written = Vec::new();
        if !self.config.enabled {
            return written;
        }
        let registry = pool.registry();
        let mut live = std::collections::BTreeSet::new();
        for set in registry.snapshot_sets.iter().filter(|set| set.boot.is_some()) {
            match entries::write(&self.roots, set, &RealFs, &mut |sha| store::get(pool, sha)) {
                Ok(Some(path)) => {
                    live.insert(set.id);
                    tracing::debug!(snapshot_id = set.id, entry = %path.display(), "rollback boot entry written");
                    written.push(path);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(snapshot_id = set.id, %err, "writing the rollback boot entry of snapshot set {}", set.id)
                }
            }
        }
        if let Err(err) = entries::prune(&self.roots, &live, &RealFs) {
            tracing::warn!(%err, "removing rollback boot entries of deleted snapshot sets");
        }
        written
    }

    /// The path of set `id`'s rollback entry, when it has one.
    pub fn entry_path(&self, record: &SnapshotSetRecord) -> Option<PathBuf> {
        record.boot.as_ref()?;
        [BootRoot::Boot, BootRoot::Esp]
            .into_iter()
            .filter_map(|root| {
                self.roots
                    .path(root, &format!("loader/entries/{}.conf", entries::entry_id(record.id)))
            })
            .find(|path| path.is_file())
    }
}
