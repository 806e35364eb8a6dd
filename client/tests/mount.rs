//! `snapbackctl mount` / `umount` against the real snapbackd (userspace backend: FUSE, loop
//! devices, real ext4 and XFS; needs root): a file changed after the snapshot reads its old
//! content from the mounted snapshot while the origin keeps the new one, mounting changes no
//! byte of the snapshot or its COW, Rollback and Delete refuse while it is mounted and work
//! after `umount`, and the refusals (no such volume, no authorization) are named.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::{Daemon, Mode};
use common::{require, run_ok};
use serde_json::json;

fn sha256(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

fn dir(d: &Daemon, name: &str) -> PathBuf {
    let path = d.dir.path().join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// Unmounts whatever a failed test left mounted, before the daemon goes.
struct Mounted(Vec<PathBuf>);

impl Drop for Mounted {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(path).output();
        }
    }
}

fn write_synced(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
    run_ok(Command::new("sync").arg("-f").arg(path));
}

/// The whole story on one file system: old content in the mounted snapshot, new in the
/// origin, nothing written to the snapshot, Rollback/Delete refused while mounted.
fn old_files_from_a_mounted_snapshot(fstype: &str, volume_bytes: u64, options: &str) {
    require(&format!("mkfs.{fstype}"), if fstype == "xfs" { "xfsprogs" } else { "e2fsprogs" });
    let d = Daemon::start_blank(Mode::Open, volume_bytes);
    let device = d.device();
    match fstype {
        "xfs" => run_ok(Command::new("mkfs.xfs").args(["-q", "-f", &device])),
        // Inode tables and journal written now: ext4lazyinit would write them later, through
        // the origin, into the COW.
        _ => run_ok(Command::new("mkfs.ext4").args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            &device,
        ])),
    };
    let origin = dir(&d, "origin");
    let snap = dir(&d, "snap");
    let mut mounted = Mounted(Vec::new());
    // noatime: reading the origin below must not write to it (and so into the COW).
    run_ok(Command::new("mount").args(["-t", fstype, "-o", "noatime", &device]).arg(&origin));
    mounted.0.push(origin.clone());
    write_synced(&origin.join("etc-foo"), "before the upgrade\n");
    d.ctl_status(&["snapshot", "-d", "before"], 0);
    write_synced(&origin.join("etc-foo"), "after the upgrade\n");
    write_synced(&origin.join("new-file"), "only after\n");

    let fuse_snapshot = d.dir.path().join("fuse/root@1");
    let pool = d.dir.path().join("pool.img");
    let snapshot_before = sha256(&fuse_snapshot);
    let pool_before = sha256(&pool);

    let snap_text = snap.display().to_string();
    let out = d.json(&["mount", "1", "root", &snap_text]);
    mounted.0.push(snap.clone());
    let opened = out["device"].as_str().unwrap().to_owned();
    assert!(opened.starts_with("/dev/loop") && opened != device, "{out}");
    assert_eq!(
        out,
        json!({"schema": "snapbackctl/1", "id": 1, "volume": "root", "device": opened,
               "mountpoint": snap_text, "fstype": fstype, "options": options})
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts.lines().find(|l| l.split(' ').nth(1) == Some(snap_text.as_str())).unwrap();
    assert!(line.starts_with(&format!("{opened} {snap_text} {fstype} ro,")), "{line}");

    assert_eq!(std::fs::read_to_string(snap.join("etc-foo")).unwrap(), "before the upgrade\n");
    assert!(!snap.join("new-file").exists());
    assert_eq!(std::fs::read_to_string(origin.join("etc-foo")).unwrap(), "after the upgrade\n");
    assert!(std::fs::write(snap.join("etc-foo"), "x").is_err(), "the snapshot took a write");

    // Refused while mounted, naming the mount point; nothing changes.
    let (_, err) = d.ctl_status(&["rollback", "1"], 1);
    assert!(
        err.contains("busy") && err.contains(&snap_text) && err.contains("umount 1 root"),
        "{err}"
    );
    let (_, err) = d.ctl_status(&["delete", "1"], 1);
    assert!(err.contains(&snap_text) && err.contains("unmount it first"), "{err}");
    assert_eq!(d.json(&["show", "1"])["snapshot"]["state"], "active");
    // A second mount of the same snapshot gets the same device.
    let snap2 = dir(&d, "snap2");
    let again = d.json(&["mount", "1", "root", &snap2.display().to_string()]);
    mounted.0.push(snap2.clone());
    assert_eq!(again["device"], opened.as_str());

    // umount by volume takes every mount of it.
    let out = d.json(&["umount", "1", "root"]);
    mounted.0.retain(|p| p != &snap && p != &snap2);
    let mut gone: Vec<String> =
        out["unmounted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    gone.sort();
    assert_eq!(gone, vec![snap_text.clone(), snap2.display().to_string()]);
    assert_eq!(sha256(&fuse_snapshot), snapshot_before, "mounting changed the snapshot");
    assert_eq!(sha256(&pool), pool_before, "mounting changed the COW");

    // After umount: Rollback works and the volume is the snapshot again.
    run_ok(Command::new("umount").arg(&origin));
    mounted.0.clear();
    d.ctl_status(&["rollback", "1", "--wait"], 0);
    assert_eq!(sha256(Path::new(&d.device())), snapshot_before);
    assert!(!Path::new(&opened).join("x").exists());
    let loop_name = Path::new(&opened).file_name().unwrap().to_str().unwrap().to_owned();
    let backing = std::fs::read_to_string(format!("/sys/block/{loop_name}/loop/backing_file"));
    assert!(backing.is_err() || !backing.unwrap().contains("root@1"), "snapshot loop left");
}

#[test]
fn ext4_snapshot_mounts_read_only_with_the_old_files() {
    old_files_from_a_mounted_snapshot("ext4", 64 << 20, "ro,noload");
}

#[test]
fn xfs_snapshot_mounts_read_only_with_the_old_files() {
    // mkfs.xfs makes nothing smaller than 300 MiB. An odd size: a starting snapbackd takes a
    // loop device whose file is gone (`/root`, seen from a dead daemon's detached mount) of a
    // volume's name and size for its own, and tests running beside this one must not match.
    old_files_from_a_mounted_snapshot("xfs", 344 << 20, "ro,norecovery,nouuid");
}

#[test]
fn delete_waits_for_umount_of_the_mount_point() {
    let d = Daemon::start_blank(Mode::Open, 64 << 20);
    let device = d.device();
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &device]));
    d.ctl_status(&["snapshot"], 0);
    let snap = dir(&d, "snap");
    let snap_text = snap.display().to_string();
    let _mounted = Mounted(vec![snap.clone()]);
    let (out, _) = d.ctl_status(&["mount", "1", "root", &snap_text], 0);
    assert!(out.starts_with("mounted volume root of snapshot set 1 (ext4, /dev/loop"), "{out}");
    let opened = out.split(", ").nth(1).unwrap().split(')').next().unwrap().to_owned();

    let (_, err) = d.ctl_status(&["delete", "1"], 1);
    assert!(err.contains(&format!("mounted at {snap_text}")), "{err}");
    // A mount point that is not the set's is left alone.
    let (_, err) = d.ctl_status(&["umount", "1", "/"], 1);
    assert!(err.contains("is not a mount of snapshot set 1"), "{err}");
    let (out, _) = d.ctl_status(&["umount", "1", &snap_text], 0);
    assert_eq!(out, format!("unmounted {snap_text}\n"));
    let (_, err) = d.ctl_status(&["umount", "1", "root"], 1);
    assert!(err.contains("is not mounted"), "{err}");

    d.ctl_status(&["delete", "1"], 0);
    assert_eq!(d.json(&["list"])["snapshots"], json!([]));
    let loop_name = Path::new(&opened).file_name().unwrap().to_str().unwrap().to_owned();
    let backing = std::fs::read_to_string(format!("/sys/block/{loop_name}/loop/backing_file"));
    assert!(backing.is_err() || !backing.unwrap().contains("root@1"), "snapshot loop left");
}

