//! Block I/O: the small trait the engine does all storage access through, a file / block
//! device implementation, and an in-memory one that injects errors and simulates power loss.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A device the engine reads and writes. Reads and writes are exact (whole buffer or error);
/// a write is durable only after a successful `flush`.
pub trait BlockIo: Send + Sync + std::fmt::Debug {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    fn size_bytes(&self) -> io::Result<u64>;
    fn logical_block_size(&self) -> u32 {
        512
    }
}

/// A regular file or a block device. It keeps little written data dirty: after every
/// `WRITE_BEHIND_BYTES` written, it starts writing all of it back (see `start_writeback`).
#[derive(Debug)]
pub struct FileIo {
    file: File,
    /// Bytes written since writeback was last started.
    written_since_start: AtomicU64,
    block_device: bool,
    logical_block_size: u32,
}

impl FileIo {
    pub fn open(path: &Path, writable: bool) -> io::Result<FileIo> {
        let file = std::fs::OpenOptions::new().read(true).write(writable).open(path)?;
        let block_device = file.metadata()?.file_type().is_block_device();
        let logical_block_size =
            if block_device { rustix::fs::ioctl_blksszget(&file)? } else { 512 };
        Ok(FileIo {
            file,
            written_since_start: AtomicU64::new(0),
            block_device,
            logical_block_size,
        })
    }
}

impl FileIo {
    /// Drops the page cache's clean pages of the file, so that later reads come from the
    /// device. After a failed write-back the kernel keeps the pages that could not be written
    /// as if they had been: reading them would show data the device does not hold.
    pub fn drop_cache(&self) -> io::Result<()> {
        rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed)?;
        Ok(())
    }
}

impl BlockIo for FileIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        let len = buf.len() as u64;
        if self.written_since_start.fetch_add(len, Ordering::Relaxed) + len >= WRITE_BEHIND_BYTES {
            // Two writers racing here may both start writeback: harmless, it is a hint.
            self.written_since_start.store(0, Ordering::Relaxed);
            start_writeback(&self.file);
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        if self.block_device {
            // A block device's size is where SEEK_END lands; pread/pwrite ignore the offset.
            Ok(rustix::fs::seek(&self.file, rustix::fs::SeekFrom::End(0))?)
        } else {
            Ok(self.file.metadata()?.len())
        }
    }
    fn logical_block_size(&self) -> u32 {
        self.logical_block_size
    }
}

/// How much a `FileIo` writes before it starts writeback of everything it left dirty (the
/// write-behind of PostgreSQL's `*_flush_after`). Measured with the engine bench: 1 MiB writes
/// gain as much at 1, 2 or 4 MiB as from starting each write by itself, while 4 KiB rewrites of
/// a hot region keep 0.81–0.91 of a plain `pwrite`'s speed at 2 MiB (0.24 if every write were
/// started alone; 0.73 at 1 MiB).
pub const WRITE_BEHIND_BYTES: u64 = 2 << 20;

/// Starts writing every dirty page of `file` back to the disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)` over the whole file).
///
/// Whoever writes through the engine has already coalesced in their own page cache (the file
/// system on the volume), so holding the data dirty a second time here mostly delays it: the
/// next commit or flush would then write all of it while nothing else runs. Started early, the
/// disk writes the COW copies while the engine copies the next chunks, and a commit or a flush
/// waits only for what is still in flight. It is a hint: a failure here is ignored, and the
/// write's own error, if any, is reported by the next `flush` (WRITE alone neither waits nor
/// consumes the file's write-back error, so no later fsync loses it).
#[allow(unsafe_code)]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range takes no pointers, and the descriptor, borrowed from `file`,
    // stays open for the duration of the call. Offset 0 and length 0 mean the whole file.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// What happens to writes not yet flushed when `MemIo::power_loss` is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Every unflushed write is lost.
    DropAll,
    /// Each unflushed write independently lands whole or not at all (pseudo-random by seed).
    KeepSome(u64),
    /// Each unflushed write lands as a random subset of its 512-byte sectors (torn).
    Tear(u64),
}

