//! Replays the fuzz targets' seeds and every input a fuzzer crashed on (`fuzz/seeds/<target>`,
//! `fuzz/regressions/<target>`) through the very code the targets run (`fuzz/src/exercise`,
//! compiled in here), on stable Rust, in `cargo test`. The engine's own target (`cow_open`)
//! is replayed by the engine's tests (daemon/engine/tests/fuzz_bytes.rs), which must build
//! without the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/src/exercise/mod.rs"]
mod exercise;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// libFuzzer's -timeout in the runs behind fuzz/regressions (README): a debug build is
/// slower, so the limit is generous; an input that hung took minutes.
const INPUT_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs every seed and regression of `target`.
fn replay(target: &str, run: fn(&[u8])) {
    let mut counts = [0usize; 2];
    for (count, kind) in counts.iter_mut().zip(["seeds", "regressions"]) {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = listing.map(|entry| entry.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            // On a thread, so that an input that once hung the fuzzer (a timeout) fails the
            // test instead of hanging it; and named, which the panic inside `run` is not.
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let outcome = std::panic::catch_unwind(|| run(&bytes));
                let _ = done.send(outcome.is_ok());
            });
            match finished.recv_timeout(INPUT_TIME_LIMIT) {
                Ok(true) => {}
                Ok(false) => panic!("{target}: {} fails again", path.display()),
                Err(_) => {
                    panic!("{target}: {} takes longer than {INPUT_TIME_LIMIT:?}", path.display())
                }
            }
            *count += 1;
        }
    }
    let [seeds, _] = counts;
    assert!(seeds >= 3, "{target}: only {seeds} seeds in fuzz/seeds/{target}");
}

/// The targets replayed here, one test each below.
const TARGETS: &[&str] =
    &["registry_slot", "config_toml", "dbus_options", "kernel_status", "boot_files"];

#[test]
fn registry_slot_seeds_and_regressions_replay() {
    replay("registry_slot", exercise::registry_slot::run);
}

#[test]
fn config_toml_seeds_and_regressions_replay() {
    replay("config_toml", exercise::config_toml::run);
}

#[test]
fn dbus_options_seeds_and_regressions_replay() {
    replay("dbus_options", exercise::dbus_options::run);
}

#[test]
fn kernel_status_seeds_and_regressions_replay() {
    replay("kernel_status", exercise::kernel_status::run);
}

#[test]
fn boot_files_seeds_and_regressions_replay() {
    replay("boot_files", exercise::boot_files::run);
}

/// A target added to fuzz/Cargo.toml without a replay here would have its crashes fixed once
/// and never checked again.
#[test]
fn every_fuzz_target_is_replayed() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut declared: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.strip_prefix("path = \"fuzz_targets/"))
        .filter_map(|rest| rest.strip_suffix(".rs\""))
        .collect();
    declared.sort_unstable();
    let mut replayed = TARGETS.to_vec();
    // Replayed by the engine's tests.
    replayed.push("cow_open");
    replayed.sort_unstable();
    assert_eq!(declared, replayed);
}

