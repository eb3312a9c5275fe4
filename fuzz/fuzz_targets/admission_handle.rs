//! Raw bytes into `dhi_policy::answer::handle`, both webhooks, both modes.
//! Invariants: see `check_admission_body` (no panic; the uid is echoed; a patch applies
//! to request.object, is idempotent and does not change the validating verdict).
#![no_main]

use std::sync::LazyLock;

use dhi_policy::Engine;
use dhi_admission_fuzz::{cases, checks};
use libfuzzer_sys::fuzz_target;

static ENGINES: LazyLock<Vec<Engine>> =
    LazyLock::new(|| (0..cases::POLICIES.len()).map(cases::engine).collect());

fuzz_target!(|data: &[u8]| {
    // The first byte picks the policy; the rest is the body.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let engine = &ENGINES[pick as usize % ENGINES.len()];
    checks::check_admission_body(engine, body);
});
