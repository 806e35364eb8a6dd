//! Host integration harness: a private `dbus-daemon` running the project's own bus policy,
//! optionally a real `polkitd` on it, and the real `snapbackd` binary on the userspace backend
//! over files in a temporary directory. Needs root (FUSE, loop devices, mount, polkitd).

#![allow(clippy::unwrap_used, dead_code)]

pub mod introspect;
#[allow(unused_imports)] // each test crate uses a different part
pub use snapback_test_support::{
    full_tree, pattern, require_root, run, system_bus, tree_digest, wait_for,
};

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use snapback_dbus::{ManagerProxy, SnapshotProxy};
use zbus::proxy::CacheProperties;
use zbus::Connection;
use zbus::{OwnedObjectPath, Variant};

pub const MIB: u64 = 1 << 20;

/// The repository root (daemon/ is one level down).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One volume of a fixture.
#[derive(Debug, Clone)]
pub struct VolumeSpec {
    pub name: &'static str,
    pub bytes: u64,
    pub auto: bool,
}

/// What a fixture starts.
#[derive(Debug, Clone)]
pub struct Options {
    pub volumes: Vec<VolumeSpec>,
    pub pool_bytes: u64,
    /// Start polkitd and let snapbackd ask it (else `--no-polkit` with SNAPBACK_TESTING=1).
    pub polkit: bool,
    /// With `polkit`: start no polkitd, so org.freedesktop.PolicyKit1 has no owner and
    /// snapbackd asks a polkit that is not there (as on a machine without polkitd).
    pub polkitd_absent: bool,
    /// Slow merges down to this many bytes per committed step.
    pub merge_step_bytes: Option<u64>,
    /// More environment for snapbackd (NOTIFY_SOCKET, WATCHDOG_USEC, ...).
    pub daemon_env: Vec<(String, String)>,
    /// Appended to snapback.toml (e.g. a `[cleanup]` table).
    pub extra_config: String,
    /// Run snapbackd in its own mount namespace where /run/systemd/journal/socket is a socket
    /// of the fixture (`Fixture::journal`), so its journald output can be read.
    pub fake_journal: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            volumes: vec![VolumeSpec { name: "data", bytes: 64 * MIB, auto: true }],
            pool_bytes: 256 * MIB,
            polkit: false,
            polkitd_absent: false,
            merge_step_bytes: None,
            daemon_env: Vec::new(),
            extra_config: String::new(),
            fake_journal: false,
        }
    }
}

/// A running private bus with snapbackd (and maybe polkitd). Dropping it stops everything.
#[derive(Debug)]
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub options: Options,
    pub config_path: PathBuf,
    pub bus_address: String,
    bus: Child,
    polkitd: Option<Child>,
    daemon: Option<Child>,
    daemon_starts: u32,
    mounts: Vec<PathBuf>,
    /// The journald stand-in socket, with `Options::fake_journal`.
    pub journal: Option<std::os::unix::net::UnixDatagram>,
    /// /run/systemd/journal did not exist: the wrapper's mkdir made it; removed on drop.
    made_journal_dir: bool,
}

