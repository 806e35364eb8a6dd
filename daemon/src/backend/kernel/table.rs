//! Table lines for the targets of a volume's stack, as raw `(start, length, type, params)`
//! tuples: the `devicemapper` crate has typed tables for linear, thin and cache devices but not
//! for the snapshot family, so every line is built here, in one place, from typed inputs.

/// A block device as the kernel's table parser accepts it: `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One line of a dm table, in the shape `devicemapper::DM::table_load` takes.
pub type TableLine = (u64, u64, String, String);

/// A run of sectors on a device: where a COW extent lives in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start_sector: u64,
    pub sectors: u64,
}

/// A whole device mapped 1:1 (the `-real` device, or a volume with no snapshots).
pub fn linear(dev: DevNum, sectors: u64) -> Vec<TableLine> {
    vec![(0, sectors, "linear".into(), format!("{dev} 0"))]
}

/// A COW: the concatenation of its pool segments, in order.
pub fn concatenation(pool: DevNum, segments: &[Segment]) -> Vec<TableLine> {
    let mut start = 0;
    segments
        .iter()
        .map(|seg| {
            let line =
                (start, seg.sectors, "linear".to_string(), format!("{pool} {}", seg.start_sector));
            start += seg.sectors;
            line
        })
        .collect()
}

/// The origin while snapshots exist: writes copy old data into every snapshot first.
pub fn snapshot_origin(real: DevNum, sectors: u64) -> Vec<TableLine> {
    vec![(0, sectors, "snapshot-origin".into(), real.to_string())]
}

/// Whether a full COW invalidates the snapshot or only fails writes to it (`PO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    Invalidate,
    Overflow,
}

/// A persistent snapshot of `real` whose exceptions live on `cow`.
pub fn snapshot(
    real: DevNum,
    cow: DevNum,
    chunk_sectors: u32,
    on_full: OnFull,
    sectors: u64,
) -> Vec<TableLine> {
    let mode = match on_full {
        OnFull::Invalidate => "P",
        OnFull::Overflow => "PO",
    };
    vec![(0, sectors, "snapshot".into(), format!("{real} {cow} {mode} {chunk_sectors}"))]
}

/// The origin while a snapshot merges back into it; replaces `snapshot-origin`.
pub fn snapshot_merge(
    real: DevNum,
    cow: DevNum,
    chunk_sectors: u32,
    sectors: u64,
) -> Vec<TableLine> {
    vec![(0, sectors, "snapshot-merge".into(), format!("{real} {cow} P {chunk_sectors}"))]
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: DevNum = DevNum { major: 253, minor: 1 };
    const COW: DevNum = DevNum { major: 253, minor: 2 };

    #[test]
    fn lines_match_the_kernel_documentation() {
        assert_eq!(
            linear(DevNum { major: 8, minor: 16 }, 2048),
            vec![(0, 2048, "linear".into(), "8:16 0".into())]
        );
        assert_eq!(snapshot_origin(REAL, 100)[0].3, "253:1");
        assert_eq!(snapshot(REAL, COW, 32, OnFull::Invalidate, 100)[0].3, "253:1 253:2 P 32");
        assert_eq!(snapshot(REAL, COW, 8, OnFull::Overflow, 100)[0].3, "253:1 253:2 PO 8");
        let merge = snapshot_merge(REAL, COW, 128, 100);
        assert_eq!(merge[0].2, "snapshot-merge");
        assert_eq!(merge[0].3, "253:1 253:2 P 128");
    }

    #[test]
    fn cow_segments_are_laid_end_to_end() {
        let pool = DevNum { major: 7, minor: 3 };
        let lines = concatenation(
            pool,
            &[
                Segment { start_sector: 8192, sectors: 1024 },
                Segment { start_sector: 40960, sectors: 2048 },
            ],
        );
        assert_eq!(
            lines,
            vec![
                (0, 1024, "linear".into(), "7:3 8192".into()),
                (1024, 2048, "linear".into(), "7:3 40960".into()),
            ]
        );
    }
}
