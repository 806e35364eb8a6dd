//! Capture and restore of boot partitions laid out as Fedora's (GRUB with BLS entries and
//! grubenv in /boot) and as systemd-boot's (entries and loader.conf on the ESP), with a power
//! cut before every mutation of the restore.

use std::cell::Cell;
use std::collections::BTreeMap;

use super::*;

struct Machine {
    _dir: tempfile::TempDir,
    roots: BootRoots,
    blobs: std::cell::RefCell<BTreeMap<String, Vec<u8>>>,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let roots =
            BootRoots { boot: dir.path().join("boot"), esp: Some(dir.path().join("boot/efi")) };
        fs::create_dir_all(roots.boot.join("loader/entries")).unwrap();
        fs::create_dir_all(roots.esp.as_ref().unwrap().join("loader/entries")).unwrap();
        Machine { _dir: dir, roots, blobs: Default::default() }
    }

    fn write(&self, root: BootRoot, path: &str, text: &str) {
        let full = self.roots.path(root, path).unwrap();
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
    }

    fn remove(&self, root: BootRoot, path: &str) {
        fs::remove_file(self.roots.path(root, path).unwrap()).unwrap();
    }

    /// A Fedora kernel: image, initramfs and GRUB BLS entry in /boot.
    fn fedora_kernel(&self, version: &str, options: &str) {
        self.write(BootRoot::Boot, &format!("vmlinuz-{version}"), &format!("kernel {version}"));
        self.write(
            BootRoot::Boot,
            &format!("initramfs-{version}.img"),
            &format!("initramfs {version}"),
        );
        self.write(BootRoot::Boot, &format!("System.map-{version}"), &format!("map {version}"));
        self.write(
            BootRoot::Boot,
            &format!("loader/entries/abc-{version}.conf"),
            &format!("title Fedora ({version})\nversion {version}\nlinux /vmlinuz-{version}\ninitrd /initramfs-{version}.img $tuned_initrd\noptions {options}\n"),
        );
    }

    /// A systemd-boot kernel on the ESP, in the BLS `<machine-id>/<version>/` layout.
    fn esp_kernel(&self, version: &str) {
        self.write(
            BootRoot::Esp,
            &format!("abc/{version}/linux"),
            &format!("esp kernel {version}"),
        );
        self.write(
            BootRoot::Esp,
            &format!("abc/{version}/initrd"),
            &format!("esp initrd {version}"),
        );
        self.write(
            BootRoot::Esp,
            &format!("loader/entries/abc-{version}.conf"),
            &format!("title Debian {version}\nlinux /abc/{version}/linux\ninitrd /abc/{version}/initrd\noptions root=/dev/mapper/snapback-root\n"),
        );
    }

    fn grub_default(&self, id: &str) {
        self.write(
            BootRoot::Boot,
            "grub2/grubenv",
            &format!("# GRUB Environment Block\nsaved_entry={id}\n{}", "#".repeat(64)),
        );
    }

    fn installed(&self) {
        self.fedora_kernel("6.10.1", "root=UUID=1 ro");
        self.fedora_kernel("6.11.2", "root=UUID=1 ro quiet");
        self.grub_default("abc-6.11.2");
        self.esp_kernel("6.11.2");
        self.write(BootRoot::Esp, "loader/loader.conf", "timeout 3\ndefault abc-6.11.2\n");
        // Not managed: left alone by capture and restore.
        self.write(BootRoot::Boot, "grub2/fonts/unicode.pf2", "font");
        self.write(BootRoot::Esp, "EFI/fedora/shimx64.efi", "shim");
        self.write(
            BootRoot::Boot,
            "loader/entries/snapback-rollback-1.conf",
            "title ours\nlinux /snapback/x/linux\n",
        );
    }

    fn capture(&self) -> BootRecord {
        capture(&self.roots, |bytes| {
            let sha = sha256(bytes);
            self.blobs.borrow_mut().insert(sha.clone(), bytes.to_vec());
            Ok(sha)
        })
        .unwrap()
    }

    /// What a `dnf upgrade` that installs a kernel does: a new kernel, initramfs and entry, the
    /// default switched to it, the oldest kernel removed, an options change in an old entry.
    fn upgrade(&self) {
        self.fedora_kernel("6.12.0", "root=UUID=1 ro quiet");
        self.grub_default("abc-6.12.0");
        self.remove(BootRoot::Boot, "vmlinuz-6.10.1");
        self.remove(BootRoot::Boot, "initramfs-6.10.1.img");
        self.remove(BootRoot::Boot, "System.map-6.10.1");
        self.remove(BootRoot::Boot, "loader/entries/abc-6.10.1.conf");
        self.write(
            BootRoot::Boot,
            "loader/entries/abc-6.11.2.conf",
            "title Fedora (6.11.2)\nversion 6.11.2\nlinux /vmlinuz-6.11.2\ninitrd /initramfs-6.11.2.img\noptions root=UUID=1 ro quiet mitigations=off\n",
        );
        self.write(BootRoot::Boot, "initramfs-6.11.2.img", "initramfs 6.11.2, regenerated");
        self.esp_kernel("6.12.0");
        self.write(BootRoot::Esp, "loader/loader.conf", "timeout 3\ndefault abc-6.12.0\n");
        // The ESP keeps one kernel: the snapshot's default entry and its files are gone.
        self.remove(BootRoot::Esp, "abc/6.11.2/linux");
        self.remove(BootRoot::Esp, "abc/6.11.2/initrd");
        self.remove(BootRoot::Esp, "loader/entries/abc-6.11.2.conf");
    }

    fn state(&self) -> BTreeMap<Key, String> {
        current(&self.roots).unwrap()
    }

    fn fetch(&self) -> impl FnMut(&str) -> io::Result<Vec<u8>> + '_ {
        |sha| self.blobs.borrow().get(sha).cloned().ok_or_else(|| io::Error::other("no blob"))
    }
}

