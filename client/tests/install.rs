//! `tools/install` into a temporary DESTDIR: the exact file list, modes, the prefix applied
//! to the units, and generated man pages and completions that are what they claim to be.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{bin_dir, repo, run_ok};

/// Every file `tools/install --prefix /usr` installs, besides the per-subcommand man pages.
const EXPECTED: &[&str] = &[
    "/etc/dnf/libdnf5-plugins/actions.d/snapback.actions",
    "/etc/dnf/plugins/snapback.conf",
    "/etc/snapback/snapback.toml.example",
    "/usr/bin/snapbackctl",
    "/usr/lib/dracut/modules.d/90snapback/module-setup.sh",
    "/usr/lib/dracut/modules.d/90snapback/snapback-activate.sh",
    "/usr/lib/python3/site-packages/dnf-plugins/snapback.py",
    "/usr/lib/systemd/system/snapback-activate.service",
    "/usr/lib/systemd/system/snapbackd.service",
    "/usr/lib/udev/rules.d/61-snapback.rules",
    "/usr/libexec/snapback/snapback-dnf5",
    "/usr/libexec/snapbackd",
    "/usr/share/bash-completion/completions/snapbackctl",
    "/usr/share/cockpit/snapback/index.html",
    "/usr/share/cockpit/snapback/js/client.js",
    "/usr/share/cockpit/snapback/js/dialogs.js",
    "/usr/share/cockpit/snapback/js/errors.js",
    "/usr/share/cockpit/snapback/js/format.js",
    "/usr/share/cockpit/snapback/js/main.js",
    "/usr/share/cockpit/snapback/js/view.js",
    "/usr/share/cockpit/snapback/manifest.json",
    "/usr/share/cockpit/snapback/snapback.css",
    "/usr/share/dbus-1/system-services/org.snapback.Snapback1.service",
    "/usr/share/dbus-1/system.d/org.snapback.Snapback1.conf",
    "/usr/share/fish/vendor_completions.d/snapbackctl.fish",
    "/usr/share/man/man8/snapbackctl.8",
    "/usr/share/man/man8/snapbackd.8",
    "/usr/share/polkit-1/actions/org.snapback.policy",
    "/usr/share/zsh/site-functions/_snapbackctl",
];

/// Subcommands of snapbackctl, each with its own page `snapbackctl-NAME.8`.
const CTL_PAGES: &[&str] = &[
    "snapbackctl-cancel.8",
    "snapbackctl-cow-check.8",
    "snapbackctl-cow-export.8",
    "snapbackctl-cow-inspect.8",
    "snapbackctl-cow-merge.8",
    "snapbackctl-cow.8",
    "snapbackctl-delete.8",
    "snapbackctl-list.8",
    "snapbackctl-rollback.8",
    "snapbackctl-show.8",
    "snapbackctl-snapshot.8",
    "snapbackctl-status.8",
    "snapbackctl-watch.8",
];

/// Every regular file under `root`, as absolute paths inside it, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(format!("/{}", path.strip_prefix(root).unwrap().display()));
            }
        }
    }
    out.sort();
    out
}