#[derive(Debug, Default)]
struct Faults {
    fail_read_nth: Option<u64>,
    fail_write_nth: Option<u64>,
    fail_flush_nth: Option<u64>,
    fail_write_range: Option<Range<u64>>,
    /// After this many more writes + flushes, every I/O fails (the device died).
    dead_after: Option<u64>,
    dead: bool,
    /// An injected write failure still lands the write (unflushed).
    failed_writes_land: bool,
    /// An injected flush failure forgets the unflushed writes.
    failed_flushes_forget: bool,
}

#[derive(Debug)]
struct MemState {
    current: Vec<u8>,
    durable: Vec<u8>,
    unflushed: Vec<(u64, Vec<u8>)>,
    reads: u64,
    writes: u64,
    flushes: u64,
    faults: Faults,
    /// A countdown shared by several devices: the machine dies when it runs out.
    crash_budget: Option<Arc<AtomicI64>>,
    logical_block_size: u32,
}

/// An in-memory device with fault injection and power-loss simulation.
#[derive(Debug)]
pub struct MemIo {
    state: Mutex<MemState>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} error"))
}

/// A tiny deterministic PRNG (splitmix64), enough to pick which writes survive.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MemIo {
    pub fn new(size_bytes: u64) -> MemIo {
        MemIo::from_bytes(vec![0u8; size_bytes as usize])
    }

    /// A device whose durable content is `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> MemIo {
        MemIo {
            state: Mutex::new(MemState {
                current: bytes.clone(),
                durable: bytes,
                unflushed: Vec::new(),
                reads: 0,
                writes: 0,
                flushes: 0,
                faults: Faults::default(),
                crash_budget: None,
                logical_block_size: 512,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while holding the lock leaves plain bytes behind; keep using them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_logical_block_size(&self, bytes: u32) {
        self.lock().logical_block_size = bytes;
    }

    /// Grows (or shrinks) the device; new bytes are zero and durable.
    pub fn resize(&self, size_bytes: u64) {
        let mut s = self.lock();
        s.current.resize(size_bytes as usize, 0);
        s.durable.resize(size_bytes as usize, 0);
    }

    /// Fails the `n`th read from now (1 = the next one).
    pub fn fail_nth_read(&self, n: u64) {
        let mut s = self.lock();
        s.faults.fail_read_nth = Some(s.reads + n);
    }
    /// Fails the `n`th write from now (1 = the next one).
    pub fn fail_nth_write(&self, n: u64) {
        let mut s = self.lock();
        s.faults.fail_write_nth = Some(s.writes + n);
    }
    /// Fails the `n`th flush from now (1 = the next one).
    pub fn fail_nth_flush(&self, n: u64) {
        let mut s = self.lock();
        s.faults.fail_flush_nth = Some(s.flushes + n);
    }
    /// Fails every write touching `range` (byte offsets).
    pub fn fail_writes_in(&self, range: Range<u64>) {
        self.lock().faults.fail_write_range = Some(range);
    }
    /// From now on an injected write failure (`fail_nth_write`, `fail_writes_in`) still
    /// carries the write out, unflushed: a device may report an error for a write that reached
    /// the medium in whole or in part, so after a failed write either content may be there.
    pub fn failed_writes_land(&self) {
        self.lock().faults.failed_writes_land = true;
    }
    /// From now on an injected flush failure (`fail_nth_flush`) also forgets every unflushed
    /// write: reads still return it, but it never becomes durable, not even by a later flush
    /// that succeeds. That is Linux's page cache after a writeback error: the pages are marked
    /// clean, the error goes to one fsync, and the next fsync succeeds without them.
    pub fn failed_flushes_forget(&self) {
        self.lock().faults.failed_flushes_forget = true;
    }
    /// After `n` more successful writes and flushes, every I/O fails: simulates the machine
    /// stopping at that instant. Follow with `power_loss` and reopen.
    pub fn die_after(&self, n: u64) {
        self.lock().faults.dead_after = Some(n);
    }
    /// Shares a crash countdown with other devices: every write or flush on any of them
    /// takes one from it, and when it goes below zero all of them fail every I/O, like a
    /// machine stopping at one instant. Refill it before reopening.
    pub fn share_crash_budget(&self, budget: Arc<AtomicI64>) {
        self.lock().crash_budget = Some(budget);
    }
    pub fn clear_faults(&self) {
        self.lock().faults = Faults::default();
    }

    /// Simulates power loss: unflushed writes are dropped or torn per `mode`; faults cleared.
    pub fn power_loss(&self, mode: PowerLoss) {
        let mut s = self.lock();
        let unflushed = std::mem::take(&mut s.unflushed);
        let mut rng = match mode {
            PowerLoss::DropAll => 0,
            PowerLoss::KeepSome(seed) | PowerLoss::Tear(seed) => seed,
        };
        for (offset, data) in unflushed {
            let start = offset as usize;
            match mode {
                PowerLoss::DropAll => {}
                PowerLoss::KeepSome(_) => {
                    if splitmix(&mut rng) & 1 == 1 {
                        s.durable[start..start + data.len()].copy_from_slice(&data);
                    }
                }
                PowerLoss::Tear(_) => {
                    for (i, sector) in data.chunks(512).enumerate() {
                        if splitmix(&mut rng) & 1 == 1 {
                            let at = start + i * 512;
                            s.durable[at..at + sector.len()].copy_from_slice(sector);
                        }
                    }
                }
            }
        }
        s.current = s.durable.clone();
        s.faults = Faults::default();
    }

    /// The bytes that would survive a power loss that drops every unflushed write.
    pub fn durable_bytes(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }
    /// The bytes a read sees now.
    pub fn current_bytes(&self) -> Vec<u8> {
        self.lock().current.clone()
    }
    /// Counts of (reads, writes, flushes) so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.reads, s.writes, s.flushes)
    }
}

fn check_range(len: usize, offset: u64, size: usize) -> io::Result<usize> {
    let start =
        usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start),
        _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "access past the end of the device")),
    }
}

