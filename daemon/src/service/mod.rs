//! The D-Bus service: API v1 objects on the system bus, polkit, sd-notify, logging.
//!
//! Layout: [`manager`] and [`snapshot_object`] are the bus objects; [`actions`] holds the
//! mutating operations both use; [`publish`] keeps snapshot objects in step with the backend;
//! [`events`] turns backend events into signals and logs; [`options`] validates arguments;
//! [`polkit`] authorizes; [`notify`] and [`logging`] talk to systemd.

pub mod actions;
pub mod errors;
pub mod events;
pub mod logging;
pub mod manager;
pub mod notify;
pub mod options;
pub mod polkit;
pub mod publish;
pub mod shared;
pub mod snapshot_object;
pub mod status;

use std::sync::Arc;

use snapback_dbus::{BUS_NAME, MANAGER_PATH};
use tokio::signal::unix::{signal, SignalKind};
use zbus::fdo::{ObjectManager, RequestNameFlags, RequestNameReply};

use crate::backend::Backend;
use manager::Manager;
use polkit::Authorizer;
use shared::Shared;

/// How the service authorizes callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    /// Ask polkitd (the only mode for real use).
    Polkit,
    /// Let every caller mutate; for tests that are not about polkit.
    DisabledForTesting,
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot connect to the system bus ({address}): {source}")]
    Connect {
        address: String,
        #[source]
        source: zbus::Error,
    },
    #[error("bus name {BUS_NAME} is already owned by another process: is snapbackd already running?")]
    NameTaken,
    #[error("cannot own bus name {BUS_NAME}: {0} (the bus policy allows only root to own it)")]
    RequestName(#[source] zbus::Error),
    #[error("cannot export objects on the bus: {0}")]
    Export(#[source] zbus::Error),
    #[error("cannot read the snapshot sets from the backend: {0}")]
    Backend(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("backend shutdown failed: {0}")]
    Shutdown(String),
}

/// Serve API v1 for `backend` until SIGTERM or SIGINT, then shut the backend down.
pub async fn serve(backend: Arc<dyn Backend>, authorization: Authorization) -> Result<(), ServiceError> {
    let connection = zbus::connection::Builder::system()
        .build()
        .await
        .map_err(|source| ServiceError::Connect {
            address: std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .unwrap_or_else(|_| "default system bus".into()),
            source,
        })?;
    let authorizer = match authorization {
        Authorization::Polkit => Authorizer::polkit(&connection)
            .await
            .map_err(ServiceError::Export)?,
        Authorization::DisabledForTesting => {
            tracing::warn!("polkit is disabled (--no-polkit, SNAPBACK_TESTING=1): every caller may mutate");
            Authorizer::AllowAllForTesting
        }
    };
    let shared = Arc::new(Shared::new(Arc::clone(&backend), authorizer));

    let server = connection.object_server();
    server
        .at(MANAGER_PATH, Manager::new(Arc::clone(&shared)))
        .await
        .map_err(ServiceError::Export)?;
    server
        .at(MANAGER_PATH, ObjectManager)
        .await
        .map_err(ServiceError::Export)?;

    let (sink, events) = events::channel();
    backend.set_event_sink(sink);
    let sets = publish::refresh_all(&shared, &connection)
        .await
        .map_err(|e| ServiceError::Backend(e.to_string()))?;

    let pump = tokio::spawn(events::pump(Arc::clone(&shared), connection.clone(), events));
    let poll = tokio::spawn(events::poll(Arc::clone(&shared), connection.clone()));
    let watchdog = tokio::spawn(events::watchdog());

    // Objects first, name last: a client that sees the name finds every object in place.
    match connection
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
    {
        Ok(RequestNameReply::PrimaryOwner) | Ok(RequestNameReply::AlreadyOwner) => {}
        Ok(RequestNameReply::Exists) | Ok(RequestNameReply::InQueue) => {
            return Err(ServiceError::NameTaken)
        }
        Err(zbus::Error::NameTaken) => return Err(ServiceError::NameTaken),
        Err(e) => return Err(ServiceError::RequestName(e)),
    }
    let summary = status::summary(&sets);
    tracing::info!(
        backend = shared.backend_name(),
        "snapbackd {} serving {BUS_NAME} ({summary})",
        shared.version
    );
    notify::ready(&summary);

    wait_for_termination().await?;
    tracing::info!("stopping");
    notify::stopping();
    let _ = connection.release_name(BUS_NAME).await;
    poll.abort();
    watchdog.abort();
    let shutdown = tokio::task::spawn_blocking(move || backend.shutdown())
        .await
        .map_err(|e| ServiceError::Shutdown(e.to_string()))?;
    pump.abort();
    shutdown.map_err(|e| ServiceError::Shutdown(e.to_string()))
}

async fn wait_for_termination() -> Result<(), ServiceError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
