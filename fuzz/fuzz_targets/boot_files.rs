//! See snapback_fuzz::exercise::boot_files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| snapback_fuzz::exercise::boot_files::run(data));