impl MemState {
    /// Counts one write or flush toward `die_after`; true when the device is now dead.
    fn tick_dead(&mut self) -> bool {
        if self.faults.dead {
            return true;
        }
        if let Some(b) = &self.crash_budget {
            if b.fetch_sub(1, Ordering::SeqCst) <= 0 {
                return true;
            }
        }
        if let Some(left) = self.faults.dead_after {
            if left == 0 {
                self.faults.dead = true;
                return true;
            }
            self.faults.dead_after = Some(left - 1);
        }
        false
    }
}

impl BlockIo for MemIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.reads += 1;
        let crashed = s.crash_budget.as_ref().is_some_and(|b| b.load(Ordering::SeqCst) < 0);
        if crashed || s.faults.dead || s.faults.fail_read_nth == Some(s.reads) {
            return Err(injected("read"));
        }
        let start = check_range(buf.len(), offset, s.current.len())?;
        buf.copy_from_slice(&s.current[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.writes += 1;
        let in_failing_range = s
            .faults
            .fail_write_range
            .as_ref()
            .is_some_and(|r| offset < r.end && offset + buf.len() as u64 > r.start);
        if s.faults.fail_write_nth == Some(s.writes) || in_failing_range {
            if s.faults.failed_writes_land {
                let start = check_range(buf.len(), offset, s.current.len())?;
                s.current[start..start + buf.len()].copy_from_slice(buf);
                s.unflushed.push((offset, buf.to_vec()));
            }
            return Err(injected("write"));
        }
        if s.tick_dead() {
            return Err(injected("write (device dead)"));
        }
        let start = check_range(buf.len(), offset, s.current.len())?;
        s.current[start..start + buf.len()].copy_from_slice(buf);
        s.unflushed.push((offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.flushes += 1;
        if s.faults.fail_flush_nth == Some(s.flushes) {
            if s.faults.failed_flushes_forget {
                s.unflushed.clear();
            }
            return Err(injected("flush"));
        }
        if s.tick_dead() {
            return Err(injected("flush (device dead)"));
        }
        let unflushed = std::mem::take(&mut s.unflushed);
        for (offset, data) in unflushed {
            let start = offset as usize;
            s.durable[start..start + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }

    fn size_bytes(&self) -> io::Result<u64> {
        let s = self.lock();
        if s.faults.dead {
            return Err(injected("size"));
        }
        Ok(s.current.len() as u64)
    }

    fn logical_block_size(&self) -> u32 {
        self.lock().logical_block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflushed_writes_are_lost_on_power_loss() {
        let m = MemIo::new(4096);
        m.write_at(&[1; 512], 0).unwrap();
        m.flush().unwrap();
        m.write_at(&[2; 512], 512).unwrap();
        let mut buf = [0u8; 512];
        m.read_at(&mut buf, 512).unwrap();
        assert_eq!(buf, [2; 512]);
        m.power_loss(PowerLoss::DropAll);
        m.read_at(&mut buf, 512).unwrap();
        assert_eq!(buf, [0; 512]);
        m.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [1; 512]);
    }

    #[test]
    fn torn_writes_land_per_sector() {
        let m = MemIo::new(64 * 512);
        m.write_at(&[7; 64 * 512], 0).unwrap();
        m.power_loss(PowerLoss::Tear(3));
        let bytes = m.durable_bytes();
        let landed = bytes.chunks(512).filter(|s| s.iter().all(|&b| b == 7)).count();
        let lost = bytes.chunks(512).filter(|s| s.iter().all(|&b| b == 0)).count();
        assert_eq!(landed + lost, 64, "every sector is whole: old or new");
        assert!(landed > 0 && lost > 0, "with 64 sectors both outcomes occur");
    }

    #[test]
    fn injected_faults_fire_once_at_the_right_call() {
        let m = MemIo::new(4096);
        m.fail_nth_write(2);
        m.write_at(&[1; 512], 0).unwrap();
        assert!(m.write_at(&[1; 512], 0).is_err());
        m.write_at(&[1; 512], 0).unwrap();
        m.fail_writes_in(1000..1001);
        assert!(m.write_at(&[1; 512], 512).is_err());
        m.write_at(&[1; 512], 1024).unwrap();
        m.die_after(1);
        m.flush().unwrap();
        assert!(m.write_at(&[1; 512], 0).is_err());
        assert!(m.read_at(&mut [0; 512], 0).is_err());
        let mut buf = [0u8; 8];
        assert!(MemIo::new(4).read_at(&mut buf, 0).is_err(), "reads past the end fail");
    }

    #[test]
    fn failed_writes_can_land_and_failed_flushes_can_forget() {
        let m = MemIo::new(4096);
        m.failed_writes_land();
        m.fail_nth_write(1);
        assert!(m.write_at(&[3; 512], 0).is_err());
        let mut buf = [0u8; 512];
        m.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [3; 512], "the failed write was carried out");
        m.flush().unwrap();
        assert_eq!(&m.durable_bytes()[..512], &[3; 512], "and a flush makes it durable");
        m.failed_flushes_forget();
        m.write_at(&[4; 512], 512).unwrap();
        m.fail_nth_flush(1);
        assert!(m.flush().is_err());
        m.read_at(&mut buf, 512).unwrap();
        assert_eq!(buf, [4; 512], "still read back after the failed flush");
        m.flush().unwrap();
        assert_eq!(
            &m.durable_bytes()[512..1024],
            &[0; 512],
            "but a later flush no longer saves it"
        );
    }
}
