//! AdmissionReview answers decoded and checked against kube's own types.

use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeMap;

use super::*;

/// The `response` of an AdmissionReview answer, decoded.
#[derive(Debug, Clone)]
pub struct Review {
    /// `response.uid`
    pub uid: String,
    /// `response.allowed`
    pub allowed: bool,
    /// `response.status`, when present.
    pub status: Option<Value>,
    /// `response.patch`, base64-decoded and parsed.
    pub patch: Option<Value>,
    /// `response.patchType`
    pub patch_type: Option<String>,
    /// `response.warnings`
    pub warnings: Vec<String>,
    /// `response.auditAnnotations`
    pub audit_annotations: BTreeMap<String, String>,
    /// The whole answer.
    pub raw: Value,
}

impl Review {
    /// `status.code`
    pub fn code(&self) -> Option<u64> {
        self.status.as_ref()?.get("code")?.as_u64()
    }

    /// `status.message`
    pub fn message(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Checks an AdmissionReview answer: HTTP 200, JSON content type, `apiVersion`
    /// and `kind` echoed, accepted by kube's own types; returns the response decoded.
    pub fn review(&self) -> Review {
        assert_eq!(
            self.status,
            200,
            "expected an AdmissionReview (200), got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some(JSON));
        let raw = self.json();
        assert_eq!(raw["apiVersion"], "admission.k8s.io/v1", "{raw}");
        assert_eq!(raw["kind"], "AdmissionReview", "{raw}");
        assert!(
            raw.get("request").is_none(),
            "the answer must not echo the request: {raw}"
        );
        let response = &raw["response"];
        let keys: Vec<&str> = response
            .as_object()
            .expect("response object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in &keys {
            assert!(
                [
                    "uid",
                    "allowed",
                    "status",
                    "patch",
                    "patchType",
                    "warnings",
                    "auditAnnotations"
                ]
                .contains(key),
                "unexpected response field {key}: {raw}"
            );
        }
        let patch_type = response
            .get("patchType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let patch = response.get("patch").map(|p| {
            let b64 = p.as_str().expect("patch is a base64 string");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("patch is base64");
            serde_json::from_slice::<Value>(&bytes).expect("patch is JSON")
        });
        assert_eq!(
            patch.is_some(),
            patch_type.is_some(),
            "patch and patchType go together: {raw}"
        );
        if let Some(pt) = &patch_type {
            assert_eq!(pt, "JSONPatch");
        }
        let review = Review {
            uid: response["uid"].as_str().expect("uid").to_owned(),
            allowed: response["allowed"].as_bool().expect("allowed"),
            status: response.get("status").cloned(),
            patch,
            patch_type,
            warnings: response
                .get("warnings")
                .map(|w| {
                    w.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            audit_annotations: response
                .get("auditAnnotations")
                .map(|a| serde_json::from_value(a.clone()).expect("auditAnnotations map"))
                .unwrap_or_default(),
            raw: raw.clone(),
        };
        if !review.allowed {
            assert!(review.status.is_some(), "a refusal carries a status: {raw}");
        }
        assert_kube_compatible(&self.body, &review);
        review
    }

    /// Checks a plain HTTP error: `metav1.Status` with `code` equal to the HTTP status.
    pub fn status_doc(&self, code: u16) -> Value {
        assert_eq!(
            self.status,
            code,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some(JSON));
        let doc = self.json();
        assert_eq!(doc["apiVersion"], "v1", "{doc}");
        assert_eq!(doc["kind"], "Status", "{doc}");
        assert_eq!(doc["status"], "Failure", "{doc}");
        assert_eq!(doc["code"], code, "{doc}");
        assert!(
            doc["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{doc}"
        );
        assert!(
            doc["reason"].as_str().is_some_and(|m| !m.is_empty()),
            "{doc}"
        );
        let status: kube::core::Status = serde_json::from_value(doc.clone()).expect("kube Status");
        assert_eq!(status.code, code);
        doc
    }
}

/// Decodes the answer with kube's own `AdmissionReview<DynamicObject>`.
///
/// kube's `AdmissionResponse` is written for producing answers, and its `Deserialize`
/// is stricter than kube-apiserver in two ways that have nothing to do with our wire
/// format: `status` is required (the API server's `Status` is an optional pointer), and
/// `patch` is a `Vec<u8>` that serde_json reads only from an array of numbers, while
/// the API server's `[]byte` is base64 (which is what kube-apiserver documents and what
/// we send). Those two fields are normalised first — `status: {}` when absent and the
/// decoded patch bytes as an array — and everything else is decoded as sent.
pub fn assert_kube_compatible(body: &[u8], review: &Review) {
    use kube::core::DynamicObject;
    use kube::core::admission::AdmissionReview;
    let mut doc: Value = serde_json::from_slice(body).unwrap();
    let response = doc["response"].as_object_mut().unwrap();
    response
        .entry("status")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(patch) = response.get_mut("patch") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().unwrap())
            .unwrap();
        *patch = Value::from(bytes);
    }
    let kube_review: AdmissionReview<DynamicObject> =
        serde_json::from_value(doc).unwrap_or_else(|err| {
            panic!(
                "kube cannot read the answer ({err}): {}",
                String::from_utf8_lossy(body)
            )
        });
    assert_eq!(kube_review.types.api_version, "admission.k8s.io/v1");
    assert_eq!(kube_review.types.kind, "AdmissionReview");
    let response = kube_review.response.expect("kube: response");
    assert_eq!(response.uid, review.uid);
    assert_eq!(response.allowed, review.allowed);
    assert_eq!(
        response.warnings.clone().unwrap_or_default(),
        review.warnings
    );
    let annotations: BTreeMap<String, String> =
        response.audit_annotations.clone().into_iter().collect();
    assert_eq!(annotations, review.audit_annotations);
    if let Some(status) = &review.status {
        assert_eq!(
            u64::from(response.result.code),
            status["code"].as_u64().unwrap()
        );
        assert_eq!(response.result.message, status["message"].as_str().unwrap());
        assert_eq!(response.result.reason, status["reason"].as_str().unwrap());
    }
    if let Some(patch) = &review.patch {
        let bytes = response.patch.as_ref().expect("kube: patch");
        let ops: json_patch::Patch =
            serde_json::from_slice(bytes).expect("kube: patch is a JSON Patch");
        assert_eq!(serde_json::to_value(&ops).unwrap(), *patch);
    }
}

/// Applies a JSON Patch to an object, as kube-apiserver does.
pub fn apply_patch(object: &Value, patch: &Value) -> Value {
    let mut patched = object.clone();
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).expect("valid JSON Patch");
    json_patch::patch(&mut patched, &ops).expect("patch applies to the object");
    patched
}
