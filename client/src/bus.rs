//! The daemon as `snapbackctl` sees it: a system-bus connection plus the `dbus/` crate's
//! proxies, turned into the plain views of [`crate::model`].

use std::collections::{BTreeMap, HashMap};

use snapback_dbus::{ManagerProxy, SnapshotProxy};
use zbus::{Connection, OwnedObjectPath, Variant};

use crate::error::Error;
use crate::model::{SnapshotView, StatusView, VolumeView};

/// A connection to snapbackd.
#[derive(Debug)]
pub struct Client {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

impl From<snapback_dbus::Error> for Error {
    fn from(e: snapback_dbus::Error) -> Self {
        use zbus::DBusError;
        match (e.kind(), e) {
            (Some(kind), e) => {
                Error::Daemon { kind, message: e.description().unwrap_or("").to_owned() }
            }
            (None, snapback_dbus::Error::ZBus(e)) => Error::from(e),
            (None, other) => Error::DBus {
                name: other.name().to_string(),
                message: other.description().unwrap_or("").to_owned(),
            },
        }
    }
}

/// The bus address in use, for error messages.
fn system_bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".to_owned())
}

impl Client {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured).
    pub async fn connect() -> Result<Self, Error> {
        let conn = Connection::system()
            .await
            .map_err(|source| Error::Connect { address: system_bus_address(), source })?;
        let manager = ManagerProxy::new(&conn).await?;
        Ok(Client { conn, manager })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// The proxy of snapshot set `id`, with its properties fetched (one `GetAll`).
    pub async fn snapshot_proxy(
        &self,
        path: &OwnedObjectPath,
    ) -> Result<SnapshotProxy<'static>, Error> {
        Ok(SnapshotProxy::builder(&self.conn).path(path.clone()).build().await?)
    }

    /// One snapshot set; a missing set is the daemon's NotFound sentence.
    pub async fn snapshot(&self, id: u32) -> Result<SnapshotView, Error> {
        let path = snapback_dbus::snapshot_path(id);
        match self.read_snapshot(&path).await {
            Err(e) if is_missing_object(&e) => Err(not_found(id)),
            other => other,
        }
    }

    /// Every snapshot set, by id (oldest first: ids are never reused and only grow).
    pub async fn snapshots(&self) -> Result<Vec<SnapshotView>, Error> {
        let mut views = Vec::new();
        for path in self.snapshot_paths().await? {
            match self.read_snapshot(&path).await {
                Ok(view) => views.push(view),
                // Deleted between the listing and the read: not an error for `list`.
                Err(e) if is_missing_object(&e) => {}
                Err(e) => return Err(e),
            }
        }
        views.sort_by_key(|v| v.id);
        Ok(views)
    }

    /// Paths of every snapshot set, from the ObjectManager.
    pub async fn snapshot_paths(&self) -> Result<Vec<OwnedObjectPath>, Error> {
        let om = zbus::fdo::ObjectManagerProxy::builder(&self.conn)
            .destination(snapback_dbus::BUS_NAME)
            .path(snapback_dbus::MANAGER_PATH)
            .build()
            .await?;
        let objects = om.get_managed_objects().await?;
        Ok(objects
            .into_iter()
            .filter(|(_, ifaces)| {
                ifaces.keys().any(|i| i.as_str() == snapback_dbus::SNAPSHOT_INTERFACE)
            })
            .map(|(path, _)| path)
            .collect())
    }

    /// Reads every property of one snapshot set object.
    pub async fn read_snapshot(&self, path: &OwnedObjectPath) -> Result<SnapshotView, Error> {
        let p = self.snapshot_proxy(path).await?;
        Ok(SnapshotView {
            id: p.id().await?,
            path: path.to_string(),
            description: p.description().await?,
            created_usec: p.created().await?,
            volumes: p.volumes().await?,
            state: p.state().await?.parse().map_err(|e| Error::Protocol(format!("{path}: {e}")))?,
            used_bytes: p.used_bytes().await?,
            size_bytes: p.size_bytes().await?,
            merge_progress: p.merge_progress().await?,
            userdata: p.userdata().await?.into_iter().collect::<BTreeMap<_, _>>(),
            important: p.important().await?,
            // A daemon from before BootEntry has none to report.
            boot_entry: p.boot_entry().await.unwrap_or_default(),
        })
    }

    /// `Status()` plus the `Version` and `Backend` properties.
    pub async fn status(&self) -> Result<StatusView, Error> {
        let s = self.manager.status().await?;
        let mut volumes: Vec<VolumeView> = s
            .volumes
            .into_iter()
            .map(|(name, v)| {
                let state =
                    v.state.parse().map_err(|e| Error::Protocol(format!("volume {name}: {e}")))?;
                Ok(VolumeView {
                    name,
                    device: v.device,
                    backing: v.backing,
                    state,
                    size_bytes: v.size,
                    auto: v.auto,
                })
            })
            .collect::<Result<_, Error>>()?;
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(StatusView {
            version: s.version,
            backend: s.backend,
            volumes,
            pool_path: s.pool.path,
            pool_size_bytes: s.pool.size,
            pool_used_bytes: s.pool.used,
            pending_merges: ids_of(&s.pending),
            running_merges: ids_of(&s.merging),
        })
    }

    /// `Snapshot(volumes, description, options)`; returns the new set's path.
    pub async fn create_snapshot(
        &self,
        volumes: &[String],
        description: &str,
        important: bool,
        userdata: &[(String, String)],
        cow_size: Option<u64>,
    ) -> Result<OwnedObjectPath, Error> {
        let volumes: Vec<&str> = volumes.iter().map(String::as_str).collect();
        let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
        if important {
            options.insert(snapback_dbus::options::IMPORTANT, Variant::from(true));
        }
        if let Some(bytes) = cow_size {
            options.insert(snapback_dbus::options::COW_SIZE, Variant::from(bytes));
        }
        if !userdata.is_empty() {
            let map: HashMap<&str, &str> =
                userdata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            options.insert(snapback_dbus::options::USERDATA, Variant::from(map));
        }
        Ok(self.manager.snapshot(&volumes, description, options).await?)
    }
}

/// Ids of snapshot set paths (paths that are not set paths are skipped).
fn ids_of(paths: &[OwnedObjectPath]) -> Vec<u32> {
    let mut ids: Vec<u32> =
        paths.iter().filter_map(|p| snapback_dbus::snapshot_id(p.as_str())).collect();
    ids.sort_unstable();
    ids
}

/// What a read of a vanished (or never existing) object produces.
fn is_missing_object(error: &Error) -> bool {
    match error {
        Error::Daemon { kind, .. } => *kind == snapback_dbus::ErrorKind::NotFound,
        Error::DBus { name, .. } => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.UnknownInterface"
                | "org.freedesktop.DBus.Error.UnknownProperty"
        ),
        _ => false,
    }
}

/// The NotFound error for set `id`, as the daemon would word it.
pub fn not_found(id: u32) -> Error {
    Error::Daemon {
        kind: snapback_dbus::ErrorKind::NotFound,
        message: format!("no snapshot set {id}"),
    }
}
