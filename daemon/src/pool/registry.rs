//! The registry: everything snapbackd must remember across restarts, stored in the pool.
//!
//! Free extents are not stored: they are every extent no COW lists, so the registry cannot
//! disagree with itself about ownership.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::PoolError;

/// A snapshot set's persistent state: the API's own type, stored under its bus names.
pub use snapback_dbus::SetState;

/// A managed volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub backing: PathBuf,
    pub size_bytes: u64,
}

/// One volume's COW inside a snapshot set: the pool extents it is made of, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CowRecord {
    pub volume: String,
    pub chunk_sectors: u32,
    /// Stored as `[first, count]` runs: COWs are mostly contiguous, and a 2 MiB slot then holds
    /// the registry of a pool of any practical size.
    #[serde(with = "extent_runs")]
    pub extents: Vec<u64>,
}

/// (De)serializes an extent list as runs of consecutive extents.
mod extent_runs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// 2^24 extents of the smallest extent (4 KiB) is 64 GiB, of the default 4 MiB 64 TiB: no
    /// COW needs more, and the decoded list then stays within 128 MiB of memory.
    const MAX_COW_EXTENTS: u64 = 1 << 24;

    pub fn serialize<S: Serializer>(extents: &[u64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut runs: Vec<[u64; 2]> = Vec::new();
        for &extent in extents {
            match runs.last_mut() {
                Some([first, count]) if first.checked_add(*count) == Some(extent) => *count += 1,
                _ => runs.push([extent, 1]),
            }
        }
        runs.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
        let runs = Vec::<[u64; 2]>::deserialize(deserializer)?;
        let mut extents = Vec::new();
        for [first, count] in runs {
            let end = first.checked_add(count).ok_or_else(|| {
                serde::de::Error::custom(format!("extent run {first}+{count} overflows"))
            })?;
            // More extents than any pool has is corrupt; refuse before allocating for them.
            if count > MAX_COW_EXTENTS - extents.len() as u64 {
                return Err(serde::de::Error::custom(format!(
                    "a COW of more than {MAX_COW_EXTENTS} extents (run {first}+{count})"
                )));
            }
            extents.extend(first..end);
        }
        Ok(extents)
    }
}

/// A snapshot set: one snapshot of each of its volumes, taken together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSetRecord {
    pub id: u32,
    pub description: String,
    pub created_us: u64,
    pub userdata: BTreeMap<String, String>,
    pub important: bool,
    pub state: SetState,
    /// Set once a merge of this set has been started on any volume, and never cleared: from
    /// then on the volumes may hold part of the snapshot's data, and only finishing the merge
    /// makes them whole again (see `backend::lifecycle`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge_started: bool,
    /// Why the merge failed (state merge-failed), for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub cows: Vec<CowRecord>,
    /// The boot configuration at snapshot time (sets that include the root volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootRecord>,
    /// The boot configuration a scheduled rollback replaced, put back if it is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_undo: Option<BootRecord>,
    /// A restore of the boot files was started and has not finished (redone at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_restore: Option<BootRestore>,
}

/// Which boot configuration a pending restore puts in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootRestore {
    /// The snapshot's (`boot`): a rollback.
    Snapshot,
    /// The one the rollback replaced (`boot_undo`): a cancelled rollback.
    Undo,
}

/// The partition a boot file lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootRoot {
    /// `/boot` (kernels, initramfs images, GRUB's BLS entries and grubenv).
    Boot,
    /// The EFI system partition (systemd-boot's entries and loader.conf).
    Esp,
}

/// One file of a boot configuration: where it is and which blob holds its bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BootFile {
    pub root: BootRoot,
    /// Relative to the root, `/`-separated, no `..`.
    pub path: String,
    pub sha256: String,
    pub mode: u32,
}

/// Whether `path` names a file inside a boot partition as the registry keeps it: relative,
/// `/`-separated, without an empty, `.` or `..` component. A restore writes each file there.
pub fn is_plain_relative(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Whether `text` is a SHA-256 as the pool names blobs: 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A boot configuration: every managed file of the boot partitions at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    pub files: Vec<BootFile>,
}

/// File contents kept in the pool, by their SHA-256, shared by every record naming them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub sha256: String,
    pub size: u64,
    #[serde(with = "extent_runs")]
    pub extents: Vec<u64>,
}

