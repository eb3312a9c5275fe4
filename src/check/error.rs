//! Input that cannot be checked, and why: each message names the place and the limit.

use std::io;

use dhi_policy::{DecodeError, WorkloadKind};

use super::origin::Origin;

/// Inputs larger than this are refused rather than parsed.
pub(super) const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Documents per input beyond this are refused (a `---` storm, not a manifest).
pub(super) const MAX_DOCUMENTS: usize = 10_000;

/// Input that cannot be checked: it names the file, the document and the object.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {cause}")]
pub(super) struct InputError {
    /// Where.
    pub origin: Origin,
    /// What is wrong there.
    pub cause: Cause,
}

/// What is wrong with an input. Each message is whole (it names the underlying error),
/// so none is chained as a `source`.
#[derive(Debug, thiserror::Error)]
pub(super) enum Cause {
    /// The file or directory cannot be read.
    #[error("cannot read: {0}")]
    Read(io::Error),
    /// A command-line path holds no Kubernetes object at all.
    #[error(
        "no Kubernetes objects found; nothing was checked (pass --allow-empty if an empty \
         input is expected)"
    )]
    Empty,
    /// The input is over [`MAX_INPUT_BYTES`].
    #[error("larger than {} MiB; check smaller files", MAX_INPUT_BYTES / 1024 / 1024)]
    TooLarge,
    /// The input has more than [`MAX_DOCUMENTS`] documents.
    #[error("more than {MAX_DOCUMENTS} documents")]
    TooManyDocuments,
    /// The input is not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// The document is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The document is not valid YAML and has `{{`: a Helm chart's template, not rendered.
    #[error(
        "invalid YAML: {0}; it looks like an unrendered Helm template: render it first \
         (helm template RELEASE CHART | dhi-admission check -)"
    )]
    UnrenderedTemplate(String),
    /// The document is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// An AdmissionReview or List lacks what the check needs.
    #[error("{0}")]
    Shape(String),
    /// A pod-carrying object has a field of the wrong type.
    #[error("cannot read {kind}: {error}")]
    Decode {
        /// The object's kind.
        kind: WorkloadKind,
        /// The field and what is wrong with it.
        error: DecodeError,
    },
    /// The planned patch does not apply to the object (a bug in the engine).
    #[error("the planned patch does not apply: {0}")]
    Patch(json_patch::PatchError),
}

impl From<io::Error> for Cause {
    fn from(err: io::Error) -> Self {
        Self::Read(err)
    }
}

impl Cause {
    /// A YAML error in a document with template actions (`{{ .Values.x }}`) says what to
    /// do: such a document is a template, and only its rendering is a manifest.
    pub(super) fn unrendered_hint(self, document: &str) -> Self {
        match self {
            Self::Yaml(message) if document.contains("{{") => Self::UnrenderedTemplate(message),
            other => other,
        }
    }

    /// This cause, at `origin`.
    pub(super) fn at(self, origin: Origin) -> InputError {
        InputError {
            origin,
            cause: self,
        }
    }
}
