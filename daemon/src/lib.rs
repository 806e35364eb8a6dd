//! snapbackd: the pool, the backends and the D-Bus service.
