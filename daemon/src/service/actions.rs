//! The mutating operations, shared by the Manager and the Snapshot objects.
//!
//! Each one: check the arguments, check that the set exists (reads are open, so this reveals
//! nothing), ask polkit about the caller, then take the mutation lock and call the backend.
//! A refusal at any step changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use snapback_dbus::{
    options as keys, snapshot_id, snapshot_path, Error, ACTION_DELETE, ACTION_ROLLBACK,
    ACTION_SNAPSHOT, SNAPSHOT_PATH_PREFIX,
};
use zbus::message::Header;
use zbus::{Connection, ObjectPath, OwnedObjectPath};

use super::logging::{
    MESSAGE_ID_ROLLBACK_SCHEDULED, MESSAGE_ID_ROLLBACK_STARTED, MESSAGE_ID_SNAPSHOT_CREATED,
};
use super::manager::Manager;
use super::options::{self, OptionDict};
use super::publish::{manager_emitter, publish, refresh, unpublish};
use super::shared::Shared;
use crate::backend::{RollbackOutcome, SnapshotId, SnapshotSetInfo};

/// The set id of a snapshot object path; any other path is NotFound.
pub fn resolve(path: &ObjectPath<'_>) -> Result<SnapshotId, Error> {
    snapshot_id(path.as_str()).ok_or_else(|| {
        Error::NotFound(format!(
            "{path} is not a snapshot set (snapshot sets are at {SNAPSHOT_PATH_PREFIX}<id>)"
        ))
    })
}

async fn existing(shared: &Shared, id: SnapshotId) -> Result<SnapshotSetInfo, Error> {
    shared.call(move |backend| backend.snapshot(id)).await
}

pub async fn snapshot(
    shared: &Arc<Shared>,
    connection: &Connection,
    header: &Header<'_>,
    volumes: Vec<String>,
    description: String,
    options: &OptionDict,
) -> Result<OwnedObjectPath, Error> {
    let request = options::snapshot_request(volumes, description, options)?;
    shared.authorizer.check(header, ACTION_SNAPSHOT).await?;
    let _mutation = shared.mutations.lock().await;
    let info = shared.call(move |backend| backend.create_snapshot(request)).await?;
    publish(shared, connection, info.clone()).await;
    tracing::info!(
        message_id = MESSAGE_ID_SNAPSHOT_CREATED,
        snapshot_id = info.id,
        volumes = %info.volumes.join(","),
        "snapshot set {} created over {} ({})",
        info.id,
        info.volumes.join(", "),
        info.description
    );
    // A new set may push older ones over the number or space limits.
    super::cleanup_runner::run(shared, connection).await;
    Ok(snapshot_path(info.id))
}

pub async fn rollback(
    shared: &Arc<Shared>,
    connection: &Connection,
    header: &Header<'_>,
    id: SnapshotId,
    options: &OptionDict,
) -> Result<String, Error> {
    options::reject_unknown(options, keys::ROLLBACK_KEYS, "Rollback")?;
    existing(shared, id).await?;
    shared.authorizer.check(header, ACTION_ROLLBACK).await?;
    let _mutation = shared.mutations.lock().await;
    // Re-read under the lock: the state may have changed while polkit was asked. Which state
    // allows what is the lifecycle's to say (backend::lifecycle), not this layer's.
    let info = existing(shared, id).await?;
    let outcome = shared.call(move |backend| backend.rollback(id)).await?;
    refresh(shared, connection, id).await?;
    let path = snapshot_path(id);
    match outcome {
        RollbackOutcome::Scheduled => {
            tracing::info!(
                message_id = MESSAGE_ID_ROLLBACK_SCHEDULED,
                snapshot_id = id,
                volumes = %info.volumes.join(","),
                "rollback of snapshot set {id} scheduled: an origin is busy, the merge starts \
                 when the volume is next assembled"
            );
            let emitter = manager_emitter(connection)?;
            if let Err(e) = Manager::rollback_scheduled(&emitter, path.as_ref()).await {
                tracing::warn!(snapshot_id = id, "cannot emit RollbackScheduled: {e}");
            }
        }
        RollbackOutcome::Merging => {
            tracing::info!(
                message_id = MESSAGE_ID_ROLLBACK_STARTED,
                snapshot_id = id,
                volumes = %info.volumes.join(","),
                "rollback of snapshot set {id} started: merging"
            );
        }
    }
    Ok(outcome.as_str().to_string())
}

pub async fn cancel_rollback(
    shared: &Arc<Shared>,
    connection: &Connection,
    header: &Header<'_>,
    id: SnapshotId,
) -> Result<(), Error> {
    existing(shared, id).await?;
    shared.authorizer.check(header, ACTION_ROLLBACK).await?;
    let _mutation = shared.mutations.lock().await;
    shared.call(move |backend| backend.cancel_rollback(id)).await?;
    refresh(shared, connection, id).await?;
    tracing::info!(snapshot_id = id, "scheduled rollback of snapshot set {id} cancelled");
    Ok(())
}

pub async fn delete(
    shared: &Arc<Shared>,
    connection: &Connection,
    header: &Header<'_>,
    id: SnapshotId,
) -> Result<(), Error> {
    existing(shared, id).await?;
    shared.authorizer.check(header, ACTION_DELETE).await?;
    let _mutation = shared.mutations.lock().await;
    shared.call(move |backend| backend.delete(id)).await?;
    unpublish(shared, connection, id).await;
    tracing::info!(snapshot_id = id, "snapshot set {id} deleted");
    Ok(())
}

pub async fn refresh_boot_entries(
    shared: &Arc<Shared>,
    connection: &Connection,
    header: &Header<'_>,
) -> Result<Vec<String>, Error> {
    shared.authorizer.check(header, ACTION_SNAPSHOT).await?;
    let _mutation = shared.mutations.lock().await;
    let written = shared.call(|backend| backend.refresh_boot_entries()).await?;
    // Every set's BootEntry may have changed.
    super::publish::refresh_all(shared, connection).await?;
    Ok(written.into_iter().map(|path| path.display().to_string()).collect())
}

pub async fn update_metadata(
    shared: &Arc<Shared>,
    connection: &Connection,
    header: &Header<'_>,
    id: SnapshotId,
    description: String,
    userdata: HashMap<String, String>,
    options: &OptionDict,
) -> Result<(), Error> {
    let (description, userdata) = options::metadata_update(description, userdata, options)?;
    existing(shared, id).await?;
    shared.authorizer.check(header, ACTION_SNAPSHOT).await?;
    let _mutation = shared.mutations.lock().await;
    let info =
        shared.call(move |backend| backend.update_metadata(id, description, userdata)).await?;
    publish(shared, connection, info).await;
    Ok(())
}
