//! The engine against COWs the real kernel wrote (tests/fixtures/, made by generate.sh in a VM
//! with Linux 6.1's dm-snapshot; see tests/fixtures/README.md).
//!
//! For each chunk size (4, 16, 64 KiB): `inspect` reports the kernel's own status numbers,
//! `export` gives the kernel's snapshot device byte for byte, and the offline `merge` leaves the
//! origin the kernel's `snapshot-merge` left. The expected bytes are rebuilt here by replaying
//! the recorded workload over the recorded origin, and tied to the kernel by its sha256s.
//!
//! The fixtures are zstd-compressed; they are decompressed with the `zstd` command
//! (tools/install-deps installs it) and hashed with `sha256sum`, so the engine needs no extra
//! crates for its tests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use snapback_engine::io::MemIo;
use snapback_engine::offline;

const SECTOR: usize = 512;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn unzstd(path: &Path) -> Vec<u8> {
    let out = Command::new("zstd")
        .arg("-dc")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running zstd for {} (install zstd): {e}", path.display()));
    assert!(
        out.status.success(),
        "zstd -dc {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running sha256sum");
    child.stdin.take().expect("sha256sum stdin").write_all(bytes).expect("feeding sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// `key=value` lines of expected.txt (comments with #).
fn expected(dir: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join("expected.txt")).expect("reading expected.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn number(exp: &HashMap<String, String>, key: &str) -> u64 {
    exp.get(key).unwrap_or_else(|| panic!("expected.txt has no {key}")).parse().expect("a number")
}

/// First differing sector, to say *where* two images disagree rather than only that they do.
fn assert_same_image(what: &str, want: &[u8], got: &[u8]) {
    assert_eq!(want.len(), got.len(), "{what}: sizes differ");
    if let Some(i) = want.chunks(SECTOR).zip(got.chunks(SECTOR)).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at sector {i}: want {:?}…, got {:?}…",
            String::from_utf8_lossy(&want[i * SECTOR..i * SECTOR + 40]),
            String::from_utf8_lossy(&got[i * SECTOR..i * SECTOR + 40]),
        );
    }
}

struct Fixture {
    exp: HashMap<String, String>,
    cow: Vec<u8>,
    origin_final: Vec<u8>,
    /// The snapshot's view, rebuilt from origin-before + the workload's snapshot writes.
    model_view: Vec<u8>,
}

fn load(chunk_sectors: u32) -> Fixture {
    let dir = fixtures().join(format!("kernel-cow-chunk{chunk_sectors}"));
    let exp = expected(&dir);
    assert_eq!(number(&exp, "chunk_sectors"), u64::from(chunk_sectors));
    let cow = unzstd(&dir.join("cow.img.zst"));
    let origin_final = unzstd(&dir.join("origin-final.img.zst"));
    assert_eq!(
        sha256(&cow),
        exp["cow_sha256"],
        "cow.img.zst does not decompress to the recorded COW"
    );
    assert_eq!(sha256(&origin_final), exp["origin_final_sha256"]);
    assert_eq!(cow.len() as u64, number(&exp, "cow_sectors") * SECTOR as u64);

    // Replay: origin writes give the final origin, snapshot writes give the snapshot's view.
    let before = unzstd(&fixtures().join("origin-before.img.zst"));
    assert_eq!(sha256(&before), exp["origin_before_sha256"]);
    let pool = unzstd(&fixtures().join("written-data.pool.zst"));
    let workload =
        String::from_utf8(unzstd(&dir.join("workload.txt.zst"))).expect("utf-8 workload");
    let (mut model_origin, mut model_view) = (before.clone(), before);
    let mut writes = 0;
    for line in workload.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [kind, at, count, from] = f[..] else { panic!("bad workload line {line:?}") };
        let n = |s: &str| s.parse::<usize>().expect("a number") * SECTOR;
        let (at, len, from) = (n(at), n(count), n(from));
        let target = if kind == "origin" { &mut model_origin } else { &mut model_view };
        target[at..at + len].copy_from_slice(&pool[from..from + len]);
        writes += 1;
    }
    assert_eq!(writes, number(&exp, "writes"));
    assert_same_image("replayed origin vs the kernel's final origin", &origin_final, &model_origin);
    assert_eq!(
        sha256(&model_view),
        exp["snapshot_view_sha256"],
        "replay disagrees with the kernel's snapshot device"
    );
    Fixture { exp, cow, origin_final, model_view }
}

