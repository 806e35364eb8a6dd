//! The userspace backend end to end on real FUSE, loop devices and ext4 (needs root).
//!
//! Each test builds its own pool and volume files in a temporary directory and drives the
//! backend directly (the service_* tests do the same over D-Bus).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snapbackd::backend::userspace::{UserspaceBackend, UserspaceOptions};
use snapbackd::backend::{
    Backend, BackendError, BackendEvent, ErrorKind, RollbackOutcome, SetState, SnapshotRequest,
    VolumeState,
};
use snapbackd::config::{Config, PoolConfig, VolumeConfig};
use snapbackd::pool::{self, FormatOptions, Pool};

const MIB: u64 = 1 << 20;

struct Env {
    dir: tempfile::TempDir,
    config: Config,
}

impl Env {
    fn new(volumes: &[(&str, u64)], pool_bytes: u64) -> Env {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests need root (FUSE, loop devices, mount)"
        );
        let dir = tempfile::Builder::new().prefix("snapback-us-").tempdir_in("/var/tmp").unwrap();
        let pool_path = dir.path().join("pool.img");
        fs::File::create(&pool_path).unwrap().set_len(pool_bytes).unwrap();
        let dev = Arc::new(snapback_engine::io::FileIo::open(&pool_path, true).unwrap());
        pool::format_io(dev, &pool_path, FormatOptions { force: false, extent_bytes: 4 * MIB })
            .unwrap();
        let volumes = volumes
            .iter()
            .map(|(name, bytes)| {
                let device = dir.path().join(format!("{name}.img"));
                fs::File::create(&device).unwrap().set_len(*bytes).unwrap();
                VolumeConfig { name: name.to_string(), device, auto: true, cow_size: None }
            })
            .collect();
        Env {
            config: Config {
                pool: PoolConfig { path: pool_path },
                volumes,
                boot: Default::default(),
            },
            dir,
        }
    }

    fn options(&self) -> UserspaceOptions {
        UserspaceOptions {
            fuse_dir: self.dir.path().join("fuse"),
            monitor_interval: Duration::from_millis(100),
            ..UserspaceOptions::default()
        }
    }

    fn open(&self) -> UserspaceBackend {
        self.open_with(self.options())
    }

    fn open_with(&self, options: UserspaceOptions) -> UserspaceBackend {
        let pool = Pool::open(&self.config.pool.path).unwrap();
        UserspaceBackend::open_with(&self.config, pool, options).unwrap()
    }

    fn mountpoint(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("mnt-{name}"));
        fs::create_dir_all(&path).unwrap();
        path
    }
}

fn sh(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn device_of(backend: &UserspaceBackend, volume: &str) -> String {
    let info = backend.volumes().into_iter().find(|v| v.name == volume).unwrap();
    info.device.unwrap().to_str().unwrap().to_string()
}

/// An ext4 mount of a volume. A test that fails while it is mounted must not leave it
/// behind: it would keep the loop device and the backend's FUSE mount busy after the backend
/// is gone. Made after the backend is opened, it is dropped (unmounted) before the backend.
struct Mounted(Option<PathBuf>);

impl Mounted {
    fn unmount(mut self) {
        sh("umount", &[self.0.as_ref().unwrap().to_str().unwrap()]);
        self.0 = None;
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(at) = self.0.take() {
            if !Command::new("umount").arg(&at).status().is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&at).status();
            }
        }
    }
}

fn mount(device: &str, at: &Path) -> Mounted {
    sh("mount", &[device, at.to_str().unwrap()]);
    Mounted(Some(at.to_path_buf()))
}

fn mkfs_and_mount(device: &str, at: &Path) -> Mounted {
    sh("mkfs.ext4", &["-q", "-F", "-E", "nodiscard", device]);
    mount(device, at)
}

