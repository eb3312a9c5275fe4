//! Expected answers shared by the router and the TLS tests.

use serde_json::{Value, json};

use super::Review;

pub fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The patch `/mutate` returns for `istio-pod.json`.
pub fn istio_patch() -> Value {
    json!([
        {"op": "add", "path": "/spec/containers/0/securityContext",
         "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}},
        {"op": "replace", "path": "/spec/containers/1/image", "value": "dhi.io/istio-proxyv2:1.30.3"},
        {"op": "add", "path": "/spec/securityContext/fsGroup", "value": 65532}
    ])
}

/// istio-init runs as root with NET_ADMIN: its image is left alone, with this warning.
pub const ISTIO_INIT_SKIPPED: &str = "container \"istio-init\": docker.io/istio/proxyv2:1.30.3 not rewritten to \
     dhi.io/istio-proxyv2:1.30.3: it runs as root and the hardened image is nonroot";

/// The patch `/mutate` returns for `small-pod.json`.
pub fn small_pod_patch() -> Value {
    json!([
        {"op": "add", "path": "/spec/containers/0/securityContext",
         "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}},
        {"op": "add", "path": "/spec/securityContext/fsGroup", "value": 65532}
    ])
}

/// Checks a denial: 403 Forbidden, a header line naming the object, then one line per
/// violation with the rule id, the container, the image and a fix, in this order.
pub fn assert_denied(review: &Review, header: &str, violations: &[(&str, &str, &str)]) {
    assert!(!review.allowed, "{}", review.raw);
    let status = review.status.as_ref().unwrap();
    assert_eq!(status["code"], 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["status"], "Failure");
    assert!(review.patch.is_none());
    let message = review.message();
    let lines: Vec<&str> = message.lines().collect();
    let n = violations.len();
    assert_eq!(
        lines[0],
        format!(
            "{header} cannot run on Docker Hardened Images ({n} violation{}):",
            if n == 1 { "" } else { "s" }
        ),
        "{message}"
    );
    assert_eq!(lines.len(), n + 1, "one line per violation:\n{message}");
    for (line, (rule, container, image)) in lines[1..].iter().zip(violations) {
        let prefix = format!("- [{rule}] container \"{container}\"");
        assert!(
            line.starts_with(&prefix),
            "{line:?} should start with {prefix:?}"
        );
        assert!(line.contains(image), "{line:?} should name {image}");
        assert!(line.contains("Fix: "), "{line:?} should say how to fix it");
    }
}

/// The three violations of [`violating_pod`] plus its dev-variant line, in order.
pub const VIOLATIONS: &[(&str, &str, &str)] = &[
    ("run-as-root", "web", "dhi.io/nginx:1.31"),
    ("privileged-port", "web", "dhi.io/nginx:1.31"),
    ("run-as-root", "tools", "dhi.io/python:3.13-dev"),
    ("invalid-image", "bad", "docker.io/Library/Nginx:1.29"),
];

pub const DEV_WARNING: &str = "container \"tools\" uses dev variant dhi.io/python:3.13-dev (root, shell, package \
     manager): use the runtime variant (tag without -dev) in production";
