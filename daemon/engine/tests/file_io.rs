//! `FileIo` against a real file on the machine's disk: writes come back, and no more than
//! `WRITE_BEHIND_BYTES` of them stay dirty in the page cache before writeback is started (the
//! page cache's own dirty count, read with `cachestat(2)`, says so).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use snapback_engine::io::{BlockIo, FileIo, WRITE_BEHIND_BYTES};

const PAGE: u64 = 4096;
const LEN: usize = 8 << 20;

/// A scratch file on a disk-backed file system (/var/tmp: tmpfs has no writeback).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = PathBuf::from("/var/tmp")
            .join(format!("snapback-file-io-{name}-{}", std::process::id()));
        std::fs::File::create(&path).unwrap().set_len(LEN as u64).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default, Debug)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// The page cache's counts for the whole of `file` (Linux 6.5+).
#[allow(unsafe_code)]
fn cachestat(file: &std::fs::File) -> Cachestat {
    const SYS_CACHESTAT: libc::c_long = 451; // the same number on every architecture
    let range = CachestatRange { off: 0, len: 0 }; // len 0: to the end of the file
    let mut stat = Cachestat::default();
    // SAFETY: both pointers are to live, correctly laid out structs for the whole call.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    assert_eq!(rc, 0, "cachestat: {}", std::io::Error::last_os_error());
    stat
}

#[test]
fn at_most_the_write_behind_window_stays_dirty() {
    let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8 | 1).collect();
    let pages = LEN as u64 / PAGE;

    // Control: the same writes through a plain pwrite stay dirty in the page cache, so the
    // count below can tell the two apart.
    let plain = Scratch::new("plain");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&plain.0).unwrap();
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        file.write_all_at(piece, (i << 20) as u64).unwrap();
    }
    let before = cachestat(&file);
    assert!(
        before.nr_dirty * 2 > pages,
        "plain writes should still be dirty: {before:?} of {pages} pages"
    );

    let engine = Scratch::new("engine");
    let dev = FileIo::open(&engine.0, true).unwrap();
    let probe = std::fs::File::open(&engine.0).unwrap();
    let window = WRITE_BEHIND_BYTES / PAGE;
    // 1 MiB, then 3 MiB: with the second write the window overflows and the writeback of
    // all 4 MiB is started (only a stray `sync` elsewhere could clean pages sooner, which can
    // only lower the counts checked here).
    dev.write_at(&data[..1 << 20], 0).unwrap();
    dev.write_at(&data[1 << 20..4 << 20], 1 << 20).unwrap();
    let started = cachestat(&probe);
    assert!(
        started.nr_dirty < 256,
        "the window overflowed, its writeback should be started: {started:?}"
    );
    for (i, piece) in data.chunks(1 << 20).enumerate().skip(4) {
        dev.write_at(piece, (i << 20) as u64).unwrap();
        let now = cachestat(&probe);
        assert!(
            now.nr_dirty <= window,
            "more than the window dirty after {} MiB: {now:?} of {pages} pages",
            i + 1
        );
    }
    dev.flush().unwrap();
    let mut back = vec![0u8; LEN];
    dev.read_at(&mut back, 0).unwrap();
    assert!(back == data, "the bytes written come back");
    assert_eq!(std::fs::read(&engine.0).unwrap(), data, "and are in the file");
}