fn check_inspect(chunk_sectors: u32) {
    let f = load(chunk_sectors);
    let report = offline::inspect(Arc::new(MemIo::from_bytes(f.cow.clone()))).expect("inspect");
    assert!(report.valid);
    assert_eq!(report.chunk_sectors, chunk_sectors);
    assert_eq!(report.exceptions, number(&f.exp, "exceptions"));
    // the kernel's status line is "0 <len> snapshot <usage>"
    let status = &f.exp["status"];
    let kernel_usage = status.splitn(4, ' ').nth(3).expect("status has a usage part");
    assert_eq!(report.usage_line(), kernel_usage, "kernel status: {status}");
    assert_eq!(report.allocated_sectors, number(&f.exp, "allocated_sectors"));
    assert_eq!(report.total_sectors, number(&f.exp, "total_sectors"));
    assert_eq!(report.metadata_sectors, number(&f.exp, "metadata_sectors"));
    let problems = offline::check(&MemIo::from_bytes(f.cow)).expect("check");
    assert!(problems.is_empty(), "check found problems in a kernel-written COW: {problems:?}");
}

fn check_export(chunk_sectors: u32) {
    let f = load(chunk_sectors);
    let origin = Arc::new(MemIo::from_bytes(f.origin_final.clone()));
    let out = MemIo::new(f.origin_final.len() as u64);
    offline::export(origin, Arc::new(MemIo::from_bytes(f.cow)), &out).expect("export");
    let got = out.current_bytes();
    assert_same_image("export vs the kernel's snapshot device", &f.model_view, &got);
    assert_eq!(sha256(&got), f.exp["snapshot_view_sha256"]);
}

fn check_merge(chunk_sectors: u32) {
    let f = load(chunk_sectors);
    let origin = Arc::new(MemIo::from_bytes(f.origin_final.clone()));
    let cow = Arc::new(MemIo::from_bytes(f.cow));
    let mut steps = 0;
    let last = offline::merge(origin.clone(), cow.clone(), &mut |_| steps += 1).expect("merge");
    assert!(last.finished && last.chunks_left == 0, "{last:?}");
    assert_eq!(last.chunks_total, number(&f.exp, "exceptions"));
    let merged = origin.durable_bytes();
    assert_same_image("offline merge vs the kernel's merge", &f.model_view, &merged);
    assert_eq!(sha256(&merged), f.exp["merged_origin_sha256"]);
    // Like the kernel's merged COW (its status shows allocated == metadata): nothing left.
    let after = offline::inspect(cow).expect("inspect after merge");
    assert_eq!(after.exceptions, 0, "{after:?}");
    assert_eq!(after.allocated_sectors, after.metadata_sectors, "{after:?}");
}

/// A kernel merge cut by a power loss half-way (VM boot 2 of kernel-written-cows): the engine
/// reads the half-merged COW and finishes the merge where the kernel left off, ending with the
/// origin the kernel's own (uninterrupted, and resumed) merge gave.
#[test]
fn offline_merge_finishes_a_kernel_merge_cut_by_power_loss() {
    let f = load(8);
    let dir = fixtures().join("kernel-cow-chunk8");
    let cow = unzstd(&dir.join("mid-merge-cow.img.zst"));
    let origin = unzstd(&dir.join("mid-merge-origin.img.zst"));
    assert_eq!(sha256(&cow), f.exp["mid_merge_cow_sha256"]);
    assert_eq!(sha256(&origin), f.exp["mid_merge_origin_sha256"]);
    // the cut really was mid-way: the origin is neither the final one nor the merged one
    assert_ne!(origin, f.origin_final);
    assert_ne!(origin, f.model_view);

    let cow = Arc::new(MemIo::from_bytes(cow));
    let report = offline::inspect(cow.clone()).expect("inspect the half-merged COW");
    assert!(report.valid);
    let total = number(&f.exp, "exceptions");
    assert!(report.exceptions > 0 && report.exceptions < total, "{report:?} (unmerged: {total})");

    let origin = Arc::new(MemIo::from_bytes(origin));
    let last = offline::merge(origin.clone(), cow.clone(), &mut |_| {}).expect("resume the merge");
    assert!(last.finished, "{last:?}");
    let merged = origin.durable_bytes();
    assert_same_image("engine-finished merge vs the kernel's merge", &f.model_view, &merged);
    assert_eq!(sha256(&merged), f.exp["merged_origin_sha256"]);
    let after = offline::inspect(cow).expect("inspect after merge");
    assert_eq!(after.exceptions, 0, "{after:?}");
}

