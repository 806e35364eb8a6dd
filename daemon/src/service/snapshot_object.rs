//! `org.snapback.Snapback1.Snapshot`: one object per snapshot set.
//!
//! The object keeps the set's last known figures, so property reads never wait for the
//! backend (they answer while merges run); `publish` refreshes them from backend events and a
//! periodic poll, emitting PropertiesChanged for what changed. The figures sit behind their
//! own small lock so that a refresh needs only shared access to the interface and can run
//! while one of the object's own methods is executing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use snapback_dbus::Error;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection};

use super::actions;
use super::options::OptionDict;
use super::shared::Shared;
use crate::backend::SnapshotSetInfo;

#[derive(Debug)]
pub struct SnapshotObject {
    shared: Arc<Shared>,
    info: Mutex<SnapshotSetInfo>,
}

impl SnapshotObject {
    pub fn new(shared: Arc<Shared>, info: SnapshotSetInfo) -> SnapshotObject {
        SnapshotObject { shared, info: Mutex::new(info) }
    }

    fn info(&self) -> std::sync::MutexGuard<'_, SnapshotSetInfo> {
        self.info.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `new` and emit PropertiesChanged for every property whose value changed.
    pub async fn update(
        &self,
        new: SnapshotSetInfo,
        emitter: &SignalEmitter<'_>,
    ) -> zbus::Result<()> {
        let old = std::mem::replace(&mut *self.info(), new.clone());
        if old.description != new.description {
            self.description_changed(emitter).await?;
        }
        if old.state != new.state {
            self.state_changed(emitter).await?;
        }
        if old.used_bytes != new.used_bytes {
            self.used_bytes_changed(emitter).await?;
        }
        if old.size_bytes != new.size_bytes {
            self.size_bytes_changed(emitter).await?;
        }
        if old.merge_progress != new.merge_progress {
            self.merge_progress_changed(emitter).await?;
        }
        if old.userdata != new.userdata {
            self.userdata_changed(emitter).await?;
        }
        if old.important != new.important {
            self.important_changed(emitter).await?;
        }
        if old.boot_entry != new.boot_entry {
            self.boot_entry_changed(emitter).await?;
        }
        Ok(())
    }
}

#[interface(name = "org.snapback.Snapback1.Snapshot")]
impl SnapshotObject {
    /// Roll this set back; same as Manager.Rollback on this set.
    async fn rollback(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        options: OptionDict,
    ) -> Result<String, Error> {
        let id = self.info().id;
        actions::rollback(&self.shared, connection, &header, id, &options).await
    }

    /// Delete this set; same as Manager.Delete on this set.
    async fn delete(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let id = self.info().id;
        actions::delete(&self.shared, connection, &header, id).await
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> u32 {
        self.info().id
    }

    #[zbus(property)]
    fn description(&self) -> String {
        self.info().description.clone()
    }

    /// Microseconds since the Unix epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn created(&self) -> u64 {
        self.info().created_us
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn volumes(&self) -> Vec<String> {
        self.info().volumes.clone()
    }

    #[zbus(property)]
    fn state(&self) -> String {
        self.info().state.as_str().to_string()
    }

    #[zbus(property)]
    fn used_bytes(&self) -> u64 {
        self.info().used_bytes
    }

    #[zbus(property)]
    fn size_bytes(&self) -> u64 {
        self.info().size_bytes
    }

    #[zbus(property)]
    fn merge_progress(&self) -> f64 {
        self.info().merge_progress
    }

    #[zbus(property)]
    fn userdata(&self) -> HashMap<String, String> {
        self.info().userdata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[zbus(property)]
    fn important(&self) -> bool {
        self.info().important
    }

    /// The path of the set's boot-menu entry ("Roll back to snapshot N", booting the
    /// snapshot-time kernel with snapback.rollback=N); "" when the set has none (it does not
    /// include the root volume, or /boot was not recorded).
    #[zbus(property)]
    fn boot_entry(&self) -> String {
        self.info().boot_entry.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }
}
