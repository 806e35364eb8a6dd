//! Block I/O used by the pool. TEMPORARY stand-in with the engine's `snapback_engine::io`
//! signatures until the engine crate lands; then this becomes a re-export.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub trait BlockIo: Send + Sync + std::fmt::Debug {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    fn size_bytes(&self) -> io::Result<u64>;
    fn logical_block_size(&self) -> u32 {
        512
    }
}

#[derive(Debug)]
pub struct FileIo {
    file: File,
}

impl FileIo {
    pub fn open(path: &Path, writable: bool) -> io::Result<FileIo> {
        Ok(FileIo { file: OpenOptions::new().read(true).write(writable).open(path)? })
    }
}

impl BlockIo for FileIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        (&self.file).seek(SeekFrom::End(0))
    }
}
