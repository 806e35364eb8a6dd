//! snapbackd as a system service: the sd-notify protocol (READY=1 once the name is owned,
//! STATUS=, watchdog pings, STOPPING=1), a second instance refused while the name is owned,
//! and the command line's refusals. Needs root.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Fixture, Options};

/// How long to wait for a datagram the daemon sends by itself: a liveness bound that a loaded
/// machine must not trip, not a latency check.
const LIVENESS: Duration = Duration::from_secs(20);

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
    // Fixture::start returned once the name was owned; READY=1 is sent just after that.
    let seen = read_until(&socket, "READY=1", LIVENESS);
    let ready = seen.last().unwrap();
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=") && l.contains("snapshot set")),
        "READY comes with a STATUS line: {ready:?}"
    );
    // WATCHDOG_USEC=400 ms: pings every 200 ms.
    read_until(&socket, "WATCHDOG=1", LIVENESS);
    read_until(&socket, "WATCHDOG=1", LIVENESS);
    assert!(fx.stop_daemon().success(), "{}", fx.daemon_log());
    read_until(&socket, "STOPPING=1", LIVENESS);
}

#[test]
fn a_second_daemon_is_refused_while_the_name_is_owned() {
    let fx = Fixture::start(Options::default());
    let out = fx.daemon_command().env("SNAPBACK_TESTING", "1").arg("--no-polkit").output().unwrap();
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
    let out =
        fx.daemon_command().env_remove("SNAPBACK_TESTING").arg("--no-polkit").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SNAPBACK_TESTING=1"));

    // A configuration error names the file and the line.
    let bad = fx.path("bad.toml");
    std::fs::write(
        &bad,
        "[pool]\npath = \"/x\"\n\n[[volume]]\nname = \"a\"\ndevice = \"/d\"\nsize = 1\n",
    )
    .unwrap();
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

    // init formats a sparse pool file but says, on the terminal, how to write it out; a
    // written one gets no such warning.
    let volume = fx.path("init-volume.img");
    std::fs::File::create(&volume).unwrap().set_len(8 << 20).unwrap();
    for (name, sparse) in [("init-sparse.img", true), ("init-written.img", false)] {
        let pool = fx.path(name);
        if sparse {
            std::fs::File::create(&pool).unwrap().set_len(64 << 20).unwrap();
        } else {
            std::fs::write(&pool, vec![0u8; 64 << 20]).unwrap();
        }
        let config = fx.path(&format!("{name}.toml"));
        let text =
            format!("[pool]\npath = {pool:?}\n\n[[volume]]\nname = \"v\"\ndevice = {volume:?}\n");
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapbackd"))
            .args(["init", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        let warned = stderr.contains("snapbackd: warning: the pool file")
            && stderr.contains("dd if=/dev/zero");
        assert_eq!(warned, sparse, "{name}: {stderr}");
    }
}

/// Fields of one journald native-protocol datagram: `KEY=value\n`, or `KEY\n` followed by a
/// little-endian u64 length, the value and `\n`.
fn journal_fields(data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'=' || *b == b'\n') else { break };
        let key = String::from_utf8_lossy(&rest[..end]).into_owned();
        if rest[end] == b'=' {
            let line_end =
                rest[end..].iter().position(|b| *b == b'\n').map_or(rest.len(), |p| end + p);
            fields.push((key, String::from_utf8_lossy(&rest[end + 1..line_end]).into_owned()));
            rest = &rest[(line_end + 1).min(rest.len())..];
        } else {
            let len_bytes: [u8; 8] = rest[end + 1..end + 9].try_into().unwrap();
            let len = u64::from_le_bytes(len_bytes) as usize;
            let value = &rest[end + 9..end + 9 + len];
            fields.push((key, String::from_utf8_lossy(value).into_owned()));
            rest = &rest[(end + 10 + len).min(rest.len())..];
        }
    }
    fields
}

/// Reads journal datagrams until one has every `(key, value)` of `want`; returns its fields.
fn journal_entry_with(
    socket: &UnixDatagram,
    want: &[(&str, &str)],
    timeout: Duration,
) -> Vec<(String, String)> {
    let started = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    while started.elapsed() < timeout {
        if let Ok(n) = socket.recv(&mut buf) {
            let fields = journal_fields(&buf[..n]);
            if want.iter().all(|(k, v)| fields.iter().any(|(fk, fv)| fk == k && fv == v)) {
                return fields;
            }
            seen.push(fields);
        }
    }
    panic!("no journal entry with {want:?} within {timeout:?}; got {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_journald_with_message_ids_and_fields() {
    let fx = Fixture::start(Options { fake_journal: true, ..Options::default() });
    let journal = fx.journal.as_ref().unwrap();
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let set =
        manager.snapshot(&["data"], "journal", std::collections::HashMap::new()).await.unwrap();
    let id = snapback_dbus::snapshot_id(set.as_str()).unwrap();
    let id = id.to_string();
    let entry = journal_entry_with(
        journal,
        &[
            ("MESSAGE_ID", "f2ac8f71a2f6497e9b58ec2833fad94f"),
            ("SNAPSHOT_ID", &id),
            ("VOLUMES", "data"),
        ],
        LIVENESS,
    );
    let field = |key: &str| entry.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(field("SYSLOG_IDENTIFIER"), Some("snapbackd"));
    assert_eq!(field("PRIORITY"), Some("5"), "tracing-journald maps INFO to notice");
    assert_eq!(
        field("MESSAGE"),
        Some(format!("snapshot set {id} created over data (journal)").as_str())
    );

    // The rollback of an idle volume: started now, then finished, each with its own MESSAGE_ID.
    // The call runs beside the journal reads: the test's socket queues only a few datagrams,
    // and a daemon blocked on a full journal socket would never answer.
    let rollback = tokio::spawn({
        let (manager, set) = (manager.clone(), set.clone());
        async move { manager.rollback(&set.as_ref(), std::collections::HashMap::new()).await }
    });
    let started = journal_entry_with(
        journal,
        &[
            ("MESSAGE_ID", "551aff89e1214461bbf071d87a6807d6"),
            ("SNAPSHOT_ID", &id),
            ("VOLUMES", "data"),
        ],
        LIVENESS,
    );
    assert!(started
        .iter()
        .any(|(k, v)| k == "MESSAGE"
            && v == &format!("rollback of snapshot set {id} started: merging")));
    journal_entry_with(
        journal,
        &[("MESSAGE_ID", "434d125d881e4dcd99ae6d046f431929"), ("SNAPSHOT_ID", &id), ("OK", "true")],
        LIVENESS,
    );
    assert_eq!(rollback.await.unwrap().unwrap(), "merging");
}
