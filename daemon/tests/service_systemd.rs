//! snapbackd as a system service: the sd-notify protocol (READY=1 once the name is owned,
//! STATUS=, watchdog pings, STOPPING=1), a second instance refused while the name is owned,
//! and the command line's refusals. Needs root.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Fixture, Options};

/// Reads notify datagrams until one contains `want` or `timeout` passes; returns all read.
fn read_until(socket: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while started.elapsed() < timeout {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = text.lines().any(|l| l == want);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want:?} from snapbackd within {timeout:?}; got {seen:?}");
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut fx = Fixture::start(Options {
        daemon_env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Options::default()
    });
    // Fixture::start returned once the name was owned: READY=1 must already be queued.
    let seen = read_until(&socket, "READY=1", Duration::from_secs(2));
    let ready = seen.last().unwrap();
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=") && l.contains("snapshot set")),
        "READY comes with a STATUS line: {ready:?}"
    );
    // WATCHDOG_USEC=400 ms: pings every 200 ms.
    read_until(&socket, "WATCHDOG=1", Duration::from_secs(2));
    read_until(&socket, "WATCHDOG=1", Duration::from_secs(2));
    assert!(fx.stop_daemon().success(), "{}", fx.daemon_log());
    read_until(&socket, "STOPPING=1", Duration::from_secs(2));
}

#[test]
fn a_second_daemon_is_refused_while_the_name_is_owned() {
    let fx = Fixture::start(Options::default());
    let out = fx
        .daemon_command()
        .env("SNAPBACK_TESTING", "1")
        .arg("--no-polkit")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already owned"), "{stderr}");
    // It stopped before touching the volumes: no second FUSE mount, the first daemon serves on.
    assert!(!fx.path("fuse2").join("data").exists());
    assert!(fx.name_has_owner(snapback_dbus::BUS_NAME));
}

#[test]
fn command_line_refusals_say_why() {
    let fx = Fixture::start(Options::default());
    // --no-polkit without SNAPBACK_TESTING=1.
    let out = fx.daemon_command().env_remove("SNAPBACK_TESTING").arg("--no-polkit").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SNAPBACK_TESTING=1"));

    // A configuration error names the file and the line.
    let bad = fx.path("bad.toml");
    std::fs::write(&bad, "[pool]\npath = \"/x\"\n\n[[volume]]\nname = \"a\"\ndevice = \"/d\"\nsize = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapbackd"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("line 7"), "{stderr}");

    // init refuses a pool that holds data unless --force.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapbackd"))
        .args(["init", "--config"])
        .arg(&fx.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "re-init of a formatted pool without --force");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}
