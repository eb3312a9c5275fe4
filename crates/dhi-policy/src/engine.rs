//! The engine: the policy file, the catalog and the mappings derived from them, and
//! every decision made with them. All of `impl Engine` is here.

use std::fmt;
use std::sync::Arc;

use crate::catalog::{Catalog, Snapshot};
use crate::context::Context;
use crate::decision::{Decision, Finding, PatchedBy, merge_warnings};
use crate::model::{Mode, Operation, Scope, Webhook};
use crate::policy_file::PolicyFile;
use crate::request::{ObjectSource, Request, RequestError};
use crate::rewrite::Equivalent;
use crate::rules::{self, Evaluation, Purpose};
use crate::spec::ObjectView;
use crate::workload::WorkloadKind;

/// The policy engine: a policy file, the catalog it extends, and the rewrite table.
#[derive(Debug, Clone)]
pub struct Engine {
    context: Context,
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
    /// status, binding, eviction, resize...
    Subresource(String),
    /// The mutating webhook patches pods on CREATE (and the debug containers
    /// `kubectl debug` adds); a pod's securityContext is immutable after that.
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

/// One webhook's answer to a request, with what the caller reports about it.
#[derive(Debug)]
pub struct Admission {
    /// The object's kind; `None` only for a DELETE or CONNECT of a kind we don't review.
    pub kind: Option<WorkloadKind>,
    /// The object's name: the request's, else `metadata.name`, else `generateName*`.
    pub name: String,
    /// The answer.
    pub decision: Decision,
}

/// A routed request whose objects are read.
struct Read<'a> {
    kind: WorkloadKind,
    name: String,
    scope: Scope,
    object: ObjectView<'a>,
    old_object: Option<ObjectView<'a>>,
}

impl Read<'_> {
    fn subject(&self) -> Subject<'_, '_> {
        Subject {
            kind: self.kind,
            object: &self.object,
            old_object: self.old_object.as_ref(),
            scope: self.scope,
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(PolicyFile::default())
    }
}

impl Engine {
    /// Builds the engine for a policy, with the compiled-in catalog snapshot.
    pub fn new(policy: PolicyFile) -> Self {
        Self::with_snapshot(policy, Snapshot::builtin())
    }

    /// Builds the engine for a policy and a catalog snapshot (one loaded from a file).
    pub fn with_snapshot(policy: PolicyFile, snapshot: Arc<Snapshot>) -> Self {
        Self {
            context: Context::new(policy, snapshot),
        }
    }

    /// The policy in force.
    pub fn policy_file(&self) -> &PolicyFile {
        &self.context.policy
    }

    /// The catalog in force.
    pub fn catalog(&self) -> &Catalog {
        &self.context.catalog
    }

    /// Requests in these namespaces are allowed untouched.
    pub fn is_exempt_namespace(&self, namespace: &str) -> bool {
        self.context.is_exempt_namespace(namespace)
    }

    /// What the catalog offers in place of an image, whether or not the webhook
    /// rewrites it: the migration fact `scan` and the audit report. The target is the
    /// one a rewrite would write (mappings, the policy's target template and tag
    /// transforms), and Docker Official Images count when the catalog has their name.
    pub fn equivalent(&self, image: &str) -> Equivalent {
        self.context.equivalent(image)
    }

    // === entry points ===

