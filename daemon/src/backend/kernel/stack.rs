//! One volume's device-mapper stack and the transitions between its shapes, in the order
//! LVM2 uses so the kernel never sees an inconsistent origin:
//!
//! * plain: `snapback-<vol>` = `linear` over the backing device;
//! * with snapshots: `-real` (`linear`), per snapshot `-cow` + `snapshot`, origin =
//!   `snapshot-origin real`;
//! * merging: origin = `snapshot-merge real cow` (the merging snapshot has no device of its
//!   own; other snapshots keep theirs).
//!
//! Every transition that swaps the origin's table happens while the origin is suspended,
//! and every failure path resumes what it suspended: a volume is never left suspended.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::dm::{ensure_node, DmControl, DmError, DmResult, UdevView};
use super::names::{dm_name, dm_uuid, Role};
use super::status::{self, KernelSnapshotStatus};
use super::table::{self, DevNum, OnFull, Segment, TableLine};
use crate::backend::SnapshotId;

/// One snapshot's COW as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowSpec {
    pub id: SnapshotId,
    pub pool: DevNum,
    pub segments: Vec<Segment>,
    pub chunk_sectors: u32,
}

/// A managed volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub pool_uuid: String,
    pub name: String,
    pub backing: DevNum,
    pub sectors: u64,
}

impl VolumeSpec {
    /// The dm name of this volume's device in `role`.
    pub fn name(&self, role: Role) -> String {
        dm_name(&self.name, role)
    }

    fn uuid(&self, role: Role) -> String {
        dm_uuid(&self.pool_uuid, &self.name, role)
    }

    /// The device users mount.
    pub fn device_path(&self) -> PathBuf {
        super::dm::mapper_path(&self.name(Role::Origin))
    }
}

/// Only the origin is for users; every other device of the stack carries the origin's
/// filesystem (`-real`, snapshots) or a COW, and must not take its `/dev/disk` links.
fn udev_view(role: Role) -> UdevView {
    match role {
        Role::Origin => UdevView::Visible,
        Role::Real | Role::Cow(_) | Role::Snapshot(_) => UdevView::Hidden,
    }
}

fn node_error(name: &str, e: std::io::Error) -> DmError {
    DmError { step: "mknod", device: name.to_string(), message: e.to_string() }
}

/// Creates a device of `volume`'s stack if it does not exist yet (assembly is idempotent),
/// returning its numbers. One a crash left half made is finished: created but never resumed
/// (no live table; everything stacked on it would fail every I/O), it gets `table` and is
/// resumed, as its creation would have done; left suspended in the middle of a reload (a COW
/// being grown), the reload is dropped and it is resumed as it was (the monitor grows it
/// again from the registry).
fn ensure(
    dm: &DmControl,
    volume: &VolumeSpec,
    role: Role,
    table: &[TableLine],
) -> DmResult<DevNum> {
    let name = volume.name(role);
    match dm.find(&name)? {
        Some(info) if !info.live => {
            tracing::warn!(device = %name, "finishing a device created but never resumed (crash recovery)");
            dm.load(&name, table)?;
            dm.resume(&name, udev_view(role))?;
            Ok(info.dev)
        }
        Some(info) => {
            if info.suspended {
                resume_dropping_inactive(dm, &name, role)?;
            }
            Ok(info.dev)
        }
        None => dm.create(&name, &volume.uuid(role), table, udev_view(role)).map(|info| info.dev),
    }
}

/// The numbers of the `-real` device, creating it if needed.
fn ensure_real(dm: &DmControl, volume: &VolumeSpec) -> DmResult<DevNum> {
    ensure(dm, volume, Role::Real, &table::linear(volume.backing, volume.sectors))
}

fn ensure_cow(dm: &DmControl, volume: &VolumeSpec, cow: &CowSpec) -> DmResult<DevNum> {
    ensure(dm, volume, Role::Cow(cow.id), &table::concatenation(cow.pool, &cow.segments))
}

