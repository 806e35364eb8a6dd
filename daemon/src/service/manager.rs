//! `org.snapback.Snapback1.Manager` at `/org/snapback/Snapback1`.

use std::collections::HashMap;
use std::sync::Arc;

use snapback_dbus::{Error, Status};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, ObjectPath, OwnedObjectPath};

use super::actions;
use super::options::OptionDict;
use super::shared::Shared;

#[derive(Debug)]
pub struct Manager {
    shared: Arc<Shared>,
}

impl Manager {
    pub fn new(shared: Arc<Shared>) -> Manager {
        Manager { shared }
    }
}

#[interface(name = "org.snapback.Snapback1.Manager")]
impl Manager {
    /// New snapshot set over `volumes` (empty = every auto volume). Options: userdata a{ss},
    /// important b, cow-size t (bytes).
    async fn snapshot(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        volumes: Vec<String>,
        description: String,
        options: OptionDict,
    ) -> Result<OwnedObjectPath, Error> {
        actions::snapshot(&self.shared, connection, &header, volumes, description, &options).await
    }

    /// Roll a set back: "merging" now, or "scheduled" for next boot when an origin is busy.
    async fn rollback(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        snapshot: ObjectPath<'_>,
        options: OptionDict,
    ) -> Result<String, Error> {
        let id = actions::resolve(&snapshot)?;
        actions::rollback(&self.shared, connection, &header, id, &options).await
    }

    /// Un-schedule a pending rollback.
    async fn cancel_rollback(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        snapshot: ObjectPath<'_>,
    ) -> Result<(), Error> {
        let id = actions::resolve(&snapshot)?;
        actions::cancel_rollback(&self.shared, connection, &header, id).await
    }

    /// Remove a set and free its COW space.
    async fn delete(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        snapshot: ObjectPath<'_>,
    ) -> Result<(), Error> {
        let id = actions::resolve(&snapshot)?;
        actions::delete(&self.shared, connection, &header, id).await
    }

    /// Backend, pool, volumes, pending and running merges.
    async fn status(&self) -> Result<Status, Error> {
        super::status::collect(&self.shared).await
    }

    /// Addition to v1 (dnf plugin): replace the description (unless empty) and merge
    /// `userdata` into the set's userdata. Checked as org.snapback.snapshot.
    async fn update_metadata(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        snapshot: ObjectPath<'_>,
        description: String,
        userdata: HashMap<String, String>,
        options: OptionDict,
    ) -> Result<(), Error> {
        let id = actions::resolve(&snapshot)?;
        actions::update_metadata(
            &self.shared,
            connection,
            &header,
            id,
            description,
            userdata,
            &options,
        )
        .await
    }

    /// Addition to v1: write the boot-menu entry of every set that recorded /boot again (and
    /// remove those of sets that are gone). Returns the entry files written. Checked as
    /// org.snapback.snapshot.
    async fn refresh_boot_entries(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<String>, Error> {
        actions::refresh_boot_entries(&self.shared, connection, &header).await
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        self.shared.version.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn backend(&self) -> String {
        self.shared.backend_name().to_string()
    }

    #[zbus(signal)]
    pub async fn snapshot_created(
        emitter: &SignalEmitter<'_>,
        snapshot: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn snapshot_removed(
        emitter: &SignalEmitter<'_>,
        snapshot: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn rollback_scheduled(
        emitter: &SignalEmitter<'_>,
        snapshot: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn merge_finished(
        emitter: &SignalEmitter<'_>,
        snapshot: ObjectPath<'_>,
        ok: bool,
        message: &str,
    ) -> zbus::Result<()>;
}
