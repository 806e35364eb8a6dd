//! From the backend's errors to the API's named D-Bus errors.

use snapback_dbus::Error;

use crate::backend::BackendError;

/// Each backend error has exactly one API error of the same meaning.
pub fn to_dbus(error: BackendError) -> Error {
    match error {
        BackendError::NotFound(m) => Error::NotFound(m),
        BackendError::Busy(m) => Error::Busy(m),
        BackendError::InvalidArgument(m) => Error::InvalidArgument(m),
        BackendError::SnapshotInvalid(m) => Error::SnapshotInvalid(m),
        BackendError::NoSpace(m) => Error::NoSpace(m),
        BackendError::AlreadyMerging(m) => Error::AlreadyMerging(m),
        BackendError::Backend(m) => Error::Backend(m),
    }
}
