//! Format edges of the store: area boundaries, skip_metadata, end marker, old_chunk 0,
//! first/last chunk, usage, invalidation, corrupt input with offsets, merge bookkeeping.

use super::*;
use crate::format::{pack_header, write_entry, Entry, Header};
use crate::io::MemIo;

/// 1-sector chunks: 512-byte chunks, 32 entries per area, areas at chunks 1, 34, 67, ...
const CS: u32 = 1;
const CB: u64 = 512;

fn mem(chunks: u64) -> Arc<MemIo> {
    Arc::new(MemIo::new(chunks * CB))
}

fn open(m: &Arc<MemIo>) -> Result<PersistentStore> {
    PersistentStore::open(m.clone(), Some(CS), 512)
}

fn commit_n(s: &mut PersistentStore, n: u64, old_base: u64) -> Vec<Entry> {
    let mut all = Vec::new();
    for i in 0..n {
        let new = s.allocate().unwrap();
        let e = Entry { old: old_base + i, new };
        s.commit(&[e]).unwrap();
        all.push(e);
    }
    all
}

#[test]
fn new_store_writes_kernel_header_and_reports_empty_usage() {
    let m = Arc::new(MemIo::new(1 << 20));
    let s = PersistentStore::open(m.clone(), None, 512).unwrap();
    assert_eq!(s.chunk_sectors(), 32);
    let disk = m.durable_bytes();
    assert_eq!(&disk[0..16], &[0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 32, 0, 0, 0]);
    assert!(disk[16..].iter().all(|&b| b == 0));
    assert_eq!(s.usage().unwrap().to_string(), "64/2048 64");
}

#[test]
fn on_disk_chunk_size_wins_over_requested() {
    let m = mem(64);
    drop(PersistentStore::open(m.clone(), Some(2), 512).unwrap());
    let s = PersistentStore::open(m.clone(), Some(8), 512).unwrap();
    assert_eq!(s.chunk_sectors(), 2);
}

#[test]
fn chunk_size_must_fit_the_block_sizes() {
    let m = mem(64);
    m.set_logical_block_size(4096);
    assert!(matches!(
        PersistentStore::open(m.clone(), Some(2), 512),
        Err(EngineError::BadChunkSize { .. })
    ));
    let m = mem(64);
    assert!(matches!(
        PersistentStore::open(m, Some(4), 4096),
        Err(EngineError::BadChunkSize { .. })
    ));
}

#[test]
fn filling_an_area_zeroes_the_next_and_skips_its_chunk() {
    let m = mem(200);
    let mut s = open(&m).unwrap();
    // Garbage where area 1 will be: it must be zeroed before area 0 points at it.
    m.write_at(&[0xff; 512], 34 * CB).unwrap();
    let entries = commit_n(&mut s, 32, 100);
    assert_eq!(entries.first().map(|e| e.new), Some(2));
    assert_eq!(entries.last().map(|e| e.new), Some(33));
    let disk = m.durable_bytes();
    assert!(disk[34 * 512..35 * 512].iter().all(|&b| b == 0), "area 1 zeroed");
    // Area 0 is full: its 32nd entry (the epa-th) is on disk.
    let (area0, full) = crate::format::parse_area(&disk[512..1024]);
    assert!(full);
    assert_eq!(area0[31], Entry { old: 131, new: 33 });
    assert_eq!(s.usage().unwrap().to_string(), "35/200 3", "next_free skipped chunk 34");
    let e = commit_n(&mut s, 1, 500);
    assert_eq!(e[0].new, 35);
    // Reopen: same table, same position.
    let s2 = open(&m).unwrap();
    assert_eq!(s2.exception_count(), 33);
    assert_eq!(s2.lookup(131), Some(33));
    assert_eq!(s2.lookup(500), Some(35));
    assert_eq!(s2.usage().unwrap().to_string(), "36/200 3");
}

#[test]
fn staged_exceptions_are_mapped_and_counted_at_once_and_written_by_one_commit() {
    let m = mem(200);
    let mut s = open(&m).unwrap();
    let entries: Vec<Entry> =
        (0..40).map(|i| Entry { old: 100 + i, new: s.allocate().unwrap() }).collect();
    let (_, w0, f0) = m.counters();
    s.stage(&entries[..10]).unwrap();
    s.stage(&entries[10..]).unwrap();
    assert_eq!((m.counters().1, m.counters().2), (w0, f0), "staging writes nothing");
    assert!(s.has_staged());
    assert_eq!(s.lookup(139), Some(entries[39].new));
    assert_eq!(s.exception_count(), 40);
    // Usage as if committed: area 0 fills, area 1 holds the other 8.
    assert_eq!(s.usage().unwrap().to_string(), "43/200 3");
    assert_eq!(open(&m).unwrap().exception_count(), 0, "nothing on disk yet");
    s.commit_staged().unwrap();
    assert!(!s.has_staged());
    assert_eq!(s.usage().unwrap().to_string(), "43/200 3");
    let (_, w1, f1) = m.counters();
    // Area 1 zeroed, area 0 between two flushes, area 1 between two flushes.
    assert_eq!((w1 - w0, f1 - f0), (3, 4));
    let s2 = open(&m).unwrap();
    assert_eq!(s2.exception_count(), 40);
    assert_eq!(s2.lookup(139), Some(entries[39].new));
}

