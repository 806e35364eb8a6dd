//! `snapbackctl cow …`: offline work on a COW store (file or block device) through the
//! engine's offline API, without the daemon — for rescue, and to show format compatibility.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use snapback_engine::io::{BlockIo, FileIo};
use snapback_engine::offline::{self, CowReport};
use snapback_engine::EngineError;

use crate::cli::{CowCommand, Format};
use crate::error::Error;
use crate::output::progress::{self, Bars};
use crate::output::{json::pretty, table::key_values, units::human_size};
use crate::Outcome;

pub fn run(cmd: CowCommand, format: Format) -> Result<Outcome, Error> {
    match cmd {
        CowCommand::Inspect { cow } => inspect(&cow, format),
        CowCommand::Check { cow } => check(&cow, format),
        CowCommand::Export { origin, cow, out } => export(&origin, &cow, &out, format),
        CowCommand::Merge { origin, cow } => merge(&origin, &cow, format),
    }
}

fn open(path: &Path, writable: bool) -> Result<Arc<dyn BlockIo>, Error> {
    FileIo::open(path, writable)
        .map(|io| Arc::new(io) as Arc<dyn BlockIo>)
        .map_err(|e| Error::Cow { path: path.to_owned(), message: format!("cannot open: {e}") })
}

/// Keeps what a writing command writes to from being used by anyone else until it ends: open
/// exclusive claims on block devices, a lock on a regular file.
#[derive(Debug)]
struct Claim {
    _held: Vec<File>,
}

/// Claims `path` before anything is written to it; refused when it is in use.
///
/// A block device is opened with `O_EXCL`: the kernel refuses that (EBUSY) while the device is
/// mounted, a dm or md member, active swap or opened with `O_EXCL` by another process, and,
/// held, it keeps the device from being mounted until the command ends. On a regular file
/// `O_EXCL` means nothing; a file is mounted through a loop device, so every loop device backed
/// by it is claimed the same way, and the file itself is `flock`ed, which refuses a second
/// `snapbackctl cow merge` (or anything else that locks it) at the same time.
fn claim(path: &Path) -> Result<Claim, Error> {
    let cannot = |e: std::io::Error| Error::Cow {
        path: path.to_owned(),
        message: format!("cannot open: {e}"),
    };
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if meta.file_type().is_block_device() {
        return Ok(Claim { _held: vec![claim_block_device(path, path)?] });
    }
    let file = File::open(path).map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Cow {
                path: path.to_owned(),
                message: "is in use: another process holds a lock on it (another snapbackctl cow \
                          command?); nothing was written"
                    .to_owned(),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::Cow { path: path.to_owned(), message: format!("cannot lock: {e}") })
        }
    }
    let mut held = vec![file];
    for device in loop_devices_backed_by(&meta) {
        held.push(claim_block_device(&device, path)?);
    }
    Ok(Claim { _held: held })
}

/// Opens `device` with `O_EXCL`; errors name `named` (the path the user gave).
fn claim_block_device(device: &Path, named: &Path) -> Result<File, Error> {
    let excl = rustix::fs::OFlags::EXCL.bits() as i32;
    std::fs::OpenOptions::new().read(true).custom_flags(excl).open(device).map_err(|e| {
        let through =
            if device == named { String::new() } else { format!(" through {}", device.display()) };
        let message = if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
            format!("is in use (mounted?){through}: nothing was written")
        } else {
            format!("cannot open{through} exclusively: {e}")
        };
        Error::Cow { path: named.to_owned(), message }
    })
}

/// Every loop device whose backing file is the file `meta` describes (same device and inode).
fn loop_devices_backed_by(meta: &std::fs::Metadata) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut devices: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.starts_with("loop").then_some(())?;
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            let backing = std::fs::metadata(backing.trim_end_matches('\n')).ok()?;
            (backing.dev() == meta.dev() && backing.ino() == meta.ino())
                .then(|| Path::new("/dev").join(name))
        })
        .collect();
    devices.sort();
    devices
}

