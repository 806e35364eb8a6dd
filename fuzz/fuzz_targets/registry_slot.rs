//! See snapback_fuzz::exercise::registry_slot.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| snapback_fuzz::exercise::registry_slot::run(data));
