//! Parsing of the status line the kernel prints for `snapshot` and `snapshot-merge` targets
//! (drivers/md/dm-snap.c, `snapshot_status`): `Invalid`, `Merge failed`, `Overflow`, or
//! `<allocated>/<total> <metadata>` in sectors (`Unknown` when the store has no usage figure).

use std::fmt;

/// What the kernel says about one snapshot (or merging snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSnapshotStatus {
    Usage { allocated: u64, total: u64, metadata: u64 },
    Invalid,
    Overflow,
    MergeFailed,
    Unknown,
}

impl KernelSnapshotStatus {
    /// A merging snapshot is done when only metadata is left allocated.
    pub fn merge_finished(&self) -> bool {
        matches!(self, KernelSnapshotStatus::Usage { allocated, metadata, .. } if allocated == metadata)
    }

    /// Bytes of the COW in use (exceptions and their metadata), as `UsedBytes` reports them;
    /// 0 when the kernel gives no figure. A figure beyond 2^64 bytes (no device is that
    /// large, but the line is the kernel's to print) saturates rather than panicking the
    /// monitor in a debug build or wrapping to a small number in a release build.
    pub fn used_bytes(&self) -> u64 {
        match self {
            KernelSnapshotStatus::Usage { allocated, .. } => allocated.saturating_mul(512),
            _ => 0,
        }
    }

    /// How much of a merge is done, from the merging snapshot's figures and the size of its
    /// COW in sectors: 1 minus the share of the COW still holding data to merge. Coarse (the
    /// kernel counts chunks not merged yet), and None without a usage figure.
    pub fn merge_done_fraction(&self, cow_sectors: u64) -> Option<f64> {
        match self {
            KernelSnapshotStatus::Usage { allocated, metadata, total } => {
                let data = allocated.saturating_sub(*metadata);
                let capacity = cow_sectors.max(*total).max(1);
                Some(1.0 - data as f64 / capacity as f64)
            }
            _ => None,
        }
    }

    /// Whether a snapshot's COW is filled above `threshold` (a share, 0..1): time to grow it.
    pub fn filled_above(&self, threshold: f64) -> bool {
        matches!(self, KernelSnapshotStatus::Usage { allocated, total, .. }
            if *total > 0 && *allocated as f64 / *total as f64 > threshold)
    }
}

/// A status line we do not understand: reported, never guessed at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised snapshot status line {0:?}")]
pub struct StatusParseError(pub String);

/// Parses the params part of one status line.
pub fn parse(params: &str) -> Result<KernelSnapshotStatus, StatusParseError> {
    let line = params.trim();
    match line {
        "Invalid" => return Ok(KernelSnapshotStatus::Invalid),
        "Merge failed" => return Ok(KernelSnapshotStatus::MergeFailed),
        "Overflow" => return Ok(KernelSnapshotStatus::Overflow),
        "Unknown" => return Ok(KernelSnapshotStatus::Unknown),
        _ => {}
    }
    let err = || StatusParseError(params.to_string());
    let (fraction, metadata) = line.split_once(' ').ok_or_else(err)?;
    let (allocated, total) = fraction.split_once('/').ok_or_else(err)?;
    let number = |s: &str| s.parse::<u64>().map_err(|_| err());
    Ok(KernelSnapshotStatus::Usage {
        allocated: number(allocated)?,
        total: number(total)?,
        metadata: number(metadata.trim())?,
    })
}

impl fmt::Display for KernelSnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSnapshotStatus::Usage { allocated, total, metadata } => {
                write!(f, "{allocated}/{total} {metadata}")
            }
            KernelSnapshotStatus::Invalid => f.write_str("Invalid"),
            KernelSnapshotStatus::Overflow => f.write_str("Overflow"),
            KernelSnapshotStatus::MergeFailed => f.write_str("Merge failed"),
            KernelSnapshotStatus::Unknown => f.write_str("Unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_the_kernel_prints() {
        assert_eq!(
            parse("64/204800 32"),
            Ok(KernelSnapshotStatus::Usage { allocated: 64, total: 204800, metadata: 32 })
        );
        assert_eq!(parse("Invalid"), Ok(KernelSnapshotStatus::Invalid));
        assert_eq!(parse("Overflow"), Ok(KernelSnapshotStatus::Overflow));
        assert_eq!(parse("Merge failed"), Ok(KernelSnapshotStatus::MergeFailed));
        assert_eq!(parse("Unknown"), Ok(KernelSnapshotStatus::Unknown));
        for line in ["64/204800 32", "Invalid", "Overflow", "Merge failed"] {
            assert_eq!(parse(line).map(|s| s.to_string()).as_deref(), Ok(line));
        }
    }

    #[test]
    fn merge_is_finished_when_only_metadata_is_allocated() {
        assert!(parse("32/2048 32").map(|s| s.merge_finished()).unwrap_or(false));
        assert!(!parse("96/2048 32").map(|s| s.merge_finished()).unwrap_or(true));
        assert!(!KernelSnapshotStatus::Invalid.merge_finished());
    }

    /// Found by the kernel_status fuzz target (fuzz/regressions/kernel_status/).
    #[test]
    fn used_bytes_of_a_huge_allocated_figure_saturate() {
        let huge = parse("65222002222204032/0004800 323");
        assert_eq!(huge.map(|s| s.used_bytes()), Ok(u64::MAX));
        assert_eq!(parse("64/204800 32").map(|s| s.used_bytes()), Ok(64 * 512));
        assert_eq!(KernelSnapshotStatus::Invalid.used_bytes(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_guess() {
        for line in ["", "12", "12/ 3", "a/b c", "1/2", "Invalidated", "1/2 x"] {
            assert!(parse(line).is_err(), "{line:?}");
        }
    }
}
