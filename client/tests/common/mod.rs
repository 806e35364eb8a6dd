//! Small helpers shared by snapbackctl's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod daemon;
pub use snapback_test_support::system_bus;

/// The repository root (the workspace).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A binary of this package, built by cargo for this test.
pub fn own_binary(name: &str) -> PathBuf {
    match name {
        "snapbackctl" => PathBuf::from(env!("CARGO_BIN_EXE_snapbackctl")),
        other => panic!("not a snapbackctl binary: {other}"),
    }
}

/// snapbackd, built in the same target directory as this test's binaries. `tools/test-all`
/// builds the whole workspace first; alone, run `cargo build -p snapbackd` before the test.
pub fn snapbackd_binary() -> PathBuf {
    let dir = own_binary("snapbackctl").parent().unwrap().to_path_buf();
    let path = dir.join("snapbackd");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p snapbackd`; tools/test-all does)",
        path.display()
    );
    path
}

/// Runs `cmd`, returning its output; panics if it cannot be started at all.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and asserts success, showing its output otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether an executable is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Asserts that `program` is installed, naming the package that provides it.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is missing: apt-get install {package} (tools/install-deps does)"
    );
}

/// xtask (man pages and completions), built in the same target directory as this test's
/// binaries (tools/test-all builds the whole workspace first).
pub fn xtask_binary() -> PathBuf {
    let path = own_binary("snapbackctl").parent().unwrap().join("xtask");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p xtask`)",
        path.display()
    );
    path
}

/// A bin directory holding the three binaries tools/install takes with --no-build.
pub fn bin_dir(into: &Path) -> PathBuf {
    let dir = into.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, path) in [
        ("snapbackctl", own_binary("snapbackctl")),
        ("xtask", xtask_binary()),
        ("snapbackd", snapbackd_binary()),
    ] {
        std::fs::copy(&path, dir.join(name)).unwrap();
    }
    dir
}
