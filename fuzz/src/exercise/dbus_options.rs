//! Method arguments from the bus, as zbus decodes a message body and snapbackd's service
//! turns the `a{sv}` options into typed requests (`service::bus::arguments`), plus the one `a{sv}`
//! a client decodes, `Status()`'s reply (`snapback_dbus::Status`).
//!
//! Input: one byte (bit 7: big-endian, as a message may be; the rest picks the method), then
//! the body in the D-Bus wire format:
//! - 0 `Snapshot(as s a{sv})` → `options::snapshot_request`;
//! - 1 `Rollback(o a{sv})` → the keys Rollback accepts;
//! - 2 `UpdateMetadata(o s a{ss} a{sv})` → `options::metadata_update`;
//! - 3 `Status() → a{sv}`, decoded by a client.
//!
//! A request that is accepted must be within every limit the backend relies on.

use std::collections::{BTreeMap, HashMap, HashSet};

use snapback_dbus::{options as keys, Status};
use snapbackd::backend::sets::{
    MAX_USERDATA_ENTRIES, MAX_USERDATA_KEY_BYTES, MAX_USERDATA_VALUE_BYTES,
};
use snapbackd::config::validate_volume_name;
use snapbackd::service::bus::arguments::{self as options, OptionDict, MAX_DESCRIPTION_BYTES};
use zbus::wire::serialized::{Context, Data};
use zbus::wire::{BE, LE};
use zbus::OwnedObjectPath;

fn within_limits(description: &str, userdata: &BTreeMap<String, String>) {
    assert!(description.len() <= MAX_DESCRIPTION_BYTES, "description of {}", description.len());
    assert!(userdata.len() <= MAX_USERDATA_ENTRIES, "{} userdata entries", userdata.len());
    for (key, value) in userdata {
        assert!(!key.is_empty() && key.len() <= MAX_USERDATA_KEY_BYTES, "userdata key {key:?}");
        assert!(value.len() <= MAX_USERDATA_VALUE_BYTES, "userdata value of {key:?}");
    }
}

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else { return };
    let endian = if selector & 0x80 != 0 { BE } else { LE };
    let body = Data::new(body, Context::new(endian, 0));
    match (selector & 0x7f) % 4 {
        0 => {
            let Ok(((volumes, description, dict), _)) =
                body.deserialize::<(Vec<String>, String, OptionDict)>()
            else {
                return;
            };
            let Ok(request) = options::snapshot_request(volumes, description, &dict) else {
                return;
            };
            let mut seen = HashSet::new();
            for volume in &request.volumes {
                validate_volume_name(volume).expect("accepted volume names are valid");
                assert!(seen.insert(volume), "volume {volume} accepted twice");
            }
            within_limits(&request.description, &request.userdata);
            assert_ne!(request.cow_size_bytes, Some(0), "a zero cow-size was accepted");
            for key in dict.keys() {
                assert!(keys::SNAPSHOT_KEYS.contains(&key.as_str()), "unknown key {key} accepted");
            }
        }
        1 => {
            let Ok(((_path, dict), _)) = body.deserialize::<(OwnedObjectPath, OptionDict)>() else {
                return;
            };
            let accepted = options::reject_unknown(&dict, keys::ROLLBACK_KEYS, "Rollback").is_ok();
            assert_eq!(accepted, dict.is_empty(), "Rollback takes no option yet");
        }
        2 => {
            let Ok(((_path, description, userdata, dict), _)) =
                body.deserialize::<(OwnedObjectPath, String, HashMap<String, String>, OptionDict)>(
                )
            else {
                return;
            };
            let Ok(update) = options::metadata_update(1, description, userdata, &dict) else {
                return;
            };
            let (description, userdata) = (update.description, update.userdata);
            assert_ne!(description.as_deref(), Some(""), "an empty description replaces");
            within_limits(description.as_deref().unwrap_or_default(), &userdata);
        }
        _ => {
            let _ = body.deserialize::<Status>();
        }
    }
}
