//! snapback's D-Bus API, version 1: the contract shared by `snapbackd` and its clients.

/// Well-known bus name of the service.
pub const BUS_NAME: &str = "org.snapback.Snapback1";
/// Object path of the manager.
pub const MANAGER_PATH: &str = "/org/snapback/Snapback1";
