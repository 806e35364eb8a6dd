//! The named errors of API v1: `org.snapback.Snapback1.Error.<Name>`.

/// Every error the service replies with. Each carries a message a person can act on.
///
/// Proxy methods return this type, so a client matches on the variant instead of comparing
/// error-name strings; errors that are not ours (bus, transport) arrive as [`Error::ZBus`].
#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "org.snapback.Snapback1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No such volume or snapshot set (or the path is not a snapshot set path).
    NotFound(String),
    /// The origin or set is in use in a way that prevents the operation.
    Busy(String),
    /// Bad argument: unknown option key, wrong option type, empty name, ...
    InvalidArgument(String),
    /// The snapshot set is invalid (COW full or I/O error) and cannot be rolled back.
    SnapshotInvalid(String),
    /// The pool has no room for the requested COW space.
    NoSpace(String),
    /// A merge already runs (or is scheduled) for this set or one of its origins.
    AlreadyMerging(String),
    /// polkit refused the caller.
    NotAuthorized(String),
    /// The storage stack failed; the message says what and what to do.
    Backend(String),
}

/// What went wrong, without the words: one kind per error name of API v1. The daemon's
/// errors carry it from where they arise to the reply; clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    Busy,
    InvalidArgument,
    SnapshotInvalid,
    NoSpace,
    AlreadyMerging,
    NotAuthorized,
    Backend,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::NotFound,
        ErrorKind::Busy,
        ErrorKind::InvalidArgument,
        ErrorKind::SnapshotInvalid,
        ErrorKind::NoSpace,
        ErrorKind::AlreadyMerging,
        ErrorKind::NotAuthorized,
        ErrorKind::Backend,
    ];

    /// The last element of the D-Bus error name (`NotFound`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Busy => "Busy",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::SnapshotInvalid => "SnapshotInvalid",
            ErrorKind::NoSpace => "NoSpace",
            ErrorKind::AlreadyMerging => "AlreadyMerging",
            ErrorKind::NotAuthorized => "NotAuthorized",
            ErrorKind::Backend => "Backend",
        }
    }

    /// The kind of a full D-Bus error name, None for names that are not API v1's.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        let short = name.strip_prefix(crate::ERROR_PREFIX)?.strip_prefix('.')?;
        ErrorKind::ALL.into_iter().find(|kind| kind.short_name() == short)
    }
}

impl Error {
    /// The reply for `kind` with `message`.
    pub fn new(kind: ErrorKind, message: String) -> Error {
        match kind {
            ErrorKind::NotFound => Error::NotFound(message),
            ErrorKind::Busy => Error::Busy(message),
            ErrorKind::InvalidArgument => Error::InvalidArgument(message),
            ErrorKind::SnapshotInvalid => Error::SnapshotInvalid(message),
            ErrorKind::NoSpace => Error::NoSpace(message),
            ErrorKind::AlreadyMerging => Error::AlreadyMerging(message),
            ErrorKind::NotAuthorized => Error::NotAuthorized(message),
            ErrorKind::Backend => Error::Backend(message),
        }
    }

    /// The kind of one of our errors, None for bus errors.
    pub fn kind(&self) -> Option<ErrorKind> {
        Some(match self {
            Error::ZBus(_) => return None,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Busy(_) => ErrorKind::Busy,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::SnapshotInvalid(_) => ErrorKind::SnapshotInvalid,
            Error::NoSpace(_) => ErrorKind::NoSpace,
            Error::AlreadyMerging(_) => ErrorKind::AlreadyMerging,
            Error::NotAuthorized(_) => ErrorKind::NotAuthorized,
            Error::Backend(_) => ErrorKind::Backend,
        })
    }

    /// The last element of the D-Bus error name (`NotFound`, ...), or None for bus errors.
    pub fn short_name(&self) -> Option<&'static str> {
        self.kind().map(ErrorKind::short_name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn names_carry_the_prefix() {
        let e = Error::NotAuthorized("not authorized: org.snapback.rollback".into());
        assert_eq!(e.name().as_str(), "org.snapback.Snapback1.Error.NotAuthorized");
        assert_eq!(e.description(), Some("not authorized: org.snapback.rollback"));
        assert_eq!(e.short_name(), Some("NotAuthorized"));
        assert_eq!(
            Error::NoSpace("pool full".into()).name().as_str(),
            format!("{}.NoSpace", crate::ERROR_PREFIX)
        );
    }

    #[test]
    fn every_kind_has_its_name_both_ways() {
        for kind in ErrorKind::ALL {
            let e = Error::new(kind, "m".into());
            assert_eq!(e.kind(), Some(kind));
            assert_eq!(ErrorKind::from_name(e.name().as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::from_name("org.snapback.Snapback1.Error.Future"), None);
        assert_eq!(ErrorKind::from_name("org.freedesktop.DBus.Error.AccessDenied"), None);
        assert_eq!(ErrorKind::from_name("org.snapback.Snapback1.ErrorBusy"), None);
    }
}
