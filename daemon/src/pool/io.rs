//! Block I/O used by the pool: the engine's trait and devices.

pub use snapback_engine::io::{BlockIo, FileIo};
#[cfg(test)]
pub use snapback_engine::io::{MemIo, PowerLoss};
