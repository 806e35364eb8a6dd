//! Device-mapper names and uuids of every device snapback creates, from one place.
//!
//! Names are what administrators see (`/dev/mapper/snapback-root`), so they stay short and
//! readable. Uuids are what recovery trusts: they carry a format-version prefix, the pool's
//! uuid and the device's role, separated by `.`, a character volume names may not contain, so
//! a uuid parses back without ambiguity. Bump [`UUID_PREFIX`] when the stack layout changes.

use crate::backend::SnapshotId;

/// Format-version prefix of every uuid snapback puts on a dm device.
pub const UUID_PREFIX: &str = "SNAPBACK1";

/// Longest dm name the kernel accepts, without the terminating NUL (DM_NAME_LEN - 1).
const MAX_NAME_LEN: usize = 127;
/// Longest dm uuid the kernel accepts, without the terminating NUL (DM_UUID_LEN - 1).
const MAX_UUID_LEN: usize = 128;

/// What a device is for in a volume's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The device users mount: `snapshot-origin`, `snapshot-merge`, or plain `linear`.
    Origin,
    /// `linear` over the backing device; the origin and snapshots read the real data here.
    Real,
    /// `linear` over the snapshot's extents in the pool.
    Cow(SnapshotId),
    /// The `snapshot` target of one snapshot set member.
    Snapshot(SnapshotId),
}

/// The dm name of a device; `volume` must already be validated (letters, digits, `-`, `_`).
pub fn dm_name(volume: &str, role: Role) -> String {
    match role {
        Role::Origin => format!("snapback-{volume}"),
        Role::Real => format!("snapback-{volume}-real"),
        Role::Cow(id) => format!("snapback-{volume}-{id}-cow"),
        Role::Snapshot(id) => format!("snapback-{volume}-{id}"),
    }
}

/// The dm uuid of a device.
pub fn dm_uuid(pool_uuid: &str, volume: &str, role: Role) -> String {
    let role = match role {
        Role::Origin => "origin".to_string(),
        Role::Real => "real".to_string(),
        Role::Cow(id) => format!("cow-{id}"),
        Role::Snapshot(id) => format!("snap-{id}"),
    };
    format!("{UUID_PREFIX}.{pool_uuid}.{volume}.{role}")
}

/// A uuid of ours, taken apart again (recovery after a crash lists devices by uuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUuid {
    pub pool_uuid: String,
    pub volume: String,
    pub role: Role,
}

/// Parses a dm uuid; `None` for devices that are not snapback's (or of another format version).
pub fn parse_uuid(uuid: &str) -> Option<ParsedUuid> {
    let mut parts = uuid.split('.');
    if parts.next()? != UUID_PREFIX {
        return None;
    }
    let pool_uuid = parts.next()?.to_string();
    let volume = parts.next()?.to_string();
    let role = parts.next()?;
    if parts.next().is_some() || pool_uuid.is_empty() || volume.is_empty() {
        return None;
    }
    let role = match role {
        "origin" => Role::Origin,
        "real" => Role::Real,
        other => {
            let (kind, id) = other.split_once('-')?;
            let id: SnapshotId = id.parse().ok()?;
            match kind {
                "cow" => Role::Cow(id),
                "snap" => Role::Snapshot(id),
                _ => return None,
            }
        }
    };
    Some(ParsedUuid { pool_uuid, volume, role })
}

/// Checks that every name and uuid of a volume's stack fits the kernel's limits.
pub fn check_lengths(pool_uuid: &str, volume: &str) -> Result<(), String> {
    let worst = Role::Snapshot(SnapshotId::MAX);
    let cow = Role::Cow(SnapshotId::MAX);
    let name = dm_name(volume, cow).len().max(dm_name(volume, worst).len());
    let uuid = dm_uuid(pool_uuid, volume, cow).len();
    if name > MAX_NAME_LEN {
        return Err(format!(
            "volume name {volume:?} is too long for device-mapper names ({name} > {MAX_NAME_LEN})"
        ));
    }
    if uuid > MAX_UUID_LEN {
        return Err(format!(
            "volume name {volume:?} is too long for device-mapper uuids ({uuid} > {MAX_UUID_LEN})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable() {
        assert_eq!(dm_name("root", Role::Origin), "snapback-root");
        assert_eq!(dm_name("root", Role::Real), "snapback-root-real");
        assert_eq!(dm_name("var-log", Role::Cow(7)), "snapback-var-log-7-cow");
        assert_eq!(dm_name("var-log", Role::Snapshot(7)), "snapback-var-log-7");
    }

    #[test]
    fn uuids_round_trip_even_with_dashes_in_volume_names() {
        for role in [Role::Origin, Role::Real, Role::Cow(3), Role::Snapshot(4_000_000_000)] {
            let uuid = dm_uuid("6f1c", "var-log_2", role);
            assert!(uuid.starts_with("SNAPBACK1."));
            let parsed = parse_uuid(&uuid).expect("our own uuid parses");
            assert_eq!(parsed.pool_uuid, "6f1c");
            assert_eq!(parsed.volume, "var-log_2");
            assert_eq!(parsed.role, role);
        }
    }

    #[test]
    fn foreign_and_malformed_uuids_are_not_ours() {
        for uuid in [
            "LVM-abcdef",
            "SNAPBACK0.p.v.origin",
            "SNAPBACK1.p.v",
            "SNAPBACK1.p.v.cow-x",
            "SNAPBACK1.p.v.snap-1.extra",
            "SNAPBACK1..v.origin",
            "SNAPBACK1.p.v.mirror-1",
        ] {
            assert_eq!(parse_uuid(uuid), None, "{uuid}");
        }
    }

    #[test]
    fn long_volume_names_are_refused() {
        let pool = "0123456789abcdef0123456789abcdef";
        assert!(check_lengths(pool, "root").is_ok());
        let long = "v".repeat(120);
        let err = check_lengths(pool, &long).expect_err("too long");
        assert!(err.contains("too long"), "{err}");
    }
}
