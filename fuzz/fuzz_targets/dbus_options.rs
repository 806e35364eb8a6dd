//! See snapback_fuzz::exercise::dbus_options.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| snapback_fuzz::exercise::dbus_options::run(data));
