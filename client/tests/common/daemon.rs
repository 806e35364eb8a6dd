//! The real snapbackd on a private system bus: a dbus-daemon of our own, a pool and one
//! volume file per test, the userspace backend (FUSE + loop device), polkit disabled
//! (`--no-polkit` with SNAPBACK_TESTING=1: these tests are about the client, not polkit).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{own_binary, require, run, run_ok, snapbackd_binary};

pub const VOLUME_BYTES: u64 = 32 << 20;

/// A bus plus a daemon; both are stopped (SIGTERM, so FUSE and loop devices are released) on
/// drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub address: String,
    pub volume: PathBuf,
    bus: Child,
    daemon: Option<Child>,
}

/// A bus config that lets everyone do everything: the project's own policy is tested by
/// `systemd_units.rs`; here the client is under test.
fn open_bus_config(socket: &Path) -> String {
    format!(
        r#"<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// The system bus's default policy (as Debian's system.conf) plus the project's
/// `systemd/snapback-dbus.conf`: what a real system bus enforces.
fn project_bus_config(socket: &Path) -> String {
    super::system_bus::system_bus_config(
        &format!("unix:path={}", socket.display()),
        &[super::repo().join("systemd/snapback-dbus.conf")],
    )
}

/// How the test daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Open bus, polkit disabled: the client under test.
    Open,
    /// The project's bus policy and polkit asked (no polkitd on the private bus: every
    /// mutation is refused), for the policy tests.
    ProjectPolicy,
}

/// Starts `dbus-daemon` on `config`; returns it and its address.
fn start_bus(config: &Path) -> (Child, String) {
    let mut bus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--print-address"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(bus.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(!line.trim().is_empty(), "dbus-daemon did not start");
    (bus, line.trim().to_owned())
}

impl Daemon {
    /// A bus with no snapbackd on it (for "daemon not running" errors).
    pub fn bus_only() -> Daemon {
        Daemon::bus(Mode::Open)
    }

    fn bus(mode: Mode) -> Daemon {
        require("dbus-daemon", "dbus");
        let dir =
            tempfile::Builder::new().prefix("snapbackctl-e2e-").tempdir_in("/var/tmp").unwrap();
        // Other users must reach the socket (ProjectPolicy tests run clients as uid 65534).
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let config = dir.path().join("bus.conf");
        let socket = dir.path().join("bus");
        let text = match mode {
            Mode::Open => open_bus_config(&socket),
            Mode::ProjectPolicy => project_bus_config(&socket),
        };
        std::fs::write(&config, text).unwrap();
        let (bus, address) = start_bus(&config);
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let volume = dir.path().join("root.img");
        Daemon { dir, address, volume, bus, daemon: None }
    }

    /// Bus, formatted pool, volume `root` (32 MiB of random data, auto), running daemon.
    pub fn start() -> Daemon {
        Daemon::start_with(Mode::Open)
    }

    pub fn start_with(mode: Mode) -> Daemon {
        Daemon::start_volume(mode, None)
    }

    /// Like [`Daemon::start`] with a sparse (all zero) volume `root` of `bytes`, for a file
    /// system of that size.
    pub fn start_blank(mode: Mode, bytes: u64) -> Daemon {
        Daemon::start_volume(mode, Some(bytes))
    }

    fn start_volume(mode: Mode, blank_bytes: Option<u64>) -> Daemon {
        let mut d = Daemon::bus(mode);
        let dir = d.dir.path().to_path_buf();
        let pool = dir.join("pool.img");
        std::fs::File::create(&pool).unwrap().set_len(128 << 20).unwrap();
        match blank_bytes {
            Some(bytes) => std::fs::File::create(&d.volume).unwrap().set_len(bytes).unwrap(),
            None => drop(run_ok(Command::new("dd").args([
                "if=/dev/urandom",
                &format!("of={}", d.volume.display()),
                "bs=1M",
                &format!("count={}", VOLUME_BYTES >> 20),
                "status=none",
            ]))),
        }
        let config = dir.join("snapback.toml");
        std::fs::write(
            &config,
            format!(
                "[pool]\npath = \"{}\"\n\n[[volume]]\nname = \"root\"\ndevice = \"{}\"\nauto = true\ncow_size = \"8M\"\n",
                pool.display(),
                d.volume.display()
            ),
        )
        .unwrap();
        run_ok(Command::new(snapbackd_binary()).arg("--config").arg(&config).arg("init"));
        let fuse = dir.join("fuse");
        std::fs::create_dir_all(&fuse).unwrap();
        let log = std::fs::File::create(dir.join("snapbackd.log")).unwrap();
        let mut daemon = Command::new(snapbackd_binary());
        daemon.arg("--config").arg(&config).args(["--backend", "userspace"]);
        if mode == Mode::Open {
            daemon.arg("--no-polkit").env("SNAPBACK_TESTING", "1");
        }
        let daemon = daemon
            .env("SNAPBACK_FUSE_DIR", &fuse)
            .env("SNAPBACK_LOG_STDERR", "1")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        d.daemon = Some(daemon);
        d.wait_ready();
        d
    }

    /// Until `snapbackctl status` answers (the daemon owns its name), at most 60 s (a
    /// liveness bound on a loaded machine).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.ctl(&["status"]).status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(Child::try_wait) {
                panic!("snapbackd exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "snapbackd not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("snapbackd.log")).unwrap_or_default()
    }

    /// A `snapbackctl` command on this bus.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(own_binary("snapbackctl"));
        cmd.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        cmd
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Runs `snapbackctl ARGS`, asserts the exit status, returns stdout.
    pub fn ctl_status(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.ctl(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "snapbackctl {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (stdout, stderr)
    }

    /// Runs `snapbackctl --json ARGS`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (stdout, _) = self.ctl_status(&all, 0);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
    }

    /// The loop device serving volume `root`.
    pub fn device(&self) -> String {
        let status = self.json(&["status"]);
        status["volumes"][0]["device"].as_str().unwrap().to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            // SIGTERM: the daemon detaches its loop devices and unmounts FUSE.
            let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
            // 30 s: a loaded machine may need long for a clean shutdown (it stops a merge).
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = daemon.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = daemon.try_wait() {
                let _ = daemon.kill();
                let _ = daemon.wait();
                // Killed: its loop device was not detached (only ours: tests run in parallel).
                let fuse = self.dir.path().join("fuse");
                snapbackd::backend::userspace::loop_device::detach_stale(&fuse, &[], &(0..0));
                let _ = Command::new("umount").arg("-l").arg(&fuse).status();
            }
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}