#[test]
fn reopen_applies_skip_metadata() {
    let m = mem(200);
    let mut s = open(&m).unwrap();
    commit_n(&mut s, 32, 0);
    drop(s);
    let mut s = open(&m).unwrap();
    // max new = 33 → next_free 34 = area 1 → skipped to 35.
    assert_eq!(s.allocate().unwrap(), 35);
}

#[test]
fn old_chunk_zero_and_the_end_marker() {
    let m = mem(64);
    let mut s = open(&m).unwrap();
    let n = s.allocate().unwrap();
    s.commit(&[Entry { old: 0, new: n }]).unwrap();
    let disk = m.durable_bytes();
    assert_eq!(&disk[512..528], &[0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    assert!(disk[528..1024].iter().all(|&b| b == 0), "end marker follows");
    let s = open(&m).unwrap();
    assert_eq!(s.lookup(0), Some(2));
    assert_eq!(s.exception_count(), 1);
}

#[test]
fn last_chunk_of_the_cow_is_usable_then_no_space_until_it_grows() {
    let m = mem(6); // chunks 2..=5 are data
    let mut s = open(&m).unwrap();
    let got: Vec<u64> = (0..4).map(|_| s.allocate().unwrap()).collect();
    assert_eq!(got, vec![2, 3, 4, 5]);
    assert!(matches!(s.allocate(), Err(EngineError::NoSpace)));
    m.resize(8 * CB);
    assert_eq!(s.allocate().unwrap(), 6, "the COW size is re-read");
}

#[test]
fn allocation_refuses_to_fill_an_area_whose_successor_cannot_exist() {
    let m = mem(34); // area 1 would be chunk 34: past the end
    let mut s = open(&m).unwrap();
    for _ in 0..31 {
        s.allocate().unwrap();
    }
    assert!(matches!(s.allocate(), Err(EngineError::NoSpace)));
}

#[test]
fn rollback_undoes_uncommitted_allocations() {
    let m = mem(64);
    let mut s = open(&m).unwrap();
    let mark = s.allocation_mark();
    s.allocate().unwrap();
    s.allocate().unwrap();
    s.rollback_allocations(mark);
    assert_eq!(s.allocate().unwrap(), 2);
}

#[test]
fn invalid_store_opens_invalid_with_no_exceptions() {
    let m = mem(64);
    let mut s = open(&m).unwrap();
    commit_n(&mut s, 3, 0);
    s.invalidate().unwrap();
    let disk = m.durable_bytes();
    assert_eq!(&disk[4..8], &[0, 0, 0, 0]);
    let s = open(&m).unwrap();
    assert!(!s.is_valid());
    assert_eq!(s.exception_count(), 0);
    assert_eq!(s.lookup(0), None);
}

/// A valid header for 1-sector chunks followed by `entries` in area 0 (and on).
fn cow_with_entries(chunks: u64, entries: &[Entry]) -> Arc<MemIo> {
    let mut bytes = vec![0u8; (chunks * CB) as usize];
    let h = pack_header(&Header { valid: true, version: 1, chunk_sectors: CS });
    bytes[..512].copy_from_slice(&h);
    for (i, e) in entries.iter().enumerate() {
        let area = i as u64 / 32;
        let at = ((1 + 33 * area) * CB) as usize;
        write_entry(&mut bytes[at..at + 512], i % 32, *e);
    }
    Arc::new(MemIo::from_bytes(bytes))
}

/// Entries, the offset the error must name, and which error it must be.
type CorruptCase = (Vec<Entry>, u64, fn(&EngineError) -> bool);

#[test]
fn corrupt_entries_are_rejected_with_their_offset() {
    let cases: Vec<CorruptCase> = vec![
        (vec![Entry { old: 1, new: 2 }, Entry { old: 2, new: 1 }], 528, |e| {
            matches!(e, EngineError::EntryAtMetadata { new_chunk: 1, .. })
        }),
        (vec![Entry { old: 1, new: 34 }], 512, |e| {
            matches!(e, EngineError::EntryAtMetadata { new_chunk: 34, .. })
        }),
        (vec![Entry { old: 1, new: 2 }, Entry { old: 5, new: 64 }], 528, |e| {
            matches!(e, EngineError::EntryPastEnd { new_chunk: 64, cow_chunks: 64, .. })
        }),
        (
            vec![Entry { old: 7, new: 2 }, Entry { old: 3, new: 4 }, Entry { old: 7, new: 3 }],
            544,
            |e| matches!(e, EngineError::DuplicateOldChunk { old_chunk: 7, first_offset: 512, .. }),
        ),
        (vec![Entry { old: 1, new: 5 }, Entry { old: 2, new: 5 }], 528, |e| {
            matches!(e, EngineError::SharedNewChunk { new_chunk: 5, first_offset: 512, .. })
        }),
    ];
    for (entries, offset, is) in cases {
        let m = cow_with_entries(64, &entries);
        let err = open(&m).unwrap_err();
        assert!(is(&err), "{entries:?}: {err}");
        assert_eq!(err.corrupt_offset(), Some(offset), "{err}");
        let problems = PersistentStore::check(m.as_ref()).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].offset, Some(offset));
    }
}

