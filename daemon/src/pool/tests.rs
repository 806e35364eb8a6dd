//! Pool tests: formatting, slot selection, corruption, allocation, ExtentIo and crash safety.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::io::BlockIo;
use super::layout::{self, HEADER_BYTES};
use super::*;

/// In-memory device recording unflushed writes so a crash after any write can be simulated:
/// `crash_image(k, torn)` is what the disk holds if power failed during write number `k`
/// (counted from the last `start_recording`), the earlier unflushed writes having landed or not.
#[derive(Debug, Default)]
struct CrashDisk {
    state: Mutex<CrashState>,
}

#[derive(Debug, Default)]
struct CrashState {
    bytes: Vec<u8>,
    /// Writes since recording began, in order: (offset, data, durable-before-this-write image).
    log: Vec<(u64, Vec<u8>)>,
    base: Vec<u8>,
}

impl CrashDisk {
    fn new(size: usize) -> Arc<CrashDisk> {
        Arc::new(CrashDisk {
            state: Mutex::new(CrashState {
                bytes: vec![0; size],
                log: Vec::new(),
                base: Vec::new(),
            }),
        })
    }

    fn start_recording(&self) {
        let mut state = self.state.lock().unwrap();
        state.base = state.bytes.clone();
        state.log.clear();
    }