/// The origin's table for a stack with `snapshots` and an optional merging snapshot.
fn origin_table(
    dm: &DmControl,
    volume: &VolumeSpec,
    has_snapshots: bool,
    merging: Option<&CowSpec>,
) -> DmResult<Vec<TableLine>> {
    if let Some(cow) = merging {
        let real = ensure_real(dm, volume)?;
        let cow_dev = ensure_cow(dm, volume, cow)?;
        return Ok(table::snapshot_merge(real, cow_dev, cow.chunk_sectors, volume.sectors));
    }
    if has_snapshots {
        let real = ensure_real(dm, volume)?;
        return Ok(table::snapshot_origin(real, volume.sectors));
    }
    Ok(table::linear(volume.backing, volume.sectors))
}

/// Brings a volume's whole stack up from the registry's view of it; running it twice changes
/// nothing. A pending rollback is started here (origin = `snapshot-merge`), which is what
/// makes "merge at next boot" work: the volume is mountable as soon as this returns.
pub fn assemble(
    dm: &DmControl,
    volume: &VolumeSpec,
    snapshots: &[CowSpec],
    merging: Option<&CowSpec>,
    on_full: OnFull,
) -> DmResult<PathBuf> {
    let mut has_snapshots = false;
    for cow in snapshots.iter().filter(|c| Some(c.id) != merging.map(|m| m.id)) {
        let real = ensure_real(dm, volume)?;
        let cow_dev = ensure_cow(dm, volume, cow)?;
        ensure(
            dm,
            volume,
            Role::Snapshot(cow.id),
            &table::snapshot(real, cow_dev, cow.chunk_sectors, on_full, volume.sectors),
        )?;
        has_snapshots = true;
    }
    let origin = volume.name(Role::Origin);
    let wanted = origin_table(dm, volume, has_snapshots, merging)?;
    let info = match dm.find(&origin)? {
        None => dm.create(&origin, &volume.uuid(Role::Origin), &wanted, udev_view(Role::Origin))?,
        Some(info) => {
            let loaded = dm.table(&origin)?;
            if !same_target(&loaded, &wanted) {
                swap_origin_table(dm, &origin, &wanted)?;
            }
            if dm.info(&origin)?.suspended {
                resume_dropping_inactive(dm, &origin, Role::Origin)?;
            }
            info
        }
    };
    ensure_node(&origin, info.dev).map_err(|e| node_error(&origin, e))
}

/// A daemon that died between suspending a device and resuming it (taking a set, swapping
/// the origin's table, growing a COW) left it suspended: every I/O to it waits, the mounted
/// root's included, until somebody resumes it, and nobody else will. A table it loaded then
/// belongs to a transition the registry never recorded, or one assembly redoes from the
/// registry: it is dropped before the resume, which would otherwise make it live.
fn resume_dropping_inactive(dm: &DmControl, name: &str, role: Role) -> DmResult<()> {
    tracing::warn!(device = name, "resuming a device left suspended (crash recovery)");
    dm.clear_inactive(name)?;
    dm.resume(name, udev_view(role))
}

/// Only the target type is compared: params name devices by number and the kernel may
/// print them differently from how we wrote them.
fn same_target(loaded: &[TableLine], wanted: &[TableLine]) -> bool {
    loaded.len() == wanted.len() && loaded.iter().zip(wanted).all(|(a, b)| a.2 == b.2)
}

fn swap_origin_table(dm: &DmControl, origin: &str, table: &[TableLine]) -> DmResult<()> {
    dm.load(origin, table)?;
    dm.suspend(origin, true)?;
    dm.resume(origin, udev_view(Role::Origin))
}

/// One member of a snapshot set being taken.
#[derive(Debug, Clone)]
pub struct SetMember<'a> {
    pub volume: &'a VolumeSpec,
    pub cow: &'a CowSpec,
}