#[test]
fn bad_volume_and_missing_set_are_refused_by_name() {
    let d = Daemon::start();
    d.ctl_status(&["snapshot"], 0);
    let snap = dir(&d, "snap");
    let snap_text = snap.display().to_string();
    let (_, err) = d.ctl_status(&["mount", "1", "nope", &snap_text], 1);
    assert!(err.contains("not found") && err.contains("\"nope\"") && err.contains("root"), "{err}");
    let (_, err) = d.ctl_status(&["mount", "7", "root", &snap_text], 1);
    assert!(err.contains("not found") && err.contains('7'), "{err}");
    // Unknown options are refused, as for every method of the API.
    let out = common::run(Command::new("busctl").arg(format!("--address={}", d.address)).args([
        "call",
        "org.snapback.Snapback1",
        "/org/snapback/Snapback1/snapshot/1",
        "org.snapback.Snapback1.Snapshot",
        "OpenVolume",
        "sa{sv}",
        "root",
        "1",
        "bogus",
        "b",
        "true",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bogus"), "{err}");
}

#[test]
fn an_unauthorized_caller_cannot_open_a_snapshot() {
    // The project's bus policy, polkit asked and no polkitd: only root may act.
    let d = Daemon::start_with(Mode::ProjectPolicy);
    d.ctl_status(&["snapshot"], 0);
    let out = common::run(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
            .arg(format!("--address={}", d.address))
            .args([
                "call",
                "org.snapback.Snapback1",
                "/org/snapback/Snapback1/snapshot/1",
                "org.snapback.Snapback1.Snapshot",
                "OpenVolume",
                "sa{sv}",
                "root",
                "0",
            ]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "nobody opened a snapshot: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("not authorized") && err.contains("org.snapback.open"), "{err}");
    // No loop device was attached for the refused caller.
    let loops =
        String::from_utf8_lossy(&run_ok(Command::new("losetup").arg("-a")).stdout).into_owned();
    assert!(!loops.contains(&format!("{}/fuse/root@1", d.dir.path().display())), "{loops}");
}

#[test]
fn stopping_the_daemon_releases_the_snapshot_devices() {
    let d = Daemon::start_blank(Mode::Open, 64 << 20);
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &d.device()]));
    d.ctl_status(&["snapshot"], 0);
    let snap = dir(&d, "snap");
    let snap_text = snap.display().to_string();
    let mounted = Mounted(vec![snap.clone()]);
    let opened = d.json(&["mount", "1", "root", &snap_text])["device"].as_str().unwrap().to_owned();
    d.ctl_status(&["umount", "1", &snap_text], 0);
    drop(mounted);
    let ours = d.dir.path().display().to_string();
    let loop_name = Path::new(&opened).file_name().unwrap().to_str().unwrap().to_owned();
    let backing = format!("/sys/block/{loop_name}/loop/backing_file");
    assert!(std::fs::read_to_string(&backing).unwrap().contains(&ours));
    // SIGTERM and wait, as systemctl stop does.
    drop(d);
    let left = std::fs::read_to_string(&backing).unwrap_or_default();
    assert!(!left.contains(&ours), "{opened} still bound to {left}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&ours), "left mounted:\n{mounts}");
}
