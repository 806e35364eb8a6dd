//! `snapbackd init`: formatting a pool, and refusing a device that already holds something.

use std::path::Path;
use std::sync::Arc;

use crate::pool::io::{BlockIo, FileIo};

use super::layout::{self, DATA_OFFSET, DEFAULT_EXTENT_BYTES};
use super::{Pool, PoolError, Registry};

/// How much of the start of a device must be zero for it to count as empty.
const PROBE_BYTES: u64 = 1 << 20;

/// Options of [`format_io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatOptions {
    /// Overwrite whatever the device holds.
    pub force: bool,
    /// Size of one extent of COW space (a multiple of 4096).
    pub extent_bytes: u64,
}

impl Default for FormatOptions {
    fn default() -> FormatOptions {
        FormatOptions { force: false, extent_bytes: DEFAULT_EXTENT_BYTES }
    }
}

/// Well-known signatures: (what, byte offset, magic bytes).
const SIGNATURES: &[(&str, u64, &[u8])] = &[
    ("a snapback pool", 0, &layout::MAGIC),
    ("a snapback pool", layout::SLOT_BYTES, &layout::MAGIC),
    ("an XFS filesystem", 0, b"XFSB"),
    ("a LUKS volume", 0, b"LUKS\xba\xbe"),
    ("an LVM physical volume", 512, b"LABELONE"),
    ("an LVM physical volume", 0, b"LABELONE"),
    ("a GPT partition table", 512, b"EFI PART"),
    ("an ext2/3/4 filesystem", 1080, &[0x53, 0xef]),
    ("a swap area", 4086, b"SWAPSPACE2"),
    ("a btrfs filesystem", 0x10040, b"_BHRfS_M"),
    ("a dm-snapshot COW store", 0, &[0x53, 0x6e, 0x41, 0x70]),
];

/// Describes what the device holds, or None when it looks unused (no known signature and an
/// all-zero first MiB).
pub fn detect_contents(dev: &dyn BlockIo) -> Result<Option<String>, PoolError> {
    let size = dev.size_bytes().map_err(|err| PoolError::io("reading device size", err))?;
    let mut probe = vec![0u8; size.min(PROBE_BYTES) as usize];
    dev.read_at(&mut probe, 0)
        .map_err(|err| PoolError::io("reading the start of the device", err))?;
    for (what, offset, magic) in SIGNATURES {
        let start = *offset as usize;
        if probe.get(start..start + magic.len()) == Some(*magic) {
            return Ok(Some(format!("it holds {what} (signature at byte {offset})")));
        }
    }
    if probe.get(510..512) == Some(&[0x55, 0xaa]) {
        return Ok(Some("it holds a partition table or boot sector (0x55aa at byte 510)".into()));
    }
    if let Some(first) = probe.iter().position(|&byte| byte != 0) {
        return Ok(Some(format!("its first MiB is not empty (non-zero byte at offset {first})")));
    }
    Ok(None)
}

/// Formats the pool at `path` with default options: see [`format_io`].
pub fn format(path: &Path, force: bool) -> Result<Pool, PoolError> {
    let dev = FileIo::open(path, true)
        .map_err(|err| PoolError::io(format!("opening {}", path.display()), err))?;
    format_io(Arc::new(dev), path, FormatOptions { force, ..FormatOptions::default() })
}

/// What to tell the administrator when the pool is a file with holes. Copies into a hole make
/// the file system allocate blocks, and every group commit's fdatasync then also commits that
/// allocation: first writes after a snapshot ran at 0.11–0.23 of the speed without one on a
/// sparse pool, against 0.53–0.70 on a written one (`measure_throughput`, docs/performance.md).
pub fn sparse_file_note(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let allocated = meta.blocks().saturating_mul(512);
    (meta.is_file() && allocated < meta.len()).then(|| {
        format!(
            "the pool file {} is sparse ({} of {} bytes allocated): copy-before-write into its holes \
             is several times slower. Write it out once before use, e.g. \
             dd if=/dev/zero of={} bs=1M count={} conv=fsync (then run init again)",
            path.display(),
            allocated,
            meta.len(),
            path.display(),
            meta.len().div_ceil(1 << 20)
        )
    })
}

/// Writes an empty registry to both slots of `dev` and returns the open pool. Refuses a device
/// that holds data unless `options.force`.
pub fn format_io(
    dev: Arc<dyn BlockIo>,
    path: &Path,
    options: FormatOptions,
) -> Result<Pool, PoolError> {
    if options.extent_bytes == 0 || !options.extent_bytes.is_multiple_of(4096) {
        return Err(PoolError::Invalid(format!(
            "extent size {} is not a positive multiple of 4096",
            options.extent_bytes
        )));
    }
    let size = dev.size_bytes().map_err(|err| PoolError::io("reading device size", err))?;
    let needed = DATA_OFFSET + 2 * options.extent_bytes;
    if size < needed {
        return Err(PoolError::TooSmall { path: path.to_path_buf(), size, needed });
    }
    if !options.force {
        if let Some(reason) = detect_contents(dev.as_ref())? {
            return Err(PoolError::HoldsData { path: path.to_path_buf(), reason });
        }
    }
    let extent_count = (size - DATA_OFFSET) / options.extent_bytes;
    let registry = Registry::new(options.extent_bytes, DATA_OFFSET, extent_count);
    // Both slots get a valid copy, so an old pool's copies can never win on the next load.
    let payload = super::serialize(&registry)?;
    for sequence in [1u64, 2] {
        super::write_slot(dev.as_ref(), sequence, &payload)?;
    }
    tracing::info!(pool = %path.display(), extent_count, extent_bytes = options.extent_bytes, "formatted pool");
    Pool::open_io(dev, path)
}
