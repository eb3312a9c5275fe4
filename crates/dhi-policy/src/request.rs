//! The one request model: what the engine is asked about.
//!
//! The admission server reads it from `AdmissionReview.request`; `check` reads it from
//! an AdmissionReview document, or builds it for a manifest as kube-apiserver would on
//! CREATE. Both hand it to the same entry points ([`Engine::admit`], [`Engine::find`]).
//!
//! [`Engine::admit`]: crate::Engine::admit
//! [`Engine::find`]: crate::Engine::find

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
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
        // kube-apiserver writes both objects with the same encoder, so equal bytes settle
        // most UPDATEs (scale, labels) without building a tree. Different bytes are read
        // as values, the pod specs alone: formatting must not count as a change.
        let new = raw_at(self, path).ok()?;
        let old = raw_at(other, path).ok()?;
        Some(match (new, old) {
            (None, None) => true,
            (Some(new), Some(old)) if new.get() == old.get() => true,
            (Some(new), Some(old)) => {
                let new: Value = serde_json::from_str(new.get()).ok()?;
                let old: Value = serde_json::from_str(old.get()).ok()?;
                new == old
            }
            _ => false,
        })
    }
}

/// The raw JSON at `path` in an object, `None` where it is absent or `null` (as
/// [`same_at`] reads values). Only the objects along the path are scanned.
fn raw_at<'a>(
    json: &'a RawValue,
    path: &[&str],
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let mut at = json;
    for key in path {
        if !at.get().trim_start().starts_with('{') {
            return Ok(None);
        }
        let mut de = serde_json::Deserializer::from_str(at.get());
        let found = Field(key).deserialize(&mut de)?;
        de.end()?;
        match found {
            Some(value) if value.get() != "null" => at = value,
            _ => return Ok(None),
        }
    }
    Ok(Some(at))
}

/// Reads one field of a JSON object and skips the others unread; the last of duplicate
/// keys wins, as in a `Value`.
struct Field<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(self.0))? {
            if wanted {
                found = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a key is the one sought, without allocating it.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
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
    fn raw_objects_compare_pod_specs_as_values() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let same = |new: &str, old: &str, path: &[&str]| {
            let (new, old) = (raw(new), raw(old));
            let by_raw = (&*new).same_pod_spec(&&*old, path);
            // The value trees the raw comparison stands in for agree with it.
            let new_value: Value = serde_json::from_str(new.get()).unwrap();
            let old_value: Value = serde_json::from_str(old.get()).unwrap();
            assert_eq!(by_raw, (&new_value).same_pod_spec(&&old_value, path));
            by_raw
        };
        let deployment = |spec: &str| {
            format!(
                r#"{{"metadata":{{"labels":{{"a":"1"}}}},"spec":{{"replicas":3,"template":{{"spec":{spec}}}}}}}"#
            )
        };
        let pod = r#"{"containers":[{"name":"app","image":"dhi.io/nginx:1","env":[{"name":"A","value":"1"}]}]}"#;
        let path = ["spec", "template", "spec"];
        // Scale and labels: the same bytes.
        let scaled = deployment(pod).replace("\"replicas\":3", "\"replicas\":5");
        assert_eq!(same(&deployment(pod), &scaled, &path), Some(true));
        // The same spec written differently is no change.
        let spaced = deployment(&pod.replace(',', ", ").replace(
            "{\"name\":\"A\",\"value\":\"1\"}",
            "{\"value\":\"1\",\"name\":\"A\"}",
        ));
        assert_eq!(same(&deployment(pod), &spaced, &path), Some(true));
        // An env change is one.
        let changed = deployment(&pod.replace("\"value\":\"1\"", "\"value\":\"2\""));
        assert_eq!(same(&deployment(pod), &changed, &path), Some(false));
        // Absent and null alike; absent and present differ.
        assert_eq!(same(r#"{"spec":null}"#, r#"{}"#, &["spec"]), Some(true));
        assert_eq!(same(r#"{"spec":{}}"#, r#"{}"#, &["spec"]), Some(false));
        // A level that is not an object holds nothing.
        assert_eq!(
            same(r#"{"spec":"x"}"#, r#"{"spec":[1]}"#, &["spec", "template"]),
            Some(true)
        );
        // The last of duplicate keys wins, as in a value.
        assert_eq!(
            same(
                r#"{"spec":{"a":1},"spec":{"a":2}}"#,
                r#"{"spec":{"a":2}}"#,
                &["spec"]
            ),
            Some(true)
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
