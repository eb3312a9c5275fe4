//! From documents to the objects the webhook would be asked about.
//!
//! A document is a manifest, a `List` of them, or an AdmissionReview as kube-apiserver
//! sends it. Each object found is either a [`Candidate`], with what it takes to ask the
//! engine about it as the webhook would be asked, or [`Skipped`] with the reason.

use serde::de::IgnoredAny;
use serde_json::Value;

use super::error::{Cause, InputError};
use super::input::Document;
use super::origin::Origin;
use dhi_policy::answer;
use dhi_policy::{GroupKind, Request, WorkloadKind};

/// An object that carries a pod spec, found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    /// Where the object is; its pointer is where patches apply.
    pub origin: Origin,
    /// The kind, which says where the pod spec is.
    pub kind: WorkloadKind,
    /// The request's namespace, else the object's: for exemptions and reports.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: Option<String>,
    /// Where the `request` of the AdmissionReview it came in is; `None` for a manifest,
    /// which kube-apiserver would send as a CREATE.
    pub review: Option<Origin>,
}

impl Candidate {
    /// The request the webhook would receive for this object, read from `document`.
    pub(super) fn request<'d>(
        &'d self,
        document: &'d Value,
    ) -> Result<Request<'d, &'d Value>, Cause> {
        let object = document
            .pointer(self.origin.pointer.as_str())
            .filter(|object| !object.is_null());
        let namespace = self.namespace.as_deref();
        let Some(review) = &self.review else {
            let object = object.ok_or_else(|| {
                Cause::Shape(format!("the request for {} has no object", self.kind))
            })?;
            return Ok(Request::create(self.kind.into(), namespace, object));
        };
        let old_object = review.child(&["oldObject"]);
        let old_object = document
            .pointer(old_object.pointer.as_str())
            .filter(|old| !old.is_null());
        let request = document
            .pointer(review.pointer.as_str())
            .ok_or_else(|| Cause::Shape("AdmissionReview has no request".to_owned()))
            .and_then(parse_request)?;
        let mut request = request.with_objects(object, old_object);
        if request.namespace.is_none() {
            request.namespace = namespace.map(Into::into);
        }
        Ok(request)
    }
}

/// A document or object the webhook does not review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Skipped {
    /// Where it is.
    pub origin: Origin,
    /// Its kind, when it has one.
    pub kind: Option<String>,
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Why it is skipped.
    pub reason: String,
}

/// What a document holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// An object to review.
    Candidate(Candidate),
    /// Something that is not reviewed.
    Skipped(Skipped),
}

/// The objects of a document, in order: `List` items expanded (recursively), an
/// AdmissionReview replaced by the object of its request.
pub(super) fn items(document: &Document) -> Result<Vec<Item>, InputError> {
    let mut out = Vec::new();
    collect(&document.value, document.origin.clone(), None, &mut out)?;
    Ok(out)
}

/// `apiVersion` and `kind` a list's items inherit when they do not say (typed lists
/// such as `PodList` from the API leave them out).
type Inherited<'v> = Option<(&'v str, &'v str)>;

/// Why documents and objects without a pod spec are skipped.
const NO_POD_SPEC: &str = "no pod spec";

fn collect(
    value: &Value,
    origin: Origin,
    inherited: Inherited<'_>,
    out: &mut Vec<Item>,
) -> Result<(), InputError> {
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let api_version = field("apiVersion").or(inherited.map(|(v, _)| v));
    let kind = field("kind").or(inherited.map(|(_, k)| k));
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        let reason = "not a Kubernetes object (no apiVersion and kind)";
        out.push(Item::Skipped(skipped(value, origin, None, reason)));
        return Ok(());
    };
    if let Some(items) = value.get("items").and_then(Value::as_array)
        && let Some(item_kind) = kind.strip_suffix("List")
    {
        let inherited = (!item_kind.is_empty()).then_some((api_version, item_kind));
        for (index, item) in items.iter().enumerate() {
            let item_origin = origin.child(&["items", &index.to_string()]);
            collect(item, item_origin, inherited, out)?;
        }
    } else if kind == answer::KIND {
        out.push(review_item(value, origin, api_version)?);
    } else {
        out.push(manifest_item(value, origin, api_version, kind));
    }
    Ok(())
}

/// A manifest is what kube-apiserver would send on CREATE.
fn manifest_item(value: &Value, origin: Origin, api_version: &str, kind: &str) -> Item {
    let Some(kind) = GroupKind::from_api_version(api_version, kind).workload() else {
        let reason = match has_pod_spec(value) {
            true => unsupported(api_version, kind),
            false => NO_POD_SPEC.to_owned(),
        };
        return Item::Skipped(skipped(value, origin, Some(kind), &reason));
    };
    Item::Candidate(Candidate {
        origin,
        kind,
        namespace: metadata(value, "namespace"),
        name: metadata(value, "name"),
        review: None,
    })
}

