//! polkit decides who may mutate: a real polkitd on the private bus, our action file, and a
//! test rule. Reads are open to everyone; `nobody` is refused without a rule and allowed with
//! one. Root (uid 0 by the bus daemon) is allowed without polkit: with no polkitd on the bus,
//! and with a polkitd that never answers, where `nobody` is refused in bounded time. Needs root
//! (installs the action file and a rule for the duration of the test).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{repo_root, Fixture, Options};
use snapback_dbus::{BUS_NAME, MANAGER_PATH, SNAPSHOT_INTERFACE};

/// A file installed for the test and removed afterwards, whatever happens.
struct Installed(PathBuf);

impl Installed {
    fn new(path: PathBuf, contents: &str) -> Installed {
        fs::write(&path, contents).unwrap();
        Installed(path)
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

const MANAGER: &str = "org.snapback.Snapback1.Manager";

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polkit_decides_mutations_reads_are_open() {
    let tag = format!("snapback-test-{}", std::process::id());
    let policy = fs::read_to_string(repo_root().join("systemd/org.snapback.policy")).unwrap();
    let _actions =
        Installed::new(PathBuf::from(format!("/usr/share/polkit-1/actions/{tag}.policy")), &policy);
    let mut fx = Fixture::start(Options { polkit: true, ..Options::default() });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;

    // root is authorized by its uid.
    let set = manager.snapshot(&["data"], "by root", HashMap::new()).await.unwrap();
    let before = manager.status().await.unwrap();

    // Reads are open to an unprivileged caller.
    let out = fx.busctl_as_nobody(&["call", BUS_NAME, MANAGER_PATH, MANAGER, "Status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"backend\" s \"userspace\""), "{}", text(&out));
    let out = fx.busctl_as_nobody(&[
        "get-property",
        BUS_NAME,
        set.as_str(),
        SNAPSHOT_INTERFACE,
        "Description",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s \"by root\"", "{}", text(&out));
    let out = fx.busctl_as_nobody(&["introspect", BUS_NAME, MANAGER_PATH]);
    assert!(out.status.success() && text(&out).contains(".Rollback"), "{}", text(&out));

    // Mutations without a rule: refused with NotAuthorized, nothing changes.
    let out = fx.busctl_as_nobody(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER,
        "Snapshot",
        "assa{sv}",
        "1",
        "data",
        "by nobody",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not authorized"), "{}", text(&out));
    let out = fx.busctl_as_nobody(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER,
        "Rollback",
        "oa{sv}",
        set.as_str(),
        "0",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not authorized: "), "{}", text(&out));
    let out = fx.dbus_send_as_nobody(&[
        &format!("--dest={BUS_NAME}"),
        MANAGER_PATH,
        &format!("{MANAGER}.Delete"),
        &format!("objpath:{}", set.as_str()),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("org.snapback.Snapback1.Error.NotAuthorized"),
        "dbus-send shows the error name: {}",
        text(&out)
    );
    let out = fx.dbus_send_as_nobody(&[
        &format!("--dest={BUS_NAME}"),
        set.as_str(),
        &format!("{SNAPSHOT_INTERFACE}.Delete"),
    ]);
    assert!(text(&out).contains("org.snapback.Snapback1.Error.NotAuthorized"), "{}", text(&out));
    assert_eq!(manager.status().await.unwrap(), before, "a refused call changed something");
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    assert_eq!(snapshot.state().await.unwrap(), "active");

    // A rule lets nobody snapshot and delete, but not roll back.
    let _rule = Installed::new(
        PathBuf::from(format!("/etc/polkit-1/rules.d/49-{tag}.rules")),
        r#"polkit.addRule(function(action, subject) {
    if ((action.id == "org.snapback.snapshot" || action.id == "org.snapback.delete") &&
        subject.user == "nobody") {
        return polkit.Result.YES;
    }
});
"#,
    );
    // polkitd reloads rules on an inotify event; retry until it has (30 s: reloading runs
    // polkit's JavaScript engine, slow on a loaded machine).
    let started = Instant::now();
    let created = loop {
        let out = fx.busctl_as_nobody(&[
            "call",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER,
            "Snapshot",
            "assa{sv}",
            "1",
            "data",
            "by nobody",
            "0",
        ]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(text(&out).contains("not authorized"), "{}", text(&out));
        assert!(started.elapsed() < Duration::from_secs(30), "polkitd never applied the rule");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let new_path =
        created.strip_prefix("o \"").and_then(|s| s.strip_suffix('"')).unwrap().to_string();
    let status = manager.status().await.unwrap();
    assert_eq!(status.volumes["data"].snapshots.len(), 2, "{status:?}");
    let proxy = fx.snapshot_proxy(&connection, &new_path).await;
    assert_eq!(proxy.description().await.unwrap(), "by nobody");

    let out = fx.busctl_as_nobody(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER,
        "Rollback",
        "oa{sv}",
        &new_path,
        "0",
    ]);
    assert!(text(&out).contains("not authorized"), "rollback is not in the rule: {}", text(&out));
    assert_eq!(proxy.state().await.unwrap(), "active");

    let out = fx.dbus_send_as_nobody(&[
        &format!("--dest={BUS_NAME}"),
        MANAGER_PATH,
        &format!("{MANAGER}.Delete"),
        &format!("objpath:{new_path}"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let status = manager.status().await.unwrap();
    assert_eq!(status.volumes["data"].snapshots, vec![set.clone()]);
    fx.stop_daemon();
}

/// `OpenVolume` hands out a snapshot's old data: its own action, `org.snapback.open`, decides,
/// and a rule for it opens nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_snapshot_is_its_own_polkit_action() {
    let tag = format!("snapback-test-open-{}", std::process::id());
    let policy = fs::read_to_string(repo_root().join("systemd/org.snapback.policy")).unwrap();
    let _actions =
        Installed::new(PathBuf::from(format!("/usr/share/polkit-1/actions/{tag}.policy")), &policy);
    let mut fx = Fixture::start(Options { polkit: true, ..Options::default() });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let set = manager.snapshot(&["data"], "to open", HashMap::new()).await.unwrap();
    let open = |fx: &Fixture| {
        fx.busctl_as_nobody(&[
            "call",
            BUS_NAME,
            set.as_str(),
            SNAPSHOT_INTERFACE,
            "OpenVolume",
            "sa{sv}",
            "data",
            "0",
        ])
    };
    let out = open(&fx);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not authorized: org.snapback.open requires authentication"),
        "{}",
        text(&out)
    );

    let _rule = Installed::new(
        PathBuf::from(format!("/etc/polkit-1/rules.d/49-{tag}.rules")),
        r#"polkit.addRule(function(action, subject) {
    if (action.id == "org.snapback.open" && subject.user == "nobody") {
        return polkit.Result.YES;
    }
});
"#,
    );
    let started = Instant::now();
    let reply = loop {
        let out = open(&fx);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(text(&out).contains("not authorized"), "{}", text(&out));
        assert!(started.elapsed() < Duration::from_secs(30), "polkitd never applied the rule");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reply.starts_with("sh \"/dev/loop"), "{reply}");
    let out = fx.dbus_send_as_nobody(&[
        &format!("--dest={BUS_NAME}"),
        set.as_str(),
        &format!("{SNAPSHOT_INTERFACE}.Delete"),
    ]);
    assert!(text(&out).contains(NOT_AUTHORIZED), "the open rule allowed a delete: {}", text(&out));
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    assert_eq!(snapshot.state().await.unwrap(), "active");
    fx.stop_daemon();
}

const NOT_AUTHORIZED: &str = "org.snapback.Snapback1.Error.NotAuthorized";

/// Opens `device` exclusively, as a mount does: the volume is busy while this is held.
fn hold_exclusively(device: &str) -> fs::File {
    let excl = rustix::fs::OFlags::EXCL.bits() as i32;
    fs::OpenOptions::new().read(true).custom_flags(excl).open(device).unwrap()
}

/// Waits until `set` is gone from Status (a merged set is removed).
async fn wait_gone(fx: &Fixture, manager: &snapback_dbus::ManagerProxy<'_>, set: &str) {
    let started = Instant::now();
    while manager.status().await.unwrap().volumes["data"]
        .snapshots
        .iter()
        .any(|s| s.as_str() == set)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{set} still listed after 60 s:\n{}",
            fx.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mutates_without_polkitd_nobody_is_refused() {
    let mut fx = Fixture::start(Options {
        polkit: true,
        polkitd_absent: true,
        daemon_env: vec![("RUST_LOG".into(), "info,snapbackd=debug".into())],
        ..Options::default()
    });
    assert!(!fx.name_has_owner("org.freedesktop.PolicyKit1"), "no polkit on this bus");
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;

    // Every mutating call as root: Snapshot, UpdateMetadata, Rollback (scheduled while the
    // volume is held busy), CancelRollback.
    let set = manager.snapshot(&["data"], "by root", HashMap::new()).await.unwrap();
    assert_eq!(manager.status().await.unwrap().volumes["data"].snapshots, vec![set.clone()]);
    manager
        .update_metadata(
            &set.as_ref(),
            "renamed by root",
            HashMap::from([("who", "root")]),
            HashMap::new(),
        )
        .await
        .unwrap();
    let snapshot = fx.snapshot_proxy(&connection, set.as_str()).await;
    assert_eq!(snapshot.description().await.unwrap(), "renamed by root");
    assert_eq!(snapshot.userdata().await.unwrap().get("who").map(String::as_str), Some("root"));
    let device = fx.device_of(&connection, "data").await;
    let busy = hold_exclusively(&device);
    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "scheduled");
    assert_eq!(snapshot.state().await.unwrap(), "merge-scheduled");

    // nobody, for each mutating call: NotAuthorized because polkit cannot be asked.
    let before = manager.status().await.unwrap();
    assert_eq!(before.pending, vec![set.clone()]);
    for args in [
        vec![
            "call",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER,
            "Snapshot",
            "assa{sv}",
            "1",
            "data",
            "by nobody",
            "0",
        ],
        vec!["call", BUS_NAME, MANAGER_PATH, MANAGER, "Rollback", "oa{sv}", set.as_str(), "0"],
        vec![
            "call",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER,
            "UpdateMetadata",
            "osa{ss}a{sv}",
            set.as_str(),
            "by nobody",
            "0",
            "0",
        ],
        vec!["call", BUS_NAME, set.as_str(), SNAPSHOT_INTERFACE, "Rollback", "a{sv}", "0"],
    ] {
        let out = fx.busctl_as_nobody(&args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("not authorized: polkit could not be asked about org.snapback."),
            "{args:?}: {}",
            text(&out)
        );
    }
    for (path, method, arg) in [
        (
            MANAGER_PATH,
            format!("{MANAGER}.CancelRollback"),
            Some(format!("objpath:{}", set.as_str())),
        ),
        (MANAGER_PATH, format!("{MANAGER}.Delete"), Some(format!("objpath:{}", set.as_str()))),
        (set.as_str(), format!("{SNAPSHOT_INTERFACE}.Delete"), None),
    ] {
        let dest = format!("--dest={BUS_NAME}");
        let mut args = vec![dest.as_str(), path, method.as_str()];
        args.extend(arg.as_deref());
        let out = fx.dbus_send_as_nobody(&args);
        assert!(!out.status.success(), "{method}: {}", text(&out));
        assert!(text(&out).contains(NOT_AUTHORIZED), "{method}: {}", text(&out));
        assert!(text(&out).contains("polkit could not be asked"), "{method}: {}", text(&out));
    }
    assert_eq!(manager.status().await.unwrap(), before, "a refused call changed something");
    assert_eq!(snapshot.description().await.unwrap(), "renamed by root");
    assert_eq!(snapshot.state().await.unwrap(), "merge-scheduled");

    manager.cancel_rollback(&set.as_ref()).await.unwrap();
    assert_eq!(snapshot.state().await.unwrap(), "active");
    assert!(manager.status().await.unwrap().pending.is_empty());

    // Rollback with the volume free merges now; the merged set goes away.
    drop(busy);
    assert_eq!(manager.rollback(&set.as_ref(), HashMap::new()).await.unwrap(), "merging");
    wait_gone(&fx, &manager, set.as_str()).await;

    let other = manager.snapshot(&["data"], "to delete", HashMap::new()).await.unwrap();
    assert_eq!(manager.status().await.unwrap().volumes["data"].snapshots, vec![other.clone()]);
    manager.delete(&other.as_ref()).await.unwrap();
    assert!(manager.status().await.unwrap().volumes["data"].snapshots.is_empty());

    let log = fx.daemon_log();
    assert!(log.contains("authorized: the caller is root (uid 0), polkit not asked"), "{log}");
    assert!(log.contains("polkit could not be asked"), "{log}");
    fx.stop_daemon();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mutates_while_polkitd_hangs_nobody_is_refused_in_bounded_time() {
    let mut fx = Fixture::start(Options { polkit: true, ..Options::default() });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;
    let kept = manager.snapshot(&["data"], "kept", HashMap::new()).await.unwrap();

    // polkitd keeps its name but answers nothing from here on.
    fx.hang_polkitd();
    assert!(fx.name_has_owner("org.freedesktop.PolicyKit1"));

    // nobody's calls go out first, non-interactive; both clients wait longer (60 s) than the
    // daemon's 15 s bound on a polkit check, so the answer they get is the daemon's.
    let started = Instant::now();
    let snapshot_by_nobody = fx
        .busctl_as_nobody_command(&[
            "--allow-interactive-authorization=no",
            "--timeout=60",
            "call",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER,
            "Snapshot",
            "assa{sv}",
            "1",
            "data",
            "by nobody",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let delete_by_nobody = fx
        .dbus_send_as_nobody_command(&[
            "--reply-timeout=60000",
            &format!("--dest={BUS_NAME}"),
            MANAGER_PATH,
            &format!("{MANAGER}.Delete"),
            &format!("objpath:{}", kept.as_str()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Meanwhile root's calls are answered without polkit (10 s each: a liveness bound; asking
    // the stopped polkitd, they would never be).
    let root = Duration::from_secs(10);
    let set = tokio::time::timeout(root, manager.snapshot(&["data"], "by root", HashMap::new()))
        .await
        .expect("root's Snapshot waited for the hung polkitd")
        .unwrap();
    tokio::time::timeout(
        root,
        manager.update_metadata(&set.as_ref(), "renamed", HashMap::new(), HashMap::new()),
    )
    .await
    .expect("root's UpdateMetadata waited for the hung polkitd")
    .unwrap();
    assert_eq!(
        fx.snapshot_proxy(&connection, set.as_str()).await.description().await.unwrap(),
        "renamed"
    );
    tokio::time::timeout(root, manager.delete(&set.as_ref()))
        .await
        .expect("root's Delete waited for the hung polkitd")
        .unwrap();
    assert_eq!(manager.status().await.unwrap().volumes["data"].snapshots, vec![kept.clone()]);

    let (snapshot_out, delete_out) = tokio::task::spawn_blocking(move || {
        (
            snapshot_by_nobody.wait_with_output().unwrap(),
            delete_by_nobody.wait_with_output().unwrap(),
        )
    })
    .await
    .unwrap();
    let nobody_done = started.elapsed();
    assert!(!snapshot_out.status.success(), "{}", text(&snapshot_out));
    assert!(
        text(&snapshot_out).contains(
            "not authorized: polkit could not be asked about org.snapback.snapshot (no answer within 15 s)"
        ),
        "{}",
        text(&snapshot_out)
    );
    assert!(!delete_out.status.success(), "{}", text(&delete_out));
    assert!(text(&delete_out).contains(NOT_AUTHORIZED), "{}", text(&delete_out));
    assert!(text(&delete_out).contains("(no answer within 15 s)"), "{}", text(&delete_out));
    assert!(
        nobody_done >= Duration::from_secs(14) && nobody_done < Duration::from_secs(45),
        "nobody's calls ended after {nobody_done:?}, expected the 15 s bound"
    );
    assert_eq!(manager.status().await.unwrap().volumes["data"].snapshots, vec![kept]);
    let log = fx.daemon_log();
    assert!(log.contains("polkit could not be asked: no answer within 15 s"), "{log}");
    fx.stop_daemon();
}
