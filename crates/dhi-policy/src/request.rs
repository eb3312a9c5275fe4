//! The one request model: what the engine is asked about.
//!
//! The admission server reads it from `AdmissionReview.request`; `check` reads it from
//! an AdmissionReview document, or builds it for a manifest as kube-apiserver would on
//! CREATE. Both hand it to the same entry points ([`Engine::admit`], [`Engine::find`]).
//!
//! [`Engine::admit`]: crate::Engine::admit
//! [`Engine::find`]: crate::Engine::find

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::Operation;
use crate::spec::{ObjectView, borrowed};
use crate::workload::WorkloadKind;

/// An admission request: the fields of `AdmissionReview.request` the engine reads.
///
/// `O` is how its objects arrive: decoded with the request in one pass
/// ([`ObjectView`]), or kept raw ([`&RawValue`](RawValue), [`&Value`](Value)) and
/// decoded only if the request is routed to review, so that a bad object can be
/// reported by field.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct Request<'a, O> {
    /// The request's uid (absent from manifests; the server requires it).
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub uid: Option<Cow<'a, str>>,
    /// The object's group and kind.
    #[serde(borrow)]
    pub kind: GroupKind<'a>,
    /// CREATE, UPDATE, ...
    pub operation: Operation,
    /// `ephemeralcontainers`, `status`, ... for subresource requests.
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub sub_resource: Option<Cow<'a, str>>,
    /// The object's name (empty for pods created with `generateName`).
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub name: Option<Cow<'a, str>>,
    /// The request's namespace.
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub namespace: Option<Cow<'a, str>>,
    /// The object as submitted.
    #[serde(default)]
    pub object: Option<O>,
    /// The object before an UPDATE.
    #[serde(default)]
    pub old_object: Option<O>,
}

/// `request.kind` without its version: the engine reads every served version alike.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupKind<'a> {
    /// API group, empty for the core group.
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    /// Kind name.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

impl<'a> GroupKind<'a> {
    /// From a manifest's `apiVersion` (`apps/v1`) and `kind`.
    pub fn from_api_version(api_version: &'a str, kind: &'a str) -> Self {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        Self {
            group: Cow::Borrowed(group),
            kind: Cow::Borrowed(kind),
        }
    }

    /// The workload kind, if the engine reviews it.
    pub fn workload(&self) -> Option<WorkloadKind> {
        WorkloadKind::from_group_kind(&self.group, &self.kind)
    }
}

impl From<WorkloadKind> for GroupKind<'static> {
    fn from(kind: WorkloadKind) -> Self {
        Self {
            group: Cow::Borrowed(kind.group()),
            kind: Cow::Borrowed(kind.as_str()),
        }
    }
}

impl<'a, O> Request<'a, O> {
    /// The same request with its objects read another way (`check` routes a review's
    /// request first, then hands the engine its objects as values).
    pub fn with_objects<P>(self, object: Option<P>, old_object: Option<P>) -> Request<'a, P> {
        Request {
            uid: self.uid,
            kind: self.kind,
            operation: self.operation,
            sub_resource: self.sub_resource,
            name: self.name,
            namespace: self.namespace,
            object,
            old_object,
        }
    }

    /// A manifest as kube-apiserver would send it on CREATE.
    pub fn create(kind: GroupKind<'a>, namespace: Option<&'a str>, object: O) -> Self {
        Self {
            uid: None,
            kind,
            operation: Operation::Create,
            sub_resource: None,
            name: None,
            namespace: namespace.map(Cow::Borrowed),
            object: Some(object),
            old_object: None,
        }
    }
}

/// How an object arrives in a request: anything the engine can decode into a view.
pub trait ObjectSource<'a> {
    /// The fields the rules read; the error names the offending field.
    fn decode(self) -> Result<ObjectView<'a>, DecodeError>;

    /// Whether this object's pod spec (at `path`) equals `other`'s in every field, for
    /// an UPDATE; `None` when the source keeps no JSON to compare.
    fn same_pod_spec(&self, _other: &Self, _path: &[&str]) -> Option<bool> {
        None
    }
}

impl<'a> ObjectSource<'a> for ObjectView<'a> {
    fn decode(self) -> Result<ObjectView<'a>, DecodeError> {
        Ok(self)
    }
}

