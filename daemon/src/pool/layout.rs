//! On-disk layout of a pool: where the two registry copies live and how one copy is framed.
//!
//! ```text
//! offset 0        registry slot 0   (SLOT_BYTES)
//! offset 2 MiB    registry slot 1   (SLOT_BYTES)
//! offset 4 MiB    data area: extent 0, extent 1, ... (extent_bytes each, recorded in the registry)
//! ```
//!
//! A slot starts with a 4 KiB header, all integers little-endian:
//!
//! ```text
//!  0  8  magic  "SNAPBKRG"
//!  8  4  format version (1)
//! 12  4  reserved, zero
//! 16  8  sequence number (the copy with the highest valid sequence wins)
//! 24  8  payload length in bytes
//! 32  4  crc32c over header bytes 0..32 followed by the payload
//! ```
//!
//! and the payload (the registry as JSON) follows at slot offset 4 KiB. Sequence `n` is written
//! to slot `n % 2`, so an update never overwrites the newest valid copy: a crash at any write
//! leaves either the old copy (the new one is torn and fails its checksum) or the new one.

use thiserror::Error;

/// Magic at the start of every registry slot.
pub const MAGIC: [u8; 8] = *b"SNAPBKRG";
/// Version of the slot framing and registry schema.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes reserved for one registry copy (header + payload).
pub const SLOT_BYTES: u64 = 2 << 20;
/// Size of the slot header; the payload starts here.
pub const HEADER_BYTES: usize = 4096;
/// Largest registry payload a slot can hold.
pub const MAX_PAYLOAD: usize = SLOT_BYTES as usize - HEADER_BYTES;
/// Where the data area (extent 0) starts.
pub const DATA_OFFSET: u64 = 2 * SLOT_BYTES;
/// Default size of one extent of COW space.
pub const DEFAULT_EXTENT_BYTES: u64 = 4 << 20;

/// Byte offset of registry slot `slot` (0 or 1).
pub fn slot_offset(slot: u64) -> u64 {
    (slot % 2) * SLOT_BYTES
}

/// Why a slot was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SlotError {
    #[error("no registry magic (never written, or not a snapback pool)")]
    NoMagic,
    #[error("unknown registry format version {0} (this snapbackd knows {FORMAT_VERSION})")]
    Version(u32),
    #[error("payload length {0} exceeds the slot")]
    Length(u64),
    #[error("checksum mismatch (torn or corrupt write): stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

/// A valid slot's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub sequence: u64,
    pub payload: Vec<u8>,
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn checksum(header_fields: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_fields), payload)
}

/// Frames `payload` as one slot image (header + payload, padded to whole 4 KiB blocks).
pub fn encode_slot(sequence: u64, payload: &[u8]) -> Vec<u8> {
    let padded = (HEADER_BYTES + payload.len()).div_ceil(4096) * 4096;
    let mut image = vec![0u8; padded];
    image[0..8].copy_from_slice(&MAGIC);
    image[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    image[16..24].copy_from_slice(&sequence.to_le_bytes());
    image[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = checksum(&image[0..32], payload);
    image[32..36].copy_from_slice(&crc.to_le_bytes());
    image[HEADER_BYTES..HEADER_BYTES + payload.len()].copy_from_slice(payload);
    image
}

/// Checks a slot header; returns (sequence, payload length) when it can be believed so far.
pub fn decode_header(header: &[u8]) -> Result<(u64, usize), SlotError> {
    if header.len() < 36 || header[0..8] != MAGIC {
        return Err(SlotError::NoMagic);
    }
    let version = le_u32(header, 8);
    if version != FORMAT_VERSION {
        return Err(SlotError::Version(version));
    }
    let length = le_u64(header, 24);
    if length > MAX_PAYLOAD as u64 {
        return Err(SlotError::Length(length));
    }
    Ok((le_u64(header, 16), length as usize))
}

/// Verifies a slot's checksum given its header and payload.
pub fn verify_slot(header: &[u8], payload: Vec<u8>) -> Result<Slot, SlotError> {
    let (sequence, length) = decode_header(header)?;
    if payload.len() != length {
        return Err(SlotError::Length(payload.len() as u64));
    }
    let stored = le_u32(header, 32);
    let computed = checksum(&header[0..32], &payload);
    if stored != computed {
        return Err(SlotError::Checksum { stored, computed });
    }
    Ok(Slot { sequence, payload })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips() {
        let image = encode_slot(7, b"{\"a\":1}");
        assert_eq!(image.len(), 8192);
        let (sequence, length) = decode_header(&image[..HEADER_BYTES]).unwrap();
        assert_eq!((sequence, length), (7, 7));
        let slot = verify_slot(
            &image[..HEADER_BYTES],
            image[HEADER_BYTES..HEADER_BYTES + length].to_vec(),
        )
        .unwrap();
        assert_eq!(slot, Slot { sequence: 7, payload: b"{\"a\":1}".to_vec() });
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let image = encode_slot(3, b"registry payload");
        for byte in (0..36).chain(HEADER_BYTES..HEADER_BYTES + 16) {
            let mut bad = image.clone();
            bad[byte] ^= 0x10;
            let result = decode_header(&bad[..HEADER_BYTES]).and_then(|(_, length)| {
                let payload = bad
                    .get(HEADER_BYTES..HEADER_BYTES + length)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                verify_slot(&bad[..HEADER_BYTES], payload)
            });
            assert!(result.is_err(), "flip at byte {byte} went unnoticed");
        }
    }

    #[test]
    fn sequence_alternates_slots() {
        assert_eq!(slot_offset(0), 0);
        assert_eq!(slot_offset(1), SLOT_BYTES);
        assert_eq!(slot_offset(2), 0);
    }
}
