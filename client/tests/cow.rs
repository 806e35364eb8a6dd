//! `snapbackctl cow …` end to end on COW stores written by the real kernel's dm-snapshot
//! (the engine's fixtures, `daemon/engine/tests/fixtures/`): inspect and check read them,
//! export gives the kernel's snapshot view byte for byte, merge gives the kernel's merged origin.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{own_binary, repo, require, run};

const CHUNK_SIZES: [u32; 3] = [8, 32, 128];

fn fixtures() -> PathBuf {
    repo().join("daemon/engine/tests/fixtures")
}

fn expected(chunk: u32) -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(fixtures().join(format!("kernel-cow-chunk{chunk}/expected.txt")))
            .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Decompresses a fixture image into `dir`.
fn unpack(zst: &Path, dir: &Path, name: &str) -> PathBuf {
    require("zstd", "zstd");
    let out = dir.join(name);
    let status = Command::new("zstd").arg("-qdf").arg(zst).arg("-o").arg(&out).status().unwrap();
    assert!(status.success(), "zstd -d {}", zst.display());
    out
}

/// The COW and origin of one fixture, in a temp dir (merge writes them).
struct Fixture {
    dir: tempfile::TempDir,
    cow: PathBuf,
    origin: PathBuf,
    expected: BTreeMap<String, String>,
}

fn fixture(chunk: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let sub = fixtures().join(format!("kernel-cow-chunk{chunk}"));
    let cow = unpack(&sub.join("cow.img.zst"), dir.path(), "cow.img");
    let origin = unpack(&sub.join("origin-final.img.zst"), dir.path(), "origin.img");
    Fixture { dir, cow, origin, expected: expected(chunk) }
}

