//! Loop devices over the volume files, driven through util-linux `losetup` and `blockdev`
//! (the `loopdev-3` crate needs bindgen/libclang at build time; the tools are on every system).

use std::fs::OpenOptions;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
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

/// A read-only loop device over `file`: the one already bound to it when there is one
/// (`--nooverlap` hands that back), else a new one.
pub fn attach_read_only(file: &Path) -> io::Result<PathBuf> {
    let device = run(Command::new("losetup")
        .args(["--find", "--show", "--nooverlap", "--read-only"])
        .arg(file))?;
    if device.is_empty() {
        return Err(io::Error::other(format!("losetup gave no device for {}", file.display())));
    }
    Ok(PathBuf::from(device))
}

/// The loop devices bound to `file` now.
pub fn bound_to(file: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    let wanted = file.to_string_lossy();
    let mut devices: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("loop"))
        .map(|entry| Path::new("/dev").join(entry.file_name()))
        .filter(|device| backing_file(device).is_some_and(|backing| backing == wanted))
        .collect();
    devices.sort();
    devices
}

/// Where `device` is mounted, as far as this process can see: in the first process's mount
/// namespace (the host's, when snapbackd runs in a namespace of its own) and in its own.
pub fn mount_points(device: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(device) else { return Vec::new() };
    let numbers = format!("{}:{}", rustix::fs::major(meta.rdev()), rustix::fs::minor(meta.rdev()));
    let mut found = Vec::new();
    for table in ["/proc/1/mountinfo", "/proc/self/mountinfo"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.get(2) == Some(&numbers.as_str()) {
                if let Some(point) = fields.get(4) {
                    if !found.iter().any(|p| p == point) {
                        found.push(point.to_string());
                    }
                }
            }
        }
    }
    found
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

/// A loop device an earlier snapbackd attached to one of the files it served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLoop {
    pub device: PathBuf,
    /// The served file it presented: a volume (`data`) or a snapshot file (`data@3`).
    pub file_name: String,
    /// Its backing file as the kernel reported it, to recognise this same binding later.
    backing: String,
}

impl StaleLoop {
    /// The volume it presented, when it was a volume's device (not a snapshot file's).
    pub fn volume(&self) -> Option<&str> {
        (!self.file_name.contains('@')).then_some(self.file_name.as_str())
    }

    /// Still bound to that file after `losetup --detach`: something holds it open (a file
    /// system mounted on it), and the kernel detaches it only at its last close.
    pub fn still_bound(&self) -> bool {
        let Some(now) = backing_file(&self.device) else { return false };
        // the same binding, or the same file once its stale mount was detached as well
        let path = Path::new(now.trim_end_matches(" (deleted)"));
        now == self.backing
            || (path.to_str().and_then(|p| p.strip_prefix('/')) == Some(self.file_name.as_str())
                && !can_back_a_loop_device(path))
    }
}

