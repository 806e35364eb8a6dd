//! snapback's D-Bus API, version 1: the contract shared by `snapbackd` and its clients.
//!
//! - [`names`]: bus name, object paths, interface names, option keys.
//! - [`SetState`], [`VolumeState`]: the states the API reports, with their strings.
//! - [`Error`]: the named errors `org.snapback.Snapback1.Error.*`.
//! - [`ManagerProxy`], [`SnapshotProxy`]: zbus proxies. zbus 6 has no blocking API; a
//!   synchronous client drives them with `zbus::block_on(async { ... })`.
//! - [`Status`]: the typed form of `Manager.Status()`'s `a{sv}` reply.
//! - [`INTROSPECTION_XML`]: the checked-in interface definitions (`org.snapback.Snapback1.xml`);
//!   the daemon's tests compare it with what the running service introspects as.
//!
//! Versioning: a change of meaning is a new interface name (`...Snapback2`). Additions that old
//! clients can ignore (a new method, property or option key) stay in v1 and are listed in
//! [`ADDITIONS`].

pub mod error;
pub mod names;
pub mod proxy;
pub mod state;
pub mod status;

pub use error::{Error, ErrorKind};
pub use names::*;
pub use proxy::{ManagerProxy, SnapshotProxy};
pub use state::{SetState, UnknownState, VolumeState};
pub use status::{PoolStatus, Status, VolumeStatus};

/// The introspection data of both interfaces, as checked in next to this crate.
pub const INTROSPECTION_XML: &str = include_str!("../org.snapback.Snapback1.xml");

/// Members added to v1 after its first definition: (interface, member, why).
pub const ADDITIONS: &[(&str, &str, &str)] = &[(
    MANAGER_INTERFACE,
    "UpdateMetadata",
    "dnf plugin (issue 7): fill in a snapshot's description and userdata after the transaction",
)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_xml_names_both_interfaces_and_every_addition() {
        assert!(INTROSPECTION_XML.contains(&format!("<interface name=\"{MANAGER_INTERFACE}\">")));
        assert!(INTROSPECTION_XML.contains(&format!("<interface name=\"{SNAPSHOT_INTERFACE}\">")));
        for (interface, member, _) in ADDITIONS {
            assert_eq!(*interface, MANAGER_INTERFACE);
            assert!(INTROSPECTION_XML.contains(&format!("<method name=\"{member}\">")), "{member}");
        }
    }
}
