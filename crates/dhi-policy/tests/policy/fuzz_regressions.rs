//! Replays the fuzz seeds and every saved fuzz finding through the same invariant
//! checks the fuzz targets assert (fuzz/src/checks.rs, included by path), so plain
//! `cargo test` on stable guards against regressions without libFuzzer.
//!
//! Inputs:
//! - fuzz/seeds/<target>/* and fuzz/regressions/<target>/*, in the fuzz targets' own
//!   formats (admission_handle: one policy-picking byte, then the body);
//! - fuzz/regressions/engine_pod/*.json: `{"policy": YAML, "kind": KIND, "object": {...}}`
//!   (written from a crash input by `cargo run --example dump_case` in fuzz/);
//! - every AdmissionReview under tests/fixtures, under every fuzz policy.

#[path = "../../../../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use dhi_policy::{Engine, PolicyFile, WorkloadKind};
use serde_json::Value;

use crate::support::repo_root;

fn files(dirs: &[&str]) -> Vec<PathBuf> {
    let root = repo_root();
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            fixtures(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

#[test]
fn admission_handle_inputs() {
    let inputs = files(&[
        "fuzz/seeds/admission_handle",
        "fuzz/regressions/admission_handle",
    ]);
    assert!(!inputs.is_empty(), "the seeds are part of the repository");
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        let Some((&pick, body)) = data.split_first() else {
            continue;
        };
        eprintln!("{}", path.display());
        checks::check_admission_body(&checks::engine(pick as usize), body);
    }
}

#[test]
fn fixture_reviews_under_every_policy() {
    let mut reviews = Vec::new();
    fixtures(&repo_root().join("tests/fixtures"), &mut reviews);
    for path in reviews {
        let body = std::fs::read(&path).unwrap();
        for i in 0..checks::POLICIES.len() {
            checks::check_admission_body(&checks::engine(i), &body);
        }
    }
}

#[test]
fn image_ref_inputs() {
    for path in files(&["fuzz/seeds/image_ref", "fuzz/regressions/image_ref"]) {
        let data = std::fs::read(&path).unwrap();
        if let Ok(s) = std::str::from_utf8(&data) {
            checks::check_image_ref(s);
        }
    }
}

#[test]
fn policy_config_inputs() {
    for path in files(&["fuzz/seeds/policy_config", "fuzz/regressions/policy_config"]) {
        let data = std::fs::read(&path).unwrap();
        if let Ok(s) = std::str::from_utf8(&data) {
            eprintln!("{}", path.display());
            checks::check_policy(s);
        }
    }
}

#[test]
fn engine_pod_cases() {
    // The raw fuzzer inputs beside them need `arbitrary`: cargo fuzz replays those.
    let cases = files(&["fuzz/regressions/engine_pod"]);
    for path in cases
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let case: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let engine =
            Engine::new(PolicyFile::from_yaml(case["policy"].as_str().unwrap()).expect("policy"));
        let kind = WorkloadKind::ALL
            .into_iter()
            .find(|k| k.as_str() == case["kind"])
            .expect("a kind");
        eprintln!("{}", path.display());
        checks::check_engine_object(&engine, kind, &case["object"]);
    }
}

#[test]
fn the_fuzz_policies_load() {
    for i in 0..checks::POLICIES.len() {
        let _ = checks::engine(i);
    }
}

/// fuzz/policy_config found mappings whose `to` renders an invalid or unrecognised
/// image; such policies are refused when loaded.
#[test]
fn mapping_targets_must_be_hardened_references() {
    for yaml in [
        "rewrite: {mappings: [{from: docker.io/istio/proxyv2, to: 'i!pio-proxyv2'}]}",
        "rewrite: {mappings: [{from: docker.io/acme/web, to: Web}]}",
        "rewrite: {mappings: [{from: docker.io/acme/web, to: ''}]}",
        "rewrite: {target: 'registry.example.com/platform/dhi-{repo}', mappings: [{from: docker.io/acme/web, to: acme/web}]}",
    ] {
        let err = PolicyFile::from_yaml(yaml).expect_err(yaml).to_string();
        assert!(err.contains("hardened"), "{yaml}: {err}");
    }
    // A path is fine under dhi.io, where the whole repository is the DHI name.
    PolicyFile::from_yaml("rewrite: {mappings: [{from: docker.io/acme/web, to: acme/web}]}")
        .unwrap();
}
