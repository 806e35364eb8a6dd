//! Freezes the file systems mounted on volumes while a snapshot set is taken, so each snapshot
//! holds a clean file system (journal flushed, no recovery needed to mount it) — what the
//! kernel backend gets from dm suspend's lockfs. util-linux `fsfreeze` does the FIFREEZE /
//! FITHAW ioctls, as `losetup` does the loop ones, so the daemon keeps no unsafe code.
//!
//! Freezing is best effort: a file system that cannot be frozen (no support, already frozen,
//! hidden from the daemon's mount namespace) still gets the `sync()` and the origin suspend,
//! which make its snapshot crash-consistent, exactly as a power cut would leave it.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// File systems frozen by [`freeze_mounted`]; dropping it thaws them (newest first).
#[derive(Debug, Default)]
pub struct FrozenFilesystems {
    mountpoints: Vec<PathBuf>,
    /// Mount points that could not be frozen, and why: logged only after the thaw, since the
    /// journal may live on a file system frozen meanwhile.
    not_frozen: Vec<(PathBuf, String)>,
}

impl FrozenFilesystems {
    pub fn mountpoints(&self) -> &[PathBuf] {
        &self.mountpoints
    }
}

impl Drop for FrozenFilesystems {
    fn drop(&mut self) {
        for mountpoint in self.mountpoints.iter().rev() {
            if let Err(err) = fsfreeze("--unfreeze", mountpoint) {
                // A file system left frozen blocks every writer on it: say so as loudly as we can.
                tracing::error!(mountpoint = %mountpoint.display(), %err,
                    "could not thaw a file system after the snapshot; run `fsfreeze --unfreeze` on it");
            }
        }
        for (mountpoint, err) in &self.not_frozen {
            tracing::warn!(mountpoint = %mountpoint.display(), %err,
                "could not freeze the file system; its snapshot is crash-consistent only");
        }
    }
}

/// Freezes one mount of every file system on `devices` (block device paths).
pub fn freeze_mounted(devices: &[PathBuf]) -> FrozenFilesystems {
    let mut frozen = FrozenFilesystems::default();
    let wanted: BTreeSet<(u32, u32)> =
        devices.iter().filter_map(|device| device_number(device)).collect();
    if wanted.is_empty() {
        return frozen;
    }
    let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!(%err, "cannot read /proc/self/mountinfo; snapshots are taken without freezing");
            return frozen;
        }
    };
    let mounts = mounts_of(&mountinfo, &wanted);
    for device in &wanted {
        let listed: Vec<&PathBuf> =
            mounts.iter().filter(|(d, _)| d == device).map(|(_, path)| path).collect();
        let Some(first) = listed.first() else { continue };
        // A file system mounted twice (bind mounts) is one superblock, frozen once, through a
        // mount point that still leads to it: another file system mounted over a path would
        // be the one frozen there.
        let Some(reachable) = listed.iter().find(|path| leads_to(path, *device)) else {
            let why = format!(
                "every mount point of device {}:{} is covered by another mount",
                device.0, device.1
            );
            frozen.not_frozen.push(((*first).clone(), why));
            continue;
        };
        match fsfreeze("--freeze", reachable) {
            Ok(()) => frozen.mountpoints.push((*reachable).clone()),
            Err(err) => frozen
                .not_frozen
                .push(((*reachable).clone(), format!("{err} (device {}:{})", device.0, device.1))),
        }
    }
    frozen
}

/// Whether `path` is, now, the root of a file system on `device`.
fn leads_to(path: &Path, device: (u32, u32)) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev())) == device)
}

/// `major:minor` of a block device node.
fn device_number(device: &Path) -> Option<(u32, u32)> {
    let meta = std::fs::metadata(device).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    Some((rustix::fs::major(rdev), rustix::fs::minor(rdev)))
}

/// Every mount point of the wanted devices in a mountinfo text, in its order.
fn mounts_of(mountinfo: &str, wanted: &BTreeSet<(u32, u32)>) -> Vec<((u32, u32), PathBuf)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(numbers), Some(mountpoint)) = (fields.get(2), fields.get(4)) else { continue };
        let Some((major, minor)) = numbers.split_once(':') else { continue };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else { continue };
        let device = (major, minor);
        if wanted.contains(&device) {
            out.push((device, PathBuf::from(unescape_mountinfo(mountpoint))));
        }
    }
    out
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |value, digit| value.wrapping_mul(8).wrapping_add(digit - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fsfreeze(action: &str, mountpoint: &Path) -> Result<(), String> {
    let output = Command::new("fsfreeze")
        .arg(action)
        .arg(mountpoint)
        .output()
        .map_err(|err| format!("cannot run fsfreeze: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 7:3 / /mnt/with\\040space rw,relatime shared:20 - ext4 /dev/loop3 rw
41 22 7:3 / /srv/bind rw,relatime shared:20 - ext4 /dev/loop3 rw
42 22 7:4 /sub /var/data rw - xfs /dev/loop4 rw
broken line
";

    #[test]
    fn every_mountpoint_of_the_wanted_devices_with_escapes_decoded() {
        let wanted = BTreeSet::from([(7, 3), (7, 4), (7, 9)]);
        let mounts = mounts_of(MOUNTINFO, &wanted);
        assert_eq!(
            mounts,
            vec![
                ((7, 3), PathBuf::from("/mnt/with space")),
                ((7, 3), PathBuf::from("/srv/bind")),
                ((7, 4), PathBuf::from("/var/data")),
            ]
        );
    }

    #[test]
    fn escapes_only_for_three_octal_digits() {
        assert_eq!(unescape_mountinfo("a\\011b\\134c"), "a\tb\\c");
        assert_eq!(unescape_mountinfo("trailing\\"), "trailing\\");
        assert_eq!(unescape_mountinfo("\\9x"), "\\9x");
    }

    #[test]
    fn unmounted_or_non_block_devices_freeze_nothing() {
        let frozen =
            freeze_mounted(&[PathBuf::from("/dev/null"), PathBuf::from("/no/such/device")]);
        assert!(frozen.mountpoints().is_empty());
    }
}
