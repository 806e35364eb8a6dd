//! `/etc/snapback/snapback.toml`: where the pool is and which volumes snapback manages.
//!
//! ```toml
//! [pool]
//! path = "/var/lib/snapback/pool"   # block device or file formatted by `snapbackd init`
//!
//! [[volume]]
//! name = "root"                      # letters, digits, '-', '_'; unique, and no other
//!                                    # volume's name plus -real, -<N> or -<N>-cow
//! device = "/dev/vda2"               # the backing block device or file
//! auto = true                        # part of a Snapshot call with an empty volume list
//! cow_size = "1G"                    # optional: initial COW reservation per snapshot
//! ```
//!
//! Unknown keys and bad values are errors that name the file and the line (the `toml` crate
//! reports the position; semantic checks name the volume).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::boot::BootConfig;
use crate::cleanup::CleanupConfig;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/snapback/snapback.toml";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub pool: PoolConfig,
    pub volumes: Vec<VolumeConfig>,
    /// The `[boot]` table (defaults when absent): see `crate::boot::BootConfig`.
    pub boot: BootConfig,
}

/// The `[pool]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Block device or file that holds COW space and the registry.
    pub path: PathBuf,
}

/// One `[[volume]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    pub name: String,
    /// The backing block device or file.
    pub device: PathBuf,
    /// Whether a `Snapshot` call with an empty volume list includes this volume.
    #[serde(default = "default_auto")]
    pub auto: bool,
    /// Initial COW size per snapshot of this volume, in bytes (`"1G"`, `"512M"` or a number).
    #[serde(default, deserialize_with = "deserialize_size")]
    pub cow_size: Option<u64>,
}

// A declared volume is snapshotted by default: that is what a user who lists `/` expects.
fn default_auto() -> bool {
    true
}

/// The file as written; turned into `Config` after validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pool: PoolConfig,
    #[serde(default, rename = "volume")]
    volumes: Vec<VolumeConfig>,
    /// The automatic cleanup policy (see `crate::cleanup`); every key optional.
    #[serde(default)]
    cleanup: CleanupConfig,
    #[serde(default)]
    boot: BootConfig,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, unknown keys, wrong types: the message carries the line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file parsed but says something that cannot work.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Read and validate the configuration at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    load_with_cleanup(path).map(|(config, _)| config)
}

/// Read and validate the configuration at `path`, with its `[cleanup]` table (defaults when
/// absent). Kept apart from `Config` so that code building a `Config` by hand is unaffected.
pub fn load_with_cleanup(path: impl AsRef<Path>) -> Result<(Config, CleanupConfig), ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse_with_cleanup(&text, path)
}

/// Parse and validate configuration text; `origin` only names the source in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parse_with_cleanup(text, origin).map(|(config, _)| config)
}

/// `parse`, plus the `[cleanup]` table.
pub fn parse_with_cleanup(
    text: &str,
    origin: &Path,
) -> Result<(Config, CleanupConfig), ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_path_buf(),
        message: describe_toml_error(text, &e),
    })?;
    let invalid = |message: String| ConfigError::Invalid { path: origin.to_path_buf(), message };
    raw.cleanup.validate().map_err(|e| invalid(e.to_string()))?;
    if raw.pool.path.as_os_str().is_empty() {
        return Err(invalid("[pool] path must not be empty".into()));
    }
    if raw.volumes.is_empty() {
        return Err(invalid(
            "no [[volume]] declared: snapback needs at least one volume to manage".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut devices = HashSet::new();
    for volume in &raw.volumes {
        validate_volume_name(&volume.name).map_err(&invalid)?;
        if !names.insert(volume.name.as_str()) {
            return Err(invalid(format!("volume name '{}' is declared twice", volume.name)));
        }
        if volume.device.as_os_str().is_empty() {
            return Err(invalid(format!("volume '{}': device must not be empty", volume.name)));
        }
        if volume.device == raw.pool.path {
            return Err(invalid(format!(
                "volume '{}': device {} is the pool itself; the pool must live elsewhere",
                volume.name,
                volume.device.display().to_string().escape_debug()
            )));
        }
        if !devices.insert(volume.device.as_path()) {
            return Err(invalid(format!(
                "volume '{}': device {} is already used by another volume",
                volume.name,
                volume.device.display().to_string().escape_debug()
            )));
        }
        if volume.cow_size == Some(0) {
            return Err(invalid(format!(
                "volume '{}': cow_size must be greater than zero",
                volume.name
            )));
        }
    }
    // Checked whichever backend runs: the backend is chosen when the daemon starts, not here,
    // and a configuration that works on the userspace backend (whose names `<volume>` and
    // `<volume>@<id>` cannot clash: `@` is not allowed in volume names) must not stop working
    // on the kernel backend at the first snapshot.
    for (i, a) in raw.volumes.iter().enumerate() {
        for b in &raw.volumes[i + 1..] {
            if let Some(clash) = crate::backend::kernel::names::clash(&a.name, &b.name) {
                return Err(invalid(clash.to_string()));
            }
        }
    }
    if let Some(root) = &raw.boot.root_volume {
        if !raw.volumes.iter().any(|volume| &volume.name == root) {
            return Err(invalid(format!(
                "[boot] root_volume '{}' is not a declared volume",
                root.escape_debug()
            )));
        }
    }
    Ok((Config { pool: raw.pool, volumes: raw.volumes, boot: raw.boot }, raw.cleanup))
}

/// Volume names become device names (`snapback-<name>`) and bus data: keep them plain.
pub fn validate_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("volume name must not be empty".into());
    }
    // The name is shown escaped: it comes from a file or the bus, and a newline in it would
    // split the one-line error (and the journal line that carries it).
    let shown = name.escape_debug();
    if name.len() > 64 {
        return Err(format!("volume name '{shown}' is longer than 64 characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "volume name '{shown}' contains '{}': use letters, digits, '-' and '_' only",
            bad.escape_debug()
        ));
    }
    Ok(())
}