/// Where kinds the webhook does not know keep a pod spec, by the conventions of the
/// built-in workloads that operators follow (Argo Rollout, Knative Service, OpenKruise
/// CloneSet: `spec.template`; pods of their own: `spec`; jobs: `spec.jobTemplate`).
const POD_SPEC_PATHS: [&str; 4] = [
    "/spec/containers",
    "/spec/template/spec/containers",
    "/template/spec/containers",
    "/spec/jobTemplate/spec/template/spec/containers",
];

fn has_pod_spec(object: &Value) -> bool {
    POD_SPEC_PATHS
        .iter()
        .any(|path| object.pointer(path).is_some_and(Value::is_array))
}

/// Why a kind with a pod spec is skipped: neither the webhook nor `check` judge it, but
/// the webhook judges the pods it creates.
fn unsupported(api_version: &str, kind: &str) -> String {
    let supported: Vec<&str> = WorkloadKind::ALL.iter().map(|k| k.as_str()).collect();
    format!(
        "kind not supported: {api_version} {kind} has a pod spec, but only {} are judged \
         as written; the webhook judges the pods it creates",
        supported.join(", ")
    )
}

/// The document holds an AdmissionReview (itself or in a `List`), which is not a
/// manifest: `kubectl apply` refuses it.
pub(super) fn holds_review(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some(answer::KIND)
        || value
            .get("items")
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(holds_review))
}

fn skipped(value: &Value, origin: Origin, kind: Option<&str>, reason: &str) -> Skipped {
    Skipped {
        origin,
        kind: kind.map(str::to_owned),
        namespace: metadata(value, "namespace"),
        name: metadata(value, "name"),
        reason: reason.to_owned(),
    }
}

fn metadata(object: &Value, field: &str) -> Option<String> {
    let value = object.get("metadata")?.get(field)?;
    value.as_str().map(str::to_owned)
}

/// An AdmissionReview stands for the object of its request, as the webhook gets it.
fn review_item(review: &Value, origin: Origin, api_version: &str) -> Result<Item, InputError> {
    if api_version != answer::API_VERSION {
        let message = format!(
            "AdmissionReview {api_version} is not supported: use {}",
            answer::API_VERSION
        );
        return Err(Cause::Shape(message).at(origin));
    }
    let request = review
        .get("request")
        .ok_or_else(|| Cause::Shape("AdmissionReview has no request".to_owned()))
        .and_then(parse_request)
        .map_err(|cause| cause.at(origin.clone()))?;
    let object = &review["request"]["object"];
    let object_origin = origin.child(&["request", "object"]);
    let namespace = request
        .namespace
        .map(String::from)
        .or_else(|| metadata(object, "namespace"));
    let name = request
        .name
        .map(String::from)
        .or_else(|| metadata(object, "name"));
    let Some(kind) = request.kind.workload() else {
        let reason = match has_pod_spec(object) {
            true => {
                let api_version = object.get("apiVersion").and_then(Value::as_str);
                unsupported(
                    api_version.unwrap_or(&request.kind.group),
                    &request.kind.kind,
                )
            }
            false => NO_POD_SPEC.to_owned(),
        };
        return Ok(Item::Skipped(Skipped {
            origin: object_origin,
            kind: Some(request.kind.kind.into_owned()),
            namespace,
            name,
            reason,
        }));
    };
    Ok(Item::Candidate(Candidate {
        origin: object_origin,
        kind,
        namespace,
        name,
        review: Some(origin.child(&["request"])),
    }))
}

