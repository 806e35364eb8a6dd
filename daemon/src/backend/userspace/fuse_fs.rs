//! The FUSE filesystem that presents each volume (and read-only snapshot views) as one file,
//! so a loop device can turn it into a block device.
//!
//! Files are opened with `FOPEN_DIRECT_IO`: the kernel keeps no page cache for them, so what the
//! loop device reads is always what the engine holds (a merge changes the data underneath).
//! Handlers only call into the engine's data path (the backing files and the pool), never into
//! a loop device, so serving a request can never wait on itself. Several session threads serve
//! requests, so a slow request does not stall others.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, SessionACL, WriteFlags,
};

/// What the filesystem serves: a fixed-size byte range with a data path behind it.
pub trait ServedFile: Send + Sync + std::fmt::Debug {
    fn size(&self) -> u64;
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    fn writable(&self) -> bool;
}

/// Attributes are cheap to recompute; the kernel may cache them briefly.
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
/// Largest single read/write the kernel sends us.
const MAX_IO: u32 = 1 << 20;

/// The files the filesystem shows, by name; entries can be added and removed at run time
/// (snapshot views come and go). Inode numbers are never reused within a mount.
#[derive(Debug)]
pub struct FileTable {
    inner: RwLock<TableInner>,
    /// Where the inode numbers of the files come from (see [`pool_inodes`]).
    inodes: Range<u64>,
}

impl Default for FileTable {
    fn default() -> FileTable {
        FileTable::new(ROOT + 1..u64::MAX)
    }
}

/// The inode numbers the files of pool `pool_uuid`'s filesystem take: 2^32 of them, picked by
/// the pool's uuid. A loop device found at start whose file reads `/<volume>` (its mount
/// detached, or living in another mount namespace) and whose inode can be read is ours only
/// if the number is in our range: another snapbackd's (another pool's) live volume of the same
/// name and size is never taken for one of ours. A dead daemon's file cannot be stat'ed, and
/// is told by name and size alone.
pub fn pool_inodes(pool_uuid: &str) -> Range<u64> {
    // FNV-1a: stable across builds and releases, which std's hasher is not.
    let hash = pool_uuid
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let start = (hash >> 32).max(1) << 32;
    start..start + (1 << 32)
}

#[derive(Debug, Default)]
struct TableInner {
    by_inode: BTreeMap<u64, (String, Arc<dyn ServedFile>)>,
    next_inode: u64,
}

impl FileTable {
    pub fn new(inodes: Range<u64>) -> FileTable {
        FileTable { inner: RwLock::default(), inodes }
    }

    /// The inode numbers its files take.
    pub fn inodes(&self) -> Range<u64> {
        self.inodes.clone()
    }

    pub fn insert(&self, name: &str, file: Arc<dyn ServedFile>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.by_inode.retain(|_, (existing, _)| existing != name);
        // 2^32 files per start: the range never runs out in practice; if it did, the last
        // number would be reused rather than leave the range.
        let inode = inner.next_inode.clamp(self.inodes.start, self.inodes.end - 1);
        inner.next_inode = inode + 1;
        inner.by_inode.insert(inode, (name.to_string(), file));
    }

    pub fn remove(&self, name: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.by_inode.retain(|_, (existing, _)| existing != name);
    }

    fn get(&self, inode: u64) -> Option<Arc<dyn ServedFile>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.by_inode.get(&inode).map(|(_, file)| file.clone())
    }

    fn lookup(&self, name: &OsStr) -> Option<(u64, Arc<dyn ServedFile>)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .by_inode
            .iter()
            .find(|(_, (existing, _))| OsStr::new(existing) == name)
            .map(|(inode, (_, file))| (*inode, file.clone()))
    }

    fn entries(&self) -> Vec<(u64, String)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.by_inode.iter().map(|(inode, (name, _))| (*inode, name.clone())).collect()
    }
}

#[derive(Debug)]
struct VolumeFs {
    files: Arc<FileTable>,
    mounted_at: SystemTime,
    trace: Option<IoTrace>,
}

/// One line per write and fsync (`UserspaceOptions::io_trace`): microseconds since the epoch,
/// pid, then `W INODE OFFSET LEN OK` or `F INODE start|OK`. Each line is one write(2) to a file
/// opened for appending, so what a SIGKILL cuts short is only what had not happened yet.
#[derive(Debug)]
struct IoTrace(std::sync::Mutex<std::fs::File>);

