//! `Manager.Status()`: one consistent read of the backend, shaped as snapback_dbus::Status.

use std::collections::HashMap;

use snapback_dbus::{snapshot_path, Error, PoolStatus, Status, VolumeStatus};

use super::Service;
use crate::backend::{PoolStatus as BackendPool, SetState, SnapshotSetInfo, VolumeInfo};

impl Service {
    /// `Manager.Status()`.
    pub async fn status(&self) -> Result<Status, Error> {
        let (kind, volumes, pool, sets) = self
            .read(|backend| {
                (backend.kind(), backend.volumes(), backend.pool(), backend.snapshots())
            })
            .await?;
        Ok(shape(kind.as_str(), &self.version, volumes, pool, &sets))
    }
}

/// Pure part of `collect`, separate so it can be tested without a backend.
pub fn shape(
    backend: &str,
    version: &str,
    volumes: Vec<VolumeInfo>,
    pool: BackendPool,
    sets: &[SnapshotSetInfo],
) -> Status {
    let paths_where = |state: SetState| {
        sets.iter().filter(|s| s.state == state).map(|s| snapshot_path(s.id)).collect::<Vec<_>>()
    };
    let volumes: HashMap<String, VolumeStatus> = volumes
        .into_iter()
        .map(|v| {
            let snapshots = sets
                .iter()
                .filter(|s| s.volumes.contains(&v.name))
                .map(|s| snapshot_path(s.id))
                .collect();
            let status = VolumeStatus {
                device: v.device.map(|d| d.display().to_string()).unwrap_or_default(),
                backing: v.backing.display().to_string(),
                state: v.state.to_string(),
                size: v.size_bytes,
                auto: v.auto,
                snapshots,
            };
            (v.name, status)
        })
        .collect();
    Status {
        backend: backend.to_string(),
        version: version.to_string(),
        pool: PoolStatus {
            path: pool.path.display().to_string(),
            size: pool.size_bytes,
            used: pool.used_bytes,
        },
        volumes,
        pending: paths_where(SetState::MergeScheduled),
        merging: paths_where(SetState::Merging),
    }
}

/// One line for `systemctl status` (sd-notify STATUS=).
pub fn summary(sets: &[SnapshotSetInfo]) -> String {
    let merging: Vec<String> = sets
        .iter()
        .filter(|s| s.state == SetState::Merging)
        .map(|s| format!("#{} {:.0}%", s.id, s.merge_progress * 100.0))
        .collect();
    let pending = sets.iter().filter(|s| s.state == SetState::MergeScheduled).count();
    let mut line = format!("{} snapshot set(s)", sets.len());
    if !merging.is_empty() {
        line.push_str(&format!(", merging {}", merging.join(", ")));
    }
    if pending > 0 {
        line.push_str(&format!(", {pending} rollback(s) pending"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use crate::backend::VolumeState;

    fn set(id: u32, volumes: &[&str], state: SetState, progress: f64) -> SnapshotSetInfo {
        SnapshotSetInfo {
            id,
            description: String::new(),
            created_us: 0,
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            state,
            used_bytes: 0,
            size_bytes: 0,
            merge_progress: progress,
            userdata: BTreeMap::new(),
            important: false,
            boot_entry: None,
        }
    }

    #[test]
    fn status_lists_volumes_with_their_sets_and_the_merges() {
        let volumes = vec![
            VolumeInfo {
                name: "root".into(),
                backing: PathBuf::from("/img/root"),
                device: Some(PathBuf::from("/dev/loop4")),
                auto: true,
                state: VolumeState::Merging,
                size_bytes: 100,
            },
            VolumeInfo {
                name: "var".into(),
                backing: PathBuf::from("/img/var"),
                device: None,
                auto: false,
                state: VolumeState::Inactive,
                size_bytes: 200,
            },
        ];
        let pool =
            BackendPool { path: PathBuf::from("/img/pool"), size_bytes: 1000, used_bytes: 10 };
        let sets = [
            set(1, &["root"], SetState::Merging, 0.5),
            set(2, &["root", "var"], SetState::MergeScheduled, 0.0),
            set(3, &["var"], SetState::Active, 0.0),
        ];
        let status = shape("userspace", "0.1.0", volumes, pool, &sets);
        assert_eq!(status.backend, "userspace");
        assert_eq!(status.pool.path, "/img/pool");
        assert_eq!((status.pool.size, status.pool.used), (1000, 10));
        let root = &status.volumes["root"];
        assert_eq!(root.device, "/dev/loop4");
        assert_eq!(root.snapshots, vec![snapshot_path(1), snapshot_path(2)]);
        let var = &status.volumes["var"];
        assert_eq!(var.device, "");
        assert!(!var.auto);
        assert_eq!(var.snapshots, vec![snapshot_path(2), snapshot_path(3)]);
        assert_eq!(status.merging, vec![snapshot_path(1)]);
        assert_eq!(status.pending, vec![snapshot_path(2)]);
        assert_eq!(summary(&sets), "3 snapshot set(s), merging #1 50%, 1 rollback(s) pending");
    }
}
