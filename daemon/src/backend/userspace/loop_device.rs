//! Loop devices over the volume files, driven through util-linux `losetup` and `blockdev`
//! (the `loopdev-3` crate needs bindgen/libclang at build time; the tools are on every system).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(command: &mut Command) -> io::Result<String> {
    let output = command.output().map_err(|err| {
        io::Error::new(err.kind(), format!("running {:?}: {err}", command.get_program()))
    })?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{:?} {:?} failed: {}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Attaches a free loop device to `file` and returns its path (e.g. `/dev/loop3`).
pub fn attach(file: &Path) -> io::Result<PathBuf> {
    let device = run(Command::new("losetup").args(["--find", "--show", "--nooverlap"]).arg(file))?;
    if device.is_empty() {
        return Err(io::Error::other(format!("losetup gave no device for {}", file.display())));
    }
    Ok(PathBuf::from(device))
}

/// Detaches `device` (if still mounted, the kernel detaches it at last close).
pub fn detach(device: &Path) -> io::Result<()> {
    run(Command::new("losetup").arg("--detach").arg(device)).map(drop)
}

/// Waits (up to `timeout`) until `device` no longer has a backing file: `losetup -d` only
/// marks a device still open elsewhere (udev probing, a mount) for detaching at last close.
pub fn wait_detached(device: &Path, timeout: std::time::Duration) -> bool {
    let Some(name) = device.file_name() else { return true };
    let backing = Path::new("/sys/block").join(name).join("loop/backing_file");
    let deadline = std::time::Instant::now() + timeout;
    while backing.exists() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// Detaches loop devices whose backing file lies under `dir`: left behind by a snapbackd that
/// died without shutting down (their FUSE files no longer answer). Returns what it detached.
pub fn detach_stale(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    let mut detached = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        let backing = backing.trim_end().trim_end_matches(" (deleted)");
        if Path::new(backing).starts_with(dir) {
            let device = Path::new("/dev").join(&name);
            match detach(&device) {
                Ok(()) => detached.push(device),
                Err(err) => tracing::warn!(device = %device.display(), %err, "cannot detach stale loop device"),
            }
        }
    }
    detached
}

/// Drops the device's buffer cache (BLKFLSBUF), so nothing stale survives a merge.
pub fn flush_buffers(device: &Path) -> io::Result<()> {
    run(Command::new("blockdev").arg("--flushbufs").arg(device)).map(drop)
}

/// An exclusive hold on a block device: while held nobody can mount it.
#[derive(Debug)]
pub struct ExclusiveHold {
    _file: std::fs::File,
}

/// Tries to open `device` exclusively. `Ok(None)` means it is busy (mounted or opened
/// exclusively by someone, EBUSY).
pub fn hold_exclusive(device: &Path) -> io::Result<Option<ExclusiveHold>> {
    let o_excl = rustix::fs::OFlags::EXCL.bits() as i32;
    match OpenOptions::new().read(true).custom_flags(o_excl).open(device) {
        Ok(file) => Ok(Some(ExclusiveHold { _file: file })),
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => Ok(None),
        Err(err) => Err(err),
    }
}
