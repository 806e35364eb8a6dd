//! Everything that can go wrong in `snapbackctl`, each printed as a sentence a person can act on.

use std::path::PathBuf;

use snapback_dbus::ErrorKind;

/// A failure of one command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon answered with one of API v1's errors.
    #[error("{}", kind_sentence(*kind, message))]
    Daemon { kind: ErrorKind, message: String },

    /// An error reply whose name is not API v1's: from the bus itself (policy, no daemon,
    /// timeout) or from a newer daemon.
    #[error("{}", dbus_sentence(name, message))]
    DBus { name: String, message: String },

    /// The system bus could not be reached.
    #[error(
        "cannot connect to the system bus ({address}): {source}; is dbus running, or is \
         DBUS_SYSTEM_BUS_ADDRESS right?"
    )]
    Connect { address: String, source: zbus::Error },

    /// Any other D-Bus failure (malformed reply, lost connection…).
    #[error("D-Bus: {0}")]
    Bus(zbus::Error),

    /// The daemon's reply did not have the shape API v1 promises.
    #[error(
        "unexpected reply from snapbackd: {0}; are snapbackctl and snapbackd the same version?"
    )]
    Protocol(String),

    /// A merge the command waited for ended in failure.
    #[error("rollback of snapshot set {id} failed: {message}; see `journalctl -u snapbackd`")]
    MergeFailed { id: u32, message: String },

    /// An offline `cow` command failed in the engine.
    #[error("{path}: {message}")]
    Cow { path: PathBuf, message: String },

    /// `cow check` found problems (already printed one per line).
    #[error("{path}: the store is not clean ({problems} problem(s) found)")]
    CheckFailed { path: PathBuf, problems: usize },

    /// A failure already worded for the user (e.g. a summary of several).
    #[error("{0}")]
    Failed(String),

    /// Plain I/O on a local file (terminal output, OUT of `cow export`…).
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        match dbus_error_name(&e) {
            Some((name, message)) => match ErrorKind::from_name(&name) {
                Some(kind) => Error::Daemon { kind, message },
                None => Error::DBus { name, message },
            },
            None => Error::Bus(e),
        }
    }
}

impl From<zbus::fdo::Error> for Error {
    fn from(e: zbus::fdo::Error) -> Self {
        Error::from(zbus::Error::from(e))
    }
}

