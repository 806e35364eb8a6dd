//! The D-Bus side: the interfaces and the one owner of the connection.
//!
//! [`Manager`] and [`SnapshotObject`] are thin: they parse a call ([`arguments`]), hand it
//! to the logic (`service::logic`) and reply with what it returns. Everything the service
//! shows on its own — adding and removing snapshot objects, PropertiesChanged, and the
//! Manager's signals — is done by [`run`], which applies the logic's lists of changes in the
//! order they come and acknowledges each list once it is on the bus.

pub mod arguments;
pub mod manager;
pub mod snapshot;

use std::sync::Arc;

use snapback_dbus::{snapshot_path, MANAGER_PATH};
use tokio::sync::mpsc::UnboundedReceiver;
use zbus::fdo::ObjectManager;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

pub use manager::Manager;
pub use snapshot::SnapshotObject;

use super::logic::changes::Batch;
use super::logic::{Change, Service};

/// Serves the Manager (and the ObjectManager over the snapshot objects) on `connection`.
pub async fn export(connection: &Connection, service: &Arc<Service>) -> zbus::Result<()> {
    let server = connection.object_server();
    server.at(MANAGER_PATH, Manager::new(Arc::clone(service))).await?;
    server.at(MANAGER_PATH, ObjectManager).await?;
    Ok(())
}

/// Applies the logic's changes until the service drops its queue.
pub async fn run(
    connection: Connection,
    service: Arc<Service>,
    mut batches: UnboundedReceiver<Batch>,
) {
    while let Some(batch) = batches.recv().await {
        for change in batch.changes {
            apply(&connection, &service, change).await;
        }
        // The caller may have given up waiting (its client went away): nothing to do then.
        let _ = batch.applied.send(());
    }
}

/// One change. A failure to show it is logged: the service's state is already what it is,
/// and the periodic re-read shows it again where it can.
async fn apply(connection: &Connection, service: &Arc<Service>, change: Change) {
    let server = connection.object_server();
    let signals = manager_emitter(connection);
    match change {
        Change::Created(info) => {
            let id = info.id;
            let path = snapshot_path(id);
            match server.at(&path, SnapshotObject::new(Arc::clone(service), info)).await {
                Ok(None) => {
                    let signal = Manager::snapshot_created(&signals, path.as_ref());
                    if let Err(e) = signal.await {
                        tracing::warn!(snapshot_id = id, "cannot emit SnapshotCreated: {e}");
                    }
                }
                Ok(Some(_)) => tracing::warn!(snapshot_id = id, "snapshot object already there"),
                Err(e) => tracing::warn!(snapshot_id = id, "cannot publish snapshot object: {e}"),
            }
        }
        Change::Changed { info, properties } => {
            let id = info.id;
            let path = snapshot_path(id);
            match server.interface::<_, SnapshotObject>(&path).await {
                Ok(object) => {
                    let emitter = object.signal_emitter();
                    if let Err(e) = object.get().await.set(info, &properties, emitter).await {
                        tracing::warn!(snapshot_id = id, "cannot emit PropertiesChanged: {e}");
                    }
                }
                Err(e) => tracing::warn!(snapshot_id = id, "no snapshot object to update: {e}"),
            }
        }
        Change::Removed(id) => {
            let path = snapshot_path(id);
            match server.remove::<SnapshotObject, _>(&path).await {
                Err(zbus::Error::InterfaceNotFound) => {
                    tracing::warn!(snapshot_id = id, "no snapshot object to remove");
                    return;
                }
                // Removed; only InterfacesRemoved failed to go out.
                Err(e) => tracing::warn!(snapshot_id = id, "cannot emit InterfacesRemoved: {e}"),
                Ok(_) => {}
            }
            let signal = Manager::snapshot_removed(&signals, path.as_ref());
            if let Err(e) = signal.await {
                tracing::warn!(snapshot_id = id, "cannot emit SnapshotRemoved: {e}");
            }
        }
        Change::RollbackScheduled(id) => {
            let path = snapshot_path(id);
            let signal = Manager::rollback_scheduled(&signals, path.as_ref());
            if let Err(e) = signal.await {
                tracing::warn!(snapshot_id = id, "cannot emit RollbackScheduled: {e}");
            }
        }
        Change::MergeFinished { id, ok, message } => {
            let path = snapshot_path(id);
            let signal = Manager::merge_finished(&signals, path.as_ref(), ok, &message);
            if let Err(e) = signal.await {
                tracing::warn!(snapshot_id = id, "cannot emit MergeFinished: {e}");
            }
        }
    }
}

/// Where the Manager's signals come from.
fn manager_emitter(connection: &Connection) -> SignalEmitter<'static> {
    match SignalEmitter::new(connection, MANAGER_PATH) {
        Ok(emitter) => emitter,
        Err(_) => unreachable!("MANAGER_PATH is a valid object path"),
    }
}
