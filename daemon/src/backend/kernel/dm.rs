//! The few device-mapper operations the kernel backend needs, over the `devicemapper` crate's
//! ioctls (never `dmsetup`). Every call is blocking and must run off the async executor.
//!
//! The daemon creates the `/dev/mapper` node of the device users mount itself, because early
//! boot and the VM harness have no udev. Where udev runs (its control socket exists), the
//! crate sends a cookie with every resume and remove and waits until udev's
//! `dmsetup udevcomplete` (95-dm-notify.rules) releases it; the upper 16 bits of that cookie
//! carry the [`UdevView`] flags each resume passes, which the device-mapper rules
//! (55-dm.rules, 60-persistent-storage-dm.rules; 10-dm/13-dm-disk upstream) read. Without
//! udev the crate sends no cookie and waits for nothing: the flags go nowhere, as nobody
//! listens to the event.

use std::path::{Path, PathBuf};

use devicemapper::{DevId, DmFlags, DmName, DmOptions, DmUdevFlags, DmUuid, DM};

use super::table::{DevNum, TableLine};

/// A device-mapper failure, with the device and the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("device-mapper: {step} {device}: {message}")]
pub struct DmError {
    pub step: &'static str,
    pub device: String,
    pub message: String,
}

pub type DmResult<T> = Result<T, DmError>;

/// What we need to know about an existing dm device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmDeviceInfo {
    pub name: String,
    pub uuid: Option<String>,
    pub dev: DevNum,
    pub open_count: i32,
    pub suspended: bool,
    /// It has a live table. A device created but never resumed has none, and every I/O to
    /// it fails.
    pub live: bool,
}

/// What udev may do with a device when it is resumed (the `change` event the rules act on).
///
/// A snapshot and the `-real` device carry the origin's filesystem, UUID and label included;
/// a COW device carries a COW. Left to the rules, each would be probed by blkid and claim
/// `/dev/disk/by-uuid/…` and `by-label/…` at the origin's priority, and the device whose event
/// udev handled last would win: `mount UUID=…` could then mount a snapshot (lvm2's GitHub
/// issue 146 is this bug for LVM, which hides its own layers with these flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdevView {
    /// The device users mount: every rule runs (its `/dev/mapper` link, blkid, by-uuid and
    /// by-label links, systemd's `.device` unit, the inotify watch).
    Visible,
    /// Part of the stack nobody mounts directly: udev keeps its `/dev/mapper/<name>` link (a
    /// snapshot stays mountable by name) but skips the disk rules (no blkid, no `/dev/disk`
    /// links) and tells other rules (md, LVM, multipath) to leave it alone; the low priority
    /// keeps it behind the origin should anything link it anyway.
    Hidden,
}

impl UdevView {
    /// The flags udev's device-mapper rules decode from the cookie (`dmsetup udevflags`).
    pub fn udev_flags(self) -> DmUdevFlags {
        match self {
            UdevView::Visible => DmUdevFlags::empty(),
            UdevView::Hidden => {
                DmUdevFlags::DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG
                    | DmUdevFlags::DM_UDEV_DISABLE_DISK_RULES_FLAG
                    | DmUdevFlags::DM_UDEV_DISABLE_OTHER_RULES_FLAG
                    | DmUdevFlags::DM_UDEV_LOW_PRIORITY_FLAG
            }
        }
    }

    fn options(self) -> DmOptions {
        DmOptions::default().set_udev_flags(self.udev_flags())
    }
}

/// A handle on `/dev/mapper/control`.
pub struct DmControl {
    dm: DM,
}

impl std::fmt::Debug for DmControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DmControl")
    }
}

fn err(step: &'static str, device: &str, e: impl std::fmt::Display) -> DmError {
    DmError { step, device: device.to_string(), message: e.to_string() }
}

impl DmControl {
    /// Opens the control node; fails where the kernel has no device-mapper.
    pub fn open() -> DmResult<DmControl> {
        DM::new().map(|dm| DmControl { dm }).map_err(|e| err("open", "/dev/mapper/control", e))
    }

    /// Target types the running kernel has loaded (name, version).
    pub fn target_versions(&self) -> DmResult<Vec<(String, u32, u32, u32)>> {
        self.dm.list_versions().map_err(|e| err("list targets", "", e))
    }

    /// Every dm device with its uuid (recovery walks this list).
    pub fn list(&self) -> DmResult<Vec<DmDeviceInfo>> {
        let devices = self.dm.list_devices().map_err(|e| err("list devices", "", e))?;
        devices.into_iter().map(|(name, _, _)| self.info(&name.to_string())).collect()
    }