impl IoTrace {
    fn open(path: &Path) -> io::Result<IoTrace> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(IoTrace(std::sync::Mutex::new(file)))
    }

    fn line(&self, what: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        let text = format!("{micros} {} {what}\n", std::process::id());
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A trace that cannot be written must not fail the volume's I/O.
        let _ = file.write_all(text.as_bytes());
    }
}

fn errno(err: &io::Error) -> Errno {
    match err.raw_os_error() {
        Some(code) => Errno::from_i32(code),
        None => Errno::EIO,
    }
}

impl VolumeFs {
    fn attr(&self, inode: u64, file: Option<&dyn ServedFile>) -> FileAttr {
        let (kind, perm, size, nlink) = match file {
            None => (FileType::Directory, 0o755, 0, 2),
            Some(file) => {
                (FileType::RegularFile, if file.writable() { 0o600 } else { 0o400 }, file.size(), 1)
            }
        };
        FileAttr {
            ino: INodeNo(inode),
            size,
            blocks: size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Large requests keep the loop device's I/O efficient; the kernel clamps to its limit.
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) != ROOT {
            return reply.error(Errno::ENOENT);
        }
        match self.files.lookup(name) {
            Some((inode, file)) => {
                reply.entry(&TTL, &self.attr(inode, Some(file.as_ref())), Generation(0))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let inode = u64::from(ino);
        if inode == ROOT {
            return reply.attr(&TTL, &self.attr(ROOT, None));
        }
        match self.files.get(inode) {
            Some(file) => reply.attr(&TTL, &self.attr(inode, Some(file.as_ref()))),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let inode = u64::from(ino);
        let Some(file) = self.files.get(inode) else {
            return reply.error(Errno::ENOENT);
        };
        // Volumes have a fixed size; accept a no-op truncate (O_TRUNC-free tools send one).
        if size.is_some_and(|size| size != file.size()) {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &self.attr(inode, Some(file.as_ref())));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(file) = self.files.get(u64::from(ino)) else {
            return reply.error(Errno::ENOENT);
        };
        let access = rustix::fs::OFlags::from_bits_retain(
            flags.0 as u32 & rustix::fs::OFlags::RWMODE.bits(),
        );
        let wants_write = access != rustix::fs::OFlags::RDONLY;
        if wants_write && !file.writable() {
            return reply.error(Errno::EROFS);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.files.get(u64::from(ino)) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset.saturating_add(u64::from(size)).min(file.size());
        if offset >= end {
            return reply.data(&[]);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        match file.read(offset, &mut buf) {
            Ok(()) => reply.data(&buf),
            Err(err) => {
                tracing::error!(offset, len = buf.len(), %err, "volume read failed");
                reply.error(errno(&err))
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(file) = self.files.get(u64::from(ino)) else {
            return reply.error(Errno::ENOENT);
        };
        if !file.writable() {
            return reply.error(Errno::EROFS);
        }
        if offset.saturating_add(data.len() as u64) > file.size() {
            return reply.error(Errno::ENOSPC);
        }
        let written = file.write(offset, data);
        if let Some(trace) = &self.trace {
            trace.line(format_args!(
                "W {} {offset} {} {}",
                u64::from(ino),
                data.len(),
                written.is_ok()
            ));
        }
        match written {
            Ok(()) => reply.written(data.len() as u32),
            Err(err) => {
                // Refused on purpose during shutdown (a file system still mounted): expected,
                // and said once by the shutdown itself.
                if err.get_ref().is_some_and(|inner| inner.is::<super::volume::VolumeClosed>()) {
                    tracing::debug!(offset, len = data.len(), "write to a closed volume refused");
                } else {
                    tracing::error!(offset, len = data.len(), %err, "volume write failed");
                }
                reply.error(errno(&err))
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Close-time flush: durability is requested with fsync, nothing to do here.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(file) = self.files.get(u64::from(ino)) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(trace) = &self.trace {
            trace.line(format_args!("F {} start", u64::from(ino)));
        }
        let flushed = file.flush();
        if let Some(trace) = &self.trace {
            trace.line(format_args!("F {} {}", u64::from(ino), flushed.is_ok()));
        }
        match flushed {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (ROOT, FileType::Directory, ".".to_string()),
            (ROOT, FileType::Directory, "..".to_string()),
        ];
        entries.extend(
            self.files
                .entries()
                .into_iter()
                .map(|(inode, name)| (inode, FileType::RegularFile, name)),
        );
        for (index, (inode, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(inode), (index + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted volume filesystem; dropping it unmounts.
#[derive(Debug)]
pub struct FuseMount {
    session: Option<BackgroundSession>,
}

impl FuseMount {
    /// Mounts the filesystem serving `files` at `mountpoint` (created if missing), with
    /// `threads` request-serving threads.
    pub fn mount(
        mountpoint: &Path,
        files: Arc<FileTable>,
        threads: usize,
        trace: Option<&Path>,
    ) -> io::Result<FuseMount> {
        let trace = trace.map(IoTrace::open).transpose()?;
        if is_mountpoint(mountpoint) {
            // Left behind by a snapbackd that did not shut down: its server is gone, so the
            // mount only answers ENOTCONN. Detach it lazily and mount afresh.
            tracing::warn!(mountpoint = %mountpoint.display(), "removing a stale volume filesystem mount");
            let status =
                std::process::Command::new("umount").arg("--lazy").arg(mountpoint).status()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "cannot unmount stale {}",
                    mountpoint.display()
                )));
            }
        }
        std::fs::create_dir_all(mountpoint)?;
        let fs = VolumeFs { files, mounted_at: SystemTime::now().max(UNIX_EPOCH), trace };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("snapback".into()),
            MountOption::Subtype("snapback".into()),
            MountOption::DefaultPermissions,
            MountOption::NoExec,
            MountOption::NoSuid,
            MountOption::NoDev,
        ];
        config.acl = SessionACL::Owner;
        config.n_threads = Some(threads.max(1));
        config.clone_fd = true;
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(FuseMount { session: Some(session) })
    }

    /// Unmounts and waits for the serving threads (also done on drop).
    pub fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            if let Err(err) = session.umount_and_join() {
                // Still in use (a loop device or a process holds a file): the kernel detaches
                // it when the last user goes; the serving threads end then.
                tracing::warn!(%err, "unmounting the volume filesystem failed");
            }
        }
    }
}

/// Whether something is mounted exactly at `path` (per /proc/self/mountinfo).
fn is_mountpoint(path: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    // Field 5 is the mount point, with spaces etc. escaped as octal.
    mountinfo.lines().any(|line| {
        line.split(' ').nth(4).is_some_and(|field| field.replace("\\040", " ") == wanted)
    })
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pool_has_its_own_inode_range_and_it_never_changes() {
        let a = pool_inodes("3f2a1c9e-7b61-4d0a-9a51-2f1d6c0b8e44");
        let b = pool_inodes("3f2a1c9e-7b61-4d0a-9a51-2f1d6c0b8e45");
        assert!(a.end <= b.start || b.end <= a.start, "{a:?} overlaps {b:?}");
        assert!(a.start > ROOT && a.end - a.start == 1 << 32);
        // Pinned: a restarted (or upgraded) snapbackd must find its old devices in the range
        // the one before it used.
        assert_eq!(a, pool_inodes("3f2a1c9e-7b61-4d0a-9a51-2f1d6c0b8e44"));
        assert_eq!(a.start, PINNED_START);
    }

    const PINNED_START: u64 = 13_800_464_898_326_528_000;

    #[test]
    fn files_take_their_inode_numbers_from_the_table_range() {
        let table = FileTable::new(100..103);
        #[derive(Debug)]
        struct Empty;
        impl ServedFile for Empty {
            fn size(&self) -> u64 {
                0
            }
            fn read(&self, _: u64, _: &mut [u8]) -> io::Result<()> {
                Ok(())
            }
            fn write(&self, _: u64, _: &[u8]) -> io::Result<()> {
                Ok(())
            }
            fn flush(&self) -> io::Result<()> {
                Ok(())
            }
            fn writable(&self) -> bool {
                false
            }
        }
        for name in ["a", "b", "a"] {
            table.insert(name, Arc::new(Empty));
        }
        let inodes: Vec<u64> = table.entries().into_iter().map(|(inode, _)| inode).collect();
        assert_eq!(inodes, vec![101, 102], "a re-inserted file gets a new number, in range");
    }
}
