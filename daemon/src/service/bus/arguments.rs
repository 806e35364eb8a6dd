//! Parsing of method arguments: object paths and `a{sv}` option dictionaries.
//!
//! Every problem is an `InvalidArgument` that names the key or argument and says what was
//! expected, so a caller can fix the call without reading the source.

use std::collections::{BTreeMap, HashMap, HashSet};

use snapback_dbus::{options, snapshot_id, Error, SNAPSHOT_PATH_PREFIX};
use zbus::{ObjectPath, OwnedVariant};

use crate::backend::{SnapshotId, SnapshotRequest};
use crate::service::logic::calls::MetadataUpdate;

/// An `a{sv}` argument as zbus hands it to a method.
pub type OptionDict = HashMap<String, OwnedVariant>;

/// Longest description accepted, in bytes (the registry lives in a bounded metadata slot).
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
pub use crate::backend::sets::{
    MAX_USERDATA_ENTRIES, MAX_USERDATA_KEY_BYTES, MAX_USERDATA_VALUE_BYTES,
};

/// The set id of a snapshot object path; any other path is NotFound.
pub fn snapshot_set(path: &ObjectPath<'_>) -> Result<SnapshotId, Error> {
    snapshot_id(path.as_str()).ok_or_else(|| {
        Error::NotFound(format!(
            "{path} is not a snapshot set (snapshot sets are at {SNAPSHOT_PATH_PREFIX}<id>)"
        ))
    })
}

/// Arguments of `Manager.Snapshot`, checked and turned into a backend request.
pub fn snapshot_request(
    volumes: Vec<String>,
    description: String,
    options: &OptionDict,
) -> Result<SnapshotRequest, Error> {
    reject_unknown(options, options::SNAPSHOT_KEYS, "Snapshot")?;
    let mut seen = HashSet::new();
    for volume in &volumes {
        crate::config::validate_volume_name(volume).map_err(Error::InvalidArgument)?;
        if !seen.insert(volume.as_str()) {
            return Err(Error::InvalidArgument(format!("volume '{volume}' is listed twice")));
        }
    }
    check_description(&description)?;
    let userdata = match options.get(options::USERDATA) {
        Some(value) => string_dict(options::USERDATA, value)?,
        None => BTreeMap::new(),
    };
    check_userdata(&userdata)?;
    let important = match options.get(options::IMPORTANT) {
        Some(value) => {
            expect_signature(options::IMPORTANT, value, "b", "a boolean")?;
            bool::try_from(&**value).map_err(|e| bad_value(options::IMPORTANT, e))?
        }
        None => false,
    };
    let cow_size_bytes = match options.get(options::COW_SIZE) {
        Some(value) => {
            expect_signature(options::COW_SIZE, value, "t", "a uint64 byte count")?;
            let bytes = u64::try_from(&**value).map_err(|e| bad_value(options::COW_SIZE, e))?;
            if bytes == 0 {
                return Err(Error::InvalidArgument(
                    "option 'cow-size' must be greater than zero".into(),
                ));
            }
            Some(bytes)
        }
        None => None,
    };
    Ok(SnapshotRequest { volumes, description, userdata, important, cow_size_bytes })
}

/// Arguments of `UpdateMetadata`: description (empty = keep) and userdata to merge in.
pub fn metadata_update(
    id: SnapshotId,
    description: String,
    userdata: HashMap<String, String>,
    options: &OptionDict,
) -> Result<MetadataUpdate, Error> {
    reject_unknown(options, options::UPDATE_METADATA_KEYS, "UpdateMetadata")?;
    check_description(&description)?;
    let userdata: BTreeMap<String, String> = userdata.into_iter().collect();
    check_userdata(&userdata)?;
    let description = (!description.is_empty()).then_some(description);
    Ok(MetadataUpdate { id, description, userdata })
}

/// Methods that take an `a{sv}` but define no keys yet: any key is an error.
pub fn reject_unknown(options: &OptionDict, known: &[&str], method: &str) -> Result<(), Error> {
    let mut unknown: Vec<&str> =
        options.keys().map(String::as_str).filter(|key| !known.contains(key)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    let accepted = if known.is_empty() { "none".to_string() } else { known.join(", ") };
    Err(Error::InvalidArgument(format!(
        "unknown option '{}' for {method} (accepted: {accepted})",
        unknown.join("', '")
    )))
}

fn check_description(description: &str) -> Result<(), Error> {
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(Error::InvalidArgument(format!(
            "description is {} bytes, at most {MAX_DESCRIPTION_BYTES} are kept",
            description.len()
        )));
    }
    Ok(())
}

fn check_userdata(userdata: &BTreeMap<String, String>) -> Result<(), Error> {
    crate::backend::sets::check_userdata(userdata).map_err(Error::InvalidArgument)
}

