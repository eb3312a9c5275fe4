//! Turns an `engine_pod` input (fuzzer bytes) into the JSON case that
//! `crates/dhi-policy/tests/policy/fuzz_regressions.rs` replays on stable:
//!
//!   cargo run --example dump_case -- artifacts/engine_pod/crash-... > regressions/engine_pod/NAME.json

use dhi_admission_fuzz::cases::{Case, POLICIES};
use serde_json::json;

fn main() {
    let path = std::env::args().nth(1).expect("usage: dump_case FILE");
    let data = std::fs::read(&path).expect("readable input");
    let case = Case::from_bytes(&data).expect("the bytes make a case");
    let out = json!({
        "policy": POLICIES[case.policy()],
        "kind": case.kind().as_str(),
        "object": case.object(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("serialises")
    );
}
