//! The boot side of a rollback: a set that includes the root volume records the boot
//! configuration (kernels, initramfs images, BLS entries, the boot loader's default) in the
//! pool, and a rollback puts it back, so that the rolled-back root boots the kernel whose
//! modules it has.
//!
//! - [`bls`]: the boot loaders' files (entries, `loader.conf`, `grubenv`);
//! - [`tree`]: which files are managed, capturing them, restoring them crash-safely;
//! - [`store`]: their contents in the pool, deduplicated by SHA-256.

pub mod bls;
pub mod entries;
pub mod store;
pub mod tree;

use std::path::PathBuf;

use serde::Deserialize;

/// The `[boot]` table of `snapback.toml`.
///
/// ```toml
/// [boot]
/// enabled = true              # record and restore /boot with sets of the root volume
/// root_volume = "root"        # default: the volume whose device is mounted at /
/// boot_dir = "/boot"          # default: /boot
/// esp = "/boot/efi"           # default: /boot/efi or /efi, where an ESP is mounted
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub root_volume: Option<String>,
    #[serde(default)]
    pub boot_dir: Option<PathBuf>,
    #[serde(default)]
    pub esp: Option<PathBuf>,
}

// A set of `/` without its kernels rolls back into a system that boots the wrong kernel:
// recording them is what a user of the root volume expects.
fn enabled_by_default() -> bool {
    true
}

impl Default for BootConfig {
    fn default() -> BootConfig {
        BootConfig { enabled: true, root_volume: None, boot_dir: None, esp: None }
    }
}

impl BootConfig {
    /// Where the boot partitions are: the configured places, else `/boot` and the first of
    /// `/boot/efi`, `/efi` that holds an ESP's `EFI` or `loader` directory.
    pub fn roots(&self) -> tree::BootRoots {
        let boot = self.boot_dir.clone().unwrap_or_else(|| PathBuf::from("/boot"));
        let esp = self.esp.clone().or_else(|| {
            ["/boot/efi", "/efi"]
                .into_iter()
                .map(PathBuf::from)
                .find(|dir| dir.join("EFI").is_dir() || dir.join("loader").is_dir())
        });
        tree::BootRoots { boot, esp }
    }
}