impl<'a> ObjectSource<'a> for &'a RawValue {
    fn decode(self) -> Result<ObjectView<'a>, DecodeError> {
        decode_object(self.get())
    }

    fn same_pod_spec(&self, other: &Self, path: &[&str]) -> Option<bool> {
        // UPDATEs only, and few of them reach the main resource: reading both objects
        // whole is affordable, and compares values, not their formatting.
        let new: Value = serde_json::from_str(self.get()).ok()?;
        let old: Value = serde_json::from_str(other.get()).ok()?;
        Some(same_at(&new, &old, path))
    }
}

impl<'a> ObjectSource<'a> for &'a Value {
    fn decode(self) -> Result<ObjectView<'a>, DecodeError> {
        serde_path_to_error::deserialize::<_, ObjectView<'a>>(self).map_err(|err| DecodeError {
            path: err.path().to_string(),
            message: err.inner().to_string(),
        })
    }

    fn same_pod_spec(&self, other: &Self, path: &[&str]) -> Option<bool> {
        Some(same_at(self, other, path))
    }
}

/// Whether two objects hold the same value at `path` (absent and `null` alike).
fn same_at(new: &Value, old: &Value, path: &[&str]) -> bool {
    let at = |value| {
        path.iter()
            .try_fold(value, |v: &Value, key| v.get(key))
            .filter(|v| !v.is_null())
    };
    at(new) == at(old)
}

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// Where in the object (`spec.containers[0].securityContext.runAsUser`), or `.`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Decodes the fields the rules read. Errors name the offending field.
pub fn decode_object(json: &str) -> Result<ObjectView<'_>, DecodeError> {
    serde_json::from_str(json).map_err(|_| {
        // Only on failure: a second pass that tracks the path, for a useful message.
        let mut de = serde_json::Deserializer::from_str(json);
        match serde_path_to_error::deserialize::<_, ObjectView<'_>>(&mut de) {
            Err(err) => DecodeError {
                path: err.path().to_string(),
                message: without_position(err.inner()),
            },
            Ok(_) => DecodeError {
                path: ".".to_owned(),
                message: "trailing characters after the object".to_owned(),
            },
        }
    })
}

/// serde_json's message without its "at line 1 column 289": positions count in the
/// object as the engine received it, not in the user's file.
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) if err.line() > 0 => text[..at].to_owned(),
        _ => text,
    }
}

/// A request the engine cannot answer. The messages are shown to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The webhook is registered for a kind the engine does not review.
    #[error(
        "dhi-admission does not review {}/{kind}: remove it from the webhook rules",
        if group.is_empty() { "core" } else { group }
    )]
    UnsupportedKind {
        /// API group.
        group: String,
        /// Kind name.
        kind: String,
    },
    /// A CREATE or UPDATE without its object.
    #[error("{operation:?} request for {kind} {name} has no object")]
    NoObject {
        /// The operation.
        operation: Operation,
        /// The kind.
        kind: WorkloadKind,
        /// The request's name.
        name: String,
    },
    /// The object has a field of the wrong type.
    #[error("cannot read {kind} {name}: {source}")]
    Unreadable {
        /// The kind.
        kind: WorkloadKind,
        /// The request's name.
        name: String,
        /// The field and what is wrong with it.
        #[source]
        source: DecodeError,
    },
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_decode_alike_from_text_and_from_values() {
        let object = json!({"spec": {"containers": [{"name": "app", "image": "dhi.io/nginx:1"}]}});
        let text = object.to_string();
        let from_text = decode_object(&text).unwrap();
        let from_value = (&object).decode().unwrap();
        assert_eq!(from_text, from_value);

        let bad = json!({"spec": {"containers": [{"name": "app", "securityContext": {"runAsUser": "zero"}}]}});
        let text = bad.to_string();
        let from_text = decode_object(&text).unwrap_err();
        let from_value = (&bad).decode().unwrap_err();
        assert_eq!(from_text, from_value);
        assert_eq!(
            from_value.to_string(),
            "spec.containers[0].securityContext.runAsUser: invalid type: string \"zero\", expected i64"
        );
    }

    #[test]
    fn manifests_name_their_group() {
        let kind = GroupKind::from_api_version("apps/v1", "Deployment");
        assert_eq!(kind.group, "apps");
        assert_eq!(kind.workload(), Some(WorkloadKind::Deployment));
        assert_eq!(GroupKind::from_api_version("v1", "Pod").group, "");
        assert_eq!(
            GroupKind::from_api_version("example.com/v1", "Deployment").workload(),
            None
        );
    }
}
