//! `snapbackctl mount ID VOLUME DIR` and `snapbackctl umount ID VOLUME|DIR`: a snapshot's
//! volume, as it was when the set was taken, mounted read-only.
//!
//! The daemon hands out the snapshot's device (`Snapshot.OpenVolume`); this command only
//! mounts it, with options that keep the file system from writing to it: a read-only mount of
//! ext4 still replays its journal and XFS its log, so ext4 gets `noload` and XFS
//! `norecovery` (and `nouuid`, since the origin with the same UUID is mounted already).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::Outcome;

/// The file systems told apart by their superblock, and how each is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (the ext4 driver mounts all three).
    Ext4,
    Xfs,
    /// Anything else: `mount` probes it, plain `ro`.
    Other,
}

impl FsKind {
    /// The `-t` argument, when we know better than `mount`'s probing.
    pub fn fstype(self) -> Option<&'static str> {
        match self {
            FsKind::Ext4 => Some("ext4"),
            FsKind::Xfs => Some("xfs"),
            FsKind::Other => None,
        }
    }

    /// Mount options that write nothing to the device.
    pub fn options(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ro,noload",
            FsKind::Xfs => "ro,norecovery,nouuid",
            FsKind::Other => "ro",
        }
    }

    fn name(self) -> &'static str {
        self.fstype().unwrap_or("unknown")
    }
}

/// Which file system the first 2 KiB of a device hold.
pub fn detect(head: &[u8]) -> FsKind {
    // XFS: "XFSB" at the start of the primary superblock.
    if head.get(0..4) == Some(b"XFSB".as_slice()) {
        return FsKind::Xfs;
    }
    // ext2/3/4: s_magic 0xEF53 (little-endian) at 1024 + 0x38.
    if head.get(1080..1082) == Some([0x53, 0xef].as_slice()) {
        return FsKind::Ext4;
    }
    FsKind::Other
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Asks the daemon for the snapshot's device of `volume` in set `id`.
async fn open_volume(client: &Client, id: u32, volume: &str) -> Result<(String, File), Error> {
    let path = snapback_dbus::snapshot_path(id);
    let proxy = client.snapshot_proxy(&path).await?;
    let options: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
    match proxy.open_volume(volume, options).await {
        Ok((device, fd)) => Ok((device, File::from(std::os::fd::OwnedFd::from(fd)))),
        Err(e) => {
            let error = Error::from(e);
            match &error {
                Error::DBus { name, .. } if name == "org.freedesktop.DBus.Error.UnknownObject" => {
                    Err(crate::bus::not_found(id))
                }
                _ => Err(error),
            }
        }
    }
}

fn run_tool(command: &mut Command) -> Result<(), Error> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(io(format!("running {shown}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Failed(format!(
        "{shown} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// `snapbackctl mount ID VOLUME DIR`.
pub async fn mount(
    client: &Client,
    format: Format,
    id: u32,
    volume: &str,
    dir: &Path,
) -> Result<Outcome, Error> {
    let meta = std::fs::metadata(dir).map_err(io(format!("mount point {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Error::Failed(format!("{} is not a directory", dir.display())));
    }
    let (device, file) = open_volume(client, id, volume).await?;
    let mut head = vec![0u8; 2048];
    file.read_exact_at(&mut head, 0).map_err(io(format!("reading {device}")))?;
    let kind = detect(&head);
    let mut command = Command::new("mount");
    command.args(["-o", kind.options()]);
    if let Some(fstype) = kind.fstype() {
        command.args(["-t", fstype]);
    }
    command.arg(&device).arg(dir);
    run_tool(&mut command)?;
    // Held until the mount holds the device itself.
    drop(file);
    let text = match format {
        Format::Human => format!(
            "mounted volume {volume} of snapshot set {id} ({}, {device}) read-only at {}\n",
            kind.name(),
            dir.display()
        ),
        Format::Json => {
            crate::output::json::pretty(json!({
                "id": id,
                "volume": volume,
                "device": device,
                "mountpoint": dir.display().to_string(),
                "fstype": kind.name(),
                "options": kind.options(),
            })) + "\n"
        }
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}

/// A mount point as /proc/self/mountinfo escapes it (space, tab, newline, backslash as \ooo).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the device `major:minor` is mounted (in this mount namespace).
fn mount_points_of(mountinfo: &str, numbers: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(2) == Some(&numbers)).then(|| fields.get(4).map(|p| unescape(p)))?
        })
        .map(PathBuf::from)
        .collect()
}

/// The device number (`major:minor`) mounted at `dir` here, if `dir` is a mount point.
fn device_at(mountinfo: &str, dir: &Path) -> Option<String> {
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = fields.get(4)?;
        (Path::new(&unescape(point)) == dir).then(|| fields.get(2).map(|n| n.to_string()))?
    })
}

/// `major:minor` of the snapshot device of `volume` in set `id`, and its path.
async fn snapshot_device(
    client: &Client,
    id: u32,
    volume: &str,
) -> Result<(String, String), Error> {
    let (device, file) = open_volume(client, id, volume).await?;
    let rdev = file.metadata().map_err(io(format!("device {device}")))?.rdev();
    Ok((format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev)), device))
}