fn as_map(record: &BootRecord) -> BTreeMap<Key, String> {
    record.files.iter().map(|f| ((f.root, f.path.clone()), f.sha256.clone())).collect()
}

#[test]
fn capture_takes_entries_kernels_and_defaults_but_not_our_files_or_others() {
    let machine = Machine::new();
    machine.installed();
    let record = machine.capture();
    let paths: Vec<(BootRoot, &str)> =
        record.files.iter().map(|f| (f.root, f.path.as_str())).collect();
    for wanted in [
        (BootRoot::Boot, "vmlinuz-6.10.1"),
        (BootRoot::Boot, "initramfs-6.11.2.img"),
        (BootRoot::Boot, "System.map-6.10.1"),
        (BootRoot::Boot, "loader/entries/abc-6.11.2.conf"),
        (BootRoot::Boot, "grub2/grubenv"),
        (BootRoot::Esp, "abc/6.11.2/linux"),
        (BootRoot::Esp, "abc/6.11.2/initrd"),
        (BootRoot::Esp, "loader/loader.conf"),
    ] {
        assert!(paths.contains(&wanted), "{wanted:?} missing from {paths:?}");
    }
    assert!(
        !paths
            .iter()
            .any(|(_, p)| p.contains("snapback") || p.contains("fonts") || p.contains("shim")),
        "{paths:?}"
    );
    assert!(record.files.iter().all(|f| f.mode & 0o777 != 0));
    assert_eq!(bootable(&machine.roots), Ok(()));
}

