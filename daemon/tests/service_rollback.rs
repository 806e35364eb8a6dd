//! End to end over the bus: ext4 on the volume's loop device, snapshot, change, roll back,
//! and compare the whole tree byte for byte; two-volume sets; busy volumes; a daemon restart
//! in the middle of a merge; an invalidated snapshot; 50 concurrent Status clients while a
//! merge and a snapshot run. Needs root.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    cow_size, full_tree, pattern, run, wait_merge_end, Fixture, Options, VolumeSpec, MIB,
};
use futures_util::StreamExt;
use snapback_dbus::{Error, ManagerProxy};
use zbus::OwnedObjectPath;

fn write_file(path: &Path, len: usize, seed: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let mut file = fs::File::create(path).unwrap();
    file.write_all(&pattern(len, seed)).unwrap();
    file.sync_all().unwrap();
}

/// A tree with small files, nested directories, a symlink and a large file.
fn populate(root: &Path, seed: u64, large: usize) {
    for i in 0..40u64 {
        write_file(&root.join(format!("etc/conf-{i}.txt")), 100 + (i as usize) * 37, seed + i);
    }
    for i in 0..10u64 {
        write_file(
            &root.join(format!("usr/lib/pkg{}/lib{i}.so", i % 3)),
            20_000 + (i as usize) * 4096,
            seed + 100 + i,
        );
    }
    write_file(&root.join("var/big.bin"), large, seed + 1000);
    std::os::unix::fs::symlink("../etc/conf-1.txt", root.join("usr/link")).unwrap();
}

