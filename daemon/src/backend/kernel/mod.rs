//! The kernel backend: the kernel's dm-snapshot targets are the data path.
//!
//! A volume's stack, as LVM2 builds it:
//! `snapback-<vol>-real` (linear over the backing device),
//! per snapshot `snapback-<vol>-<id>-cow` (linear over its pool extents) and
//! `snapback-<vol>-<id>` (`snapshot real cow P chunk`), and on top the device users mount,
//! `snapback-<vol>` (`snapshot-origin real`, `snapshot-merge real cow P chunk` while rolling
//! back, or plain `linear` over the backing device when it has no snapshots).

pub mod backend;
pub mod boot_devices;
pub mod dm;
pub mod names;
pub mod stack;
pub mod status;
pub mod table;

pub use backend::{activate, kernel_supported, KernelBackend};
