//! polkit decides who may mutate: a real polkitd on the private bus, our action file, and a
//! test rule. Reads are open to everyone; `nobody` is refused without a rule and allowed with
//! one. Needs root (installs the action file and a rule for the duration of the test).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
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
    let _actions = Installed::new(
        PathBuf::from(format!("/usr/share/polkit-1/actions/{tag}.policy")),
        &policy,
    );
    let mut fx = Fixture::start(Options { polkit: true, ..Options::default() });
    let connection = fx.connect().await;
    let manager = fx.manager(&connection).await;

    // root is authorized by polkit itself.
    let set = manager.snapshot(&["data"], "by root", HashMap::new()).await.unwrap();
    let before = manager.status().await.unwrap();

    // Reads are open to an unprivileged caller.
    let out = fx.busctl_as_nobody(&["call", BUS_NAME, MANAGER_PATH, MANAGER, "Status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"backend\" s \"userspace\""), "{}", text(&out));
    let out = fx.busctl_as_nobody(&["get-property", BUS_NAME, set.as_str(), SNAPSHOT_INTERFACE, "Description"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s \"by root\"", "{}", text(&out));
    let out = fx.busctl_as_nobody(&["introspect", BUS_NAME, MANAGER_PATH]);
    assert!(out.status.success() && text(&out).contains(".Rollback"), "{}", text(&out));

    // Mutations without a rule: refused with NotAuthorized, nothing changes.
    let out = fx.busctl_as_nobody(&[
        "call", BUS_NAME, MANAGER_PATH, MANAGER, "Snapshot", "assa{sv}", "1", "data", "by nobody", "0",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not authorized"), "{}", text(&out));
    let out = fx.busctl_as_nobody(&[
        "call", BUS_NAME, MANAGER_PATH, MANAGER, "Rollback", "oa{sv}", set.as_str(), "0",
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
            "call", BUS_NAME, MANAGER_PATH, MANAGER, "Snapshot", "assa{sv}", "1", "data", "by nobody", "0",
        ]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(text(&out).contains("not authorized"), "{}", text(&out));
        assert!(started.elapsed() < Duration::from_secs(30), "polkitd never applied the rule");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let new_path = created.strip_prefix("o \"").and_then(|s| s.strip_suffix('"')).unwrap().to_string();
    let status = manager.status().await.unwrap();
    assert_eq!(status.volumes["data"].snapshots.len(), 2, "{status:?}");
    let proxy = fx.snapshot_proxy(&connection, &new_path).await;
    assert_eq!(proxy.description().await.unwrap(), "by nobody");

    let out = fx.busctl_as_nobody(&[
        "call", BUS_NAME, MANAGER_PATH, MANAGER, "Rollback", "oa{sv}", &new_path, "0",
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