    fn writes_recorded(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    /// The disk after writes `0..k` landed and write `k` landed only for its first `torn` bytes.
    fn crash_image(&self, k: usize, torn: usize) -> Vec<u8> {
        let state = self.state.lock().unwrap();
        let mut image = state.base.clone();
        for (index, (offset, data)) in state.log.iter().enumerate().take(k + 1) {
            let len = if index == k { torn.min(data.len()) } else { data.len() };
            image[*offset as usize..*offset as usize + len].copy_from_slice(&data[..len]);
        }
        image
    }

    fn from_image(image: Vec<u8>) -> Arc<CrashDisk> {
        Arc::new(CrashDisk {
            state: Mutex::new(CrashState { bytes: image, ..CrashState::default() }),
        })
    }

    fn corrupt(&self, offset: usize) {
        self.state.lock().unwrap().bytes[offset] ^= 0xff;
    }
}

impl BlockIo for CrashDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let state = self.state.lock().unwrap();
        let start = offset as usize;
        let source = state
            .bytes
            .get(start..start + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(source);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let start = offset as usize;
        let target = state
            .bytes
            .get_mut(start..start + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        target.copy_from_slice(buf);
        state.log.push((offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn size_bytes(&self) -> std::io::Result<u64> {
        Ok(self.state.lock().unwrap().bytes.len() as u64)
    }
}

const EXTENT: u64 = 64 * 1024;
const POOL_BYTES: usize = layout::DATA_OFFSET as usize + 16 * EXTENT as usize;

fn options() -> FormatOptions {
    FormatOptions { force: false, extent_bytes: EXTENT }
}

fn new_pool() -> (Arc<CrashDisk>, Pool) {
    let disk = CrashDisk::new(POOL_BYTES);
    let pool = format_io(disk.clone(), Path::new("mem"), options()).unwrap();
    (disk, pool)
}

fn add_set(pool: &Pool, volume: &str, extents: u64) -> u32 {
    pool.update(|registry| {
        if registry.volume(volume).is_none() {
            registry.volumes.push(VolumeRecord {
                name: volume.into(),
                backing: format!("/dev/{volume}").into(),
                size_bytes: 1 << 30,
            });
        }
        let picked = registry.pick_free_extents(&[extents])?;
        let id = registry.next_snapshot_id;
        registry.next_snapshot_id += 1;
        registry.snapshot_sets.push(SnapshotSetRecord {
            id,
            description: format!("set {id}"),
            created_us: 42,
            userdata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            important: false,
            state: SetState::Active,
            merge_started: false,
            message: None,
            boot: None,
            boot_undo: None,
            boot_restore: None,
            cows: vec![CowRecord {
                volume: volume.into(),
                chunk_sectors: 8,
                extents: picked[0].clone(),
            }],
        });
        Ok(id)
    })
    .unwrap()
}

#[test]
fn format_then_open_finds_an_empty_registry() {
    let (disk, pool) = new_pool();
    assert_eq!(pool.registry().extent_count, 16 * EXTENT / EXTENT);
    assert_eq!(pool.size_bytes(), 16 * EXTENT);
    assert_eq!(pool.used_bytes(), 0);
    let reopened = Pool::open_io(disk, Path::new("mem")).unwrap();
    assert_eq!(reopened.registry(), pool.registry());
    assert_eq!(reopened.sequence(), 2);
}

#[test]
fn format_refuses_data_and_names_it() {
    let disk = CrashDisk::new(POOL_BYTES);
    disk.write_at(&[0x53, 0xef], 1080).unwrap();
    let err = format_io(disk.clone(), Path::new("mem"), options()).unwrap_err();
    assert!(err.to_string().contains("ext2/3/4"), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");

    let disk = CrashDisk::new(POOL_BYTES);
    disk.write_at(b"x", 300_000).unwrap();
    let err = format_io(disk.clone(), Path::new("mem"), options()).unwrap_err();
    assert!(err.to_string().contains("non-zero byte at offset 300000"), "{err}");
    // force overwrites
    format_io(disk, Path::new("mem"), FormatOptions { force: true, ..options() }).unwrap();

    // an existing pool is refused too (formatting again would lose its snapshots)
    let (disk, _pool) = new_pool();
    let err = format_io(disk, Path::new("mem"), options()).unwrap_err();
    assert!(err.to_string().contains("snapback pool"), "{err}");
}

#[test]
fn format_refuses_a_tiny_device() {
    let disk = CrashDisk::new(layout::DATA_OFFSET as usize + EXTENT as usize);
    assert!(matches!(
        format_io(disk, Path::new("mem"), options()),
        Err(PoolError::TooSmall { .. })
    ));
}

#[test]
fn a_sparse_pool_file_is_named_and_a_written_one_is_not() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let sparse = dir.path().join("sparse.img");
    std::fs::File::create(&sparse).unwrap().set_len(8 << 20).unwrap();
    let note = format::sparse_file_note(&sparse).expect("a file of holes is sparse");
    assert!(note.contains("0 of 8388608 bytes allocated") && note.contains("count=8"), "{note}");
    let written = dir.path().join("written.img");
    std::fs::write(&written, vec![0u8; 8 << 20]).unwrap();
    assert_eq!(format::sparse_file_note(&written), None);
    assert_eq!(format::sparse_file_note(Path::new("/dev/null")), None, "not a file");
}

#[test]
fn open_of_an_empty_device_says_it_is_not_a_pool() {
    let disk = CrashDisk::new(POOL_BYTES);
    let err = Pool::open_io(disk, Path::new("/dev/empty")).unwrap_err();
    assert!(matches!(err, PoolError::NotAPool { .. }), "{err}");
}

#[test]
fn updates_alternate_slots_and_the_newest_valid_copy_wins() {
    let (disk, pool) = new_pool();
    let first = add_set(&pool, "root", 2);
    let second = add_set(&pool, "root", 3);
    assert_eq!(pool.sequence(), 4);
    // sequence 4 is in slot 0: corrupt it, the copy in slot 1 (sequence 3, one set) wins
    disk.corrupt(HEADER_BYTES + 10);
    let reopened = Pool::open_io(disk.clone(), Path::new("mem")).unwrap();
    assert_eq!(reopened.sequence(), 3);
    let ids: Vec<u32> = reopened.registry().snapshot_sets.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![first]);
    // the next update goes to slot 0 again and is found after reopening
    let third = add_set(&reopened, "root", 1);
    // the surviving copy predates set `second`, so its next id is the one handed out again
    assert_eq!(third, second);
    let again = Pool::open_io(disk.clone(), Path::new("mem")).unwrap();
    assert_eq!(again.registry(), reopened.registry());

    // both copies bad: a clear error naming both
    disk.corrupt(HEADER_BYTES + 10);
    disk.corrupt(layout::SLOT_BYTES as usize + 20);
    let err = Pool::open_io(disk, Path::new("mem")).unwrap_err().to_string();
    assert!(err.contains("slot 0: checksum") && err.contains("slot 1: checksum"), "{err}");
}

#[test]
fn full_pool_is_no_space_and_changes_nothing() {
    let (_disk, pool) = new_pool();
    add_set(&pool, "root", 10);
    let before = (pool.registry(), pool.sequence());
    let err = pool.update(|registry| registry.pick_free_extents(&[3, 4]).map(|_| ())).unwrap_err();
    assert!(matches!(err, PoolError::NoSpace { wanted: 7, free: 6, .. }), "{err}");
    assert_eq!((pool.registry(), pool.sequence()), before);
}

#[test]
fn a_full_registry_refuses_growth_but_keeps_taking_state_changes() {
    let (disk, pool) = new_pool();
    let id = add_set(&pool, "root", 1);
    // Grow one set's userdata until the pool refuses; nothing of the refused change lands.
    let chunk = "x".repeat(64 * 1024);
    let mut grown = 0;
    let refused = loop {
        let key = format!("k{grown}");
        match pool.update(|registry| {
            registry.set_mut(id).unwrap().userdata.insert(key.clone(), chunk.clone());
            Ok(())
        }) {
            Ok(()) => grown += 1,
            Err(err) => break err,
        }
        assert!(grown < 64, "the registry never stopped growing");
    };
    assert!(
        matches!(refused, PoolError::RegistryTooLarge { limit: REGISTRY_GROWTH_LIMIT, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("delete snapshot sets"), "{refused}");
    assert_eq!(pool.registry().set(id).unwrap().userdata.len(), grown + 1);
    // A rollback's bookkeeping still commits, with a long message, and survives a reopen.
    let message = "m".repeat(4096);
    pool.update(|registry| {
        let set = registry.set_mut(id).unwrap();
        set.state = SetState::MergeFailed;
        set.merge_started = true;
        set.message = Some(message.clone());
        Ok(())
    })
    .unwrap();
    let reopened = Pool::open_io(disk, Path::new("mem")).unwrap();
    let set = reopened.registry().set(id).cloned().unwrap();
    assert_eq!((set.state, set.merge_started), (SetState::MergeFailed, true));
}

#[test]
fn deleting_a_set_frees_its_extents() {
    let (_disk, pool) = new_pool();
    let id = add_set(&pool, "root", 16);
    assert_eq!(pool.used_bytes(), 16 * EXTENT);
    pool.update(|registry| {
        registry.snapshot_sets.retain(|set| set.id != id);
        Ok(())
    })
    .unwrap();
    assert_eq!(pool.used_bytes(), 0);
    assert_eq!(pool.registry().pick_free_extents(&[16]).unwrap()[0].len(), 16);
}

#[test]
fn extent_io_concatenates_extents_across_boundaries() {
    let (disk, pool) = new_pool();
    let cow = pool.extent_io(&[5, 2]);
    assert_eq!(cow.size_bytes().unwrap(), 2 * EXTENT);
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    cow.write_at(&data, EXTENT - 1000).unwrap();
    // bytes land at the end of extent 5 and the start of extent 2
    let mut raw = vec![0u8; 1000];
    disk.read_at(&mut raw, layout::DATA_OFFSET + 6 * EXTENT - 1000).unwrap();
    assert_eq!(raw, data[..1000]);
    let mut raw = vec![0u8; 2000];
    disk.read_at(&mut raw, layout::DATA_OFFSET + 2 * EXTENT).unwrap();
    assert_eq!(raw, data[1000..]);
    let mut back = vec![0u8; 3000];
    cow.read_at(&mut back, EXTENT - 1000).unwrap();
    assert_eq!(back, data);
    // beyond the end is an error, growing makes room
    assert!(cow.write_at(&[1], 2 * EXTENT).is_err());
    cow.grow(&[9]);
    cow.write_at(&[7], 2 * EXTENT).unwrap();
    let mut byte = [0u8];
    disk.read_at(&mut byte, layout::DATA_OFFSET + 9 * EXTENT).unwrap();
    assert_eq!(byte, [7]);
}

#[test]
fn zeroing_extent_starts_clears_old_data() {
    let (disk, pool) = new_pool();
    disk.write_at(&[0xaa; 4096], layout::DATA_OFFSET + 3 * EXTENT).unwrap();
    pool.zero_extent_starts(&[3], 16384).unwrap();
    let mut raw = vec![1u8; 4096];
    disk.read_at(&mut raw, layout::DATA_OFFSET + 3 * EXTENT).unwrap();
    assert!(raw.iter().all(|&b| b == 0));
}

/// For every write of a registry update and several tear points inside it, a crash there
/// reloads as exactly the old or exactly the new registry.
#[test]
fn crash_at_any_write_of_an_update_leaves_old_or_new() {
    let (disk, pool) = new_pool();
    add_set(&pool, "root", 2);
    let old = pool.registry();
    disk.start_recording();
    add_set(&pool, "home", 3);
    let new = pool.registry();
    let writes = disk.writes_recorded();
    assert!(writes >= 1);
    let mut saw_old = false;
    let mut saw_new = false;
    for k in 0..writes {
        let len = disk.state.lock().unwrap().log[k].1.len();
        for torn in [0, 1, 36, HEADER_BYTES, HEADER_BYTES + 1, len / 2, len - 1, len] {
            let image = disk.crash_image(k, torn);
            let reopened = Pool::open_io(CrashDisk::from_image(image), Path::new("mem"))
                .unwrap_or_else(|err| panic!("crash at write {k} byte {torn}: {err}"));
            let registry = reopened.registry();
            if registry == old {
                saw_old = true;
            } else if registry == new {
                saw_new = true;
            } else {
                panic!("crash at write {k} byte {torn} gave neither old nor new registry");
            }
        }
    }
    assert!(saw_old && saw_new, "both outcomes must be reachable");
}

/// The same with the engine's power-loss device: the machine stops after `n` writes/flushes of
/// an update, unflushed writes are torn or dropped, and the pool reopens old or new.
#[test]
fn power_loss_during_an_update_leaves_old_or_new() {
    use super::io::{MemIo, PowerLoss};
    let base = MemIo::new(POOL_BYTES as u64);
    let pool = format_io(Arc::new(base), Path::new("mem"), options()).unwrap();
    add_set(&pool, "root", 2);
    let old = pool.registry();
    let image = pool_image(&pool);
    let mut outcomes = (0, 0);
    for stop_after in 0..6u64 {
        for mode in
            [PowerLoss::DropAll, PowerLoss::KeepSome(stop_after), PowerLoss::Tear(stop_after + 7)]
        {
            let dev = Arc::new(MemIo::from_bytes(image.clone()));
            let pool = Pool::open_io(dev.clone(), Path::new("mem")).unwrap();
            dev.die_after(stop_after);
            let finished = pool
                .update(|registry| {
                    registry.volumes.push(VolumeRecord {
                        name: "home".into(),
                        backing: "/dev/home".into(),
                        size_bytes: 1,
                    });
                    Ok(())
                })
                .is_ok();
            let new = pool.registry();
            dev.power_loss(mode);
            let reopened = Pool::open_io(dev, Path::new("mem")).unwrap().registry();
            if reopened == old {
                assert!(
                    !finished,
                    "an acknowledged update was lost (stop after {stop_after}, {mode:?})"
                );
                outcomes.0 += 1;
            } else {
                assert_eq!(reopened.volumes.len(), old.volumes.len() + 1, "neither old nor new");
                assert_eq!(reopened.snapshot_sets, old.snapshot_sets);
                if finished {
                    assert_eq!(reopened, new);
                }
                outcomes.1 += 1;
            }
        }
    }
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "both outcomes reachable: {outcomes:?}");
}

fn pool_image(pool: &Pool) -> Vec<u8> {
    let dev = pool.device();
    let mut image = vec![0u8; dev.size_bytes().unwrap() as usize];
    dev.read_at(&mut image, 0).unwrap();
    image
}