/// The backing file of loop device `device`, as /sys reports it (None when unbound).
fn backing_file(device: &Path) -> Option<String> {
    let name = device.file_name()?;
    let text =
        std::fs::read_to_string(Path::new("/sys/block").join(name).join("loop/backing_file"))
            .ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

/// Detaches loop devices left behind by a snapbackd that stopped or died while they were
/// attached to files of its volume filesystem (mounted at `dir`): loop devices whose backing
/// file lies under `dir`, or — once the mount namespace that filesystem lived in is gone
/// (systemd gives snapbackd.service a namespace of its own and destroys it at every stop and
/// crash) — the same file seen from the detached mount's root: `/<name>` for a file the
/// daemon serves (`served`: volume name and size; `<volume>@<id>` too), of that volume's size,
/// with no file or block device at that path here. One still in use (mounted) is only marked
/// to detach at its last close: see [`StaleLoop::still_bound`]. Returns what it detached.
pub fn detach_stale(dir: &Path, served: &[(String, u64)], inodes: &Range<u64>) -> Vec<StaleLoop> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    let mut detached = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("loop") {
            continue;
        }
        let device = Path::new("/dev").join(&name);
        let Some(backing) = backing_file(&device) else { continue };
        let path = Path::new(backing.trim_end_matches(" (deleted)"));
        let file_name = match path.strip_prefix(dir) {
            Ok(rest) => rest.to_string_lossy().into_owned(),
            Err(_) => {
                let size = std::fs::read_to_string(entry.path().join("size"))
                    .ok()
                    .and_then(|sectors| sectors.trim().parse::<u64>().ok())
                    .map(|sectors| sectors * 512);
                // Its inode can only be read while its daemon answers (the kernel stats the
                // file): a live one outside our range is another pool's; a dead one is told by
                // name and size alone.
                match served_file_seen_detached(path, served, size) {
                    Some(file_name)
                        if backing_inode(&device).is_none_or(|i| inodes.contains(&i)) =>
                    {
                        file_name
                    }
                    _ => continue,
                }
            }
        };
        match detach(&device) {
            Ok(()) => detached.push(StaleLoop { device, file_name, backing }),
            Err(err) => {
                tracing::warn!(device = %device.display(), %err, "cannot detach stale loop device")
            }
        }
    }
    detached
}

/// The inode number of `device`'s backing file (LOOP_GET_STATUS64 stats the file: None when
/// the FUSE daemon behind it is gone, as the kernel then cannot).
fn backing_inode(device: &Path) -> Option<u64> {
    let out = Command::new("losetup")
        .args(["--list", "--noheadings", "--output", "BACK-INO"])
        .arg(device)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// `/<volume>` or `/<volume>@<id>` of that volume's size, and not a file or block device that
/// exists here (a loop device can only be backed by one of those): a served file whose mount
/// was detached.
fn served_file_seen_detached(
    path: &Path,
    served: &[(String, u64)],
    size: Option<u64>,
) -> Option<String> {
    let file_name = path.to_str()?.strip_prefix('/')?;
    let volume = match file_name.split_once('@') {
        Some((volume, id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => volume,
        Some(_) => return None,
        None => file_name,
    };
    served.iter().find(|(name, bytes)| name == volume && Some(*bytes) == size)?;
    (!can_back_a_loop_device(path)).then(|| file_name.to_string())
}

/// Whether `path` is, here, something a loop device can be bound to.
fn can_back_a_loop_device(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.file_type().is_file() || meta.file_type().is_block_device())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_served_file_seen_from_its_detached_mount_is_recognised_by_name_and_size() {
        let served = [("data".to_string(), 64 << 20), ("files".to_string(), 32 << 20)];
        let at = |path: &str, size| served_file_seen_detached(Path::new(path), &served, Some(size));
        assert_eq!(at("/data", 64 << 20), Some("data".to_string()));
        assert_eq!(at("/data@12", 64 << 20), Some("data@12".to_string()));
        assert_eq!(at("/files", 32 << 20), Some("files".to_string()));
        // another size, another name, a nested path, a bad snapshot suffix: not ours
        assert_eq!(at("/data", 32 << 20), None);
        assert_eq!(at("/other", 64 << 20), None);
        assert_eq!(at("/x/data", 64 << 20), None);
        assert_eq!(at("/data@", 64 << 20), None);
        assert_eq!(at("/data@1x", 64 << 20), None);
        assert_eq!(served_file_seen_detached(Path::new("/data"), &served, None), None);
    }

    #[test]
    fn only_files_and_block_devices_can_back_a_loop_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, b"x").unwrap();
        assert!(can_back_a_loop_device(&file));
        assert!(!can_back_a_loop_device(dir.path()));
        assert!(!can_back_a_loop_device(Path::new("/dev/null")));
        assert!(!can_back_a_loop_device(&dir.path().join("missing")));
    }
}
