//! Live events from snapbackd: the Manager's signals and the snapshot sets' PropertiesChanged,
//! read from one match rule over the service's object tree (no polling).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;

use serde_json::{json, Value};
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, ObjectPath, OwnedObjectPath, OwnedVariant};

use crate::error::Error;
use crate::model::SnapshotView;

/// One thing that happened in the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Created(OwnedObjectPath),
    Removed(OwnedObjectPath),
    RollbackScheduled(OwnedObjectPath),
    MergeFinished { path: OwnedObjectPath, ok: bool, message: String },
    Changed { path: OwnedObjectPath, changes: Vec<Change> },
}

impl Event {
    /// The snapshot set the event is about.
    pub fn path(&self) -> &OwnedObjectPath {
        match self {
            Event::Created(p) | Event::Removed(p) | Event::RollbackScheduled(p) => p,
            Event::MergeFinished { path, .. } | Event::Changed { path, .. } => path,
        }
    }

    /// The set's id (None for a path that is not a set's).
    pub fn id(&self) -> Option<u32> {
        snapback_dbus::snapshot_id(self.path().as_str())
    }
}

/// A new value of one `org.snapback.Snapback1.Snapshot` property.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Description(String),
    State(snapback_dbus::SetState),
    UsedBytes(u64),
    SizeBytes(u64),
    MergeProgress(f64),
    Userdata(BTreeMap<String, String>),
    Important(bool),
}

impl Change {
    /// Decodes a property by D-Bus name; None for properties that cannot change or are unknown
    /// (a newer daemon may add some: they are ignored, not errors).
    fn decode(name: &str, value: OwnedVariant) -> Option<Change> {
        Some(match name {
            "Description" => Change::Description(String::try_from(value).ok()?),
            "State" => Change::State(String::try_from(value).ok()?.parse().ok()?),
            "UsedBytes" => Change::UsedBytes(u64::try_from(value).ok()?),
            "SizeBytes" => Change::SizeBytes(u64::try_from(value).ok()?),
            "MergeProgress" => Change::MergeProgress(f64::try_from(value).ok()?),
            "Userdata" => Change::Userdata(
                HashMap::<String, String>::try_from(value).ok()?.into_iter().collect(),
            ),
            "Important" => Change::Important(bool::try_from(value).ok()?),
            _ => return None,
        })
    }

    /// Applies the change to a view of the set.
    pub fn apply(&self, view: &mut SnapshotView) {
        match self {
            Change::Description(v) => view.description = v.clone(),
            Change::State(v) => view.state = *v,
            Change::UsedBytes(v) => view.used_bytes = *v,
            Change::SizeBytes(v) => view.size_bytes = *v,
            Change::MergeProgress(v) => view.merge_progress = *v,
            Change::Userdata(v) => view.userdata = v.clone(),
            Change::Important(v) => view.important = *v,
        }
    }

    /// `(json key, value)` with the keys of [`SnapshotView::to_json`].
    pub fn to_json(&self) -> (&'static str, Value) {
        match self {
            Change::Description(v) => ("description", json!(v)),
            Change::State(v) => ("state", json!(v.as_str())),
            Change::UsedBytes(v) => ("used_bytes", json!(v)),
            Change::SizeBytes(v) => ("size_bytes", json!(v)),
            Change::MergeProgress(v) => ("merge_progress", json!(v)),
            Change::Userdata(v) => ("userdata", json!(v)),
            Change::Important(v) => ("important", json!(v)),
        }
    }
}

/// A subscription to every event of the service.
#[derive(Debug)]
pub struct Events {
    stream: MessageStream,
}

impl Events {
    /// Subscribes; call before reading the initial state so that nothing is missed in between.
    pub async fn subscribe(conn: &Connection) -> Result<Events, Error> {
        // No `sender=` in the rule: zbus matches it locally against the unique name, so a
        // well-known name would never match. The path namespace is the service's own.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .path_namespace(snapback_dbus::MANAGER_PATH)
            .build()?;
        let stream = MessageStream::for_match_rule(rule, conn, None).await?;
        Ok(Events { stream })
    }

    /// The next event; None when the connection closed.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            let msg = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(Pin::new(&mut self.stream), cx)
            })
            .await?;
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => return Some(Err(e.into())),
            };
            match decode(&msg) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Turns a signal message into an event; Ok(None) for signals that are not ours to show.
fn decode(msg: &zbus::Message) -> Result<Option<Event>, Error> {
    let header = msg.header();
    let (Some(interface), Some(member), Some(path)) =
        (header.interface(), header.member(), header.path())
    else {
        return Ok(None);
    };
    let body = msg.body();
    let bad = |e: zbus::Error| Error::Protocol(format!("signal {interface}.{member}: {e}"));
    if interface.as_str() == snapback_dbus::MANAGER_INTERFACE {
        let event = match member.as_str() {
            "SnapshotCreated" => {
                Event::Created(body.deserialize::<ObjectPath<'_>>().map_err(bad)?.into())
            }
            "SnapshotRemoved" => {
                Event::Removed(body.deserialize::<ObjectPath<'_>>().map_err(bad)?.into())
            }
            "RollbackScheduled" => {
                Event::RollbackScheduled(body.deserialize::<ObjectPath<'_>>().map_err(bad)?.into())
            }
            "MergeFinished" => {
                let (path, ok, message): (ObjectPath<'_>, bool, String) =
                    body.deserialize().map_err(bad)?;
                Event::MergeFinished { path: path.into(), ok, message }
            }
            _ => return Ok(None),
        };
        return Ok(Some(event));
    }
    if interface.as_str() == "org.freedesktop.DBus.Properties"
        && member.as_str() == "PropertiesChanged"
    {
        let (iface, changed, _invalidated): (String, HashMap<String, OwnedVariant>, Vec<String>) =
            body.deserialize().map_err(bad)?;
        if iface != snapback_dbus::SNAPSHOT_INTERFACE {
            return Ok(None);
        }
        // Sorted by property name, so that output does not depend on hash order.
        let sorted: BTreeMap<String, OwnedVariant> = changed.into_iter().collect();
        let changes: Vec<Change> =
            sorted.into_iter().filter_map(|(name, value)| Change::decode(&name, value)).collect();
        if changes.is_empty() {
            return Ok(None);
        }
        return Ok(Some(Event::Changed { path: path.to_owned().into(), changes }));
    }
    Ok(None)
}
