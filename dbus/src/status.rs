//! The typed form of `Manager.Status() → a{sv}`.
//!
//! Wire shape (keys are exact):
//!
//! ```text
//! backend  s          "kernel" | "userspace"
//! version  s          daemon version
//! pool     a{sv}      path s, size t, used t            (bytes)
//! volumes  a{sa{sv}}  name → device s ("" while not assembled), backing s, state s,
//!                            size t, auto b, snapshots ao
//! pending  ao         sets with a scheduled rollback
//! merging  ao         sets whose merge runs now
//! ```

use std::collections::HashMap;

use zbus::{DeserializeDict, OwnedObjectPath, SerializeDict, Type};

/// Reply of `Status()`.
#[derive(Debug, Clone, PartialEq, Default, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct Status {
    pub backend: String,
    pub version: String,
    pub pool: PoolStatus,
    pub volumes: HashMap<String, VolumeStatus>,
    pub pending: Vec<OwnedObjectPath>,
    pub merging: Vec<OwnedObjectPath>,
}

/// `pool` entry of [`Status`].
#[derive(Debug, Clone, PartialEq, Default, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct PoolStatus {
    pub path: String,
    /// Bytes of COW space the pool holds.
    pub size: u64,
    /// Bytes of it in use.
    pub used: u64,
}

/// One `volumes` entry of [`Status`].
#[derive(Debug, Clone, PartialEq, Default, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct VolumeStatus {
    /// Block device to mount instead of the backing one; empty while not assembled.
    pub device: String,
    /// The backing block device or file from the configuration.
    pub backing: String,
    /// `active`, `merging`, `merge-scheduled` or `inactive`.
    pub state: String,
    /// Bytes.
    pub size: u64,
    /// Part of a `Snapshot` call with an empty volume list.
    pub auto: bool,
    /// Snapshot sets that cover this volume.
    pub snapshots: Vec<OwnedObjectPath>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use zbus::wire::{serialized::Context, to_bytes, LE};

    #[test]
    fn status_is_an_a_sv_dict_and_round_trips() {
        assert_eq!(Status::SIGNATURE.to_string(), "a{sv}");
        let mut volumes = HashMap::new();
        volumes.insert(
            "root".to_string(),
            VolumeStatus {
                device: "/dev/loop3".into(),
                backing: "/var/tmp/root.img".into(),
                state: "active".into(),
                size: 1 << 30,
                auto: true,
                snapshots: vec![crate::snapshot_path(1)],
            },
        );
        let status = Status {
            backend: "userspace".into(),
            version: "0.1.0".into(),
            pool: PoolStatus { path: "/var/tmp/pool".into(), size: 4 << 30, used: 1 << 20 },
            volumes,
            pending: vec![],
            merging: vec![crate::snapshot_path(1)],
        };
        let bytes = to_bytes(Context::new(LE, 0), &status).unwrap();
        let (decoded, _): (Status, _) = bytes.deserialize().unwrap();
        assert_eq!(decoded, status);
    }
}