    /// One webhook's answer to an admission request: route, read, decide. The server
    /// calls this for every review.
    pub fn admit<'a, O: ObjectSource<'a>>(
        &self,
        webhook: Webhook,
        mode: Mode,
        request: Request<'a, O>,
    ) -> Result<Admission, RequestError> {
        let untouched = |kind, request: &Request<'a, O>| Admission {
            kind,
            name: request.name.as_deref().unwrap_or_default().to_owned(),
            decision: Decision::allowed_untouched(),
        };
        let operation = request.operation;
        if matches!(operation, Operation::Delete | Operation::Connect) {
            // Nothing to judge, whatever the kind (CONNECT carries PodExecOptions and the like).
            return Ok(untouched(request.kind.workload(), &request));
        }
        let kind = supported(&request)?;
        let scope = match self.route(webhook, &info(kind, &request)) {
            Route::Untouched(_) => return Ok(untouched(Some(kind), &request)),
            Route::Review(scope) => scope,
        };
        let read = read(kind, scope, request)?;
        let decision = self.review(&read.subject(), webhook, mode);
        Ok(Admission {
            kind: Some(kind),
            name: read.name,
            decision,
        })
    }

    /// Both webhooks' answers to a request, and the whole patch whoever applies it:
    /// what `check` reports. Routed, read and decided exactly as [`Engine::admit`].
    pub fn find<'a, O: ObjectSource<'a>>(
        &self,
        mode: Mode,
        request: Request<'a, O>,
    ) -> Result<Finding, RequestError> {
        let kind = supported(&request)?;
        let info = info(kind, &request);
        let scope = match self.route(Webhook::Validate, &info) {
            Route::Untouched(bypass) => return Ok(Finding::not_reviewed(bypass.to_string())),
            Route::Review(scope) => scope,
        };
        let mutate = matches!(self.route(Webhook::Mutate, &info), Route::Review(_));
        let read = read(kind, scope, request)?;
        let subject = read.subject();
        let validate = self.review(&subject, Webhook::Validate, mode);
        let mutation = if mutate {
            self.review(&subject, Webhook::Mutate, mode)
        } else {
            Decision::allowed_untouched()
        };
        let (patch, patched_by) = if unchanged(&subject) {
            // `review` admits it without judging, and then nothing is patched either.
            (Vec::new(), PatchedBy::None)
        } else {
            let patched_by = match (mutate, kind.is_template()) {
                (false, _) => PatchedBy::None,
                (true, true) if !self.context.policy.templates.mutate => PatchedBy::Pods,
                (true, _) => PatchedBy::Object,
            };
            (self.evaluate(&subject).patch, patched_by)
        };
        let violations = if validate.allowed {
            Vec::new()
        } else {
            validate.violations
        };
        Ok(Finding {
            allowed: validate.allowed && mutation.allowed,
            violations,
            warnings: merge_warnings(validate.warnings, mutation.warnings),
            patch,
            patched_by,
            not_reviewed: None,
        })
    }

    // === the pipeline's stages ===

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
        let scope = match request.sub_resource {
            None | Some("") => Scope::All,
            // `kubectl debug`: both webhooks, on the debug containers it adds.
            Some("ephemeralcontainers") => Scope::EphemeralOnly,
            Some(other) => return Route::Untouched(Bypass::Subresource(other.to_owned())),
        };
        if webhook == Webhook::Mutate
            && op == Operation::Update
            && request.kind == WorkloadKind::Pod
            && scope == Scope::All
        {
            return Route::Untouched(Bypass::PodUpdate);
        }
        Route::Review(scope)
    }

    /// Evaluation: plans the patch and judges an object, without mode or webhook.
    pub fn evaluate(&self, subject: &Subject<'_, '_>) -> Evaluation {
        self.evaluate_for(subject, Purpose::Patch)
    }

    fn evaluate_for(&self, subject: &Subject<'_, '_>, purpose: Purpose) -> Evaluation {
        let kind = subject.kind;
        // A pod before its UPDATE: `kubectl debug` adds ephemeral containers (only the new
        // ones are judged and patched), and an image switch cannot get a user any more.
        let old = match kind {
            WorkloadKind::Pod => subject.old_object.and_then(|o| kind.pod_spec(o)),
            _ => None,
        };
        match kind.pod_spec(subject.object) {
            Some(spec) => rules::evaluate(
                &self.context,
                spec,
                old,
                kind.spec_path(),
                subject.scope,
                purpose,
            ),
            None => Evaluation::default(),
        }
    }

    /// Decision: one webhook's answer in one mode.
    pub fn review(&self, subject: &Subject<'_, '_>, webhook: Webhook, mode: Mode) -> Decision {
        if unchanged(subject) {
            // Like Pod Security Admission: an UPDATE that leaves the pod spec as it was
            // (labels, scale, annotations) is not judged again, so an object admitted
            // under an older or audit policy can still be managed.
            return Decision::allowed_untouched();
        }
        match webhook {
            Webhook::Mutate => {
                let mutates = !subject.kind.is_template() || self.context.policy.templates.mutate;
                Decision::for_mutate(self.evaluate_for(subject, Purpose::Patch), mode, mutates)
            }
            Webhook::Validate => {
                Decision::for_validate(self.evaluate_for(subject, Purpose::Verdict), mode)
            }
        }
    }
}

/// An UPDATE that leaves the pod spec as it was, in every field: a changed env, volume or
/// resource rolls new pods too, so it is judged again (the views alone would miss it).
fn unchanged(subject: &Subject<'_, '_>) -> bool {
    let kind = subject.kind;
    subject.old_object.is_some_and(|old| {
        old.same_pod_spec_as_new
            .unwrap_or_else(|| kind.pod_spec(old) == kind.pod_spec(subject.object))
    })
}

/// The request's kind, if the engine reviews it.
fn supported<O>(request: &Request<'_, O>) -> Result<WorkloadKind, RequestError> {
    request
        .kind
        .workload()
        .ok_or_else(|| RequestError::UnsupportedKind {
            group: request.kind.group.to_string(),
            kind: request.kind.kind.to_string(),
        })
}

