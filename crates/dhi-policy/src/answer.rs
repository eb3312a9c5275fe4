//! The answer stage: AdmissionReview v1 in and out. Decode, ask the engine, shape the
//! answer. It is the admission API's JSON, not HTTP: the server hands it a body and
//! sends back what it returns, and the fuzzers and benchmarks drive it the same way.
//!
//! The request is read in one pass into borrowed, typed views of the few fields the
//! engine needs: building a `serde_json::Value` tree of a pod review costs more than the
//! rest of the request together (kube's `AdmissionReview<DynamicObject>` does exactly
//! that). Only a request that fails that pass is read again, with the objects kept as
//! raw JSON, to answer with its uid and the offending field. The response mirrors
//! `kube::core::admission::AdmissionResponse` field for field; tests decode every answer
//! with kube's own types to keep the two in step.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::decision::as_api_server_sends;
use crate::spec::borrowed;
use crate::{
    Admission, Decision, Engine, Mode, MutationKind, ObjectSource, ObjectView, Operation, Request,
    RequestError, RuleId, SkipReason, Webhook, WorkloadKind,
};

/// The only review version kube-apiserver is configured to send us.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The review kind.
pub const KIND: &str = "AdmissionReview";

/// An AdmissionReview, its objects read as `O`: decoded views on the fast path, raw
/// JSON on the path that explains errors.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewIn<'a, O> {
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<Request<'a, O>>,
}

/// Enough of a review to answer an error with the request's uid.
#[derive(Deserialize)]
struct UidOnly<'a> {
    #[serde(borrow)]
    request: UidRequest<'a>,
}

#[derive(Deserialize)]
struct UidRequest<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: &'a BTreeMap<String, String>,
}

/// A `metav1.Status`.
#[derive(Serialize)]
struct StatusOut {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: String,
}

/// How a request ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted (possibly with a patch or warnings).
    Allowed,
    /// Rejected by policy.
    Denied,
    /// The request could not be read.
    Error,
}

impl Outcome {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// The answer to one HTTP request, with what metrics need to know about it.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status: 200 for every AdmissionReview answer, 4xx when none could be built.
    pub status: u16,
    /// The JSON body (an AdmissionReview, or a `metav1.Status` for 4xx).
    pub body: Vec<u8>,
    /// How it ended.
    pub outcome: Outcome,
    /// The object kind, when known.
    pub kind: Option<WorkloadKind>,
    /// The operation, when known.
    pub operation: Option<Operation>,
    /// Violations found (denied in enforce mode, reported in audit mode).
    pub violations: Vec<RuleId>,
    /// Mutations applied.
    pub mutations: Vec<MutationKind>,
    /// Rewrites skipped.
    pub skipped: Vec<SkipReason>,
}

impl Answer {
    /// Labels the answer with what the request was about, for metrics.
    fn about(mut self, kind: Option<WorkloadKind>, operation: Operation) -> Self {
        self.kind = kind;
        self.operation = Some(operation);
        self
    }
}

/// Handles one AdmissionReview body for `webhook` in `mode`.
pub fn handle(engine: &Engine, webhook: Webhook, mode: Mode, body: &[u8]) -> Answer {
    // Fast path: the objects are decoded with the review, in one pass over the body.
    // An UPDATE with its old object takes the raw path: whether the pod spec changed is
    // decided on the whole spec, fields the rules don't read included. A look for the
    // key picks the path before decoding, so an UPDATE is not decoded twice; a body the
    // look misjudges still gets the same answer, one path later.
    if !has_old_object(body)
        && let Ok(review) = serde_json::from_slice::<ReviewIn<'_, ObjectView<'_>>>(body)
    {
        let compares_objects = review.request.as_ref().is_some_and(|request| {
            request.operation == Operation::Update && request.old_object.is_some()
        });
        if !compares_objects {
            return answer_review(engine, webhook, mode, review);
        }
    }
    // An UPDATE, or something is wrong. Read the objects as raw JSON so that the uid
    // survives a bad object and the answer can name the offending field.
    match serde_json::from_slice::<ReviewIn<'_, &RawValue>>(body) {
        Ok(review) => answer_review(engine, webhook, mode, review),
        Err(err) => {
            let message = format!("request body is not a valid AdmissionReview: {err}");
            match serde_json::from_slice::<UidOnly<'_>>(body) {
                Ok(partial) => review_error(&partial.request.uid, message),
                Err(_) => http_error(400, message),
            }
        }
    }
}

