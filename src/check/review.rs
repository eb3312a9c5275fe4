//! The webhook's verdict on one object, decided offline.
//!
//! Routing ([`Engine::route`]) and the verdict ([`Engine::review`]) come from the
//! engine, exactly as in the admission server.

use json_patch::PatchOperation;
use serde_json::Value;

use super::input::Cause;
use super::objects::{Request, Target};
use crate::policy::{
    Bypass, Decision, Engine, Mode, Operation, RequestInfo, Route, Scope, Subject, Violation,
    Webhook, WorkloadKind, decode_object,
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
    pub not_reviewed: Option<String>,
}

impl Finding {
    fn not_reviewed(reason: String) -> Self {
        Self {
            allowed: true,
            violations: Vec::new(),
            warnings: Vec::new(),
            patch: Vec::new(),
            patch_target: PatchTarget::None,
            not_reviewed: Some(reason),
        }
    }
}

/// How the server routes the request: the validating webhook decides whether and on
/// which containers it is judged; the mutating webhook whether a patch can come at all.
fn route(engine: &Engine, kind: WorkloadKind, request: &Request) -> Result<(Scope, bool), Bypass> {
    let info = RequestInfo {
        kind,
        operation: request.operation,
        sub_resource: request.sub_resource.as_deref(),
        namespace: request.namespace.as_deref().unwrap_or(""),
    };
    let scope = match engine.route(Webhook::Validate, &info) {
        Route::Untouched(bypass) => return Err(bypass),
        Route::Review(scope) => scope,
    };
    let mutate = matches!(engine.route(Webhook::Mutate, &info), Route::Review(_));
    Ok((scope, mutate))
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
        Err(bypass) => return Ok(Finding::not_reviewed(bypass.to_string())),
        Ok(route) => route,
    };
    let (object_json, old_json) = request_json(target, document)?;
    let kind = target.kind;
    let decode = |json| decode_object(json).map_err(|error| Cause::Decode { kind, error });
    let object = decode(&object_json)?;
    let old_object = old_json.as_deref().map(decode).transpose()?;
    let subject = Subject {
        kind,
        object: &object,
        old_object: old_object.as_ref(),
        scope,
    };
    Ok(judge(engine, mode, &subject, mutate))
}

/// The object, and the object before an UPDATE, as JSON for the engine to decode.
fn request_json(target: &Target, document: &Value) -> Result<(String, Option<String>), Cause> {
    let object = document
        .pointer(&target.origin.pointer)
        .filter(|object| !object.is_null())
        .ok_or_else(|| Cause::Shape(format!("the request for {} has no object", target.kind)))?;
    let old_object = match (target.request.operation, &target.request.old_object) {
        (Operation::Update, Some(pointer)) => document.pointer(pointer).map(Value::to_string),
        _ => None,
    };
    Ok((object.to_string(), old_object))
}

/// Asks both webhooks as the server does, and the engine for the whole patch.
fn judge(engine: &Engine, mode: Mode, subject: &Subject<'_, '_>, mutate: bool) -> Finding {
    let kind = subject.kind;
    // `Engine::review` admits an UPDATE that keeps the pod spec without judging it, and
    // then nothing is patched either.
    let unchanged = subject
        .old_object
        .is_some_and(|old| kind.pod_spec(old) == kind.pod_spec(subject.object));
    let validate = engine.review(subject, Webhook::Validate, mode);
    let mutation = if mutate {
        engine.review(subject, Webhook::Mutate, mode)
    } else {
        Decision::allowed_untouched()
    };
    let (patch, patch_target) = if unchanged {
        (Vec::new(), PatchTarget::None)
    } else {
        (
            engine.evaluate(subject).patch,
            patch_target(engine, kind, mutate),
        )
    };
    let violations = if validate.allowed {
        Vec::new()
    } else {
        validate.violations
    };
    Finding {
        allowed: validate.allowed && mutation.allowed,
        violations,
        warnings: merge_warnings(validate.warnings, mutation.warnings),
        patch,
        patch_target,
        not_reviewed: None,
    }
}

/// Who applies the patch when the mutating webhook answers (`mutate`) at all.
fn patch_target(engine: &Engine, kind: WorkloadKind, mutate: bool) -> PatchTarget {
    if !mutate {
        PatchTarget::None
    } else if kind.is_template() && !engine.settings().templates.mutate {
        PatchTarget::Pods
    } else {
        PatchTarget::Object
    }
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
        let judge = |scope, mutate| Ok((scope, mutate));
        assert_eq!(route(&engine, pod, &create(None)), judge(Scope::All, true));
        assert_eq!(
            route(&engine, pod, &create(Some("kube-system"))),
            Err(Bypass::ExemptNamespace("kube-system".to_owned()))
        );
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
        assert_eq!(
            route(&engine, pod, &status),
            Err(Bypass::Subresource("status".to_owned()))
        );
        let delete = Request {
            operation: Operation::Delete,
            ..create(None)
        };
        assert_eq!(
            route(&engine, pod, &delete),
            Err(Bypass::NoPodSpec(Operation::Delete))
        );
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

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "dhi.io/nginx:1.31"}]}}},
        })
    }

    #[test]
    fn an_update_that_keeps_the_pod_spec_is_neither_judged_nor_patched() {
        let mut document = json!({"object": root_pod(), "oldObject": root_pod()});
        document["object"]["metadata"]["labels"] = json!({"team": "data"});
        let mut t = target(WorkloadKind::Pod, create(None));
        t.origin.pointer = "/object".to_owned();
        t.request.operation = Operation::Update;
        t.request.old_object = Some("/oldObject".to_owned());
        let finding = review(&Engine::default(), Mode::Enforce, &t, &document).unwrap();
        assert!(finding.allowed);
        assert!(finding.patch.is_empty());
        assert_eq!(finding.patch_target, PatchTarget::None);
    }

    #[test]
    fn templates_are_patched_in_place_only_when_the_policy_says_so() {
        let t = target(WorkloadKind::Deployment, create(None));
        let by_default = review(&Engine::default(), Mode::Enforce, &t, &deployment()).unwrap();
        assert_eq!(by_default.patch_target, PatchTarget::Pods);
        assert!(!by_default.patch.is_empty());
        let settings = Settings::from_yaml("templates: {mutate: true}").unwrap();
        let in_place = review(&Engine::new(settings), Mode::Enforce, &t, &deployment()).unwrap();
        assert_eq!(in_place.patch_target, PatchTarget::Object);
        assert_eq!(in_place.patch, by_default.patch);
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