/// `snapbackctl umount ID VOLUME|DIR`. A DIR is unmounted only when what is mounted there is
/// a snapshot device of set ID: a mistyped `umount 3 /` must not take `/` away.
pub async fn umount(
    client: &Client,
    format: Format,
    id: u32,
    target: &str,
) -> Result<Outcome, Error> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading /proc/self/mountinfo".into()))?;
    let points = if target.contains('/') || Path::new(target).is_dir() {
        let dir = std::fs::canonicalize(target).map_err(io(format!("mount point {target}")))?;
        let Some(mounted) = device_at(&mountinfo, &dir) else {
            return Err(Error::Failed(format!("{} is not a mount point", dir.display())));
        };
        let volumes = client.snapshot(id).await?.volumes;
        let mut ours = false;
        for volume in &volumes {
            if snapshot_device(client, id, volume).await?.0 == mounted {
                ours = true;
                break;
            }
        }
        if !ours {
            return Err(Error::Failed(format!(
                "{} is not a mount of snapshot set {id} (volumes: {}); nothing unmounted",
                dir.display(),
                volumes.join(", ")
            )));
        }
        vec![dir]
    } else {
        let (numbers, device) = snapshot_device(client, id, target).await?;
        let points = mount_points_of(&mountinfo, &numbers);
        if points.is_empty() {
            return Err(Error::Failed(format!(
                "volume {target} of snapshot set {id} ({device}) is not mounted"
            )));
        }
        points
    };
    for point in &points {
        run_tool(Command::new("umount").arg(point))?;
    }
    let text = match format {
        Format::Human => {
            points.iter().map(|p| format!("unmounted {}\n", p.display())).collect::<String>()
        }
        Format::Json => {
            let shown: Vec<String> = points.iter().map(|p| p.display().to_string()).collect();
            crate::output::json::pretty(json!({ "id": id, "unmounted": shown })) + "\n"
        }
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblocks_pick_the_options_that_write_nothing() {
        let mut ext = vec![0u8; 2048];
        ext[1080] = 0x53;
        ext[1081] = 0xef;
        assert_eq!(detect(&ext), FsKind::Ext4);
        assert_eq!(FsKind::Ext4.options(), "ro,noload");
        let mut xfs = vec![0u8; 2048];
        xfs[..4].copy_from_slice(b"XFSB");
        assert_eq!(detect(&xfs), FsKind::Xfs);
        assert_eq!(FsKind::Xfs.options(), "ro,norecovery,nouuid");
        assert_eq!(detect(&[0u8; 2048]), FsKind::Other);
        assert_eq!(FsKind::Other.options(), "ro");
        assert_eq!(detect(&[]), FsKind::Other);
    }

    #[test]
    fn mount_points_are_found_by_device_number_and_unescaped() {
        let info = "36 35 7:3 / /mnt/snap\\040one ro,relatime shared:1 - ext4 /dev/loop3 ro\n\
                    37 35 7:4 / /other rw - ext4 /dev/loop4 rw\n";
        assert_eq!(mount_points_of(info, "7:3"), vec![PathBuf::from("/mnt/snap one")]);
        assert!(mount_points_of(info, "7:9").is_empty());
        assert_eq!(device_at(info, Path::new("/other")), Some("7:4".to_string()));
        assert_eq!(device_at(info, Path::new("/mnt")), None);
    }
}
