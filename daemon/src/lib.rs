//! snapbackd: the pool, the backends and the D-Bus service.
//!
//! Dependencies flow one way: service → backend → engine.

pub mod backend;
pub mod boot;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod pool;
pub mod service;
