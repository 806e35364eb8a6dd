//! `OpenVolume` through the service with the cleanup policy: a set whose snapshot is mounted is
//! never deleted by cleanup either (the refusal is logged and the set stays), and goes at the
//! next cleanup after the unmount. Also: the descriptor reads the snapshot's bytes, not the
//! volume's. Needs root (FUSE, loop devices, mount).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;

use common::{run, Fixture, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_leaves_a_mounted_snapshot_alone() {
    let mut fx = Fixture::start(Options {
        extra_config: "\n[cleanup]\nnumber_limit = 1\nmin_age_seconds = 0\ninterval_seconds = 0\n"
            .into(),
        ..Options::default()
    });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let device = fx.device_of(&connection, "data").await;
    fx.mkfs(&device);
    let first = manager.snapshot(&["data"], "first", HashMap::new()).await.unwrap();
    // The volume changes after the set: the descriptor must show the set's bytes.
    run("dd", &["if=/dev/urandom", &format!("of={device}"), "bs=1M", "count=1", "oflag=direct"]);
    let snapshot = fx.snapshot_proxy(&connection, first.as_str()).await;
    let (opened, fd) = snapshot.open_volume("data", HashMap::new()).await.unwrap();
    let mut head = vec![0u8; 4096];
    std::fs::File::from(OwnedFd::from(fd)).read_exact(&mut head).unwrap();
    let mut from_view = vec![0u8; 4096];
    std::fs::File::open(fx.path("fuse/data@1")).unwrap().read_exact(&mut from_view).unwrap();
    assert_eq!(head, from_view, "the descriptor reads the snapshot");
    let mut from_volume = vec![0u8; 4096];
    std::fs::File::open(&device).unwrap().read_exact(&mut from_volume).unwrap();
    assert_ne!(head, from_volume, "the volume changed since the set");

    let mounted = fx.mount_fs(&opened, "snap", "ext4");
    // A new set pushes the first over number_limit: cleanup must not delete it while mounted.
    let second = manager.snapshot(&["data"], "second", HashMap::new()).await.unwrap();
    let kept = manager.status().await.unwrap().volumes["data"].snapshots.clone();
    assert!(kept.contains(&first) && kept.contains(&second), "{kept:?}");
    assert!(
        fx.daemon_log().contains("cleanup: could not delete snapshot set")
            && fx.daemon_log().contains("unmount it first"),
        "{}",
        fx.daemon_log()
    );
    assert_eq!(snapshot.state().await.unwrap(), "active");

    fx.umount(&mounted);
    let third = manager.snapshot(&["data"], "third", HashMap::new()).await.unwrap();
    let kept = manager.status().await.unwrap().volumes["data"].snapshots.clone();
    assert_eq!(kept, vec![third], "cleanup deletes both older sets once nothing is mounted");
    fx.stop_daemon();
}
