//! snapbackctl end to end against the real snapbackd on a private bus (userspace backend over
//! files, FUSE and a loop device; needs root). Every D-Bus command, its `--json` parsed and
//! checked, human output against fixtures (`tests/fixtures/*.txt`, with paths, devices and
//! times normalized), and exit statuses.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, VOLUME_BYTES};
use common::run_ok;
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces what differs between runs: the temp dir, the loop device, creation times.
fn normalize(d: &Daemon, text: &str, created: &[&str]) -> String {
    let mut out = text.replace(&d.dir.path().display().to_string(), "<DIR>");
    out = out.replace(&d.device(), "/dev/loopN");
    for c in created {
        out = out.replace(c, "<CREATED>");
    }
    out
}

fn sha256(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// Overwrites the first `mib` MiB of the volume through its loop device, durably.
fn scribble(d: &Daemon, mib: u32) {
    run_ok(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", d.device()),
        "bs=1M",
        &format!("count={mib}"),
        "oflag=direct",
        "conv=fsync",
        "status=none",
    ]));
}

/// The lines a child prints, as they come (a reader thread per child).
fn lines_of(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn status_snapshot_list_show_in_both_formats() {
    let d = Daemon::start();

    // status
    let status = d.json(&["status"]);
    assert_eq!(status["schema"], "snapbackctl/1");
    assert_eq!(status["backend"], "userspace");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["volumes"].as_array().unwrap().len(), 1);
    let root = &status["volumes"][0];
    assert_eq!(root["name"], "root");
    assert_eq!(root["state"], "active");
    assert_eq!(root["size_bytes"], VOLUME_BYTES);
    assert_eq!(root["auto"], true);
    assert!(root["device"].as_str().unwrap().starts_with("/dev/loop"));
    assert_eq!(status["pool"]["used_bytes"], 0);
    assert_eq!(status["pending_merges"], json!([]));
    let (human, _) = d.ctl_status(&["status"], 0);
    assert_eq!(normalize(&d, &human, &[]), fixture("status-empty.txt"));

    // empty list
    assert_eq!(d.ctl_status(&["list"], 0).0, "No snapshot sets.\n");
    assert_eq!(d.json(&["list"]), json!({"schema": "snapbackctl/1", "snapshots": []}));

    // snapshot: human and JSON
    let (out, _) = d.ctl_status(
        &[
            "snapshot",
            "-d",
            "before dnf upgrade",
            "--important",
            "--userdata",
            "tx=42",
            "--userdata",
            "by=test",
            "root",
        ],
        0,
    );
    assert_eq!(out, "created snapshot set 1 of root (8.0 MiB of COW space)\n");
    let second = d.json(&["snapshot", "--cow-size", "12M"]);
    let s2 = &second["snapshot"];
    assert_eq!(s2["id"], 2);
    assert_eq!(s2["size_bytes"], 12 << 20, "--cow-size reached the daemon");
    assert_eq!(s2["volumes"], json!(["root"]), "an empty volume list takes the auto volumes");
    assert_eq!(s2["description"], "");
    assert_eq!(s2["important"], false);

    // list
    let list = d.json(&["list"]);
    let sets = list["snapshots"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    let s1 = &sets[0];
    assert_eq!(s1["id"], 1);
    assert_eq!(s1["path"], "/org/snapback/Snapback1/snapshot/1");
    assert_eq!(s1["description"], "before dnf upgrade");
    assert_eq!(s1["state"], "active");
    assert_eq!(s1["important"], true);
    assert_eq!(s1["boot_entry"], "", "a set whose volume is not mounted at / records no /boot");
    assert_eq!(s1["userdata"], json!({"by": "test", "tx": "42"}));
    assert_eq!(s1["size_bytes"], 8 << 20);
    assert_eq!(s1["merge_progress"], 0.0);
    let created = s1["created"].as_str().unwrap().to_owned();
    let created_usec = s1["created_usec"].as_u64().unwrap();
    let now_usec =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as u64;
    assert!(now_usec - created_usec < 60_000_000, "created {created_usec}, now {now_usec}");
    assert_eq!(created.len(), "2026-11-23T19:57:49Z".len());
    let created2 = sets[1]["created"].as_str().unwrap().to_owned();

    let (human, _) = d.ctl_status(&["list"], 0);
    assert_eq!(normalize(&d, &human, &[]), fixture("list-two.txt"));

    // show
    let (human, _) = d.ctl_status(&["show", "1"], 0);
    assert_eq!(normalize(&d, &human, &[&created, &created2]), fixture("show-1.txt"));
    let shown = d.json(&["show", "1"]);
    assert_eq!(&shown["snapshot"], s1);

    // status after: pool usage counts both COWs
    let status = d.json(&["status"]);
    assert_eq!(status["pool"]["used_bytes"], 20 << 20);
}

#[test]
fn rollback_wait_restores_the_volume_and_watch_follows_it() {
    let d = Daemon::start();
    let before = sha256(&d.volume);
    d.ctl_status(&["snapshot", "-d", "good state"], 0);

    // Live views started before anything changes. Each prints its initial state only after
    // subscribing, so its first line means it is listening.
    let mut watch_json = d.command(&["watch", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let json_lines = lines_of(watch_json.stdout.take().unwrap());
    let mut watch_one = d.command(&["watch", "1"]).stdout(Stdio::piped()).spawn().unwrap();
    let human_lines = lines_of(watch_one.stdout.take().unwrap());
    let first_json = json_lines.recv_timeout(Duration::from_secs(20)).unwrap();
    let first_human = human_lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first_human.starts_with("ID  CREATED"), "{first_human}");

    scribble(&d, 4);
    assert_ne!(sha256(&d.volume), before, "the write did not reach the volume");
    // UsedBytes follows the COW's fill (the daemon refreshes it from a 1 s monitor and a 2 s
    // poll); 30 s is a liveness bound on a loaded machine, not a latency check.
    let started = Instant::now();
    loop {
        let used = d.json(&["show", "1"])["snapshot"]["used_bytes"].as_u64().unwrap();
        if used >= 4 << 20 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "COW use {used} after writing 4 MiB");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (out, _) = d.ctl_status(&["rollback", "1", "--wait"], 0);
    assert_eq!(out, "rollback to snapshot set 1 finished\n");
    assert_eq!(sha256(&d.volume), before, "rollback did not restore the volume");
    assert_eq!(d.json(&["list"])["snapshots"], json!([]), "a merged set is removed");

    // `watch 1` ends by itself when its set is gone, with status 0.
    let status = watch_one.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let human: Vec<String> = human_lines.iter().collect();
    assert!(human.contains(&"snapshot set 1: merging".to_owned()), "{human:?}");
    assert!(human.contains(&"snapshot set 1 removed".to_owned()), "{human:?}");

    // `watch --json` runs until stopped: read events until the merge's end (20 s at most).
    let mut events: Vec<Value> = vec![serde_json::from_str(&first_json).unwrap()];
    while let Ok(line) = json_lines.recv_timeout(Duration::from_secs(20)) {
        let event: Value = serde_json::from_str(&line).unwrap();
        let done = event["event"] == "merge-finished";
        events.push(event);
        if done && events.iter().any(|e| e["event"] == "removed") {
            break;
        }
    }
    let _ = watch_json.kill();
    let _ = watch_json.wait();
    assert!(events.iter().all(|e| e["schema"] == "snapbackctl/1"));
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "existing");
    assert_eq!(events[0]["snapshot"]["description"], "good state");
    assert!(
        events.iter().any(|e| e["event"] == "changed" && e["changes"]["state"] == "merging"),
        "{kinds:?}"
    );
    // (MergeProgress changes are not asserted: a 4 MiB merge may finish within one update.)
    assert!(kinds.contains(&"removed"), "{kinds:?}");
    assert!(
        events.iter().any(|e| e["event"] == "merge-finished" && e["ok"] == true && e["id"] == 1),
        "{kinds:?}"
    );
}

#[test]
fn a_busy_volume_schedules_the_rollback_with_exit_status_3() {
    let d = Daemon::start();
    d.ctl_status(&["snapshot"], 0);
    // Hold the volume's device exclusively, as a mounted filesystem does.
    let holder = Command::new("python3")
        .args(["-c", "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY|os.O_EXCL); print('held', flush=True); sys.stdin.read()"])
        .arg(d.device())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = holder;
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "held\n");

    let (out, _) = d.ctl_status(&["rollback", "1"], 3);
    assert_eq!(out, "volume root is busy: rollback to snapshot set 1 scheduled for next boot\n");
    assert_eq!(d.json(&["show", "1"])["snapshot"]["state"], "merge-scheduled");
    let status = d.json(&["status"]);
    assert_eq!(status["pending_merges"], json!([1]));
    assert_eq!(status["volumes"][0]["state"], "merge-scheduled");
    // --wait does not wait for a next boot.
    let out = d.ctl(&["--json", "rollback", "1", "--wait"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"schema": "snapbackctl/1", "id": 1, "result": "scheduled"}));

    let (out, _) = d.ctl_status(&["cancel", "1"], 0);
    assert_eq!(out, "cancelled the rollback to snapshot set 1; the set stays as a snapshot\n");
    assert_eq!(d.json(&["show", "1"])["snapshot"]["state"], "active");
    let (_, err) = d.ctl_status(&["cancel", "1"], 1);
    assert!(err.starts_with("snapbackctl: invalid argument: "), "{err}");

    drop(holder.stdin.take());
    let _ = holder.wait();
}

