//! What the engine's tests share: engines and objects, and the one way a test asks the
//! engine for a decision (decoded as the server decodes a request).

pub mod strategies;

use std::path::PathBuf;

use dhi_policy::{
    Decision, Engine, Evaluation, Mode, PolicyFile, Request, RuleId, Scope, Subject, Webhook,
    WorkloadKind, decode_object,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The repository's root, where `fuzz/`, `tests/fixtures` and `../shared` are found.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn engine(yaml: &str) -> Engine {
    Engine::new(PolicyFile::from_yaml(yaml).expect("policy"))
}

/// A pod named `web` in `default`.
pub fn pod(spec: Value) -> Value {
    pod_in("default", spec)
}

pub fn pod_in(namespace: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": namespace}, "spec": spec})
}

/// `kind`'s object around a pod spec, nested along the kind's own path, with its
/// `apiVersion` and `kind` (callers add the metadata).
pub fn nest(kind: WorkloadKind, spec: Value) -> Value {
    let mut object = spec;
    for token in kind.spec_path().iter().rev() {
        object = json!({ *token: object });
    }
    let group = kind.group();
    object["apiVersion"] = json!(if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    });
    object["kind"] = json!(kind.as_str());
    object
}

/// One object put to the engine: a pod unless told otherwise, a CREATE unless given an
/// old object, every container in scope unless narrowed.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    kind: WorkloadKind,
    object: &'a Value,
    old: Option<&'a Value>,
    scope: Scope,
}

impl<'a> Ask<'a> {
    pub fn pod(object: &'a Value) -> Self {
        Self::of(WorkloadKind::Pod, object)
    }

    pub fn of(kind: WorkloadKind, object: &'a Value) -> Self {
        Self {
            kind,
            object,
            old: None,
            scope: Scope::All,
        }
    }

    pub fn old(self, old: Option<&'a Value>) -> Self {
        Self { old, ..self }
    }

    pub fn scope(self, scope: Scope) -> Self {
        Self { scope, ..self }
    }

    /// The decision of one webhook in one mode.
    pub fn review(self, engine: &Engine, webhook: Webhook, mode: Mode) -> Decision {
        self.with_subject(|subject| engine.review(subject, webhook, mode))
    }

    /// What the engine finds, before a webhook or a mode shapes it into a decision.
    pub fn evaluate(self, engine: &Engine) -> Evaluation {
        self.with_subject(|subject| engine.evaluate(subject))
    }

    fn with_subject<T>(self, f: impl FnOnce(&Subject<'_, '_>) -> T) -> T {
        let text = self.object.to_string();
        let view = decode_object(&text).expect("the object decodes");
        let old_text = self.old.map(Value::to_string);
        let old_view = old_text
            .as_deref()
            .map(|t| decode_object(t).expect("the old object decodes"));
        f(&Subject {
            kind: self.kind,
            object: &view,
            old_object: old_view.as_ref(),
            scope: self.scope,
        })
    }
}

/// The enforcing mutating webhook's decision on a pod.
pub fn mutate(engine: &Engine, object: &Value) -> Decision {
    Ask::pod(object).review(engine, Webhook::Mutate, Mode::Enforce)
}

/// The enforcing validating webhook's decision on a pod.
pub fn validate(engine: &Engine, object: &Value) -> Decision {
    Ask::pod(object).review(engine, Webhook::Validate, Mode::Enforce)
}

/// One webhook's answer to a `request` read as the server reads it (objects kept raw).
pub fn admit(engine: &Engine, webhook: Webhook, mode: Mode, request: &Value) -> Decision {
    let text = request.to_string();
    let request: Request<'_, &RawValue> = serde_json::from_str(&text).expect("request");
    engine
        .admit(webhook, mode, request)
        .expect("admitted")
        .decision
}

/// (rule, container) of every violation, in order.
pub fn violations(d: &Decision) -> Vec<(RuleId, String)> {
    d.violations
        .iter()
        .map(|v| (v.rule, v.container.clone()))
        .collect()
}

pub fn patch_json(ops: &[json_patch::PatchOperation]) -> Value {
    serde_json::to_value(ops).unwrap()
}

/// `object` with `ops` applied, which must apply.
pub fn apply(object: &Value, ops: &[json_patch::PatchOperation]) -> Value {
    let mut out = object.clone();
    json_patch::patch(&mut out, ops).expect("patch applies");
    out
}
