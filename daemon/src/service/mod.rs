//! The D-Bus service: API v1 objects on the system bus, polkit, sd-notify, logging.
//!
//! Dependencies go one way: [`bus`] → [`logic`] → `crate::backend`.
//! - [`bus`]: the interfaces (thin: parse, hand to the logic, reply) and the one owner of the
//!   connection, which adds and removes snapshot objects and emits every signal;
//! - [`logic`]: authorization, backend calls off the executor, and the list of changes each
//!   call or backend event makes on the bus;
//! - [`polkit`] authorizes, [`errors`] names backend errors for the bus, [`notify`] and
//!   [`logging`] talk to systemd.
//!
//! This module wires them together: [`serve`] on the system bus, [`start`] on any connection
//! (the tests serve over a peer-to-peer one).

pub mod bus;
pub mod errors;
pub mod logging;
pub mod logic;
pub mod notify;
pub mod polkit;

use std::sync::Arc;

use snapback_dbus::{BUS_NAME, MANAGER_PATH};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use zbus::fdo::{ObjectManager, RequestNameFlags, RequestNameReply};

use crate::backend::{Backend, SnapshotSetInfo};
use crate::cleanup::CleanupConfig;
use logic::Service;
use polkit::Authorizer;

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

/// The service running on a connection: the bus owner, the event pump and the periodic tasks.
#[derive(Debug)]
pub struct Running {
    service: Arc<Service>,
    /// The sets published at start.
    sets: Vec<SnapshotSetInfo>,
    /// Stopped before the backend shuts down.
    periodic: Vec<JoinHandle<()>>,
    /// Stopped after it: what the backend reports while stopping still reaches the bus.
    pump: JoinHandle<()>,
    owner: JoinHandle<()>,
}

impl Running {
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Stops the periodic tasks (re-read, cleanup, watchdog).
    pub fn stop_periodic(&mut self) {
        for task in self.periodic.drain(..) {
            task.abort();
        }
    }

    /// Stops everything.
    pub fn stop(mut self) {
        self.stop_periodic();
        self.pump.abort();
        self.owner.abort();
    }
}

/// Serves API v1 on `connection` with `backend`: exports the objects of every set, then runs
/// the bus owner, the event pump and the periodic tasks until [`Running::stop`]. Owning a
/// bus name is the caller's business (a peer-to-peer connection has none). Build the
/// connection with the ObjectManager at `MANAGER_PATH` (`serve_at`), so that zbus dispatches
/// from the first call on.
pub async fn start(
    connection: &zbus::Connection,
    backend: Arc<dyn Backend>,
    authorizer: Authorizer,
    cleanup: CleanupConfig,
) -> Result<Running, ServiceError> {
    let (queue, batches) = logic::changes::queue();
    let service = Arc::new(Service::new(Arc::clone(&backend), authorizer, cleanup, queue));
    bus::export(connection, &service).await.map_err(ServiceError::Export)?;
    let owner = tokio::spawn(bus::run(connection.clone(), Arc::clone(&service), batches));

    let (sink, events) = logic::events::channel();
    backend.set_event_sink(sink);
    let sets = service.publish_all().await.map_err(ServiceError::ReadSets)?;

    let pump = tokio::spawn(logic::events::pump(Arc::clone(&service), events));
    let periodic = vec![
        tokio::spawn(logic::events::poll(Arc::clone(&service))),
        tokio::spawn(logic::cleanup::periodic(Arc::clone(&service))),
        tokio::spawn(notify::watchdog()),
    ];
    Ok(Running { service, sets, periodic, pump, owner })
}

/// Serve API v1 until SIGTERM or SIGINT, then shut the backend down.
///
/// The bus comes first: a second daemon finds the name taken and stops before it touches any
/// volume (the DoNotQueue request at the end still settles a race between two starts).
pub async fn serve(
    open_backend: BackendOpener,
    authorization: Authorization,
    cleanup: CleanupConfig,
) -> Result<(), ServiceError> {
    // An object at build time makes zbus dispatch calls from the start; objects added later
    // on a connection that had none could miss the first calls.
    let connection = zbus::connection::Builder::system()
        .serve_at(MANAGER_PATH, ObjectManager)
        .build()
        .await
        .map_err(|source| ServiceError::Connect {
            address: std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .unwrap_or_else(|_| "default system bus".into()),
            source,
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
    let mut running = start(&connection, Arc::clone(&backend), authorizer, cleanup).await?;

    // Objects first, name last: a client that sees the name finds every object in place.
    match connection.request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE).await {
        Ok(RequestNameReply::PrimaryOwner) | Ok(RequestNameReply::AlreadyOwner) => {}
        Ok(RequestNameReply::Exists) | Ok(RequestNameReply::InQueue) => {
            return Err(ServiceError::NameTaken)
        }
        Err(zbus::Error::NameTaken) => return Err(ServiceError::NameTaken),
        Err(e) => return Err(ServiceError::RequestName(e)),
    }
    let summary = logic::status::summary(&running.sets);
    tracing::info!(
        backend = running.service.backend_name(),
        "snapbackd {} serving {BUS_NAME} ({summary})",
        running.service.version()
    );
    notify::ready(&summary);

    wait_for_termination().await?;
    tracing::info!("stopping");
    notify::stopping();
    let _ = connection.release_name(BUS_NAME).await;
    running.stop_periodic();
    let shutdown = tokio::task::spawn_blocking(move || backend.shutdown())
        .await
        .map_err(ServiceError::Task)?;
    running.stop();
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
