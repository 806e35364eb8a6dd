//! What every bus object of the service shares: the backend, the authorizer, the mutation
//! lock, and the set of snapshot objects currently on the bus.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use snapback_dbus::Error;

use super::errors::to_dbus;
use super::polkit::Authorizer;
use crate::backend::{Backend, BackendResult, SnapshotId};
use crate::cleanup::CleanupConfig;

/// State shared by the manager, the snapshot objects and the background tasks.
#[derive(Debug)]
pub struct Shared {
    backend: Arc<dyn Backend>,
    pub authorizer: Authorizer,
    /// Held across every mutation (snapshot, rollback, cancel, delete, metadata): the backend
    /// sees one change at a time, and a change sees the state the previous one left.
    pub mutations: tokio::sync::Mutex<()>,
    /// Ids of the snapshot sets that have an object on the bus.
    published: Mutex<BTreeSet<SnapshotId>>,
    pub version: String,
    /// The `[cleanup]` policy of the configuration.
    pub cleanup: CleanupConfig,
}

impl Shared {
    pub fn new(
        backend: Arc<dyn Backend>,
        authorizer: Authorizer,
        cleanup: CleanupConfig,
    ) -> Shared {
        Shared {
            backend,
            authorizer,
            mutations: tokio::sync::Mutex::new(()),
            published: Mutex::new(BTreeSet::new()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cleanup,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.kind().as_str()
    }

    /// Run a fallible backend call on the blocking pool (backends do device I/O).
    pub async fn call<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> BackendResult<T> + Send + 'static,
    {
        self.read(f).await?.map_err(to_dbus)
    }

    /// Run an infallible backend call (a read) on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> T + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| Error::Backend(format!("backend call did not complete: {e}")))
    }

    pub fn published(&self) -> MutexGuard<'_, BTreeSet<SnapshotId>> {
        // A poisoned set only means a panic elsewhere mid-insert; the set itself is still valid.
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }
}
