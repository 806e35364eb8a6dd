//! The service logic: who may do what, the backend calls (run off the executor), and what
//! each call or backend event changes on the bus. It never touches the connection: it hands
//! lists of [`Change`]s to the bus owner (`service::bus`) and waits until they are applied.
//!
//! - [`calls`]: the API's methods (Snapshot, Rollback, CancelRollback, Delete, ...).
//! - [`events`]: backend events and the periodic re-read.
//! - [`cleanup`]: the cleanup policy's runs.
//! - [`status`]: `Manager.Status()` and the systemd status line.
//! - [`changes`]: the changes, the view they are computed against, the queue to the bus.

pub mod calls;
pub mod changes;
pub mod cleanup;
pub mod events;
pub mod status;

use std::sync::Arc;

use snapback_dbus::Error;
use tokio::sync::{Mutex, MutexGuard};

pub use changes::{Change, ChangeQueue, Property, Published};

use super::errors::to_dbus;
use super::polkit::Authorizer;
use crate::backend::{Backend, BackendResult, SnapshotId, SnapshotSetInfo};
use crate::cleanup::CleanupConfig;

/// What the service's calls and background tasks share.
#[derive(Debug)]
pub struct Service {
    backend: Arc<dyn Backend>,
    authorizer: Authorizer,
    /// The mutation lock, guarding the sets as the bus shows them. Held across every mutation
    /// (snapshot, rollback, cancel, delete, metadata, cleanup) and every refresh, until its
    /// changes are on the bus: the backend sees one change at a time, a change sees the state
    /// the previous one left, and a stale read never re-announces a set just removed.
    published: Mutex<Published>,
    bus: ChangeQueue,
    cleanup: CleanupConfig,
    version: String,
}

impl Service {
    pub fn new(
        backend: Arc<dyn Backend>,
        authorizer: Authorizer,
        cleanup: CleanupConfig,
        bus: ChangeQueue,
    ) -> Service {
        Service {
            backend,
            authorizer,
            published: Mutex::new(Published::default()),
            bus,
            cleanup,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.kind().as_str()
    }

    /// Takes the mutation lock.
    async fn lock(&self) -> MutexGuard<'_, Published> {
        self.published.lock().await
    }

    /// Puts `changes` on the bus; call with the mutation lock held.
    async fn show(&self, changes: Vec<Change>) {
        self.bus.apply(changes).await;
    }

    /// Runs a fallible backend call on the blocking pool (backends do device I/O).
    async fn call<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> BackendResult<T> + Send + 'static,
    {
        self.read(f).await?.map_err(to_dbus)
    }

    /// Runs an infallible backend call (a read) on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> T + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| Error::Backend(format!("backend call did not complete: {e}")))
    }

    async fn existing(&self, id: SnapshotId) -> Result<SnapshotSetInfo, Error> {
        self.call(move |backend| backend.snapshot(id)).await
    }

    /// The change that brings the bus to the backend's view of set `id`.
    async fn refresh(
        &self,
        published: &mut Published,
        id: SnapshotId,
    ) -> Result<Option<Change>, Error> {
        match self.existing(id).await {
            Ok(info) => Ok(published.upsert(info)),
            Err(Error::NotFound(_)) => Ok(published.remove(id)),
            Err(e) => Err(e),
        }
    }

    /// Every set as the backend has it, and the changes that bring the bus there.
    async fn refresh_all(
        &self,
        published: &mut Published,
    ) -> Result<(Vec<SnapshotSetInfo>, Vec<Change>), Error> {
        let sets = self.read(|backend| backend.snapshots()).await?;
        let changes = published.sync_all(&sets);
        Ok((sets, changes))
    }

    /// Publishes every set the backend has (at start); returns them.
    pub async fn publish_all(&self) -> Result<Vec<SnapshotSetInfo>, Error> {
        let mut published = self.lock().await;
        let (sets, changes) = self.refresh_all(&mut published).await?;
        self.show(changes).await;
        Ok(sets)
    }
}
