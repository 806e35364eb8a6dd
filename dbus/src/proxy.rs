//! Client-side proxies for both interfaces.
//!
//! Mutating methods carry `allow_interactive_auth`, so that polkit may ask the user for a
//! password through their authentication agent (the daemon passes the flag on to polkit).
//! zbus 6 generates async proxies only; synchronous code wraps calls in `zbus::block_on`.

use std::collections::HashMap;

use zbus::{ObjectPath, OwnedObjectPath, Variant};

use crate::{Error, Status};

/// `org.snapback.Snapback1.Manager` at `/org/snapback/Snapback1`.
#[zbus::proxy(
    interface = "org.snapback.Snapback1.Manager",
    default_service = "org.snapback.Snapback1",
    default_path = "/org/snapback/Snapback1"
)]
pub trait Manager {
    /// New snapshot set over `volumes` (empty = every `auto` volume). Options: `userdata`
    /// (a{ss}), `important` (b), `cow-size` (t, bytes). Returns the set's object path.
    #[zbus(allow_interactive_auth)]
    fn snapshot(
        &self,
        volumes: &[&str],
        description: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, Error>;

    /// Roll the set's volumes back: `"merging"` now, or `"scheduled"` for next boot.
    #[zbus(allow_interactive_auth)]
    fn rollback(
        &self,
        snapshot: &ObjectPath<'_>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<String, Error>;

    /// Un-schedule a pending rollback.
    #[zbus(allow_interactive_auth)]
    fn cancel_rollback(&self, snapshot: &ObjectPath<'_>) -> Result<(), Error>;

    /// Remove a snapshot set and free its COW space.
    #[zbus(allow_interactive_auth)]
    fn delete(&self, snapshot: &ObjectPath<'_>) -> Result<(), Error>;

    /// Backend, pool, volumes, pending and running merges (see [`Status`]).
    fn status(&self) -> Result<Status, Error>;

    /// Addition to v1 (dnf plugin): replace the description (unless empty) and merge
    /// `userdata` into the set's userdata. No option keys are defined yet.
    #[zbus(allow_interactive_auth)]
    fn update_metadata(
        &self,
        snapshot: &ObjectPath<'_>,
        description: &str,
        userdata: HashMap<&str, &str>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<(), Error>;

    /// Addition to v1: writes the boot-menu entry ("Roll back to snapshot N") of every set
    /// that recorded /boot again, with the kernel copies it boots, and removes those of sets
    /// that are gone. Returns the entry files written. Checked as org.snapback.snapshot.
    #[zbus(allow_interactive_auth)]
    fn refresh_boot_entries(&self) -> Result<Vec<String>, Error>;

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> zbus::Result<String>;

    /// `kernel` or `userspace`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn backend(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn snapshot_created(&self, snapshot: ObjectPath<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    fn snapshot_removed(&self, snapshot: ObjectPath<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    fn rollback_scheduled(&self, snapshot: ObjectPath<'_>) -> zbus::Result<()>;

    /// A merge ended; `ok == false` comes with what went wrong in `message`.
    #[zbus(signal)]
    fn merge_finished(&self, snapshot: ObjectPath<'_>, ok: bool, message: &str)
        -> zbus::Result<()>;
}

/// `org.snapback.Snapback1.Snapshot`, one object per set at
/// `/org/snapback/Snapback1/snapshot/<id>`; build it with `SnapshotProxy::builder(&conn).path(p)`.
#[zbus::proxy(
    interface = "org.snapback.Snapback1.Snapshot",
    default_service = "org.snapback.Snapback1"
)]
pub trait Snapshot {
    /// Same as `Manager.Rollback` on this set.
    #[zbus(allow_interactive_auth)]
    fn rollback(&self, options: HashMap<&str, Variant<'_>>) -> Result<String, Error>;

    /// Same as `Manager.Delete` on this set.
    #[zbus(allow_interactive_auth)]
    fn delete(&self) -> Result<(), Error>;

    /// The block device that shows `volume` as it was when the set was taken, and a read-only
    /// descriptor of it.
    #[zbus(allow_interactive_auth)]
    fn open_volume(
        &self,
        volume: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<(String, zbus::OwnedFd), Error>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;

    /// Microseconds since the Unix epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn created(&self) -> zbus::Result<u64>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn volumes(&self) -> zbus::Result<Vec<String>>;

    /// One of [`crate::SetState`]'s strings.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn used_bytes(&self) -> zbus::Result<u64>;

    #[zbus(property)]
    fn size_bytes(&self) -> zbus::Result<u64>;

    /// 0.0 ..= 1.0 while merging.
    #[zbus(property)]
    fn merge_progress(&self) -> zbus::Result<f64>;

    #[zbus(property)]
    fn userdata(&self) -> zbus::Result<HashMap<String, String>>;

    #[zbus(property)]
    fn important(&self) -> zbus::Result<bool>;

    /// The set's boot-menu entry file ("" when it has none).
    #[zbus(property)]
    fn boot_entry(&self) -> zbus::Result<String>;
}
