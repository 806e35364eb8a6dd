//! The API's mutating calls, whichever object they arrive on.
//!
//! Each one gets its arguments already checked (`service::bus::arguments`), then: checks that
//! the set exists (reads are open, so this reveals nothing), asks polkit about the caller,
//! takes the mutation lock, calls the backend, and puts what changed on the bus before it
//! returns. A refusal at any step changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use snapback_dbus::{Error, ACTION_DELETE, ACTION_OPEN, ACTION_ROLLBACK, ACTION_SNAPSHOT};
use zbus::message::Header;

use super::{Change, Service};
use crate::backend::{OpenedVolume, RollbackOutcome, SnapshotId, SnapshotRequest};
use crate::service::logging::{
    MESSAGE_ID_ROLLBACK_SCHEDULED, MESSAGE_ID_ROLLBACK_STARTED, MESSAGE_ID_SNAPSHOT_CREATED,
};

/// `UpdateMetadata`'s request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataUpdate {
    pub id: SnapshotId,
    /// None keeps the description.
    pub description: Option<String>,
    /// Merged into the set's userdata.
    pub userdata: BTreeMap<String, String>,
}

impl Service {
    /// `Snapshot`: the new set's id, once its object is on the bus.
    pub async fn snapshot(
        &self,
        caller: &Header<'_>,
        request: SnapshotRequest,
    ) -> Result<SnapshotId, Error> {
        self.authorizer.check(caller, ACTION_SNAPSHOT).await?;
        let mut published = self.lock().await;
        let info = self.call(move |backend| backend.create_snapshot(request)).await?;
        let id = info.id;
        tracing::info!(
            message_id = MESSAGE_ID_SNAPSHOT_CREATED,
            snapshot_id = info.id,
            volumes = %info.volumes.join(","),
            "snapshot set {} created over {} ({})",
            info.id,
            info.volumes.join(", "),
            info.description
        );
        let mut changes: Vec<Change> = published.upsert(info).into_iter().collect();
        // A new set may push older ones over the number or space limits.
        changes.extend(self.run_cleanup(&mut published).await);
        self.show(changes).await;
        Ok(id)
    }

    /// `Rollback`: "merging" or "scheduled".
    pub async fn rollback(
        &self,
        caller: &Header<'_>,
        id: SnapshotId,
    ) -> Result<RollbackOutcome, Error> {
        self.existing(id).await?;
        self.authorizer.check(caller, ACTION_ROLLBACK).await?;
        let mut published = self.lock().await;
        // Re-read under the lock: the state may have changed while polkit was asked. Which state
        // allows what is the lifecycle's to say (backend::lifecycle), not this layer's.
        let info = self.existing(id).await?;
        let outcome = self.call(move |backend| backend.rollback(id)).await?;
        let mut changes: Vec<Change> =
            self.refresh(&mut published, id).await?.into_iter().collect();
        match outcome {
            RollbackOutcome::Scheduled => {
                tracing::info!(
                    message_id = MESSAGE_ID_ROLLBACK_SCHEDULED,
                    snapshot_id = id,
                    volumes = %info.volumes.join(","),
                    "rollback of snapshot set {id} scheduled: an origin is busy, the merge starts \
                     when the volume is next assembled"
                );
                changes.push(Change::RollbackScheduled(id));
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
        self.show(changes).await;
        Ok(outcome)
    }

    /// `CancelRollback`.
    pub async fn cancel_rollback(&self, caller: &Header<'_>, id: SnapshotId) -> Result<(), Error> {
        self.existing(id).await?;
        self.authorizer.check(caller, ACTION_ROLLBACK).await?;
        let mut published = self.lock().await;
        self.call(move |backend| backend.cancel_rollback(id)).await?;
        let changes = self.refresh(&mut published, id).await?;
        self.show(changes.into_iter().collect()).await;
        tracing::info!(snapshot_id = id, "scheduled rollback of snapshot set {id} cancelled");
        Ok(())
    }

    /// `Delete`.
    pub async fn delete(&self, caller: &Header<'_>, id: SnapshotId) -> Result<(), Error> {
        self.existing(id).await?;
        self.authorizer.check(caller, ACTION_DELETE).await?;
        let mut published = self.lock().await;
        self.call(move |backend| backend.delete(id)).await?;
        self.show(published.remove(id).into_iter().collect()).await;
        tracing::info!(snapshot_id = id, "snapshot set {id} deleted");
        Ok(())
    }

    /// `OpenVolume`: the snapshot's device and a read-only descriptor of it. Under the
    /// mutation lock, so that it never interleaves with a Rollback or Delete of the set.
    pub async fn open_volume(
        &self,
        caller: &Header<'_>,
        id: SnapshotId,
        volume: String,
    ) -> Result<OpenedVolume, Error> {
        self.existing(id).await?;
        self.authorizer.check(caller, ACTION_OPEN).await?;
        let _published = self.lock().await;
        let name = volume.clone();
        let opened = self.call(move |backend| backend.open_volume(id, &name)).await?;
        tracing::info!(
            snapshot_id = id,
            volume = %volume,
            device = %opened.device.display(),
            "snapshot set {id}: volume {volume} opened read-only at {}",
            opened.device.display()
        );
        Ok(opened)
    }

    /// `UpdateMetadata`.
    pub async fn update_metadata(
        &self,
        caller: &Header<'_>,
        update: MetadataUpdate,
    ) -> Result<(), Error> {
        let MetadataUpdate { id, description, userdata } = update;
        self.existing(id).await?;
        self.authorizer.check(caller, ACTION_SNAPSHOT).await?;
        let mut published = self.lock().await;
        let info =
            self.call(move |backend| backend.update_metadata(id, description, userdata)).await?;
        self.show(published.upsert(info).into_iter().collect()).await;
        Ok(())
    }

    /// `RefreshBootEntries`: the entry files written.
    pub async fn refresh_boot_entries(&self, caller: &Header<'_>) -> Result<Vec<PathBuf>, Error> {
        self.authorizer.check(caller, ACTION_SNAPSHOT).await?;
        let mut published = self.lock().await;
        let written = self.call(|backend| backend.refresh_boot_entries()).await?;
        // Every set's BootEntry may have changed.
        let (_, changes) = self.refresh_all(&mut published).await?;
        self.show(changes).await;
        Ok(written)
    }
}
