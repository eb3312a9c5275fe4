//! The webhook's verdict on one object, decided offline.
//!
//! [`route`] mirrors how the admission server routes a request before asking the
//! engine (`admission::answer_request`): what it lets through untouched, which
//! containers it judges and whether the mutating webhook patches at all. The verdict
//! itself is [`Engine::review`], as in the server.

use json_patch::PatchOperation;
use serde_json::Value;

use super::input::Cause;
use super::objects::{Request, Target};
use crate::admission::Operation;
use crate::policy::{
    Decision, Engine, Mode, Scope, Subject, Violation, Webhook, WorkloadKind, decode_object,
};

/// Who applies a planned patch, if the webhook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchTarget {
    /// The mutating webhook patches this object (in enforce mode).
    Object,
    /// The object is a template: the webhook patches the pods created from it.
    Pods,
    /// The webhook does not patch this request (a pod UPDATE, `kubectl debug`).
    None,
}

impl PatchTarget {
    /// The name used in JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Pods => "pods",
            Self::None => "none",
        }
    }
}

/// What `check` reports about one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The webhook admits the object.
    pub allowed: bool,
    /// Why it does not (in audit mode these are warnings instead).
    pub violations: Vec<Violation>,
    /// The warnings of both webhooks, each once.
    pub warnings: Vec<String>,
    /// The operations that make the object run on hardened images, whoever applies them.
    pub patch: Vec<PatchOperation>,
    /// Who applies the patch.
    pub patch_target: PatchTarget,
    /// Why the webhook lets the object through without looking at it.
    pub untouched: Option<String>,
}

impl Finding {
    fn untouched(reason: String) -> Self {
        Self {
            allowed: true,
            violations: Vec::new(),
            warnings: Vec::new(),
            patch: Vec::new(),
            patch_target: PatchTarget::None,
            untouched: Some(reason),
        }
    }
}

/// How the server handles a request before asking the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// Admitted without review, for this reason.
    Untouched(String),
    /// Judged on these containers; `mutate` says whether the mutating webhook answers
    /// with a patch at all.
    Judge { scope: Scope, mutate: bool },
}

/// Mirrors `admission::answer_request`.
fn route(engine: &Engine, kind: WorkloadKind, request: &Request) -> Route {
    let operation = request.operation;
    if matches!(operation, Operation::Delete | Operation::Connect) {
        return Route::Untouched(format!(
            "{} requests carry no pod spec to judge",
            operation.as_str()
        ));
    }
    if let Some(namespace) = request
        .namespace
        .as_deref()
        .filter(|ns| engine.is_exempt_namespace(ns))
    {
        return Route::Untouched(format!("namespace {namespace} is exempt"));
    }
    let scope = match request.sub_resource.as_deref() {
        None => Scope::All,
        Some("ephemeralcontainers") => Scope::EphemeralOnly,
        Some(other) => return Route::Untouched(format!("the {other} subresource is not reviewed")),
    };
    // Only the validating webhook sees `kubectl debug`; pods are patched on CREATE.
    let mutate =
        scope == Scope::All && !(operation == Operation::Update && kind == WorkloadKind::Pod);
    Route::Judge { scope, mutate }
}

/// The webhook's answer for `target` in `document`, with the patch that makes it run on
/// hardened images.
pub fn review(
    engine: &Engine,
    mode: Mode,
    target: &Target,
    document: &Value,
) -> Result<Finding, Cause> {
    let (scope, mutate) = match route(engine, target.kind, &target.request) {
        Route::Untouched(reason) => return Ok(Finding::untouched(reason)),
        Route::Judge { scope, mutate } => (scope, mutate),
    };
    let kind = target.kind;
    let object_json = document
        .pointer(&target.origin.pointer)
        .filter(|object| !object.is_null())
        .ok_or_else(|| Cause::Shape(format!("the request for {kind} has no object")))?
        .to_string();
    let old_json = match (target.request.operation, &target.request.old_object) {
        (Operation::Update, Some(pointer)) => document.pointer(pointer).map(Value::to_string),
        _ => None,
    };
    let decode = |json| decode_object(json).map_err(|error| Cause::Decode { kind, error });
    let object = decode(&object_json)?;
    let old_object = old_json.as_deref().map(decode).transpose()?;
    let subject = Subject {
        kind,
        object: &object,
        old_object: old_object.as_ref(),
        scope,
    };
    // `Engine::review` admits an UPDATE that keeps the pod spec without judging it.
    let unchanged = old_object
        .as_ref()
        .is_some_and(|old| kind.pod_spec(old) == kind.pod_spec(&object));
    let validate = engine.review(&subject, Webhook::Validate, mode);
    let mutation = if mutate {
        engine.review(&subject, Webhook::Mutate, mode)
    } else {
        Decision::allowed_untouched()
    };
    let patch = if unchanged {
        Vec::new()
    } else {
        engine.evaluate(&subject).patch
    };
    let patch_target = match (
        mutate && !unchanged,
        kind.is_template() && !engine.settings().templates.mutate,
    ) {
        (false, _) => PatchTarget::None,
        (true, true) => PatchTarget::Pods,
        (true, false) => PatchTarget::Object,
    };
    Ok(Finding {
        allowed: validate.allowed && mutation.allowed,
        violations: if validate.allowed {
            Vec::new()
        } else {
            validate.violations
        },
        warnings: merge_warnings(validate.warnings, mutation.warnings),
        patch,
        patch_target,
        untouched: None,
    })
}

