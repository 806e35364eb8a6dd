//! `org.snapback.Snapback1.Manager` at `/org/snapback/Snapback1`: parses each call, hands it
//! to the logic, replies. Its signals are emitted by the bus owner (`super`).

use std::collections::HashMap;
use std::sync::Arc;

use snapback_dbus::{snapshot_path, Error, Status};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, ObjectPath, OwnedObjectPath};

use super::arguments::{self, OptionDict};
use crate::service::logic::Service;

#[derive(Debug)]
pub struct Manager {
    service: Arc<Service>,
}

impl Manager {
    pub fn new(service: Arc<Service>) -> Manager {
        Manager { service }
    }
}

#[interface(name = "org.snapback.Snapback1.Manager")]
impl Manager {
    /// New snapshot set over `volumes` (empty = every auto volume). Options: userdata a{ss},
    /// important b, cow-size t (bytes).
    async fn snapshot(
        &self,
        #[zbus(header)] header: Header<'_>,
        volumes: Vec<String>,
        description: String,
        options: OptionDict,
    ) -> Result<OwnedObjectPath, Error> {
        let request = arguments::snapshot_request(volumes, description, &options)?;
        Ok(snapshot_path(self.service.snapshot(&header, request).await?))
    }

    /// Roll a set back: "merging" now, or "scheduled" for next boot when an origin is busy.
    async fn rollback(
        &self,
        #[zbus(header)] header: Header<'_>,
        snapshot: ObjectPath<'_>,
        options: OptionDict,
    ) -> Result<String, Error> {
        let id = arguments::snapshot_set(&snapshot)?;
        arguments::reject_unknown(&options, snapback_dbus::options::ROLLBACK_KEYS, "Rollback")?;
        Ok(self.service.rollback(&header, id).await?.as_str().to_string())
    }

    /// Un-schedule a pending rollback.
    async fn cancel_rollback(
        &self,
        #[zbus(header)] header: Header<'_>,
        snapshot: ObjectPath<'_>,
    ) -> Result<(), Error> {
        let id = arguments::snapshot_set(&snapshot)?;
        self.service.cancel_rollback(&header, id).await
    }

    /// Remove a set and free its COW space.
    async fn delete(
        &self,
        #[zbus(header)] header: Header<'_>,
        snapshot: ObjectPath<'_>,
    ) -> Result<(), Error> {
        let id = arguments::snapshot_set(&snapshot)?;
        self.service.delete(&header, id).await
    }

    /// Backend, pool, volumes, pending and running merges.
    async fn status(&self) -> Result<Status, Error> {
        self.service.status().await
    }

    /// Addition to v1 (dnf plugin): replace the description (unless empty) and merge
    /// `userdata` into the set's userdata. Checked as org.snapback.snapshot.
    async fn update_metadata(
        &self,
        #[zbus(header)] header: Header<'_>,
        snapshot: ObjectPath<'_>,
        description: String,
        userdata: HashMap<String, String>,
        options: OptionDict,
    ) -> Result<(), Error> {
        let id = arguments::snapshot_set(&snapshot)?;
        let update = arguments::metadata_update(id, description, userdata, &options)?;
        self.service.update_metadata(&header, update).await
    }

    /// Addition to v1: write the boot-menu entry of every set that recorded /boot again (and
    /// remove those of sets that are gone). Returns the entry files written. Checked as
    /// org.snapback.snapshot.
    async fn refresh_boot_entries(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>, Error> {
        let written = self.service.refresh_boot_entries(&header).await?;
        Ok(written.into_iter().map(|path| path.display().to_string()).collect())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        self.service.version().to_string()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn backend(&self) -> String {
        self.service.backend_name().to_string()
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