impl SnapshotSetRecord {
    /// The blobs this set's boot records name.
    pub fn boot_blobs(&self) -> impl Iterator<Item = &str> {
        self.boot
            .iter()
            .chain(self.boot_undo.iter())
            .flat_map(|record| record.files.iter().map(|f| f.sha256.as_str()))
    }

    pub fn volumes(&self) -> Vec<String> {
        self.cows.iter().map(|cow| cow.volume.clone()).collect()
    }

    pub fn extent_count(&self) -> u64 {
        self.cows.iter().map(|cow| cow.extents.len() as u64).sum()
    }
}

/// The whole registry, serialized as one JSON document per slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub pool_uuid: String,
    /// Size of one extent in bytes.
    pub extent_bytes: u64,
    /// Byte offset of extent 0.
    pub data_offset: u64,
    /// Number of extents in the data area.
    pub extent_count: u64,
    /// The id the next snapshot set gets; ids are never reused.
    pub next_snapshot_id: u32,
    pub volumes: Vec<VolumeRecord>,
    pub snapshot_sets: Vec<SnapshotSetRecord>,
    /// Boot files kept for the sets' boot records (deduplicated by content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_blobs: Vec<BlobRecord>,
}

impl Registry {
    pub fn new(extent_bytes: u64, data_offset: u64, extent_count: u64) -> Registry {
        Registry {
            pool_uuid: uuid::Uuid::new_v4().to_string(),
            extent_bytes,
            data_offset,
            extent_count,
            next_snapshot_id: 1,
            volumes: Vec::new(),
            snapshot_sets: Vec::new(),
            boot_blobs: Vec::new(),
        }
    }

    pub fn blob(&self, sha256: &str) -> Option<&BlobRecord> {
        self.boot_blobs.iter().find(|blob| blob.sha256 == sha256)
    }

    /// Removes set `id` and the blobs no remaining set names (their extents become free).
    pub fn forget_set(&mut self, id: u32) {
        self.snapshot_sets.retain(|set| set.id != id);
        self.drop_unnamed_blobs();
    }

    /// Drops blobs no set's boot record names.
    pub fn drop_unnamed_blobs(&mut self) {
        let named: BTreeSet<String> = self
            .snapshot_sets
            .iter()
            .flat_map(|set| set.boot_blobs().map(str::to_string))
            .collect();
        self.boot_blobs.retain(|blob| named.contains(&blob.sha256));
    }

    pub fn set(&self, id: u32) -> Option<&SnapshotSetRecord> {
        self.snapshot_sets.iter().find(|set| set.id == id)
    }

    pub fn set_mut(&mut self, id: u32) -> Option<&mut SnapshotSetRecord> {
        self.snapshot_sets.iter_mut().find(|set| set.id == id)
    }

    pub fn volume(&self, name: &str) -> Option<&VolumeRecord> {
        self.volumes.iter().find(|volume| volume.name == name)
    }

    /// Ids of sets whose rollback is pending, running or failed part way.
    pub fn pending_rollbacks(&self) -> Vec<u32> {
        self.snapshot_sets
            .iter()
            .filter(|set| set.state.rollback_requested() || set.merge_started)
            .map(|set| set.id)
            .collect()
    }

    fn used_extents(&self) -> BTreeSet<u64> {
        self.snapshot_sets
            .iter()
            .flat_map(|set| set.cows.iter())
            .flat_map(|cow| cow.extents.iter().copied())
            .chain(self.boot_blobs.iter().flat_map(|blob| blob.extents.iter().copied()))
            .collect()
    }

    pub fn used_extent_count(&self) -> u64 {
        self.snapshot_sets.iter().map(SnapshotSetRecord::extent_count).sum::<u64>()
            + self.boot_blob_extent_count()
    }

    /// Extents holding boot files (counted in the pool's usage).
    pub fn boot_blob_extent_count(&self) -> u64 {
        self.boot_blobs.iter().map(|blob| blob.extents.len() as u64).sum()
    }

    pub fn free_extent_count(&self) -> u64 {
        self.extent_count.saturating_sub(self.used_extent_count())
    }

