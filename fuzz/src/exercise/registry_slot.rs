//! The pool's registry as `Pool::open_io` reads it at every start: two slots, each a 4 KiB
//! header (magic, version, sequence, length, crc32c) and a JSON payload.
//!
//! Input: one mode byte, then
//! - mode 0: slot 0's bytes as they are on disk (framing, checksum and all);
//! - mode 1: a JSON payload, framed with a valid checksum into slot 0: what a bug in an older
//!   snapbackd, or a hand-edited and re-checksummed pool, could leave; the checksum only
//!   guards against torn and random writes;
//! - mode 2: two payloads (split at the first NUL), framed as sequences 1 and 2 in the slots
//!   the pool would write them to: which copy wins.
//!
//! What opened must hold together: it validates, survives a JSON round trip, gives the
//! figures Status and the cleanup rules compute, picks free extents that are free, names
//! boot files only inside their partition (a restore writes there), has its boot-menu
//! entries written (as at every start) only inside the boot partitions, and commits (the next
//! `update` writes the other slot) and reopens to the same registry.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use snapback_engine::io::BlockIo;
use snapbackd::backend::{sets, PoolStatus};
use snapbackd::boot::tree::{BootFs, BootRoots};
use snapbackd::boot::{bls, entries};
use snapbackd::cleanup::{self, CleanupConfig};
use snapbackd::pool::layout::{self, DATA_OFFSET, SLOT_BYTES};
use snapbackd::pool::{is_sha256_hex, Pool, PoolError, Registry};

/// A pool device that stores only what was written (the slots, a few KiB): no input pays for
/// the megabytes of zeros around them.
#[derive(Debug)]
struct SparseDevice {
    size: u64,
    /// (offset, bytes), later writes over earlier ones.
    writes: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl SparseDevice {
    fn new(size: u64) -> SparseDevice {
        SparseDevice { size, writes: Mutex::new(Vec::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Vec<u8>)>> {
        self.writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl BlockIo for SparseDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.size)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.fill(0);
        for (at, bytes) in self.lock().iter() {
            let from = offset.max(*at);
            let to = end.min(at + bytes.len() as u64);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.size) {
            return Err(std::io::Error::other("write beyond the device"));
        }
        self.lock().push((offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn size_bytes(&self) -> std::io::Result<u64> {
        Ok(self.size)
    }
}

/// Boot partitions that do not exist: nothing is read from them, writes are only recorded.
#[derive(Debug, Default)]
struct RecordingFs {
    written: Mutex<Vec<PathBuf>>,
}

impl BootFs for RecordingFs {
    fn write_atomic(&self, path: &Path, _bytes: &[u8], _mode: u32) -> std::io::Result<()> {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).push(path.to_path_buf());
        Ok(())
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).push(path.to_path_buf());
        Ok(())
    }
}

/// What every kept boot file reads as here: an entry that boots a kernel and an initramfs
/// (so the rollback entry is written with copies of both when the record names them).
const KEPT_FILE: &str =
    "title Fuzz\nversion 6.1\nlinux /vmlinuz-6.1\ninitrd /initramfs-6.1.img\noptions ro\n";

fn inside(path: &Path, roots: &BootRoots) -> bool {
    let root = [Some(roots.boot.as_path()), roots.esp.as_deref()]
        .into_iter()
        .flatten()
        .find(|root| path.starts_with(root));
    root.is_some_and(|root| {
        path.strip_prefix(root)
            .is_ok_and(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))))
    })
}