fn engine_error(path: &Path, e: EngineError) -> Error {
    let message = match e {
        EngineError::Invalid => "the store is marked invalid (its snapshot overflowed or failed): \
                                 its data cannot be used; nothing was written"
            .to_owned(),
        EngineError::NotFormatted => "the COW is all zero: it holds no snapshot store".to_owned(),
        other => other.to_string(),
    };
    Error::Cow { path: path.to_owned(), message }
}

fn emit(text: String) -> Result<(), Error> {
    crate::print(&text)
}

fn inspect(cow_path: &Path, format: Format) -> Result<Outcome, Error> {
    let report = offline::inspect(open(cow_path, false)?).map_err(|e| engine_error(cow_path, e))?;
    emit(match format {
        Format::Human => render_inspect(&report),
        Format::Json => pretty(inspect_json(cow_path, &report)) + "\n",
    })?;
    Ok(Outcome::Done)
}

/// `{"path", "valid", "version", "chunk_sectors", "exceptions", "allocated_sectors",
/// "total_sectors", "metadata_sectors"}` (inside the schema envelope).
pub fn inspect_json(cow_path: &Path, r: &CowReport) -> Value {
    json!({
        "path": cow_path.display().to_string(),
        "valid": r.valid,
        "version": r.version,
        "chunk_sectors": r.chunk_sectors,
        "exceptions": r.exceptions,
        "allocated_sectors": r.allocated_sectors,
        "total_sectors": r.total_sectors,
        "metadata_sectors": r.metadata_sectors,
    })
}

/// Key/value block; usage as the kernel's status line prints it.
pub fn render_inspect(r: &CowReport) -> String {
    key_values(&[
        (
            "Valid",
            if r.valid { "yes" } else { "no (invalidated: the data cannot be used)" }.to_owned(),
        ),
        ("Version", r.version.to_string()),
        (
            "Chunk size",
            format!(
                "{} sectors ({})",
                r.chunk_sectors,
                human_size(u64::from(r.chunk_sectors) * 512)
            ),
        ),
        ("Exceptions", r.exceptions.to_string()),
        (
            "Usage",
            if r.valid {
                format!(
                    "{} (allocated/total metadata, sectors: {} of {} used)",
                    r.usage_line(),
                    human_size(r.allocated_sectors * 512),
                    human_size(r.total_sectors * 512)
                )
            } else {
                r.usage_line()
            },
        ),
    ])
}

fn check(cow_path: &Path, format: Format) -> Result<Outcome, Error> {
    let cow = open(cow_path, false)?;
    let mut problems: Vec<(Option<u64>, String)> = offline::check(cow.as_ref())
        .map_err(|e| engine_error(cow_path, e))?
        .into_iter()
        .map(|p| (p.offset, p.message))
        .collect();
    // A consistent store that the kernel (or engine) invalidated is not clean either: its
    // snapshot cannot be read, exported or merged.
    if problems.is_empty() {
        let report = offline::inspect(cow).map_err(|e| engine_error(cow_path, e))?;
        if !report.valid {
            problems.push((Some(0), "the store is marked invalid (overflowed or failed)".into()));
        }
    }
    emit(match format {
        Format::Human if problems.is_empty() => format!("{}: clean\n", cow_path.display()),
        Format::Human => problems
            .iter()
            .map(|(offset, message)| match offset {
                Some(o) => format!("{}: byte offset {o}: {message}\n", cow_path.display()),
                None => format!("{}: {message}\n", cow_path.display()),
            })
            .collect(),
        Format::Json => {
            let list: Vec<Value> =
                problems.iter().map(|(o, m)| json!({ "offset": o, "message": m })).collect();
            pretty(json!({
                "path": cow_path.display().to_string(),
                "clean": problems.is_empty(),
                "problems": list,
            })) + "\n"
        }
    })?;
    if problems.is_empty() {
        Ok(Outcome::Done)
    } else {
        Err(Error::CheckFailed { path: cow_path.to_owned(), problems: problems.len() })
    }
}

