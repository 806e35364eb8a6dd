//! The kernel's persistent exception store format (drivers/md/dm-snap-persistent.c), as pure
//! functions over byte buffers: parse, then validate; pack for writing.
//!
//! Layout, in chunks of `chunk_sectors * 512` bytes:
//! - chunk 0: header, four little-endian u32 (magic, valid, version, chunk size in sectors),
//!   the rest zero;
//! - metadata area `a` at chunk `1 + (epa + 1) * a`, holding `epa = chunk_bytes / 16`
//!   entries of two little-endian u64 `{old_chunk, new_chunk}`; `new_chunk == 0` ends the
//!   table; a full area continues in the next one;
//! - every other chunk holds exception data.

use crate::error::{EngineError, Result};

/// Header magic, "SnAp" read as a little-endian u32.
pub const SNAP_MAGIC: u32 = 0x7041_6e53;
/// The only on-disk version the kernel knows.
pub const DISK_VERSION: u32 = 1;
pub const SECTOR_BYTES: u64 = 512;
/// Default chunk size: 32 sectors = 16 KiB.
pub const DEFAULT_CHUNK_SECTORS: u32 = 32;
/// Largest chunk size the kernel accepts (`chunk_size <= INT_MAX >> SECTOR_SHIFT`, power of two).
pub const MAX_CHUNK_SECTORS: u64 = 1 << 21;
/// Bytes of one `{old_chunk, new_chunk}` entry.
pub const ENTRY_BYTES: usize = 16;
/// First data chunk of a new store (chunk 0 = header, chunk 1 = area 0).
pub const FIRST_DATA_CHUNK: u64 = 2;

/// The header fields of an existing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub valid: bool,
    pub version: u32,
    pub chunk_sectors: u32,
}

/// What chunk 0 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderState {
    /// All zero: a fresh COW, to be formatted.
    New,
    Existing(Header),
}

/// One exception: origin chunk `old` lives in COW chunk `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub old: u64,
    pub new: u64,
}

fn le32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn le64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Checks a chunk size in sectors: non-zero, power of two, within the kernel's limit, and a
/// multiple of the logical block size (given in bytes) of every device involved.
/// `offset` is where the value was read (0 for a requested size).
pub fn validate_chunk_sectors(chunk_sectors: u64, block_sizes: &[u32], offset: u64) -> Result<()> {
    let bad = |reason| EngineError::BadChunkSize { offset, chunk_sectors, reason };
    if chunk_sectors == 0 {
        return Err(bad("zero"));
    }
    if !chunk_sectors.is_power_of_two() {
        return Err(bad("not a power of two"));
    }
    if chunk_sectors > MAX_CHUNK_SECTORS {
        return Err(bad("larger than the kernel's limit of 2^21 sectors"));
    }
    for &bs in block_sizes {
        let bs_sectors = (u64::from(bs) / SECTOR_BYTES).max(1);
        if !chunk_sectors.is_multiple_of(bs_sectors) {
            return Err(bad("not a multiple of a device's logical block size"));
        }
    }
    Ok(())
}

/// Parses the first sector of chunk 0 (at least 16 bytes). `rest_is_zero` tells whether the
/// remaining bytes of chunk 0 that the caller read are all zero; it decides between a new
/// store and a damaged one when the magic is 0.
pub fn parse_header(sector: &[u8], rest_is_zero: bool) -> Result<HeaderState> {
    let magic = le32(sector, 0);
    if magic == 0 {
        if rest_is_zero && sector.iter().all(|&b| b == 0) {
            return Ok(HeaderState::New);
        }
        let offset = sector.iter().position(|&b| b != 0).unwrap_or(sector.len()) as u64;
        return Err(EngineError::NotZeroed { offset });
    }
    if magic != SNAP_MAGIC {
        return Err(EngineError::WrongMagic { offset: 0, found: magic });
    }
    let valid = le32(sector, 4);
    let version = le32(sector, 8);
    if version != DISK_VERSION {
        return Err(EngineError::UnknownVersion { offset: 8, version });
    }
    let chunk_sectors = le32(sector, 12);
    validate_chunk_sectors(u64::from(chunk_sectors), &[], 12)?;
    Ok(HeaderState::Existing(Header { valid: valid != 0, version, chunk_sectors }))
}