fn expect_signature(
    key: &str,
    value: &OwnedVariant,
    want: &str,
    meaning: &str,
) -> Result<(), Error> {
    let got = value.value_signature().to_string();
    if got == want {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "option '{key}' must be {meaning} (type {want}), got type {got}"
        )))
    }
}

fn string_dict(key: &str, value: &OwnedVariant) -> Result<BTreeMap<String, String>, Error> {
    expect_signature(key, value, "a{ss}", "a string dictionary")?;
    let owned = value.try_clone().map_err(|e| bad_value(key, e))?;
    let map: HashMap<String, String> = HashMap::try_from(owned).map_err(|e| bad_value(key, e))?;
    Ok(map.into_iter().collect())
}

fn bad_value(key: &str, error: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("option '{key}' has an unusable value: {error}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use zbus::Variant;

    fn dict(entries: Vec<(&str, Variant<'static>)>) -> OptionDict {
        entries.into_iter().map(|(k, v)| (k.to_string(), v.try_into_owned().unwrap())).collect()
    }

    fn invalid_message(result: Result<SnapshotRequest, Error>) -> String {
        match result {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn all_options_are_read() {
        let mut userdata = HashMap::new();
        userdata.insert("dnf.transaction".to_string(), "42".to_string());
        let options = dict(vec![
            ("userdata", Variant::new(userdata)),
            ("important", Variant::new(true)),
            ("cow-size", Variant::new(1u64 << 30)),
        ]);
        let request =
            snapshot_request(vec!["root".into()], "before upgrade".into(), &options).unwrap();
        assert_eq!(request.volumes, vec!["root".to_string()]);
        assert_eq!(request.description, "before upgrade");
        assert_eq!(request.userdata.get("dnf.transaction").map(String::as_str), Some("42"));
        assert!(request.important);
        assert_eq!(request.cow_size_bytes, Some(1 << 30));
    }

    #[test]
    fn no_options_means_defaults() {
        let request = snapshot_request(vec![], String::new(), &OptionDict::new()).unwrap();
        assert_eq!(request, SnapshotRequest::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let options = dict(vec![("colour", Variant::new("red"))]);
        let message = invalid_message(snapshot_request(vec![], String::new(), &options));
        assert!(message.contains("'colour'"), "{message}");
        assert!(message.contains("cow-size"), "{message}");
    }

    #[test]
    fn wrong_types_are_named_with_both_signatures() {
        for (key, value, want) in [
            ("important", Variant::new("yes"), "type b"),
            ("cow-size", Variant::new(5i32), "type t"),
            ("userdata", Variant::new(vec!["a".to_string()]), "type a{ss}"),
        ] {
            let options = dict(vec![(key, value)]);
            let message = invalid_message(snapshot_request(vec![], String::new(), &options));
            assert!(message.contains(&format!("'{key}'")), "{message}");
            assert!(message.contains(want), "{message}");
            assert!(message.contains("got type"), "{message}");
        }
    }

    #[test]
    fn bad_volume_lists_are_refused() {
        let message = invalid_message(snapshot_request(
            vec!["a".into(), "a".into()],
            String::new(),
            &OptionDict::new(),
        ));
        assert!(message.contains("twice"), "{message}");
        let message = invalid_message(snapshot_request(
            vec!["../etc".into()],
            String::new(),
            &OptionDict::new(),
        ));
        assert!(message.contains("'.'"), "{message}");
    }

    #[test]
    fn zero_cow_size_and_huge_description_are_refused() {
        let options = dict(vec![("cow-size", Variant::new(0u64))]);
        assert!(invalid_message(snapshot_request(vec![], String::new(), &options)).contains("zero"));
        let long = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        assert!(invalid_message(snapshot_request(vec![], long, &OptionDict::new()))
            .contains("description"));
    }

    #[test]
    fn metadata_update_keeps_description_when_empty() {
        let update = metadata_update(
            3,
            String::new(),
            HashMap::from([("k".into(), "v".into())]),
            &OptionDict::new(),
        )
        .unwrap();
        assert_eq!(update.id, 3);
        assert_eq!(update.description, None);
        assert_eq!(update.userdata.get("k").map(String::as_str), Some("v"));
        let update = metadata_update(3, "new".into(), HashMap::new(), &OptionDict::new()).unwrap();
        assert_eq!(update.description.as_deref(), Some("new"));
        let options = dict(vec![("x", Variant::new(1u32))]);
        assert!(matches!(
            metadata_update(3, String::new(), HashMap::new(), &options),
            Err(Error::InvalidArgument(m)) if m.contains("'x'") && m.contains("none")
        ));
    }
}