fn info<'r, O>(kind: WorkloadKind, request: &'r Request<'_, O>) -> RequestInfo<'r> {
    RequestInfo {
        kind,
        operation: request.operation,
        sub_resource: request.sub_resource.as_deref(),
        namespace: request.namespace.as_deref().unwrap_or(""),
    }
}

/// Decodes a routed request's objects (the old one only for UPDATE).
fn read<'a, O: ObjectSource<'a>>(
    kind: WorkloadKind,
    scope: Scope,
    request: Request<'a, O>,
) -> Result<Read<'a>, RequestError> {
    let operation = request.operation;
    let name = request.name.as_deref().unwrap_or_default();
    let Some(object) = request.object else {
        let name = name.to_owned();
        return Err(RequestError::NoObject {
            operation,
            kind,
            name,
        });
    };
    let unreadable = |source| RequestError::Unreadable {
        kind,
        name: name.to_owned(),
        source,
    };
    let old_object = match (operation, request.old_object) {
        (Operation::Update, Some(old)) => {
            let same = object.same_pod_spec(&old, kind.spec_path());
            let mut old = old.decode().map_err(unreadable)?;
            old.same_pod_spec_as_new = same;
            Some(old)
        }
        _ => None,
    };
    let object = object.decode().map_err(unreadable)?;
    // Controllers create pods with generateName: the request has no name yet.
    let meta = object.metadata.as_ref();
    let name = match (
        name,
        meta.and_then(|m| m.name.as_deref()),
        meta.and_then(|m| m.generate_name.as_deref()),
    ) {
        ("", Some(n), _) => n.to_owned(),
        ("", None, Some(prefix)) => format!("{prefix}*"),
        (n, ..) => n.to_owned(),
    };
    Ok(Read {
        kind,
        name,
        scope,
        object,
        old_object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(
        operation: Operation,
        sub_resource: Option<&'a str>,
        namespace: &'a str,
    ) -> RequestInfo<'a> {
        RequestInfo {
            kind: WorkloadKind::Pod,
            operation,
            sub_resource,
            namespace,
        }
    }

    #[test]
    fn equivalents_come_from_the_catalog_whether_or_not_the_webhook_rewrites() {
        let engine = Engine::new(PolicyFile::from_yaml("rewrite: {enabled: false}").unwrap());
        assert_eq!(engine.equivalent("dhi.io/nginx:1.29"), Equivalent::Hardened);
        assert_eq!(
            engine.equivalent("docker.io/istio/proxyv2:1.30.3-distroless"),
            Equivalent::Exact {
                target: "dhi.io/istio-proxyv2:1.30.3".to_owned()
            }
        );
        assert_eq!(
            engine.equivalent("example.com/team/app:1"),
            Equivalent::None
        );
        assert_eq!(engine.equivalent("auto"), Equivalent::NotAnImage);
        assert_eq!(engine.equivalent("Not An Image"), Equivalent::NotAnImage);
        let Equivalent::OtherTags {
            repository, tag, ..
        } = engine.equivalent("nginx:0.1")
        else {
            panic!("{:?}", engine.equivalent("nginx:0.1"));
        };
        assert_eq!((repository.as_str(), tag.as_str()), ("dhi.io/nginx", "0.1"));
    }

    #[test]
    fn routes() {
        let engine =
            Engine::new(PolicyFile::from_yaml("exempt: {namespaces: [kube-system]}").unwrap());
        let both = |request: &RequestInfo<'_>| {
            (
                engine.route(Webhook::Validate, request),
                engine.route(Webhook::Mutate, request),
            )
        };
        let review = Route::Review(Scope::All);
        let create = info(Operation::Create, None, "");
        assert_eq!(both(&create), (review.clone(), review.clone()));
        let exempt = Route::Untouched(Bypass::ExemptNamespace("kube-system".to_owned()));
        assert_eq!(
            both(&info(Operation::Create, None, "kube-system")),
            (exempt.clone(), exempt)
        );
        let update = info(Operation::Update, None, "");
        assert_eq!(
            both(&update),
            (review.clone(), Route::Untouched(Bypass::PodUpdate))
        );
        let deployment = RequestInfo {
            kind: WorkloadKind::Deployment,
            ..update
        };
        assert_eq!(both(&deployment), (review.clone(), review));
        let debug = info(Operation::Update, Some("ephemeralcontainers"), "");
        assert_eq!(
            both(&debug),
            (
                Route::Review(Scope::EphemeralOnly),
                Route::Review(Scope::EphemeralOnly)
            )
        );
        let status = Route::Untouched(Bypass::Subresource("status".to_owned()));
        assert_eq!(
            both(&info(Operation::Update, Some("status"), "")),
            (status.clone(), status)
        );
        let delete = Route::Untouched(Bypass::NoPodSpec(Operation::Delete));
        assert_eq!(
            both(&info(Operation::Delete, None, "")),
            (delete.clone(), delete)
        );
    }
}
