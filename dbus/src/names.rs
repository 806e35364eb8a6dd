//! Names and fixed strings of API v1.

use zbus::{ObjectPath, OwnedObjectPath};

/// Well-known bus name of the service (system bus).
pub const BUS_NAME: &str = "org.snapback.Snapback1";
/// Object path of the manager (also the ObjectManager root).
pub const MANAGER_PATH: &str = "/org/snapback/Snapback1";
/// Interface of the manager object.
pub const MANAGER_INTERFACE: &str = "org.snapback.Snapback1.Manager";
/// Interface of each snapshot set object.
pub const SNAPSHOT_INTERFACE: &str = "org.snapback.Snapback1.Snapshot";
/// Prefix of every error name.
pub const ERROR_PREFIX: &str = "org.snapback.Snapback1.Error";
/// Parent of the snapshot set objects.
pub const SNAPSHOT_PATH_PREFIX: &str = "/org/snapback/Snapback1/snapshot/";

/// polkit action checked for `Snapshot` and `UpdateMetadata`.
pub const ACTION_SNAPSHOT: &str = "org.snapback.snapshot";
/// polkit action checked for `Rollback` and `CancelRollback`.
pub const ACTION_ROLLBACK: &str = "org.snapback.rollback";
/// polkit action checked for `Delete`.
pub const ACTION_DELETE: &str = "org.snapback.delete";

/// polkit action checked for `OpenVolume` (reading a snapshot's old data).
pub const ACTION_OPEN: &str = "org.snapback.open";

/// Option keys of `Snapshot(as s a{sv})`.
pub mod options {
    /// `a{ss}`: free-form key/value pairs stored with the set (e.g. the dnf transaction id).
    pub const USERDATA: &str = "userdata";
    /// `b`: exempt from automatic cleanup.
    pub const IMPORTANT: &str = "important";
    /// `t`: initial COW size per volume, in bytes.
    pub const COW_SIZE: &str = "cow-size";
    /// Every key `Snapshot` accepts.
    pub const SNAPSHOT_KEYS: &[&str] = &[USERDATA, IMPORTANT, COW_SIZE];
    /// Every key `Rollback` accepts (none yet; unknown keys are InvalidArgument).
    pub const ROLLBACK_KEYS: &[&str] = &[];
    /// Every key `OpenVolume` accepts (none yet).
    pub const OPEN_VOLUME_KEYS: &[&str] = &[];
    /// Every key `UpdateMetadata` accepts (none yet).
    pub const UPDATE_METADATA_KEYS: &[&str] = &[];
}

/// Replies of `Rollback`.
pub mod rollback {
    /// The merge runs now.
    pub const MERGING: &str = "merging";
    /// An origin is busy: the merge starts when the volume is next assembled (next boot).
    pub const SCHEDULED: &str = "scheduled";
}

/// Object path of snapshot set `id`.
pub fn snapshot_path(id: u32) -> OwnedObjectPath {
    // A prefix of valid path elements plus decimal digits is always a valid object path.
    match ObjectPath::try_from(format!("{SNAPSHOT_PATH_PREFIX}{id}")) {
        Ok(path) => path.into(),
        Err(_) => unreachable!("decimal ids make valid object paths"),
    }
}

/// The set id named by `path`, or None when `path` is not a snapshot set path.
pub fn snapshot_id(path: &str) -> Option<u32> {
    let digits = path.strip_prefix(SNAPSHOT_PATH_PREFIX)?;
    // Reject "+1", "01" and the like so that one id has exactly one path.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_paths_round_trip() {
        assert_eq!(snapshot_path(7).as_str(), "/org/snapback/Snapback1/snapshot/7");
        assert_eq!(snapshot_id("/org/snapback/Snapback1/snapshot/7"), Some(7));
        assert_eq!(snapshot_id(snapshot_path(u32::MAX).as_str()), Some(u32::MAX));
    }

    #[test]
    fn non_snapshot_paths_have_no_id() {
        for path in [
            "/org/snapback/Snapback1",
            "/org/snapback/Snapback1/snapshot/",
            "/org/snapback/Snapback1/snapshot/x",
            "/org/snapback/Snapback1/snapshot/07",
            "/org/snapback/Snapback1/snapshot/+7",
            "/org/snapback/Snapback1/snapshot/99999999999",
            "/",
        ] {
            assert_eq!(snapshot_id(path), None, "{path}");
        }
    }
}
