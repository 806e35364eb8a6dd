//! The origin's write-back buffer: new origin data held in memory until the exceptions that
//! protect the old data are durable in every snapshot's COW (group commit).
//!
//! A block device may complete a write before it is durable; only a flush makes it so. What
//! protects a snapshot is ordering alone: the origin's new data must never reach the origin
//! device before the copied-out old data and the metadata entry pointing at it are durable.
//! Holding the new data here until a batch of exceptions is committed keeps that order while
//! paying for one commit per batch instead of one per write.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

use crate::io::BlockIo;

/// Byte ranges of the origin and their newest data, never overlapping one another.
#[derive(Debug, Default)]
pub(crate) struct WriteBack {
    /// Origin offset → where its bytes sit in `data`. Adjacent ranges are not merged: each is
    /// written with one I/O anyway.
    extents: BTreeMap<u64, Range<usize>>,
    /// The held bytes, appended as writes arrive (its length is the bytes held). The
    /// allocation is kept from one batch to the next, as a fresh multi-MiB allocation per
    /// batch costs page faults that show in throughput, and given back by `release`.
    data: Vec<u8>,
}

impl WriteBack {
    pub(crate) fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// Gives the allocation back when nothing is held (the origin calls it at `flush`, so an
    /// idle origin holds no buffer memory).
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.data = Vec::new();
        }
    }

    /// (origin offset, place in `data`) of the extents overlapping `range`, in order.
    fn overlapping(&self, range: Range<u64>) -> Vec<(u64, Range<usize>)> {
        if range.is_empty() {
            return Vec::new();
        }
        // Extents are disjoint and sorted, so their ends are sorted too: walk back from the
        // last one starting before `range.end` while they still reach into the range.
        let mut found: Vec<(u64, Range<usize>)> = self
            .extents
            .range(..range.end)
            .rev()
            .take_while(|(&start, held)| start + held.len() as u64 > range.start)
            .map(|(&start, held)| (start, held.clone()))
            .collect();
        found.reverse();
        found
    }

    /// Takes a write: bytes already held are overwritten in place, the rest become new extents.
    pub(crate) fn insert(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let mut pos = offset;
        for (start, held) in self.overlapping(offset..end) {
            if pos < start {
                self.add(pos, &data[(pos - offset) as usize..(start - offset) as usize]);
            }
            let from = pos.max(start);
            let to = end.min(start + held.len() as u64);
            let at = held.start + (from - start) as usize;
            self.data[at..at + (to - from) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            pos = to;
        }
        if pos < end {
            self.add(pos, &data[(pos - offset) as usize..]);
        }
    }

    fn add(&mut self, offset: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            let at = self.data.len();
            self.data.extend_from_slice(bytes);
            self.extents.insert(offset, at..at + bytes.len());
        }
    }

    /// Copies the held bytes of `[offset, offset + buf.len())` over `buf` (which holds what
    /// the device has there).
    pub(crate) fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (start, held) in self.overlapping(offset..end) {
            let from = offset.max(start);
            let to = end.min(start + held.len() as u64);
            let at = held.start + (from - start) as usize;
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&self.data[at..at + (to - from) as usize]);
        }
    }

    /// Reads `buf` at `offset` as users see the origin: the device, then the held bytes.
    pub(crate) fn read_origin(
        &self,
        dev: &dyn BlockIo,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        dev.read_at(buf, offset)?;
        self.overlay(offset, buf);
        Ok(())
    }

    /// Writes every extent to `dev` (no flush). Written extents leave the buffer; one that
    /// fails stays, so reads keep seeing the data and a later call tries again. Returns the
    /// first error.
    pub(crate) fn write_out(&mut self, dev: &dyn BlockIo) -> io::Result<()> {
        let mut first_error = None;
        let mut kept = Vec::new();
        for (offset, held) in std::mem::take(&mut self.extents) {
            if let Err(e) = dev.write_at(&self.data[held.clone()], offset) {
                first_error.get_or_insert(e);
                kept.push((offset, held));
            }
        }
        // Move what failed to the front of the same allocation, in the order it sits there so
        // nothing is overwritten before it moved.
        kept.sort_by_key(|(_, held)| held.start);
        let mut len = 0;
        for (offset, held) in kept {
            self.data.copy_within(held.clone(), len);
            self.extents.insert(offset, len..len + held.len());
            len += held.len();
        }
        self.data.truncate(len);
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;

    fn read(wb: &WriteBack, dev: &MemIo, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        wb.read_origin(dev, offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn overlapping_writes_keep_the_newest_bytes_and_count_each_byte_once() {
        let dev = MemIo::new(64);
        let mut wb = WriteBack::default();
        wb.insert(8, &[1; 8]); // [8, 16)
        wb.insert(24, &[2; 8]); // [24, 32)
        wb.insert(12, &[3; 16]); // [12, 28): overwrites the ends of both, fills the gap
        assert_eq!(wb.bytes(), 24, "bytes 8..32 once each");
        let mut want = vec![0u8; 40];
        want[8..12].fill(1);
        want[12..28].fill(3);
        want[28..32].fill(2);
        assert_eq!(read(&wb, &dev, 0, 40), want);
        assert_eq!(wb.overlapping(31..33).len(), 1);
        assert!(wb.overlapping(32..40).is_empty() && wb.overlapping(0..8).is_empty());
        // A read starting inside an extent sees only its part.
        assert_eq!(read(&wb, &dev, 10, 4), vec![1, 1, 3, 3]);
        wb.write_out(&dev).unwrap();
        assert!(wb.is_empty() && wb.bytes() == 0);
        assert_eq!(&dev.current_bytes()[..40], &want[..]);
    }

    #[test]
    fn failed_extents_stay_for_reads_and_the_next_attempt() {
        let dev = MemIo::new(64);
        let mut wb = WriteBack::default();
        wb.insert(40, &[3; 8]); // first in the data, last on the device
        wb.insert(0, &[1; 8]);
        wb.insert(32, &[2; 8]);
        dev.fail_writes_in(32..48);
        assert!(wb.write_out(&dev).is_err());
        assert_eq!(wb.bytes(), 16);
        assert_eq!(
            read(&wb, &dev, 32, 16),
            [[2; 8], [3; 8]].concat(),
            "still read from the buffer"
        );
        assert_eq!(&dev.current_bytes()[..8], &[1; 8], "the other extent was written");
        dev.clear_faults();
        wb.write_out(&dev).unwrap();
        assert!(wb.is_empty() && wb.bytes() == 0);
        assert_eq!(&dev.current_bytes()[32..48], &[[2; 8], [3; 8]].concat()[..]);
    }
}
