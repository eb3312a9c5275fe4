//! `warn` mode (Pod Security Admission's name): patches as in enforce, never denies, and
//! reports violations as warnings (no audit annotations, which are audit mode's).

use dhi_policy::{Engine, Mode, Webhook};
use serde_json::{Value, json};

use crate::support;

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"containers": [{"name": "nginx", "image": "dhi.io/nginx:1.31",
                                    "ports": [{"containerPort": 80}]}]}})
}

fn admit(webhook: Webhook, mode: Mode, object: &Value) -> dhi_policy::Decision {
    let request = json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE", "namespace": "team", "object": object});
    support::admit(&Engine::default(), webhook, mode, &request)
}

#[test]
fn warn_patches_like_enforce_and_never_denies() {
    let object = pod();
    let enforce = admit(Webhook::Mutate, Mode::Enforce, &object);
    let warn = admit(Webhook::Mutate, Mode::Warn, &object);
    assert!(!enforce.patch.is_empty());
    assert_eq!(
        serde_json::to_value(&warn.patch).unwrap(),
        serde_json::to_value(&enforce.patch).unwrap()
    );
    assert!(warn.allowed);
    assert!(warn.audit_annotations.is_empty());

    let denied = admit(Webhook::Validate, Mode::Enforce, &object);
    assert!(!denied.allowed);
    let warned = admit(Webhook::Validate, Mode::Warn, &object);
    assert!(warned.allowed);
    assert_eq!(warned.violations.len(), 1);
    assert_eq!(warned.warnings.len(), 1);
    assert!(
        warned.warnings[0].starts_with("warn: [privileged-port] container \"nginx\""),
        "{:?}",
        warned.warnings
    );
    assert!(warned.audit_annotations.is_empty());
    assert!(warned.patch.is_empty());

    let audit = admit(Webhook::Mutate, Mode::Audit, &object);
    assert!(audit.patch.is_empty(), "audit still patches nothing");
}

#[test]
fn warn_is_a_mode_name() {
    assert_eq!("warn".parse::<Mode>(), Ok(Mode::Warn));
    assert_eq!(Mode::Warn.to_string(), "warn");
    assert_eq!(
        "block".parse::<Mode>(),
        Err("unknown mode \"block\": expected enforce, warn or audit".to_owned())
    );
}