/// Opens OUT for writing, claimed (see `claim`) before it is truncated or written: a block
/// device as it is, a file created or truncated to `size`.
fn open_output(path: &Path, size: u64) -> Result<(Claim, Arc<dyn BlockIo>), Error> {
    let exists = std::fs::metadata(path).is_ok();
    let claimed = if exists { Some(claim(path)?) } else { None };
    let is_block = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
    if !is_block {
        let file = std::fs::File::create(path).and_then(|f| f.set_len(size)).map_err(|e| {
            Error::Cow { path: path.to_owned(), message: format!("cannot create: {e}") }
        });
        file?;
    }
    let claimed = match claimed {
        Some(claimed) => claimed,
        None => claim(path)?,
    };
    Ok((claimed, open(path, true)?))
}

fn export(
    origin_path: &Path,
    cow_path: &Path,
    out_path: &Path,
    format: Format,
) -> Result<Outcome, Error> {
    let origin = open(origin_path, false)?;
    let cow = open(cow_path, false)?;
    // Refuse before creating OUT: an invalid or damaged store has no view to export.
    offline::inspect(cow.clone()).map_err(|e| engine_error(cow_path, e)).and_then(|r| {
        if r.valid {
            Ok(())
        } else {
            Err(engine_error(cow_path, EngineError::Invalid))
        }
    })?;
    let size = origin.size_bytes().map_err(|e| Error::Cow {
        path: origin_path.to_owned(),
        message: format!("cannot read size: {e}"),
    })?;
    let (_claim, out) = open_output(out_path, size)?;
    offline::export(origin, cow, out.as_ref()).map_err(|e| engine_error(cow_path, e))?;
    emit(match format {
        Format::Human => {
            format!("exported the snapshot view ({}) to {}\n", human_size(size), out_path.display())
        }
        Format::Json => {
            pretty(json!({
                "origin": origin_path.display().to_string(),
                "cow": cow_path.display().to_string(),
                "out": out_path.display().to_string(),
                "bytes": size,
            })) + "\n"
        }
    })?;
    Ok(Outcome::Done)
}

fn merge(origin_path: &Path, cow_path: &Path, format: Format) -> Result<Outcome, Error> {
    // Claimed before anything is opened for writing, and held until the merge is done.
    let _claims = (claim(origin_path)?, claim(cow_path)?);
    let origin = open(origin_path, true)?;
    let cow = open(cow_path, true)?;
    let bars = Bars::new();
    let bar = (format == Format::Human && progress::enabled())
        .then(|| bars.add("merging".to_owned(), 0.0));
    let mut on_progress = |p: snapback_engine::origin::MergeProgress| {
        if let Some(bar) = &bar {
            let done = p.chunks_total.saturating_sub(p.chunks_left);
            let fraction =
                if p.chunks_total == 0 { 1.0 } else { done as f64 / p.chunks_total as f64 };
            progress::set(bar, fraction);
        }
    };
    let result = offline::merge(origin, cow.clone(), &mut on_progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let done = result.map_err(|e| engine_error(cow_path, e))?;
    // Confirm from disk what the merge promised: no exception left.
    let after = offline::inspect(cow).map_err(|e| engine_error(cow_path, e))?;
    emit(match format {
        Format::Human => format!(
            "merged {} chunks into {}; the store has {} exceptions left\n",
            done.chunks_total,
            origin_path.display(),
            after.exceptions
        ),
        Format::Json => {
            pretty(json!({
                "origin": origin_path.display().to_string(),
                "cow": cow_path.display().to_string(),
                "chunks_merged": done.chunks_total,
                "exceptions_left": after.exceptions,
            })) + "\n"
        }
    })?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_rendering() {
        let r = CowReport {
            valid: true,
            version: 1,
            chunk_sectors: 32,
            exceptions: 3,
            allocated_sectors: 160,
            total_sectors: 2048,
            metadata_sectors: 64,
        };
        assert_eq!(
            render_inspect(&r),
            "     Valid: yes
   Version: 1
Chunk size: 32 sectors (16.0 KiB)
Exceptions: 3
     Usage: 160/2048 64 (allocated/total metadata, sectors: 80.0 KiB of 1.0 MiB used)
"
        );
        let v = crate::output::json::document(inspect_json(Path::new("/x"), &r));
        assert_eq!(
            v.to_string(),
            r#"{"schema":"snapbackctl/1","path":"/x","valid":true,"version":1,"chunk_sectors":32,"exceptions":3,"allocated_sectors":160,"total_sectors":2048,"metadata_sectors":64}"#
        );
    }
}