#[test]
fn full_last_area_without_room_for_the_next_is_rejected() {
    let entries: Vec<Entry> = (0..32).map(|i| Entry { old: i, new: 2 + i }).collect();
    let m = cow_with_entries(34, &entries);
    let err = open(&m).unwrap_err();
    assert!(matches!(err, EngineError::AreaPastEnd { offset: 17408, .. }), "{err}");
}

#[test]
fn header_corruption_is_rejected() {
    let m = cow_with_entries(64, &[]);
    m.write_at(&2u32.to_le_bytes(), 8).unwrap();
    assert!(matches!(open(&m), Err(EngineError::UnknownVersion { offset: 8, version: 2 })));
    let m = cow_with_entries(64, &[]);
    m.write_at(&3u32.to_le_bytes(), 12).unwrap();
    assert!(matches!(open(&m), Err(EngineError::BadChunkSize { offset: 12, .. })));
    let m = mem(64);
    m.write_at(&[1], 700).unwrap();
    let err = PersistentStore::open(m.clone(), Some(2), 512).unwrap_err();
    assert!(matches!(err, EngineError::NotZeroed { offset: 700 }), "{err}");
    assert!(m.durable_bytes()[..512].iter().all(|&b| b == 0), "nothing formatted");
    let m = mem(64);
    m.write_at(b"XXXX", 0).unwrap();
    assert!(matches!(open(&m), Err(EngineError::WrongMagic { offset: 0, .. })));
    assert!(matches!(PersistentStore::open_existing(mem(64)), Err(EngineError::NotFormatted)));
}

#[test]
fn check_reports_every_problem() {
    let m = cow_with_entries(
        64,
        &[Entry { old: 1, new: 1 }, Entry { old: 2, new: 99 }, Entry { old: 3, new: 4 }],
    );
    let problems = PersistentStore::check(m.as_ref()).unwrap();
    let offsets: Vec<_> = problems.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![Some(512), Some(528)]);
    let clean = cow_with_entries(64, &[Entry { old: 1, new: 2 }]);
    assert!(PersistentStore::check(clean.as_ref()).unwrap().is_empty());
}

#[test]
fn merge_takes_runs_from_the_tail_and_leaves_a_prefix() {
    let m = mem(200);
    let mut s = open(&m).unwrap();
    // old 10,11,12 → new 2,3,4 (one run), then old 50 → 5, then old 13 → 6.
    let mut entries = Vec::new();
    for old in [10u64, 11, 12, 50, 13] {
        let new = s.allocate().unwrap();
        entries.push(Entry { old, new });
    }
    s.commit(&entries).unwrap();
    let runs = s.prepare_merge(100).unwrap();
    assert_eq!(
        runs,
        vec![
            MergeRun { old: 13, new: 6, count: 1 },
            MergeRun { old: 50, new: 5, count: 1 },
            MergeRun { old: 10, new: 2, count: 3 }
        ]
    );
    let runs = s.prepare_merge(2).unwrap();
    assert_eq!(runs.len(), 2);
    s.commit_merge(2).unwrap();
    assert_eq!(s.exception_count(), 3);
    assert_eq!(s.lookup(13), None);
    let reopened = open(&m).unwrap();
    assert_eq!(reopened.exception_count(), 3);
    assert_eq!(reopened.lookup(12), Some(4));
    assert_eq!(reopened.usage().unwrap().to_string(), "5/200 2");
    let runs = s.prepare_merge(100).unwrap();
    assert_eq!(runs, vec![MergeRun { old: 10, new: 2, count: 3 }]);
    s.commit_merge(3).unwrap();
    assert!(s.prepare_merge(100).unwrap().is_empty());
    let u = s.usage().unwrap();
    assert_eq!(u.allocated_sectors, u.metadata_sectors, "merged: allocated == metadata");
}

#[test]
fn merge_walks_back_across_areas() {
    let m = mem(200);
    let mut s = open(&m).unwrap();
    commit_n(&mut s, 40, 0); // area 0 full (news 2..=33), area 1 holds 8 (news 35..=42)
    let mut merged = 0;
    loop {
        let runs = s.prepare_merge(5).unwrap();
        if runs.is_empty() {
            break;
        }
        let n: u64 = runs.iter().map(|r| r.count).sum();
        s.commit_merge(n).unwrap();
        merged += n;
        let again = open(&m).unwrap();
        assert_eq!(again.exception_count(), 40 - merged, "durable after each step");
        for old in 0..(40 - merged) {
            assert!(again.lookup(old).is_some(), "remaining table is a prefix");
        }
    }
    assert_eq!(merged, 40);
    assert_eq!(s.usage().unwrap().to_string(), "2/200 2");
}