/// What a webhook that allows everything unread answers: the review's uid echoed, and
/// nothing else of the body decoded. `examples/baseline.rs` serves it: the floor that
/// `bench/load.sh` measures [`handle`] against.
pub fn allow_unread(body: &[u8]) -> Answer {
    let Ok(review) = serde_json::from_slice::<UidOnly<'_>>(body) else {
        return http_error(400, "not an AdmissionReview".to_owned());
    };
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response: ResponseOut {
            uid: &review.request.uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: &[],
            audit_annotations: &BTreeMap::new(),
        },
    };
    unlabelled(200, to_json(&out), Outcome::Allowed)
}

/// Whether the body holds an `oldObject` that is an object, as kube-apiserver writes it.
/// Inside a JSON string the quotes would be escaped, so only a key can match.
fn has_old_object(body: &[u8]) -> bool {
    memchr::memmem::find(body, br#""oldObject":{"#).is_some()
}

fn answer_review<'a, O: ObjectSource<'a>>(
    engine: &Engine,
    webhook: Webhook,
    mode: Mode,
    review: ReviewIn<'a, O>,
) -> Answer {
    match (review.api_version.as_deref(), review.kind.as_deref()) {
        (Some(API_VERSION), Some(KIND)) => {}
        (version, kind) => {
            return http_error(
                400,
                format!(
                    "expected apiVersion {API_VERSION} and kind {KIND}, got {} {}; \
                     set admissionReviewVersions: [v1] in the webhook configuration",
                    version.unwrap_or("(none)"),
                    kind.unwrap_or("(none)"),
                ),
            );
        }
    }
    let Some(request) = review.request else {
        return http_error(400, "AdmissionReview has no request".to_owned());
    };
    answer_request(engine, webhook, mode, request)
}

fn answer_request<'a, O: ObjectSource<'a>>(
    engine: &Engine,
    webhook: Webhook,
    mode: Mode,
    mut request: Request<'a, O>,
) -> Answer {
    let Some(uid) = request.uid.take() else {
        return http_error(
            400,
            "request body is not a valid AdmissionReview: request.uid is missing".to_owned(),
        );
    };
    let operation = request.operation;
    let namespace = request.namespace.clone().unwrap_or_default();
    match engine.admit(webhook, mode, request) {
        Ok(Admission {
            kind,
            name,
            decision,
        }) => {
            log_decision(
                &uid, &namespace, &name, kind, operation, webhook, mode, &decision,
            );
            Answer {
                kind,
                operation: Some(operation),
                ..respond(&uid, &decision, kind.unwrap_or(WorkloadKind::Pod), &name)
            }
        }
        Err(err) => {
            let kind = match &err {
                RequestError::UnsupportedKind { .. } => None,
                RequestError::NoObject { kind, .. } | RequestError::Unreadable { kind, .. } => {
                    Some(*kind)
                }
            };
            review_error(&uid, err.to_string()).about(kind, operation)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn log_decision(
    uid: &str,
    namespace: &str,
    name: &str,
    kind: Option<WorkloadKind>,
    operation: Operation,
    webhook: Webhook,
    mode: Mode,
    d: &Decision,
) {
    let kind = kind.map_or("", WorkloadKind::as_str);
    let op = operation.as_str();
    let hook = webhook.as_str();
    // Skipped rewrites (every Istio pod's istio-init) reach kubectl and the metrics; at
    // info they would be one log line per Istio pod, so they stay at debug.
    let notable_warnings = d.warnings.len() > d.skipped.len();
    if !d.allowed {
        let rules: Vec<&str> = d.violations.iter().map(|v| v.rule.as_str()).collect();
        tracing::info!(%uid, %namespace, %name, %kind, operation = op, webhook = hook, mode = mode.as_str(),
            rules = ?rules, decision = "denied", "denied");
    } else if notable_warnings {
        tracing::info!(%uid, %namespace, %name, %kind, operation = op, webhook = hook, mode = mode.as_str(),
            warnings = d.warnings.len(), patched = !d.patch.is_empty(), decision = "allowed", "allowed with warnings");
    } else {
        tracing::debug!(%uid, %namespace, %name, %kind, operation = op, webhook = hook, mode = mode.as_str(),
            patched = !d.patch.is_empty(), decision = "allowed", "allowed");
    }
}

fn respond(uid: &str, d: &Decision, kind: WorkloadKind, name: &str) -> Answer {
    let patch = (!d.patch.is_empty())
        .then(|| encode_patch(&d.patch))
        .flatten();
    let status = (!d.allowed).then(|| StatusOut {
        status: "Failure",
        code: 403,
        reason: "Forbidden",
        message: d.denial_message(kind, display_name(name)),
    });
    let warnings = as_api_server_sends(&d.warnings);
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response: ResponseOut {
            uid,
            allowed: d.allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: &warnings,
            audit_annotations: &d.audit_annotations,
        },
    };
    Answer {
        status: 200,
        body: to_json(&out),
        outcome: if d.allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        },
        kind: None,
        operation: None,
        violations: d.violations.iter().map(|v| v.rule).collect(),
        mutations: d.mutations.clone(),
        skipped: d.skipped.clone(),
    }
}

/// The patch as the JSON string of its base64 encoding, written as is: base64 needs no
/// escaping, and running a kilobyte of it through the string escaper cost more than
/// building the patch.
fn encode_patch(patch: &[json_patch::PatchOperation]) -> Option<Box<RawValue>> {
    // Serialising operations cannot fail: every key is a string.
    let json = serde_json::to_vec(patch).ok()?;
    let mut quoted = String::with_capacity(json.len().div_ceil(3) * 4 + 2);
    quoted.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(&json, &mut quoted);
    quoted.push('"');
    RawValue::from_string(quoted).ok()
}

/// Pods created by controllers have no name yet at admission.
fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "(generated name)"
    } else {
        name
    }
}

