//! The boot loaders' files snapback reads and writes: Boot Loader Specification entries
//! (`loader/entries/*.conf`, read by systemd-boot and by Fedora's GRUB with blscfg),
//! systemd-boot's `loader/loader.conf`, and GRUB's environment block (`grubenv`).
//!
//! Parsing keeps every line: an entry is rewritten by changing the lines snapback owns and
//! leaving the rest as the distribution wrote it.

use crate::pool::is_plain_relative;

/// One BLS entry (Type #1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name without `.conf`: what `loader.conf`'s `default` and GRUB's
    /// `saved_entry` name.
    pub id: String,
    /// `(key, value)` in file order; comments and blank lines are dropped.
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// Parses an entry file. Unknown keys are kept; a line without a value is a key with an
    /// empty value, as systemd-boot reads it.
    pub fn parse(id: &str, text: &str) -> Entry {
        let fields = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| match line.split_once(char::is_whitespace) {
                Some((key, value)) => (key.to_string(), value.trim().to_string()),
                None => (line.to_string(), String::new()),
            })
            .collect();
        Entry { id: id.to_string(), fields }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key` (`initrd` and `options` may repeat).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The files the entry boots, relative to the partition it lives on: `linux`, every
    /// `initrd`, `devicetree`, `efi`. Paths are absolute in the entry, from that partition's
    /// root; anything else (empty, `..`) is not a file snapback follows.
    pub fn files(&self) -> Vec<String> {
        // GRUB's entries may append variables after a path (`initrd /x.img $tuned_initrd`):
        // only the first word is a file.
        ["linux", "initrd", "devicetree", "efi"]
            .iter()
            .flat_map(|key| self.all(key))
            .filter_map(|value| value.split_whitespace().next())
            .filter_map(relative_path)
            .collect()
    }

    /// The kernel command line: every `options` line, joined.
    pub fn options(&self) -> String {
        self.all("options").collect::<Vec<_>>().join(" ")
    }

    /// The entry as a file.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (key, value) in &self.fields {
            text.push_str(key);
            if !value.is_empty() {
                text.push(' ');
                text.push_str(value);
            }
            text.push('\n');
        }
        text
    }
}

/// A BLS path (`/vmlinuz-6.1`, `/abc/6.1/linux`) as a relative path, or None when it is not
/// one snapback can follow safely.
pub fn relative_path(path: &str) -> Option<String> {
    let relative = path.trim().trim_start_matches('/');
    is_plain_relative(relative).then(|| relative.to_string())
}

/// systemd-boot's `default` in `loader.conf` (an entry id, possibly with a glob, or `@saved`).
pub fn loader_default(loader_conf: &str) -> Option<String> {
    loader_conf
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(char::is_whitespace))
        .filter(|(key, _)| *key == "default")
        .map(|(_, value)| value.trim().to_string())
        .next_back()
}

/// GRUB's `saved_entry` from a `grubenv` block.
pub fn grubenv_saved_entry(grubenv: &str) -> Option<String> {
    grubenv
        .lines()
        .filter_map(|line| line.strip_prefix("saved_entry="))
        .map(str::to_string)
        .next_back()
}

/// Whether `id` matches a `default` pattern (systemd-boot accepts `*`, `?` and `[…]` globs;
/// `*` and `?` are enough for what distributions write).
pub fn pattern_matches(pattern: &str, id: &str) -> bool {
    let id = id.strip_suffix(".conf").unwrap_or(id).as_bytes();
    let pattern = pattern.strip_suffix(".conf").unwrap_or(pattern).as_bytes();
    // Trying every split at every `*` is exponential in the number of stars (a loader.conf
    // `default` of a dozen stars against a long entry id hung the daemon). Only the latest
    // `*` ever needs to swallow one more byte on a mismatch: whatever an earlier star could
    // take instead, the later one can take as well. At most len(pattern) × len(id) steps.
    let (mut p, mut s) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while s < id.len() {
        match pattern.get(p) {
            Some(b'*') => {
                last_star = Some((p, s));
                p += 1;
            }
            Some(&c) if c == b'?' || c == id[s] => {
                p += 1;
                s += 1;
            }
            _ => match last_star {
                Some((star, swallowed)) => {
                    last_star = Some((star, swallowed + 1));
                    p = star + 1;
                    s = swallowed + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEDORA: &str = "title Fedora Linux (6.11.4-301.fc41.x86_64) 41 (Workstation Edition)\n\
        version 6.11.4-301.fc41.x86_64\nlinux /vmlinuz-6.11.4-301.fc41.x86_64\n\
        initrd /initramfs-6.11.4-301.fc41.x86_64.img $tuned_initrd\n\
        options root=UUID=1234 ro rhgb quiet\ngrub_users $grub_users\ngrub_arg --unrestricted\n\
        grub_class fedora\n";

    #[test]
    fn a_fedora_entry_names_its_kernel_and_initramfs() {
        let entry = Entry::parse("abc-6.11.4-301.fc41.x86_64", FEDORA);
        assert_eq!(entry.get("version"), Some("6.11.4-301.fc41.x86_64"));
        // GRUB's `$tuned_initrd` after the path is not a file of the partition.
        assert_eq!(
            entry.files(),
            vec!["vmlinuz-6.11.4-301.fc41.x86_64", "initramfs-6.11.4-301.fc41.x86_64.img"]
        );
        assert_eq!(entry.options(), "root=UUID=1234 ro rhgb quiet");
        assert_eq!(Entry::parse(&entry.id, &entry.render()), entry);
    }

    #[test]
    fn paths_that_leave_the_partition_are_not_followed() {
        assert_eq!(relative_path("/a/b/linux"), Some("a/b/linux".into()));
        assert_eq!(relative_path("/../etc/shadow"), None);
        assert_eq!(relative_path("/"), None);
        assert_eq!(relative_path("/a//b"), None);
    }

    #[test]
    fn defaults_of_both_loaders_are_read() {
        assert_eq!(
            loader_default("timeout 3\n# default old\ndefault fedora-*\n"),
            Some("fedora-*".into())
        );
        assert_eq!(loader_default("timeout 3\n"), None);
        let grubenv = format!(
            "# GRUB Environment Block\nsaved_entry=abc-6.11\nboot_success=1\n{}",
            "#".repeat(900)
        );
        assert_eq!(grubenv_saved_entry(&grubenv), Some("abc-6.11".into()));
        assert!(pattern_matches("fedora-*", "fedora-6.11.conf"));
        assert!(pattern_matches("abc-6.1?", "abc-6.11"));
        assert!(!pattern_matches("abc-6.1", "abc-6.11"));
    }

    /// Every split at every star, tried in turn: obviously right, exponential.
    fn matches_by_trying_every_split(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                matches_by_trying_every_split(&p[1..], s)
                    || (!s.is_empty() && matches_by_trying_every_split(p, &s[1..]))
            }
            (Some(b'?'), Some(_)) => matches_by_trying_every_split(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => matches_by_trying_every_split(&p[1..], &s[1..]),
            _ => false,
        }
    }

    /// Every pattern of up to 5 symbols from `*?ab` against every id of up to 5 from `ab`.
    #[test]
    fn patterns_match_as_trying_every_split_does() {
        fn all(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
            let mut out = vec![Vec::new()];
            let mut last = out.clone();
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |c| [w.as_slice(), &[*c]].concat()))
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        for pattern in all(b"*?ab", 5) {
            for id in all(b"ab", 5) {
                let (p, i) = (String::from_utf8_lossy(&pattern), String::from_utf8_lossy(&id));
                assert_eq!(
                    pattern_matches(&p, &i),
                    matches_by_trying_every_split(&pattern, &id),
                    "{p:?} against {i:?}"
                );
            }
        }
    }

    /// Found by the boot_files fuzz target (fuzz/regressions/boot_files/): this took minutes.
    #[test]
    fn many_stars_against_a_long_id_take_no_time() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pattern = format!("{}c", "*a".repeat(11));
            let _ = done.send(pattern_matches(&pattern, &"a".repeat(120)));
        });
        let matched = finished.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(matched, Ok(false), "still matching after 5 s");
    }
}
