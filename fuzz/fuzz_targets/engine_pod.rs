//! Structured pods and workloads (see `cases::Case`) through the engine and the whole
//! admission path: the patch applies, is idempotent, touches only hardened or mapped
//! containers, and the patched object gets the same verdict as the original.
#![no_main]

use std::sync::LazyLock;

use dhi_policy::Engine;
use dhi_admission_fuzz::{cases, checks};
use libfuzzer_sys::fuzz_target;

static ENGINES: LazyLock<Vec<Engine>> =
    LazyLock::new(|| (0..cases::POLICIES.len()).map(cases::engine).collect());

fuzz_target!(|data: &[u8]| {
    let Ok(case) = cases::Case::from_bytes(data) else {
        return;
    };
    let engine = &ENGINES[case.policy()];
    checks::check_engine_object(engine, case.kind(), &case.object());
});
