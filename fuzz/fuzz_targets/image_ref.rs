//! Arbitrary strings into `ImageRef::parse`: no panic, and a parsed reference prints
//! as a string that reads back as the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        dhi_admission_fuzz::checks::check_image_ref(s);
    }
});
