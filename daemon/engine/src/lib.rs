//! The snapback exception engine: Linux dm-snapshot's snapshot / snapshot-origin /
//! snapshot-merge semantics over the kernel's persistent exception store format.
//!
//! No D-Bus, no async runtime: everything here is synchronous and testable alone.
//!
//! - [`format`]: the on-disk layout as pure functions;
//! - [`io`]: the block I/O trait, files / block devices, and an in-memory fault-injecting device;
//! - [`store`]: one COW's persistent exception store;
//! - [`origin`]: the data path of an origin and its snapshots, and merging;
//! - [`offline`]: inspect / check / export / merge without a daemon.

pub mod error;
pub mod format;
pub mod io;
pub mod offline;
pub mod origin;
pub mod store;
mod table;
mod writeback;

pub use error::{EngineError, Result};
pub use format::Usage;