/// The error name and message of a D-Bus error reply, `None` for local failures.
pub fn dbus_error_name(e: &zbus::Error) -> Option<(String, String)> {
    use zbus::DBusError;
    match e {
        zbus::Error::MethodError(name, message, _) => {
            Some((name.to_string(), message.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            // A local zbus failure dressed as an fdo error: not a reply from the daemon.
            zbus::fdo::Error::ZBus(_) => None,
            other => Some((other.name().to_string(), other.description().unwrap_or("").to_owned())),
        },
        _ => None,
    }
}

/// The sentence printed for one of the API's errors: what happened, then what to do.
pub fn kind_sentence(kind: ErrorKind, message: &str) -> String {
    match kind {
        ErrorKind::NotAuthorized => {
            // The daemon's message often starts with the same words; say them once.
            let reason = message.strip_prefix("not authorized: ").unwrap_or(message);
            let detail = if reason.is_empty() { String::new() } else { format!(" ({reason})") };
            format!("not authorized: run as root or ask your administrator{detail}")
        }
        ErrorKind::NotFound => format!(
            "not found{}: `snapbackctl list` shows the existing snapshot sets",
            colon(message)
        ),
        ErrorKind::Busy => format!("busy{}: try again once the volume is idle", colon(message)),
        ErrorKind::InvalidArgument => format!("invalid argument{}", colon(message)),
        ErrorKind::SnapshotInvalid => format!(
            "the snapshot set is invalid{}: it cannot be rolled back; delete it with \
             `snapbackctl delete ID`",
            colon(message)
        ),
        ErrorKind::NoSpace => format!(
            "no space left in the pool{}: delete old snapshot sets (`snapbackctl list`, \
             `snapbackctl delete ID`) or grow the pool",
            colon(message)
        ),
        ErrorKind::AlreadyMerging => format!(
            "a rollback is already running or scheduled{}: follow it with `snapbackctl watch`, \
             or cancel a scheduled one with `snapbackctl cancel ID`",
            colon(message)
        ),
        ErrorKind::Backend => {
            format!("the storage backend failed{}: see `journalctl -u snapbackd`", colon(message))
        }
    }
}

/// The sentence printed for an error reply whose name is not one of the API's.
pub fn dbus_sentence(name: &str, message: &str) -> String {
    let detail = if message.is_empty() { String::new() } else { format!(" ({message})") };
    if let Some(short) =
        name.strip_prefix(snapback_dbus::ERROR_PREFIX).and_then(|s| s.strip_prefix('.'))
    {
        return format!("snapbackd error {short}{}", colon(message));
    }
    match name {
        "org.freedesktop.DBus.Error.AccessDenied" | "org.freedesktop.DBus.Error.AuthFailed" => {
            format!("not authorized: run as root or ask your administrator{detail}")
        }
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
            format!(
                "snapbackd is not running and could not be started: check \
                 `systemctl status snapbackd`{detail}"
            )
        }
        "org.freedesktop.DBus.Error.UnknownObject" => format!(
            "no such snapshot set{}: `snapbackctl list` shows the existing ones",
            colon(message)
        ),
        "org.freedesktop.DBus.Error.NoReply" | "org.freedesktop.DBus.Error.TimedOut" => {
            format!("snapbackd did not answer in time{detail}: check `systemctl status snapbackd`")
        }
        _ => format!("{name}{}", colon(message)),
    }
}

/// The sentence for an error reply by its full name, whichever kind it is.
pub fn daemon_sentence(name: &str, message: &str) -> String {
    match ErrorKind::from_name(name) {
        Some(kind) => kind_sentence(kind, message),
        None => dbus_sentence(name, message),
    }
}

/// `": message"`, or nothing for an empty message.
fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_authorized_is_actionable() {
        assert_eq!(
            daemon_sentence("org.snapback.Snapback1.Error.NotAuthorized", ""),
            "not authorized: run as root or ask your administrator"
        );
        assert_eq!(
            daemon_sentence(
                "org.snapback.Snapback1.Error.NotAuthorized",
                "not authorized: org.snapback.rollback"
            ),
            "not authorized: run as root or ask your administrator (org.snapback.rollback)"
        );
        assert_eq!(
            daemon_sentence("org.freedesktop.DBus.Error.AccessDenied", "policy"),
            "not authorized: run as root or ask your administrator (policy)"
        );
    }

    #[test]
    fn every_api_error_name_has_its_own_sentence() {
        for name in [
            "NotFound",
            "Busy",
            "InvalidArgument",
            "SnapshotInvalid",
            "NoSpace",
            "AlreadyMerging",
            "Backend",
        ] {
            let s = daemon_sentence(&format!("{}.{name}", snapback_dbus::ERROR_PREFIX), "msg");
            assert!(!s.starts_with("snapbackd error"), "{name}: {s}");
            assert!(s.contains("msg"), "{name}: {s}");
        }
        assert_eq!(
            daemon_sentence("org.snapback.Snapback1.Error.NoSpace", "pool has 0 B free"),
            "no space left in the pool: pool has 0 B free: delete old snapshot sets \
             (`snapbackctl list`, `snapbackctl delete ID`) or grow the pool"
        );
    }

    #[test]
    fn unknown_names_are_still_printed() {
        assert_eq!(
            daemon_sentence("org.snapback.Snapback1.Error.Future", "x"),
            "snapbackd error Future: x"
        );
        assert_eq!(daemon_sentence("com.example.Oops", ""), "com.example.Oops");
    }
}
