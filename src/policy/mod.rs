//! The one policy engine: for any object carrying a pod spec, the JSON Patch that makes
//! it run on Docker Hardened Images and whether it must be rejected.
//!
//! No HTTP here. The admission server, the `check` command and the tests all call
//! [`Engine::review`]; everything they decide comes from it.

pub mod catalog;
pub mod image_ref;
pub mod patch;
pub mod reference;
mod rewrite;
pub mod rules;
pub mod settings;
pub mod spec;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;

use json_patch::PatchOperation;

pub use catalog::Catalog;
use rules::Purpose;
pub use rules::{Evaluation, MutationKind, RuleId, SkipReason, Violation, Warning};
pub use settings::{Action, Mode, Settings};
pub use spec::ObjectView;
pub use workload::WorkloadKind;

/// kube-apiserver truncates longer warnings; the admission layer shortens them itself,
/// on a char boundary, marking the cut.
pub const MAX_WARNING_LEN: usize = 255;

/// Findings listed one by one in a denial, in warnings and in audit annotations; the
/// rest are counted. Bounds the answer to a hostile object with thousands of containers.
pub const MAX_LISTED: usize = 20;

/// Which webhook is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Webhook {
    /// Return the patch.
    Mutate,
    /// Return the verdict.
    Validate,
}

impl Webhook {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// Which containers a request may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The whole pod spec.
    #[default]
    All,
    /// Only ephemeral containers (the `pods/ephemeralcontainers` subresource, `kubectl debug`).
    EphemeralOnly,
}

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
}

impl Operation {
    /// As in the AdmissionReview; also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// What a request is, before its object is read: enough to route it.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'r> {
    /// The object's kind.
    pub kind: WorkloadKind,
    /// CREATE, UPDATE, ...
    pub operation: Operation,
    /// `ephemeralcontainers`, `status`, ... for subresource requests.
    pub sub_resource: Option<&'r str>,
    /// The request's namespace (empty for cluster-scoped requests).
    pub namespace: &'r str,
}

/// How a request is handled before any object is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Admitted as it is, without review.
    Untouched(Bypass),
    /// Reviewed, on these containers.
    Review(Scope),
}

/// Why a request is admitted without review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bypass {
    /// DELETE and CONNECT carry no new pod spec.
    NoPodSpec(Operation),
    /// The policy exempts the namespace.
    ExemptNamespace(String),
    /// status, binding, eviction, resize... (and `ephemeralcontainers` for the mutating
    /// webhook, which patches pods only as they are created).
    Subresource(String),
    /// The mutating webhook patches pods on CREATE; their securityContext is immutable.
    PodUpdate,
}

impl fmt::Display for Bypass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPodSpec(op) => write!(f, "{} requests carry no pod spec to judge", op.as_str()),
            Self::ExemptNamespace(ns) => write!(f, "namespace {ns} is exempt"),
            Self::Subresource(sub) => write!(f, "the {sub} subresource is not reviewed"),
            Self::PodUpdate => f.write_str("pods are patched when they are created, not on UPDATE"),
        }
    }
}

/// One object to review.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'o, 'a> {
    /// Its kind, which says where the pod spec is.
    pub kind: WorkloadKind,
    /// The object as submitted.
    pub object: &'o ObjectView<'a>,
    /// The object before an UPDATE.
    pub old_object: Option<&'o ObjectView<'a>>,
    /// Which containers to consider.
    pub scope: Scope,
}

/// The engine's answer for one object and one webhook.
#[derive(Debug, Default)]
pub struct Decision {
    /// Admit the object.
    pub allowed: bool,
    /// Operations to apply (empty in audit mode and for unmutated kinds).
    pub patch: Vec<PatchOperation>,
    /// What the patch changes.
    pub mutations: Vec<MutationKind>,
    /// Every `deny` rule that matched (reported as warnings in audit mode).
    pub violations: Vec<Violation>,
    /// Why rewrites were skipped, for metrics.
    pub skipped: Vec<SkipReason>,
    /// Messages for the client (the admission layer shortens them for kube-apiserver).
    pub warnings: Vec<String>,
    /// Audit-log annotations (audit mode).
    pub audit_annotations: BTreeMap<String, String>,
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

/// The policy engine: settings, catalog and the mappings derived from them.
#[derive(Debug, Clone)]
pub struct Engine {
    settings: Settings,
    catalog: Catalog,
    mappings: rewrite::MappingTable,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(Settings::default())
    }
}

impl Engine {
    /// Builds the engine for a policy.
    pub fn new(settings: Settings) -> Self {
        let catalog = Catalog::new(settings.catalog.clone());
        let mappings = rewrite::MappingTable::new(&settings);
        Self {
            settings,
            catalog,
            mappings,
        }
    }

    /// The policy in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The catalog in force.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Requests in these namespaces are allowed untouched.
    pub fn is_exempt_namespace(&self, namespace: &str) -> bool {
        self.settings
            .exempt
            .namespaces
            .iter()
            .any(|ns| ns == namespace)
    }

