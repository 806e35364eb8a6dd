//! Torture on the host: ext4 and XFS on a userspace-backend volume under `fio` (with data
//! verification) and a metadata workload that checks itself against a ledger of what it made
//! durable, while sets are taken, deleted and rolled back and snapbackd is SIGKILLed at random
//! moments (during writes and copy-on-write, Snapshot, Delete and merges) and restarted.
//!
//! After every kill: every file the workload fsync'd is there with its bytes, the filesystem
//! checks clean (`e2fsck -fn` / `xfs_repair -n`), every set the daemon lists is one this test
//! made, in the state that explains it, and a rollback started before the kill finishes with
//! the snapshot's content (compared with a manifest taken while the filesystem was frozen for
//! the snapshot).
//!
//! Short by default, for `cargo test`; `tools/torture --iterations N --seed S [--fs ext4|xfs]`
//! runs long ones (it sets SNAPBACK_TORTURE_ITERATIONS, _SEED, _FS and _FIO_MIB). Needs root.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    cow_size, full_tree, pattern, run, tree_digest, wait_merge_end, Fixture, Options, MIB,
};
use snapback_dbus::ManagerProxy;
use zbus::{Connection, OwnedObjectPath};

/// XFS refuses filesystems under 300 MiB.
const VOLUME_BYTES: u64 = 320 * MIB;
/// More live sets than this and the oldest is deleted (the pool holds them all in full).
const MAX_SETS: usize = 4;
/// Half the sets ask for a COW of a tenth of the volume: the load fills it past the monitor's
/// threshold and it grows from the pool (autoextend) while the writes go on, or, when writes
/// outrun it, fills up and the set goes invalid (the documented outcome, counted).
const SMALL_COW_BYTES: u64 = VOLUME_BYTES / 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: the seed decides every choice, so a failing run can be repeated (the kill
/// moments still land on whatever the machine is doing then).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Files of the metadata workload: path (as `tree_digest` writes it, `./d3/f17`) → sha256.
type Files = BTreeMap<String, String>;

/// One step of the metadata workload. Each is made durable (file and directory fsync'd)
/// before it counts.
#[derive(Debug, Clone)]
enum Op {
    Create { path: String },
    Rename { from: String, to: String },
    Delete { path: String },
}

#[derive(Debug, Default)]
struct Ledger {
    /// What every completed step made durable.
    durable: Files,
    /// The step under way: it may or may not have reached the disk.
    in_flight: Option<Op>,
    /// The step that failed, when one did (expected only after a kill).
    error: Option<String>,
    ops: u64,
    /// Every completed step with when it completed: a failed check shows the steps that
    /// touched the file it is about, and how long before the end they were made durable.
    history: Vec<(Instant, Op)>,
    /// When the workload was stopped (after the kill, when there was one).
    stopped: Option<Instant>,
}

const LEDGER_DIRS: u64 = 8;

/// Creates, renames and deletes small files under `root/ledger`, fsyncing file and directory
/// after each, and records what is durable. Stops at `stop` or at its first error.
#[derive(Debug)]
struct Workload {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    thread: Option<JoinHandle<()>>,
}

impl Workload {
    fn start(mnt: &Path, durable: Files, seed: u64) -> Workload {
        let root = mnt.join("ledger");
        for d in 0..LEDGER_DIRS {
            fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
        }
        fsync_dir(&root).unwrap();
        fsync_dir(mnt).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // names never repeat: past the highest one the volume holds
        let highest = durable
            .keys()
            .filter_map(|p| p.rsplit_once("/f").and_then(|(_, n)| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        let ledger = Arc::new(Mutex::new(Ledger { durable, ..Ledger::default() }));
        let thread = {
            let (stop, ledger) = (stop.clone(), ledger.clone());
            std::thread::spawn(move || ledger_loop(&root, seed, highest, &stop, &ledger))
        };
        Workload { stop, ledger, thread: Some(thread) }
    }

    /// Stops it; panics when a step failed although nothing was killed.
    fn finish(mut self, killed: bool) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let mut ledger = std::mem::take(&mut *self.ledger.lock().unwrap());
        ledger.stopped = Some(Instant::now());
        if !killed {
            assert!(ledger.error.is_none(), "the workload failed: {:?}", ledger.error);
        }
        ledger
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn ledger_loop(
    root: &Path,
    seed: u64,
    mut counter: u64,
    stop: &AtomicBool,
    ledger: &Mutex<Ledger>,
) {
    let mut rng = Rng::new(seed ^ 0x001E_D6E4);
    while !stop.load(Ordering::SeqCst) {
        let names: Vec<String> = ledger.lock().unwrap().durable.keys().cloned().collect();
        counter += 1;
        let fresh = format!("./d{}/f{counter}", rng.below(LEDGER_DIRS));
        // grows to a few hundred files, then holds there
        let op = match rng.below(10) {
            _ if names.len() < 16 => Op::Create { path: fresh },
            0..=4 if names.len() > 300 => Op::Delete { path: rng.pick(&names).clone() },
            0..=5 => Op::Create { path: fresh },
            6 | 7 => Op::Rename { from: rng.pick(&names).clone(), to: fresh },
            _ => Op::Delete { path: rng.pick(&names).clone() },
        };
        ledger.lock().unwrap().in_flight = Some(op.clone());
        let bytes = pattern(rng.below(48 * 1024) as usize, rng.next());
        let done = apply(root, &op, &bytes);
        let mut ledger = ledger.lock().unwrap();
        match done {
            Ok(()) => {
                match &op {
                    Op::Create { path } => {
                        ledger.durable.insert(path.clone(), sha256_hex(&bytes));
                    }
                    Op::Rename { from, to } => {
                        let sha = ledger.durable.remove(from).unwrap();
                        ledger.durable.insert(to.clone(), sha);
                    }
                    Op::Delete { path } => {
                        ledger.durable.remove(path);
                    }
                }
                ledger.in_flight = None;
                ledger.ops += 1;
                ledger.history.push((Instant::now(), op));
            }
            Err(e) => {
                ledger.error = Some(format!("{op:?}: {e}"));
                return;
            }
        }
    }
}

fn apply(root: &Path, op: &Op, bytes: &[u8]) -> std::io::Result<()> {
    let at = |p: &str| root.join(p.trim_start_matches("./"));
    match op {
        Op::Create { path } => {
            let mut file = fs::File::create(at(path))?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fsync_dir(at(path).parent().unwrap_or(root))
        }
        Op::Rename { from, to } => {
            fs::rename(at(from), at(to))?;
            fsync_dir(at(to).parent().unwrap_or(root))?;
            fsync_dir(at(from).parent().unwrap_or(root))
        }
        Op::Delete { path } => {
            fs::remove_file(at(path))?;
            fsync_dir(at(path).parent().unwrap_or(root))
        }
    }
}

/// Checks `actual` (the workload's files found on the volume) against what the ledger made
/// durable: every durable file is there with its bytes, and nothing else is, except what the
/// one step in flight may have done.
fn check_ledger(actual: &Files, ledger: &Ledger) -> Result<(), String> {
    let in_flight = ledger.in_flight.as_ref();
    for (path, sha) in &ledger.durable {
        match actual.get(path) {
            Some(found) if found == sha => {}
            None if matches!(in_flight, Some(Op::Rename { from, .. }) if from == path)
                || matches!(in_flight, Some(Op::Delete { path: p }) if p == path) => {}
            found => {
                return Err(format!(
                    "fsync'd file {path} is {found:?}, expected sha256 {sha} (step in flight: \
                     {in_flight:?})\n{}",
                    ledger.steps_touching(path)
                ))
            }
        }
    }
    for (path, sha) in actual {
        if ledger.durable.contains_key(path) {
            continue;
        }
        let explained = match in_flight {
            Some(Op::Create { path: p }) => p == path,
            Some(Op::Rename { from, to }) => to == path && ledger.durable.get(from) == Some(sha),
            _ => false,
        };
        if !explained {
            return Err(format!(
                "unexpected file {path} (step in flight: {in_flight:?})\n{}",
                ledger.steps_touching(path)
            ));
        }
    }
    Ok(())
}

impl Ledger {
    /// The completed steps that named `path`, with how long before the workload stopped
    /// each was made durable, and how many steps completed after it.
    fn steps_touching(&self, path: &str) -> String {
        let end = self.stopped.unwrap_or_else(Instant::now);
        let total = self.history.len();
        let mut out = format!("{total} steps completed since the workload started; of them:\n");
        for (index, (at, op)) in self.history.iter().enumerate() {
            let named = match op {
                Op::Create { path: p } | Op::Delete { path: p } => p == path,
                Op::Rename { from, to } => from == path || to == path,
            };
            if named {
                out.push_str(&format!(
                    "  step {index}: {op:?}, durable {:.3} s before the stop, {} steps after it\n",
                    end.saturating_duration_since(*at).as_secs_f64(),
                    total - index - 1
                ));
            }
        }
        out
    }
}

fn ledger_files(tree: &BTreeMap<String, String>) -> Files {
    tree.iter()
        .filter_map(|(p, h)| {
            p.strip_prefix("./ledger/").map(|rest| (format!("./{rest}"), h.clone()))
        })
        .collect()
}

/// A manifest: the tree's digest and every path's description.
type Manifest = (String, BTreeMap<String, String>);

/// A set this test made, with the volume's content when it was taken.
#[derive(Debug)]
struct Taken {
    path: OwnedObjectPath,
    tree: Manifest,
    /// The COW size the set asked for.
    cow_bytes: u64,
    /// Its COW was seen larger than asked for.
    grown: bool,
}

#[derive(Debug, Default)]
struct Counts {
    kills: u64,
    kills_in_writes: u64,
    kills_in_snapshot: u64,
    kills_in_delete: u64,
    kills_in_merge: u64,
    snapshots: u64,
    deletes: u64,
    rollbacks: u64,
    fio_runs: u64,
    fio_verified_mib: u64,
    ledger_ops: u64,
    grown: u64,
    filled_up: u64,
}

struct Torture {
    fx: Fixture,
    fstype: String,
    rng: Rng,
    seed: u64,
    connection: Connection,
    manager: ManagerProxy<'static>,
    device: String,
    mnt: PathBuf,
    workload: Option<Workload>,
    sets: Vec<Taken>,
    counts: Counts,
    fio_mib: u64,
}

impl Torture {
    async fn start(fstype: &str, seed: u64, fio_mib: u64) -> Torture {
        // With SNAPBACK_TORTURE_KEEP, every daemon logs its volume's writes and fsyncs there
        // too (SNAPBACK_TEST_IO_TRACE): a failure can then be followed to the daemon's side.
        let daemon_env = match std::env::var_os("SNAPBACK_TORTURE_KEEP") {
            Some(keep) => {
                fs::create_dir_all(&keep).unwrap();
                let trace = PathBuf::from(keep).join(format!("io-trace-{fstype}-seed{seed}.log"));
                vec![("SNAPBACK_TEST_IO_TRACE".to_string(), trace.display().to_string())]
            }
            None => Vec::new(),
        };
        let fx = Fixture::start(Options {
            volumes: vec![common::VolumeSpec { name: "root", bytes: VOLUME_BYTES, auto: true }],
            pool_bytes: 2048 * MIB,
            merge_step_bytes: Some(256 * 1024),
            daemon_env,
            ..Options::default()
        });
        let connection = fx.connect().await;
        let manager = fx.manager(&connection).await;
        let device = fx.device_of(&connection, "root").await;
        match fstype {
            "ext4" => fx.mkfs(&device),
            "xfs" => {
                run("mkfs.xfs", &["-q", "-f", &device]);
            }
            other => panic!("SNAPBACK_TORTURE_FS={other}: ext4 or xfs"),
        }
        let mnt = fx.path("mnt");
        let mut t = Torture {
            fx,
            fstype: fstype.to_string(),
            rng: Rng::new(seed),
            seed,
            connection,
            manager,
            device,
            mnt,
            workload: None,
            sets: Vec::new(),
            counts: Counts::default(),
            fio_mib,
        };
        t.mount();
        t.start_workload(Files::new());
        t
    }

    fn mount(&mut self) {
        // A filesystem killed under XFS may linger (lazily unmounted) with the same UUID.
        let options = if self.fstype == "xfs" { "nouuid" } else { "defaults" };
        fs::create_dir_all(&self.mnt).unwrap();
        run(
            "mount",
            &["-t", &self.fstype, "-o", options, &self.device, self.mnt.to_str().unwrap()],
        );
    }

    fn umount(&mut self) {
        run("umount", &[self.mnt.to_str().unwrap()]);
    }

    /// The read-only check of the unmounted filesystem; a dirty log is replayed first by a
    /// mount, as the next boot would.
    fn fsck(&mut self) {
        let out = match self.fstype.as_str() {
            "ext4" => Command::new("e2fsck").args(["-fn", &self.device]).output().unwrap(),
            _ => Command::new("xfs_repair").args(["-n", &self.device]).output().unwrap(),
        };
        assert!(
            out.status.success(),
            "{} found damage (seed {}):\n{}{}",
            if self.fstype == "ext4" { "e2fsck -fn" } else { "xfs_repair -n" },
            self.seed,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_workload(&mut self, durable: Files) {
        let seed = self.rng.next();
        self.workload = Some(Workload::start(&self.mnt, durable, seed));
    }

    fn stop_workload(&mut self, killed: bool) -> Ledger {
        let ledger = self.workload.take().expect("workload running").finish(killed);
        self.counts.ledger_ops += ledger.ops;
        ledger
    }

    fn fio(&mut self) -> Child {
        let dir = self.mnt.join("fio");
        fs::create_dir_all(&dir).unwrap();
        let mib = self.fio_mib;
        self.counts.fio_runs += 1;
        let log =
            fs::File::create(self.fx.path(&format!("fio-{}.log", self.counts.fio_runs))).unwrap();
        // Global options first, then three jobs: sequential fsync'd every 8 writes, random 4k
        // with verification while writing (backlog) and no fsync, random 64k O_DIRECT.
        Command::new("fio")
            .current_dir(self.fx.path(""))
            .arg(format!("--directory={}", dir.display()))
            .args(["--ioengine=psync", "--verify=crc32c", "--do_verify=1", "--group_reporting"])
            // no verify-state files left in the working directory (the crate's source)
            .arg("--verify_state_save=0")
            .arg(format!("--randseed={}", self.rng.next() % 1_000_000_007))
            .args(["--name=seq", "--rw=write", "--bs=128k", "--fsync=8"])
            .arg(format!("--size={mib}M"))
            .args(["--name=rand", "--rw=randwrite", "--bs=4k", "--verify_backlog=64"])
            .arg(format!("--size={mib}M"))
            .args(["--name=direct", "--rw=randwrite", "--bs=64k", "--direct=1", "--end_fsync=1"])
            .arg(format!("--size={mib}M"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Freezes the filesystem, takes its manifest, checks the workload's part against the
    /// ledger, and returns the manifest. The caller calls Snapshot and then `thaw`.
    fn freeze(&mut self) -> (String, BTreeMap<String, String>) {
        run("fsfreeze", &["-f", self.mnt.to_str().unwrap()]);
        let tree = full_tree(&self.mnt);
        if let Some(workload) = &self.workload {
            let ledger = workload.ledger.lock().unwrap();
            if let Err(problem) = check_ledger(&ledger_files(&tree.1), &ledger) {
                panic!("frozen for a snapshot (seed {}): {problem}", self.seed);
            }
        }
        tree
    }

    fn thaw(&self) {
        run("fsfreeze", &["-u", self.mnt.to_str().unwrap()]);
    }

    async fn snapshot(&mut self) {
        // room in the pool first: every set asks for a COW as large as the volume
        while self.sets.len() >= MAX_SETS {
            self.delete(0).await;
        }
        let tree = self.freeze();
        let n = self.counts.snapshots;
        let cow_bytes = self.pick_cow();
        let path =
            self.manager.snapshot(&["root"], &format!("torture {n}"), cow_size(cow_bytes)).await;
        self.thaw();
        let path = path.unwrap_or_else(|e| panic!("Snapshot: {e}\n{}", self.fx.daemon_log()));
        self.counts.snapshots += 1;
        self.sets.push(Taken { path, tree, cow_bytes, grown: false });
    }

    fn pick_cow(&mut self) -> u64 {
        if self.rng.below(2) == 0 {
            SMALL_COW_BYTES
        } else {
            VOLUME_BYTES
        }
    }

    /// Counts the sets whose COW grew, and deletes those that filled up: only a small COW may
    /// (a volume-sized one holds every chunk of the volume).
    async fn check_growth(&mut self) {
        let mut index = 0;
        while index < self.sets.len() {
            let taken = &self.sets[index];
            let proxy = self.fx.snapshot_proxy(&self.connection, taken.path.as_str()).await;
            let size = proxy.size_bytes().await.unwrap();
            if size > taken.cow_bytes && !taken.grown {
                self.counts.grown += 1;
                self.sets[index].grown = true;
            }
            if proxy.state().await.unwrap() == "invalid" {
                let taken = &self.sets[index];
                assert!(
                    taken.cow_bytes < VOLUME_BYTES,
                    "set {} with a volume-sized COW went invalid:\n{}",
                    taken.path,
                    self.fx.daemon_log()
                );
                self.counts.filled_up += 1;
                self.delete(index).await;
                continue;
            }
            index += 1;
        }
    }

    async fn delete(&mut self, index: usize) {
        let taken = self.sets.remove(index);
        let proxy = self.fx.snapshot_proxy(&self.connection, taken.path.as_str()).await;
        proxy.delete().await.unwrap_or_else(|e| panic!("Delete: {e}\n{}", self.fx.daemon_log()));
        self.counts.deletes += 1;
    }

    /// SIGKILL the daemon (its FUSE volume dies under the mounted filesystem) and unmount the
    /// dead filesystem lazily; the caller stops what still has files open there, then
    /// [`Torture::restart`]s.
    fn kill(&mut self, mounted: bool) {
        self.fx.kill_daemon(std::slice::from_ref(&self.device));
        self.counts.kills += 1;
        if mounted {
            run("umount", &["-l", self.mnt.to_str().unwrap()]);
        }
    }

    /// Starts the daemon again once the dead filesystem has let go of the killed daemon's loop
    /// device: while it holds it, the daemon rightly schedules rollbacks instead of merging
    /// (XFS takes a moment to shut down on a dead device).
    async fn restart(&mut self) {
        let sys = format!("/sys/block/{}/loop", self.device.trim_start_matches("/dev/"));
        let started = Instant::now();
        while Path::new(&sys).exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} still bound after 60 s",
                self.device
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fx.start_daemon();
        self.connection = self.fx.connect().await;
        self.manager = self.fx.manager(&self.connection).await;
        self.device = self.fx.device_of(&self.connection, "root").await;
    }

    /// After a restart: the daemon lists exactly the sets this test knows of (the outcome of
    /// the one call cut by the kill is decided by what it lists) and all are active.
    async fn check_sets(&mut self, maybe_new: Option<(Manifest, u64)>) {
        let status = self.manager.status().await.unwrap();
        let listed: Vec<OwnedObjectPath> = status.volumes["root"].snapshots.clone();
        for taken in &self.sets {
            assert!(listed.contains(&taken.path), "set {} lost after a kill", taken.path);
        }
        let unknown: Vec<&OwnedObjectPath> =
            listed.iter().filter(|p| !self.sets.iter().any(|t| &t.path == *p)).collect();
        match (unknown.as_slice(), maybe_new) {
            ([], _) => {}
            ([path], Some((tree, cow_bytes))) => {
                self.counts.snapshots += 1;
                self.sets.push(Taken { path: (*path).clone(), tree, cow_bytes, grown: false });
            }
            (paths, _) => panic!("sets nobody took: {paths:?}"),
        }
        for taken in &self.sets {
            let proxy = self.fx.snapshot_proxy(&self.connection, taken.path.as_str()).await;
            let state = proxy.state().await.unwrap();
            assert!(
                state == "active" || (state == "invalid" && taken.cow_bytes < VOLUME_BYTES),
                "set {} is {state} after a restart:\n{}",
                taken.path,
                self.fx.daemon_log()
            );
        }
    }

    /// After a kill with the filesystem mounted: replay its log by mounting, check the
    /// workload's files against the ledger, unmount, check the filesystem, mount again.
    ///
    /// With SNAPBACK_TORTURE_KEEP=DIR, the volume as the kill left it (before the mount
    /// replays its log) is copied first and kept in DIR when the check fails, with the
    /// daemon's log, for `xfs_logprint` / `debugfs` (the fixture's directory goes with it);
    /// DIR also holds the daemons' trace of every write and fsync (`io-trace-*.log`).
    fn recover(&mut self, ledger: &Ledger, when: &str) -> Files {
        let keep = std::env::var_os("SNAPBACK_TORTURE_KEEP").map(PathBuf::from);
        let crash_image = self.fx.path("crash-image.img");
        if keep.is_some() {
            run(
                "cp",
                &[
                    "--sparse=always",
                    self.fx.path("root.img").to_str().unwrap(),
                    crash_image.to_str().unwrap(),
                ],
            );
        }
        self.mount();
        let found = tree_digest(&self.mnt.join("ledger"));
        if let Err(problem) = check_ledger(&found, ledger) {
            let mut kept = String::new();
            if let Some(dir) = keep {
                let dir =
                    dir.join(format!("{}-seed{}-{}", self.fstype, self.seed, self.counts.kills));
                fs::create_dir_all(&dir).unwrap();
                fs::rename(&crash_image, dir.join("crash-image.img")).unwrap();
                fs::write(dir.join("daemon.log"), self.fx.daemon_log()).unwrap();
                fs::write(dir.join("problem.txt"), &problem).unwrap();
                kept = format!("\nthe volume as the kill left it: {}", dir.display());
            }
            panic!("{when} (seed {}): {problem}{kept}", self.seed);
        }
        self.umount();
        self.fsck();
        self.mount();
        found
    }

    async fn iteration(&mut self, i: u64) {
        // first, so that the choice below sees the sets that are left
        self.check_growth().await;
        let choice = self.rng.below(20);
        let what = match choice {
            0..=3 => "load",
            4..=8 => "kill-in-writes",
            9..=12 => "kill-in-snapshot",
            13..=14 if !self.sets.is_empty() => "kill-in-delete",
            _ if !self.sets.is_empty() => "rollback",
            _ => "load",
        };
        eprintln!(
            "torture[{} seed {}] iteration {i}: {what} (so far: {} kills, {} rollbacks, 0 bytes lost)",
            self.fstype, self.seed, self.counts.kills, self.counts.rollbacks
        );
        match what {
            "load" => self.load().await,
            "kill-in-writes" => self.kill_in_writes().await,
            "kill-in-snapshot" => self.kill_in_snapshot().await,
            "kill-in-delete" => self.kill_in_delete().await,
            _ => self.rollback().await,
        }
        if self.sets.len() > MAX_SETS {
            self.delete(0).await;
        }
    }

    /// fio with verification and the workload, while one or two sets are taken: no faults,
    /// so every fio job must verify.
    async fn load(&mut self) {
        let mut fio = self.fio();
        for _ in 0..=self.rng.below(2) {
            tokio::time::sleep(Duration::from_millis(self.rng.below(1500))).await;
            self.snapshot().await;
        }
        let status = wait_child(&mut fio, Duration::from_secs(900));
        let log =
            fs::read_to_string(self.fx.path(&format!("fio-{}.log", self.counts.fio_runs))).unwrap();
        assert!(status.success(), "fio failed (seed {}):\n{log}", self.seed);
        assert!(!log.contains("verify failed") && !log.contains("bad magic"), "fio: {log}");
        self.counts.fio_verified_mib += 3 * self.fio_mib;
        fs::remove_dir_all(self.mnt.join("fio")).unwrap();
        self.check_growth().await;
    }

    async fn kill_in_writes(&mut self) {
        let mut fio = (self.rng.below(2) == 0).then(|| self.fio());
        tokio::time::sleep(Duration::from_millis(50 + self.rng.below(1500))).await;
        self.kill(true);
        self.counts.kills_in_writes += 1;
        if let Some(fio) = fio.as_mut() {
            // it saw its device die; its verdict means nothing now
            let _ = wait_child(fio, Duration::from_secs(120));
        }
        let ledger = self.stop_workload(true);
        self.restart().await;
        let durable = self.recover(&ledger, "after a kill during writes");
        self.check_sets(None).await;
        let _ = fs::remove_dir_all(self.mnt.join("fio"));
        self.start_workload(durable);
    }

    async fn kill_in_snapshot(&mut self) {
        while self.sets.len() >= MAX_SETS {
            self.delete(0).await;
        }
        let tree = self.freeze();
        let manager = self.manager.clone();
        let n = self.counts.snapshots;
        let cow_bytes = self.pick_cow();
        let call = tokio::spawn(async move {
            manager.snapshot(&["root"], &format!("torture {n}"), cow_size(cow_bytes)).await
        });
        tokio::time::sleep(Duration::from_millis(self.rng.below(300))).await;
        self.fx.kill_daemon(std::slice::from_ref(&self.device));
        let replied = call.await.unwrap();
        self.thaw();
        self.counts.kills += 1;
        self.counts.kills_in_snapshot += 1;
        run("umount", &["-l", self.mnt.to_str().unwrap()]);
        let ledger = self.stop_workload(true);
        self.restart().await;
        let durable = self.recover(&ledger, "after a kill during Snapshot");
        let before = self.sets.len();
        self.check_sets(Some((tree, cow_bytes))).await;
        if let Ok(path) = replied {
            assert_eq!(self.sets.len(), before + 1, "Snapshot replied {path} before the kill");
            assert_eq!(self.sets.last().unwrap().path, path);
        }
        self.start_workload(durable);
    }

    async fn kill_in_delete(&mut self) {
        let index = self.rng.below(self.sets.len() as u64) as usize;
        let path = self.sets[index].path.clone();
        let proxy = self.fx.snapshot_proxy(&self.connection, path.as_str()).await;
        let call = tokio::spawn(async move { proxy.delete().await });
        tokio::time::sleep(Duration::from_millis(self.rng.below(40))).await;
        self.kill(true);
        self.counts.kills_in_delete += 1;
        let replied = call.await.unwrap();
        let ledger = self.stop_workload(true);
        self.restart().await;
        let durable = self.recover(&ledger, "after a kill during Delete");
        let listed = self.manager.status().await.unwrap().volumes["root"].snapshots.clone();
        if !listed.contains(&path) {
            self.sets.remove(index);
            self.counts.deletes += 1;
        } else {
            assert!(replied.is_err(), "Delete of {path} replied before the kill, yet it is listed");
        }
        self.check_sets(None).await;
        self.start_workload(durable);
    }

    /// Rolls a random set back with the filesystem unmounted, half the time with a kill
    /// somewhere in the merge, and compares the volume with the set's manifest.
    async fn rollback(&mut self) {
        let ledger = self.stop_workload(false);
        drop(ledger);
        self.umount();
        // Only now, with nothing writing (the unmount's own flush may fill a small COW), are
        // the sets left the ones that can be rolled back.
        self.check_growth().await;
        if self.sets.is_empty() {
            self.mount();
            let tree = full_tree(&self.mnt);
            self.start_workload(ledger_files(&tree.1));
            return;
        }
        let index = self.rng.below(self.sets.len() as u64) as usize;
        let path = self.sets[index].path.clone();
        let kill = self.rng.below(2) == 0;
        if kill {
            let manager = self.manager.clone();
            let set = path.clone();
            let call =
                tokio::spawn(async move { manager.rollback(&set.as_ref(), HashMap::new()).await });
            tokio::time::sleep(Duration::from_millis(self.rng.below(2000))).await;
            self.kill(false);
            self.restart().await;
            self.counts.kills_in_merge += 1;
            let replied = call.await.unwrap();
            let status = self.manager.status().await.unwrap();
            let still_listed = status.volumes["root"].snapshots.contains(&path);
            let state = if still_listed {
                self.fx.snapshot_proxy(&self.connection, path.as_str()).await.state().await.unwrap()
            } else {
                "gone".to_string()
            };
            if state == "active" {
                assert!(
                    replied.is_err(),
                    "Rollback replied {replied:?} before the kill, yet {path} is active"
                );
                self.manager.rollback(&path.as_ref(), HashMap::new()).await.unwrap();
            }
        } else {
            let reply = self.manager.rollback(&path.as_ref(), HashMap::new()).await.unwrap();
            assert_eq!(reply, "merging");
        }
        wait_merge_end(&self.fx, &self.manager, &path, Duration::from_secs(600)).await;
        let taken = self.sets.remove(index);
        self.device = self.fx.device_of(&self.connection, "root").await;
        // a frozen XFS still has a log to replay (the mount does it), so check after that
        self.mount();
        let after = full_tree(&self.mnt);
        self.umount();
        self.fsck();
        self.mount();
        assert!(
            after == taken.tree,
            "rolled-back volume differs from set {path}'s manifest (seed {}, kill {kill})",
            self.seed
        );
        self.counts.rollbacks += 1;
        let _ = fs::remove_dir_all(self.mnt.join("fio"));
        self.start_workload(ledger_files(&after.1));
        self.check_sets(None).await;
    }
}

impl Drop for Torture {
    fn drop(&mut self) {
        // a failed check leaves the filesystem mounted; the fixture's own cleanup needs it gone
        if let Some(workload) = self.workload.take() {
            workload.stop.store(true, Ordering::SeqCst);
        }
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.mnt).output();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("child process did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn torture(fstype: &str) {
    let iterations: u64 = env_or("SNAPBACK_TORTURE_ITERATIONS", 6);
    let seed: u64 = env_or("SNAPBACK_TORTURE_SEED", 1);
    let fio_mib: u64 = env_or("SNAPBACK_TORTURE_FIO_MIB", 8);
    let started = Instant::now();
    let mut t = Torture::start(fstype, seed, fio_mib).await;
    for i in 0..iterations {
        t.iteration(i).await;
    }
    // the end: every remaining set still rolls back to its manifest
    while !t.sets.is_empty() {
        t.rollback().await;
    }
    let _ = t.stop_workload(false);
    t.umount();
    t.fsck();
    let c = &t.counts;
    eprintln!(
        "FIGURE torture {fstype} seed {seed}: {iterations} iterations in {:.0} s; {} kills \
         ({} in writes, {} in Snapshot, {} in Delete, {} in merges), {} snapshots, {} deletes, \
         {} rollbacks compared with their manifests, {} fio runs ({} MiB verified), \
         {} fsync'd workload steps, {} COWs grown from the pool, {} filled up (invalid); \
         0 bytes lost",
        started.elapsed().as_secs_f64(),
        c.kills,
        c.kills_in_writes,
        c.kills_in_snapshot,
        c.kills_in_delete,
        c.kills_in_merge,
        c.snapshots,
        c.deletes,
        c.rollbacks,
        c.fio_runs,
        c.fio_verified_mib,
        c.ledger_ops,
        c.grown,
        c.filled_up
    );
    assert!(c.rollbacks > 0, "no rollback ran");
}

fn wanted(fstype: &str) -> bool {
    std::env::var("SNAPBACK_TORTURE_FS").map(|v| v.is_empty() || v == fstype).unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_ext4() {
    if wanted("ext4") {
        torture("ext4").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_xfs() {
    if wanted("xfs") {
        torture("xfs").await;
    }
}