#[test]
fn delete_removes_sets_and_reports_each_failure() {
    let d = Daemon::start();
    for _ in 0..3 {
        d.ctl_status(&["snapshot"], 0);
    }
    let (out, _) = d.ctl_status(&["delete", "1", "3"], 0);
    assert_eq!(out, "deleted snapshot set 1\ndeleted snapshot set 3\n");
    let ids: Vec<u64> = d.json(&["list"])["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2]);

    // One good, one missing: the good one is deleted, the command fails naming the other.
    let out = d.ctl(&["--json", "delete", "2", "9"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deleted"], json!([2]));
    assert_eq!(v["failed"][0]["id"], 9);
    assert!(v["failed"][0]["error"].as_str().unwrap().starts_with("not found"), "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("snapbackctl: snapshot set 9: not found"), "{err}");
    assert_eq!(d.json(&["list"])["snapshots"], json!([]));
}

#[test]
fn errors_are_actionable_sentences_with_exit_status_1() {
    let d = Daemon::start();
    let (_, err) = d.ctl_status(&["show", "42"], 1);
    assert_eq!(
        err,
        "snapbackctl: not found: no snapshot set 42: `snapbackctl list` shows the existing snapshot sets\n"
    );
    let (_, err) = d.ctl_status(&["rollback", "42"], 1);
    assert!(err.starts_with("snapbackctl: not found: "), "{err}");
    let (_, err) = d.ctl_status(&["snapshot", "nosuchvolume"], 1);
    assert!(err.starts_with("snapbackctl: not found: ") && err.contains("nosuchvolume"), "{err}");
    let (_, err) = d.ctl_status(&["watch", "42"], 1);
    assert!(err.starts_with("snapbackctl: not found: "), "{err}");
    // Usage errors are clap's: status 2.
    d.ctl_status(&["snapshot", "--userdata", "novalue"], 2);
    d.ctl_status(&["rollback"], 2);
    d.ctl_status(&["--format", "yaml", "list"], 2);
}

#[test]
fn no_daemon_and_no_bus_are_explained() {
    let bus = Daemon::bus_only();
    let (_, err) = bus.ctl_status(&["status"], 1);
    assert!(
        err.starts_with("snapbackctl: snapbackd is not running and could not be started"),
        "{err}"
    );

    let out = common::run(
        Command::new(common::own_binary("snapbackctl"))
            .arg("list")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus"),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "snapbackctl: cannot connect to the system bus (unix:path=/nonexistent/bus)"
        ),
        "{err}"
    );
}

#[test]
fn rollback_wait_draws_a_progress_bar_on_a_terminal() {
    common::require("script", "bsdutils");
    let d = Daemon::start();
    let before = sha256(&d.volume);
    d.ctl_status(&["snapshot"], 0);
    scribble(&d, 6);
    // `script` gives snapbackctl a pseudo-terminal; its output is what the terminal showed.
    let cmd = format!(
        "DBUS_SYSTEM_BUS_ADDRESS='{}' {} rollback 1 --wait",
        d.address,
        common::own_binary("snapbackctl").display()
    );
    let out = run_ok(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("rollback 1") && shown.contains('%'), "no bar drawn:\n{shown:?}");
    assert!(shown.contains("rollback to snapshot set 1 finished"), "{shown:?}");
    assert_eq!(sha256(&d.volume), before);
}
