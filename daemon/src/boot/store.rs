//! Boot files kept in the pool: each distinct content once (by SHA-256), in extents of the
//! pool's data area that the registry lists as a [`BlobRecord`]. A blob is written and
//! flushed before the registry names it; a crash before that leaves only free extents.

use std::io;

use snapback_engine::io::BlockIo;

use crate::pool::{BlobRecord, Pool, PoolError};

use super::tree::sha256;

/// Stores `bytes` (unless the pool holds them already) and returns their SHA-256.
pub fn put(pool: &Pool, bytes: &[u8]) -> Result<String, PoolError> {
    let sha = sha256(bytes);
    // Another writer may take the picked extents between the pick and the commit; the
    // commit's validation refuses that, and a second pick sees the new registry.
    for _ in 0..3 {
        let registry = pool.registry();
        if registry.blob(&sha).is_some() {
            return Ok(sha);
        }
        let count = (bytes.len() as u64).div_ceil(registry.extent_bytes).max(1);
        let extents = registry.pick_free_extents(&[count])?.pop().unwrap_or_default();
        let io = pool.extent_io(&extents);
        io.write_at(bytes, 0)
            .map_err(|err| PoolError::io("writing a boot file into the pool", err))?;
        io.flush().map_err(|err| PoolError::io("flushing a boot file into the pool", err))?;
        let record = BlobRecord { sha256: sha.clone(), size: bytes.len() as u64, extents };
        match pool.update(|registry| {
            if registry.blob(&record.sha256).is_none() {
                registry.boot_blobs.push(record.clone());
            }
            Ok(())
        }) {
            Ok(()) => return Ok(sha),
            Err(PoolError::Invalid(why)) if why.contains("used twice") => continue,
            Err(err) => return Err(err),
        }
    }
    Err(PoolError::Invalid("the pool kept changing while a boot file was stored; try again".into()))
}

/// The bytes of blob `sha256`, checked against it.
pub fn get(pool: &Pool, sha256_hex: &str) -> io::Result<Vec<u8>> {
    let registry = pool.registry();
    let blob = registry.blob(sha256_hex).ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("the pool holds no boot file {sha256_hex}"))
    })?;
    let mut bytes = vec![0u8; blob.size as usize];
    pool.extent_io(&blob.extents).read_at(&mut bytes, 0)?;
    if sha256(&bytes) != sha256_hex {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the boot file {sha256_hex} kept in the pool is damaged (checksum mismatch)"),
        ));
    }
    Ok(bytes)
}