    /// Info on a device by name; `Ok(None)` when it does not exist.
    pub fn find(&self, name: &str) -> DmResult<Option<DmDeviceInfo>> {
        let exists = self
            .dm
            .list_devices()
            .map_err(|e| err("list devices", name, e))?
            .iter()
            .any(|(n, _, _)| n.to_string() == name);
        if exists {
            self.info(name).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn info(&self, name: &str) -> DmResult<DmDeviceInfo> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        let info = self.dm.device_info(&DevId::Name(dm_name)).map_err(|e| err("info", name, e))?;
        let device = info.device();
        Ok(DmDeviceInfo {
            name: name.to_string(),
            uuid: info.uuid().map(|u| u.to_string()),
            dev: DevNum { major: device.major, minor: device.minor },
            open_count: info.open_count(),
            suspended: info.flags().contains(DmFlags::DM_SUSPEND),
            live: info.flags().contains(DmFlags::DM_ACTIVE_PRESENT),
        })
    }

    /// Creates a device, loads its table and resumes it; on failure removes what it created.
    /// The rules ignore the create's own `add` event (no table yet); `view` goes with the resume.
    pub fn create(
        &self,
        name: &str,
        uuid: &str,
        table: &[TableLine],
        view: UdevView,
    ) -> DmResult<DmDeviceInfo> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        let dm_uuid = DmUuid::new(uuid).map_err(|e| err("uuid", name, e))?;
        self.dm
            .device_create(dm_name, Some(dm_uuid), DmOptions::default())
            .map_err(|e| err("create", name, e))?;
        let loaded = self.load(name, table).and_then(|()| self.resume(name, view));
        if let Err(e) = loaded {
            // Leave nothing half-made behind.
            let _ = self.remove(name);
            return Err(e);
        }
        self.info(name)
    }

    /// Loads a table into the inactive slot; it takes effect at the next resume.
    pub fn load(&self, name: &str, table: &[TableLine]) -> DmResult<()> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        self.dm
            .table_load(&DevId::Name(dm_name), table, DmOptions::default())
            .map(|_| ())
            .map_err(|e| err("load table", name, e))
    }

    /// Drops a table loaded but not yet resumed (undo of a failed transition).
    pub fn clear_inactive(&self, name: &str) -> DmResult<()> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        self.dm
            .table_clear(&DevId::Name(dm_name))
            .map(|_| ())
            .map_err(|e| err("clear table", name, e))
    }

    /// Suspends a device; `flush` lets queued I/O and the filesystem settle first.
    pub fn suspend(&self, name: &str, flush: bool) -> DmResult<()> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        let mut flags = DmFlags::DM_SUSPEND;
        if !flush {
            flags |= DmFlags::DM_NOFLUSH | DmFlags::DM_SKIP_LOCKFS;
        }
        self.dm
            .device_suspend(&DevId::Name(dm_name), DmOptions::default().set_flags(flags))
            .map(|_| ())
            .map_err(|e| err("suspend", name, e))
    }

    /// Resumes a device. Every resume of a device must pass the same `view`: the rules take the
    /// flags from the event that carries them, and a resume without them would have udev probe
    /// and link a hidden device again.
    pub fn resume(&self, name: &str, view: UdevView) -> DmResult<()> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        self.dm
            .device_suspend(&DevId::Name(dm_name), view.options())
            .map(|_| ())
            .map_err(|e| err("resume", name, e))
    }

    /// Loads a new table and swaps it in (suspend, resume); the device stays usable.
    pub fn reload(&self, name: &str, table: &[TableLine], view: UdevView) -> DmResult<()> {
        self.load(name, table)?;
        self.suspend(name, true)?;
        self.resume(name, view)
    }

    pub fn remove(&self, name: &str) -> DmResult<()> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        self.dm
            .device_remove(&DevId::Name(dm_name), DmOptions::default())
            .map(|_| ())
            .map_err(|e| err("remove", name, e))?;
        let _ = std::fs::remove_file(mapper_path(name));
        Ok(())
    }

    /// The status params of a single-target device (e.g. a snapshot's usage line).
    pub fn status(&self, name: &str) -> DmResult<String> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        let (_, lines) = self
            .dm
            .table_status(&DevId::Name(dm_name), DmOptions::default())
            .map_err(|e| err("status", name, e))?;
        match lines.as_slice() {
            [(_, _, _, params)] => Ok(params.clone()),
            other => {
                Err(err("status", name, format!("expected one target, found {}", other.len())))
            }
        }
    }

    /// The loaded table (type and params of each target).
    pub fn table(&self, name: &str) -> DmResult<Vec<TableLine>> {
        let dm_name = DmName::new(name).map_err(|e| err("name", name, e))?;
        self.dm
            .table_status(
                &DevId::Name(dm_name),
                DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
            )
            .map(|(_, lines)| lines)
            .map_err(|e| err("table", name, e))
    }
}

/// `/dev/mapper/<name>`.
pub fn mapper_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

/// Makes `/dev/mapper/<name>` exist for a device, as udev would (there is no udev in early
/// boot or in the VM harness). Replaces a stale node with other numbers.
pub fn ensure_node(name: &str, dev: DevNum) -> std::io::Result<PathBuf> {
    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
    let path = mapper_path(name);
    std::fs::create_dir_all("/dev/mapper")?;
    if let Ok(meta) = std::fs::metadata(&path) {
        use std::os::unix::fs::MetadataExt;
        if meta.rdev() == makedev(dev.major, dev.minor) {
            return Ok(path);
        }
        std::fs::remove_file(&path)?;
    }
    mknodat(
        CWD,
        &path,
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        makedev(dev.major, dev.minor),
    )?;
    Ok(path)
}
