//! Logging: tracing to journald when it is there, else to stderr.
//!
//! Events that operators search for carry a fixed `MESSAGE_ID` (journalctl MESSAGE_ID=...),
//! plus structured fields: `SNAPSHOT_ID`, `VOLUME`, `VOLUMES`. Logged through
//! `tracing::info!(message_id = ..., snapshot_id = ..., "...")`; the journald layer writes
//! field names upper-cased and without prefix, so they become real journal fields.

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// A snapshot set was created.
pub const MESSAGE_ID_SNAPSHOT_CREATED: &str = "f2ac8f71a2f6497e9b58ec2833fad94f";
/// A rollback started at once: the merge is running.
pub const MESSAGE_ID_ROLLBACK_STARTED: &str = "551aff89e1214461bbf071d87a6807d6";
/// A rollback was scheduled for next boot (an origin was busy).
pub const MESSAGE_ID_ROLLBACK_SCHEDULED: &str = "232e5b9c367b440f8372d816dfe6b0f1";
/// A merge finished (successfully or not; see `OK`).
pub const MESSAGE_ID_MERGE_FINISHED: &str = "434d125d881e4dcd99ae6d046f431929";
/// A snapshot ran out of space or hit an I/O error and is no longer usable.
pub const MESSAGE_ID_SNAPSHOT_INVALIDATED: &str = "a9b90246cd3b49e08bb01a35a6b155a1";

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journald,
    Stderr,
}

/// Install the global subscriber. `RUST_LOG` overrides the default `info` filter.
/// `SNAPBACK_LOG_STDERR=1` forces stderr (tests read the daemon's stderr).
pub fn init() -> LogTarget {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let force_stderr = std::env::var_os("SNAPBACK_LOG_STDERR").is_some_and(|v| v == "1");
    if !force_stderr && Path::new(JOURNAL_SOCKET).exists() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer.with_field_prefix(None).with_syslog_identifier("snapbackd".into());
            if tracing_subscriber::registry().with(filter).with(layer).try_init().is_ok() {
                return LogTarget::Journald;
            }
            return LogTarget::Stderr;
        }
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    LogTarget::Stderr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let ids = [
            MESSAGE_ID_SNAPSHOT_CREATED,
            MESSAGE_ID_ROLLBACK_STARTED,
            MESSAGE_ID_ROLLBACK_SCHEDULED,
            MESSAGE_ID_MERGE_FINISHED,
            MESSAGE_ID_SNAPSHOT_INVALIDATED,
        ];
        for id in ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }
}
