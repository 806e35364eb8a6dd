//! The way back from the boot menu: for every set that recorded the boot configuration, a
//! BLS entry "Roll back to snapshot N: …" that boots the snapshot-time default kernel and
//! initramfs with `snapback.rollback=N` on the command line. The initramfs (dracut module,
//! `snapbackd activate`) starts that set's rollback before root is mounted, so it works when
//! the upgrade broke everything after the initramfs: no bus, daemon or polkit needed.
//!
//! The entry boots copies of the snapshot-time files under `snapback/<sha256 prefix>/` on the
//! same partition, written from the pool when the set is taken (one copy per content, shared by
//! every entry that boots it): the upgrade that follows may remove or rewrite the originals.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;

use super::bls::{self, Entry};
use super::tree::{self, BootFs, BootRoots, OWN_DIR, OWN_ENTRY_PREFIX};
use crate::pool::{BootFile, BootRecord, BootRoot, SnapshotSetRecord};

/// The kernel command-line parameter the initramfs honours.
pub const ROLLBACK_PARAMETER: &str = "snapback.rollback";

/// The file name (without `.conf`) of set `id`'s entry: also what loader.conf or grubenv
/// would name to boot it.
pub fn entry_id(id: u32) -> String {
    format!("{OWN_ENTRY_PREFIX}rollback-{id}")
}

fn blob_of<'a>(record: &'a BootRecord, root: BootRoot, path: &str) -> Option<&'a BootFile> {
    record.files.iter().find(|file| file.root == root && file.path == path)
}

/// The entry the snapshot-time configuration booted by default: the one `loader.conf` or
/// `grubenv` picked, else the newest by version (what both loaders fall back to).
pub fn default_entry(
    record: &BootRecord,
    fetch: &mut dyn FnMut(&str) -> io::Result<Vec<u8>>,
) -> io::Result<Option<(BootRoot, Entry)>> {
    let text = |fetch: &mut dyn FnMut(&str) -> io::Result<Vec<u8>>,
                file: &BootFile|
     -> io::Result<String> {
        Ok(String::from_utf8_lossy(&fetch(&file.sha256)?).into_owned())
    };
    let mut entries = Vec::new();
    let mut default = None;
    for file in &record.files {
        if let Some(name) =
            file.path.strip_prefix("loader/entries/").and_then(|n| n.strip_suffix(".conf"))
        {
            entries.push((file.root, Entry::parse(name, &text(fetch, file)?)));
        } else if file.path == "loader/loader.conf" {
            default = default.or(bls::loader_default(&text(fetch, file)?));
        } else if file.path.ends_with("grubenv") {
            default = default.or(bls::grubenv_saved_entry(&text(fetch, file)?));
        }
    }
    let picked = default
        .as_deref()
        .and_then(|pattern| {
            entries
                .iter()
                .filter(|(_, e)| bls::pattern_matches(pattern, &e.id))
                .max_by(|a, b| version_order(&a.1, &b.1))
        })
        .or_else(|| entries.iter().max_by(|a, b| version_order(&a.1, &b.1)));
    Ok(picked.cloned())
}

/// Orders entries by `version` (else id), comparing digit runs as numbers: 6.10 > 6.9.
fn version_order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    fn key(entry: &Entry) -> Vec<Result<u64, String>> {
        let text = entry.get("version").unwrap_or(&entry.id).to_string();
        let mut parts = Vec::new();
        let mut current = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() != current.chars().next().is_some_and(|d| d.is_ascii_digit())
                && !current.is_empty()
            {
                parts.push(std::mem::take(&mut current));
            }
            current.push(c);
        }
        parts.push(current);
        parts.into_iter().map(|p| p.parse::<u64>().map_err(|_| p)).collect()
    }
    key(a).cmp(&key(b))
}