/// A COW the kernel invalidated (filled by origin writes): the engine sees it invalid, as the
/// kernel's status "Invalid" says, and refuses to export or merge it without touching the origin.
#[test]
fn kernel_invalidated_cow_is_invalid_for_the_engine() {
    let dir = fixtures().join("kernel-invalid-cow");
    let exp = expected(&dir);
    let cow = unzstd(&dir.join("cow.img.zst"));
    assert_eq!(sha256(&cow), exp["cow_sha256"]);
    let report = offline::inspect(Arc::new(MemIo::from_bytes(cow.clone()))).expect("inspect");
    assert!(!report.valid, "{report:?}");
    assert_eq!(report.chunk_sectors, 8);
    let kernel_usage = exp["status"].splitn(4, ' ').nth(3).expect("status usage part");
    assert_eq!(report.usage_line(), kernel_usage);

    let origin_bytes = unzstd(&fixtures().join("origin-before.img.zst"));
    let origin = Arc::new(MemIo::from_bytes(origin_bytes.clone()));
    let out = MemIo::new(origin_bytes.len() as u64);
    let cow_dev = Arc::new(MemIo::from_bytes(cow));
    assert!(
        offline::export(origin.clone(), cow_dev.clone(), &out).is_err(),
        "export of an invalid COW"
    );
    assert!(
        offline::merge(origin.clone(), cow_dev, &mut |_| {}).is_err(),
        "merge of an invalid COW"
    );
    assert_eq!(origin.current_bytes(), origin_bytes, "a refused merge must not touch the origin");
}

#[test]
fn inspect_matches_kernel_status_4k() {
    check_inspect(8);
}
#[test]
fn inspect_matches_kernel_status_16k() {
    check_inspect(32);
}
#[test]
fn inspect_matches_kernel_status_64k() {
    check_inspect(128);
}
#[test]
fn export_equals_kernel_snapshot_device_4k() {
    check_export(8);
}
#[test]
fn export_equals_kernel_snapshot_device_16k() {
    check_export(32);
}
#[test]
fn export_equals_kernel_snapshot_device_64k() {
    check_export(128);
}
#[test]
fn offline_merge_equals_kernel_merge_4k() {
    check_merge(8);
}
#[test]
fn offline_merge_equals_kernel_merge_16k() {
    check_merge(32);
}
#[test]
fn offline_merge_equals_kernel_merge_64k() {
    check_merge(128);
}

