//! The system integration files in `systemd/`: units verified by `systemd-analyze verify`,
//! policy files by `xmllint`, the bus policy by a real `dbus-daemon` (who may own the name).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{repo, require, run, run_ok};

fn systemd_file(name: &str) -> PathBuf {
    repo().join("systemd").join(name)
}

/// `Key=value` pairs of one section of a unit-style file (repeated keys keep the last).
fn section(path: &Path, name: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut current = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            current = line.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if current == name {
            if let Some((k, v)) = line.split_once('=') {
                out.entry(k.to_owned()).or_default().push(v.to_owned());
            }
        }
    }
    out
}

fn one(map: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    let values = map.get(key).unwrap_or_else(|| panic!("{key}= missing"));
    assert_eq!(values.len(), 1, "{key}= given more than once");
    values[0].clone()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in ["snapbackd.service", "snapback-activate.service"] {
        let text = std::fs::read_to_string(systemd_file(name)).unwrap();
        // verify checks that ExecStart's binary exists: point it at one that does. The real
        // path is asserted by `units_use_the_installed_daemon_path`.
        let text = text.replace("/usr/libexec/snapbackd", "/bin/true");
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = run(Command::new("systemd-analyze").arg("verify").arg("--man=no").args(&units));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Unknown keys and bad values are only warnings with exit status 0: fail on any output.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify complained:\n{stderr}");
}

#[test]
fn systemd_analyze_verify_catches_a_bad_unit() {
    // Guards the test above: the same invocation does report a mistake.
    require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.service");
    std::fs::write(&path, "[Service]\nType=notify\nProtectSystem=very\nExecStart=/bin/true\n")
        .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg("--man=no").arg(&path));
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
}

#[test]
fn units_use_the_installed_daemon_path() {
    let service = section(&systemd_file("snapbackd.service"), "Service");
    assert_eq!(one(&service, "ExecStart"), "/usr/libexec/snapbackd");
    assert_eq!(one(&service, "Type"), "notify");
    assert_eq!(one(&service, "BusName"), "org.snapback.Snapback1");
    assert_eq!(one(&service, "ProtectSystem"), "strict");
    assert_eq!(one(&service, "CapabilityBoundingSet"), "CAP_SYS_ADMIN CAP_MKNOD");
    assert_eq!(one(&service, "NoNewPrivileges"), "yes");
    let devices = &service["DeviceAllow"];
    for dev in ["/dev/mapper/control rw", "/dev/fuse rw", "/dev/loop-control rw", "block-* rwm"] {
        assert!(devices.iter().any(|d| d == dev), "DeviceAllow={dev} missing");
    }
    let unit = section(&systemd_file("snapbackd.service"), "Unit");
    assert!(one(&unit, "Documentation").contains("man:snapbackd(8)"));

    let activate = section(&systemd_file("snapback-activate.service"), "Service");
    assert_eq!(one(&activate, "ExecStart"), "/usr/libexec/snapbackd activate");
    assert_eq!(one(&activate, "Type"), "oneshot");
    let unit = section(&systemd_file("snapback-activate.service"), "Unit");
    assert_eq!(one(&unit, "DefaultDependencies"), "no");
    assert!(one(&unit, "Before").contains("local-fs-pre.target"));
}

#[test]
fn daemon_unit_may_write_the_default_boot_partitions() {
    // ProtectSystem=strict makes every path read-only that is not listed here, and the boot
    // side writes rollback entries, kernel copies and restores to /boot and the ESP: the
    // places the daemon uses when [boot] names none (BootConfig::roots in daemon/src/boot).
    let service = section(&systemd_file("snapbackd.service"), "Service");
    assert_eq!(one(&service, "ProtectSystem"), "strict");
    let writable: Vec<String> = service
        .get("ReadWritePaths")
        .into_iter()
        .flatten()
        .flat_map(|line| line.split_whitespace())
        // "-": a path that does not exist is skipped instead of failing the unit's start
        .map(|path| path.strip_prefix('-').unwrap_or(path).to_owned())
        .collect();
    for place in ["/boot", "/boot/efi", "/efi"] {
        let covered = writable
            .iter()
            .any(|path| Path::new(place).starts_with(path) && path.starts_with('/') && path != "/");
        assert!(
            covered,
            "{place} is read-only for snapbackd.service (ReadWritePaths={writable:?})"
        );
    }
    // ... and optional, or a machine without /efi would fail to start the daemon
    for line in &service["ReadWritePaths"] {
        for path in line.split_whitespace() {
            assert!(path.starts_with('-'), "ReadWritePaths={path} must be optional ('-{path}')");
        }
    }
}