/// Packs a header into a zeroed buffer of one chunk.
pub fn pack_header(header: &Header) -> Vec<u8> {
    let mut buf = vec![0u8; chunk_bytes(header.chunk_sectors) as usize];
    buf[0..4].copy_from_slice(&SNAP_MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&u32::from(header.valid).to_le_bytes());
    buf[8..12].copy_from_slice(&header.version.to_le_bytes());
    buf[12..16].copy_from_slice(&header.chunk_sectors.to_le_bytes());
    buf
}

pub fn chunk_bytes(chunk_sectors: u32) -> u64 {
    u64::from(chunk_sectors) * SECTOR_BYTES
}

/// Exceptions per metadata area.
pub fn exceptions_per_area(chunk_sectors: u32) -> u64 {
    chunk_bytes(chunk_sectors) / ENTRY_BYTES as u64
}

/// Chunk number of metadata area `area`.
pub fn area_location(epa: u64, area: u64) -> u64 {
    1 + (epa + 1) * area
}

/// Whether `chunk` holds the header or a metadata area.
pub fn is_metadata_chunk(epa: u64, chunk: u64) -> bool {
    chunk == 0 || (chunk - 1).is_multiple_of(epa + 1)
}

/// The kernel's `skip_metadata`: the next free chunk never lands on a metadata area.
pub fn skip_metadata(epa: u64, next_free: u64) -> u64 {
    if next_free % (epa + 1) == 1 {
        next_free + 1
    } else {
        next_free
    }
}

/// Reads entry `index` of an area buffer.
pub fn read_entry(area: &[u8], index: usize) -> Entry {
    let at = index * ENTRY_BYTES;
    Entry { old: le64(area, at), new: le64(area, at + 8) }
}

/// Writes entry `index` of an area buffer.
pub fn write_entry(area: &mut [u8], index: usize, entry: Entry) {
    let at = index * ENTRY_BYTES;
    area[at..at + 8].copy_from_slice(&entry.old.to_le_bytes());
    area[at + 8..at + 16].copy_from_slice(&entry.new.to_le_bytes());
}

/// The used entries of an area: all entries before the first `new_chunk == 0`.
/// The second value is true when the area is full (no end marker), so the table continues
/// in the next area.
pub fn parse_area(area: &[u8]) -> (Vec<Entry>, bool) {
    let epa = area.len() / ENTRY_BYTES;
    let mut entries = Vec::new();
    for i in 0..epa {
        let e = read_entry(area, i);
        if e.new == 0 {
            return (entries, false);
        }
        entries.push(e);
    }
    (entries, true)
}

/// Checks one entry against the COW's geometry. `offset` is the entry's byte offset.
pub fn validate_entry(entry: Entry, epa: u64, cow_chunks: u64, offset: u64) -> Result<()> {
    if is_metadata_chunk(epa, entry.new) {
        return Err(EngineError::EntryAtMetadata { offset, new_chunk: entry.new });
    }
    if entry.new >= cow_chunks {
        return Err(EngineError::EntryPastEnd { offset, new_chunk: entry.new, cow_chunks });
    }
    Ok(())
}

