//! From the backend's errors to the API's named D-Bus errors.

use snapback_dbus::Error;

use crate::backend::BackendError;

/// Each backend error kind is the API error of the same name; the cause underneath, already
/// worded into the message, stays in the daemon's log.
pub fn to_dbus(error: BackendError) -> Error {
    if let Some(source) = &error.source {
        tracing::debug!(kind = error.kind.short_name(), %error, cause = %source, "call failed");
    }
    Error::new(error.kind, error.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolError;
    use snapback_dbus::ErrorKind;
    use std::error::Error as _;

    #[test]
    fn a_pool_error_keeps_its_kind_and_source_to_the_reply() {
        let err = BackendError::from(PoolError::NoSpace { wanted: 3, free: 1, extent_bytes: 4 });
        assert_eq!(err.kind, ErrorKind::NoSpace);
        let source = err.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some(err.message.as_str()), "the pool error underneath");
        let reply = to_dbus(err.clone());
        assert_eq!(reply.kind(), Some(ErrorKind::NoSpace));
        assert!(matches!(reply, Error::NoSpace(m) if m == err.message));
    }

    #[test]
    fn every_kind_reaches_the_reply_of_its_name() {
        for kind in ErrorKind::ALL {
            assert_eq!(to_dbus(BackendError::new(kind, "m")).kind(), Some(kind));
        }
    }
}
