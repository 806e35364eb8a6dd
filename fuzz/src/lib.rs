//! The fuzz targets' bodies (see `exercise`); `fuzz_targets/*.rs` only hand them libFuzzer's
//! input.

pub mod exercise;