fn ctl(args: &[&str]) -> Output {
    run(Command::new(own_binary("snapbackctl")).args(args))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    text(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn inspect_reports_the_kernels_status_numbers() {
    for chunk in CHUNK_SIZES {
        let f = fixture(chunk);
        let out = ctl(&["cow", "inspect", "--json", p(&f.cow)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v = json(&out);
        assert_eq!(v["schema"], "snapbackctl/1");
        assert_eq!(v["valid"], true);
        assert_eq!(v["version"], 1);
        for key in [
            "chunk_sectors",
            "exceptions",
            "allocated_sectors",
            "total_sectors",
            "metadata_sectors",
        ] {
            assert_eq!(v[key].to_string(), f.expected[key], "chunk {chunk}: {key}");
        }
        // Human form: the kernel's status line numbers, in its order.
        let out = ctl(&["cow", "inspect", p(&f.cow)]);
        assert_eq!(out.status.code(), Some(0));
        let status = &f.expected["status"];
        let usage = status.split_whitespace().skip(3).collect::<Vec<_>>().join(" ");
        assert!(text(&out.stdout).contains(&format!("Usage: {usage} ")), "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains(&format!("Exceptions: {}\n", f.expected["exceptions"])));
    }
}

#[test]
fn check_passes_kernel_stores() {
    for chunk in CHUNK_SIZES {
        let f = fixture(chunk);
        let out = ctl(&["cow", "check", p(&f.cow)]);
        assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{}: clean\n", f.cow.display()));
        let v = json(&ctl(&["cow", "check", "--json", p(&f.cow)]));
        assert_eq!(v["clean"], true);
        assert_eq!(v["problems"], serde_json::json!([]));
    }
}

#[test]
fn export_gives_the_kernels_snapshot_view() {
    for chunk in CHUNK_SIZES {
        let f = fixture(chunk);
        let out_path = f.dir.path().join("view.img");
        let origin_before = sha256(&f.origin);
        let out = ctl(&["cow", "export", "--origin", p(&f.origin), p(&f.cow), p(&out_path)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(sha256(&out_path), f.expected["snapshot_view_sha256"], "chunk {chunk}");
        // Export only reads.
        assert_eq!(sha256(&f.origin), origin_before);
        assert_eq!(sha256(&f.cow), f.expected["cow_sha256"]);
    }
}

#[test]
fn merge_gives_the_kernels_merged_origin_and_empties_the_store() {
    for chunk in CHUNK_SIZES {
        let f = fixture(chunk);
        let out = ctl(&["cow", "merge", "--origin", p(&f.origin), p(&f.cow)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!(
                "merged {} chunks into {}; the store has 0 exceptions left\n",
                f.expected["exceptions"],
                f.origin.display()
            )
        );
        assert_eq!(sha256(&f.origin), f.expected["merged_origin_sha256"], "chunk {chunk}");
        let v = json(&ctl(&["cow", "inspect", "--json", p(&f.cow)]));
        assert_eq!(v["exceptions"], 0);
        // The kernel's status after its own merge: `<allocated>/<total> <metadata>`.
        let merged: Vec<&str> = f.expected["merged_status"].split_whitespace().collect();
        let (alloc, total) = merged[3].split_once('/').unwrap();
        assert_eq!(v["allocated_sectors"].to_string(), alloc);
        assert_eq!(v["total_sectors"].to_string(), total);
        assert_eq!(v["metadata_sectors"].to_string(), merged[4]);
        // Merging again is a no-op that succeeds (what a resumed, finished merge looks like).
        let again = ctl(&["cow", "merge", "--json", "--origin", p(&f.origin), p(&f.cow)]);
        assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
        assert_eq!(json(&again)["exceptions_left"], 0);
        assert_eq!(sha256(&f.origin), f.expected["merged_origin_sha256"]);
    }
}

/// Sets the header's `valid` field (bytes 4..8, little endian) to 0, as the kernel does when
/// a snapshot overflows.
fn invalidate(cow: &Path) {
    let mut bytes = std::fs::read(cow).unwrap();
    bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(cow, bytes).unwrap();
}

#[test]
fn an_invalid_store_is_reported_and_never_merged() {
    let f = fixture(32);
    invalidate(&f.cow);
    let origin_before = sha256(&f.origin);

    let v = json(&ctl(&["cow", "inspect", "--json", p(&f.cow)]));
    assert_eq!(v["valid"], false);

    let out = ctl(&["cow", "check", p(&f.cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("marked invalid"), "{}", text(&out.stdout));

    let out = ctl(&["cow", "merge", "--origin", p(&f.origin), p(&f.cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid"), "{}", text(&out.stderr));
    assert_eq!(sha256(&f.origin), origin_before, "a refused merge touched the origin");

    let view = f.dir.path().join("view.img");
    let out = ctl(&["cow", "export", "--origin", p(&f.origin), p(&f.cow), p(&view)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!view.exists(), "a refused export created its output");
}

#[test]
fn damage_is_named_with_its_offset() {
    let f = fixture(32);
    // Wrong magic.
    let mut bytes = std::fs::read(&f.cow).unwrap();
    let good = bytes.clone();
    bytes[0] ^= 0xff;
    std::fs::write(&f.cow, &bytes).unwrap();
    let out = ctl(&["cow", "check", p(&f.cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("wrong magic"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("not clean"), "{}", text(&out.stderr));
    let out = ctl(&["cow", "inspect", p(&f.cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("wrong magic"));

    // Two entries for the same origin chunk: copy entry 0's old_chunk into entry 1. Area 0
    // is chunk 1 (16 KiB in); entries are {old u64, new u64}.
    let mut bytes = good.clone();
    let area = 32 * 512;
    let old0: [u8; 8] = bytes[area..area + 8].try_into().unwrap();
    bytes[area + 16..area + 24].copy_from_slice(&old0);
    std::fs::write(&f.cow, &bytes).unwrap();
    let out = ctl(&["cow", "check", "--json", p(&f.cow)]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["clean"], false);
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["offset"] == area as u64 + 16
            && p["message"].as_str().unwrap().contains("repeats origin chunk")),
        "{problems:?}"
    );
}

#[test]
fn an_all_zero_cow_holds_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let cow = dir.path().join("zero.img");
    std::fs::write(&cow, vec![0u8; 1 << 20]).unwrap();
    let out = ctl(&["cow", "inspect", p(&cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("holds no snapshot store"), "{}", text(&out.stderr));
    // And nothing was formatted.
    assert!(std::fs::read(&cow).unwrap().iter().all(|&b| b == 0));
    let missing = dir.path().join("missing.img");
    let out = ctl(&["cow", "check", p(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot open"), "{}", text(&out.stderr));
}

#[test]
fn usage_errors_exit_2() {
    let out = ctl(&["cow", "merge", "cow.img"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(&["bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn merge_draws_a_progress_bar_only_on_a_terminal() {
    require("script", "bsdutils");
    let f = fixture(8);
    // `script` gives the command a pseudo-terminal; its output is what the terminal showed.
    let cmd = format!(
        "{} cow merge --origin {} {}",
        own_binary("snapbackctl").display(),
        p(&f.origin),
        p(&f.cow)
    );
    let out = run(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(shown.contains("merging") && shown.contains("0%"), "no bar drawn:\n{shown:?}");
    assert!(shown.contains("\u{1b}[2K"), "the bar is not redrawn in place:\n{shown:?}");
    assert!(shown.contains("merged 1017 chunks into"), "{shown:?}");
    assert_eq!(sha256(&f.origin), f.expected["merged_origin_sha256"]);
    // Without a terminal (every other test here), stdout is only the result line: checked
    // exactly by merge_gives_the_kernels_merged_origin_and_empties_the_store.
}

/// Fails loudly, never passes silently, when not root (loop devices, mount).
fn require_root() {
    assert!(rustix::process::geteuid().is_root(), "this test needs root: loop devices and mount");
}

/// A loop device over a file, detached when dropped.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Loop {
        require("losetup", "mount");
        let out = common::run_ok(Command::new("losetup").args(["--find", "--show"]).arg(file));
        Loop(PathBuf::from(text(&out.stdout).trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A file system mounted on a directory, unmounted when dropped (or by `unmount`).
struct Mounted(Option<PathBuf>);

impl Mounted {
    fn new(device: &Path, at: &Path) -> Mounted {
        common::run_ok(Command::new("mount").arg(device).arg(at));
        Mounted(Some(at.to_owned()))
    }
    fn unmount(&mut self) {
        if let Some(at) = self.0.take() {
            common::run_ok(Command::new("umount").arg(&at));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(at) = self.0.take() {
            let _ = Command::new("umount").arg(&at).status();
        }
    }
}

/// An ext4 image the size of `like`, with every table written at once (no lazy init writing
/// behind the test's back while it is mounted).
fn ext4_image(like: &Path, path: &Path) {
    require("mkfs.ext4", "e2fsprogs");
    let size = std::fs::metadata(like).unwrap().len();
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    common::run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(path),
    );
}

#[test]
fn merge_refuses_a_mounted_origin_and_writes_nothing() {
    require_root();
    let f = fixture(32);
    // The fixture's store is merged into an ext4 instead of its own origin: what a merge would
    // write there is the store's chunks, all of them visible in the image's bytes.
    let image = f.dir.path().join("ext4.img");
    ext4_image(&f.origin, &image);
    let device = Loop::attach(&image);
    let at = f.dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let mut mounted = Mounted::new(&device.0, &at);
    std::fs::write(at.join("file"), b"kept").unwrap();
    common::run_ok(&mut Command::new("sync"));
    let cow_before = sha256(&f.cow);
    let device_before = sha256(&device.0);

    // The loop device itself, and the file under it: both refused, by name.
    for origin in [&device.0, &image] {
        let out = ctl(&["cow", "merge", "--origin", p(origin), p(&f.cow)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let through = if origin == &image {
            format!(" through {}", device.0.display())
        } else {
            String::new()
        };
        assert_eq!(
            text(&out.stderr),
            format!(
                "snapbackctl: {}: is in use (mounted?){through}: nothing was written\n",
                origin.display()
            )
        );
        assert_eq!(text(&out.stdout), "");
        assert_eq!(sha256(&device.0), device_before, "a refused merge wrote to the mounted origin");
        assert_eq!(sha256(&f.cow), cow_before, "a refused merge wrote to the COW");
    }
    assert_eq!(std::fs::read(at.join("file")).unwrap(), b"kept");

    // Unmounted, the same device merges.
    mounted.unmount();
    let out = ctl(&["cow", "merge", "--origin", p(&device.0), p(&f.cow)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "merged {} chunks into {}; the store has 0 exceptions left\n",
            f.expected["exceptions"],
            device.0.display()
        )
    );
    assert_ne!(sha256(&device.0), device_before);
}

#[test]
fn merge_refuses_a_claimed_cow_and_a_locked_file() {
    require_root();
    let f = fixture(32);
    let origin_before = sha256(&f.origin);
    let cow_before = sha256(&f.cow);

    // A COW block device opened exclusively by someone else (as a live dm snapshot holds it).
    let cow_device = Loop::attach(&f.cow);
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(&cow_device.0)
        .unwrap();
    let out = ctl(&["cow", "merge", "--origin", p(&f.origin), p(&cow_device.0)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "snapbackctl: {}: is in use (mounted?): nothing was written\n",
            cow_device.0.display()
        )
    );
    // The COW file under that device: its loop device is claimed too.
    let out = ctl(&["cow", "merge", "--origin", p(&f.origin), p(&f.cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).ends_with(&format!(
            "{}: is in use (mounted?) through {}: nothing was written\n",
            f.cow.display(),
            cow_device.0.display()
        )),
        "{}",
        text(&out.stderr)
    );
    drop(holder);
    drop(cow_device);

    // A file another process has locked (flock: what a second `cow merge` holds).
    let lock = std::fs::File::open(&f.origin).unwrap();
    lock.lock().unwrap();
    let out = ctl(&["cow", "merge", "--origin", p(&f.origin), p(&f.cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is in use: another process holds a lock on it"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(sha256(&f.origin), origin_before, "a refused merge wrote to the origin");
    assert_eq!(sha256(&f.cow), cow_before, "a refused merge wrote to the COW");
    drop(lock);

    // Nothing held any more: the files merge, to the kernel's own result.
    let out = ctl(&["cow", "merge", "--origin", p(&f.origin), p(&f.cow)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sha256(&f.origin), f.expected["merged_origin_sha256"]);
}

#[test]
fn merge_through_unmounted_loop_devices_gives_the_kernels_merged_origin() {
    require_root();
    let f = fixture(8);
    let origin = Loop::attach(&f.origin);
    let cow = Loop::attach(&f.cow);
    let out = ctl(&["cow", "merge", "--origin", p(&origin.0), p(&cow.0)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sha256(&origin.0), f.expected["merged_origin_sha256"]);
    let v = json(&ctl(&["cow", "inspect", "--json", p(&cow.0)]));
    assert_eq!(v["exceptions"], 0);
}

#[test]
fn export_refuses_a_mounted_output_before_truncating_it() {
    require_root();
    let f = fixture(32);
    let image = f.dir.path().join("ext4.img");
    ext4_image(&f.origin, &image);
    let device = Loop::attach(&image);
    let at = f.dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let _mounted = Mounted::new(&device.0, &at);
    common::run_ok(&mut Command::new("sync"));
    let before = (sha256(&image), sha256(&device.0));
    for out_path in [&image, &device.0] {
        let out = ctl(&["cow", "export", "--origin", p(&f.origin), p(&f.cow), p(out_path)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(text(&out.stderr).contains(": is in use (mounted?)"), "{}", text(&out.stderr));
        assert_eq!(
            (sha256(&image), sha256(&device.0)),
            before,
            "a refused export wrote its output"
        );
    }
}
