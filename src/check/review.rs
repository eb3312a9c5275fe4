//! The webhook's verdict on one object, decided offline by the engine's
//! [`Engine::find`], exactly as the admission server would decide it.

use serde_json::Value;

use super::error::Cause;
use super::objects::Candidate;
use dhi_policy::{Engine, Finding, Mode, RequestError};

/// Both webhooks' answers for `candidate` in `document`, with the patch that makes it
/// run on hardened images.
pub(super) fn review(
    engine: &Engine,
    mode: Mode,
    candidate: &Candidate,
    document: &Value,
) -> Result<Finding, Cause> {
    let request = candidate.request(document)?;
    engine.find(mode, request).map_err(|err| match err {
        RequestError::Unreadable { kind, source, .. } => Cause::Decode {
            kind,
            error: source,
        },
        RequestError::NoObject { kind, .. } => {
            Cause::Shape(format!("the request for {kind} has no object"))
        }
        unsupported @ RequestError::UnsupportedKind { .. } => Cause::Shape(unsupported.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::check::origin::{Origin, Source};
    use dhi_policy::{PatchedBy, PolicyFile, RuleId, WorkloadKind};

    fn origin(pointer: &str) -> Origin {
        Origin {
            source: Source::Stdin,
            document: Some(1),
            pointer: json_patch::jsonptr::PointerBuf::parse(pointer).unwrap(),
        }
    }

    fn manifest(kind: WorkloadKind, namespace: Option<&str>) -> Candidate {
        Candidate {
            origin: origin(""),
            kind,
            namespace: namespace.map(str::to_owned),
            name: None,
            review: None,
        }
    }

    fn root_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py"},
            "spec": {"containers": [{"name": "app", "image": "dhi.io/python:3.13-dev"}]},
        })
    }

    #[test]
    fn a_dev_variant_running_as_root_is_denied_in_enforce_and_warned_in_audit() {
        let engine = Engine::default();
        let t = manifest(WorkloadKind::Pod, Some("default"));
        let enforce = review(&engine, Mode::Enforce, &t, &root_pod()).unwrap();
        assert!(!enforce.allowed);
        assert_eq!(enforce.violations[0].rule, RuleId::RunAsRoot);
        assert_eq!(enforce.patched_by, PatchedBy::Object);
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
        let mut document = json!({
            "request": {
                "uid": "1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "UPDATE",
                "object": root_pod(),
                "oldObject": root_pod(),
            },
        });
        document["request"]["object"]["metadata"]["labels"] = json!({"team": "data"});
        let t = Candidate {
            origin: origin("/request/object"),
            review: Some(origin("/request")),
            ..manifest(WorkloadKind::Pod, None)
        };
        let finding = review(&Engine::default(), Mode::Enforce, &t, &document).unwrap();
        assert!(finding.allowed);
        assert!(finding.patch.is_empty());
        assert_eq!(finding.patched_by, PatchedBy::None);
    }

    #[test]
    fn templates_are_patched_in_place_only_when_the_policy_says_so() {
        let t = manifest(WorkloadKind::Deployment, None);
        let by_default = review(&Engine::default(), Mode::Enforce, &t, &deployment()).unwrap();
        assert_eq!(by_default.patched_by, PatchedBy::Pods);
        assert!(!by_default.patch.is_empty());
        let policy = PolicyFile::from_yaml("templates: {mutate: true}").unwrap();
        let in_place = review(&Engine::new(policy), Mode::Enforce, &t, &deployment()).unwrap();
        assert_eq!(in_place.patched_by, PatchedBy::Object);
        assert_eq!(in_place.patch, by_default.patch);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let mut pod = root_pod();
        pod["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": "zero"});
        let t = manifest(WorkloadKind::Pod, None);
        let err = review(&Engine::default(), Mode::Enforce, &t, &pod)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read Pod: spec.containers[0].securityContext.runAsUser: "),
            "{err}"
        );
    }

    #[test]
    fn exempt_namespaces_are_not_reviewed() {
        let engine =
            Engine::new(PolicyFile::from_yaml("exempt: {namespaces: [kube-system]}").unwrap());
        let t = manifest(WorkloadKind::Pod, Some("kube-system"));
        let finding = review(&engine, Mode::Enforce, &t, &root_pod()).unwrap();
        assert!(finding.allowed);
        assert_eq!(
            finding.not_reviewed.as_deref(),
            Some("namespace kube-system is exempt")
        );
    }
}