/// An AdmissionReview that refuses a request we could not read but whose uid we know:
/// kube-apiserver shows the message to the client instead of a bare webhook failure.
fn review_error(uid: &str, message: String) -> Answer {
    tracing::warn!(%uid, error = %message, "bad admission request");
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response: ResponseOut {
            uid,
            allowed: false,
            status: Some(StatusOut {
                status: "Failure",
                code: 400,
                reason: "BadRequest",
                message,
            }),
            patch_type: None,
            patch: None,
            warnings: &[],
            audit_annotations: &BTreeMap::new(),
        },
    };
    unlabelled(200, to_json(&out), Outcome::Error)
}

/// A plain HTTP error with a `metav1.Status` body, for bodies that are not reviews.
pub fn http_error(code: u16, message: String) -> Answer {
    tracing::warn!(status = code, error = %message, "rejected request");
    // metav1.StatusReason for each code the server answers with.
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        408 => "Timeout",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    let status = StatusOut {
        status: "Failure",
        code,
        reason,
        message,
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct StatusDoc {
        api_version: &'static str,
        kind: &'static str,
        #[serde(flatten)]
        status: StatusOut,
    }
    let doc = StatusDoc {
        api_version: "v1",
        kind: "Status",
        status,
    };
    unlabelled(code, to_json(&doc), Outcome::Error)
}

/// An answer that knows nothing of the request's object, so labels no metric with it.
fn unlabelled(status: u16, body: Vec<u8>, outcome: Outcome) -> Answer {
    Answer {
        status,
        body,
        outcome,
        kind: None,
        operation: None,
        violations: Vec::new(),
        mutations: Vec::new(),
        skipped: Vec::new(),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our response types hold only strings, numbers and string maps: infallible.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn review(object: &Value, old: Option<&Value>) -> Value {
        json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "request": {
                "uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "operation": "UPDATE", "namespace": "team", "name": "web",
                "object": object, "oldObject": old,
            }
        })
    }

    fn deployment(user: i64, replicas: u32) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas, "template": {"spec": {
            "securityContext": {"runAsUser": user},
            "containers": [{"name": "app", "image": "dhi.io/nginx:1.29"}]}}}})
    }

    /// The look for `oldObject` only picks a path: pretty-printed bodies, which it misses,
    /// and bodies with no old object get the answers the compact ones get.
    #[test]
    fn the_path_taken_does_not_change_the_answer() {
        let engine = Engine::default();
        let answer = |body: &Value, pretty: bool| {
            let bytes = if pretty {
                serde_json::to_vec_pretty(body).unwrap()
            } else {
                serde_json::to_vec(body).unwrap()
            };
            assert_eq!(
                has_old_object(&bytes),
                !pretty && body["request"]["oldObject"].is_object()
            );
            let a = handle(&engine, Webhook::Validate, Mode::Enforce, &bytes);
            (a.status, a.outcome, a.violations)
        };
        let root = deployment(0, 3);
        let cases = [
            // Scaled: the spec is unchanged, so even a root template passes.
            (review(&root, Some(&deployment(0, 1))), Outcome::Allowed),
            // The template changed: judged, denied.
            (review(&root, Some(&deployment(1000, 3))), Outcome::Denied),
            // No old object: judged as a whole.
            (review(&root, None), Outcome::Denied),
        ];
        for (body, outcome) in cases {
            let compact = answer(&body, false);
            assert_eq!(compact.1, outcome, "{body}");
            assert_eq!(compact, answer(&body, true), "{body}");
        }
    }
}
