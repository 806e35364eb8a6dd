//! `org.snapback.Snapback1.Snapshot`: one object per snapshot set.
//!
//! The object keeps the set's figures as the bus owner last stored them ([`SnapshotObject::set`]),
//! so property reads never wait for the backend (they answer while merges run). The figures
//! sit behind their own small lock so that the owner can store new ones with shared access to
//! the interface, even while one of the object's own methods is executing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use snapback_dbus::Error;
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use super::arguments::{self, OptionDict};
use crate::backend::SnapshotSetInfo;
use crate::service::logic::{Property, Service};

#[derive(Debug)]
pub struct SnapshotObject {
    service: Arc<Service>,
    info: Mutex<SnapshotSetInfo>,
}

impl SnapshotObject {
    pub fn new(service: Arc<Service>, info: SnapshotSetInfo) -> SnapshotObject {
        SnapshotObject { service, info: Mutex::new(info) }
    }

    fn info(&self) -> MutexGuard<'_, SnapshotSetInfo> {
        self.info.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `info` and emits PropertiesChanged for `properties`.
    pub async fn set(
        &self,
        info: SnapshotSetInfo,
        properties: &[Property],
        emitter: &SignalEmitter<'_>,
    ) -> zbus::Result<()> {
        *self.info() = info;
        for property in properties {
            match property {
                Property::Description => self.description_changed(emitter).await?,
                Property::State => self.state_changed(emitter).await?,
                Property::UsedBytes => self.used_bytes_changed(emitter).await?,
                Property::SizeBytes => self.size_bytes_changed(emitter).await?,
                Property::MergeProgress => self.merge_progress_changed(emitter).await?,
                Property::Userdata => self.userdata_changed(emitter).await?,
                Property::Important => self.important_changed(emitter).await?,
                Property::BootEntry => self.boot_entry_changed(emitter).await?,
            }
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
        options: OptionDict,
    ) -> Result<String, Error> {
        arguments::reject_unknown(&options, snapback_dbus::options::ROLLBACK_KEYS, "Rollback")?;
        let id = self.info().id;
        Ok(self.service.rollback(&header, id).await?.as_str().to_string())
    }

    /// Delete this set; same as Manager.Delete on this set.
    async fn delete(&self, #[zbus(header)] header: Header<'_>) -> Result<(), Error> {
        let id = self.info().id;
        self.service.delete(&header, id).await
    }

    /// The block device that shows `volume` as it was when the set was taken, and a read-only
    /// descriptor of it (mount it read-only: ext4 with `noload`, XFS with `norecovery,nouuid`).
    #[zbus(out_args("device", "fd"))]
    async fn open_volume(
        &self,
        #[zbus(header)] header: Header<'_>,
        volume: String,
        options: OptionDict,
    ) -> Result<(String, zbus::OwnedFd), Error> {
        arguments::reject_unknown(
            &options,
            snapback_dbus::options::OPEN_VOLUME_KEYS,
            "OpenVolume",
        )?;
        let id = self.info().id;
        let opened = self.service.open_volume(&header, id, volume).await?;
        let fd = std::os::fd::OwnedFd::from(opened.file);
        Ok((opened.device.display().to_string(), zbus::OwnedFd::from(fd)))
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
