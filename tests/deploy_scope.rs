//! The shipped webhook configurations carry the matchConditions generated from the
//! shipped policy: the committed patch is exactly `dhi-admission webhooks` output, and
//! every validating webhook entry of every committed render carries the same conditions
//! (the mutating ones none: reinvocation after a sidecar injector needs the first call).

use std::path::Path;

use dhi_admission::webhooks::{conditions_value, render};
use dhi_policy::PolicyFile;
use dhi_policy::scope::match_conditions;
use serde_json::Value;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn policy() -> PolicyFile {
    PolicyFile::from_yaml(&read("deploy/base/policy.yaml")).expect("the shipped policy")
}

#[test]
fn committed_patch_is_the_generators_output() {
    assert_eq!(
        read("deploy/base/matchconditions.yaml"),
        render(&policy(), Some(3)).unwrap(),
        "regenerate: dhi-admission webhooks --config deploy/base/policy.yaml --json-patch 3 \
         > deploy/base/matchconditions.yaml, then deploy/render.sh"
    );
}

#[test]
fn every_rendered_webhook_carries_the_conditions() {
    let expected = conditions_value(&match_conditions(&policy()));
    for overlay in ["base", "enforce", "audit", "cert-manager"] {
        let path = format!("deploy/rendered/{overlay}.yaml");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&read(&path)).unwrap();
        let mut entries = 0;
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if !kind.ends_with("WebhookConfiguration") {
                continue;
            }
            let want = if kind.starts_with("Validating") {
                expected.clone()
            } else {
                Value::Null
            };
            for webhook in doc["webhooks"].as_array().unwrap() {
                assert_eq!(
                    webhook["matchConditions"], want,
                    "{path}: {kind} {}",
                    webhook["name"]
                );
                entries += 1;
            }
        }
        assert_eq!(entries, 6, "{path}: three entries in each configuration");
    }
}
