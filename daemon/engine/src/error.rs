//! The engine's error type. Corrupt-metadata variants carry the byte offset in the COW
//! where the problem was found, so a person can look at it with a hex dump.

use std::io;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("wrong magic 0x{found:08x} at byte offset {offset} (expected 0x70416e53 \"SnAp\")")]
    WrongMagic { offset: u64, found: u32 },
    #[error("header magic is 0 but the header chunk is not all zero (byte offset {offset}): not a new store, refusing to format it")]
    NotZeroed { offset: u64 },
    #[error("unknown store version {version} at byte offset {offset} (only version 1 exists)")]
    UnknownVersion { offset: u64, version: u32 },
    #[error("bad chunk size {chunk_sectors} sectors at byte offset {offset}: {reason}")]
    BadChunkSize { offset: u64, chunk_sectors: u64, reason: &'static str },
    #[error("exception entry at byte offset {offset} points at metadata chunk {new_chunk}")]
    EntryAtMetadata { offset: u64, new_chunk: u64 },
    #[error("exception entry at byte offset {offset} points at chunk {new_chunk}, past the end of the COW ({cow_chunks} chunks)")]
    EntryPastEnd { offset: u64, new_chunk: u64, cow_chunks: u64 },
    #[error(
        "metadata area at byte offset {offset} lies past the end of the COW ({cow_bytes} bytes)"
    )]
    AreaPastEnd { offset: u64, cow_bytes: u64 },
    #[error("exception entry at byte offset {offset} repeats origin chunk {old_chunk} (first at byte offset {first_offset})")]
    DuplicateOldChunk { offset: u64, old_chunk: u64, first_offset: u64 },
    #[error("exception entry at byte offset {offset} reuses COW chunk {new_chunk} (first used at byte offset {first_offset})")]
    SharedNewChunk { offset: u64, new_chunk: u64, first_offset: u64 },
    #[error("COW too small: {cow_bytes} bytes cannot hold a header and one metadata area of {chunk_bytes}-byte chunks")]
    CowTooSmall { cow_bytes: u64, chunk_bytes: u64 },
    #[error("the COW is all zero: it holds no snapshot store")]
    NotFormatted,
    #[error("the COW is full")]
    NoSpace,
    #[error("the snapshot is invalid")]
    Invalid,
    #[error("the snapshot has overflowed: its COW is full, snapshot writes fail")]
    Overflow,
    #[error("a snapshot of this origin is already merging")]
    AlreadyMerging,
    #[error("no snapshot of this origin is merging")]
    NotMerging,
    #[error("no snapshot with id {0}")]
    NoSuchSnapshot(u64),
    #[error("the merge failed earlier; start it again to resume")]
    MergeFailed,
    #[error("access at byte offset {offset} length {len} is outside the device ({size} bytes) or not sector aligned")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl EngineError {
    /// Wraps an I/O error with what the engine was doing when it happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        EngineError::Io { context: context.into(), source }
    }

    /// The byte offset in the COW of corrupt metadata, when this error is about one.
    pub fn corrupt_offset(&self) -> Option<u64> {
        match self {
            EngineError::WrongMagic { offset, .. }
            | EngineError::NotZeroed { offset }
            | EngineError::UnknownVersion { offset, .. }
            | EngineError::BadChunkSize { offset, .. }
            | EngineError::EntryAtMetadata { offset, .. }
            | EngineError::EntryPastEnd { offset, .. }
            | EngineError::AreaPastEnd { offset, .. }
            | EngineError::DuplicateOldChunk { offset, .. }
            | EngineError::SharedNewChunk { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// Engine result.
pub type Result<T> = std::result::Result<T, EngineError>;