impl Fixture {
    pub fn start(options: Options) -> Fixture {
        require_root();
        let dir = tempfile::Builder::new().prefix("snapback-svc-").tempdir_in("/var/tmp").unwrap();
        let root = dir.path();
        let pool = root.join("pool.img");
        fs::File::create(&pool).unwrap().set_len(options.pool_bytes).unwrap();
        let mut config = format!("[pool]\npath = \"{}\"\n", pool.display());
        for volume in &options.volumes {
            let path = root.join(format!("{}.img", volume.name));
            fs::File::create(&path).unwrap().set_len(volume.bytes).unwrap();
            config.push_str(&format!(
                "\n[[volume]]\nname = \"{}\"\ndevice = \"{}\"\nauto = {}\n",
                volume.name,
                path.display(),
                volume.auto
            ));
        }
        config.push_str(&options.extra_config);
        let config_path = root.join("snapback.toml");
        fs::write(&config_path, config).unwrap();
        let init = Command::new(env!("CARGO_BIN_EXE_snapbackd"))
            .args(["init", "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(init.status.success(), "snapbackd init: {}", String::from_utf8_lossy(&init.stderr));

        let socket = root.join("system_bus_socket");
        let bus_address = format!("unix:path={}", socket.display());
        let bus_config = root.join("bus.conf");
        fs::write(&bus_config, bus_config_xml(&bus_address, options.polkit)).unwrap();
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", bus_config.display()))
            .arg(format!("--address={bus_address}"))
            .arg("--nofork")
            .arg("--nopidfile")
            .stdout(Stdio::null())
            .stderr(fs::File::create(root.join("dbus-daemon.log")).unwrap())
            .spawn()
            .unwrap();

        let mut fixture = Fixture {
            dir,
            options,
            config_path,
            bus_address,
            bus,
            polkitd: None,
            daemon: None,
            daemon_starts: 0,
            mounts: Vec::new(),
            journal: None,
            made_journal_dir: false,
        };
        // Waited for only now that the fixture owns the bus: a timeout drops it, which stops
        // the bus instead of leaving a dbus-daemon behind.
        wait_for(Duration::from_secs(30), "the private bus socket", || socket.exists());
        if fixture.options.fake_journal {
            let dir = fixture.path("journal");
            fs::create_dir_all(&dir).unwrap();
            let socket = std::os::unix::net::UnixDatagram::bind(dir.join("socket")).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            fixture.journal = Some(socket);
            fixture.made_journal_dir = !Path::new("/run/systemd/journal").exists();
        }
        if fixture.options.polkit && !fixture.options.polkitd_absent {
            fixture.start_polkitd();
        }
        fixture.start_daemon();
        fixture
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_polkitd(&mut self) {
        // polkitd starts as root and drops to its own user, which the bus policy lets own
        // org.freedesktop.PolicyKit1; it finds the bus through DBUS_SYSTEM_BUS_ADDRESS.
        let child = Command::new("/usr/lib/polkit-1/polkitd")
            .arg("--no-debug")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.path("polkitd.log")).unwrap())
            .spawn()
            .unwrap();
        self.polkitd = Some(child);
        self.wait_for_name("org.freedesktop.PolicyKit1", Duration::from_secs(30));
    }

    /// SIGSTOP polkitd: it keeps its bus name and queues every question unanswered, as a hung
    /// polkitd would. Drop's SIGKILL ends a stopped process too.
    pub fn hang_polkitd(&self) {
        let child = self.polkitd.as_ref().expect("polkitd not running");
        let pid = rustix::process::Pid::from_child(child);
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    }

    /// Start snapbackd and wait until it owns its name.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        self.daemon_starts += 1;
        let log = self.path(&format!("snapbackd-{}.log", self.daemon_starts));
        let mut command = if self.options.fake_journal {
            // unshare execs sh, which execs snapbackd: the pid stays the daemon's. The bind
            // mount exists only in the daemon's private mount namespace.
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mkdir -p /run/systemd/journal && mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
            ])
            .arg(self.path("journal"))
            .arg(env!("CARGO_BIN_EXE_snapbackd"));
            c
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_snapbackd"));
            c.env("SNAPBACK_LOG_STDERR", "1");
            c
        };
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(["--backend", "userspace"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .env("SNAPBACK_FUSE_DIR", self.path("fuse"))
            .env("SNAPBACK_TESTING", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        if !self.options.polkit {
            command.arg("--no-polkit");
        }
        for (key, value) in &self.options.daemon_env {
            command.env(key, value);
        }
        if let Some(bytes) = self.options.merge_step_bytes {
            // Small steps plus a pause after each: the merge lasts seconds even where flushes
            // are nearly free, so tests can act while it runs.
            command.env("SNAPBACK_TEST_MERGE_STEP_BYTES", bytes.to_string());
            command.env("SNAPBACK_TEST_MERGE_STEP_PAUSE_MS", "5");
        }
        let child = command.spawn().unwrap();
        self.daemon = Some(child);
        let started = Instant::now();
        loop {
            if self.name_has_owner(snapback_dbus::BUS_NAME) {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "snapbackd exited ({status}) before owning its name:\n{}",
                    self.daemon_log()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "snapbackd did not own its name in 30 s:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM snapbackd and wait for it to exit (as systemd stops it).
    pub fn stop_daemon(&mut self) -> std::process::ExitStatus {
        let mut child = self.daemon.take().expect("daemon not running");
        terminate(&mut child, Duration::from_secs(30))
    }

    /// SIGKILL snapbackd: a crash. `devices` are its loop devices, detached afterwards (as a
    /// reboot would drop them) so that they do not leak.
    /// Panics when the killed daemon does not exit within 30 s (a thread of it stuck on its
    /// own FUSE volume): its FUSE connection is aborted first, so the test ends instead of
    /// hanging.
    pub fn kill_daemon(&mut self, devices: &[String]) {
        use std::os::unix::fs::MetadataExt;
        let fuse_connection =
            fs::metadata(self.path("fuse")).ok().map(|m| rustix::fs::minor(m.dev()));
        let mut child = self.daemon.take().expect("daemon not running");
        let _ = child.kill();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                if let Some(minor) = fuse_connection {
                    abort_fuse_connection(minor);
                }
                let _ = child.wait();
                panic!(
                    "snapbackd did not exit within 30 s of SIGKILL (stuck on its own FUSE volume; \
                     its connection was aborted):\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The dead daemon's FUSE mount is disconnected; unmount it so the next daemon can
        // mount the directory again.
        let _ = Command::new("umount").arg("-l").arg(self.path("fuse")).output();
        for device in devices {
            let _ = Command::new("losetup").args(["-d", device]).output();
        }
    }

    /// The command line of snapbackd for this fixture, to run extra instances by hand.
    pub fn daemon_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_snapbackd"));
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(["--backend", "userspace"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .env("SNAPBACK_FUSE_DIR", self.path("fuse2"))
            .env("SNAPBACK_LOG_STDERR", "1");
        command
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.path(&format!("snapbackd-{}.log", self.daemon_starts)))
            .unwrap_or_default()
    }

    /// Waits until the current daemon's log contains `needle`: a log line written by the
    /// event pump can come a little after the state it reports is visible on the bus.
    pub async fn wait_for_log(&self, needle: &str) {
        let started = Instant::now();
        while !self.daemon_log().contains(needle) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{needle:?} not logged within 20 s:\n{}",
                self.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn all_daemon_logs(&self) -> String {
        (1..=self.daemon_starts)
            .map(|n| {
                fs::read_to_string(self.path(&format!("snapbackd-{n}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    pub fn name_has_owner(&self, name: &str) -> bool {
        let out = self.busctl(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            name,
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "b true"
    }

    fn wait_for_name(&self, name: &str, timeout: Duration) {
        wait_for(timeout, name, || self.name_has_owner(name));
    }

    /// `busctl --address=<private bus> ARGS` as root.
    pub fn busctl(&self, args: &[&str]) -> Output {
        Command::new("busctl")
            .arg(format!("--address={}", self.bus_address))
            .args(args)
            .output()
            .unwrap()
    }

    /// `busctl` as the unprivileged user `nobody` (uid/gid 65534, no groups).
    pub fn busctl_as_nobody(&self, args: &[&str]) -> Output {
        self.busctl_as_nobody_command(args).output().unwrap()
    }

    /// The command of [`Fixture::busctl_as_nobody`], to start now and collect later.
    pub fn busctl_as_nobody_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
            .arg(format!("--address={}", self.bus_address))
            .args(args);
        command
    }

    /// `dbus-send --print-reply` as `nobody`: prints the error *name* of a failed call.
    pub fn dbus_send_as_nobody(&self, args: &[&str]) -> Output {
        self.dbus_send_as_nobody_command(args).output().unwrap()
    }

    /// The command of [`Fixture::dbus_send_as_nobody`], to start now and collect later.
    pub fn dbus_send_as_nobody_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "dbus-send"])
            .arg(format!("--bus={}", self.bus_address))
            .arg("--print-reply")
            .args(args);
        command
    }

    pub async fn connect(&self) -> Connection {
        zbus::connection::Builder::address(self.bus_address.as_str()).build().await.unwrap()
    }

    pub async fn manager(&self, connection: &Connection) -> ManagerProxy<'static> {
        ManagerProxy::builder(connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .unwrap()
    }

    pub async fn snapshot_proxy(
        &self,
        connection: &Connection,
        path: &str,
    ) -> SnapshotProxy<'static> {
        SnapshotProxy::builder(connection)
            .path(path.to_string())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .unwrap()
    }

    /// The loop device of `volume`, from Status.
    pub async fn device_of(&self, connection: &Connection, volume: &str) -> String {
        let status = self.manager(connection).await.status().await.unwrap();
        let device = status.volumes[volume].device.clone();
        assert!(device.starts_with("/dev/loop"), "device of {volume}: {device:?}");
        device
    }

    /// mkfs.ext4 on `device`.
    pub fn mkfs(&self, device: &str) {
        run("mkfs.ext4", &["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device]);
    }

    /// Mount `device` (ext4) at a directory of the fixture named `name`; returns the mountpoint.
    pub fn mount(&mut self, device: &str, name: &str) -> PathBuf {
        self.mount_fs(device, name, "ext4")
    }

    /// Mount `device` with filesystem type `fstype` at the fixture's directory `name`.
    pub fn mount_fs(&mut self, device: &str, name: &str, fstype: &str) -> PathBuf {
        let target = self.path(name);
        fs::create_dir_all(&target).unwrap();
        run("mount", &["-t", fstype, device, target.to_str().unwrap()]);
        self.mounts.push(target.clone());
        target
    }

    pub fn umount(&mut self, target: &Path) {
        run("umount", &[target.to_str().unwrap()]);
        self.mounts.retain(|m| m != target);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for target in std::mem::take(&mut self.mounts) {
            let _ = Command::new("umount").arg("-l").arg(&target).output();
        }
        if let Some(mut daemon) = self.daemon.take() {
            terminate(&mut daemon, Duration::from_secs(30));
        }
        // A daemon that had to be SIGKILLed did not detach its loop devices.
        detach_loop_devices_under(&self.path("fuse"));
        let _ = Command::new("umount").arg("-l").arg(self.path("fuse")).output();
        if let Some(mut polkitd) = self.polkitd.take() {
            let _ = polkitd.kill();
            let _ = polkitd.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        if self.made_journal_dir {
            // Only succeeds while empty: a real journald's directory is never touched.
            let _ = fs::remove_dir("/run/systemd/journal");
        }
    }
}

/// Aborts FUSE connection `minor` (fusectl, mounted here when it is not yet).
fn abort_fuse_connection(minor: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    if fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true) {
        let _ = Command::new("mount").args(["-t", "fusectl", "none"]).arg(dir).output();
    }
    let _ = fs::write(dir.join(minor.to_string()).join("abort"), "1");
}

/// SIGTERM, then SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > grace {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches every loop device whose backing file lies under `dir` (only this fixture's: tests
/// run in parallel, and a device number is reused as soon as it is free).
fn detach_loop_devices_under(dir: &Path) {
    snapbackd::backend::userspace::loop_device::detach_stale(dir, &[], &(0..0));
}

/// A system-bus configuration like Debian's (deny by default), plus the project's own
/// snapback policy file and, for polkit tests, polkit's.
fn bus_config_xml(address: &str, polkit: bool) -> String {
    let mut policies = vec![repo_root().join("systemd/snapback-dbus.conf")];
    if polkit {
        policies.push(PathBuf::from("/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"));
    }
    system_bus::system_bus_config(address, &policies)
}

/// The options of a Snapshot call asking for a COW of `bytes`.
pub fn cow_size(bytes: u64) -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([("cow-size", Variant::new(bytes))])
}

/// Wait until `set` is no longer merging or pending (the backend removes a merged set).
pub async fn wait_merge_end(
    fx: &Fixture,
    manager: &ManagerProxy<'_>,
    set: &OwnedObjectPath,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        let status = manager.status().await.unwrap();
        let listed = status.volumes.values().any(|v| v.snapshots.contains(set));
        if !status.merging.contains(set) && !status.pending.contains(set) && !listed {
            return;
        }
        if listed && !status.merging.contains(set) && !status.pending.contains(set) {
            let proxy =
                fx.snapshot_proxy(&manager.inner().connection().clone(), set.as_str()).await;
            let state = proxy.state().await.unwrap_or_default();
            assert_ne!(state, "merge-failed", "merge failed:\n{}", fx.all_daemon_logs());
        }
        assert!(
            started.elapsed() < timeout,
            "merge of {set} not finished after {timeout:?}:\n{}",
            fx.all_daemon_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
