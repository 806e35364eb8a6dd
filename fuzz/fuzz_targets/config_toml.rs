//! See snapback_fuzz::exercise::config_toml.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| snapback_fuzz::exercise::config_toml::run(data));
