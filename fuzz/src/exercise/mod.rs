//! One module per fuzz target: `run(data)` feeds the bytes to a parser the way snapbackd gets
//! them (from the pool, a file, the bus or the kernel) and asserts what must hold of the
//! result. A panic is a finding.
//!
//! This directory is also compiled into snapbackd's replay test (daemon/tests/fuzz_replay.rs,
//! through `#[path]`), which runs every file of `fuzz/seeds/<target>` and
//! `fuzz/regressions/<target>` through the same `run` on stable Rust.

pub mod boot_files;
pub mod config_toml;
pub mod dbus_options;
pub mod kernel_status;
pub mod registry_slot;

/// Inputs are split at NUL bytes where a target needs several texts (files, fields).
pub fn parts(data: &[u8]) -> Vec<&[u8]> {
    data.split(|byte| *byte == 0).collect()
}
