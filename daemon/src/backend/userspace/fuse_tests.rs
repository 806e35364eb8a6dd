//! The FUSE + loop layer alone, over an in-memory file: ext4 can be made, mounted and read back.
//! Needs root, /dev/fuse and loop devices.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::fuse_fs::{FileTable, FuseMount, ServedFile};
use super::loop_device;

#[derive(Debug)]
struct MemFile {
    bytes: Mutex<Vec<u8>>,
    writable: bool,
}

impl ServedFile for MemFile {
    fn size(&self) -> u64 {
        self.bytes.lock().unwrap().len() as u64
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        buf.copy_from_slice(&bytes[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes.lock().unwrap();
        bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn writable(&self) -> bool {
        self.writable
    }
}

fn sh(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

/// What a failing test must not leave behind: on drop, unmounts `mounted` (lazily if busy)
/// and detaches the loop devices backed by a file under `fuse_dir` (only ours: tests run in
/// parallel and reuse free device numbers). Declared after a FUSE mount, it runs before the
/// mount's own drop, which could not unmount a FUSE file system still in use.
struct Leftovers {
    mounted: PathBuf,
    fuse_dir: PathBuf,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if is_mounted(&self.mounted)
            && !Command::new("umount").arg(&self.mounted).status().is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&self.mounted).status();
        }
        loop_device::detach_stale(&self.fuse_dir, &[], &(0..0));
    }
}

#[test]
fn ext4_on_a_loop_device_over_a_fuse_file() {
    assert!(rustix::process::geteuid().is_root(), "this test needs root (FUSE mount, losetup)");
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("fuse");
    let table = Arc::new(FileTable::default());
    let file = Arc::new(MemFile { bytes: Mutex::new(vec![0; 64 << 20]), writable: true });
    table.insert("vol", file.clone());
    table.insert("ro", Arc::new(MemFile { bytes: Mutex::new(vec![7; 4096]), writable: false }));
    let mut mount = FuseMount::mount(&mountpoint, table.clone(), 4, None).unwrap();
    let fs_dir = dir.path().join("mnt");
    let _leftovers = Leftovers { mounted: fs_dir.clone(), fuse_dir: mountpoint.clone() };

    let listing: Vec<String> = std::fs::read_dir(&mountpoint)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listing.len(), 2, "{listing:?}");
    assert_eq!(std::fs::read(mountpoint.join("ro")).unwrap(), vec![7; 4096]);
    assert!(std::fs::OpenOptions::new().write(true).open(mountpoint.join("ro")).is_err());

    let device = loop_device::attach(&mountpoint.join("vol")).unwrap();
    let device_str = device.to_str().unwrap().to_string();
    sh("mkfs.ext4", &["-q", "-F", "-E", "nodiscard", &device_str]);
    std::fs::create_dir_all(&fs_dir).unwrap();
    sh("mount", &[&device_str, fs_dir.to_str().unwrap()]);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(fs_dir.join("big"), &payload).unwrap();
    // mounted: an exclusive open is refused
    assert!(loop_device::hold_exclusive(&device).unwrap().is_none());
    sh("umount", &[fs_dir.to_str().unwrap()]);
    assert!(loop_device::hold_exclusive(&device).unwrap().is_some());
    loop_device::flush_buffers(&device).unwrap();
    sh("mount", &["-o", "ro", &device_str, fs_dir.to_str().unwrap()]);
    assert_eq!(std::fs::read(fs_dir.join("big")).unwrap(), payload);
    sh("umount", &[fs_dir.to_str().unwrap()]);
    loop_device::detach(&device).unwrap();
    // the superblock went through FUSE into the in-memory file
    assert_eq!(&file.bytes.lock().unwrap()[1080..1082], &[0x53, 0xef]);
    mount.unmount();
    assert!(!is_mounted(&mountpoint));
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

#[test]
fn a_leftover_mount_at_the_mountpoint_is_replaced() {
    assert!(rustix::process::geteuid().is_root(), "this test needs root (mount)");
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("fuse");
    std::fs::create_dir_all(&mountpoint).unwrap();
    sh("mount", &["-t", "tmpfs", "leftover", mountpoint.to_str().unwrap()]);
    let _leftovers = Leftovers { mounted: mountpoint.clone(), fuse_dir: mountpoint.clone() };
    assert!(is_mounted(&mountpoint));
    let table = Arc::new(FileTable::default());
    table.insert("vol", Arc::new(MemFile { bytes: Mutex::new(vec![3; 8192]), writable: true }));
    let mut mount = FuseMount::mount(&mountpoint, table, 2, None).unwrap();
    assert_eq!(std::fs::read(mountpoint.join("vol")).unwrap(), vec![3; 8192]);
    mount.unmount();
    assert!(!is_mounted(&mountpoint));
}
