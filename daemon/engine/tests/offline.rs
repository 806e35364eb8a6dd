//! The offline API: inspect, check, export, merge (resumable; refuses invalid stores).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use snapback_engine::io::{BlockIo, FileIo, MemIo, PowerLoss};
use snapback_engine::offline;
use snapback_engine::origin::{Origin, SnapshotOptions};
use snapback_engine::EngineError;

const CHUNK: usize = 16384;

/// An origin with a snapshot taken of `initial`, then some origin and snapshot writes.
/// Returns (origin device, cow, origin content at snapshot time with the snapshot's writes).
fn scenario() -> (Arc<MemIo>, Arc<MemIo>, Vec<u8>) {
    let initial: Vec<u8> = (0..32 * CHUNK).map(|i| (i % 251) as u8).collect();
    let dev = Arc::new(MemIo::from_bytes(initial.clone()));
    let cow = Arc::new(MemIo::new(64 * CHUNK as u64));
    let o = Origin::new(dev.clone()).unwrap();
    let id = o.attach_snapshot(cow.clone(), SnapshotOptions::default()).unwrap();
    o.write(0, &vec![0xee; 5 * CHUNK]).unwrap();
    o.write(17 * CHUNK as u64 + 7, &[0xdd; 9]).unwrap();
    o.snapshot_write(id, 30 * CHUNK as u64, &[0x11; 1000]).unwrap();
    o.flush().unwrap();
    let mut snap_view = initial;
    snap_view[30 * CHUNK..30 * CHUNK + 1000].fill(0x11);
    (dev, cow, snap_view)
}

#[test]
fn inspect_reports_kernel_usage_and_json_keys() {
    let (_dev, cow, _) = scenario();
    let r = offline::inspect(cow.clone()).unwrap();
    assert!(r.valid);
    assert_eq!((r.version, r.chunk_sectors, r.exceptions), (1, 32, 7));
    assert_eq!(r.usage_line(), "288/2048 64");
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "valid",
        "version",
        "chunk_sectors",
        "exceptions",
        "allocated_sectors",
        "total_sectors",
        "metadata_sectors",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    assert!(offline::check(cow.as_ref()).unwrap().is_empty());
    assert!(matches!(
        offline::inspect(Arc::new(MemIo::new(1 << 20))),
        Err(EngineError::NotFormatted)
    ));
}

#[test]
fn export_writes_the_snapshot_view() {
    let (dev, cow, want) = scenario();
    let out = MemIo::new(0);
    out.resize(want.len() as u64);
    offline::export(dev, cow, &out).unwrap();
    assert_eq!(out.durable_bytes(), want);
}

#[test]
fn export_to_a_file() {
    let (dev, cow, want) = scenario();
    let dir = std::env::temp_dir().join(format!("snapback-engine-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.img");
    std::fs::write(&path, b"").unwrap();
    let out = FileIo::open(&path, true).unwrap();
    offline::export(dev, cow, &out).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), want);
    assert_eq!(out.size_bytes().unwrap(), want.len() as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn merge_offline_reports_progress_and_empties_the_store() {
    let (dev, cow, want) = scenario();
    let mut seen = Vec::new();
    let end = offline::merge(dev.clone(), cow.clone(), &mut |p| seen.push(p)).unwrap();
    assert!(end.finished);
    assert_eq!(seen.first().map(|p| p.chunks_total), Some(7));
    assert_eq!(dev.durable_bytes(), want);
    let r = offline::inspect(cow).unwrap();
    assert_eq!(r.exceptions, 0);
    assert_eq!(r.allocated_sectors, r.metadata_sectors);
}

#[test]
fn interrupted_offline_merge_resumes() {
    for budget in 0..12 {
        let (dev, cow, want) = scenario();
        dev.die_after(budget);
        cow.die_after(budget);
        let first = offline::merge(dev.clone(), cow.clone(), &mut |_| {});
        dev.power_loss(PowerLoss::KeepSome(budget));
        cow.power_loss(PowerLoss::KeepSome(budget + 7));
        if first.is_err() {
            offline::merge(dev.clone(), cow.clone(), &mut |_| {}).unwrap();
        }
        assert_eq!(dev.durable_bytes(), want, "interrupted after {budget} writes/flushes");
    }
}

#[test]
fn merge_refuses_an_invalid_store_and_leaves_the_origin_untouched() {
    let (dev, cow, _) = scenario();
    cow.write_at(&0u32.to_le_bytes(), 4).unwrap(); // valid = 0
    let before = dev.current_bytes();
    let (_, w0, f0) = dev.counters();
    assert!(matches!(
        offline::merge(dev.clone(), cow.clone(), &mut |_| {}),
        Err(EngineError::Invalid)
    ));
    assert_eq!(dev.current_bytes(), before);
    assert_eq!(dev.counters().1, w0);
    assert_eq!(dev.counters().2, f0);
    let r = offline::inspect(cow.clone()).unwrap();
    assert!(!r.valid);
    assert_eq!(r.usage_line(), "Invalid");
    let out = MemIo::new(before.len() as u64);
    assert!(matches!(offline::export(dev, cow, &out), Err(EngineError::Invalid)));
}