/// Every file under `root` with its bytes (directories as empty entries with a trailing /).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "lost+found" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                stack.push(path);
            } else {
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn populate(root: &Path) {
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::write(root.join("etc/app/config"), b"version = 1\n").unwrap();
    fs::write(root.join("etc/hostname"), b"before\n").unwrap();
    fs::write(root.join("doomed"), pattern(100_000, 1)).unwrap();
    fs::write(root.join("large"), pattern(12 << 20, 2)).unwrap();
}

fn change(root: &Path) {
    fs::write(root.join("etc/app/config"), b"version = 2, upgraded\n").unwrap();
    fs::write(root.join("added"), b"new file\n").unwrap();
    fs::remove_file(root.join("doomed")).unwrap();
    let mut large = OpenOptions::new().write(true).open(root.join("large")).unwrap();
    large.write_all(&pattern(5 << 20, 3)).unwrap();
    fs::write(root.join("another-large"), pattern(9 << 20, 4)).unwrap();
}

type Events = Arc<Mutex<Vec<BackendEvent>>>;

fn record_events(backend: &UserspaceBackend) -> Events {
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    backend.set_event_sink(Arc::new(move |event| sink.lock().unwrap().push(event)));
    events
}

/// Events are emitted after the state they report is visible, so a test that saw the
/// state waits for the event instead of expecting it already recorded (30 s: a liveness
/// bound on a loaded machine).
fn wait_for_event(
    events: &Events,
    what: &str,
    matches: impl Fn(&BackendEvent) -> bool,
) -> BackendEvent {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(event) = events.lock().unwrap().iter().find(|event| matches(event)) {
            return event.clone();
        }
        assert!(Instant::now() < deadline, "no {what} event: {:?}", events.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_removed(backend: &UserspaceBackend, id: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    // One lookup per turn: a set seen in a listing may be gone by the next call.
    loop {
        let info = match backend.snapshot(id) {
            Ok(info) => info,
            Err(BackendError { kind: ErrorKind::NotFound, .. }) => return,
            Err(err) => panic!("looking up set {id}: {err}"),
        };
        assert_ne!(info.state, SetState::MergeFailed, "merge failed");
        assert!(Instant::now() < deadline, "merge of {id} did not finish: {info:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// ext4's "journal needs recovery" flag (EXT4_FEATURE_INCOMPAT_RECOVER) in an image's superblock.
fn ext4_needs_recovery(image: &Path) -> bool {
    let mut superblock = vec![0u8; 1024];
    let file = fs::File::open(image).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut superblock, 1024).unwrap();
    assert_eq!(&superblock[0x38..0x3a], &[0x53, 0xef], "ext4 superblock magic");
    let incompat = u32::from_le_bytes(superblock[0x60..0x64].try_into().unwrap());
    incompat & 0x4 != 0
}

#[test]
fn a_snapshot_of_a_mounted_file_system_is_frozen_clean_and_holds_the_last_writes() {
    let env = Env::new(&[("vol", 64 * MIB)], 128 * MIB);
    let backend = env.open();
    let device = device_of(&backend, "vol");
    let mnt = env.mountpoint("vol");
    let mounted = mkfs_and_mount(&device, &mnt);
    // Written, never synced by anyone: only the snapshot's own flush/freeze can put it there.
    fs::write(mnt.join("unsynced"), b"written just before the snapshot\n").unwrap();
    assert!(
        ext4_needs_recovery(Path::new(&device)),
        "a mounted ext4 is marked as needing recovery"
    );

    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(16 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    // The live file system was thawed: it takes writes again.
    fs::write(mnt.join("after"), b"after the snapshot\n").unwrap();

    let snapshot_file = env.options().fuse_dir.join(format!("vol@{}", set.id));
    assert!(
        !ext4_needs_recovery(&snapshot_file),
        "the snapshot's ext4 was frozen (journal flushed, recovery flag clear), not just synced"
    );
    // Check a copy: e2fsck -n must not touch the read-only snapshot, and finds nothing to fix.
    let copy = env.dir.path().join("snapshot-copy.img");
    fs::copy(&snapshot_file, &copy).unwrap();
    let fsck = Command::new("e2fsck").args(["-f", "-n"]).arg(&copy).output().unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck of the snapshot: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let cat = Command::new("debugfs").args(["-R", "cat /unsynced"]).arg(&copy).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "written just before the snapshot\n");
    let after = Command::new("debugfs").args(["-R", "stat /after"]).arg(&copy).output().unwrap();
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("File not found"),
        "later writes are not in the snapshot"
    );

    mounted.unmount();
    backend.delete(set.id).unwrap();
    backend.shutdown().unwrap();
}

#[test]
fn a_file_system_covered_by_another_mount_is_frozen_through_a_mount_point_that_still_reaches_it() {
    let env = Env::new(&[("vol", 64 * MIB)], 128 * MIB);
    let backend = env.open();
    let device = device_of(&backend, "vol");
    let first = env.mountpoint("vol");
    let ext4 = mkfs_and_mount(&device, &first);
    fs::write(first.join("unsynced"), b"written before the snapshot\n").unwrap();
    // The same ext4 reachable through a bind mount, and its first mount point covered by a
    // tmpfs: mountinfo lists the covered path first, which now leads to the tmpfs.
    let second = env.mountpoint("bind");
    sh("mount", &["--bind", first.to_str().unwrap(), second.to_str().unwrap()]);
    let bind = Mounted(Some(second.clone()));
    sh("mount", &["-t", "tmpfs", "cover", first.to_str().unwrap()]);
    let cover = Mounted(Some(first.clone()));

    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(16 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    let snapshot_file = env.options().fuse_dir.join(format!("vol@{}", set.id));
    assert!(
        !ext4_needs_recovery(&snapshot_file),
        "the ext4 was frozen through the bind mount, not skipped"
    );
    assert!(fs::write(second.join("after"), b"thawed\n").is_ok(), "thawed again");

    cover.unmount();
    bind.unmount();
    ext4.unmount();
    backend.delete(set.id).unwrap();
    backend.shutdown().unwrap();
}

#[test]
fn snapshot_change_rollback_restores_the_tree() {
    let env = Env::new(&[("root", 128 * MIB)], 256 * MIB);
    let backend = env.open();
    let events = record_events(&backend);
    let device = device_of(&backend, "root");
    let mnt = env.mountpoint("root");
    let mounted = mkfs_and_mount(&device, &mnt);
    populate(&mnt);
    let before = tree(&mnt);
    mounted.unmount();

    let request = SnapshotRequest {
        description: "before upgrade".into(),
        cow_size_bytes: Some(64 * MIB),
        ..SnapshotRequest::default()
    };
    let set = backend.create_snapshot(request).unwrap();
    assert_eq!(set.volumes, vec!["root".to_string()]);
    assert_eq!(set.state, SetState::Active);
    assert_eq!(set.size_bytes, 64 * MIB);
    assert_eq!(backend.pool().used_bytes, 64 * MIB);

    let mounted = mount(&device, &mnt);
    change(&mnt);
    let after = tree(&mnt);
    assert_ne!(after, before);
    mounted.unmount();
    assert!(backend.snapshot(set.id).unwrap().used_bytes > 14 * MIB, "the changes went to the COW");

    // the read-only snapshot file shows the volume as it was
    let snapshot_file = env.options().fuse_dir.join(format!("root@{}", set.id));
    let mut head = vec![0u8; 2048];
    fs::File::open(&snapshot_file).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(&head[1080..1082], &[0x53, 0xef], "ext4 superblock visible in the snapshot file");

    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Merging);
    wait_removed(&backend, set.id);
    assert_eq!(backend.pool().used_bytes, 0, "COW extents freed after the merge");
    assert!(!snapshot_file.exists());

    let mounted = mount(&device, &mnt);
    let restored = tree(&mnt);
    mounted.unmount();
    assert!(restored == before, "tree after rollback differs from the tree at snapshot time");

    let finished = BackendEvent::MergeFinished { id: set.id, ok: true, message: String::new() };
    wait_for_event(&events, "MergeFinished(ok)", |e| *e == finished);
    wait_for_event(&events, "SnapshotRemoved", |e| *e == BackendEvent::SnapshotRemoved(set.id));
    backend.shutdown().unwrap();
}

#[test]
fn two_volume_set_scheduled_while_mounted_merges_at_next_open() {
    let env = Env::new(&[("root", 64 * MIB), ("var", 64 * MIB)], 256 * MIB);
    let backend = env.open();
    let (root_dev, var_dev) = (device_of(&backend, "root"), device_of(&backend, "var"));
    let (root_mnt, var_mnt) = (env.mountpoint("root"), env.mountpoint("var"));
    let root_mounted = mkfs_and_mount(&root_dev, &root_mnt);
    let var_mounted = mkfs_and_mount(&var_dev, &var_mnt);
    fs::write(root_mnt.join("os-release"), b"v1\n").unwrap();
    fs::write(var_mnt.join("db"), pattern(3 << 20, 9)).unwrap();
    let (root_before, var_before) = (tree(&root_mnt), tree(&var_mnt));

    // snapshot while mounted: the backend syncs the filesystems before suspending
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(16 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    assert_eq!(set.volumes, vec!["root".to_string(), "var".to_string()]);
    fs::write(root_mnt.join("os-release"), b"v2 broken\n").unwrap();
    fs::write(var_mnt.join("db"), pattern(3 << 20, 10)).unwrap();
    sh("sync", &[]);

    // root is mounted: the whole set is scheduled, nothing merges
    var_mounted.unmount();
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Scheduled);
    assert_eq!(backend.snapshot(set.id).unwrap().state, SetState::MergeScheduled);
    let states: Vec<VolumeState> = backend.volumes().iter().map(|v| v.state).collect();
    assert_eq!(states, vec![VolumeState::MergeScheduled; 2]);
    // cancel and schedule again; a second request while scheduled is idempotent
    backend.cancel_rollback(set.id).unwrap();
    assert_eq!(backend.snapshot(set.id).unwrap().state, SetState::Active);
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Scheduled);
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Scheduled);
    assert!(matches!(backend.delete(999), Err(BackendError { kind: ErrorKind::NotFound, .. })));

    // "reboot": the volumes go away, snapbackd starts again and runs the pending merge
    root_mounted.unmount();
    backend.shutdown().unwrap();
    drop(backend);
    let backend = env.open();
    wait_removed(&backend, set.id);
    let (root_dev, var_dev) = (device_of(&backend, "root"), device_of(&backend, "var"));
    let root_mounted = mount(&root_dev, &root_mnt);
    let var_mounted = mount(&var_dev, &var_mnt);
    let (root_after, var_after) = (tree(&root_mnt), tree(&var_mnt));
    root_mounted.unmount();
    var_mounted.unmount();
    assert!(root_after == root_before, "root not rolled back");
    assert!(var_after == var_before, "var not rolled back");
    assert_eq!(backend.pool().used_bytes, 0);
}

/// A restart while a volume is mounted (what `systemctl restart snapbackd` does under the
/// mount): the old loop device stays, mounted but dead, and the set whose rollback was scheduled
/// under that mount must not merge beneath it; it merges at the first start after the unmount.
/// The old device is seen both ways: under the stale FUSE mount, and — once the new instance has
/// detached that mount, as systemd's end of the service's mount namespace does — as `/<volume>`.
#[test]
fn a_rollback_scheduled_under_a_mount_waits_while_the_old_device_stays_mounted_across_a_restart() {
    let env = Env::new(&[("restarted", 64 * MIB)], 128 * MIB);
    let backend = env.open();
    let old_device = device_of(&backend, "restarted");
    let mnt = env.mountpoint("restarted");
    let mounted = mkfs_and_mount(&old_device, &mnt);
    fs::write(mnt.join("file"), b"v1\n").unwrap();
    let before = tree(&mnt);
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(16 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    fs::write(mnt.join("file"), b"v2\n").unwrap();
    sh("sync", &[]);
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Scheduled);

    // restart under the mount
    backend.shutdown().unwrap();
    drop(backend);
    let backend = env.open();
    assert_eq!(
        backend.snapshot(set.id).unwrap().state,
        SetState::MergeScheduled,
        "merged under the mount"
    );
    assert_ne!(device_of(&backend, "restarted"), old_device, "the volume gets a new device");
    let sys_backing = Path::new("/sys/block")
        .join(Path::new(&old_device).file_name().unwrap())
        .join("loop/backing_file");
    assert_eq!(
        fs::read_to_string(&sys_backing).unwrap().trim_end(),
        "/restarted",
        "the old device, its FUSE mount detached"
    );
    backend.shutdown().unwrap();
    drop(backend);
    let backend = env.open();
    assert_eq!(
        backend.snapshot(set.id).unwrap().state,
        SetState::MergeScheduled,
        "merged under the mount at a second restart"
    );

    // unmounted (its I/O fails now: nothing serves it), the old device detaches; the next start merges
    drop(mounted);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sys_backing.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sys_backing.exists(), "the old device detaches at its last close");
    backend.shutdown().unwrap();
    drop(backend);
    let backend = env.open();
    wait_removed(&backend, set.id);
    let mounted = mount(&device_of(&backend, "restarted"), &mnt);
    let after = tree(&mnt);
    mounted.unmount();
    assert!(after == before, "not rolled back");
}

/// Another snapbackd (another pool) with a volume of the same name and size: once this one's old
/// device shows as `/<volume>` (its FUSE mount detached, as after a restart under systemd, or
/// seen from another mount namespace), the other must not take it for a stale device of its
/// own, which would keep its rollbacks waiting for a device that is not its own.
#[test]
fn another_pools_old_device_is_never_taken_for_a_stale_one_of_ours() {
    let env = Env::new(&[("twin", 64 * MIB)], 128 * MIB);
    let backend = env.open();
    let old_device = device_of(&backend, "twin");
    let mnt = env.mountpoint("twin");
    let mounted = mkfs_and_mount(&old_device, &mnt);
    backend.shutdown().unwrap();
    drop(backend);
    let backend = env.open();
    let sys_backing = Path::new("/sys/block")
        .join(Path::new(&old_device).file_name().unwrap())
        .join("loop/backing_file");
    assert_eq!(fs::read_to_string(&sys_backing).unwrap().trim_end(), "/twin");

    let other = Env::new(&[("twin", 64 * MIB)], 128 * MIB);
    let other_backend = other.open();
    let set = other_backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(16 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    assert_eq!(
        other_backend.rollback(set.id).unwrap(),
        RollbackOutcome::Merging,
        "the other pool's idle volume waited for this pool's old device"
    );
    wait_removed(&other_backend, set.id);
    other_backend.shutdown().unwrap();
    drop(other_backend);

    drop(mounted);
    backend.shutdown().unwrap();
}

fn write_device(device: &str, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new().write(true).open(device).unwrap();
    file.write_all_at(data, offset).unwrap();
    file.sync_all().unwrap();
}

fn read_file(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    fs::File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

#[test]
fn origin_writes_the_engine_holds_are_written_back_without_anyone_flushing() {
    let env = Env::new(&[("vol", 64 * MIB)], 128 * MIB);
    let backend = env.open();
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(16 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    let backing = env.config.volumes[0].device.clone();
    let before = read_file(&backing, 0, 1 << 20);
    // The served file is FOPEN_DIRECT_IO: the write reaches the engine at once. It stays open
    // and is never fsynced, so only the monitor's expiry can move the data on.
    let served =
        fs::OpenOptions::new().write(true).open(env.options().fuse_dir.join("vol")).unwrap();
    let data = pattern(1 << 20, 77);
    std::os::unix::fs::FileExt::write_all_at(&served, &data, 0).unwrap();
    assert!(
        read_file(&backing, 0, 1 << 20) == before,
        "a write into fresh chunks is held (write-back) at first"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_file(&backing, 0, 1 << 20) != data {
        assert!(Instant::now() < deadline, "held origin writes never reached the backing file");
        std::thread::sleep(Duration::from_millis(200));
    }
    let snapshot_file = env.options().fuse_dir.join(format!("vol@{}", set.id));
    assert!(read_file(&snapshot_file, 0, 1 << 20) == before, "the snapshot keeps the old content");
    drop(served);
    backend.delete(set.id).unwrap();
    backend.shutdown().unwrap();
}

#[test]
fn reopen_mid_merge_resumes_and_ends_with_the_snapshot_content() {
    let env = Env::new(&[("data", 48 * MIB)], 128 * MIB);
    // One chunk per merge step: 2048 committed steps, so the merge is still running when the
    // backend is shut down below, even on a fast machine.
    let slow = UserspaceOptions {
        merge_step_bytes: Some(16 * 1024),
        merge_step_pause: Some(Duration::from_millis(2)),
        ..env.options()
    };
    let backend = env.open_with(slow.clone());
    let device = device_of(&backend, "data");
    let original = pattern(32 << 20, 21);
    write_device(&device, 0, &original);
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(40 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    write_device(&device, 0, &pattern(32 << 20, 22));
    let events = record_events(&backend);
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Merging);
    assert!(matches!(
        backend.rollback(set.id),
        Err(BackendError { kind: ErrorKind::AlreadyMerging, .. })
    ));
    assert!(matches!(backend.delete(set.id), Err(BackendError { kind: ErrorKind::Busy, .. })));
    assert!(matches!(
        backend.cancel_rollback(set.id),
        Err(BackendError { kind: ErrorKind::AlreadyMerging, .. })
    ));
    assert_eq!(backend.volumes()[0].state, VolumeState::Merging);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = backend.snapshot(set.id).unwrap();
        assert_eq!(info.state, SetState::Merging);
        if info.merge_progress > 0.05 {
            assert!(info.merge_progress < 1.0, "{info:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no merge progress: {info:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_event(&events, "SnapshotChanged for the progress", |e| {
        *e == BackendEvent::SnapshotChanged(set.id)
    });
    backend.shutdown().unwrap();
    drop(backend);

    // stopped at a step boundary with work left: still registered as merging
    let pool = Pool::open(&env.config.pool.path).unwrap();
    let record = pool.registry().set(set.id).cloned().expect("set still registered mid-merge");
    assert_eq!(record.state, snapbackd::pool::SetState::Merging);
    drop(pool);

    let backend = env.open_with(slow);
    assert_eq!(backend.snapshot(set.id).unwrap().state, SetState::Merging);
    wait_removed(&backend, set.id);
    backend.shutdown().unwrap();
    drop(backend);
    let backing = &env.config.volumes[0].device;
    assert!(
        read_file(backing, 0, 32 << 20) == original,
        "volume content after resumed merge is wrong"
    );
}

#[test]
fn full_pool_is_no_space_with_nothing_half_made() {
    // 64 MiB pool = 15 extents of 4 MiB
    let env = Env::new(&[("a", 64 * MIB), ("b", 64 * MIB)], 64 * MIB);
    let backend = env.open();
    let before = Pool::open(&env.config.pool.path).unwrap().registry();
    let request = SnapshotRequest { cow_size_bytes: Some(32 * MIB), ..SnapshotRequest::default() };
    match backend.create_snapshot(request) {
        Err(BackendError { kind: ErrorKind::NoSpace, message, .. }) => {
            assert!(message.contains("16 extents"), "{message}")
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(backend.snapshots().is_empty());
    assert_eq!(backend.pool().used_bytes, 0);
    assert_eq!(Pool::open(&env.config.pool.path).unwrap().registry(), before, "registry unchanged");
    // the pool still serves a set that fits, with the id nothing consumed
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(8 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    assert_eq!(set.id, before.next_snapshot_id);
    assert_eq!(backend.pool().used_bytes, 16 * MIB);
    backend.delete(set.id).unwrap();
    assert_eq!(backend.pool().used_bytes, 0);
    assert!(matches!(
        backend.rollback(set.id),
        Err(BackendError { kind: ErrorKind::NotFound, .. })
    ));
}

#[test]
fn rollback_of_a_cow_invalidated_before_the_monitor_saw_it_is_refused_and_marked_invalid() {
    let env = Env::new(&[("vol", 64 * MIB)], 128 * MIB);
    // The monitor never runs in this test: only the rollback itself can notice.
    let options = UserspaceOptions {
        autoextend_threshold: 2.0,
        monitor_interval: Duration::from_secs(3600),
        ..env.options()
    };
    let backend = env.open_with(options);
    let device = device_of(&backend, "vol");
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(4 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    let data = pattern(8 << 20, 6);
    write_device(&device, 0, &data);
    assert!(matches!(
        backend.rollback(set.id),
        Err(BackendError { kind: ErrorKind::SnapshotInvalid, .. })
    ));
    let info = backend.snapshot(set.id).unwrap();
    assert_eq!(info.state, SetState::Invalid, "not left merging: {info:?}");
    assert_eq!(backend.volumes()[0].state, VolumeState::Active);
    assert!(read_file(Path::new(&device), 0, 8 << 20) == data, "the volume keeps its writes");
    backend.delete(set.id).unwrap();
    backend.shutdown().unwrap();
}

#[test]
fn full_cow_grows_or_invalidates_and_the_volume_keeps_working() {
    let env = Env::new(&[("vol", 64 * MIB)], 128 * MIB);
    // no autoextend: a full COW invalidates the snapshot
    let options = UserspaceOptions { autoextend_threshold: 2.0, ..env.options() };
    let backend = env.open_with(options);
    let events = record_events(&backend);
    let device = device_of(&backend, "vol");
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(4 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    let data = pattern(8 << 20, 5);
    write_device(&device, 0, &data);
    // The monitor (every 100 ms) notices; 30 s is a liveness bound on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.snapshot(set.id).unwrap().state != SetState::Invalid {
        assert!(Instant::now() < deadline, "snapshot never became invalid");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_event(
        &events,
        "SnapshotInvalidated",
        |e| matches!(e, BackendEvent::SnapshotInvalidated { id, .. } if *id == set.id),
    );
    assert!(matches!(
        backend.rollback(set.id),
        Err(BackendError { kind: ErrorKind::SnapshotInvalid, .. })
    ));
    assert!(read_file(Path::new(&device), 0, 8 << 20) == data, "origin writes all landed");
    backend.delete(set.id).unwrap();
    backend.shutdown().unwrap();
    drop(backend);

    // with autoextend: a slow writer never fills the COW, it grows instead
    let options = env.options();
    let threshold = options.autoextend_threshold;
    let backend = env.open_with(options);
    let device = device_of(&backend, "vol");
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(4 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    for step in 0..32u64 {
        write_device(&device, step * 256 * 1024, &pattern(256 << 10, 40 + step as u32));
        // "Slow" means: the next write waits until the monitor has grown the COW back under
        // the autoextend threshold (a fixed pause raced a monitor delayed by a loaded machine).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = backend.snapshot(set.id).unwrap();
            assert_eq!(info.state, SetState::Active, "{info:?}");
            if info.used_bytes as f64 <= threshold * info.size_bytes as f64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the COW was not grown past the threshold: {info:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let info = backend.snapshot(set.id).unwrap();
    assert_eq!(info.state, SetState::Active, "{info:?}");
    assert!(info.size_bytes > 4 * MIB, "COW grew: {info:?}");
    let updated = backend
        .update_metadata(
            set.id,
            Some("renamed".into()),
            BTreeMap::from([("dnf".into(), "42".into())]),
        )
        .unwrap();
    assert_eq!(updated.description, "renamed");
    assert_eq!(updated.userdata.get("dnf").map(String::as_str), Some("42"));
}

/// Stops a thread that reads a file of the backend's FUSE mount, also when the test panics:
/// a process that exits with such a file open hangs in FUSE's flush of it once the mount's
/// serving threads are gone.
struct StopOnDrop<T> {
    done: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<T>>,
}

impl<T> StopOnDrop<T> {
    fn finish(mut self) -> T {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.take().expect("started").join().expect("the reader panicked")
    }
}

impl<T> Drop for StopOnDrop<T> {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Figures, not a test: `cargo test --release -p snapbackd --test userspace_backend -- --ignored --nocapture`.
/// All through the loop device with O_DIRECT (dd), 1 MiB requests, same files, same run.
#[test]
#[ignore]
fn measure_throughput() {
    // the backend logs how long the origins stayed suspended ("suspended_us")
    let _ = tracing_subscriber::fmt().with_env_filter("snapbackd=info").try_init();
    const SIZE_MIB: u64 = 256;
    let env = Env::new(&[("bench", 2 * SIZE_MIB * MIB)], 2 * SIZE_MIB * MIB);
    // pre-fill the backing file so every measured write overwrites allocated blocks
    let backing = env.config.volumes[0].device.clone();
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", backing.display()),
            "bs=1M",
            &format!("count={SIZE_MIB}"),
            "conv=notrunc,fsync",
            "status=none",
        ],
    );
    // and the pool's data area (after the two 2 MiB registry slots) with zeros, as a pool file
    // made with dd is (docs/performance.md): copies into a sparse pool would also pay the file system's
    // block allocation, committed by every group commit's fdatasync
    let pool_path = env.config.pool.path.display().to_string();
    sh(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={pool_path}"),
            "bs=1M",
            "seek=4",
            &format!("count={}", 2 * SIZE_MIB - 4),
            "conv=notrunc,fsync",
            "status=none",
        ],
    );
    let backend = env.open();
    let device = device_of(&backend, "bench");
    let dd = |args: &[&str]| -> f64 {
        let started = Instant::now();
        sh("dd", args);
        SIZE_MIB as f64 / started.elapsed().as_secs_f64()
    };
    let of = format!("of={device}");
    let iff = format!("if={device}");
    let count = format!("count={SIZE_MIB}");
    let write = |seed: &str| {
        dd(&[
            &format!("if={seed}"),
            &of,
            "bs=1M",
            &count,
            "oflag=direct",
            "conv=fsync",
            "status=none",
        ])
    };
    let zero_src = env.dir.path().join("src.img");
    sh(
        "dd",
        &["if=/dev/urandom", &format!("of={}", zero_src.display()), "bs=1M", &count, "status=none"],
    );
    let src = zero_src.to_str().unwrap().to_string();

    let raw_write = {
        let started = Instant::now();
        sh(
            "dd",
            &[
                &format!("if={src}"),
                &format!("of={}", backing.display()),
                "bs=1M",
                &count,
                "oflag=direct",
                "conv=notrunc,fsync",
                "status=none",
            ],
        );
        SIZE_MIB as f64 / started.elapsed().as_secs_f64()
    };
    let plain_write = write(&src);
    let plain_read = dd(&[&iff, "of=/dev/null", "bs=1M", &count, "iflag=direct", "status=none"]);
    let started = Instant::now();
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some((SIZE_MIB + 16) * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    let snapshot_ms = started.elapsed().as_secs_f64() * 1000.0;
    let cow_write = write(&src);
    let overwrite = write(&src);
    let started = Instant::now();
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Merging);
    // meanwhile: 4 KiB reads of the volume through FUSE (the loop device's path), timed
    let volume_file = env.options().fuse_dir.join("bench");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader = StopOnDrop { done: done.clone(), handle: None };
    reader.handle = Some({
        let done = done.clone();
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let file = fs::File::open(volume_file).unwrap();
            let mut buf = vec![0u8; 4096];
            let mut latencies = Vec::new();
            let mut offset = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                offset = (offset + 7 * MIB + 4096) % (SIZE_MIB * MIB);
                let started = Instant::now();
                file.read_exact_at(&mut buf, offset).unwrap();
                latencies.push(started.elapsed());
            }
            latencies
        })
    });
    wait_removed(&backend, set.id);
    let merge = SIZE_MIB as f64 / started.elapsed().as_secs_f64();
    let mut latencies = reader.finish();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    let copy = {
        let started = Instant::now();
        sh(
            "dd",
            &[
                &format!("if={src}"),
                &format!("of={}", env.dir.path().join("copy.img").display()),
                "bs=1M",
                &count,
                "oflag=direct",
                "conv=fsync",
                "status=none",
            ],
        );
        SIZE_MIB as f64 / started.elapsed().as_secs_f64()
    };
    println!("backing file direct write       {raw_write:8.1} MiB/s");
    println!(
        "volume write, no snapshot       {plain_write:8.1} MiB/s  ({:.2} of backing file)",
        plain_write / raw_write
    );
    println!("volume read, no snapshot        {plain_read:8.1} MiB/s");
    println!("snapshot create (sync+suspend)  {snapshot_ms:8.1} ms");
    println!(
        "volume write, first after snap  {cow_write:8.1} MiB/s  ({:.2} of no snapshot)",
        cow_write / plain_write
    );
    println!(
        "volume write, chunks already cow{overwrite:8.1} MiB/s  ({:.2} of no snapshot)",
        overwrite / plain_write
    );
    println!("merge of {SIZE_MIB} MiB of exceptions     {merge:8.1} MiB/s  ({:.2} of a plain file copy at {copy:.1} MiB/s)", merge / copy);
    println!("4 KiB reads during the merge     p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({} reads)", latencies.len());
    backend.shutdown().unwrap();
}

#[test]
fn a_corrupt_cow_found_at_start_makes_its_set_invalid_and_the_volume_works() {
    let env = Env::new(&[("vol", 32 * MIB)], 64 * MIB);
    let backend = env.open();
    let set = backend
        .create_snapshot(SnapshotRequest {
            description: "kept".into(),
            ..SnapshotRequest::default()
        })
        .unwrap();
    backend.shutdown().unwrap();
    drop(backend);

    let registry = Pool::open(&env.config.pool.path).unwrap().registry();
    let extent = registry.set(set.id).unwrap().cows[0].extents[0];
    let cow_start = registry.data_offset + extent * registry.extent_bytes;
    {
        use std::os::unix::fs::FileExt;
        let pool_file = OpenOptions::new().write(true).open(&env.config.pool.path).unwrap();
        pool_file.write_all_at(b"garbage!", cow_start).unwrap();
    }

    let backend = env.open();
    let info = backend.snapshot(set.id).unwrap();
    assert_eq!(info.state, SetState::Invalid, "{info:?}");
    assert_eq!(info.description, "kept");
    assert!(matches!(
        backend.rollback(set.id),
        Err(BackendError { kind: ErrorKind::SnapshotInvalid, .. })
    ));
    let device = device_of(&backend, "vol");
    let data = pattern(1 << 20, 77);
    write_device(&device, 4 * MIB, &data);
    assert!(read_file(Path::new(&device), 4 * MIB, 1 << 20) == data);
    backend.delete(set.id).unwrap();
    assert!(backend.snapshots().is_empty());
}

#[test]
fn a_failed_merge_is_reported_kept_and_resumed_by_another_rollback() {
    let env = Env::new(&[("vol", 32 * MIB)], 64 * MIB);
    let backend = env.open();
    let events = record_events(&backend);
    let device = device_of(&backend, "vol");
    let original = pattern(16 << 20, 61);
    write_device(&device, 0, &original);
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(24 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    // 8 MiB = 512 exceptions: the first metadata area is not full, so the failing read is a
    // data chunk's (see the report about a failing metadata-area read)
    write_device(&device, 0, &pattern(8 << 20, 62));

    // the COW becomes unreadable: cut the pool file after its registry slots
    let pool_path = env.config.pool.path.clone();
    let pool_bytes = fs::read(&pool_path).unwrap();
    let data_offset = Pool::open(&pool_path).unwrap().registry().data_offset;
    fs::OpenOptions::new().write(true).open(&pool_path).unwrap().set_len(data_offset).unwrap();

    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Merging);
    let deadline = Instant::now() + Duration::from_secs(20);
    while backend.snapshot(set.id).unwrap().state != SetState::MergeFailed {
        assert!(Instant::now() < deadline, "merge never failed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed = wait_for_event(
        &events,
        "MergeFinished(failed)",
        |e| matches!(e, BackendEvent::MergeFinished { id, ok: false, .. } if *id == set.id),
    );
    assert!(
        matches!(&failed, BackendEvent::MergeFinished { message, .. } if message.contains("volume vol")),
        "MergeFinished(false) names the volume: {failed:?}"
    );
    assert!(
        matches!(backend.delete(set.id), Err(BackendError { kind: ErrorKind::Busy, .. })),
        "a half-merged set is kept"
    );

    // the device comes back: Rollback resumes and finishes with the snapshot's content
    let file = fs::OpenOptions::new().write(true).open(&pool_path).unwrap();
    file.set_len(pool_bytes.len() as u64).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &file,
        &pool_bytes[data_offset as usize..],
        data_offset,
    )
    .unwrap();
    file.sync_all().unwrap();
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Merging);
    wait_removed(&backend, set.id);
    assert!(
        read_file(Path::new(&device), 0, 16 << 20) == original,
        "content after the resumed merge"
    );
    let finished = BackendEvent::MergeFinished { id: set.id, ok: true, message: String::new() };
    wait_for_event(&events, "MergeFinished(ok) after the resumed merge", |e| *e == finished);
}

/// The stand-in leftovers of a crashed daemon, removed on drop (after the backend, which is
/// opened later): loop devices backed by files under the directory, and its tmpfs mount.
struct StaleLeftovers(PathBuf);

impl Drop for StaleLeftovers {
    fn drop(&mut self) {
        // Only ours: other tests run in parallel, and free device numbers are reused.
        snapbackd::backend::userspace::loop_device::detach_stale(&self.0, &[], &(0..0));
        let mounted = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mounted.lines().any(|l| {
            l.split(' ').nth(4) == self.0.to_str() && l.contains(" - tmpfs dead-snapbackd ")
        }) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn leftovers_of_a_crashed_daemon_are_cleaned_up_at_open() {
    let env = Env::new(&[("vol", 16 * MIB)], 64 * MIB);
    // what a killed snapbackd leaves: something mounted at the FUSE dir, a loop device on it
    let fuse_dir = env.options().fuse_dir;
    fs::create_dir_all(&fuse_dir).unwrap();
    sh("mount", &["-t", "tmpfs", "dead-snapbackd", fuse_dir.to_str().unwrap()]);
    // If the backend does not clean them up, the test must not leave them behind itself.
    let _leftovers = StaleLeftovers(fuse_dir.clone());
    fs::File::create(fuse_dir.join("vol")).unwrap().set_len(16 * MIB).unwrap();
    let output = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(fuse_dir.join("vol"))
        .output()
        .unwrap();
    let stale = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let stale_name = Path::new(&stale).file_name().unwrap().to_owned();
    let sys_backing = Path::new("/sys/block").join(&stale_name).join("loop/backing_file");
    assert!(sys_backing.exists(), "stale loop device {stale} set up");

    let backend = env.open();
    let device = device_of(&backend, "vol");
    // The number may also have gone to another test's device meanwhile (tests run in
    // parallel): only a device still backed by this path must be the backend's new one.
    let sys_backing_now = fs::read_to_string(&sys_backing).unwrap_or_default();
    assert!(
        sys_backing_now.trim() != fuse_dir.join("vol").to_str().unwrap() || device == stale,
        "stale loop device {stale} still attached to the dead file"
    );
    // and the new device works through the new FUSE mount
    let data = pattern(1 << 20, 3);
    write_device(&device, 0, &data);
    assert!(read_file(&env.config.volumes[0].device, 0, 1 << 20) == data);
}

#[test]
fn the_volume_stays_usable_during_an_online_merge() {
    let env = Env::new(&[("vol", 32 * MIB)], 64 * MIB);
    // one chunk per step: slow enough that the reads and writes below happen mid-merge
    let options = UserspaceOptions {
        merge_step_bytes: Some(16 * 1024),
        merge_step_pause: Some(Duration::from_millis(2)),
        ..env.options()
    };
    let backend = env.open_with(options);
    let device = device_of(&backend, "vol");
    let original = pattern(16 << 20, 81);
    write_device(&device, 0, &original);
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(24 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    write_device(&device, 0, &pattern(8 << 20, 82));
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Merging);
    // no new set on a merging volume
    assert!(matches!(
        backend.create_snapshot(SnapshotRequest::default()),
        Err(BackendError { kind: ErrorKind::Busy, .. })
    ));
    // while it merges: reads see the snapshot's content, new writes land and stay
    assert!(
        read_file(Path::new(&device), 0, 8 << 20) == original[..8 << 20],
        "reads during the merge"
    );
    let late = pattern(1 << 20, 83);
    write_device(&device, 3 * MIB, &late);
    write_device(&device, 20 * MIB, &late);
    match backend.snapshot(set.id) {
        // all chunks may be merged already while the set is being removed: still "merging"
        Ok(info) => assert!(info.state == SetState::Merging, "{info:?}"),
        // a machine with very fast flushes may finish first; the content checks still hold
        Err(_) => eprintln!("warning: the merge finished before the mid-merge writes were done"),
    }
    wait_removed(&backend, set.id);
    let mut expected = original.clone();
    expected[3 << 20..4 << 20].copy_from_slice(&late);
    assert!(
        read_file(Path::new(&device), 0, 16 << 20) == expected,
        "merged content plus the later write"
    );
    assert!(read_file(Path::new(&device), 20 * MIB, 1 << 20) == late);
}

/// Holds a block device open with O_EXCL, as a mount does: the backend then sees it busy.
fn hold_busy(device: &str) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(device)
        .unwrap()
}

/// Makes every COW read fail (the pool file ends where its data area begins) until the
/// returned bytes are written back with `restore_pool`.
fn cut_pool(env: &Env) -> (Vec<u8>, u64) {
    let pool_path = &env.config.pool.path;
    let bytes = fs::read(pool_path).unwrap();
    let data_offset = Pool::open(pool_path).unwrap().registry().data_offset;
    OpenOptions::new().write(true).open(pool_path).unwrap().set_len(data_offset).unwrap();
    (bytes, data_offset)
}

fn restore_pool(env: &Env, (bytes, data_offset): &(Vec<u8>, u64)) {
    let file = OpenOptions::new().write(true).open(&env.config.pool.path).unwrap();
    file.set_len(bytes.len() as u64).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes[*data_offset as usize..], *data_offset)
        .unwrap();
    file.sync_all().unwrap();
}

fn wait_state(backend: &UserspaceBackend, id: u32, state: SetState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.snapshot(id).unwrap().state != state {
        assert!(
            Instant::now() < deadline,
            "set {id} never became {state:?}: {:?}",
            backend.snapshot(id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loop device over a volume's backing file, so the test can turn it read-only under the
/// backend (`blockdev --setro`: writes through open descriptors then fail with EPERM).
struct BackingLoop(PathBuf);

impl BackingLoop {
    fn attach(env: &mut Env, volume: &str) -> BackingLoop {
        let config = env.config.volumes.iter_mut().find(|v| v.name == volume).unwrap();
        let device = snapbackd::backend::userspace::loop_device::attach(&config.device).unwrap();
        config.device = device.clone();
        BackingLoop(device)
    }

    fn set_read_only(&self, read_only: bool) {
        sh("blockdev", &[if read_only { "--setro" } else { "--setrw" }, self.0.to_str().unwrap()]);
    }
}

impl Drop for BackingLoop {
    fn drop(&mut self) {
        let _ = Command::new("blockdev").arg("--setrw").arg(&self.0).status();
        let _ = snapbackd::backend::userspace::loop_device::detach(&self.0);
    }
}

#[test]
fn a_half_merged_set_stays_whole_whatever_is_pressed() {
    let mut env = Env::new(&[("a", 16 * MIB), ("b", 16 * MIB)], 96 * MIB);
    let backing_a = BackingLoop::attach(&mut env, "a");
    let backend = env.open_with(UserspaceOptions {
        merge_step_bytes: Some(256 << 10),
        merge_step_pause: Some(Duration::from_millis(20)),
        ..env.options()
    });
    let (dev_a, dev_b) = (device_of(&backend, "a"), device_of(&backend, "b"));
    let (original_a, original_b) = (pattern(8 << 20, 71), pattern(8 << 20, 72));
    write_device(&dev_a, 0, &original_a);
    write_device(&dev_b, 0, &original_b);
    let request = SnapshotRequest { cow_size_bytes: Some(12 * MIB), ..SnapshotRequest::default() };
    let set = backend.create_snapshot(request.clone()).unwrap();
    write_device(&dev_b, 0, &pattern(4 << 20, 73));
    let second = backend
        .create_snapshot(SnapshotRequest { volumes: vec!["b".into()], ..request.clone() })
        .unwrap();
    let second_view = read_file(Path::new(&dev_b), 0, 8 << 20);
    write_device(&dev_a, 0, &pattern(4 << 20, 74));
    write_device(&dev_b, 1 << 20, &pattern(2 << 20, 75));

    // The merge into a fails part way: its backing device turns read-only under it.
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Merging);
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.snapshot(set.id).unwrap().merge_progress < 0.1 {
        assert!(Instant::now() < deadline, "the merge made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    backing_a.set_read_only(true);
    wait_state(&backend, set.id, SetState::MergeFailed);
    // Whatever is merged or not, a reads as the snapshot, never as a mix.
    assert!(read_file(Path::new(&dev_a), 0, 8 << 20) == original_a, "volume a mixes two states");

    // A retry while a volume is busy is scheduled, and cancelling it goes back to
    // merge-failed, never to active; the set can be neither deleted nor cancelled again.
    let held = hold_busy(&dev_b);
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Scheduled);
    assert_eq!(backend.snapshot(set.id).unwrap().state, SetState::MergeScheduled);
    backend.cancel_rollback(set.id).unwrap();
    assert_eq!(backend.snapshot(set.id).unwrap().state, SetState::MergeFailed);
    match backend.delete(set.id) {
        Err(BackendError { kind: ErrorKind::Busy, message, .. }) => {
            assert!(message.contains("half rolled back"), "{message}")
        }
        other => panic!("delete of a half-merged set: {other:?}"),
    }
    assert!(matches!(
        backend.cancel_rollback(set.id),
        Err(BackendError { kind: ErrorKind::InvalidArgument, .. })
    ));
    // One rollback per volume: the other set over b is refused and left as it was.
    match backend.rollback(second.id) {
        Err(BackendError { kind: ErrorKind::AlreadyMerging, message, .. }) => {
            assert!(
                message.contains("volume b") && message.contains(&format!("set {}", set.id)),
                "{message}"
            )
        }
        other => panic!("rollback of a second set over a half-merged volume: {other:?}"),
    }
    assert_eq!(backend.snapshot(second.id).unwrap().state, SetState::Active);
    drop(held);

    // The device comes back; the next start resumes the failed merge by itself.
    backing_a.set_read_only(false);
    drop(backend);
    let backend = env.open();
    wait_removed(&backend, set.id);
    let (dev_a, dev_b) = (device_of(&backend, "a"), device_of(&backend, "b"));
    assert!(read_file(Path::new(&dev_a), 0, 8 << 20) == original_a, "volume a is the snapshot's");
    assert!(read_file(Path::new(&dev_b), 0, 8 << 20) == original_b, "volume b is the snapshot's");
    // The other set's snapshot kept its own content through the merge.
    let view = env.dir.path().join("fuse").join(format!("b@{}", second.id));
    assert!(read_file(&view, 0, 8 << 20) == second_view, "the second snapshot of b changed");
    assert_eq!(backend.snapshot(second.id).unwrap().state, SetState::Active);
}

#[test]
fn a_volume_missing_from_the_configuration_costs_no_set() {
    let env = Env::new(&[("a", 16 * MIB), ("b", 16 * MIB)], 96 * MIB);
    let without_b = Config {
        volumes: env.config.volumes.iter().filter(|v| v.name != "b").cloned().collect(),
        ..env.config.clone()
    };
    let open = |config: &Config| {
        UserspaceBackend::open_with(config, Pool::open(&config.pool.path).unwrap(), env.options())
    };
    let backend = env.open();
    let (dev_a, dev_b) = (device_of(&backend, "a"), device_of(&backend, "b"));
    let (original_a, original_b) = (pattern(4 << 20, 81), pattern(4 << 20, 82));
    write_device(&dev_a, 0, &original_a);
    write_device(&dev_b, 0, &original_b);
    let request = SnapshotRequest { cow_size_bytes: Some(12 * MIB), ..SnapshotRequest::default() };
    let kept = backend.create_snapshot(request.clone()).unwrap();
    write_device(&dev_a, 0, &pattern(2 << 20, 83));
    write_device(&dev_b, 0, &pattern(2 << 20, 84));
    drop(backend);

    // b commented out: the set is kept as it was, and its rollback names what is missing.
    let backend = open(&without_b).unwrap();
    assert_eq!(backend.snapshot(kept.id).unwrap().state, SetState::Active);
    match backend.rollback(kept.id) {
        Err(BackendError { kind: ErrorKind::NotFound, message, .. }) => {
            assert!(message.contains("volume b"), "{message}")
        }
        other => panic!("rollback without volume b: {other:?}"),
    }
    assert_eq!(backend.snapshot(kept.id).unwrap().state, SetState::Active);
    drop(backend);

    // b is back: the set rolls both volumes back.
    let backend = env.open();
    assert_eq!(backend.rollback(kept.id).unwrap(), RollbackOutcome::Merging);
    wait_removed(&backend, kept.id);
    let (dev_a, dev_b) = (device_of(&backend, "a"), device_of(&backend, "b"));
    assert!(read_file(Path::new(&dev_a), 0, 4 << 20) == original_a);
    assert!(read_file(Path::new(&dev_b), 0, 4 << 20) == original_b);

    // A set whose merge began is never served without one of its volumes: the start is
    // refused, naming it, and a start with the whole configuration finishes the merge.
    let begun = backend.create_snapshot(request).unwrap();
    write_device(&dev_b, 0, &pattern(2 << 20, 85));
    let cut = cut_pool(&env);
    assert_eq!(backend.rollback(begun.id).unwrap(), RollbackOutcome::Merging);
    wait_state(&backend, begun.id, SetState::MergeFailed);
    drop(backend);
    restore_pool(&env, &cut);
    let err = open(&without_b).unwrap_err();
    assert!(err.to_string().contains("volume b is not in the configuration"), "{err}");
    let backend = env.open();
    wait_removed(&backend, begun.id);
    assert!(read_file(Path::new(&device_of(&backend, "b")), 0, 4 << 20) == original_b);
}

#[test]
fn a_volume_still_open_at_shutdown_takes_no_write_its_snapshots_would_miss() {
    use std::os::unix::fs::FileExt;
    let env = Env::new(&[("held", 16 * MIB)], 64 * MIB);
    let backend = env.open();
    let device = device_of(&backend, "held");
    let original = pattern(4 << 20, 91);
    write_device(&device, 0, &original);
    let set = backend
        .create_snapshot(SnapshotRequest {
            cow_size_bytes: Some(8 * MIB),
            ..SnapshotRequest::default()
        })
        .unwrap();
    let changed = pattern(1 << 20, 92);
    write_device(&device, 0, &changed);

    // Someone still has the volume open when the daemon stops (a mount would, too): the loop
    // device and FUSE keep serving it after shutdown.
    let held = OpenOptions::new().read(true).write(true).open(&device).unwrap();
    backend.shutdown().unwrap();
    let late = pattern(1 << 20, 93);
    let wrote = held.write_all_at(&late, 2 << 20).and_then(|()| held.sync_all());
    assert!(wrote.is_err(), "a write after shutdown was taken while snapshots may be detached");
    drop(held);
    drop(backend);

    let _backend = env.open();
    // Read through FUSE: the old loop device's number may be the new one's, with its pages.
    let volume = read_file(&env.dir.path().join("fuse").join("held"), 0, 4 << 20);
    assert!(volume[..1 << 20] == changed[..], "the write before shutdown is kept");
    assert!(
        volume[2 << 20..3 << 20] == original[2 << 20..3 << 20],
        "the refused write did not land"
    );
    let view = env.dir.path().join("fuse").join(format!("held@{}", set.id));
    assert!(read_file(&view, 0, 4 << 20) == original, "the snapshot is whole");
}

/// A /boot and an ESP in the test's directory, as a Fedora machine with GRUB's BLS entries
/// and a systemd-boot ESP lays them out.
fn boot_dirs(env: &mut Env) -> (PathBuf, PathBuf) {
    let boot = env.dir.path().join("boot");
    let esp = env.dir.path().join("esp");
    let kernel = |version: &str| {
        fs::write(boot.join(format!("vmlinuz-{version}")), pattern(300_000, version.len() as u32))
            .unwrap();
        fs::write(
            boot.join(format!("initramfs-{version}.img")),
            pattern(500_000, 7 + version.len() as u32),
        )
        .unwrap();
        fs::write(
            boot.join(format!("loader/entries/m-{version}.conf")),
            format!("title Fedora {version}\nlinux /vmlinuz-{version}\ninitrd /initramfs-{version}.img\noptions root=/dev/mapper/snapback-root\n"),
        )
        .unwrap();
    };
    fs::create_dir_all(boot.join("loader/entries")).unwrap();
    fs::create_dir_all(boot.join("grub2")).unwrap();
    fs::create_dir_all(esp.join("loader")).unwrap();
    kernel("6.10");
    kernel("6.11");
    fs::write(boot.join("grub2/grubenv"), "# GRUB Environment Block\nsaved_entry=m-6.11\n")
        .unwrap();
    fs::write(esp.join("loader/loader.conf"), "timeout 3\n").unwrap();
    env.config.boot = snapbackd::boot::BootConfig {
        enabled: true,
        root_volume: Some("root".into()),
        boot_dir: Some(boot.clone()),
        esp: Some(esp.clone()),
    };
    (boot, esp)
}

/// What `dnf upgrade` does to /boot when it installs a kernel (installonly_limit = 2).
fn upgrade_boot(boot: &Path) {
    fs::write(boot.join("vmlinuz-6.12"), pattern(310_000, 12)).unwrap();
    fs::write(boot.join("initramfs-6.12.img"), pattern(510_000, 13)).unwrap();
    fs::write(
        boot.join("loader/entries/m-6.12.conf"),
        "title Fedora 6.12\nlinux /vmlinuz-6.12\ninitrd /initramfs-6.12.img\noptions root=/dev/mapper/snapback-root\n",
    )
    .unwrap();
    fs::write(boot.join("grub2/grubenv"), "# GRUB Environment Block\nsaved_entry=m-6.12\n")
        .unwrap();
    for old in ["vmlinuz-6.10", "initramfs-6.10.img", "loader/entries/m-6.10.conf"] {
        fs::remove_file(boot.join(old)).unwrap();
    }
}

fn boot_state(env: &Env) -> BTreeMap<(snapbackd::pool::BootRoot, String), String> {
    snapbackd::boot::tree::current(&env.config.boot.roots()).unwrap()
}

#[test]
fn a_rollback_of_the_root_volume_brings_back_boot_and_a_cancel_the_upgrade() {
    let mut env = Env::new(&[("root", 16 * MIB), ("data", 16 * MIB)], 128 * MIB);
    let (boot, _esp) = boot_dirs(&mut env);
    let backend = env.open();
    let device = device_of(&backend, "root");
    let original = pattern(4 << 20, 101);
    write_device(&device, 0, &original);
    let at_snapshot = boot_state(&env);
    let request = SnapshotRequest { cow_size_bytes: Some(8 * MIB), ..SnapshotRequest::default() };
    let set = backend.create_snapshot(request.clone()).unwrap();
    let data_only = backend
        .create_snapshot(SnapshotRequest { volumes: vec!["data".into()], ..request })
        .unwrap();
    let registry = Pool::open(&env.config.pool.path).unwrap().registry();
    let recorded = registry.set(set.id).unwrap().boot.clone().expect("the root set records /boot");
    assert_eq!(recorded.files.len(), at_snapshot.len());
    assert!(
        registry.set(data_only.id).unwrap().boot.is_none(),
        "a set without the root volume records nothing"
    );
    assert!(registry.boot_blob_extent_count() > 0);
    // The way back from the boot menu: the snapshot-time default (6.11) with the parameter.
    let entry_path = boot.join(format!("loader/entries/snapback-rollback-{}.conf", set.id));
    let entry = fs::read_to_string(&entry_path).unwrap();
    assert!(entry.contains(&format!("snapback.rollback={}", set.id)), "{entry}");
    // It boots a kept copy of the snapshot-time default kernel, which the upgrade cannot take.
    let kernel = entry.lines().find_map(|line| line.strip_prefix("linux /")).unwrap();
    assert!(kernel.starts_with("snapback/") && kernel.ends_with("/vmlinuz-6.11"), "{entry}");
    assert!(fs::read(boot.join(kernel)).unwrap() == fs::read(boot.join("vmlinuz-6.11")).unwrap());
    assert!(entry.starts_with(&format!("title Roll back to snapshot {}: ", set.id)), "{entry}");

    upgrade_boot(&boot);
    write_device(&device, 0, &pattern(1 << 20, 102));
    let upgraded = boot_state(&env);
    assert_ne!(upgraded, at_snapshot);

    // Scheduled (root in use): /boot is the snapshot's at once, for the next boot to use.
    let held = hold_busy(&device);
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Scheduled);
    assert_eq!(boot_state(&env), at_snapshot);
    assert_eq!(
        fs::read_to_string(boot.join("grub2/grubenv")).unwrap(),
        "# GRUB Environment Block\nsaved_entry=m-6.11\n"
    );
    assert_eq!(snapbackd::boot::tree::bootable(&env.config.boot.roots()), Ok(()));
    // Cancelled: the upgrade's /boot is back, and nothing is due any more.
    backend.cancel_rollback(set.id).unwrap();
    assert_eq!(boot_state(&env), upgraded);
    let registry = Pool::open(&env.config.pool.path).unwrap().registry();
    let record = registry.set(set.id).unwrap();
    assert!(record.boot_restore.is_none() && record.boot_undo.is_none(), "{record:?}");

    // A crash right after the state was committed: the next start finishes /boot.
    assert_eq!(backend.rollback(set.id).unwrap(), RollbackOutcome::Scheduled);
    drop(held);
    drop(backend);
    upgrade_boot_again(&boot);
    let pool = Pool::open(&env.config.pool.path).unwrap();
    pool.update(|registry| {
        registry.set_mut(set.id).unwrap().boot_restore =
            Some(snapbackd::pool::BootRestore::Snapshot);
        Ok(())
    })
    .unwrap();
    drop(pool);
    let backend = env.open();
    assert_eq!(boot_state(&env), at_snapshot, "the start finished the boot side");
    // The merge ran at this start (nothing holds root): the set and its kept files are gone.
    wait_removed(&backend, set.id);
    assert!(read_file(&env.dir.path().join("fuse").join("root"), 0, 4 << 20) == original);
    let registry = Pool::open(&env.config.pool.path).unwrap().registry();
    assert_eq!(registry.boot_blob_extent_count(), 0, "the last set naming the kept files is gone");
    assert!(!entry_path.exists(), "the rollback entry goes with its set");
    assert_eq!(backend.snapshot(data_only.id).unwrap().state, SetState::Active);
}

/// The upgrade's /boot as a crash part way through its restore would leave it.
fn upgrade_boot_again(boot: &Path) {
    fs::write(boot.join("vmlinuz-6.12"), pattern(310_000, 12)).unwrap();
    fs::write(boot.join("grub2/grubenv"), "# GRUB Environment Block\nsaved_entry=m-6.12\n")
        .unwrap();
}
