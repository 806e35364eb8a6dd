//! Throws random and half-structured bytes at everything that parses a COW, so CI covers
//! what the cargo-fuzz target (fuzz/) explores longer: no panic, and `open` and `check`
//! agree (open succeeds exactly when check finds nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use proptest::prelude::*;
use snapback_engine::io::MemIo;
use snapback_engine::offline;
use snapback_engine::origin::{Origin, SnapshotOptions};
use snapback_engine::store::PersistentStore;

/// A header for 1- or 2-sector chunks, then entries with small, collision-prone values.
fn structured() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(1u32), Just(2)],
        0..3u32,
        proptest::collection::vec((0..40u64, 0..80u64), 0..80),
        8..80usize,
        proptest::collection::vec((0..8192usize, any::<u8>()), 0..4),
    )
        .prop_map(|(cs, valid, entries, chunks, flips)| {
            let cb = cs as usize * 512;
            let mut bytes = vec![0u8; chunks * cb];
            bytes[0..4].copy_from_slice(&0x7041_6e53u32.to_le_bytes());
            bytes[4..8].copy_from_slice(&valid.min(1).to_le_bytes());
            bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
            bytes[12..16].copy_from_slice(&cs.to_le_bytes());
            let epa = cb / 16;
            for (i, (old, new)) in entries.into_iter().enumerate() {
                let at = (1 + (epa + 1) * (i / epa)) * cb + (i % epa) * 16;
                if at + 16 <= bytes.len() {
                    bytes[at..at + 8].copy_from_slice(&old.to_le_bytes());
                    bytes[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
                }
            }
            for (at, b) in flips {
                if at < bytes.len() {
                    bytes[at] = b;
                }
            }
            bytes
        })
}

fn exercise(bytes: Vec<u8>) {
    let cow = Arc::new(MemIo::from_bytes(bytes.clone()));
    let opened = PersistentStore::open_existing(cow.clone());
    let problems = offline::check(cow.as_ref()).unwrap();
    match &opened {
        Ok(store) => {
            assert!(problems.is_empty(), "open accepted what check rejects: {problems:?}");
            let _ = store.usage().unwrap().to_string();
            let _ = offline::inspect(cow.clone()).unwrap();
        }
        Err(e) => {
            assert!(!problems.is_empty(), "open rejected ({e}) what check accepts");
            if let Some(off) = e.corrupt_offset() {
                assert!(problems.iter().any(|p| p.offset == Some(off)), "{e} vs {problems:?}");
            }
        }
    }
    // Whatever opened must also merge into an origin without panicking, and end empty.
    if let Ok(store) = opened {
        if store.is_valid() {
            let origin = Arc::new(MemIo::new(64 * 1024));
            let o = Origin::new(origin.clone()).unwrap();
            let id = o.attach_store(store, SnapshotOptions::default());
            o.write(0, &[1u8; 4096]).unwrap();
            match o.start_merge(id) {
                Ok(()) => {
                    while !o.merge_step().unwrap().finished {}
                    assert_eq!(o.snapshot_status(id).unwrap().exceptions, 0);
                }
                // The origin write filled a tiny COW: the snapshot is invalid, nothing to merge.
                Err(snapback_engine::EngineError::Invalid) => {
                    assert_eq!(
                        o.snapshot_status(id).unwrap().state,
                        snapback_engine::origin::SnapshotState::Invalid
                    );
                }
                Err(e) => panic!("start_merge: {e}"),
            }
        }
    }
    // Opening for use (formatting allowed) must not panic either.
    let _ = PersistentStore::open(Arc::new(MemIo::from_bytes(bytes)), Some(1), 512);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        exercise(bytes);
    }

    #[test]
    fn structured_bytes_never_panic_and_open_agrees_with_check(bytes in structured()) {
        exercise(bytes);
    }
}

/// Replays the fuzzer's seeds and every input it ever crashed on (fuzz/ at the repo root).
#[test]
fn fuzz_seeds_and_regressions_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for dir in ["seeds/cow_open", "regressions/cow_open"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            exercise(std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed >= 6, "seeds and regressions found: {replayed}");
}