/// Takes snapshots of several volumes at one instant: suspend every origin (flushing and
/// freezing the filesystems on them), create every snapshot, resume every origin. Returns how
/// long the origins stayed suspended. On failure, everything created is removed and every
/// origin is resumed with its previous table.
pub fn take_snapshot_set(
    dm: &DmControl,
    members: &[SetMember<'_>],
    on_full: OnFull,
) -> DmResult<Duration> {
    let mut created: Vec<String> = Vec::new();
    let result = take_snapshot_set_inner(dm, members, on_full, &mut created);
    if result.is_err() {
        for name in created.iter().rev() {
            let _ = dm.remove(name);
        }
    }
    result
}

fn take_snapshot_set_inner(
    dm: &DmControl,
    members: &[SetMember<'_>],
    on_full: OnFull,
    created: &mut Vec<String>,
) -> DmResult<Duration> {
    // Everything that can be prepared without stopping I/O is prepared first.
    let mut prepared = Vec::new();
    for member in members {
        let real_name = member.volume.name(Role::Real);
        let had_real = dm.find(&real_name)?.is_some();
        let real = ensure_real(dm, member.volume)?;
        if !had_real {
            created.push(real_name);
        }
        let cow_name = member.volume.name(Role::Cow(member.cow.id));
        if dm.find(&cow_name)?.is_some() {
            return Err(DmError {
                step: "snapshot",
                device: cow_name,
                message: "a COW device with this id already exists".into(),
            });
        }
        let cow_dev = ensure_cow(dm, member.volume, member.cow)?;
        created.push(cow_name);
        // The loaded table says whether the origin already copies first writes out, not the
        // registry: a set with a device may have none (an invalid one after a restart), and
        // a snapshot over an origin left `linear` would never receive a single copy.
        let origin = member.volume.name(Role::Origin);
        // The resume below makes whatever sits in the inactive slot live: only a table this
        // call loads may be there.
        dm.clear_inactive(&origin)?;
        let loaded = dm.table(&origin)?;
        let copying = !loaded.is_empty() && loaded.iter().all(|line| line.2 == "snapshot-origin");
        let plain = !loaded.is_empty() && loaded.iter().all(|line| line.2 == "linear");
        if !copying && !plain {
            // A merging origin above all: replacing its table would stop the merge half way.
            return Err(DmError {
                step: "snapshot",
                device: origin,
                message: format!(
                    "the volume's table is {:?}, neither linear nor snapshot-origin",
                    loaded.iter().map(|line| line.2.as_str()).collect::<Vec<_>>()
                ),
            });
        }
        prepared.push((member, real, cow_dev, copying));
    }

    let mut suspended: Vec<String> = Vec::new();
    let started = Instant::now();
    let outcome = (|| -> DmResult<()> {
        for (member, _, _, _) in &prepared {
            let origin = member.volume.name(Role::Origin);
            dm.suspend(&origin, true)?;
            suspended.push(origin);
        }
        for (member, real, cow_dev, copying) in &prepared {
            let snap = member.volume.name(Role::Snapshot(member.cow.id));
            dm.create(
                &snap,
                &member.volume.uuid(Role::Snapshot(member.cow.id)),
                &table::snapshot(
                    *real,
                    *cow_dev,
                    member.cow.chunk_sectors,
                    on_full,
                    member.volume.sectors,
                ),
                udev_view(Role::Snapshot(member.cow.id)),
            )?;
            created.push(snap);
            if !copying {
                dm.load(
                    &member.volume.name(Role::Origin),
                    &table::snapshot_origin(*real, member.volume.sectors),
                )?;
            }
        }
        Ok(())
    })();
    if outcome.is_err() {
        // Drop the snapshots before the origins run again, and any table we loaded.
        for name in created.iter().rev() {
            let _ = dm.remove(name);
        }
        created.clear();
        for origin in &suspended {
            let _ = dm.clear_inactive(origin);
        }
    }
    let mut resume_error = None;
    for origin in &suspended {
        if let Err(e) = dm.resume(origin, udev_view(Role::Origin)) {
            resume_error.get_or_insert(e);
        }
    }
    let held = started.elapsed();
    outcome?;
    match resume_error {
        Some(e) => Err(e),
        None => Ok(held),
    }
}

/// Starts merging `cow` into an idle origin: the snapshot's own device goes away and the
/// origin becomes `snapshot-merge`, which reads the COW's exceptions from disk.
pub fn start_merge(dm: &DmControl, volume: &VolumeSpec, cow: &CowSpec) -> DmResult<()> {
    let origin = volume.name(Role::Origin);
    let snap = volume.name(Role::Snapshot(cow.id));
    if let Some(info) = dm.find(&snap)? {
        if info.open_count > 0 {
            return Err(DmError {
                step: "merge",
                device: snap,
                message: "the snapshot device is open; close it before rolling back".into(),
            });
        }
    }
    let real = ensure_real(dm, volume)?;
    let cow_dev = ensure_cow(dm, volume, cow)?;
    dm.suspend(&origin, true)?;
    let switched = (|| -> DmResult<()> {
        if dm.find(&snap)?.is_some() {
            dm.remove(&snap)?;
        }
        dm.load(&origin, &table::snapshot_merge(real, cow_dev, cow.chunk_sectors, volume.sectors))
    })();
    let resumed = dm.resume(&origin, udev_view(Role::Origin));
    switched?;
    resumed
}

/// The merging origin's status line, parsed.
pub fn merge_status(dm: &DmControl, volume: &VolumeSpec) -> DmResult<KernelSnapshotStatus> {
    let origin = volume.name(Role::Origin);
    let line = dm.status(&origin)?;
    status::parse(&line).map_err(|e| DmError {
        step: "status",
        device: origin,
        message: e.to_string(),
    })
}

/// Whether the kernel has a snapshot device of set `id` on this volume.
pub fn snapshot_loaded(dm: &DmControl, volume: &VolumeSpec, id: SnapshotId) -> DmResult<bool> {
    Ok(dm.find(&volume.name(Role::Snapshot(id)))?.is_some())
}

/// A snapshot's status line, parsed.
pub fn snapshot_status(
    dm: &DmControl,
    volume: &VolumeSpec,
    id: SnapshotId,
) -> DmResult<KernelSnapshotStatus> {
    let snap = volume.name(Role::Snapshot(id));
    let line = dm.status(&snap)?;
    status::parse(&line).map_err(|e| DmError {
        step: "status",
        device: snap,
        message: e.to_string(),
    })
}

/// After a finished merge: the origin goes back to `snapshot-origin` (other snapshots remain)
/// or to a plain `linear` mapping, and the merged COW's device is removed.
pub fn finish_merge(
    dm: &DmControl,
    volume: &VolumeSpec,
    merged: SnapshotId,
    others_remain: bool,
) -> DmResult<()> {
    let origin = volume.name(Role::Origin);
    let wanted = origin_table(dm, volume, others_remain, None)?;
    swap_origin_table(dm, &origin, &wanted)?;
    remove_if_present(dm, &volume.name(Role::Cow(merged)))?;
    if !others_remain {
        remove_if_present(dm, &volume.name(Role::Real))?;
    }
    Ok(())
}

/// Refuses when set `id`'s snapshot device on this volume is open (mounted, read by someone):
/// the kernel would refuse to remove it, so a Delete checks before it commits anything.
pub fn check_snapshot_closed(dm: &DmControl, volume: &VolumeSpec, id: SnapshotId) -> DmResult<()> {
    let snap = volume.name(Role::Snapshot(id));
    match dm.find(&snap)? {
        Some(info) if info.open_count > 0 => Err(DmError {
            step: "remove",
            device: snap,
            message: "the snapshot device is open".into(),
        }),
        _ => Ok(()),
    }
}

/// Removes one snapshot (not merging) of a volume; the last one takes `-real` with it.
pub fn remove_snapshot(
    dm: &DmControl,
    volume: &VolumeSpec,
    id: SnapshotId,
    others_remain: bool,
) -> DmResult<()> {
    check_snapshot_closed(dm, volume, id)?;
    let snap = volume.name(Role::Snapshot(id));
    let origin = volume.name(Role::Origin);
    if !others_remain && dm.find(&origin)?.is_some() {
        swap_origin_table(dm, &origin, &table::linear(volume.backing, volume.sectors))?;
    }
    remove_if_present(dm, &snap)?;
    remove_if_present(dm, &volume.name(Role::Cow(id)))?;
    if !others_remain {
        remove_if_present(dm, &volume.name(Role::Real))?;
    }
    Ok(())
}

/// Gives a COW more room: its linear device is reloaded with the longer segment list.
pub fn grow_cow(dm: &DmControl, volume: &VolumeSpec, cow: &CowSpec) -> DmResult<()> {
    dm.reload(
        &volume.name(Role::Cow(cow.id)),
        &table::concatenation(cow.pool, &cow.segments),
        udev_view(Role::Cow(cow.id)),
    )
}

/// The target type of the device users mount (`linear`, `snapshot-origin`,
/// `snapshot-merge`), or None when it does not exist.
pub fn origin_target(dm: &DmControl, volume: &VolumeSpec) -> DmResult<Option<String>> {
    let origin = volume.name(Role::Origin);
    if dm.find(&origin)?.is_none() {
        return Ok(None);
    }
    Ok(dm.table(&origin)?.first().map(|line| line.2.clone()))
}

/// Whether anyone holds the volume's device open (mounted, or open by a process).
pub fn origin_busy(dm: &DmControl, volume: &VolumeSpec) -> DmResult<bool> {
    Ok(dm.find(&volume.name(Role::Origin))?.is_some_and(|info| info.open_count > 0))
}

fn remove_if_present(dm: &DmControl, name: &str) -> DmResult<()> {
    if dm.find(name)?.is_some() {
        dm.remove(name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernel::names::dm_uuid;

    /// udev's glob, as far as the rule uses it: `*` matches any run of characters.
    fn glob(pattern: &str, text: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == text,
            Some((head, tail)) => {
                text.starts_with(head)
                    && (0..=text.len() - head.len())
                        .any(|skip| glob(tail, &text[head.len() + skip..]))
            }
        }
    }

    /// The DM_UUID patterns of systemd/61-snapback.rules.
    fn rule_uuid_patterns() -> Vec<String> {
        let rules = include_str!("../../../../systemd/61-snapback.rules");
        rules
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split("ENV{DM_UUID}==\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn only_the_origin_is_visible_to_udev_and_raised_by_the_rule() {
        let patterns = rule_uuid_patterns();
        assert_eq!(patterns.len(), 1, "{patterns:?}");
        for volume in ["root", "var-log_2", "origin", "real"] {
            for role in [Role::Origin, Role::Real, Role::Cow(3), Role::Snapshot(4_000_000_000)] {
                let uuid = dm_uuid("9d279c21-b378-4cbb-b8b4-ce7cb5852f6c", volume, role);
                let visible = role == Role::Origin;
                assert_eq!(udev_view(role) == UdevView::Visible, visible, "{uuid}");
                assert_eq!(
                    glob(&patterns[0], &uuid),
                    visible,
                    "rule pattern {} vs {uuid}",
                    patterns[0]
                );
            }
        }
        assert!(!glob(&patterns[0], "LVM-abcdef.origin"), "another tool's device");
    }

    /// The flags as udev's device-mapper rules receive them: `dmsetup udevflags COOKIE` is what
    /// 55-dm.rules runs on the event's DM_COOKIE (flags in the upper 16 bits, no semaphore).
    #[test]
    fn hidden_devices_skip_the_disk_and_other_rules_as_the_rules_decode_it() {
        let cookie = UdevView::Hidden.udev_flags().bits() << 16;
        let out = std::process::Command::new("dmsetup")
            .args(["udevflags", &cookie.to_string()])
            .output()
            .expect("dmsetup (tools/install-deps installs it)");
        assert!(out.status.success(), "{out:?}");
        let mut got: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "DM_UDEV_DISABLE_DISK_RULES_FLAG='1'",
                "DM_UDEV_DISABLE_OTHER_RULES_FLAG='1'",
                "DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG='1'",
                "DM_UDEV_LOW_PRIORITY_FLAG='1'",
            ]
        );
        assert!(UdevView::Visible.udev_flags().is_empty());
    }
}
