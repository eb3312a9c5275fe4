//! Arbitrary strings into `PolicyFile::from_yaml`: no panic, no hang (libFuzzer's
//! -timeout catches hangs; serde-saphyr's budgets bound alias expansion), and an
//! accepted policy rewrites only to references recognised as hardened.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        dhi_admission_fuzz::checks::check_policy(s);
    }
});
