//! The boot loaders' files as the boot side reads them from /boot and the ESP (`boot::bls`):
//! BLS entries, systemd-boot's `loader.conf`, GRUB's `grubenv`; and how `boot::entries`
//! picks the snapshot-time default entry from them for the rollback entry.
//!
//! Input: NUL-separated texts: entry A, entry B, `loader.conf`, `grubenv`, entry A's id (a
//! file name, so any text). Files are read as the daemon reads them: lossily as UTF-8.
//!
//! An entry survives being written and read again (the daemon rewrites entries); the files
//! an entry boots are plain paths inside its partition (a restore and the rollback entry's
//! copies are written there); the default picked is one of the entries.

use std::borrow::Cow;

use snapbackd::boot::bls::{self, Entry};
use snapbackd::boot::entries;
use snapbackd::pool::{BootFile, BootRecord, BootRoot};

fn check_entry(entry: &Entry) {
    let again = Entry::parse(&entry.id, &entry.render());
    assert_eq!(&again, entry, "an entry changes when written and read again");
    for file in entry.files() {
        assert_eq!(bls::relative_path(&file).as_deref(), Some(file.as_str()), "{file:?}");
        assert!(
            !file.starts_with('/')
                && file.split('/').all(|p| !p.is_empty() && p != "." && p != ".."),
            "entry {} boots {file:?}, outside its partition",
            entry.id
        );
    }
    let _ = entry.options();
}

pub fn run(data: &[u8]) {
    let parts = super::parts(data);
    let text = |i: usize| -> Cow<'_, str> {
        String::from_utf8_lossy(parts.get(i).copied().unwrap_or_default())
    };
    let id_a = text(4).lines().next().unwrap_or_default().to_string();
    let a = Entry::parse(&id_a, &text(0));
    let b = Entry::parse("b", &text(1));
    check_entry(&a);
    check_entry(&b);
    let loader_default = bls::loader_default(&text(2));
    let saved_entry = bls::grubenv_saved_entry(&text(3));
    for pattern in loader_default.iter().chain(saved_entry.iter()) {
        let _ = bls::pattern_matches(pattern, &a.id);
        let _ = bls::pattern_matches(pattern, &b.id);
    }

    // A recorded configuration holding these files, as the pool keeps them (by SHA-256; here
    // the index of the part stands for it).
    let file = |root, path: String, part: usize| BootFile {
        root,
        path,
        sha256: part.to_string(),
        mode: 0o644,
    };
    let mut files = vec![
        file(BootRoot::Boot, "loader/loader.conf".into(), 2),
        file(BootRoot::Boot, "grub2/grubenv".into(), 3),
        file(BootRoot::Boot, "loader/entries/b.conf".into(), 1),
    ];
    // An id that is no file name cannot be an entry on disk.
    if !id_a.is_empty() && !id_a.contains('/') && id_a != "b" {
        files.push(file(BootRoot::Esp, format!("loader/entries/{id_a}.conf"), 0));
    }
    let record = BootRecord { files };
    let mut fetch = |sha: &str| -> std::io::Result<Vec<u8>> {
        let index: usize = sha.parse().map_err(std::io::Error::other)?;
        Ok(parts.get(index).copied().unwrap_or_default().to_vec())
    };
    let picked = entries::default_entry(&record, &mut fetch).expect("every part can be fetched");
    if let Some((root, entry)) = picked {
        let expected = if entry.id == "b" { (BootRoot::Boot, &b) } else { (BootRoot::Esp, &a) };
        assert_eq!(
            (root, &entry),
            (expected.0, expected.1),
            "the default is not one of the entries"
        );
    }
}