/// Two slots and a small data area.
const DEVICE_BYTES: u64 = DATA_OFFSET + (64 << 20);

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let device = Arc::new(SparseDevice::new(DEVICE_BYTES));
    let framed = |bytes: &[u8], sequence: u64| {
        // Longer than a slot holds: the header's length check refuses it, nothing to frame.
        (bytes.len() <= layout::MAX_PAYLOAD).then(|| layout::encode_slot(sequence, bytes))
    };
    match mode % 3 {
        0 => {
            let raw = &rest[..rest.len().min(SLOT_BYTES as usize)];
            device.write_at(raw, 0).expect("slot 0 fits the device");
        }
        1 => {
            let Some(image) = framed(rest, 1) else { return };
            device.write_at(&image, 0).expect("slot 0 fits the device");
        }
        _ => {
            let mut payloads = rest.splitn(2, |byte| *byte == 0);
            let first = payloads.next().unwrap_or_default();
            let second = payloads.next().unwrap_or_default();
            let (Some(slot0), Some(slot1)) = (framed(first, 1), framed(second, 2)) else {
                return;
            };
            device.write_at(&slot0, layout::slot_offset(1)).expect("fits");
            device.write_at(&slot1, layout::slot_offset(2)).expect("fits");
        }
    }
    let Ok(pool) = Pool::open_io(device.clone(), Path::new("fuzz-pool")) else { return };
    let registry = pool.registry();
    registry.validate().expect("an opened registry is consistent");

    let json = serde_json::to_vec(&registry).expect("an opened registry serializes");
    let again: Registry = serde_json::from_slice(&json).expect("and reads back");
    assert_eq!(again, registry, "the registry changes in a JSON round trip");

    // What Status, the bus objects and the cleanup rules compute from it.
    let pool_status = PoolStatus {
        path: pool.path().to_path_buf(),
        size_bytes: pool.size_bytes(),
        used_bytes: pool.used_bytes(),
    };
    assert!(registry.used_extent_count() <= registry.extent_count, "more extents used than exist");
    let _ = registry.pending_rollbacks();
    let infos: Vec<_> = registry
        .snapshot_sets
        .iter()
        .map(|set| sets::info(set, registry.extent_bytes, 0, 0.0, None))
        .collect();
    let _ = cleanup::plan(&CleanupConfig::default(), &infos, &pool_status, u64::MAX / 2);

    // A snapshot (or an autoextend) picks free extents: they must be free and in the pool.
    let wanted = registry.free_extent_count().min(64);
    let picked = registry.pick_free_extents(&[wanted, 0]).expect("free extents can be picked");
    let used: BTreeSet<u64> = registry
        .snapshot_sets
        .iter()
        .flat_map(|set| set.cows.iter().flat_map(|cow| cow.extents.iter().copied()))
        .chain(registry.boot_blobs.iter().flat_map(|blob| blob.extents.iter().copied()))
        .collect();
    let fresh: BTreeSet<u64> = picked.iter().flatten().copied().collect();
    assert_eq!(fresh.len() as u64, wanted, "picked extents are distinct and as many as asked");
    assert!(fresh.iter().all(|e| *e < registry.extent_count && !used.contains(e)));

    // A restore writes each boot file at its path under its partition: the path must stay
    // there, and the SHA-256 it is kept under is what names its copies.
    for set in &registry.snapshot_sets {
        for file in set.boot.iter().chain(set.boot_undo.iter()).flat_map(|r| r.files.iter()) {
            assert_eq!(
                bls::relative_path(&file.path).as_deref(),
                Some(file.path.as_str()),
                "set {} keeps boot file {:?}, which is not a plain relative path",
                set.id,
                file.path
            );
            assert!(
                is_sha256_hex(&file.sha256),
                "set {} keeps boot file {:?} under {:?}, not a SHA-256",
                set.id,
                file.path,
                file.sha256
            );
        }
    }
    // At every start the daemon writes each set's boot-menu entry.
    let roots = BootRoots {
        boot: PathBuf::from("/nonexistent/snapback-fuzz/boot"),
        esp: Some(PathBuf::from("/nonexistent/snapback-fuzz/esp")),
    };
    let fs = RecordingFs::default();
    for set in &registry.snapshot_sets {
        let _ = entries::write(&roots, set, &fs, &mut |_| Ok(KEPT_FILE.as_bytes().to_vec()));
    }
    for path in fs.written.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        assert!(inside(path, &roots), "a boot-menu entry written at {path:?}");
    }

    // The next commit goes to the other slot; reopening finds it.
    match pool.update(|_| Ok(())) {
        Ok(()) => {
            let reopened =
                Pool::open_io(device, Path::new("fuzz-pool")).expect("a committed pool reopens");
            assert_eq!(reopened.registry(), registry, "a commit changed the registry");
            assert_eq!(reopened.sequence(), pool.sequence());
        }
        Err(PoolError::RegistryTooLarge { .. }) => {}
        Err(err) => panic!("committing an opened registry failed: {err}"),
    }
}