/// Adds, modifies, deletes and rewrites a large file.
fn churn(root: &Path, seed: u64, large: usize) {
    for i in 0..20u64 {
        write_file(&root.join(format!("etc/new-{i}.txt")), 3000, seed + i);
    }
    for i in (0..40u64).step_by(3) {
        write_file(&root.join(format!("etc/conf-{i}.txt")), 555, seed + 50 + i);
    }
    fs::remove_dir_all(root.join("usr/lib/pkg1")).unwrap();
    fs::remove_file(root.join("usr/link")).unwrap();
    write_file(&root.join("var/big.bin"), large, seed + 2000);
    write_file(&root.join("var/other-big.bin"), large / 2, seed + 3000);
    run("sync", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_tree_byte_for_byte() {
    let mut fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "root", bytes: 128 * MIB, auto: true }],
        pool_bytes: 256 * MIB,
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let device = fx.device_of(&connection, "root").await;
    fx.mkfs(&device);
    let mnt = fx.mount(&device, "mnt");
    populate(&mnt, 1, 12 * MIB as usize);
    let before = full_tree(&mnt);
    fx.umount(&mnt);

    let set = manager.snapshot(&["root"], "before churn", cow_size(96 * MIB)).await.unwrap();
    let mnt = fx.mount(&device, "mnt");
    churn(&mnt, 7, 12 * MIB as usize);
    let changed = full_tree(&mnt);
    assert_ne!(changed, before, "the churn changed the tree");
    fx.umount(&mnt);
    // UsedBytes follows the backend through events and a 2 s poll (60 s: a liveness bound on
    // a loaded machine, not a latency check).
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    let started = Instant::now();
    while snapshot.used_bytes().await.unwrap() <= 12 * MIB {
        assert!(started.elapsed() < Duration::from_secs(60), "UsedBytes never showed the COW data");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut finished = manager.receive_merge_finished().await.unwrap();
    let outcome = manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap();
    assert_eq!(outcome, "merging");
    let signal = tokio::time::timeout(Duration::from_secs(120), finished.next())
        .await
        .expect("MergeFinished within 120 s")
        .unwrap();
    let args = signal.args().unwrap();
    assert_eq!(args.snapshot().as_str(), set.as_str());
    assert!(*args.ok(), "merge failed: {}", args.message());
    wait_merge_end(&fx, &manager, &set, Duration::from_secs(30)).await;

    let mnt = fx.mount(&device, "mnt");
    let after = full_tree(&mnt);
    fx.umount(&mnt);
    assert_eq!(after.0, before.0, "paths, types, modes, sizes and links are back");
    assert_eq!(after.1, before.1, "every file's content is back");
    let status = manager.status().await.unwrap();
    assert_eq!(status.volumes["root"].state, "active");
    assert!(status.volumes["root"].snapshots.is_empty(), "the merged set is removed");
    assert!(
        fx.daemon_log().contains("434d125d881e4dcd99ae6d046f431929"),
        "merge-finished MESSAGE_ID logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_volume_set_rolls_back_as_one() {
    let mut fx = Fixture::start(Options {
        volumes: vec![
            VolumeSpec { name: "sys", bytes: 64 * MIB, auto: true },
            VolumeSpec { name: "var", bytes: 64 * MIB, auto: true },
        ],
        pool_bytes: 256 * MIB,
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let mut trees = Vec::new();
    for (n, name) in ["sys", "var"].into_iter().enumerate() {
        let device = fx.device_of(&connection, name).await;
        fx.mkfs(&device);
        let mnt = fx.mount(&device, &format!("mnt-{name}"));
        populate(&mnt, 10 + n as u64, 4 * MIB as usize);
        trees.push(full_tree(&mnt));
        fx.umount(&mnt);
    }
    let set = manager.snapshot(&[], "both", cow_size(48 * MIB)).await.unwrap();
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    let mut volumes = snapshot.volumes().await.unwrap();
    volumes.sort();
    assert_eq!(volumes, vec!["sys".to_string(), "var".to_string()]);
    for (n, name) in ["sys", "var"].into_iter().enumerate() {
        let device = fx.device_of(&connection, name).await;
        let mnt = fx.mount(&device, &format!("mnt-{name}"));
        churn(&mnt, 20 + n as u64, 4 * MIB as usize);
        fx.umount(&mnt);
    }
    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "merging");
    wait_merge_end(&fx, &manager, &set, Duration::from_secs(120)).await;
    for (n, name) in ["sys", "var"].into_iter().enumerate() {
        let device = fx.device_of(&connection, name).await;
        let mnt = fx.mount(&device, &format!("mnt-{name}"));
        let after = full_tree(&mnt);
        fx.umount(&mnt);
        assert_eq!(after, trees[n], "volume {name} is back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_volume_rollback_is_scheduled_cancelled_and_runs_at_next_start() {
    let mut fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "root", bytes: 64 * MIB, auto: true }],
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let device = fx.device_of(&connection, "root").await;
    fx.mkfs(&device);
    let mnt = fx.mount(&device, "mnt");
    populate(&mnt, 3, 2 * MIB as usize);
    run("sync", &[]);
    let set = manager.snapshot(&["root"], "mounted", cow_size(32 * MIB)).await.unwrap();
    let before = full_tree(&mnt);
    churn(&mnt, 4, 2 * MIB as usize);

    let mut scheduled = manager.receive_rollback_scheduled().await.unwrap();
    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "scheduled");
    let signal =
        tokio::time::timeout(Duration::from_secs(20), scheduled.next()).await.unwrap().unwrap();
    assert_eq!(signal.args().unwrap().snapshot().as_str(), set.as_str());
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    assert_eq!(snapshot.state().await.unwrap(), "merge-scheduled");
    assert_eq!(manager.status().await.unwrap().pending, vec![set.clone()]);
    assert_eq!(
        manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(),
        "scheduled",
        "asking again is idempotent"
    );
    assert!(
        fx.daemon_log().contains("232e5b9c367b440f8372d816dfe6b0f1"),
        "rollback-scheduled MESSAGE_ID"
    );

    manager.cancel_rollback(&set.as_ref()).await.unwrap();
    assert_eq!(snapshot.state().await.unwrap(), "active");
    assert!(manager.status().await.unwrap().pending.is_empty());
    assert!(matches!(manager.cancel_rollback(&set.as_ref()).await, Err(Error::InvalidArgument(_))));

    // Schedule again, unmount, restart the daemon: the merge runs when the volume is assembled.
    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "scheduled");
    fx.umount(&mnt);
    drop(snapshot);
    drop(manager);
    drop(connection);
    assert!(fx.stop_daemon().success(), "{}", fx.daemon_log());
    fx.start_daemon();
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    wait_merge_end(&fx, &manager, &set, Duration::from_secs(120)).await;
    let device = fx.device_of(&connection, "root").await;
    let mnt = fx.mount(&device, "mnt");
    let after = full_tree(&mnt);
    fx.umount(&mnt);
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_merge_resumes_and_finishes() {
    let mut fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "root", bytes: 128 * MIB, auto: true }],
        pool_bytes: 256 * MIB,
        // Small committed steps: the merge takes long enough to be interrupted.
        merge_step_bytes: Some(64 * 1024),
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let device = fx.device_of(&connection, "root").await;
    fx.mkfs(&device);
    let mnt = fx.mount(&device, "mnt");
    populate(&mnt, 5, 40 * MIB as usize);
    let before = full_tree(&mnt);
    fx.umount(&mnt);
    let set = manager.snapshot(&["root"], "big", cow_size(128 * MIB)).await.unwrap();
    let mnt = fx.mount(&device, "mnt");
    churn(&mnt, 6, 40 * MIB as usize);
    fx.umount(&mnt);

    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "merging");
    // While it merges: a second rollback and a delete are refused by name.
    assert!(matches!(
        manager.rollback(&set.as_ref(), HashMap::new()).await,
        Err(Error::AlreadyMerging(_))
    ));
    assert!(matches!(manager.delete(&set.as_ref()).await, Err(Error::Busy(_))));
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    let started = Instant::now();
    let progress = loop {
        let p = snapshot.merge_progress().await.unwrap();
        if p > 0.05 {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no merge progress:\n{}",
            fx.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(progress < 1.0, "merge finished before the restart; make the steps smaller");
    assert_eq!(snapshot.state().await.unwrap(), "merging");
    drop(snapshot);
    drop(manager);
    drop(connection);
    let stopped = Instant::now();
    assert!(fx.stop_daemon().success(), "{}", fx.daemon_log());
    eprintln!(
        "restart_mid_merge: stopped at {:.0}% after {:?}",
        progress * 100.0,
        stopped.elapsed()
    );

    fx.start_daemon();
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let status = manager.status().await.unwrap();
    let resumed = status.merging.contains(&set) || !status.volumes["root"].snapshots.contains(&set);
    assert!(resumed, "after restart the set is merging (or already merged): {status:?}");
    wait_merge_end(&fx, &manager, &set, Duration::from_secs(300)).await;
    let mnt = fx.mount(&device_after(&fx, &connection).await, "mnt");
    let after = full_tree(&mnt);
    fx.umount(&mnt);
    assert_eq!(after, before, "resumed merge restored the tree");
}

async fn device_after(fx: &Fixture, connection: &zbus::Connection) -> String {
    fx.device_of(connection, "root").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_snapshot_is_invalid_and_cannot_be_rolled_back() {
    // A pool with room for few extents: the COW cannot grow past it.
    let fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "root", bytes: 64 * MIB, auto: true }],
        pool_bytes: 24 * MIB,
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let device = fx.device_of(&connection, "root").await;
    let set = manager.snapshot(&["root"], "small", cow_size(4 * MIB)).await.unwrap();
    // Write the whole volume: far more than the COW and the pool hold.
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={device}"),
            "bs=1M",
            "count=48",
            "oflag=direct",
            "status=none",
        ],
    );
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    let started = Instant::now();
    while snapshot.state().await.unwrap() != "invalid" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "snapshot never invalidated:\n{}",
            fx.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match manager.rollback(&set.as_ref(), HashMap::new()).await {
        Err(Error::SnapshotInvalid(message)) => assert!(message.contains("invalid"), "{message}"),
        other => panic!("rollback of an invalid snapshot: {other:?}"),
    }
    // The 2 s poll can publish the invalid state before the monitor's SnapshotInvalidated event
    // (sent just after the state change) has reached the pump that logs it.
    fx.wait_for_log("a9b90246cd3b49e08bb01a35a6b155a1").await;
    // The origin kept working: the writes are there.
    let data = fs::read(&device).unwrap();
    assert!(data[..48 * MIB as usize].iter().all(|b| *b == 0));
    manager.delete(&set.as_ref()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_status_clients_answer_during_a_merge_and_a_snapshot() {
    let mut fx = Fixture::start(Options {
        volumes: vec![
            VolumeSpec { name: "root", bytes: 128 * MIB, auto: true },
            VolumeSpec { name: "home", bytes: 32 * MIB, auto: false },
        ],
        pool_bytes: 256 * MIB,
        merge_step_bytes: Some(128 * 1024),
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let device = fx.device_of(&connection, "root").await;
    fx.mkfs(&device);
    let mnt = fx.mount(&device, "mnt");
    populate(&mnt, 8, 32 * MIB as usize);
    fx.umount(&mnt);
    let set = manager.snapshot(&["root"], "load", cow_size(128 * MIB)).await.unwrap();
    let mnt = fx.mount(&device, "mnt");
    churn(&mnt, 9, 32 * MIB as usize);
    fx.umount(&mnt);
    // A caching proxy follows the set through PropertiesChanged alone.
    // Cached up front: listening before the Rollback call, not lazily after it.
    let watched = snapback_dbus::SnapshotProxy::builder(&connection)
        .path(set.clone())
        .cache_properties(zbus::proxy::CacheProperties::Yes)
        .build()
        .await
        .unwrap();
    let mut states = watched.receive_state_changed().await;
    let mut progress = watched.receive_merge_progress_changed().await;
    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "merging");
    let state = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let value = states.next().await.unwrap().get().await.unwrap();
            if value != "active" {
                return value;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(state, "merging", "PropertiesChanged carried State");
    let first = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let value = progress.next().await.unwrap().get().await.unwrap();
            if value > 0.0 {
                return value;
            }
        }
    })
    .await
    .expect("PropertiesChanged carried MergeProgress");
    assert!(first > 0.0 && first <= 1.0);

    let mut clients = Vec::new();
    for _ in 0..50 {
        let address = fx.bus_address.clone();
        clients.push(tokio::spawn(async move {
            let connection =
                zbus::connection::Builder::address(address.as_str()).build().await.unwrap();
            let manager = ManagerProxy::new(&connection).await.unwrap();
            let mut latencies = Vec::new();
            let mut saw_merging = false;
            for _ in 0..20 {
                let started = Instant::now();
                let status = manager.status().await.unwrap();
                latencies.push(started.elapsed());
                saw_merging |= !status.merging.is_empty();
            }
            (latencies, saw_merging)
        }));
    }
    // A snapshot of another volume at the same time.
    let other = manager.snapshot(&["home"], "concurrent", HashMap::new()).await.unwrap();
    let mut latencies = Vec::new();
    let mut merging_seen = 0;
    for client in clients {
        let (l, saw) = client.await.unwrap();
        latencies.extend(l);
        merging_seen += saw as usize;
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "status_under_load: {} calls by 50 clients, p50 {:?}, p99 {:?}, max {:?}, {} clients saw the merge",
        latencies.len(),
        p50,
        p99,
        max,
        merging_seen
    );
    assert_eq!(latencies.len(), 50 * 20, "every call answered");
    assert!(merging_seen > 0, "the calls ran while the merge did");
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
    let proxy = fx.snapshot_proxy(&connection, other.as_str()).await;
    assert_eq!(proxy.state().await.unwrap(), "active");
    wait_merge_end(&fx, &manager, &set, Duration::from_secs(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_merge_resumes_and_finishes() {
    let mut fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "root", bytes: 128 * MIB, auto: true }],
        pool_bytes: 256 * MIB,
        merge_step_bytes: Some(64 * 1024),
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let device = fx.device_of(&connection, "root").await;
    fx.mkfs(&device);
    let mnt = fx.mount(&device, "mnt");
    populate(&mnt, 15, 40 * MIB as usize);
    let before = full_tree(&mnt);
    fx.umount(&mnt);
    let set = manager.snapshot(&["root"], "crash", cow_size(128 * MIB)).await.unwrap();
    let mnt = fx.mount(&device, "mnt");
    churn(&mnt, 16, 40 * MIB as usize);
    fx.umount(&mnt);
    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "merging");
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    let started = Instant::now();
    let progress = loop {
        let p = snapshot.merge_progress().await.unwrap();
        if p > 0.05 {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no merge progress:\n{}",
            fx.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(progress < 1.0, "merge finished before the crash");
    drop(snapshot);
    drop(manager);
    drop(connection);
    fx.kill_daemon(&[device]);
    eprintln!("crash_mid_merge: SIGKILL at {:.0}%", progress * 100.0);

    fx.start_daemon();
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    wait_merge_end(&fx, &manager, &set, Duration::from_secs(300)).await;
    let device = fx.device_of(&connection, "root").await;
    let mnt = fx.mount(&device, "mnt");
    let after = full_tree(&mnt);
    fx.umount(&mnt);
    assert_eq!(after, before, "the merge resumed after a crash and restored the tree");
}

/// `busctl call` on snapbackd; panics with the daemon's log when the call fails.
fn busctl_call(fx: &Fixture, path: &str, interface: &str, method: &str, args: &[&str]) -> String {
    let mut argv = vec!["call", "org.snapback.Snapback1", path, interface, method];
    argv.extend_from_slice(args);
    let out = fx.busctl(&argv);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "busctl {argv:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fx.all_daemon_logs()
    );
    stdout
}

/// The D-Bus error a call fails with, as dbus-send prints it (busctl prints only the message).
fn call_error(fx: &Fixture, path: &str, member: &str, args: &[&str]) -> String {
    let out = Command::new("dbus-send")
        .arg(format!("--bus={}", fx.bus_address))
        .args(["--print-reply", "--dest=org.snapback.Snapback1", path, member])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{member} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn state_of(fx: &Fixture, set: &str) -> String {
    let out = fx.busctl(&[
        "get-property",
        "org.snapback.Snapback1",
        set,
        "org.snapback.Snapback1.Snapshot",
        "State",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_string()
}

/// Issue 12's sequence through the bus, with busctl as the client: a merge that fails half way
/// (the volume's backing loop device turned read-only), Rollback again while the volume is
/// mounted, CancelRollback, Delete — the set stays merge-failed and whole, and once the device
/// is writable again Rollback finishes with the snapshot's tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_merged_set_survives_busctl_pressing_every_button() {
    let mut fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "root", bytes: 96 * MIB, auto: true }],
        pool_bytes: 256 * MIB,
        merge_step_bytes: Some(256 << 10),
        ..Options::default()
    });
    // The volume's backing device becomes a loop device over its image, so that it can be
    // made read-only under the running daemon.
    fx.stop_daemon();
    let image = fx.path("root.img");
    let backing =
        String::from_utf8(run("losetup", &["--find", "--show", image.to_str().unwrap()]).stdout)
            .unwrap();
    let backing = backing.trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("blockdev").args(["--setrw", &self.0]).status();
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(backing.clone());
    let config =
        fs::read_to_string(&fx.config_path).unwrap().replace(image.to_str().unwrap(), &backing);
    fs::write(&fx.config_path, config).unwrap();
    fx.start_daemon();

    let connection = fx.connect().await;
    let device = fx.device_of(&connection, "root").await;
    fx.mkfs(&device);
    let mnt = fx.mount(&device, "mnt");
    populate(&mnt, 7, 24 << 20);
    run("sync", &[]);
    let before = full_tree(&mnt);
    let out = busctl_call(
        &fx,
        "/org/snapback/Snapback1",
        "org.snapback.Snapback1.Manager",
        "Snapshot",
        &["assa{sv}", "0", "before upgrade", "1", "cow-size", "t", &(64 * MIB).to_string()],
    );
    let set = out.split('"').nth(1).unwrap().to_string();
    churn(&mnt, 70, 24 << 20);
    fx.umount(&mnt);

    let out =
        busctl_call(&fx, &set, "org.snapback.Snapback1.Snapshot", "Rollback", &["a{sv}", "0"]);
    assert!(out.contains("\"merging\""), "{out}");
    // Let part of it merge, then fail the rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = fx.busctl(&[
            "get-property",
            "org.snapback.Snapback1",
            &set,
            "org.snapback.Snapback1.Snapshot",
            "MergeProgress",
        ]);
        let progress: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("d ")
            .parse()
            .unwrap_or(0.0);
        if progress > 0.05 {
            break;
        }
        assert!(Instant::now() < deadline, "the merge made no progress: {}", fx.all_daemon_logs());
        std::thread::sleep(Duration::from_millis(5));
    }
    run("blockdev", &["--setro", &backing]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while state_of(&fx, &set) != "merge-failed" {
        assert!(
            Instant::now() < deadline,
            "state {}: {}",
            state_of(&fx, &set),
            fx.all_daemon_logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Mounted (read-only: the volume reads as the snapshot already), Rollback is scheduled;
    // cancelling goes back to merge-failed; Delete and a second cancel are refused.
    let mnt = fx.path("mnt");
    run("mount", &["-o", "ro,noload", &device, mnt.to_str().unwrap()]);
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let mounted = Unmount(mnt.clone());
    assert_eq!(full_tree(&mnt), before, "the half-merged volume reads as the snapshot");
    let out =
        busctl_call(&fx, &set, "org.snapback.Snapback1.Snapshot", "Rollback", &["a{sv}", "0"]);
    assert!(out.contains("\"scheduled\""), "{out}");
    assert_eq!(state_of(&fx, &set), "merge-scheduled");
    busctl_call(
        &fx,
        "/org/snapback/Snapback1",
        "org.snapback.Snapback1.Manager",
        "CancelRollback",
        &["o", &set],
    );
    assert_eq!(state_of(&fx, &set), "merge-failed");
    let refused = call_error(&fx, &set, "org.snapback.Snapback1.Snapshot.Delete", &[]);
    assert!(
        refused.contains("org.snapback.Snapback1.Error.Busy")
            && refused.contains("half rolled back"),
        "{refused}"
    );
    let object = format!("objpath:{set}");
    let refused = call_error(
        &fx,
        "/org/snapback/Snapback1",
        "org.snapback.Snapback1.Manager.CancelRollback",
        &[&object],
    );
    assert!(refused.contains("org.snapback.Snapback1.Error.InvalidArgument"), "{refused}");
    assert_eq!(state_of(&fx, &set), "merge-failed");
    drop(mounted);

    // The device is writable again: Rollback resumes and the set goes when it is done.
    run("blockdev", &["--setrw", &backing]);
    let out =
        busctl_call(&fx, &set, "org.snapback.Snapback1.Snapshot", "Rollback", &["a{sv}", "0"]);
    assert!(out.contains("\"merging\""), "{out}");
    let manager = fx.manager(&connection).await;
    wait_merge_end(
        &fx,
        &manager,
        &OwnedObjectPath::try_from(set.as_str()).unwrap(),
        Duration::from_secs(120),
    )
    .await;
    let mnt = fx.mount(&device, "mnt");
    assert_eq!(full_tree(&mnt), before, "after the resumed merge");
    fx.umount(&mnt);
}

/// Snapshot flushes every file system before it freezes them, and one of them lives on our
/// own volume: its flush is served by the daemon's FUSE threads. A SIGKILL in the middle must
/// still end the daemon (a sync(2) of the daemon's own once left it unkillable in D state,
/// holding its bus name), and the set must then be whole or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_snapshot_flushes_a_dirty_volume_ends_the_daemon() {
    let mut fx = Fixture::start(Options {
        volumes: vec![VolumeSpec { name: "root", bytes: 512 * MIB, auto: true }],
        pool_bytes: 1024 * MIB,
        ..Options::default()
    });
    let connection = fx.connect().await;
    let mut device = fx.device_of(&connection, "root").await;
    fx.mkfs(&device);
    let mnt = fx.mount(&device, "mnt");
    let mut killed_in_flush = 0;
    for round in 0..3u64 {
        // dirty data nobody has flushed: Snapshot's flush has to write it through FUSE
        let mut file = fs::File::create(mnt.join(format!("dirty-{round}"))).unwrap();
        for i in 0..24 {
            file.write_all(&pattern(4 * MIB as usize, round * 100 + i)).unwrap();
        }
        drop(file);
        let manager = fx.manager(&fx.connect().await).await;
        let call = tokio::spawn(async move {
            manager.snapshot(&["root"], "killed", cow_size(256 * MIB)).await
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let flushing = !call.is_finished();
        fx.kill_daemon(std::slice::from_ref(&device)); // panics if it does not exit
        killed_in_flush += u32::from(flushing);
        let _ = call.await;
        run("umount", &["-l", mnt.to_str().unwrap()]);
        fx.start_daemon();
        let connection = fx.connect().await;
        device = fx.device_of(&connection, "root").await;
        run("mount", &["-t", "ext4", &device, mnt.to_str().unwrap()]);
        let status = fx.manager(&connection).await.status().await.unwrap();
        for set in &status.volumes["root"].snapshots {
            let state = fx.snapshot_proxy(&connection, set.as_str()).await.state().await.unwrap();
            assert_eq!(state, "active", "set {set} after the kill");
        }
    }
    assert!(killed_in_flush > 0, "no kill landed while Snapshot was still running");
    run("umount", &[mnt.to_str().unwrap()]);
}
