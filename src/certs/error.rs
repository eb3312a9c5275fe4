//! The error type of the certificate library.

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use std::fmt;

/// What went wrong while generating, reading, writing or publishing certificates.
///
/// Each variant names the thing it was working on (a file, a Secret, a webhook
/// configuration); the underlying cause, when there is one, is the error's
/// [`source`](std::error::Error::source), so `{:#}` in `anyhow` prints the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused to build or sign a certificate or a key.
    #[error("generating the {what}")]
    Generate {
        /// Which object was being generated (e.g. "CA certificate").
        what: &'static str,
        /// The rcgen failure.
        #[source]
        source: rcgen::Error,
    },
    /// A name given for the certificate is not a valid DNS name.
    #[error("{name:?} is not a valid DNS name for a certificate")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The requested validity period cannot be represented.
    #[error("invalid certificate validity: {0}")]
    InvalidValidity(ValidityProblem),
    /// PEM or certificate data could not be parsed.
    #[error("parsing {what}: {problem}")]
    Parse {
        /// What was being parsed (a file name, a Secret key, ...).
        what: String,
        /// Why it failed.
        problem: ParseProblem,
    },
    /// A file-system operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("writing", "creating directory", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// Only one of a certificate/key pair exists, so a development pair cannot be
    /// generated without overwriting the existing half.
    #[error(
        "{} exists but {} does not: remove it or provide both files",
        present.display(),
        missing.display()
    )]
    IncompletePair {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// No Kubernetes client could be built.
    #[error(transparent)]
    Client(#[from] crate::kube_client::ClientError),
    /// A Kubernetes API call failed.
    #[error("{action} {resource}")]
    Kube {
        /// The verb ("reading", "creating", "patching", ...).
        action: &'static str,
        /// The object, e.g. `Secret dhi/dhi-admission-tls`.
        resource: String,
        /// The client or API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused a call for lack of permissions.
    #[error(
        "{action} {resource} is forbidden: the service account lacks the RBAC listed in the \
         `dhi_admission::certs` documentation ({message})"
    )]
    Forbidden {
        /// The verb that was refused.
        action: &'static str,
        /// The object concerned.
        resource: String,
        /// The API server's message.
        message: String,
    },
    /// A webhook configuration to patch does not exist.
    #[error(
        "{kind} {name:?} not found: install the webhook configurations first \
         (certs bootstrap and certs arm patch them, never create them)"
    )]
    WebhookConfigNotFound {
        /// `MutatingWebhookConfiguration` or `ValidatingWebhookConfiguration`.
        kind: &'static str,
        /// The name looked up.
        name: String,
    },
    /// The Secret needs new material but is marked immutable.
    #[error(
        "{resource} must be renewed ({reason}) but is immutable: delete it to let the bootstrap recreate it"
    )]
    ImmutableSecret {
        /// The Secret concerned.
        resource: String,
        /// Why it needs renewing.
        reason: RenewReason,
    },
    /// A freshly generated certificate failed the checks applied to existing ones.
    #[error("the freshly generated certificate fails its own check: {0}")]
    SelfCheck(RenewReason),
    /// Concurrent writers kept winning; the bootstrap gave up.
    #[error("{resource} kept changing under us: gave up after {attempts} attempts")]
    TooManyConflicts {
        /// The object concerned.
        resource: String,
        /// How many read-modify-write rounds were tried.
        attempts: u32,
    },
}

impl CertError {
    /// Wraps a Kubernetes client error, turning a 403 into [`CertError::Forbidden`].
    pub(crate) fn kube(
        action: &'static str,
        resource: impl Into<String>,
        err: kube::Error,
    ) -> Self {
        let resource = resource.into();
        match &err {
            kube::Error::Api(status) if status.is_forbidden() => CertError::Forbidden {
                action,
                resource,
                message: status.message.clone(),
            },
            _ => CertError::Kube {
                action,
                resource,
                source: Box::new(err),
            },
        }
    }

    pub(crate) fn parse(what: impl Into<String>, problem: impl Into<ParseProblem>) -> Self {
        CertError::Parse {
            what: what.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        CertError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Why a validity period was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValidityProblem {
    /// A zero lifetime.
    #[error("{0:?}: must be positive")]
    NotPositive(Duration),
    /// A lifetime past what a certificate date can hold.
    #[error("{0:?}: too long")]
    TooLong(Duration),
    /// An explicit window that ends before it starts.
    #[error("not_after {not_after} is not after not_before {not_before}")]
    Inverted {
        /// Start of the window.
        not_before: OffsetDateTime,
        /// End of the window.
        not_after: OffsetDateTime,
    },
}

/// Why PEM, a certificate, JSON or an annotation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseProblem {
    /// Not PEM.
    #[error("{0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// Not an X.509 certificate.
    #[error("{0}")]
    X509(#[from] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// Not JSON of the expected shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// PEM without a certificate in it.
    #[error("no CERTIFICATE block")]
    NoCertificate,
    /// A `dhi.io/failure-policy` annotation that does not parse.
    #[error("{0}")]
    Intent(#[from] IntentError),
    /// A `dhi.io/failure-policy` annotation naming an entry the configuration lacks.
    #[error("it names {0:?}, which is not an entry")]
    UnknownEntry(String),
}

/// Why a `dhi.io/failure-policy` annotation value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    /// A value other than `Fail` or `Ignore`.
    #[error("{0:?} is not a failurePolicy (Fail or Ignore)")]
    NotAPolicy(String),
    /// An item without `=`.
    #[error("{0:?} is not <webhook name>=<Fail|Ignore>")]
    NotAPair(String),
    /// An item with an empty name.
    #[error("{0:?} names no webhook")]
    NoName(String),
    /// The same entry twice.
    #[error("webhook {0:?} is named twice")]
    Twice(String),
}

/// Why existing serving material is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReason {
    /// There is no material at all.
    Missing,
    /// One of the Secret keys is absent or not UTF-8.
    MissingKey(&'static str),
    /// A PEM text or certificate does not parse.
    Unparseable(String),
    /// The key does not belong to the leaf certificate.
    KeyMismatch,
    /// The chain does not verify against the CA bundle.
    Untrusted(String),
    /// The leaf does not cover the name the API server connects to.
    NameNotCovered(String),
    /// The leaf has expired or is not yet valid.
    Expired,
    /// The leaf is past two thirds of its validity.
    DueForRenewal {
        /// When two thirds of the validity were reached (Unix seconds).
        renew_at: i64,
        /// When it expires (Unix seconds).
        not_after: i64,
    },
}

impl fmt::Display for RenewReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewReason::Missing => write!(f, "no certificate yet"),
            RenewReason::MissingKey(key) => write!(f, "key {key} is missing or not UTF-8"),
            RenewReason::Unparseable(why) => write!(f, "unparseable: {why}"),
            RenewReason::KeyMismatch => write!(f, "tls.key does not match tls.crt"),
            RenewReason::Untrusted(why) => {
                write!(f, "tls.crt does not verify against ca.crt: {why}")
            }
            RenewReason::NameNotCovered(name) => write!(f, "tls.crt does not cover {name}"),
            RenewReason::Expired => write!(f, "tls.crt is expired or not yet valid"),
            RenewReason::DueForRenewal {
                renew_at,
                not_after,
            } => write!(
                f,
                "tls.crt passed two thirds of its validity at {renew_at} (expires at {not_after})"
            ),
        }
    }
}
