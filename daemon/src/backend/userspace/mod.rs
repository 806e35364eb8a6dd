//! The userspace backend: the exception engine is the data path; volumes are served to the
//! kernel as FUSE files with loop devices on top.
//!
//! - every configured volume gets an engine `Origin` over its backing device, with every
//!   snapshot of the registry attached (a restart finds them all again);
//! - one FUSE filesystem (default `/run/snapback/fuse`, `SNAPBACK_FUSE_DIR` overrides) serves
//!   a file per volume (read-write) and per snapshot (`<volume>@<id>`, read-only), and a loop
//!   device on each volume file is the block device users mount;
//! - a snapshot set suspends all its origins together (after a `sync`, with the file systems
//!   mounted on them frozen: `freeze.rs`), attaches a COW made of
//!   pool extents to each, resumes them; one registry commit makes it real;
//! - a rollback merges at once when no volume of the set is in use (exclusive open of the loop
//!   device succeeds), else it is recorded as `merge-scheduled` and starts at the next open;
//!   merges run in their own threads and resume after a restart;
//! - a monitor thread grows COWs from the pool when above 80 % full and reports snapshots the
//!   engine invalidated.

mod backend;
mod freeze;
pub mod fuse_fs;
pub mod loop_device;
mod merge;
mod monitor;
mod state;
mod volume;

pub use backend::UserspaceBackend;
pub use state::UserspaceOptions;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod fuse_tests;