/// Writes (or rewrites) set `set`'s rollback entry, with copies of the files the upgrade
/// removed or changed. Returns the entry's path, or None when the set's record has no entry
/// to boot.
pub fn write(
    roots: &BootRoots,
    set: &SnapshotSetRecord,
    fs_ops: &dyn BootFs,
    fetch: &mut dyn FnMut(&str) -> io::Result<Vec<u8>>,
) -> io::Result<Option<PathBuf>> {
    let Some(record) = &set.boot else { return Ok(None) };
    let Some((root, entry)) = default_entry(record, fetch)? else { return Ok(None) };
    let Some(dir) = roots.dir(root) else { return Ok(None) };
    let mut fields = Vec::new();
    let date = humantime_date(set.created_us);
    let description = if set.description.is_empty() {
        "snapshot".to_string()
    } else {
        set.description.replace('\n', " ")
    };
    fields.push((
        "title".to_string(),
        format!("Roll back to snapshot {}: {description} ({date})", set.id),
    ));
    if let Some(version) = entry.get("version") {
        fields.push(("version".into(), version.to_string()));
    }
    // Sorted last among entries, so a loader that sorts by it never picks it by default.
    fields.push(("sort-key".into(), "zzz-snapback".into()));
    for (key, value) in &entry.fields {
        if !["linux", "initrd", "devicetree", "efi"].contains(&key.as_str()) {
            continue;
        }
        let mut words = value.split_whitespace();
        let Some(relative) = words.next().and_then(bls::relative_path) else { continue };
        let Some(kept) = blob_of(record, root, &relative) else {
            // The snapshot did not record this file: boot it where it is, if it is.
            fields.push((key.clone(), value.clone()));
            continue;
        };
        // Always a kept copy, never the distribution's file: the package manager removes and
        // rewrites those during the very upgrade this entry is the way back from, and a copy
        // written before it cannot be lost to it.
        let name = relative.rsplit('/').next().unwrap_or("file");
        let path = format!("{OWN_DIR}/{}/{name}", &kept.sha256[..16]);
        if tree::read(roots, &(root, path.clone())).ok().map(|(b, _)| tree::sha256(&b)).as_deref()
            != Some(kept.sha256.as_str())
        {
            fs_ops.write_atomic(&dir.join(&path), &fetch(&kept.sha256)?, 0o644)?;
        }
        let rest: Vec<&str> = words.collect();
        let value = std::iter::once(format!("/{path}"))
            .chain(rest.iter().map(|w| w.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        fields.push((key.clone(), value));
    }
    let options = entry
        .options()
        .split_whitespace()
        .filter(|w| !w.starts_with(ROLLBACK_PARAMETER))
        .collect::<Vec<_>>()
        .join(" ");
    fields.push((
        "options".into(),
        format!("{options} {ROLLBACK_PARAMETER}={}", set.id).trim().to_string(),
    ));
    let rollback = Entry { id: entry_id(set.id), fields };
    let path = dir.join(format!("loader/entries/{}.conf", rollback.id));
    fs_ops.write_atomic(&path, rollback.render().as_bytes(), 0o644)?;
    Ok(Some(path))
}

/// Removes the rollback entries of sets not in `live`, then the kept copies no remaining
/// entry boots.
pub fn prune(roots: &BootRoots, live: &BTreeSet<u32>, fs_ops: &dyn BootFs) -> io::Result<()> {
    for root in [BootRoot::Boot, BootRoot::Esp] {
        let Some(dir) = roots.dir(root) else { continue };
        let mut booted = BTreeSet::new();
        for (id, entry) in tree::entries(dir)? {
            let Some(set) = id
                .strip_prefix(&format!("{OWN_ENTRY_PREFIX}rollback-"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if live.contains(&set) {
                booted.extend(entry.files());
            } else {
                fs_ops.remove(&dir.join(format!("loader/entries/{id}.conf")))?;
            }
        }
        let own = dir.join(OWN_DIR);
        let Ok(listing) = fs::read_dir(&own) else { continue };
        for sub in listing {
            let sub = sub?;
            let name = sub.file_name().to_string_lossy().into_owned();
            for file in fs::read_dir(sub.path())? {
                let file = file?;
                let relative = format!("{OWN_DIR}/{name}/{}", file.file_name().to_string_lossy());
                if !booted.contains(&relative) {
                    fs_ops.remove(&file.path())?;
                }
            }
            let _ = fs::remove_dir(sub.path());
        }
    }
    Ok(())
}

/// `2026-12-07 14:05 UTC` from microseconds since the epoch (the entry's title).
fn humantime_date(created_us: u64) -> String {
    let secs = (created_us / 1_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// The set a kernel command line asks to roll back to (`snapback.rollback=N`), if any.
pub fn requested_rollback(cmdline: &str) -> Option<Result<u32, String>> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(ROLLBACK_PARAMETER)?.strip_prefix('='))
        .next_back()
        .map(|value| {
            value
                .parse::<u32>()
                .map_err(|_| format!("{ROLLBACK_PARAMETER}={value} is not a snapshot set id"))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "entries_tests.rs"]
mod tests;
