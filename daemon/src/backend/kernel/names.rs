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

/// Two volumes whose stacks would share a dm name: `name` is the origin of `origin_of` and,
/// at the same time, the device `role` of `volume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameClash {
    pub name: String,
    pub volume: String,
    pub role: Role,
    pub origin_of: String,
}

impl std::fmt::Display for NameClash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Origin => "origin device".to_string(),
            Role::Real => "'-real' device".to_string(),
            Role::Cow(id) => format!("COW device in snapshot set {id}"),
            Role::Snapshot(id) => format!("snapshot device in snapshot set {id}"),
        };
        write!(
            f,
            "volumes '{}' and '{}' would both use the device-mapper name {} ('{}' for its origin \
             device, '{}' for its {role}); rename one of them",
            self.volume, self.origin_of, self.name, self.origin_of, self.volume
        )
    }
}

/// Whether two different volumes' stacks can ever share a dm name, and which name.
///
/// Only an origin name can be another volume's name. Every other name ends in `real`, `cow`
/// or a digit, which tells its role, and the volume is what is left once that role's suffix
/// is cut off (an id has no `-`, so `-<id>` starts at the last `-`): two different volumes
/// never share a `-real`, `-<id>-cow` or `-<id>` name. An origin `snapback-<b>` is a device
/// of `<a>` exactly when `<b>` is `<a>-real`, `<a>-<id>-cow` or `<a>-<id>`, with `<id>`
/// written as [`dm_name`] writes ids (no sign, no leading zero, in range of [`SnapshotId`]):
/// `data-01` or `data-realm` are no one's device but their own.
pub fn clash(a: &str, b: &str) -> Option<NameClash> {
    if a == b {
        return None;
    }
    [(a, b), (b, a)].into_iter().find_map(|(volume, other)| {
        let rest = other.strip_prefix(volume)?.strip_prefix('-')?;
        let role = if rest == "real" {
            Role::Real
        } else if let Some(id) = rest.strip_suffix("-cow") {
            Role::Cow(written_id(id)?)
        } else {
            Role::Snapshot(written_id(rest)?)
        };
        let name = dm_name(volume, role);
        debug_assert_eq!(name, dm_name(other, Role::Origin));
        Some(NameClash { name, volume: volume.to_string(), role, origin_of: other.to_string() })
    })
}

/// `text` as an id, if it is exactly how [`dm_name`] writes that id.
fn written_id(text: &str) -> Option<SnapshotId> {
    let id: SnapshotId = text.parse().ok()?;
    (id.to_string() == text).then_some(id)
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
    fn every_role_of_one_volume_can_be_the_origin_of_another() {
        let cases = [
            ("data", "data-real", Role::Real, "snapback-data-real"),
            ("data", "data-1", Role::Snapshot(1), "snapback-data-1"),
            ("data", "data-0", Role::Snapshot(0), "snapback-data-0"),
            (
                "data",
                "data-4294967295",
                Role::Snapshot(SnapshotId::MAX),
                "snapback-data-4294967295",
            ),
            ("data", "data-7-cow", Role::Cow(7), "snapback-data-7-cow"),
            ("var-log", "var-log-12-cow", Role::Cow(12), "snapback-var-log-12-cow"),
            ("data-", "data--1", Role::Snapshot(1), "snapback-data--1"),
        ];
        for (volume, other, role, name) in cases {
            let want = NameClash {
                name: name.to_string(),
                volume: volume.to_string(),
                role,
                origin_of: other.to_string(),
            };
            // Whichever order the configuration declares them in.
            assert_eq!(clash(volume, other).as_ref(), Some(&want), "{volume} / {other}");
            assert_eq!(clash(other, volume).as_ref(), Some(&want), "{other} / {volume}");
            assert_eq!(dm_name(volume, role), name);
            assert_eq!(dm_name(other, Role::Origin), name);
        }
        let message = clash("data", "data-1").expect("data-1 clashes").to_string();
        assert_eq!(
            message,
            "volumes 'data' and 'data-1' would both use the device-mapper name snapback-data-1 \
             ('data-1' for its origin device, 'data' for its snapshot device in snapshot set 1); \
             rename one of them"
        );
    }

    #[test]
    fn near_misses_share_no_name() {
        for (a, b) in [
            ("data", "data-01"), // no id is written with a leading zero
            ("data", "data-realm"),
            ("data", "data-real2"),
            ("data", "data-cow"), // a COW name has an id before `-cow`
            ("data", "data-1-cow2"),
            ("data", "data-1-cow-1"),
            ("data", "data--1"),         // ids are unsigned
            ("data", "data-4294967296"), // past the largest id
            ("data", "data_1"),
            ("data", "Data-1"), // dm names are case-sensitive
            ("data", "dat-1"),
            ("data", "data"), // one volume (duplicates are the config's to refuse)
            ("data-1", "data-2"),
            ("data-real", "data-1"),
        ] {
            assert_eq!(clash(a, b), None, "{a} / {b}");
            assert_eq!(clash(b, a), None, "{b} / {a}");
        }
    }

    /// `clash` against the names themselves: over every volume name built from a few tricky
    /// pieces, two volumes share a dm name exactly when `clash` says so, and it is that name.
    #[test]
    fn clash_finds_every_shared_name_and_only_those() {
        let pieces = ["-", "1", "0", "real", "cow"];
        let mut volumes = vec!["a".to_string()];
        let mut last = volumes.clone();
        for _ in 0..4 {
            last =
                last.iter().flat_map(|v| pieces.iter().map(move |p| format!("{v}{p}"))).collect();
            volumes.extend(last.iter().cloned());
        }
        // A snapshot name can only equal another volume's origin with an id written in that
        // volume's name: every run of digits in the names, and a few more.
        let mut ids: Vec<SnapshotId> = vec![0, 1, 2, 3];
        for v in &volumes {
            for run in v.split(|c: char| !c.is_ascii_digit()).filter(|r| !r.is_empty()) {
                ids.extend(run.parse::<SnapshotId>().ok());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut owners: std::collections::HashMap<String, Vec<&str>> = Default::default();
        for v in &volumes {
            let roles = [Role::Origin, Role::Real]
                .into_iter()
                .chain(ids.iter().flat_map(|&id| [Role::Cow(id), Role::Snapshot(id)]));
            for role in roles {
                owners.entry(dm_name(v, role)).or_default().push(v);
            }
        }
        let mut shared: std::collections::HashMap<(&str, &str), String> = Default::default();
        for (name, vs) in &owners {
            assert!(vs.len() <= 2, "{name} is a name of {vs:?}");
            if let [a, b] = vs[..] {
                assert_ne!(a, b, "{name} twice for one volume");
                shared.insert((a.min(b), a.max(b)), name.clone());
            }
        }
        assert!(shared.len() > 100, "the pieces make clashes to find: {}", shared.len());
        for (i, a) in volumes.iter().enumerate() {
            for b in &volumes[i + 1..] {
                let key = (a.as_str().min(b.as_str()), a.as_str().max(b.as_str()));
                assert_eq!(clash(a, b).map(|c| c.name), shared.get(&key).cloned(), "{a} / {b}");
            }
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
