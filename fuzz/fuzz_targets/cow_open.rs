//! Everything the engine parses from a COW: `open_existing`, `check`, `inspect`, and for a
//! store that opens, a full merge into an origin. Asserts open and check agree.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use snapback_engine::io::MemIo;
use snapback_engine::offline;
use snapback_engine::origin::{Origin, SnapshotOptions};
use snapback_engine::store::PersistentStore;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 20 {
        return;
    }
    let cow = Arc::new(MemIo::from_bytes(data.to_vec()));
    let opened = PersistentStore::open_existing(cow.clone());
    let problems = offline::check(cow.as_ref()).expect("MemIo reads do not fail");
    assert_eq!(opened.is_ok(), problems.is_empty(), "open and check disagree: {problems:?}");
    let _ = offline::inspect(cow);
    if let Ok(store) = opened {
        if store.is_valid() {
            let origin = Arc::new(MemIo::new(256 << 10));
            let o = Origin::new(origin).expect("origin");
            let id = o.attach_store(store, SnapshotOptions::default());
            o.start_merge(id).expect("start merge");
            while !o.merge_step().expect("merge step").finished {}
        }
    }
});
