//! The engine asked directly about a pod, as a webhook asks it once the request is routed:
//! for the tests that compare that decision with what the router or `check` answers.

use dhi_policy::{Decision, Engine, Mode, Scope, Subject, Webhook, WorkloadKind, decode_object};
use serde_json::Value;

/// One enforcing webhook's decision on a pod.
pub fn decide_pod(engine: &Engine, object: &Value, webhook: Webhook) -> Decision {
    let text = object.to_string();
    let view = decode_object(&text).expect("the pod decodes");
    let subject = Subject {
        kind: WorkloadKind::Pod,
        object: &view,
        old_object: None,
        scope: Scope::All,
    };
    engine.review(&subject, webhook, Mode::Enforce)
}
