//! snapbackd's D-Bus API v1 on a private bus with the project's bus policy (no polkit: every
//! test here runs with `--no-polkit`; polkit has its own test file). Needs root.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{introspect, Fixture, Options, VolumeSpec, MIB};
use futures_util::StreamExt;
use snapback_dbus::{
    snapshot_path, Error, BUS_NAME, INTROSPECTION_XML, MANAGER_PATH, SNAPSHOT_INTERFACE,
};
use zbus::fdo::{IntrospectableProxy, ObjectManagerProxy};
use zbus::{ObjectPath, Variant};

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}

async fn introspect_xml(connection: &zbus::Connection, path: &str) -> String {
    IntrospectableProxy::builder(connection)
        .destination(BUS_NAME)
        .path(path.to_string())
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_matches_the_checked_in_xml() {
    let fx = Fixture::start(Options::default());
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let set = manager.snapshot(&[], "for introspection", no_options()).await.unwrap();

    let mut served =
        introspect::parse(&introspect_xml(&connection, MANAGER_PATH).await, "org.snapback.");
    served.extend(introspect::parse(
        &introspect_xml(&connection, set.as_str()).await,
        "org.snapback.",
    ));
    let checked_in = introspect::parse(INTROSPECTION_XML, "org.snapback.");
    assert_eq!(checked_in.len(), 2, "the checked-in XML has both interfaces");
    // 7 methods, 4 signals, 2 properties; 3 methods, 11 properties.
    assert_eq!(checked_in["org.snapback.Snapback1.Manager"].len(), 13);
    assert_eq!(checked_in["org.snapback.Snapback1.Snapshot"].len(), 14);
    assert_eq!(
        served, checked_in,
        "the daemon serves a different API than dbus/org.snapback.Snapback1.xml"
    );

    // The same, as a person sees it with busctl.
    let out = fx.busctl(&["introspect", BUS_NAME, MANAGER_PATH]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "org.snapback.Snapback1.Manager",
        "org.freedesktop.DBus.ObjectManager",
        ".Snapshot ",
        "assa{sv}",
        ".Rollback ",
        "oa{sv}",
        ".UpdateMetadata",
        ".MergeFinished",
        "\"userspace\"",
    ] {
        assert!(text.contains(needle), "busctl introspect lacks {needle:?}:\n{text}");
    }
    let out = fx.busctl(&["introspect", BUS_NAME, set.as_str(), SNAPSHOT_INTERFACE]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"for introspection\""), "{text}");
    assert!(text.contains(".MergeProgress"), "{text}");
    assert!(text.contains(".OpenVolume") && text.contains("sa{sv}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_backend_pool_and_volumes() {
    let fx = Fixture::start(Options {
        volumes: vec![
            VolumeSpec { name: "root", bytes: 64 * MIB, auto: true },
            VolumeSpec { name: "var_log", bytes: 32 * MIB, auto: false },
        ],
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    assert_eq!(manager.backend().await.unwrap(), "userspace");
    assert_eq!(manager.version().await.unwrap(), env!("CARGO_PKG_VERSION"));

    let status = manager.status().await.unwrap();
    assert_eq!(status.backend, "userspace");
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.pool.path, fx.path("pool.img").display().to_string());
    assert!(status.pool.size > 200 * MIB && status.pool.size <= 256 * MIB, "{:?}", status.pool);
    assert_eq!(status.volumes.len(), 2);
    let root = &status.volumes["root"];
    assert_eq!(root.backing, fx.path("root.img").display().to_string());
    assert_eq!(root.size, 64 * MIB);
    assert!(root.auto);
    assert_eq!(root.state, "active");
    assert!(std::fs::metadata(&root.device).is_ok(), "device {} exists", root.device);
    let var_log = &status.volumes["var_log"];
    assert!(!var_log.auto);
    assert_eq!(var_log.size, 32 * MIB);
    assert!(status.pending.is_empty() && status.merging.is_empty());

    // An empty volume list means the auto volumes only.
    let set = manager.snapshot(&[], "auto only", no_options()).await.unwrap();
    let proxy = fx.snapshot_proxy(&connection, set.as_str()).await;
    assert_eq!(proxy.volumes().await.unwrap(), vec!["root".to_string()]);
    let status = manager.status().await.unwrap();
    assert_eq!(status.volumes["root"].snapshots, vec![set.clone()]);
    assert!(status.volumes["var_log"].snapshots.is_empty());
    assert!(status.pool.used > 0);

    // And over busctl, the exact keys a shell user reads.
    let out =
        fx.busctl(&["call", BUS_NAME, MANAGER_PATH, "org.snapback.Snapback1.Manager", "Status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "\"backend\" s \"userspace\"",
        "\"pool\" a{sv} 3",
        "\"volumes\" a{sa{sv}} 2",
        "\"pending\" ao 0",
        "\"merging\" ao 0",
        "\"device\" s \"/dev/loop",
    ] {
        assert!(text.contains(needle), "Status over busctl lacks {needle:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_objects_signals_and_properties_follow_the_sets() {
    let fx = Fixture::start(Options::default());
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let object_manager = ObjectManagerProxy::builder(&connection)
        .destination(BUS_NAME)
        .path(MANAGER_PATH)
        .build()
        .await
        .unwrap();
    let mut created = manager.receive_snapshot_created().await.unwrap();
    let mut removed = manager.receive_snapshot_removed().await.unwrap();
    let mut added = object_manager.receive_interfaces_added().await.unwrap();

    let mut options = HashMap::new();
    options.insert("userdata", Variant::new(HashMap::from([("dnf.tid", "17")])));
    options.insert("important", Variant::new(true));
    options.insert("cow-size", Variant::new(16 * MIB));
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as u64;
    let path = manager.snapshot(&["data"], "before upgrade", options).await.unwrap();
    assert!(path.as_str().starts_with("/org/snapback/Snapback1/snapshot/"));

    let signal =
        tokio::time::timeout(Duration::from_secs(20), created.next()).await.unwrap().unwrap();
    assert_eq!(signal.args().unwrap().snapshot().as_str(), path.as_str());
    let signal =
        tokio::time::timeout(Duration::from_secs(20), added.next()).await.unwrap().unwrap();
    let args = signal.args().unwrap();
    assert_eq!(args.object_path().as_str(), path.as_str());
    assert!(args.interfaces_and_properties().keys().any(|i| i.as_str() == SNAPSHOT_INTERFACE));

    let snapshot = fx.snapshot_proxy(&connection, path.as_str()).await;
    let id = snapshot.id().await.unwrap();
    assert_eq!(snapshot_path(id).as_str(), path.as_str());
    assert_eq!(snapshot.description().await.unwrap(), "before upgrade");
    assert_eq!(snapshot.volumes().await.unwrap(), vec!["data".to_string()]);
    assert_eq!(snapshot.state().await.unwrap(), "active");
    assert!(snapshot.important().await.unwrap());
    assert_eq!(snapshot.userdata().await.unwrap().get("dnf.tid").map(String::as_str), Some("17"));
    assert!(snapshot.size_bytes().await.unwrap() >= 16 * MIB);
    assert_eq!(snapshot.merge_progress().await.unwrap(), 0.0);
    let created_us = snapshot.created().await.unwrap();
    assert!(created_us >= before && created_us < before + 60_000_000, "{created_us} vs {before}");

    let managed = object_manager.get_managed_objects().await.unwrap();
    assert!(managed.keys().any(|p| p.as_str() == path.as_str()));

    // UpdateMetadata (the dnf plugin's addition) changes properties with PropertiesChanged.
    // Cache up front: build() returns only once the PropertiesChanged match is in place, so
    // the change below cannot slip by before the proxy listens (Lazily raced under load).
    let cached = snapback_dbus::SnapshotProxy::builder(&connection)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::Yes)
        .build()
        .await
        .unwrap();
    let mut description_changes = cached.receive_description_changed().await;
    manager
        .update_metadata(
            &path.as_ref(),
            "upgrade of 12 packages",
            HashMap::from([("dnf.result", "ok")]),
            no_options(),
        )
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let change = description_changes.next().await.unwrap();
            let value = change.get().await.unwrap();
            if value == "upgrade of 12 packages" {
                return value;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(change, "upgrade of 12 packages");
    let userdata = snapshot.userdata().await.unwrap();
    assert_eq!(userdata.get("dnf.tid").map(String::as_str), Some("17"), "merged, not replaced");
    assert_eq!(userdata.get("dnf.result").map(String::as_str), Some("ok"));

    // Delete through the snapshot object itself.
    snapshot.delete().await.unwrap();
    let signal =
        tokio::time::timeout(Duration::from_secs(20), removed.next()).await.unwrap().unwrap();
    assert_eq!(signal.args().unwrap().snapshot().as_str(), path.as_str());
    assert!(snapshot.description().await.is_err(), "the object is gone");
    let managed = object_manager.get_managed_objects().await.unwrap();
    assert!(!managed.keys().any(|p| p.as_str() == path.as_str()));
    assert!(manager.status().await.unwrap().volumes["data"].snapshots.is_empty());
    match manager.delete(&path.as_ref()).await {
        Err(Error::NotFound(message)) => assert!(message.contains(&id.to_string()), "{message}"),
        other => panic!("second Delete: {other:?}"),
    }
}

/// Asserts `result` is the named error `name` and returns its message.
fn expect_error<T: std::fmt::Debug>(result: Result<T, Error>, name: &str) -> String {
    match result {
        Err(e) if e.short_name() == Some(name) => {
            use zbus::DBusError;
            assert_eq!(e.name().as_str(), format!("org.snapback.Snapback1.Error.{name}"));
            e.description().unwrap_or_default().to_string()
        }
        other => panic!("expected org.snapback.Snapback1.Error.{name}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_named_errors_and_change_nothing() {
    let fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "data", bytes: 64 * MIB, auto: true }],
        pool_bytes: 64 * MIB,
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let set = manager.snapshot(&["data"], "kept", no_options()).await.unwrap();
    let before = manager.status().await.unwrap();

    let message = expect_error(manager.snapshot(&["nope"], "", no_options()).await, "NotFound");
    assert!(message.contains("nope"), "{message}");

    let not_a_set = ObjectPath::try_from("/org/snapback/Snapback1").unwrap();
    let message = expect_error(manager.rollback(&not_a_set, no_options()).await, "NotFound");
    assert!(message.contains("is not a snapshot set"), "{message}");
    let missing = snapshot_path(4242);
    expect_error(manager.rollback(&missing.as_ref(), no_options()).await, "NotFound");
    expect_error(manager.delete(&missing.as_ref()).await, "NotFound");
    expect_error(manager.cancel_rollback(&missing.as_ref()).await, "NotFound");

    for (key, value, want) in [
        ("important", Variant::new("yes"), "type b"),
        ("cow-size", Variant::new(-1i64), "type t"),
        ("userdata", Variant::new(HashMap::from([("k", 1u32)])), "type a{ss}"),
    ] {
        let message = expect_error(
            manager.snapshot(&["data"], "", HashMap::from([(key, value)])).await,
            "InvalidArgument",
        );
        assert!(message.contains(key) && message.contains(want), "{message}");
    }
    let message = expect_error(
        manager.snapshot(&["data"], "", HashMap::from([("colour", Variant::new("red"))])).await,
        "InvalidArgument",
    );
    assert!(message.contains("'colour'"), "{message}");
    let message = expect_error(
        manager.rollback(&set.as_ref(), HashMap::from([("now", Variant::new(true))])).await,
        "InvalidArgument",
    );
    assert!(message.contains("'now'"), "{message}");
    let message = expect_error(manager.cancel_rollback(&set.as_ref()).await, "InvalidArgument");
    assert!(message.contains("no scheduled rollback"), "{message}");

    // A COW bigger than the pool: NoSpace, and no half-made set left behind.
    let message = expect_error(
        manager
            .snapshot(&["data"], "too big", HashMap::from([("cow-size", Variant::new(1u64 << 40))]))
            .await,
        "NoSpace",
    );
    assert!(!message.is_empty());

    let after = manager.status().await.unwrap();
    assert_eq!(after, before, "failed calls changed the daemon's state");
    let out = fx.busctl(&["tree", BUS_NAME]);
    let tree = String::from_utf8_lossy(&out.stdout);
    assert_eq!(tree.matches("/snapshot/").count(), 1, "one set object only:\n{tree}");

    // busctl shows the message; dbus-send the error name (the bus carries both).
    let out = fx.busctl(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        "org.snapback.Snapback1.Manager",
        "Snapshot",
        "assa{sv}",
        "1",
        "nope",
        "",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_after_a_new_set_keeps_the_newest() {
    let fx = Fixture::start(Options {
        extra_config: "\n[cleanup]\nnumber_limit = 2\nmin_age_seconds = 0\ninterval_seconds = 0\n"
            .into(),
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let mut removed = manager.receive_snapshot_removed().await.unwrap();
    let mut sets = Vec::new();
    for n in 0..4 {
        sets.push(manager.snapshot(&["data"], &format!("set {n}"), no_options()).await.unwrap());
        let kept = manager.status().await.unwrap().volumes["data"].snapshots.len();
        assert!(kept <= 2, "after set {n}: {kept} sets kept");
    }
    let mut kept = manager.status().await.unwrap().volumes["data"].snapshots.clone();
    kept.sort_by_key(|p| snapback_dbus::snapshot_id(p.as_str()));
    assert_eq!(kept, sets[2..].to_vec(), "the two newest stay");
    for old in &sets[..2] {
        let signal =
            tokio::time::timeout(Duration::from_secs(20), removed.next()).await.unwrap().unwrap();
        assert_eq!(signal.args().unwrap().snapshot().as_str(), old.as_str());
    }
    assert!(fx.daemon_log().contains("cleanup: deleted snapshot set"), "{}", fx.daemon_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_volume_list_without_auto_volumes_is_an_invalid_argument() {
    let fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "data", bytes: 32 * MIB, auto: false }],
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let message = expect_error(manager.snapshot(&[], "", no_options()).await, "InvalidArgument");
    assert!(message.contains("auto"), "{message}");
    assert!(manager.status().await.unwrap().volumes["data"].snapshots.is_empty());
    // Naming the volume works.
    manager.snapshot(&["data"], "named", no_options()).await.unwrap();
}

/// The boot side through the bus: a set of the root volume (here `[boot] root_volume`, with a
/// /boot in a directory of the test) has a boot-menu entry named by `BootEntry`;
/// `RefreshBootEntries` writes it again after it was lost, and it goes with its set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_entries_follow_the_sets_and_can_be_written_again() {
    let boot_dir =
        tempfile::Builder::new().prefix("snapback-boot-").tempdir_in("/var/tmp").unwrap();
    let boot = boot_dir.path().join("boot");
    std::fs::create_dir_all(boot.join("loader/entries")).unwrap();
    std::fs::create_dir_all(boot.join("grub2")).unwrap();
    std::fs::write(boot.join("vmlinuz-6.11"), "kernel 6.11").unwrap();
    std::fs::write(boot.join("initramfs-6.11.img"), "initramfs 6.11").unwrap();
    std::fs::write(
        boot.join("loader/entries/m-6.11.conf"),
        "title Fedora 6.11\nlinux /vmlinuz-6.11\ninitrd /initramfs-6.11.img\noptions ro\n",
    )
    .unwrap();
    std::fs::write(boot.join("grub2/grubenv"), "# GRUB Environment Block\nsaved_entry=m-6.11\n")
        .unwrap();
    let fx = Fixture::start(Options {
        extra_config: format!(
            "\n[boot]\nroot_volume = \"data\"\nboot_dir = \"{}\"\nesp = \"{}\"\n",
            boot.display(),
            boot_dir.path().join("esp").display()
        ),
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let set = manager.snapshot(&[], "before upgrade", no_options()).await.unwrap();
    let proxy = fx.snapshot_proxy(&connection, set.as_str()).await;
    let entry = proxy.boot_entry().await.unwrap();
    assert_eq!(entry, boot.join("loader/entries/snapback-rollback-1.conf").display().to_string());
    let text = std::fs::read_to_string(&entry).unwrap();
    assert!(
        text.contains("snapback.rollback=1")
            && text.contains("title Roll back to snapshot 1: before upgrade"),
        "{text}"
    );

    // Lost (an administrator cleaned /boot): written again, with the kernel copy it boots.
    std::fs::remove_file(&entry).unwrap();
    std::fs::remove_dir_all(boot.join("snapback")).unwrap();
    let written = manager.refresh_boot_entries().await.unwrap();
    assert_eq!(written, vec![entry.clone()]);
    let text = std::fs::read_to_string(&entry).unwrap();
    let kernel = text.lines().find_map(|line| line.strip_prefix("linux /")).unwrap();
    assert_eq!(std::fs::read_to_string(boot.join(kernel)).unwrap(), "kernel 6.11");

    manager.delete(&set).await.unwrap();
    assert!(!std::path::Path::new(&entry).exists(), "the entry goes with its set");
    assert!(!boot.join(kernel).exists(), "and so does the kernel copy only it booted");
    assert!(boot.join("vmlinuz-6.11").exists());
    assert!(manager.refresh_boot_entries().await.unwrap().is_empty());
}
