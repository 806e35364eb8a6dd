//! The D-Bus service: API v1 objects on the system bus, polkit, sd-notify, logging.
//!
//! Layout: [`manager`] and [`snapshot_object`] are the bus objects; [`actions`] holds the
//! mutating operations both use; [`publish`] keeps snapshot objects in step with the backend;
//! [`events`] turns backend events into signals and logs; [`options`] validates arguments;
//! [`polkit`] authorizes; [`notify`] and [`logging`] talk to systemd.

pub mod actions;
pub mod cleanup_runner;
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
use crate::cleanup::CleanupConfig;
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
    #[error(
        "bus name {BUS_NAME} is already owned by another process: is snapbackd already running?"
    )]
    NameTaken,
    #[error("cannot own bus name {BUS_NAME}: {0} (the bus policy allows only root to own it)")]
    RequestName(#[source] zbus::Error),
    #[error("cannot export objects on the bus: {0}")]
    Export(#[source] zbus::Error),
    #[error("cannot set up the polkit client: {0}")]
    Polkit(#[source] zbus::Error),
    #[error("cannot open the backend: {0}")]
    OpenBackend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot read the snapshot sets: {0}")]
    ReadSets(#[source] snapback_dbus::Error),
    #[error("a blocking task of the service failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("backend shutdown failed: {0}")]
    Shutdown(#[source] crate::backend::BackendError),
}

/// Opens the backend; run on the blocking pool once the bus is known to be free for us.
pub type BackendOpener =
    Box<dyn FnOnce() -> Result<Arc<dyn Backend>, Box<dyn std::error::Error + Send + Sync>> + Send>;

/// Serve API v1 until SIGTERM or SIGINT, then shut the backend down.
///
/// The bus comes first: a second daemon finds the name taken and stops before it touches any
/// volume (the DoNotQueue request at the end still settles a race between two starts).
pub async fn serve(
    open_backend: BackendOpener,
    authorization: Authorization,
    cleanup: CleanupConfig,
) -> Result<(), ServiceError> {
    let connection = zbus::connection::Builder::system().build().await.map_err(|source| {
        ServiceError::Connect {
            address: std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .unwrap_or_else(|_| "default system bus".into()),
            source,
        }
    })?;
    if name_has_owner(&connection).await {
        return Err(ServiceError::NameTaken);
    }
    let backend = tokio::task::spawn_blocking(open_backend)
        .await
        .map_err(ServiceError::Task)?
        .map_err(ServiceError::OpenBackend)?;
    let authorizer = match authorization {
        Authorization::Polkit => {
            Authorizer::polkit(&connection).await.map_err(ServiceError::Polkit)?
        }
        Authorization::DisabledForTesting => {
            tracing::warn!(
                "polkit is disabled (--no-polkit, SNAPBACK_TESTING=1): every caller may mutate"
            );
            Authorizer::AllowAllForTesting
        }
    };
    let shared = Arc::new(Shared::new(Arc::clone(&backend), authorizer, cleanup));

    let server = connection.object_server();
    server
        .at(MANAGER_PATH, Manager::new(Arc::clone(&shared)))
        .await
        .map_err(ServiceError::Export)?;
    server.at(MANAGER_PATH, ObjectManager).await.map_err(ServiceError::Export)?;

    let (sink, events) = events::channel();
    backend.set_event_sink(sink);
    let sets = publish::refresh_all(&shared, &connection).await.map_err(ServiceError::ReadSets)?;

    let pump = tokio::spawn(events::pump(Arc::clone(&shared), connection.clone(), events));
    let poll = tokio::spawn(events::poll(Arc::clone(&shared), connection.clone()));
    let watchdog = tokio::spawn(events::watchdog());
    let cleanup_task =
        tokio::spawn(cleanup_runner::periodic(Arc::clone(&shared), connection.clone()));

    // Objects first, name last: a client that sees the name finds every object in place.
    match connection.request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE).await {
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
    cleanup_task.abort();
    let shutdown = tokio::task::spawn_blocking(move || backend.shutdown())
        .await
        .map_err(ServiceError::Task)?;
    pump.abort();
    shutdown.map_err(ServiceError::Shutdown)
}

async fn name_has_owner(connection: &zbus::Connection) -> bool {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(connection).await else {
        return false;
    };
    match zbus::names::BusName::try_from(BUS_NAME) {
        Ok(name) => dbus.name_has_owner(name).await.unwrap_or(false),
        Err(_) => false,
    }
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