/// The toml crate's message plus `line N` computed from its byte span, so the error is one line.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_string();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Parse a size such as `1G`, `512M`, `4096`, `2GiB` (binary units) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    // shown escaped in refusals: they are one line each
    let shown = text.escape_debug();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{shown}' is not a size (examples: 4096, 512M, 1G)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => return Err(format!("unknown size unit '{}' in '{shown}'", other.escape_debug())),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("size '{shown}' is too large"))
}

fn deserialize_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct SizeVisitor;
    impl serde::de::Visitor<'_> for SizeVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size in bytes or a string such as \"1G\"")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v).map(Some).map_err(|_| E::custom("size must not be negative"))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_size(v).map(Some).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(SizeVisitor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    const GOOD: &str = r#"
[pool]
path = "/var/lib/snapback/pool"

[[volume]]
name = "root"
device = "/dev/vda2"

[[volume]]
name = "var_log-1"
device = "/dev/vda3"
auto = false
cow_size = "512M"
"#;

    #[test]
    fn parses_pool_and_volumes_with_defaults() {
        let config = parse_str(GOOD).unwrap();
        assert_eq!(config.pool.path, PathBuf::from("/var/lib/snapback/pool"));
        assert_eq!(config.volumes.len(), 2);
        assert_eq!(config.volumes[0].name, "root");
        assert_eq!(config.volumes[0].device, PathBuf::from("/dev/vda2"));
        assert!(config.volumes[0].auto);
        assert_eq!(config.volumes[0].cow_size, None);
        assert!(!config.volumes[1].auto);
        assert_eq!(config.volumes[1].cow_size, Some(512 << 20));
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = "[pool]\npath = \"/p\"\n\n[[volume]]\nname = \"a\"\ndevice = \"/d\"\nsize = 3\n";
        let err = parse_str(text).unwrap_err().to_string();
        assert!(err.contains("line 7"), "{err}");
        assert!(err.contains("size"), "{err}");
        assert!(err.starts_with("test.toml: "), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error_with_its_line() {
        let text =
            "[pool]\npath = \"/p\"\n[[volume]]\nname = \"a\"\ndevice = \"/d\"\nauto = \"yes\"\n";
        let err = parse_str(text).unwrap_err().to_string();
        assert!(err.contains("line 6"), "{err}");
    }

    #[test]
    fn bad_and_duplicate_names_are_refused() {
        let bad = "[pool]\npath = \"/p\"\n[[volume]]\nname = \"a/b\"\ndevice = \"/d\"\n";
        let err = parse_str(bad).unwrap_err().to_string();
        assert!(err.contains("contains '/'"), "{err}");

        // Names built from volume names stay unambiguous because of these two: the userspace
        // backend's FUSE files `<volume>` and `<volume>@<id>`, and dm uuids split at `.`.
        for (name, bad) in [("data@1", '@'), ("data.1", '.')] {
            let text =
                format!("[pool]\npath = \"/p\"\n[[volume]]\nname = \"{name}\"\ndevice = \"/d\"\n");
            let err = parse_str(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("contains '{bad}'")), "{err}");
        }

        // Found by the config_toml fuzz target (fuzz/regressions/config_toml/): a newline in
        // a name split the one-line refusal.
        let newline = "[pool]\npath = \"/p\"\n[[volume]]\nname = \"a\\nb\"\ndevice = \"/d\"\n";
        let err = parse_str(newline).unwrap_err().to_string();
        assert!(err.contains("volume name 'a\\nb' contains '\\n'"), "{err}");
        assert!(!err.contains('\n'), "{err:?}");
        let root = "[pool]\npath = \"/p\"\n[[volume]]\nname = \"a\"\ndevice = \"/d\"\n[boot]\nroot_volume = \"h\\nome\"\n";
        let err = parse_str(root).unwrap_err().to_string();
        assert!(err.contains("root_volume 'h\\nome' is not"), "{err}");
        let size = parse_size("1\nX").unwrap_err();
        assert!(!size.contains('\n'), "{size:?}");

        let empty = "[pool]\npath = \"/p\"\n[[volume]]\nname = \"\"\ndevice = \"/d\"\n";
        assert!(parse_str(empty).unwrap_err().to_string().contains("empty"));

        let dup = "[pool]\npath = \"/p\"\n[[volume]]\nname = \"a\"\ndevice = \"/d1\"\n[[volume]]\nname = \"a\"\ndevice = \"/d2\"\n";
        let err = parse_str(dup).unwrap_err().to_string();
        assert!(err.contains("declared twice"), "{err}");
    }

    fn two_volumes(a: &str, b: &str) -> String {
        format!(
            "[pool]\npath = \"/p\"\n[[volume]]\nname = \"{a}\"\ndevice = \"/d1\"\n\
             [[volume]]\nname = \"{b}\"\ndevice = \"/d2\"\n"
        )
    }

    #[test]
    fn volumes_whose_device_names_clash_are_refused() {
        for (a, b, name) in [
            ("data", "data-real", "snapback-data-real"),
            ("data", "data-3-cow", "snapback-data-3-cow"),
            ("data", "data-1", "snapback-data-1"),
            ("root-2", "root", "snapback-root-2"),
        ] {
            let err = parse_str(&two_volumes(a, b)).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
            let err = err.to_string();
            assert!(err.starts_with("test.toml: volumes '"), "{err}");
            for needle in [format!("'{a}'"), format!("'{b}'"), format!(" {name} ")] {
                assert!(err.contains(&needle), "{a} / {b}: no {needle} in: {err}");
            }
        }
        for (a, b) in
            [("data", "data-01"), ("data", "data-realm"), ("data", "data-cow"), ("data", "data_1")]
        {
            let config = parse_str(&two_volumes(a, b)).unwrap_or_else(|e| panic!("{a} / {b}: {e}"));
            assert_eq!(config.volumes.len(), 2);
        }
    }

    #[test]
    fn shared_devices_and_pool_overlap_are_refused() {
        let shared = "[pool]\npath = \"/p\"\n[[volume]]\nname = \"a\"\ndevice = \"/d\"\n[[volume]]\nname = \"b\"\ndevice = \"/d\"\n";
        assert!(parse_str(shared).unwrap_err().to_string().contains("already used"));
        let on_pool = "[pool]\npath = \"/p\"\n[[volume]]\nname = \"a\"\ndevice = \"/p\"\n";
        assert!(parse_str(on_pool).unwrap_err().to_string().contains("pool itself"));
    }

    #[test]
    fn missing_pool_or_volumes_is_refused() {
        assert!(matches!(
            parse_str("[[volume]]\nname = \"a\"\ndevice = \"/d\"\n"),
            Err(ConfigError::Parse { .. })
        ));
        let err = parse_str("[pool]\npath = \"/p\"\n").unwrap_err().to_string();
        assert!(err.contains("no [[volume]]"), "{err}");
    }

    #[test]
    fn cleanup_table_is_optional_checked_and_strict() {
        let (_, cleanup) = parse_with_cleanup(GOOD, Path::new("t")).unwrap();
        assert_eq!(cleanup, CleanupConfig::default());
        let text = format!("{GOOD}\n[cleanup]\nnumber_limit = 3\nmin_age_seconds = 0\n");
        let (_, cleanup) = parse_with_cleanup(&text, Path::new("t")).unwrap();
        assert_eq!((cleanup.number_limit, cleanup.min_age_seconds), (3, 0));
        assert!(cleanup.enabled, "unset keys keep their defaults");
        let text = format!("{GOOD}\n[cleanup]\npool_usage_limit_percent = 0\n");
        assert!(parse_str(&text).unwrap_err().to_string().contains("pool_usage_limit_percent"));
        let text = format!("{GOOD}\n[cleanup]\nnumber = 3\n");
        assert!(parse_str(&text).unwrap_err().to_string().contains("number"));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = load("/nonexistent/snapback.toml").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/snapback.toml"), "{err}");
    }
}
