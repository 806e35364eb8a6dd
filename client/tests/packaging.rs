//! `packaging/snapback.spec` builds with `rpmbuild` (Debian's `rpm` package), on the prebuilt
//! path: sources from `git archive HEAD`, binaries from this build's target directory (no
//! network, no second compilation inside rpmbuild). The package's file list and scriptlets are
//! checked with `rpm -qp`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{bin_dir, repo, require, run_ok};

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// `git archive HEAD` as `snapback-VERSION.tar.gz` with the `snapback-VERSION/` prefix.
fn source_tarball(sources: &Path) {
    let name = format!("snapback-{}", version());
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(repo())
            .args(["archive", "--format=tar.gz", &format!("--prefix={name}/"), "-o"])
            .arg(sources.join(format!("{name}.tar.gz")))
            .arg("HEAD"),
    );
}

/// The three binaries under `prebuilt/`, as the spec's `--with prebuilt` expects.
fn prebuilt_tarball(work: &Path, sources: &Path) {
    let bins = bin_dir(work);
    let stage = work.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::rename(&bins, stage.join("prebuilt")).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&stage)
            .arg("-cf")
            .arg(sources.join(format!("snapback-{}-prebuilt.tar", version())))
            .arg("prebuilt"),
    );
}

#[test]
fn spec_builds_with_rpmbuild_and_packages_every_file() {
    require("rpmbuild", "rpm");
    require("git", "git");
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("rpmbuild");
    let sources = top.join("SOURCES");
    std::fs::create_dir_all(&sources).unwrap();
    source_tarball(&sources);
    prebuilt_tarball(work.path(), &sources);

    let started = Instant::now();
    let out = run_ok(
        Command::new("rpmbuild")
            .args(["-bb", "--with", "prebuilt", "--nodeps"])
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            // Debian's rpm has no build-id tooling configured for this.
            .args(["--define", "_build_id_links none"])
            .arg(repo().join("packaging/snapback.spec")),
    );
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("rpmbuild took {seconds:.1} s");
    let log = String::from_utf8_lossy(&out.stderr);

    let rpms: Vec<_> = walk(&top.join("RPMS"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    assert_eq!(rpms.len(), 1, "expected one binary package, got {rpms:?}\n{log}");
    let rpm = &rpms[0];
    let name = rpm.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("snapback-{}-1", version())), "{name}");

    let files = run_ok(Command::new("rpm").arg("-qlp").arg(rpm));
    let files = String::from_utf8_lossy(&files.stdout);
    for want in [
        "/usr/bin/snapbackctl",
        "/usr/libexec/snapbackd",
        "/usr/lib/systemd/system/snapbackd.service",
        "/usr/lib/systemd/system/snapback-activate.service",
        "/usr/share/dbus-1/system-services/org.snapback.Snapback1.service",
        "/usr/share/dbus-1/system.d/org.snapback.Snapback1.conf",
        "/usr/share/polkit-1/actions/org.snapback.policy",
        "/usr/lib/dracut/modules.d/90snapback/module-setup.sh",
        "/usr/share/bash-completion/completions/snapbackctl",
        "/usr/share/zsh/site-functions/_snapbackctl",
        "/usr/share/fish/vendor_completions.d/snapbackctl.fish",
        "/etc/snapback/snapback.toml.example",
    ] {
        assert!(files.lines().any(|l| l == want), "{want} not in the package:\n{files}");
    }
    // Man pages (compressed by rpm's brp scripts, whatever the suffix).
    for page in ["snapbackctl.8", "snapbackd.8", "snapbackctl-rollback.8"] {
        let prefix = format!("/usr/share/man/man8/{page}");
        assert!(files.lines().any(|l| l.starts_with(&prefix)), "{page} not in the package");
    }

    // The configuration example is marked as configuration (kept on upgrade).
    let configs = run_ok(Command::new("rpm").arg("-qcp").arg(rpm));
    assert!(
        String::from_utf8_lossy(&configs.stdout).contains("/etc/snapback/snapback.toml.example")
    );

    // The packaged daemon is the one that was built.
    let extract = work.path().join("extract");
    std::fs::create_dir_all(&extract).unwrap();
    run_ok(
        Command::new("sh")
            .current_dir(&extract)
            .arg("-c")
            .arg(format!("rpm2cpio '{}' | cpio -idm --quiet", rpm.display())),
    );
    let packaged = extract.join("usr/bin/snapbackctl");
    let out = run_ok(Command::new(&packaged).arg("--version"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("snapbackctl {}", version()));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_from_source_path_of_the_spec_parses() {
    // Not built here (a release build of the workspace inside rpmbuild takes minutes); its
    // macros must still expand to the cargo-vendor build a distribution would run.
    require("rpmspec", "rpm");
    let out = run_ok(Command::new("rpmspec").arg("-P").arg(repo().join("packaging/snapback.spec")));
    let spec = String::from_utf8_lossy(&out.stdout);
    assert!(
        spec.contains(&format!("Source1:        snapback-{}-vendor.tar.gz", version())),
        "{spec}"
    );
    assert!(spec.contains("BuildRequires:  cargo >= 1.89"));
    assert!(spec.contains("replace-with = \"vendored-sources\""));
    assert!(spec.contains("cargo build --release --locked --offline -p snapbackd -p snapbackctl"));
    assert!(spec.contains("--bin-dir target/release"));
    let out = run_ok(
        Command::new("rpmspec")
            .args(["-P", "--with", "prebuilt"])
            .arg(repo().join("packaging/snapback.spec")),
    );
    let spec = String::from_utf8_lossy(&out.stdout);
    assert!(!spec.contains("cargo build"), "the prebuilt path compiles:\n{spec}");
    assert!(spec.contains("--bin-dir prebuilt"));
}
