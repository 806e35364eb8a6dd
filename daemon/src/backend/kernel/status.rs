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

    #[test]
    fn garbage_is_an_error_not_a_guess() {
        for line in ["", "12", "12/ 3", "a/b c", "1/2", "Invalidated", "1/2 x"] {
            assert!(parse(line).is_err(), "{line:?}");
        }
    }
}
