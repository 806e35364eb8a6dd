//! What `snapbackctl` shows, independent of how it was read: snapshot sets and the daemon's
//! status as plain values, with their JSON form (schema `snapbackctl/1`, see docs/snapbackctl.md).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use snapback_dbus::{SetState, VolumeState};

use crate::output::time::rfc3339;

/// One snapshot set, as its D-Bus object's properties describe it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotView {
    pub id: u32,
    /// D-Bus object path.
    pub path: String,
    pub description: String,
    /// Microseconds since the Unix epoch.
    pub created_usec: u64,
    pub volumes: Vec<String>,
    pub state: SetState,
    pub used_bytes: u64,
    pub size_bytes: u64,
    /// 0..1
    pub merge_progress: f64,
    pub userdata: BTreeMap<String, String>,
    pub important: bool,
    /// The set's boot-menu entry file, "" when none.
    pub boot_entry: String,
}

impl SnapshotView {
    /// The JSON object of a snapshot set (inside `snapshots` / `snapshot`).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "path": self.path,
            "description": self.description,
            "created": rfc3339(self.created_usec),
            "created_usec": self.created_usec,
            "volumes": self.volumes,
            "state": self.state.as_str(),
            "used_bytes": self.used_bytes,
            "size_bytes": self.size_bytes,
            "merge_progress": self.merge_progress,
            "userdata": self.userdata,
            "important": self.important,
            "boot_entry": self.boot_entry,
        })
    }

    /// State for people: `merging 42%` while a merge runs.
    pub fn state_label(&self) -> String {
        if self.state == SetState::Merging {
            format!("merging {:.0}%", (self.merge_progress * 100.0).clamp(0.0, 100.0).floor())
        } else {
            self.state.to_string()
        }
    }
}

/// One volume in the daemon's status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeView {
    pub name: String,
    /// The device users mount (empty while not assembled).
    pub device: String,
    /// The backing device or file.
    pub backing: String,
    pub state: VolumeState,
    pub size_bytes: u64,
    pub auto: bool,
}

/// The daemon's `Status()` reply plus its `Version` and `Backend` properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusView {
    pub version: String,
    pub backend: String,
    pub volumes: Vec<VolumeView>,
    pub pool_path: String,
    pub pool_size_bytes: u64,
    pub pool_used_bytes: u64,
    /// Ids of snapshot sets with a rollback scheduled for next boot.
    pub pending_merges: Vec<u32>,
    /// Ids of snapshot sets merging now.
    pub running_merges: Vec<u32>,
}

impl StatusView {
    /// The JSON body of `status --json`.
    pub fn to_json(&self) -> Value {
        let volumes: Vec<Value> = self
            .volumes
            .iter()
            .map(|v| {
                json!({
                    "name": v.name,
                    "device": v.device,
                    "backing": v.backing,
                    "state": v.state.as_str(),
                    "size_bytes": v.size_bytes,
                    "auto": v.auto,
                })
            })
            .collect();
        json!({
            "version": self.version,
            "backend": self.backend,
            "volumes": volumes,
            "pool": {
                "path": self.pool_path,
                "size_bytes": self.pool_size_bytes,
                "used_bytes": self.pool_used_bytes,
            },
            "pending_merges": self.pending_merges,
            "running_merges": self.running_merges,
        })
    }
}