/// The other direction: the engine writes COWs from the same workloads, for the VM scenario
/// `tests/vm/scenarios/engine-written-cows` to load into the kernel's `snapshot … P` target.
/// Not a check by itself (the kernel is the judge), hence ignored; the scenario runs it as
/// `SNAPBACK_ENGINE_COW_DIR=DIR cargo test -p snapback-engine --test kernel_fixtures -- --ignored make_engine_cows_for_vm`.
/// Per chunk size it writes DIR/chunkN/{origin.img,cow.img} and DIR/expected.env (the engine's
/// snapshot view, origin, merge result as sha256s, and its usage line); for 4 KiB chunks also
/// DIR/chunk8/half-merged-{origin,cow}.img, the engine's merge stopped half-way; and
/// DIR/invalid/{origin,cow}.img, a 64 KiB COW the engine invalidated (filled by origin writes).
#[test]
#[ignore]
fn make_engine_cows_for_vm() {
    use snapback_engine::origin::{Origin, SnapshotOptions};
    use snapback_engine::store::PersistentStore;
    let dir = PathBuf::from(
        std::env::var_os("SNAPBACK_ENGINE_COW_DIR")
            .expect("set SNAPBACK_ENGINE_COW_DIR to an output directory"),
    );
    let mut env = String::new();
    for chunk_sectors in [8u32, 32, 128] {
        let f = load(chunk_sectors);
        let before = unzstd(&fixtures().join("origin-before.img.zst"));
        let pool = unzstd(&fixtures().join("written-data.pool.zst"));
        let workload = String::from_utf8(unzstd(
            &fixtures().join(format!("kernel-cow-chunk{chunk_sectors}/workload.txt.zst")),
        ))
        .expect("utf-8 workload");
        let origin_dev = Arc::new(MemIo::from_bytes(before));
        let cow_dev = Arc::new(MemIo::new(f.cow.len() as u64));
        let origin = Origin::new(origin_dev.clone()).expect("origin");
        let opts = SnapshotOptions { chunk_sectors: Some(chunk_sectors), overflow: false };
        let id = origin.attach_snapshot(cow_dev.clone(), opts).expect("attach a new snapshot");
        for line in workload.lines() {
            let n: Vec<usize> = line
                .split_whitespace()
                .skip(1)
                .map(|s| s.parse::<usize>().expect("a number") * SECTOR)
                .collect();
            let data = &pool[n[2]..n[2] + n[1]];
            if line.starts_with("origin") {
                origin.write(n[0] as u64, data).expect("origin write");
            } else {
                origin.snapshot_write(id, n[0] as u64, data).expect("snapshot write");
            }
        }
        let mut view = vec![0u8; f.origin_final.len()];
        origin.snapshot_read(id, 0, &mut view).expect("snapshot read");
        let status = origin.snapshot_status(id).expect("status");
        let usage = status.usage.expect("a valid snapshot has usage");
        origin.flush().expect("flush");
        let (origin_bytes, cow_bytes) = (origin_dev.durable_bytes(), cow_dev.durable_bytes());
        // the engine's own merge of what it wrote, to compare with the kernel's merge in the VM
        let merged = Arc::new(MemIo::from_bytes(origin_bytes.clone()));
        offline::merge(merged.clone(), Arc::new(MemIo::from_bytes(cow_bytes.clone())), &mut |_| {})
            .expect("merge");

        let out = dir.join(format!("chunk{chunk_sectors}"));
        std::fs::create_dir_all(&out).expect("creating the output directory");
        std::fs::write(out.join("origin.img"), &origin_bytes).expect("writing origin.img");
        std::fs::write(out.join("cow.img"), &cow_bytes).expect("writing cow.img");
        if chunk_sectors == 8 {
            // the engine's merge of its COW stopped about half-way (state flushed between two
            // steps, as a daemon stopping mid-rollback leaves it), for the kernel to finish
            let half_origin = Arc::new(MemIo::from_bytes(origin_bytes.clone()));
            let half_cow = Arc::new(MemIo::from_bytes(cow_bytes.clone()));
            let o = Origin::new(half_origin.clone()).expect("origin");
            let store =
                PersistentStore::open_existing(half_cow.clone()).expect("open the engine's COW");
            let id = o.attach_store(store, SnapshotOptions::default());
            o.set_merge_step_bytes(64 << 10);
            o.start_merge(id).expect("start merge");
            loop {
                let p = o.merge_step().expect("merge step");
                assert!(!p.finished, "stopped too late: {p:?}");
                if p.chunks_left * 2 <= p.chunks_total {
                    break;
                }
            }
            o.flush().expect("flush");
            std::fs::write(out.join("half-merged-origin.img"), half_origin.durable_bytes())
                .expect("writing");
            std::fs::write(out.join("half-merged-cow.img"), half_cow.durable_bytes())
                .expect("writing");
        }
        let cs = chunk_sectors;
        env.push_str(&format!(
            "ENGINE_USAGE_{cs}='{}/{} {}'\nENGINE_EXCEPTIONS_{cs}={}\nENGINE_VIEW_{cs}={}\nENGINE_ORIGIN_{cs}={}\nENGINE_MERGED_{cs}={}\nENGINE_COW_EQUALS_KERNEL_COW_{cs}={}\n",
            usage.allocated_sectors,
            usage.total_sectors,
            usage.metadata_sectors,
            status.exceptions,
            sha256(&view),
            sha256(&origin_bytes),
            sha256(&merged.durable_bytes()),
            cow_bytes == f.cow,
        ));
    }
    // a COW the engine invalidated the way the kernel does: origin writes past its capacity
    let origin_dev = Arc::new(MemIo::from_bytes(unzstd(&fixtures().join("origin-before.img.zst"))));
    let cow_dev = Arc::new(MemIo::new(64 << 10));
    let origin = Origin::new(origin_dev.clone()).expect("origin");
    let opts = SnapshotOptions { chunk_sectors: Some(8), overflow: false };
    let id = origin.attach_snapshot(cow_dev.clone(), opts).expect("attach");
    origin.write(0, &vec![0u8; 256 << 10]).expect("origin writes go on when the snapshot fills up");
    let status = origin.snapshot_status(id).expect("status");
    assert!(status.usage.is_none(), "the engine did not invalidate: {status:?}");
    origin.flush().expect("flush");
    let out = dir.join("invalid");
    std::fs::create_dir_all(&out).expect("creating the output directory");
    std::fs::write(out.join("origin.img"), origin_dev.durable_bytes()).expect("writing origin.img");
    std::fs::write(out.join("cow.img"), cow_dev.durable_bytes()).expect("writing cow.img");
    std::fs::write(dir.join("expected.env"), env).expect("writing expected.env");
}