fn install(prefix: &str, destdir: &Path, bins: &Path) -> Vec<String> {
    let out = run_ok(
        Command::new(repo().join("tools/install"))
            .args(["--no-build", "--list", "--prefix", prefix])
            .arg("--python-sitelib")
            .arg(format!("{prefix}/lib/python3/site-packages"))
            .arg(format!("DESTDIR={}", destdir.display()))
            .arg("--bin-dir")
            .arg(bins),
    );
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn installs_the_expected_files_into_destdir() {
    let work = tempfile::tempdir().unwrap();
    let bins = bin_dir(work.path());
    let dest = work.path().join("root");
    let listed = install("/usr", &dest, &bins);

    let on_disk = tree(&dest);
    assert_eq!(listed, on_disk, "--list disagrees with what is on disk");
    let (pages, rest): (Vec<&String>, Vec<&String>) = on_disk.iter().partition(|p| {
        p.starts_with("/usr/share/man/man8/snapbackctl-")
            || p.starts_with("/usr/share/man/man8/snapbackd-")
    });
    assert_eq!(rest.iter().map(|s| s.as_str()).collect::<Vec<_>>(), EXPECTED);
    for page in CTL_PAGES {
        let path = format!("/usr/share/man/man8/{page}");
        assert!(pages.iter().any(|p| **p == path), "{path} not installed");
    }

    // Modes: programs executable, everything else not.
    for file in &on_disk {
        let mode = std::fs::metadata(dest.join(&file[1..])).unwrap().permissions().mode() & 0o777;
        let executable = file == "/usr/bin/snapbackctl"
            || file == "/usr/libexec/snapbackd"
            || file == "/usr/libexec/snapback/snapback-dnf5"
            || file.starts_with("/usr/lib/dracut/");
        let want = if executable { 0o755 } else { 0o644 };
        assert_eq!(mode, want, "{file}: mode {mode:o}");
    }

    // The installed programs are the built ones.
    let installed = std::fs::read(dest.join("usr/bin/snapbackctl")).unwrap();
    assert_eq!(installed, std::fs::read(bins.join("snapbackctl")).unwrap());

    // Policies and the udev rule are the repository's, byte for byte.
    assert_eq!(
        std::fs::read(dest.join("usr/share/dbus-1/system.d/org.snapback.Snapback1.conf")).unwrap(),
        std::fs::read(repo().join("systemd/snapback-dbus.conf")).unwrap()
    );
    assert_eq!(
        std::fs::read(dest.join("usr/lib/udev/rules.d/61-snapback.rules")).unwrap(),
        std::fs::read(repo().join("systemd/61-snapback.rules")).unwrap()
    );

    // Man pages are roff with the right title and section; completions know the commands.
    let man = std::fs::read_to_string(dest.join("usr/share/man/man8/snapbackctl.8")).unwrap();
    assert!(man.contains(".TH snapbackctl 8"));
    assert!(man.contains("rollback"));
    let man = std::fs::read_to_string(dest.join("usr/share/man/man8/snapbackd.8")).unwrap();
    assert!(man.contains(".TH snapbackd 8"), "snapbackd.8 has no title");
    let bash =
        std::fs::read_to_string(dest.join("usr/share/bash-completion/completions/snapbackctl"))
            .unwrap();
    assert!(bash.contains("complete -F _snapbackctl") && bash.contains("rollback"));
    let zsh =
        std::fs::read_to_string(dest.join("usr/share/zsh/site-functions/_snapbackctl")).unwrap();
    assert!(zsh.starts_with("#compdef snapbackctl"));
    let fish =
        std::fs::read_to_string(dest.join("usr/share/fish/vendor_completions.d/snapbackctl.fish"))
            .unwrap();
    assert!(fish.contains("complete -c snapbackctl") && fish.contains("-a \"watch\""));
}

#[test]
fn another_prefix_moves_units_exec_paths_and_configuration() {
    let work = tempfile::tempdir().unwrap();
    let bins = bin_dir(work.path());
    let dest = work.path().join("root");
    let listed = install("/opt/snapback", &dest, &bins);
    assert!(listed.contains(&"/opt/snapback/libexec/snapbackd".to_owned()));
    assert!(listed.contains(&"/opt/snapback/etc/snapback/snapback.toml.example".to_owned()));
    assert!(listed.iter().all(|p| p.starts_with("/opt/snapback/")), "{listed:?}");
    let unit =
        std::fs::read_to_string(dest.join("opt/snapback/lib/systemd/system/snapbackd.service"))
            .unwrap();
    assert!(unit.contains("\nExecStart=/opt/snapback/libexec/snapbackd\n"), "{unit}");
    assert!(!unit.contains("/usr/libexec/snapbackd"));
    let unit = std::fs::read_to_string(
        dest.join("opt/snapback/lib/systemd/system/snapback-activate.service"),
    )
    .unwrap();
    assert!(unit.contains("\nExecStart=/opt/snapback/libexec/snapbackd activate\n"), "{unit}");
}

#[test]
fn bad_arguments_are_refused() {
    let out =
        common::run(Command::new(repo().join("tools/install")).args(["--prefix", "relative"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be absolute"));
    let out = common::run(Command::new(repo().join("tools/install")).arg("--frobnicate"));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_configuration_is_accepted_by_the_daemon() {
    // snapbackd's own parser reads the example (it names devices that need not exist here).
    let text = std::fs::read_to_string(repo().join("packaging/snapback.toml.example")).unwrap();
    let config = snapbackd::config::parse(&text, Path::new("snapback.toml.example"));
    assert!(config.is_ok(), "{config:?}");
}
