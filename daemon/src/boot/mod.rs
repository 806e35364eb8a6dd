//! The boot side of a rollback: a set that includes the root volume records the boot
//! configuration (kernels, initramfs images, BLS entries, the boot loader's default) in the
//! pool, and a rollback puts it back, so that the rolled-back root boots the kernel whose
//! modules it has.
//!
//! - [`bls`]: the boot loaders' files (entries, `loader.conf`, `grubenv`);
//! - [`tree`]: which files are managed, capturing them, restoring them crash-safely;
//! - [`store`]: their contents in the pool, deduplicated by SHA-256.

pub mod bls;
pub mod store;
pub mod tree;
