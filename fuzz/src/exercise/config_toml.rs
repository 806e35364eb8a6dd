//! `/etc/snapback/snapback.toml` as `config::load_with_cleanup` reads it: `[pool]`,
//! `[[volume]]` entries (names, devices, sizes), `[cleanup]`, `[boot]`.
//!
//! Input: the file's text (not UTF-8: `load` refuses it before parsing). What parsed must
//! satisfy every rule the parser promises, since the backends rely on them without checking
//! again: valid, unique names that give no two volumes one device-mapper name, unique
//! devices that are not the pool, positive COW sizes, a declared root volume, a valid
//! `[cleanup]`. Refusals name the file, on one line.

use std::collections::HashSet;
use std::path::Path;

use snapbackd::backend::kernel::names;
use snapbackd::backend::{PoolStatus, SetState, SnapshotSetInfo};
use snapbackd::cleanup;
use snapbackd::config;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = config::parse_size(text);
    match config::parse_with_cleanup(text, Path::new("fuzz.toml")) {
        Err(err) => {
            let message = err.to_string();
            assert!(message.starts_with("fuzz.toml: "), "error without the file: {message}");
            assert!(!message.contains('\n'), "error on several lines: {message:?}");
        }
        Ok((config, cleanup_config)) => {
            assert!(!config.volumes.is_empty());
            assert!(!config.pool.path.as_os_str().is_empty());
            let mut names_seen = HashSet::new();
            let mut devices = HashSet::new();
            for volume in &config.volumes {
                config::validate_volume_name(&volume.name).expect("volume names are valid");
                assert!(names_seen.insert(&volume.name), "volume {} twice", volume.name);
                assert!(devices.insert(&volume.device), "device {:?} twice", volume.device);
                assert_ne!(volume.device, config.pool.path, "a volume on the pool");
                assert_ne!(volume.cow_size, Some(0));
                // What the kernel backend checks when it assembles the volume: no panic.
                let _ = names::check_lengths("00000000-0000-4000-8000-000000000000", &volume.name);
            }
            for (i, a) in config.volumes.iter().enumerate() {
                for b in &config.volumes[i + 1..] {
                    assert_eq!(names::clash(&a.name, &b.name), None, "{} / {}", a.name, b.name);
                }
            }
            if let Some(root) = &config.boot.root_volume {
                assert!(config.volumes.iter().any(|v| &v.name == root), "undeclared root {root}");
            }
            cleanup_config.validate().expect("a parsed [cleanup] is valid");
            // The cleanup rules over a few sets with this configuration's limits.
            let sets: Vec<SnapshotSetInfo> = (1..=4u32)
                .map(|id| SnapshotSetInfo {
                    id,
                    description: String::new(),
                    created_us: u64::from(id) * 3_600_000_000,
                    volumes: vec![config.volumes[0].name.clone()],
                    state: if id == 2 { SetState::Invalid } else { SetState::Active },
                    used_bytes: 1 << 20,
                    size_bytes: volume_cow(&config).unwrap_or(1 << 30),
                    merge_progress: 0.0,
                    userdata: Default::default(),
                    important: id == 3,
                    boot_entry: None,
                })
                .collect();
            let pool = PoolStatus {
                path: config.pool.path.clone(),
                size_bytes: 4 << 30,
                used_bytes: 3 << 30,
            };
            let plan = cleanup::plan(&cleanup_config, &sets, &pool, 5 * 3_600_000_000);
            let mut deleted = HashSet::new();
            for deletion in &plan.deletions {
                assert!(deleted.insert(deletion.id), "set {} deleted twice", deletion.id);
            }
        }
    }
}

fn volume_cow(config: &config::Config) -> Option<u64> {
    config.volumes.iter().find_map(|v| v.cow_size)
}
