//! A COW presented as the concatenation of its pool extents.

use std::io;
use std::sync::{Arc, RwLock};

use crate::pool::io::BlockIo;

/// Block I/O over a list of pool extents; it can grow (autoextend) while in use: the engine
/// reads the size again at every allocation.
#[derive(Debug)]
pub struct ExtentIo {
    pool: Arc<dyn BlockIo>,
    data_offset: u64,
    extent_bytes: u64,
    extents: RwLock<Vec<u64>>,
}

impl ExtentIo {
    pub fn new(
        pool: Arc<dyn BlockIo>,
        data_offset: u64,
        extent_bytes: u64,
        extents: Vec<u64>,
    ) -> ExtentIo {
        ExtentIo { pool, data_offset, extent_bytes, extents: RwLock::new(extents) }
    }

    /// The extents, in COW order.
    pub fn extents(&self) -> Vec<u64> {
        self.extents.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Appends extents at the end of the COW (they must already be zeroed where it matters).
    pub fn grow(&self, more: &[u64]) {
        self.extents
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(more);
    }

    /// Calls `io_piece(pool_offset, range_in_buf)` for each extent-contiguous piece of
    /// `[offset, offset + len)`.
    fn for_each_piece(
        &self,
        offset: u64,
        len: usize,
        mut io_piece: impl FnMut(u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let extents = self.extents.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let size = extents.len() as u64 * self.extent_bytes;
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("COW access at {offset}+{len} beyond its {size} bytes"),
            ));
        }
        let mut done = 0usize;
        while done < len {
            let position = offset + done as u64;
            let index = (position / self.extent_bytes) as usize;
            let within = position % self.extent_bytes;
            let piece = ((self.extent_bytes - within) as usize).min(len - done);
            let pool_offset = self.data_offset + extents[index] * self.extent_bytes + within;
            io_piece(pool_offset, done..done + piece)?;
            done += piece;
        }
        Ok(())
    }
}

impl BlockIo for ExtentIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let len = buf.len();
        self.for_each_piece(offset, len, |pool_offset, range| {
            self.pool.read_at(&mut buf[range], pool_offset)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.for_each_piece(offset, buf.len(), |pool_offset, range| {
            self.pool.write_at(&buf[range], pool_offset)
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.pool.flush()
    }

    fn size_bytes(&self) -> io::Result<u64> {
        let extents = self.extents.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(extents.len() as u64 * self.extent_bytes)
    }

    fn logical_block_size(&self) -> u32 {
        self.pool.logical_block_size()
    }
}