#[test]
fn restore_brings_back_exactly_the_captured_configuration() {
    let machine = Machine::new();
    machine.installed();
    let record = machine.capture();
    let before = machine.state();
    machine.upgrade();
    assert_ne!(machine.state(), before);
    let steps = restore(&machine.roots, &record, &RealFs, machine.fetch()).unwrap();
    assert!(steps > 5, "{steps} steps");
    assert_eq!(machine.state(), before);
    assert_eq!(as_map(&record), before);
    // Files it does not manage are untouched.
    assert_eq!(
        fs::read_to_string(machine.roots.boot.join("grub2/fonts/unicode.pf2")).unwrap(),
        "font"
    );
    assert!(machine.roots.boot.join("loader/entries/snapback-rollback-1.conf").exists());
    // Nothing left to do the second time.
    assert_eq!(restore(&machine.roots, &record, &RealFs, machine.fetch()).unwrap(), 0);
}

/// Cuts power before mutation number `budget` (a write may leave its temporary file).
struct PowerCut {
    budget: Cell<usize>,
}

impl BootFs for PowerCut {
    fn write_atomic(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        if self.budget.get() == 0 {
            // Half done: the temporary file is there, the rename never happened.
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let _ = fs::write(
                path.with_file_name(format!(".{name}.snapback-new")),
                &bytes[..bytes.len() / 2],
            );
            return Err(io::Error::other("power cut"));
        }
        self.budget.set(self.budget.get() - 1);
        RealFs.write_atomic(path, bytes, mode)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        if self.budget.get() == 0 {
            return Err(io::Error::other("power cut"));
        }
        self.budget.set(self.budget.get() - 1);
        RealFs.remove(path)
    }
}

#[test]
fn a_power_cut_at_any_step_of_a_restore_leaves_a_bootable_machine_and_resumes() {
    let reference = Machine::new();
    reference.installed();
    let record = reference.capture();
    reference.upgrade();
    let total = plan(&reference.state(), &record).len();
    assert!(total >= 10, "{total} steps");
    for cut in 0..total {
        let machine = Machine::new();
        machine.installed();
        let record = machine.capture();
        let before = machine.state();
        machine.upgrade();
        let fs = PowerCut { budget: Cell::new(cut) };
        assert!(
            restore(&machine.roots, &record, &fs, machine.fetch()).is_err(),
            "cut {cut} of {total}"
        );
        assert_eq!(bootable(&machine.roots), Ok(()), "not bootable after a cut before step {cut}");
        restore(&machine.roots, &record, &RealFs, machine.fetch()).unwrap();
        assert_eq!(machine.state(), before, "cut {cut}: the resumed restore differs");
        assert_eq!(bootable(&machine.roots), Ok(()));
    }
}

#[test]
fn the_default_is_switched_after_the_entries_and_before_any_removal() {
    let machine = Machine::new();
    machine.installed();
    let record = machine.capture();
    machine.upgrade();
    let steps = plan(&machine.state(), &record);
    let position = |wanted: &dyn Fn(&Step) -> bool| steps.iter().position(wanted).unwrap();
    let default = position(&|s| matches!(s, Step::Write(f) if f.path == "grub2/grubenv"));
    let last_entry_write = steps
        .iter()
        .rposition(|s| matches!(s, Step::Write(f) if class(&f.path) == Class::Entry))
        .unwrap();
    let first_removal = position(&|s| matches!(s, Step::Remove(_)));
    let image_removal = position(&|s| matches!(s, Step::Remove((_, p)) if p == "vmlinuz-6.12.0"));
    let entry_removal =
        position(&|s| matches!(s, Step::Remove((_, p)) if p == "loader/entries/abc-6.12.0.conf"));
    assert!(last_entry_write < default && default < first_removal, "{steps:#?}");
    assert!(entry_removal < image_removal, "{steps:#?}");
}

#[test]
fn a_corrupt_kept_copy_is_refused_before_anything_is_written() {
    let machine = Machine::new();
    machine.installed();
    let record = machine.capture();
    machine.upgrade();
    let after_upgrade = machine.state();
    let err = restore(&machine.roots, &record, &RealFs, |_| Ok(b"rotten".to_vec())).unwrap_err();
    assert!(err.to_string().contains("does not match its checksum"), "{err}");
    assert_eq!(machine.state(), after_upgrade);
}