#[test]
fn activate_unit_is_confined_as_far_as_early_boot_allows() {
    let service = section(&systemd_file("snapback-activate.service"), "Service");
    for (key, value) in [
        ("CapabilityBoundingSet", "CAP_SYS_ADMIN CAP_MKNOD"),
        ("AmbientCapabilities", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateMounts", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX"),
        ("PrivateNetwork", "yes"),
        ("IPAddressDeny", "any"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service mknod mknodat"),
        ("SystemCallErrorNumber", "EPERM"),
        ("UMask", "0077"),
    ] {
        assert_eq!(one(&service, key), value, "{key}=");
    }
    // Settings that break a unit ordered before local-fs-pre.target that waits for disks (the
    // unit's comment says why): each would be a boot that stops before the volumes exist.
    for key in [
        "PrivateTmp",     // RequiresMountsFor=/tmp /var/tmp: an ordering cycle
        "StateDirectory", // RequiresMountsFor=/var/lib/…
        "RuntimeDirectory",
        "ReadWritePaths", // paths not mounted yet
        "PrivateDevices", // hides the disks
        "DevicePolicy",   // majors resolved at start: later drivers refused
        "DeviceAllow",
        "ProtectClock", // implies DeviceAllow=char-rtc, i.e. a device policy
        "PrivateIPC",   // udev's dm semaphores
    ] {
        assert!(!service.contains_key(key), "{key}= must not be set on snapback-activate.service");
    }
}

/// `systemd-analyze verify` of the activation unit (with `extra` added to its [Service]) next
/// to mount units for /tmp, /var, /var/tmp, /var/lib and /home, as on a system where those are
/// file systems of their own, mounted after local-fs-pre.target: what it reports.
fn verify_with_separate_mounts(extra: &str) -> String {
    require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(systemd_file("snapback-activate.service")).unwrap();
    let text = text
        .replace("/usr/libexec/snapbackd", "/bin/true")
        .replace("[Install]", &format!("{extra}\n[Install]"));
    let mut units = vec![dir.path().join("snapback-activate.service")];
    std::fs::write(&units[0], text).unwrap();
    for (unit, place) in [
        ("tmp.mount", "/tmp"),
        ("var.mount", "/var"),
        ("var-tmp.mount", "/var/tmp"),
        ("var-lib.mount", "/var/lib"),
        ("home.mount", "/home"),
    ] {
        let path = dir.path().join(unit);
        std::fs::write(
            &path,
            format!("[Mount]\nWhat=/dev/disk/by-label/x\nWhere={place}\nType=ext4\n"),
        )
        .unwrap();
        units.push(path);
    }
    let out = run(Command::new("systemd-analyze").arg("verify").arg("--man=no").args(&units));
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn activate_unit_runs_before_separate_var_and_tmp_without_a_cycle() {
    let report = verify_with_separate_mounts("");
    assert!(report.is_empty(), "systemd-analyze verify complained:\n{report}");
    // The same check reports the cycle the settings the unit leaves out would make.
    for setting in ["PrivateTmp=yes", "StateDirectory=snapback"] {
        let report = verify_with_separate_mounts(setting);
        assert!(report.contains("Found ordering cycle"), "{setting}: no cycle reported:\n{report}");
    }
}

/// `systemd-analyze security`'s exposure score (0 = confined … 10 = not at all) of a unit.
fn exposure(name: &str) -> f64 {
    require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(systemd_file(name)).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text.replace("/usr/libexec/snapbackd", "/bin/true")).unwrap();
    let out = run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let score = line.rsplit(": ").next().unwrap().split_whitespace().next().unwrap();
    score.parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn both_units_score_as_confined() {
    // systemd 252: 9.5 ("UNSAFE") for the activation unit before it was confined; 2.0 and 2.5
    // now (the daemon keeps AF_NETLINK, FUSE and mounts).
    let activate = exposure("snapback-activate.service");
    let daemon = exposure("snapbackd.service");
    assert!(activate <= 2.0, "snapback-activate.service exposure {activate}");
    assert!(daemon <= 3.0, "snapbackd.service exposure {daemon}");
}

#[test]
fn activation_file_starts_the_unit_that_owns_the_name() {
    let activation = section(&systemd_file("org.snapback.Snapback1.service"), "D-BUS Service");
    assert_eq!(one(&activation, "Name"), snapback_dbus_name());
    assert_eq!(one(&activation, "User"), "root");
    let unit = one(&activation, "SystemdService");
    assert!(systemd_file(&unit).is_file(), "SystemdService={unit} is not shipped");
    let service = section(&systemd_file(&unit), "Service");
    assert_eq!(one(&service, "BusName"), snapback_dbus_name());
}

fn snapback_dbus_name() -> String {
    "org.snapback.Snapback1".to_owned()
}

#[test]
fn policy_files_are_well_formed_xml() {
    require("xmllint", "libxml2-utils");
    for name in ["snapback-dbus.conf", "org.snapback.policy"] {
        let path = systemd_file(name);
        run_ok(Command::new("xmllint").arg("--noout").arg(&path));
    }
    // And xmllint does reject a broken file (the check can fail).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, "<busconfig><policy></busconfig>").unwrap();
    assert!(!run(Command::new("xmllint").arg("--noout").arg(&bad)).status.success());
}

#[test]
fn polkit_actions_have_the_documented_defaults() {
    let text = std::fs::read_to_string(systemd_file("org.snapback.policy")).unwrap();
    for (action, active) in [
        ("org.snapback.snapshot", "auth_admin_keep"),
        ("org.snapback.rollback", "auth_admin"),
        ("org.snapback.delete", "auth_admin_keep"),
        ("org.snapback.open", "auth_admin"),
    ] {
        let start = text
            .find(&format!("id=\"{action}\""))
            .unwrap_or_else(|| panic!("action {action} missing"));
        let end = text[start..].find("</action>").map(|e| start + e).unwrap();
        let body = &text[start..end];
        assert!(
            body.contains(&format!("<allow_active>{active}</allow_active>")),
            "{action}: allow_active is not {active}:\n{body}"
        );
    }
}

/// A private bus with the system bus's default policy plus snapback's policy file.
struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir = tempfile::tempdir().unwrap();
        // Non-root test users must reach the socket.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            common::system_bus::system_bus_config(
                &format!("unix:path={}", socket.display()),
                &[systemd_file("snapback-dbus.conf")],
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            let out = child.wait_with_output().unwrap();
            panic!("dbus-daemon rejected the policy:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        PrivateBus { child, address: line.trim().to_owned(), _dir: dir }
    }

    /// `RequestName(name)` as `user` (None = root): the reply, or the error text.
    fn request_name(&self, user: Option<&str>, name: &str) -> Result<String, String> {
        let mut cmd = match user {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={user}"),
                    "--clear-groups",
                    "busctl",
                ]);
                c
            }
            None => Command::new("busctl"),
        };
        cmd.arg(format!("--address={}", self.address)).args([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            name,
            "0",
        ]);
        let out = run(&mut cmd);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dbus_daemon_accepts_the_bus_policy_and_only_root_owns_the_name() {
    require("dbus-daemon", "dbus");
    require("busctl", "systemd");
    require("setpriv", "util-linux");
    let bus = PrivateBus::start();
    // 1 = DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
    assert_eq!(bus.request_name(None, "org.snapback.Snapback1"), Ok("u 1".to_owned()));
    // 65534: nobody / nogroup.
    let denied = bus.request_name(Some("65534"), "org.snapback.Snapback1");
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("denied") || e.contains("Access")),
        "nobody could own the name: {denied:?}"
    );
    // The bus is still up (the policy did not make it exit).
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(bus.request_name(None, "org.snapback.Snapback1"), Ok("u 1".to_owned()));
}

#[test]
fn with_the_project_policy_everyone_reads_and_polkit_decides() {
    use common::daemon::{Daemon, Mode};
    require("setpriv", "util-linux");
    let d = Daemon::start_with(Mode::ProjectPolicy);
    // uid 65534 (nobody) as the client.
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::own_binary("snapbackctl"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &d.address);
        run(&mut cmd)
    };
    let out = as_nobody(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "No snapshot sets.\n");
    let out = as_nobody(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Mutations reach the daemon (the bus lets them through) and polkit refuses: there is no
    // polkitd on this bus, so nobody is authorized.
    let out = as_nobody(&["snapshot", "-d", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("snapbackctl: not authorized: run as root or ask your administrator"),
        "{err}"
    );
    let out = as_nobody(&["delete", "1"]);
    assert_eq!(out.status.code(), Some(1));
}
