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

impl Error {
    /// The last element of the D-Bus error name (`NotFound`, ...), or None for bus errors.
    pub fn short_name(&self) -> Option<&'static str> {
        Some(match self {
            Error::ZBus(_) => return None,
            Error::NotFound(_) => "NotFound",
            Error::Busy(_) => "Busy",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::SnapshotInvalid(_) => "SnapshotInvalid",
            Error::NoSpace(_) => "NoSpace",
            Error::AlreadyMerging(_) => "AlreadyMerging",
            Error::NotAuthorized(_) => "NotAuthorized",
            Error::Backend(_) => "Backend",
        })
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
}
