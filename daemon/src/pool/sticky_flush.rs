//! The pool device with flush errors that stick.
//!
//! Every COW and the registry write through the pool's one open file, and the kernel reports
//! a write-back error to the first fsync on that file after it happened, once. So the flush
//! that sees an error may belong to another snapshot's commit than the one whose data was
//! lost, and the commit that owned the lost data would then succeed. Once any flush of the
//! pool has failed, every later one fails too: every commit that follows is refused (its
//! snapshot is invalidated, as the kernel does with a failing COW) instead of trusting data
//! that may never have reached the disk. A restart of the daemon, once the device is
//! healthy, opens the pool afresh.

use std::io;
use std::sync::{Arc, Mutex};

use super::io::BlockIo;

#[derive(Debug)]
pub struct StickyFlushIo {
    inner: Arc<dyn BlockIo>,
    failed: Mutex<Option<String>>,
}

impl StickyFlushIo {
    pub fn new(inner: Arc<dyn BlockIo>) -> StickyFlushIo {
        StickyFlushIo { inner, failed: Mutex::new(None) }
    }
}

impl BlockIo for StickyFlushIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        let mut failed = self.failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(first) = failed.as_ref() {
            return Err(io::Error::other(format!(
                "an earlier flush of the pool failed ({first}); nothing written to the pool since \
                 is known to be on disk. Check the device, then restart snapbackd"
            )));
        }
        self.inner.flush().inspect_err(|err| *failed = Some(err.to_string()))
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.inner.size_bytes()
    }

    fn logical_block_size(&self) -> u32 {
        self.inner.logical_block_size()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pool::io::MemIo;

    #[test]
    fn after_one_failed_flush_every_flush_fails_and_says_why() {
        let dev = Arc::new(MemIo::new(1 << 20));
        let sticky = StickyFlushIo::new(dev.clone());
        sticky.write_at(&[1; 512], 0).unwrap();
        sticky.flush().unwrap();
        dev.fail_nth_flush(1);
        assert!(sticky.flush().is_err(), "the device's own failure");
        // The device is fine again, but what was written before may be lost: still refused.
        let later = sticky.flush().unwrap_err().to_string();
        assert!(later.contains("an earlier flush of the pool failed"), "{later}");
        assert!(later.contains("restart snapbackd"), "{later}");
        // Reads and writes go on (a snapshot's data is still readable; nothing is trusted).
        let mut buf = [0u8; 512];
        sticky.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [1; 512]);
    }
}
