//! The managed files of the boot partitions: which they are, capturing them, and putting a
//! captured configuration back in an order that keeps the machine bootable at every instant.
//!
//! Managed files: BLS entries, systemd-boot's `loader.conf`, GRUB's `grubenv`, every file an
//! entry boots, and the kernel-named files at the top of `/boot` (`vmlinuz-*`,
//! `initramfs-*`, `initrd.img-*`, `System.map-*`, `config-*`, `symvers-*`). snapback's own
//! files (`loader/entries/snapback-*.conf`, `snapback/`) are never captured or removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::bls::{self, Entry};
use crate::pool::{BootFile, BootRecord, BootRoot};

/// Where the boot partitions are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRoots {
    pub boot: PathBuf,
    pub esp: Option<PathBuf>,
}

impl BootRoots {
    pub fn dir(&self, root: BootRoot) -> Option<&Path> {
        match root {
            BootRoot::Boot => Some(&self.boot),
            BootRoot::Esp => self.esp.as_deref(),
        }
    }

    fn each(&self) -> impl Iterator<Item = (BootRoot, &Path)> {
        [(BootRoot::Boot, Some(self.boot.as_path())), (BootRoot::Esp, self.esp.as_deref())]
            .into_iter()
            .filter_map(|(root, dir)| Some((root, dir?)))
            // An ESP mounted at /boot/efi is not a second /boot; one mounted at /boot is /boot.
            .filter(|(root, dir)| {
                *root == BootRoot::Boot || Some(*dir) != Some(self.boot.as_path())
            })
    }

    pub fn path(&self, root: BootRoot, relative: &str) -> Option<PathBuf> {
        self.dir(root).map(|dir| dir.join(relative))
    }
}

/// A managed file as found now.
pub type Key = (BootRoot, String);

const KERNEL_PREFIXES: [&str; 7] =
    ["vmlinuz-", "vmlinux-", "initramfs-", "initrd.img-", "System.map-", "config-", "symvers-"];
const ENTRIES: &str = "loader/entries";
const LOADER_CONF: &str = "loader/loader.conf";
const GRUBENV: [&str; 2] = ["grub2/grubenv", "grub/grubenv"];
/// Entries and files snapback writes itself (the rollback entries and their kernel cache).
pub const OWN_ENTRY_PREFIX: &str = "snapback-";
pub const OWN_DIR: &str = "snapback";

fn own(path: &str) -> bool {
    path.starts_with(&format!("{OWN_DIR}/"))
        || path
            .strip_prefix(&format!("{ENTRIES}/"))
            .is_some_and(|name| name.starts_with(OWN_ENTRY_PREFIX))
}

/// What a file is for, which decides when a restore writes or removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Kernels, initramfs images and other files entries boot.
    Image,
    /// A BLS entry.
    Entry,
    /// What picks the entry: `loader.conf`, `grubenv`.
    Default,
}

pub fn class(path: &str) -> Class {
    if path == LOADER_CONF || GRUBENV.contains(&path) {
        Class::Default
    } else if path.starts_with(&format!("{ENTRIES}/")) && path.ends_with(".conf") {
        Class::Entry
    } else {
        Class::Image
    }
}