/// Writes the binary seeds (a registry with sets, COWs and a boot record; bus arguments of
/// each method, both byte orders). Run when their formats change, then commit them:
/// `cargo test -p snapbackd --test fuzz_replay -- --ignored write_binary_seeds`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_binary_seeds() {
    use std::collections::{BTreeMap, HashMap};

    use snapback_dbus::{PoolStatus, Status, VolumeStatus};
    use snapbackd::pool::layout::{encode_slot, DATA_OFFSET};
    use snapbackd::pool::{
        BlobRecord, BootFile, BootRecord, BootRoot, CowRecord, Registry, SetState,
        SnapshotSetRecord, VolumeRecord,
    };
    use zbus::wire::serialized::Context;
    use zbus::wire::{to_bytes, BE, LE};
    use zbus::Variant;

    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let framed = |mode: u8, parts: &[&[u8]]| {
        let mut bytes = vec![mode];
        bytes.extend(parts.join(&0u8));
        bytes
    };

    let empty = Registry::new(4 << 20, DATA_OFFSET, 16);
    let mut registry = empty.clone();
    registry.next_snapshot_id = 4;
    for (name, size) in [("root", 8u64 << 30), ("var_log-1", 1 << 30)] {
        registry.volumes.push(VolumeRecord {
            name: name.into(),
            backing: format!("/dev/vda{}", registry.volumes.len() + 2).into(),
            size_bytes: size,
        });
    }
    let kernel = "a".repeat(64);
    let entry = "b".repeat(64);
    registry.boot_blobs = vec![
        BlobRecord { sha256: kernel.clone(), size: 5 << 20, extents: vec![10, 11] },
        BlobRecord { sha256: entry.clone(), size: 200, extents: vec![12] },
    ];
    let boot = BootRecord {
        files: vec![
            BootFile {
                root: BootRoot::Boot,
                path: "vmlinuz-6.1".into(),
                sha256: kernel.clone(),
                mode: 0o755,
            },
            BootFile {
                root: BootRoot::Boot,
                path: "loader/entries/m-6.1.conf".into(),
                sha256: entry.clone(),
                mode: 0o644,
            },
        ],
    };
    for (id, state, extents, boot) in [
        (1, SetState::Active, vec![0, 1, 2], Some(boot)),
        (3, SetState::MergeScheduled, vec![5, 6, 8], None),
    ] {
        registry.snapshot_sets.push(SnapshotSetRecord {
            id,
            description: format!("dnf upgrade {id}"),
            created_us: 1_765_000_000_000_000 + u64::from(id),
            userdata: BTreeMap::from([("dnf.outcome".to_string(), "success".to_string())]),
            important: id == 3,
            state,
            merge_started: false,
            message: None,
            cows: vec![CowRecord {
                volume: if id == 1 { "root" } else { "var_log-1" }.into(),
                chunk_sectors: 8,
                extents,
            }],
            boot_undo: None,
            boot_restore: None,
            boot,
        });
    }
    let full = serde_json::to_vec(&registry).unwrap();
    let fresh = serde_json::to_vec(&empty).unwrap();
    write("registry_slot", "raw-slot", &framed(0, &[&encode_slot(7, &full)]));
    write("registry_slot", "json-sets-boot", &framed(1, &[&full]));
    write("registry_slot", "json-fresh", &framed(1, &[&fresh]));
    write("registry_slot", "two-copies", &framed(2, &[&fresh, &full]));

    let userdata = HashMap::from([("dnf.transaction", "42"), ("dnf.upgrade", "bash-5.2")]);
    let options: HashMap<&str, Variant<'_>> = HashMap::from([
        ("userdata", Variant::new(userdata.clone())),
        ("important", Variant::new(true)),
        ("cow-size", Variant::new(1u64 << 30)),
    ]);
    let snapshot = (vec!["root", "var_log-1"], "before upgrade", &options);
    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    let path = snapback_dbus::snapshot_path(3);
    let status = Status {
        backend: "kernel".into(),
        version: "0.1.0".into(),
        pool: PoolStatus { path: "/dev/vdb".into(), size: 16 << 30, used: 3 << 30 },
        volumes: HashMap::from([(
            "root".to_string(),
            VolumeStatus {
                device: "/dev/mapper/snapback-root".into(),
                backing: "/dev/vda2".into(),
                state: "active".into(),
                size: 8 << 30,
                auto: true,
                snapshots: vec![path.clone()],
            },
        )]),
        pending: vec![path.clone()],
        merging: vec![],
    };
    for (endian, tag, bit) in [(LE, "le", 0u8), (BE, "be", 0x80)] {
        let ctxt = Context::new(endian, 0);
        let seed = |method: u8, body: &[u8]| framed(method | bit, &[body]);
        write(
            "dbus_options",
            &format!("snapshot-{tag}"),
            &seed(0, &to_bytes(ctxt, &snapshot).unwrap()),
        );
        let rollback = to_bytes(ctxt, &(&path, &no_options)).unwrap();
        write("dbus_options", &format!("rollback-{tag}"), &seed(1, &rollback));
        let update = to_bytes(ctxt, &(&path, "after upgrade", &userdata, &no_options)).unwrap();
        write("dbus_options", &format!("update-metadata-{tag}"), &seed(2, &update));
        write(
            "dbus_options",
            &format!("status-{tag}"),
            &seed(3, &to_bytes(ctxt, &status).unwrap()),
        );
    }
}
