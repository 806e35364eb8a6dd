//! Helpers the host integration tests of several crates share: the private system bus's
//! configuration, root checks, commands that must succeed, deterministic file content, and
//! manifests of a mounted filesystem's tree. A crate of its own (dev-dependency only), so that
//! no test file is included into another with `#[path]`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod system_bus;

/// Fail loudly, never pass silently, when not root.
pub fn require_root() {
    let uid = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:").map(|r| r.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap();
    assert_eq!(
        uid, "0",
        "the snapbackd host integration tests need root: they start dbus-daemon, polkitd, FUSE, \
         loop devices and mount ext4 (run as root, e.g. sudo -E cargo test)"
    );
}

/// Runs `program`; panics with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `done` every 50 ms; panics after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// sha256 of every regular file under `root`, by relative path (the tree's content).
pub fn tree_digest(root: &Path) -> BTreeMap<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -xdev -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0r sha256sum")
        .arg("sh")
        .arg(root)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(h, p)| (p.to_string(), h.to_string())))
        .collect()
}

/// Every path with its type and link target, plus every regular file's sha256.
pub fn full_tree(root: &Path) -> (String, BTreeMap<String, String>) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -xdev ! -path './lost+found*' -printf '%y %m %s %p -> %l\\n' | sort")
        .arg("sh")
        .arg(root)
        .output()
        .unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), tree_digest(root))
}

/// Deterministic pseudo-random bytes (xorshift64*), so content differs per file and seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