/// `review.request` without its objects, or what is wrong with it.
fn parse_request(request: &Value) -> Result<Request<'_, IgnoredAny>, Cause> {
    serde_path_to_error::deserialize(request).map_err(|err| {
        let field = match err.path().to_string().as_str() {
            "." => "request".to_owned(),
            path => format!("request.{path}"),
        };
        Cause::Shape(format!("invalid AdmissionReview: {field}: {}", err.inner()))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::sync::Arc;

    use super::*;
    use crate::check::input::Text;
    use crate::check::origin::Source;

    fn document(value: Value) -> Document {
        Document {
            origin: Origin {
                source: Source::Stdin,
                document: Some(1),
                pointer: json_patch::jsonptr::PointerBuf::new(),
            },
            value,
            text: Text {
                source: Arc::from(""),
                span: 0..0,
                lines_before: 0,
            },
        }
    }

    /// (pointer, kind or skip reason) of each item.
    fn summary(value: Value) -> Vec<(String, String)> {
        items(&document(value))
            .unwrap()
            .into_iter()
            .map(|item| match item {
                Item::Candidate(c) => (c.origin.pointer.to_string(), c.kind.to_string()),
                Item::Skipped(s) => (
                    s.origin.pointer.to_string(),
                    format!("skipped: {}", s.reason),
                ),
            })
            .collect()
    }

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": []}})
    }

    #[test]
    fn manifests_are_targets_or_skipped() {
        assert_eq!(summary(pod("a")), [(String::new(), "Pod".to_owned())]);
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
        assert_eq!(summary(deploy), [(String::new(), "Deployment".to_owned())]);
        let service = json!({"apiVersion": "v1", "kind": "Service"});
        assert_eq!(
            summary(service),
            [(String::new(), "skipped: no pod spec".to_owned())]
        );
        let values = json!({"replicaCount": 2});
        assert_eq!(
            summary(values),
            [(
                String::new(),
                "skipped: not a Kubernetes object (no apiVersion and kind)".to_owned()
            )]
        );
    }

    #[test]
    fn kinds_with_a_pod_spec_that_are_not_judged_say_so() {
        let rollout = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}},
        });
        let expected = "skipped: kind not supported: argoproj.io/v1alpha1 Rollout has a pod \
             spec, but only Pod, PodTemplate, ReplicationController, Deployment, StatefulSet, \
             DaemonSet, ReplicaSet, Job, CronJob are judged as written; the webhook judges the \
             pods it creates";
        assert_eq!(summary(rollout), [(String::new(), expected.to_owned())]);
        let knative = json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}},
        });
        assert!(
            summary(knative)[0]
                .1
                .contains("serving.knative.dev/v1 Service has a pod spec")
        );
        // A Deployment of an API version the webhook does not serve.
        let old = json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": []}}}});
        assert!(
            summary(old)[0]
                .1
                .starts_with("skipped: kind not supported: extensions/v1beta1 Deployment")
        );
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "1", "operation": "CREATE",
                "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "CloneSet"},
                "object": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                    "spec": {"template": {"spec": {"containers": []}}}}},
        });
        assert!(
            summary(review)[0]
                .1
                .contains("apps.kruise.io/v1alpha1 CloneSet has a pod spec")
        );
        assert!(holds_review(
            &json!({"kind": "List", "items": [{"kind": "AdmissionReview"}]})
        ));
        assert!(!holds_review(&pod("a")));
    }

    #[test]
    fn lists_expand_recursively_and_typed_lists_lend_their_kind() {
        let list = json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                pod("a"),
                {"apiVersion": "v1", "kind": "ConfigMap"},
                {"apiVersion": "v1", "kind": "List", "items": [pod("b")]},
                {"apiVersion": "apps/v1", "kind": "DeploymentList", "items": [{"metadata": {"name": "web"}}]},
            ],
        });
        assert_eq!(
            summary(list),
            [
                ("/items/0".to_owned(), "Pod".to_owned()),
                ("/items/1".to_owned(), "skipped: no pod spec".to_owned()),
                ("/items/2/items/0".to_owned(), "Pod".to_owned()),
                ("/items/3/items/0".to_owned(), "Deployment".to_owned()),
            ]
        );
    }

    #[test]
    fn an_admission_review_is_its_request() {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "subResource": "ephemeralcontainers",
                "operation": "UPDATE",
                "namespace": "shop",
                "object": pod("a"),
                "oldObject": pod("a"),
            },
        });
        let items = items(&document(review.clone())).unwrap();
        let Item::Candidate(candidate) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(candidate.origin.pointer.as_str(), "/request/object");
        assert_eq!(candidate.kind, WorkloadKind::Pod);
        assert_eq!(candidate.namespace.as_deref(), Some("shop"));
        assert_eq!(candidate.name.as_deref(), Some("a"));
        let request = candidate.request(&review).unwrap();
        assert_eq!(request.operation, dhi_policy::Operation::Update);
        assert_eq!(request.sub_resource.as_deref(), Some("ephemeralcontainers"));
        assert_eq!(request.namespace.as_deref(), Some("shop"));
        assert_eq!(request.object, Some(&review["request"]["object"]));
        assert_eq!(request.old_object, Some(&review["request"]["oldObject"]));
    }

    #[test]
    fn broken_reviews_are_errors() {
        let err = |value: Value| items(&document(value)).unwrap_err().to_string();
        let review = |request: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        assert_eq!(
            err(review(json!({"kind": {"kind": "Pod"}}))),
            "<stdin>, document 1: invalid AdmissionReview: request: missing field `operation`"
        );
        let patch = err(review(
            json!({"kind": {"kind": "Pod"}, "operation": "PATCH"}),
        ));
        assert!(patch.starts_with("<stdin>, document 1: invalid AdmissionReview: request.operation: unknown variant `PATCH`"), "{patch}");
        let v1beta1 = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"});
        assert!(err(v1beta1).contains("admission.k8s.io/v1beta1 is not supported"));
    }
}
