//! Keeping the snapshot objects on the bus in step with the backend.
//!
//! An object is added when a set first shows up (that emits ObjectManager's InterfacesAdded
//! and our SnapshotCreated) and removed when the backend no longer knows it (InterfacesRemoved
//! and SnapshotRemoved). Only the call that actually adds or removes the object emits the
//! signal, so concurrent refreshes never announce a set twice.
//!
//! Callers outside a mutation hold `Shared::mutations` while they read and publish, so a stale
//! read cannot re-publish a set that a concurrent Delete just removed.

use std::collections::BTreeSet;
use std::sync::Arc;

use snapback_dbus::{snapshot_path, Error, MANAGER_PATH};
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use super::manager::Manager;
use super::shared::Shared;
use super::snapshot_object::SnapshotObject;
use crate::backend::{SnapshotId, SnapshotSetInfo};

/// Re-read one set and publish it, or unpublish it when the backend says it is gone.
pub async fn refresh(
    shared: &Arc<Shared>,
    connection: &Connection,
    id: SnapshotId,
) -> Result<Option<SnapshotSetInfo>, Error> {
    match shared.call(move |backend| backend.snapshot(id)).await {
        Ok(info) => {
            publish(shared, connection, info.clone()).await;
            Ok(Some(info))
        }
        Err(Error::NotFound(_)) => {
            unpublish(shared, connection, id).await;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Re-read every set: publish the present ones, unpublish the vanished ones.
pub async fn refresh_all(
    shared: &Arc<Shared>,
    connection: &Connection,
) -> Result<Vec<SnapshotSetInfo>, Error> {
    let sets = shared.read(|backend| backend.snapshots()).await?;
    let live: BTreeSet<SnapshotId> = sets.iter().map(|s| s.id).collect();
    for info in &sets {
        publish(shared, connection, info.clone()).await;
    }
    let gone: Vec<SnapshotId> =
        shared.published().iter().filter(|id| !live.contains(id)).copied().collect();
    for id in gone {
        unpublish(shared, connection, id).await;
    }
    Ok(sets)
}

/// Put `info` on the bus: update the existing object, or add a new one.
pub async fn publish(shared: &Arc<Shared>, connection: &Connection, info: SnapshotSetInfo) {
    let id = info.id;
    let path = snapshot_path(id);
    let server = connection.object_server();
    if update_existing(connection, &path, info.clone()).await {
        return;
    }
    match server.at(&path, SnapshotObject::new(Arc::clone(shared), info.clone())).await {
        Ok(None) => {
            shared.published().insert(id);
            match manager_emitter(connection) {
                Ok(emitter) => {
                    if let Err(e) = Manager::snapshot_created(&emitter, path.as_ref()).await {
                        tracing::warn!(snapshot_id = id, "cannot emit SnapshotCreated: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot emit SnapshotCreated: {e}"),
            }
        }
        // Someone else added it between our look-up and our add: update theirs.
        Ok(Some(_)) => {
            update_existing(connection, &path, info).await;
        }
        Err(e) => tracing::warn!(snapshot_id = id, "cannot publish snapshot object: {e}"),
    }
}

/// Remove the set's object; emits SnapshotRemoved when this call removed it.
pub async fn unpublish(shared: &Arc<Shared>, connection: &Connection, id: SnapshotId) -> bool {
    let path = snapshot_path(id);
    let removed = connection.object_server().remove::<SnapshotObject, _>(&path).await.is_ok();
    shared.published().remove(&id);
    if removed {
        match manager_emitter(connection) {
            Ok(emitter) => {
                if let Err(e) = Manager::snapshot_removed(&emitter, path.as_ref()).await {
                    tracing::warn!(snapshot_id = id, "cannot emit SnapshotRemoved: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot emit SnapshotRemoved: {e}"),
        }
    }
    removed
}

/// Where the Manager's signals are sent from.
pub fn manager_emitter(connection: &Connection) -> zbus::Result<SignalEmitter<'static>> {
    SignalEmitter::new(connection, MANAGER_PATH)
}

async fn update_existing(
    connection: &Connection,
    path: &zbus::OwnedObjectPath,
    info: SnapshotSetInfo,
) -> bool {
    let Ok(iface) = connection.object_server().interface::<_, SnapshotObject>(path).await else {
        return false;
    };
    let object = iface.get().await;
    if let Err(e) = object.update(info, iface.signal_emitter()).await {
        tracing::warn!(path = %path, "cannot emit PropertiesChanged: {e}");
    }
    true
}