    /// Which requests a webhook reviews, and on which containers. Decided before the
    /// object is read, so requests that need no review cost no decoding.
    pub fn route(&self, webhook: Webhook, request: &RequestInfo<'_>) -> Route {
        let op = request.operation;
        if matches!(op, Operation::Delete | Operation::Connect) {
            return Route::Untouched(Bypass::NoPodSpec(op));
        }
        if self.is_exempt_namespace(request.namespace) {
            return Route::Untouched(Bypass::ExemptNamespace(request.namespace.to_owned()));
        }
        let scope = match (request.sub_resource, webhook) {
            (None | Some(""), _) => Scope::All,
            (Some("ephemeralcontainers"), Webhook::Validate) => Scope::EphemeralOnly,
            (Some(other), _) => return Route::Untouched(Bypass::Subresource(other.to_owned())),
        };
        if webhook == Webhook::Mutate
            && op == Operation::Update
            && request.kind == WorkloadKind::Pod
        {
            return Route::Untouched(Bypass::PodUpdate);
        }
        Route::Review(scope)
    }

    /// Plans and judges an object without applying mode or webhook: the raw findings.
    pub fn evaluate(&self, subject: &Subject<'_, '_>) -> Evaluation {
        self.evaluate_for(subject, Purpose::Patch)
    }

    fn evaluate_for(&self, subject: &Subject<'_, '_>, purpose: Purpose) -> Evaluation {
        match subject.kind.pod_spec(subject.object) {
            Some(spec) => {
                self.evaluate_spec(spec, subject.kind.spec_path(), subject.scope, purpose)
            }
            None => Evaluation::default(),
        }
    }

    /// The answer for one webhook in one mode.
    pub fn review(&self, subject: &Subject<'_, '_>, webhook: Webhook, mode: Mode) -> Decision {
        if let Some(old) = subject.old_object {
            // Like Pod Security Admission: an UPDATE that leaves the pod spec as it was
            // (labels, scale, annotations) is not judged again, so an object admitted
            // under an older or audit policy can still be managed.
            let kind = subject.kind;
            if kind.pod_spec(old) == kind.pod_spec(subject.object) {
                return Decision::allowed_untouched();
            }
        }
        match webhook {
            Webhook::Mutate => {
                let eval = self.evaluate_for(subject, Purpose::Patch);
                self.mutate_decision(subject.kind, eval, mode)
            }
            Webhook::Validate => {
                validate_decision(self.evaluate_for(subject, Purpose::Verdict), mode)
            }
        }
    }

    fn mutate_decision(&self, kind: WorkloadKind, eval: Evaluation, mode: Mode) -> Decision {
        let mutates = !kind.is_template() || self.settings.templates.mutate;
        let mut decision = Decision {
            allowed: true,
            ..Decision::default()
        };
        for w in &eval.warnings {
            if let Warning::RewriteSkipped { reason, .. } = w {
                decision.skipped.push(*reason);
                decision.warnings.push(w.to_string());
            }
        }
        if !mutates || eval.patch.is_empty() {
            return decision;
        }
        match mode {
            Mode::Enforce => {
                decision.patch = eval.patch;
                decision.mutations = eval.mutations;
            }
            Mode::Audit => {
                let planned = summarize(&eval.mutations);
                decision.warnings.push(format!(
                    "audit: dhi-admission would patch this object: {planned}"
                ));
                decision
                    .audit_annotations
                    .insert("planned-mutations".to_owned(), planned);
            }
        }
        decision
    }
}

fn validate_decision(eval: Evaluation, mode: Mode) -> Decision {
    let mut decision = Decision {
        allowed: mode == Mode::Audit || eval.violations.is_empty(),
        ..Decision::default()
    };
    if mode == Mode::Audit {
        for v in eval.violations.iter().take(MAX_LISTED) {
            decision.warnings.push(format!("audit: {v}"));
            let key = format!("violation.{}", v.rule);
            let entry = decision.audit_annotations.entry(key).or_default();
            if !entry.is_empty() {
                entry.push_str("; ");
            }
            entry.push_str(&format!("{} ({})", v.container, v.image));
        }
        if eval.violations.len() > MAX_LISTED {
            let more = eval.violations.len() - MAX_LISTED;
            decision
                .warnings
                .push(format!("audit: and {more} more violations"));
        }
    }
    for w in &eval.warnings {
        if !matches!(w, Warning::RewriteSkipped { .. }) {
            decision.warnings.push(w.to_string());
        }
    }
    decision.violations = eval.violations;
    decision
}

impl Decision {
    /// Admit without patch or findings.
    pub fn allowed_untouched() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    /// The `status.message` of a denial: every violation with its fix.
    pub fn denial_message(&self, kind: WorkloadKind, name: &str) -> String {
        let n = self.violations.len();
        let mut msg = format!(
            "{kind} {name} cannot run on Docker Hardened Images ({n} violation{}):",
            if n == 1 { "" } else { "s" }
        );
        for v in self.violations.iter().take(MAX_LISTED) {
            msg.push_str("\n- ");
            msg.push_str(&v.to_string());
        }
        if n > MAX_LISTED {
            msg.push_str(&format!("\n- and {} more", n - MAX_LISTED));
        }
        msg
    }
}

/// `image_rewrite x2, run_as_user x2`
fn summarize(mutations: &[MutationKind]) -> String {
    MutationKind::ALL
        .iter()
        .filter_map(|kind| {
            let n = mutations.iter().filter(|m| *m == kind).count();
            (n > 0).then(|| format!("{} x{n}", kind.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cuts a warning to [`MAX_WARNING_LEN`] bytes on a char boundary, marking the cut.
pub fn shorten(mut s: String) -> String {
    if s.len() > MAX_WARNING_LEN {
        let mut end = MAX_WARNING_LEN - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