    /// Picks free extents for several COWs at once (lowest first), without changing anything:
    /// either all requests are satisfied or the pool is full and nothing is picked.
    pub fn pick_free_extents(&self, counts: &[u64]) -> Result<Vec<Vec<u64>>, PoolError> {
        let wanted: u64 = counts.iter().sum();
        let free = self.free_extent_count();
        if wanted > free {
            return Err(PoolError::NoSpace { wanted, free, extent_bytes: self.extent_bytes });
        }
        let used = self.used_extents();
        let mut candidates = (0..self.extent_count).filter(|extent| !used.contains(extent));
        Ok(counts.iter().map(|&count| candidates.by_ref().take(count as usize).collect()).collect())
    }

    /// Checks the invariants a registry read from disk must hold.
    pub fn validate(&self) -> Result<(), String> {
        if self.extent_bytes == 0 || !self.extent_bytes.is_multiple_of(4096) {
            return Err(format!(
                "extent size {} is not a positive multiple of 4096",
                self.extent_bytes
            ));
        }
        let mut seen_extents = BTreeSet::new();
        let mut seen_ids = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        for blob in &self.boot_blobs {
            if !is_sha256_hex(&blob.sha256) {
                return Err(format!("boot blob {:?} is not named by a SHA-256", blob.sha256));
            }
            if !blobs.insert(blob.sha256.as_str()) {
                return Err(format!("boot blob {} appears twice", blob.sha256));
            }
            if blob.extents.len() as u64 * self.extent_bytes < blob.size {
                return Err(format!(
                    "boot blob {} has too few extents for {} bytes",
                    blob.sha256, blob.size
                ));
            }
            for &extent in &blob.extents {
                if extent >= self.extent_count {
                    return Err(format!(
                        "boot blob {} uses extent {extent} beyond the pool",
                        blob.sha256
                    ));
                }
                if !seen_extents.insert(extent) {
                    return Err(format!("extent {extent} is used twice"));
                }
            }
        }
        for set in &self.snapshot_sets {
            if !seen_ids.insert(set.id) {
                return Err(format!("snapshot set id {} appears twice", set.id));
            }
            if set.id >= self.next_snapshot_id {
                return Err(format!(
                    "snapshot set id {} is not below next id {}",
                    set.id, self.next_snapshot_id
                ));
            }
            let files = set.boot.iter().chain(set.boot_undo.iter()).flat_map(|r| r.files.iter());
            if let Some(file) = files.into_iter().find(|file| !is_plain_relative(&file.path)) {
                return Err(format!(
                    "set {} keeps boot file {:?}, which is not a plain relative path",
                    set.id, file.path
                ));
            }
            if let Some(sha256) = set.boot_blobs().find(|sha256| !blobs.contains(sha256)) {
                return Err(format!(
                    "set {} names boot blob {sha256} that the pool does not hold",
                    set.id
                ));
            }
            for cow in &set.cows {
                if self.volume(&cow.volume).is_none() {
                    return Err(format!("set {} names unknown volume {}", set.id, cow.volume));
                }
                for &extent in &cow.extents {
                    if extent >= self.extent_count {
                        return Err(format!("set {} uses extent {extent} beyond the pool", set.id));
                    }
                    if !seen_extents.insert(extent) {
                        return Err(format!("extent {extent} is used twice"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn registry_with_set(extents: Vec<u64>) -> Registry {
        let mut registry = Registry::new(4096, 8192, 10);
        registry.volumes.push(VolumeRecord {
            name: "root".into(),
            backing: "/dev/vda2".into(),
            size_bytes: 1 << 30,
        });
        registry.snapshot_sets.push(SnapshotSetRecord {
            id: 1,
            description: "before upgrade".into(),
            created_us: 1,
            userdata: BTreeMap::new(),
            important: false,
            state: SetState::Active,
            merge_started: false,
            message: None,
            boot: None,
            boot_undo: None,
            boot_restore: None,
            cows: vec![CowRecord { volume: "root".into(), chunk_sectors: 8, extents }],
        });
        registry.next_snapshot_id = 2;
        registry
    }

    /// Found by the registry_slot fuzz target (fuzz/regressions/registry_slot/): a registry
    /// whose boot file paths a restore cannot write as they are opened, then failed later.
    #[test]
    fn validation_rejects_boot_files_outside_plain_paths_and_blobs_not_named_by_sha256() {
        let sha = "ab".repeat(32);
        let with_file = |path: &str, blob: &str| {
            let mut registry = registry_with_set(vec![0]);
            registry.boot_blobs =
                vec![BlobRecord { sha256: blob.to_string(), size: 10, extents: vec![1] }];
            registry.snapshot_sets[0].boot = Some(BootRecord {
                files: vec![BootFile {
                    root: BootRoot::Boot,
                    path: path.to_string(),
                    sha256: blob.to_string(),
                    mode: 0o644,
                }],
            });
            registry.validate()
        };
        assert_eq!(with_file("loader/entries/a.conf", &sha), Ok(()));
        for path in ["l//ader/a.conf", "../etc/shadow", "/vmlinuz", "./vmlinuz", "a/", ""] {
            let refused = with_file(path, &sha).unwrap_err();
            assert!(refused.contains("not a plain relative path"), "{path:?}: {refused}");
        }
        for blob in ["AB".repeat(32), "ab".repeat(31), format!("{}g", "a".repeat(63))] {
            let refused = with_file("vmlinuz", &blob).unwrap_err();
            assert!(refused.contains("not named by a SHA-256"), "{blob:?}: {refused}");
        }
    }

    #[test]
    fn picks_lowest_free_extents_for_every_request() {
        let registry = registry_with_set(vec![0, 2]);
        let picked = registry.pick_free_extents(&[2, 3]).unwrap();
        assert_eq!(picked, vec![vec![1, 3], vec![4, 5, 6]]);
        assert_eq!(registry.free_extent_count(), 8);
    }

    #[test]
    fn too_large_request_picks_nothing() {
        let registry = registry_with_set(vec![0, 1, 2]);
        match registry.pick_free_extents(&[4, 4]) {
            Err(PoolError::NoSpace { wanted: 8, free: 7, .. }) => {}
            other => panic!("expected NoSpace, got {other:?}"),
        }
    }

    #[test]
    fn validation_rejects_shared_or_foreign_extents() {
        assert!(registry_with_set(vec![0, 1]).validate().is_ok());
        let mut twice = registry_with_set(vec![0, 1]);
        let mut second = twice.snapshot_sets[0].clone();
        second.id = 5;
        twice.next_snapshot_id = 6;
        twice.snapshot_sets.push(second);
        assert!(twice.validate().unwrap_err().contains("used twice"));
        assert!(registry_with_set(vec![10]).validate().unwrap_err().contains("beyond"));
    }

    #[test]
    fn extents_are_stored_as_runs() {
        let registry = registry_with_set(vec![3, 4, 5, 9, 0, 1]);
        let json = serde_json::to_string(&registry.snapshot_sets[0].cows[0]).unwrap();
        assert!(json.contains("\"extents\":[[3,3],[9,1],[0,2]]"), "{json}");
        let back: CowRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.extents, vec![3, 4, 5, 9, 0, 1]);
        let bad = r#"{"volume":"v","chunk_sectors":8,"extents":[[18446744073709551615,2]]}"#;
        assert!(serde_json::from_str::<CowRecord>(bad).is_err());
        // Many runs that each pass alone but add up to more than any pool: refused, quickly.
        let runs: Vec<String> =
            (0..64).map(|i| format!("[{},{}]", (i as u64) << 40, 1u64 << 20)).collect();
        let huge = format!(r#"{{"volume":"v","chunk_sectors":8,"extents":[{}]}}"#, runs.join(","));
        let err = serde_json::from_str::<CowRecord>(&huge).unwrap_err().to_string();
        assert!(err.contains("more than 16777216 extents"), "{err}");
    }

    #[test]
    fn state_strings_match_the_bus() {
        for state in [
            SetState::Active,
            SetState::Invalid,
            SetState::Overflow,
            SetState::MergeScheduled,
            SetState::Merging,
            SetState::MergeFailed,
        ] {
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{}\"", state.as_str()));
        }
    }

    #[test]
    fn merge_started_is_kept_and_old_registries_read_without_it() {
        let mut registry = registry_with_set(vec![0]);
        let json = serde_json::to_string(&registry).unwrap();
        assert!(!json.contains("merge_started"), "{json}");
        assert!(!serde_json::from_str::<Registry>(&json).unwrap().snapshot_sets[0].merge_started);
        registry.snapshot_sets[0].merge_started = true;
        let json = serde_json::to_string(&registry).unwrap();
        assert!(serde_json::from_str::<Registry>(&json).unwrap().snapshot_sets[0].merge_started);
    }
}