/// The BLS entries of a root, by id.
pub fn entries(dir: &Path) -> io::Result<BTreeMap<String, Entry>> {
    let mut found = BTreeMap::new();
    let entries_dir = dir.join(ENTRIES);
    let listing = match fs::read_dir(&entries_dir) {
        Ok(listing) => listing,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    for item in listing {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".conf") else { continue };
        if !item.file_type()?.is_file() {
            continue;
        }
        let text = match fs::read_to_string(item.path()) {
            Ok(text) => text,
            // Gone between the listing and the read (an entry taken away as we look, e.g. a
            // set's rollback entry when its merge ends): it is not there.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        found.insert(id.to_string(), Entry::parse(id, &text));
    }
    Ok(found)
}

/// Every managed file present now.
pub fn managed_files(roots: &BootRoots) -> io::Result<BTreeSet<Key>> {
    let mut files = BTreeSet::new();
    for (root, dir) in roots.each() {
        for (id, entry) in entries(dir)? {
            files.insert((root, format!("{ENTRIES}/{id}.conf")));
            for file in entry.files() {
                if dir.join(&file).is_file() {
                    files.insert((root, file));
                }
            }
        }
        for path in std::iter::once(LOADER_CONF).chain(GRUBENV) {
            if dir.join(path).is_file() {
                files.insert((root, path.to_string()));
            }
        }
        if root == BootRoot::Boot {
            for item in fs::read_dir(dir)? {
                let item = item?;
                let name = item.file_name().to_string_lossy().into_owned();
                if item.file_type()?.is_file()
                    && KERNEL_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
                {
                    files.insert((root, name));
                }
            }
        }
    }
    files.retain(|(_, path)| !own(path));
    Ok(files)
}

/// The bytes and mode of a managed file.
pub fn read(roots: &BootRoots, (root, path): &Key) -> io::Result<(Vec<u8>, u32)> {
    let full = roots
        .path(*root, path)
        .ok_or_else(|| io::Error::other(format!("no {root:?} partition configured")))?;
    let bytes = fs::read(&full)?;
    let mode = fs::metadata(&full)?.permissions().mode() & 0o7777;
    Ok((bytes, mode))
}

/// Captures the boot configuration: every managed file, its blob stored by `store`
/// (which returns the SHA-256 it is kept under; equal contents are stored once).
pub fn capture(
    roots: &BootRoots,
    mut store: impl FnMut(&[u8]) -> io::Result<String>,
) -> io::Result<BootRecord> {
    let mut files = Vec::new();
    for key in managed_files(roots)? {
        let (bytes, mode) = read(roots, &key)?;
        let sha256 = store(&bytes)?;
        files.push(BootFile { root: key.0, path: key.1, sha256, mode });
    }
    Ok(BootRecord { files })
}

/// The mutations of a restore, behind a trait so tests can cut power between any two.
pub trait BootFs {
    /// Replaces (or creates) `path` with `bytes` atomically and durably: a crash leaves the
    /// old file or the new one, never a mix.
    fn write_atomic(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()>;
    /// Removes `path` durably (missing is fine).
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real file system: a temporary file beside the target, fsync'd, renamed over it, and
/// the directory fsync'd (FAT ESPs honour rename and fsync through the vfat driver).
#[derive(Debug, Default)]
pub struct RealFs;

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl BootFs for RealFs {
    fn write_atomic(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
        fs::create_dir_all(dir)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temporary = dir.join(format!(".{name}.snapback-new"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        sync_dir(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Ok(()) => path.parent().map_or(Ok(()), sync_dir),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// One mutation of a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Write(BootFile),
    Remove(Key),
}

/// What makes the managed files equal `target`, in the order that keeps every instant
/// bootable: images the target needs first, then its entries, then the default that picks
/// one of them, and only then the removal of entries (and last of images) it does not have.
/// `current` maps each managed file present now to its SHA-256.
pub fn plan(current: &BTreeMap<Key, String>, target: &BootRecord) -> Vec<Step> {
    let wanted: BTreeMap<Key, &BootFile> =
        target.files.iter().map(|file| ((file.root, file.path.clone()), file)).collect();
    let mut writes: Vec<&BootFile> = target
        .files
        .iter()
        .filter(|file| current.get(&(file.root, file.path.clone())) != Some(&file.sha256))
        .collect();
    writes.sort_by_key(|file| (class(&file.path), file.root, file.path.clone()));
    let mut removals: Vec<&Key> = current.keys().filter(|key| !wanted.contains_key(*key)).collect();
    // Entries go before the images they boot; the default was already switched by then.
    removals.sort_by_key(|(root, path)| (std::cmp::Reverse(class(path)), *root, path.clone()));
    writes
        .into_iter()
        .map(|file| Step::Write(file.clone()))
        .chain(removals.into_iter().map(|key| Step::Remove(key.clone())))
        .collect()
}

/// SHA-256 of `bytes`, as stored in boot records.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The managed files present now, with their SHA-256.
pub fn current(roots: &BootRoots) -> io::Result<BTreeMap<Key, String>> {
    managed_files(roots)?
        .into_iter()
        .map(|key| read(roots, &key).map(|(bytes, _)| (key, sha256(&bytes))))
        .collect()
}

/// Puts `target` in place. Idempotent: after a crash at any instant, running it again
/// finishes the job; the boot partitions are bootable in between (see [`plan`]).
/// `fetch` returns a blob's bytes (checked against its SHA-256 here).
pub fn restore(
    roots: &BootRoots,
    target: &BootRecord,
    fs: &dyn BootFs,
    mut fetch: impl FnMut(&str) -> io::Result<Vec<u8>>,
) -> io::Result<usize> {
    let steps = plan(&current(roots)?, target);
    for step in &steps {
        match step {
            Step::Write(file) => {
                let bytes = fetch(&file.sha256)?;
                if sha256(&bytes) != file.sha256 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the kept copy of {} does not match its checksum", file.path),
                    ));
                }
                let path = roots.path(file.root, &file.path).ok_or_else(|| {
                    io::Error::other(format!(
                        "{} lives on a partition not configured now",
                        file.path
                    ))
                })?;
                fs.write_atomic(&path, &bytes, file.mode)?;
            }
            Step::Remove((root, path)) => {
                if let Some(full) = roots.path(*root, path) {
                    fs.remove(&full)?;
                }
            }
        }
    }
    Ok(steps.len())
}

/// Whether the boot partitions can boot: the entry the default picks (every entry when
/// there is no default, the loader then offers them all) exists and every file it boots is
/// there. Used by tests and by `snapbackctl boot check`.
pub fn bootable(roots: &BootRoots) -> Result<(), String> {
    for (root, dir) in roots.each() {
        let entries = entries(dir).map_err(|e| e.to_string())?;
        if entries.is_empty() {
            continue;
        }
        let default = fs::read_to_string(dir.join(LOADER_CONF))
            .ok()
            .and_then(|text| bls::loader_default(&text))
            .or_else(|| {
                GRUBENV
                    .iter()
                    .find_map(|path| fs::read_to_string(dir.join(path)).ok())
                    .and_then(|text| bls::grubenv_saved_entry(&text))
            });
        let picked: Vec<&Entry> = match &default {
            Some(pattern) => {
                entries.values().filter(|entry| bls::pattern_matches(pattern, &entry.id)).collect()
            }
            None => entries.values().collect(),
        };
        if picked.is_empty() {
            return Err(format!("the default {default:?} on {root:?} names no entry"));
        }
        for entry in picked {
            for file in entry.files() {
                if !dir.join(&file).is_file() {
                    return Err(format!("entry {} boots {file}, which is missing", entry.id));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tree_tests.rs"]
mod tests;
