//! See snapback_fuzz::exercise::kernel_status.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| snapback_fuzz::exercise::kernel_status::run(data));
