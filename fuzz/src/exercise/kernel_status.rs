//! What the kernel backend reads from device-mapper: the status line of a `snapshot` or
//! `snapshot-merge` target (`kernel::status`), with the figures the monitor derives from it
//! (space used, merge progress, when to grow a COW), and the dm uuids crash recovery takes
//! apart (`names::parse_uuid`).
//!
//! Input: NUL-separated texts: the status line, a COW size in sectors for the progress
//! figure (decimal, else 0), a dm uuid.

use snapbackd::backend::kernel::names;
use snapbackd::backend::kernel::status::{self, KernelSnapshotStatus};

pub fn run(data: &[u8]) {
    let parts = super::parts(data);
    let text = |i: usize| parts.get(i).and_then(|part| std::str::from_utf8(part).ok());
    if let Some(line) = text(0) {
        if let Ok(parsed) = status::parse(line) {
            let shown = parsed.to_string();
            assert_eq!(status::parse(&shown), Ok(parsed), "{line:?} shown as {shown:?}");
            let cow_sectors = text(1).and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0);
            let _ = parsed.used_bytes();
            match parsed.merge_done_fraction(cow_sectors) {
                Some(fraction) => {
                    assert!(matches!(parsed, KernelSnapshotStatus::Usage { .. }));
                    assert!(fraction <= 1.0 && !fraction.is_nan(), "progress {fraction}");
                    if parsed.merge_finished() {
                        assert_eq!(fraction, 1.0, "a finished merge is not all done");
                    }
                }
                None => assert!(!parsed.merge_finished()),
            }
            let _ = parsed.filled_above(0.8);
        }
    }
    if let Some(uuid) = text(2) {
        if let Some(parsed) = names::parse_uuid(uuid) {
            // What recovery recognises is a uuid of ours: written back, it reads the same.
            let written = names::dm_uuid(&parsed.pool_uuid, &parsed.volume, parsed.role);
            assert_eq!(names::parse_uuid(&written), Some(parsed), "{uuid:?} → {written:?}");
        }
    }
}