/// Both webhooks' warnings in order, each once.
fn merge_warnings(first: Vec<String>, second: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(first.len() + second.len());
    for warning in first.into_iter().chain(second) {
        if !out.contains(&warning) {
            out.push(warning);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::check::input::{Origin, Source};
    use crate::policy::{RuleId, Settings};

    fn target(kind: WorkloadKind, request: Request) -> Target {
        Target {
            origin: Origin {
                source: Source::Stdin,
                document: Some(1),
                pointer: String::new(),
            },
            kind,
            request,
        }
    }

    fn create(namespace: Option<&str>) -> Request {
        Request {
            operation: Operation::Create,
            sub_resource: None,
            namespace: namespace.map(str::to_owned),
            name: None,
            old_object: None,
        }
    }

    fn root_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py"},
            "spec": {"containers": [{"name": "app", "image": "dhi.io/python:3.13-dev"}]},
        })
    }

    #[test]
    fn routes_mirror_the_server() {
        let engine =
            Engine::new(Settings::from_yaml("exempt: {namespaces: [kube-system]}").unwrap());
        let pod = WorkloadKind::Pod;
        let judge = |scope, mutate| Route::Judge { scope, mutate };
        assert_eq!(route(&engine, pod, &create(None)), judge(Scope::All, true));
        assert!(matches!(
            route(&engine, pod, &create(Some("kube-system"))),
            Route::Untouched(_)
        ));
        let update = Request {
            operation: Operation::Update,
            ..create(None)
        };
        assert_eq!(route(&engine, pod, &update), judge(Scope::All, false));
        assert_eq!(
            route(&engine, WorkloadKind::Deployment, &update),
            judge(Scope::All, true)
        );
        let debug = Request {
            sub_resource: Some("ephemeralcontainers".to_owned()),
            ..update.clone()
        };
        assert_eq!(
            route(&engine, pod, &debug),
            judge(Scope::EphemeralOnly, false)
        );
        let status = Request {
            sub_resource: Some("status".to_owned()),
            ..update
        };
        assert!(matches!(route(&engine, pod, &status), Route::Untouched(_)));
        let delete = Request {
            operation: Operation::Delete,
            ..create(None)
        };
        assert!(matches!(route(&engine, pod, &delete), Route::Untouched(_)));
    }

    #[test]
    fn a_dev_variant_running_as_root_is_denied_in_enforce_and_warned_in_audit() {
        let engine = Engine::default();
        let t = target(WorkloadKind::Pod, create(Some("default")));
        let enforce = review(&engine, Mode::Enforce, &t, &root_pod()).unwrap();
        assert!(!enforce.allowed);
        assert_eq!(enforce.violations[0].rule, RuleId::RunAsRoot);
        assert_eq!(enforce.patch_target, PatchTarget::Object);
        let audit = review(&engine, Mode::Audit, &t, &root_pod()).unwrap();
        assert!(audit.allowed);
        assert!(audit.violations.is_empty());
        assert!(
            audit
                .warnings
                .iter()
                .any(|w| w.starts_with("audit: [run-as-root]")),
            "{:?}",
            audit.warnings
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let mut pod = root_pod();
        pod["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": "zero"});
        let t = target(WorkloadKind::Pod, create(None));
        let err = review(&Engine::default(), Mode::Enforce, &t, &pod)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read Pod: spec.containers[0].securityContext.runAsUser: "),
            "{err}"
        );
    }

    #[test]
    fn warnings_are_merged_once_in_order() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            merge_warnings(s(&["a", "b"]), s(&["b", "c", "a"])),
            s(&["a", "b", "c"])
        );
    }
}