/// Usage as the kernel's status line prints it: `<allocated>/<total> <metadata>` in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub allocated_sectors: u64,
    pub total_sectors: u64,
    pub metadata_sectors: u64,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.allocated_sectors, self.total_sectors, self.metadata_sectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_byte_exact() {
        let h = Header { valid: true, version: 1, chunk_sectors: 32 };
        let buf = pack_header(&h);
        assert_eq!(buf.len(), 16384);
        assert_eq!(&buf[0..16], &[0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 32, 0, 0, 0]);
        assert!(buf[16..].iter().all(|&b| b == 0));
        assert_eq!(parse_header(&buf[..512], true).ok(), Some(HeaderState::Existing(h)));
    }

    #[test]
    fn all_zero_header_is_new_but_stray_bytes_are_refused() {
        let mut buf = vec![0u8; 512];
        assert_eq!(parse_header(&buf, true).ok(), Some(HeaderState::New));
        assert!(matches!(parse_header(&buf, false), Err(EngineError::NotZeroed { offset: 512 })));
        buf[100] = 7;
        assert!(matches!(parse_header(&buf, true), Err(EngineError::NotZeroed { offset: 100 })));
    }

    #[test]
    fn header_rejections_name_offset() {
        let mut buf = pack_header(&Header { valid: true, version: 1, chunk_sectors: 8 });
        buf[0] = 0x54;
        let e = parse_header(&buf[..512], true).unwrap_err();
        assert!(matches!(e, EngineError::WrongMagic { offset: 0, found: 0x70416e54 }), "{e}");
        buf[0] = 0x53;
        buf[8] = 2;
        let e = parse_header(&buf[..512], true).unwrap_err();
        assert!(matches!(e, EngineError::UnknownVersion { offset: 8, version: 2 }), "{e}");
        buf[8] = 1;
        for bad in [0u32, 3, 24, 1 << 22] {
            buf[12..16].copy_from_slice(&bad.to_le_bytes());
            let e = parse_header(&buf[..512], true).unwrap_err();
            assert!(matches!(e, EngineError::BadChunkSize { offset: 12, .. }), "{bad}: {e}");
            assert_eq!(e.corrupt_offset(), Some(12));
        }
    }

    #[test]
    fn chunk_size_must_match_block_sizes() {
        assert!(validate_chunk_sectors(8, &[4096, 512], 0).is_ok());
        assert!(validate_chunk_sectors(4, &[4096], 0).is_err());
        assert!(validate_chunk_sectors(1, &[512], 0).is_ok());
    }

    #[test]
    fn geometry_matches_kernel() {
        let epa = exceptions_per_area(32);
        assert_eq!(epa, 1024);
        assert_eq!(area_location(epa, 0), 1);
        assert_eq!(area_location(epa, 1), 1026);
        assert!(is_metadata_chunk(epa, 0));
        assert!(is_metadata_chunk(epa, 1));
        assert!(!is_metadata_chunk(epa, 2));
        assert!(!is_metadata_chunk(epa, 1025));
        assert!(is_metadata_chunk(epa, 1026));
        assert_eq!(skip_metadata(epa, 1025), 1025);
        assert_eq!(skip_metadata(epa, 1026), 1027);
        assert_eq!(skip_metadata(epa, 2), 2);
    }

    #[test]
    fn area_parsing_stops_at_end_marker_and_keeps_old_chunk_zero() {
        let mut area = vec![0u8; 4 * ENTRY_BYTES];
        write_entry(&mut area, 0, Entry { old: 0, new: 2 });
        write_entry(&mut area, 1, Entry { old: 9, new: 3 });
        write_entry(&mut area, 3, Entry { old: 5, new: 4 });
        let (entries, full) = parse_area(&area);
        assert_eq!(entries, vec![Entry { old: 0, new: 2 }, Entry { old: 9, new: 3 }]);
        assert!(!full);
        write_entry(&mut area, 2, Entry { old: 1, new: 5 });
        let (entries, full) = parse_area(&area);
        assert_eq!(entries.len(), 4);
        assert!(full, "an area whose every entry is used continues in the next");
    }

    #[test]
    fn entry_validation() {
        let epa = 4; // areas at chunks 1, 6, 11
        assert!(validate_entry(Entry { old: 0, new: 2 }, epa, 12, 0).is_ok());
        assert!(matches!(
            validate_entry(Entry { old: 0, new: 6 }, epa, 12, 48),
            Err(EngineError::EntryAtMetadata { offset: 48, new_chunk: 6 })
        ));
        assert!(matches!(
            validate_entry(Entry { old: 0, new: 12 }, epa, 12, 16),
            Err(EngineError::EntryPastEnd { offset: 16, new_chunk: 12, cow_chunks: 12 })
        ));
        assert!(validate_entry(Entry { old: u64::MAX, new: 10 }, epa, 12, 0).is_ok());
    }

    #[test]
    fn usage_prints_like_the_kernel() {
        let u = Usage { allocated_sectors: 64, total_sectors: 2048, metadata_sectors: 64 };
        assert_eq!(u.to_string(), "64/2048 64");
    }
}
