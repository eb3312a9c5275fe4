//! The `deploy/` tree, checked without a cluster.
//!
//! - Every manifest parses into its `k8s-openapi` type, and serialising it back gives the
//!   same document: a misspelt or misplaced field (which `kubectl apply` would reject or,
//!   worse, silently drop) fails here.
//! - Every overlay's committed render (`deploy/rendered/`, checked against
//!   `kubectl kustomize` where kubectl is installed) is checked for what
//!   the installation promises: webhook settings and routing, the Deployment's
//!   availability and security settings, least-privilege RBAC, cert-manager wiring, the
//!   monitoring add-on.
//! - The project's own policy engine admits the webhook's Deployment without a patch, and
//!   gives the documented verdicts on `deploy/examples/`.
//!
//! Run alone with `cargo test --test deploy_manifests`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dhi_admission::config::Limits;
use dhi_admission::install::{FAILURE_POLICY_ANNOTATION, FailurePolicy, Intended};
use dhi_policy::{
    Action, Engine, Mode, PolicyFile, RuleId, Scope, SkipReason, Subject, Webhook, WorkloadKind,
    catalog, decode_object,
};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The product image every container of the webhook's own pods runs.
const IMAGE: &str = "ghcr.io/dhi-admission/dhi-admission:0.1.0";
/// A hardened static runtime image, to judge the Deployment as if it ran on one.
const HARDENED_STAND_IN: &str = "dhi.io/static:20250419-debian13";
const NAMESPACE: &str = "dhi-system";
const NAME: &str = "dhi-admission";
const TLS_SECRET: &str = "dhi-admission-tls";
const NONROOT: i64 = 65532;

/// Every metric the server exports (histograms also as `_bucket`, `_sum`, `_count`).
const METRICS: &[&str] = &[
    "dhi_admission_requests_total",
    "dhi_admission_request_duration_seconds",
    "dhi_admission_violations_total",
    "dhi_admission_mutations_total",
    "dhi_admission_rewrites_skipped_total",
    "dhi_admission_reloads_total",
    "dhi_admission_reload_last_success_timestamp_seconds",
    "dhi_admission_tls_cert_expiry_timestamp_seconds",
    "dhi_admission_build_info",
    "dhi_admission_requests_shed_total",
    "dhi_admission_connections_closed_total",
    "dhi_admission_connections",
    "dhi_admission_catalog_info",
];

/// The install overlays and what each promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlay {
    /// `deploy/base` alone: fail-open everywhere.
    Base,
    Enforce,
    Audit,
    CertManager,
}

impl Overlay {
    const ALL: [Self; 4] = [Self::Base, Self::Enforce, Self::Audit, Self::CertManager];

    fn dir(self) -> PathBuf {
        deploy().join(match self {
            Self::Base => "base",
            Self::Enforce => "overlays/enforce",
            Self::Audit => "overlays/audit",
            Self::CertManager => "overlays/cert-manager",
        })
    }

    /// (intended failurePolicy, path) of each webhook entry. Every entry is installed
    /// with Ignore; the intended one is in the dhi.io/failure-policy annotation.
    fn entry(self, name: &str) -> (FailurePolicy, String) {
        let audit_entry = name.contains("-audit.");
        let warn_entry = name.contains("-warn.");
        let prefix = if name.starts_with("mutate") {
            "/mutate"
        } else {
            "/validate"
        };
        let path = if audit_entry || self == Self::Audit {
            format!("{prefix}/audit")
        } else if warn_entry {
            format!("{prefix}/warn")
        } else {
            prefix.to_owned()
        };
        let fail = matches!(self, Self::Enforce | Self::CertManager) && !audit_entry && !warn_entry;
        let intended = if fail {
            FailurePolicy::Fail
        } else {
            FailurePolicy::Ignore
        };
        (intended, path)
    }

    fn bootstrap(self) -> bool {
        self != Self::CertManager
    }
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every document of a (multi-document) YAML file.
fn yaml_docs(text: &str, origin: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

// === typed parsing ===

/// Parses `doc` as `T` and serialises it back: any field the typed model does not know
/// (a typo, a field at the wrong level) or reads differently shows up as a difference.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, origin: &str) -> T {
    let value: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{origin}: {e}"));
    let back = serde_json::to_value(&value).unwrap();
    let mut diffs = Vec::new();
    diff("", doc, &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{origin}: the {} model does not round-trip these fields (misspelt or misplaced?):\n  {}",
        std::any::type_name::<T>(),
        diffs.join("\n  ")
    );
    value
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}/{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p}: {x} is dropped")),
                    (None, Some(y)) => out.push(format!("{p}: {y} appears")),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}/{i}"), x, y, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} becomes {b}")),
    }
}

/// Third-party kinds: no typed model here, but they must say what they are.
const CRD_KINDS: &[(&str, &str)] = &[
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
];

/// Checks one Kubernetes object against its type; returns its `apiVersion/kind`.
fn check_object(doc: &Value, origin: &str) -> String {
    let api_version =
        str_at(doc, "/apiVersion").unwrap_or_else(|| panic!("{origin}: no apiVersion"));
    let kind = str_at(doc, "/kind").unwrap_or_else(|| panic!("{origin}: no kind"));
    let origin = format!("{origin} ({kind})");
    let origin = origin.as_str();
    match (api_version, kind) {
        ("v1", "Namespace") => drop(typed::<Namespace>(doc, origin)),
        ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(doc, origin)),
        ("v1", "ConfigMap") => drop(typed::<ConfigMap>(doc, origin)),
        ("v1", "Service") => drop(typed::<Service>(doc, origin)),
        ("v1", "Pod") => drop(typed::<Pod>(doc, origin)),
        ("apps/v1", "Deployment") => drop(typed::<Deployment>(doc, origin)),
        ("apps/v1", "DaemonSet") => drop(typed::<DaemonSet>(doc, origin)),
        ("batch/v1", "CronJob") => drop(typed::<CronJob>(doc, origin)),
        ("policy/v1", "PodDisruptionBudget") => drop(typed::<PodDisruptionBudget>(doc, origin)),
        ("networking.k8s.io/v1", "NetworkPolicy") => drop(typed::<NetworkPolicy>(doc, origin)),
        ("rbac.authorization.k8s.io/v1", "Role") => drop(typed::<Role>(doc, origin)),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(typed::<RoleBinding>(doc, origin)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(typed::<ClusterRole>(doc, origin)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            drop(typed::<ClusterRoleBinding>(doc, origin))
        }
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            drop(typed::<MutatingWebhookConfiguration>(doc, origin))
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            drop(typed::<ValidatingWebhookConfiguration>(doc, origin))
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            drop(typed::<
                k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
            >(doc, origin))
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            drop(typed::<
                k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
            >(doc, origin))
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => drop(typed::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(doc, origin)),
        (av, k) if CRD_KINDS.contains(&(av, k)) => {
            assert!(
                str_at(doc, "/metadata/name").is_some(),
                "{origin}: no metadata.name"
            );
            assert!(
                doc.get("spec").is_some_and(Value::is_object),
                "{origin}: no spec"
            );
        }
        (av, k) => {
            panic!("{origin}: {av}/{k} is not a kind this test knows; add it to check_object")
        }
    }
    format!("{api_version}/{kind}")
}

// === renders ===
//
// The overlays as `kubectl kustomize` renders them are committed under deploy/rendered/
// (`deploy/render.sh` writes them): reviewable in a diff, and read here without
// kustomize. `renders_are_current` checks them against kubectl wherever it is installed;
// CI requires it.

fn kustomization(dir: &Path) -> Value {
    let path = dir.join("kustomization.yaml");
    let origin = rel(&path);
    let mut docs = yaml_docs(&read(&path), &origin);
    assert_eq!(docs.len(), 1, "{origin}: one document");
    let k = docs.remove(0);
    assert_eq!(
        str_at(&k, "/apiVersion"),
        Some("kustomize.config.k8s.io/v1beta1"),
        "{origin}"
    );
    assert_eq!(str_at(&k, "/kind"), Some("Kustomization"), "{origin}");
    k
}

fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The committed render of a kustomization directory (`deploy/base`, `deploy/overlays/x`).
fn render(dir: &Path) -> Vec<Value> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("directory name");
    let path = deploy().join("rendered").join(format!("{name}.yaml"));
    assert!(
        path.exists(),
        "{} is missing: run deploy/render.sh",
        rel(&path)
    );
    let objects = yaml_docs(&read(&path), &rel(&path));
    // kustomize refuses two objects with one identity.
    let mut ids = BTreeSet::new();
    for o in &objects {
        assert!(
            ids.insert(identity(o)),
            "{}: {:?} twice",
            rel(&path),
            identity(o)
        );
    }
    objects
}

fn identity(o: &Value) -> (String, String, String, String) {
    let s = |p| str_at(o, p).unwrap_or_default().to_owned();
    (
        api_group(&s("/apiVersion")).to_owned(),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

/// `kubectl kustomize`, when kubectl is installed. A kubectl that cannot run kustomize
/// at all counts as absent; one that refuses an overlay fails.
fn kubectl_kustomize(dir: &Path) -> Option<Vec<Value>> {
    let probe = Command::new("kubectl")
        .args(["kustomize", "--help"])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        rel(dir),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(yaml_docs(&text, &format!("kubectl kustomize {}", rel(dir))))
}

fn by_identity(objects: &[Value]) -> BTreeMap<(String, String, String, String), &Value> {
    objects.iter().map(|o| (identity(o), o)).collect()
}

// === finding things in a rendering ===

struct Rendered {
    overlay: Overlay,
    objects: Vec<Value>,
}

impl Rendered {
    fn new(overlay: Overlay) -> Self {
        Self {
            overlay,
            objects: render(&overlay.dir()),
        }
    }

    fn all<T: DeserializeOwned + Serialize>(&self, kind: &str) -> Vec<T> {
        self.objects
            .iter()
            .filter(|o| str_at(o, "/kind") == Some(kind))
            .map(|o| typed(o, &format!("{:?} {kind}", self.overlay)))
            .collect()
    }

    fn one<T: DeserializeOwned + Serialize>(&self, kind: &str, name: &str) -> T {
        let found: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| {
                str_at(o, "/kind") == Some(kind) && str_at(o, "/metadata/name") == Some(name)
            })
            .collect();
        assert_eq!(found.len(), 1, "{:?}: one {kind} {name}", self.overlay);
        typed(found[0], &format!("{:?} {kind} {name}", self.overlay))
    }

    fn raw(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| str_at(o, "/kind") == Some(kind) && str_at(o, "/metadata/name") == Some(name))
            .unwrap_or_else(|| panic!("{:?}: no {kind} {name}", self.overlay))
    }
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        let value = labels.get(&r.key);
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            op => panic!("unknown selector operator {op}"),
        }
    });
    by_labels && by_expressions
}

/// `--name value` or `--name=value`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut found = None;
    for (i, a) in args.iter().enumerate() {
        if a == name {
            found = args.get(i + 1).map(String::as_str);
        } else if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v);
        }
    }
    found
}

fn port_of(listen: &str) -> i32 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

// === webhook configurations ===

/// The fields both webhook kinds share.
struct Entry {
    name: String,
    review_versions: Vec<String>,
    side_effects: String,
    timeout: Option<i32>,
    match_policy: Option<String>,
    failure_policy: Option<String>,
    reinvocation: Option<String>,
    client: WebhookClientConfig,
    namespaces: Option<LabelSelector>,
    objects: Option<LabelSelector>,
    rules: Vec<RuleWithOperations>,
}

fn mutating_entries(c: &MutatingWebhookConfiguration) -> Vec<Entry> {
    c.webhooks.iter().flatten().map(entry).collect()
}

/// A validating webhook has the fields of a mutating one but `reinvocationPolicy`, so
/// it reads as one.
fn validating_entries(c: &ValidatingWebhookConfiguration) -> Vec<Entry> {
    c.webhooks
        .iter()
        .flatten()
        .map(|w| entry(&serde_json::from_value(serde_json::to_value(w).unwrap()).unwrap()))
        .collect()
}

fn entry(w: &MutatingWebhook) -> Entry {
    Entry {
        name: w.name.clone(),
        review_versions: w.admission_review_versions.clone(),
        side_effects: w.side_effects.clone(),
        timeout: w.timeout_seconds,
        match_policy: w.match_policy.clone(),
        failure_policy: w.failure_policy.clone(),
        reinvocation: w.reinvocation_policy.clone(),
        client: w.client_config.clone(),
        namespaces: w.namespace_selector.clone(),
        objects: w.object_selector.clone(),
        rules: w.rules.clone().unwrap_or_default(),
    }
}

/// Where each kind the engine understands is served.
fn resource_of(kind: WorkloadKind) -> (&'static str, &'static str) {
    match kind {
        WorkloadKind::Pod => ("", "pods"),
        WorkloadKind::PodTemplate => ("", "podtemplates"),
        WorkloadKind::ReplicationController => ("", "replicationcontrollers"),
        WorkloadKind::Deployment => ("apps", "deployments"),
        WorkloadKind::StatefulSet => ("apps", "statefulsets"),
        WorkloadKind::DaemonSet => ("apps", "daemonsets"),
        WorkloadKind::ReplicaSet => ("apps", "replicasets"),
        WorkloadKind::Job => ("batch", "jobs"),
        WorkloadKind::CronJob => ("batch", "cronjobs"),
    }
}

/// (group, resource, operation) triples a list of rules sends to the webhook.
fn coverage(entry: &Entry) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in &entry.rules {
        assert_eq!(
            r.api_versions.as_deref(),
            Some(&["v1".to_owned()][..]),
            "{}: apiVersions [v1]",
            entry.name
        );
        assert_eq!(
            r.scope.as_deref(),
            Some("Namespaced"),
            "{}: scope",
            entry.name
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for op in r.operations.iter().flatten() {
                    for s in [g, res, op] {
                        assert!(!s.contains('*'), "{}: no wildcards in rules", entry.name);
                    }
                    out.insert((g.clone(), res.clone(), op.clone()));
                }
            }
        }
    }
    out
}

fn triples(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(g, r, o)| ((*g).to_owned(), (*r).to_owned(), (*o).to_owned()))
        .collect()
}

fn check_webhooks(r: &Rendered) {
    let overlay = r.overlay;
    let mutating: MutatingWebhookConfiguration = r.one("MutatingWebhookConfiguration", NAME);
    let validating: ValidatingWebhookConfiguration = r.one("ValidatingWebhookConfiguration", NAME);
    let service: Service = r.one("Service", NAME);
    let namespace: Namespace = r.one("Namespace", NAMESPACE);

    let expected_mutating = triples(&[
        ("", "pods", "CREATE"),
        ("", "pods/ephemeralcontainers", "UPDATE"),
    ]);
    let mut expected_validating = triples(&[("", "pods/ephemeralcontainers", "UPDATE")]);
    for kind in WorkloadKind::ALL {
        let (group, resource) = resource_of(kind);
        expected_validating.extend(triples(&[
            (group, resource, "CREATE"),
            (group, resource, "UPDATE"),
        ]));
    }

    // Namespaces as the API server labels them (it adds kubernetes.io/metadata.name).
    let ns = |name: &str, extra: &[(&str, &str)]| {
        let mut labels: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.insert("kubernetes.io/metadata.name".to_owned(), name.to_owned());
        (name.to_owned(), labels)
    };
    let mut own = namespace.metadata.labels.clone().unwrap_or_default();
    own.insert(
        "kubernetes.io/metadata.name".to_owned(),
        NAMESPACE.to_owned(),
    );
    let namespaces = [
        (ns("default", &[]), "enforce"),
        (ns("team-a", &[("dhi.io/mode", "enforce")]), "enforce"),
        (ns("staging", &[("dhi.io/mode", "audit")]), "audit"),
        (ns("dev", &[("dhi.io/mode", "warn")]), "warn"),
        (ns("legacy", &[("dhi.io/mode", "off")]), "none"),
        (ns("kube-system", &[]), "none"),
        // Excluded by name even without the label, and by the label it carries.
        (ns(NAMESPACE, &[]), "none"),
        ((NAMESPACE.to_owned(), own), "none"),
    ];

    let mut names = BTreeSet::new();
    for (kind, entries, expected_rules, annotations) in [
        (
            "mutating",
            mutating_entries(&mutating),
            &expected_mutating,
            &mutating.metadata.annotations,
        ),
        (
            "validating",
            validating_entries(&validating),
            &expected_validating,
            &validating.metadata.annotations,
        ),
    ] {
        // The intended failure policies, which `certs arm` carries out.
        let intended: Intended = annotations
            .as_ref()
            .and_then(|a| a.get(FAILURE_POLICY_ANNOTATION))
            .unwrap_or_else(|| panic!("{overlay:?} {kind}: no {FAILURE_POLICY_ANNOTATION}"))
            .parse()
            .unwrap_or_else(|e| panic!("{overlay:?} {kind}: {e}"));
        let expected_intent: Vec<(&str, FailurePolicy)> = {
            let mut v: Vec<_> = entries
                .iter()
                .map(|e| (e.name.as_str(), overlay.entry(&e.name).0))
                .collect();
            v.sort_by_key(|(name, _)| *name);
            v
        };
        assert_eq!(
            intended.entries().collect::<Vec<_>>(),
            expected_intent,
            "{overlay:?} {kind}: {FAILURE_POLICY_ANNOTATION} names every entry with its intended policy"
        );
        let entry_names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let prefix = if kind == "mutating" {
            "mutate"
        } else {
            "validate"
        };
        assert_eq!(
            entry_names,
            [
                format!("{prefix}.dhi.io"),
                format!("{prefix}-audit.dhi.io"),
                format!("{prefix}-warn.dhi.io")
            ],
            "{overlay:?}: {kind} entries"
        );
        for e in &entries {
            let who = format!("{overlay:?} {kind} {}", e.name);
            assert!(names.insert(e.name.clone()), "{who}: names must be unique");
            assert_eq!(e.review_versions, ["v1"], "{who}: admissionReviewVersions");
            assert_eq!(e.side_effects, "None", "{who}: sideEffects");
            let timeout = e
                .timeout
                .unwrap_or_else(|| panic!("{who}: timeoutSeconds must be set (default 10)"));
            assert_eq!(timeout, 2, "{who}: timeoutSeconds");
            assert_eq!(
                e.match_policy.as_deref(),
                Some("Equivalent"),
                "{who}: matchPolicy"
            );
            if kind == "mutating" {
                assert_eq!(
                    e.reinvocation.as_deref(),
                    Some("IfNeeded"),
                    "{who}: reinvocationPolicy"
                );
            }
            assert!(
                e.objects.is_none(),
                "{who}: no objectSelector (pods could opt out by label)"
            );
            assert_eq!(&coverage(e), expected_rules, "{who}: rules");

            let (_, path) = overlay.entry(&e.name);
            assert_eq!(
                e.failure_policy.as_deref(),
                Some("Ignore"),
                "{who}: installed fail-open; `certs arm` sets Fail once a replica is ready"
            );
            assert!(e.client.url.is_none(), "{who}: call the Service, not a URL");
            // Injected by bootstrap or cert-manager; a stale one in Git would break TLS.
            assert!(
                e.client.ca_bundle.is_none(),
                "{who}: caBundle must be left out"
            );
            let svc = e
                .client
                .service
                .as_ref()
                .unwrap_or_else(|| panic!("{who}: service"));
            assert_eq!(svc.namespace, NAMESPACE, "{who}");
            assert_eq!(svc.name, service.metadata.name.clone().unwrap(), "{who}");
            assert_eq!(svc.path.as_deref(), Some(path.as_str()), "{who}: path");
            let port = svc.port.unwrap_or(443);
            let service_port = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .and_then(|ps| ps.iter().find(|p| p.port == port))
                .unwrap_or_else(|| panic!("{who}: Service has no port {port}"));
            assert_eq!(
                service_port.target_port,
                Some(IntOrString::String("https".to_owned())),
                "{who}: Service port {port} must lead to the container's https port"
            );

            // Routing: which namespaces this entry sees.
            let selector = e
                .namespaces
                .clone()
                .unwrap_or_else(|| panic!("{who}: namespaceSelector"));
            let audit_entry = e.name.contains("-audit.");
            let warn_entry = e.name.contains("-warn.");
            for ((ns_name, labels), route) in &namespaces {
                let expected = match *route {
                    "enforce" => !audit_entry && !warn_entry,
                    "audit" => audit_entry,
                    "warn" => warn_entry,
                    _ => false,
                };
                assert_eq!(
                    selector_matches(&selector, labels),
                    expected,
                    "{who}: namespace {ns_name} {labels:?} should be routed to {route}"
                );
            }
        }
    }

    // cert-manager's CA injector fills caBundle from the serving Certificate.
    let injected = |annotations: &Option<BTreeMap<String, String>>| {
        annotations
            .as_ref()
            .and_then(|a| a.get("cert-manager.io/inject-ca-from"))
            .cloned()
    };
    for annotations in [
        &mutating.metadata.annotations,
        &validating.metadata.annotations,
    ] {
        match overlay {
            Overlay::CertManager => {
                assert_eq!(
                    injected(annotations).as_deref(),
                    Some("dhi-system/dhi-admission")
                )
            }
            _ => assert_eq!(
                injected(annotations),
                None,
                "{overlay:?}: CA is patched by bootstrap"
            ),
        }
    }
}

// === the webhook's own pods ===

fn server_container(spec: &PodSpec) -> &Container {
    let containers = &spec.containers;
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [NAME, "failure-policy"],
        "the server, then the failure-policy container"
    );
    &containers[0]
}

fn mount_dir<'c>(c: &'c Container, volume: &str) -> &'c str {
    c.volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume)
        .map(|m| m.mount_path.as_str())
        .unwrap_or_else(|| panic!("container {} does not mount {volume}", c.name))
}

fn check_container_security(c: &Container, who: &str) {
    assert_eq!(c.image.as_deref(), Some(IMAGE), "{who}: image");
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{who}: securityContext"));
    assert_eq!(sc.run_as_user, Some(NONROOT), "{who}: runAsUser");
    assert_eq!(sc.run_as_group, Some(NONROOT), "{who}: runAsGroup");
    assert_eq!(sc.run_as_non_root, Some(true), "{who}: runAsNonRoot");
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{who}: readOnlyRootFilesystem"
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{who}: allowPrivilegeEscalation"
    );
    assert_ne!(sc.privileged, Some(true), "{who}: privileged");
    let caps = sc
        .capabilities
        .as_ref()
        .unwrap_or_else(|| panic!("{who}: capabilities"));
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{who}: drop ALL"
    );
    assert!(
        caps.add.as_ref().is_none_or(Vec::is_empty),
        "{who}: no added capabilities"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{who}: seccompProfile"
    );
    let res = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{who}: resources"));
    let requests = res
        .requests
        .as_ref()
        .unwrap_or_else(|| panic!("{who}: requests"));
    assert!(
        requests.contains_key("cpu") && requests.contains_key("memory"),
        "{who}: requests"
    );
    assert!(
        res.limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory")),
        "{who}: memory limit"
    );
}

fn check_deployment(r: &Rendered) {
    let overlay = r.overlay;
    let d: Deployment = r.one("Deployment", NAME);
    assert_eq!(d.metadata.namespace.as_deref(), Some(NAMESPACE));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "{overlay:?}: two replicas");
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    assert_eq!(
        rolling.and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::Int(0)),
        "{overlay:?}: rollouts must not drop below two replicas"
    );
    let template = &spec.template;
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert!(
        selector_matches(&spec.selector, &labels),
        "selector matches the pods"
    );
    let pod = template.spec.as_ref().unwrap();

    // Availability.
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    let spread = pod
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    let constraint = |key: &str| {
        spread
            .iter()
            .find(|c| c.topology_key == key)
            .unwrap_or_else(|| panic!("{overlay:?}: no topology spread over {key}"))
    };
    let zone = constraint("topology.kubernetes.io/zone");
    assert_eq!(
        zone.when_unsatisfiable, "ScheduleAnyway",
        "zones are a preference"
    );
    constraint("kubernetes.io/hostname");
    for c in spread {
        assert!(
            c.label_selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, &labels)),
            "{}: spread selector must match the pods",
            c.topology_key
        );
    }
    let pdb: PodDisruptionBudget = r.one("PodDisruptionBudget", NAME);
    let pdb = pdb.spec.unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert!(
        selector_matches(pdb.selector.as_ref().unwrap(), &labels),
        "PDB selects the pods"
    );

    // Pod security.
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "no token for the server"
    );
    assert_eq!(pod.service_account_name.as_deref(), Some(NAME));
    let sa: ServiceAccount = r.one("ServiceAccount", NAME);
    assert_eq!(sa.automount_service_account_token, Some(false));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_user, Some(NONROOT));
    assert_eq!(psc.run_as_group, Some(NONROOT));
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.fs_group, Some(NONROOT));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        check_container_security(c, &format!("{overlay:?} container {}", c.name));
    }
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let volume = |name: &str| volumes.iter().find(|v| v.name == name);
    // Only the init and failure-policy containers may hold API credentials.
    let token_volumes: Vec<&str> = volumes
        .iter()
        .filter(|v| {
            v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.service_account_token.is_some())
            })
        })
        .map(|v| v.name.as_str())
        .collect();

    // The failure-policy container: `certs arm` for our Service and configurations, with
    // the one token volume; every overlay has it (cert-manager's included).
    let arm = &pod.containers[1];
    let arm_args = arm.args.clone().unwrap_or_default();
    assert_eq!(&arm_args[..2], ["certs", "arm"], "{arm_args:?}");
    assert_eq!(flag(&arm_args, "--namespace"), Some(NAMESPACE));
    assert_eq!(flag(&arm_args, "--service"), Some(NAME));
    assert_eq!(flag(&arm_args, "--webhook-config"), Some(NAME));
    assert!(!arm_args.iter().any(|a| a == "--once"), "it keeps running");
    assert_eq!(
        token_volumes.len(),
        1,
        "{overlay:?}: one projected token volume"
    );
    assert_eq!(
        mount_dir(arm, token_volumes[0]),
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let arm_mounts: Vec<&str> = arm
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(arm_mounts, [token_volumes[0]], "the token, nothing else");

    // The server.
    let server = server_container(pod);
    let args = server.args.clone().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "{overlay:?}: server args {args:?}"
    );
    let ports: BTreeMap<&str, i32> = server
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(ports, BTreeMap::from([("https", 8443), ("metrics", 9090)]));
    assert_eq!(port_of(flag(&args, "--listen").expect("--listen")), 8443);
    assert_eq!(
        port_of(flag(&args, "--metrics-listen").expect("--metrics-listen")),
        9090
    );
    assert_eq!(flag(&args, "--log-format"), Some("json"));
    let expected_mode = if overlay == Overlay::Audit {
        Some("audit")
    } else {
        None
    };
    assert_eq!(flag(&args, "--mode"), expected_mode, "{overlay:?}: --mode");
    for (probe, path) in [
        (&server.readiness_probe, "/readyz"),
        (&server.liveness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("HTTP probes");
        assert_eq!(get.path.as_deref(), Some(path));
        let port = match &get.port {
            IntOrString::Int(p) => *p,
            IntOrString::String(name) => ports[name.as_str()],
        };
        assert_eq!(port, 9090, "{path} is on the plain-HTTP metrics port");
        assert_ne!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let pre_stop = server
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .expect("preStop");
    assert!(
        pre_stop.exec.is_none(),
        "the image has no shell: use the sleep action"
    );
    let sleep = pre_stop.sleep.as_ref().expect("preStop sleep").seconds;
    assert!(
        sleep >= 5,
        "preStop sleep {sleep}s is too short for endpoints to drain"
    );
    // The kubelet's grace period covers the preStop sleep and then the server's own
    // graceful shutdown, or in-flight requests are cut by SIGKILL.
    let drain = match flag(&args, "--shutdown-grace-seconds") {
        Some(s) => s.parse::<i64>().unwrap(),
        None => i64::try_from(Limits::default().shutdown_grace.as_secs()).unwrap(),
    };
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    assert!(
        grace > sleep + drain,
        "terminationGracePeriodSeconds {grace} <= preStop {sleep}s + shutdown grace {drain}s"
    );

    // Certificate and policy files come from the volumes the server mounts.
    let cert = flag(&args, "--tls-cert").expect("--tls-cert");
    let key = flag(&args, "--tls-key").expect("--tls-key");
    let tls_dir = mount_dir(server, "tls");
    assert_eq!(cert, format!("{tls_dir}/tls.crt"));
    assert_eq!(key, format!("{tls_dir}/tls.key"));
    let config = flag(&args, "--config").expect("--config");
    let config_dir = mount_dir(server, "policy");
    let config_file = config
        .strip_prefix(config_dir)
        .and_then(|f| f.strip_prefix('/'))
        .expect("config in policy mount");
    let policy_cm = volume("policy")
        .and_then(|v| v.config_map.as_ref())
        .expect("policy ConfigMap volume");
    let cm: ConfigMap = r.one("ConfigMap", &policy_cm.name);
    let policy = cm
        .data
        .as_ref()
        .and_then(|d| d.get(config_file))
        .expect("policy file in the ConfigMap");
    check_policy(policy);
    for m in server.volume_mounts.iter().flatten() {
        assert_eq!(
            m.read_only,
            Some(true),
            "server mounts read-only: {}",
            m.name
        );
        assert!(
            m.sub_path.is_none(),
            "{}: subPath mounts are never updated, reload needs the directory",
            m.name
        );
        assert!(
            !token_volumes.contains(&m.name.as_str()),
            "the server must not mount API credentials"
        );
    }
    let tls = volume("tls").expect("tls volume");

    let init = pod.init_containers.as_deref().unwrap_or_default();
    if overlay.bootstrap() {
        assert_eq!(init.len(), 1, "{overlay:?}: the bootstrap init container");
        let boot = &init[0];
        let bargs = boot.args.clone().unwrap_or_default();
        assert_eq!(&bargs[..2], ["certs", "bootstrap"], "{bargs:?}");
        assert_eq!(flag(&bargs, "--namespace"), Some(NAMESPACE));
        assert_eq!(flag(&bargs, "--secret"), Some(TLS_SECRET));
        assert_eq!(flag(&bargs, "--service"), Some(NAME));
        assert_eq!(flag(&bargs, "--webhook-config"), Some(NAME));
        assert_eq!(flag(&bargs, "--out"), Some(mount_dir(boot, "tls")));
        assert_eq!(
            mount_dir(boot, "tls"),
            tls_dir,
            "bootstrap writes where the server reads"
        );
        let ed = tls
            .empty_dir
            .as_ref()
            .expect("tls is an emptyDir filled by the init container");
        assert_eq!(
            ed.medium.as_deref(),
            Some("Memory"),
            "keep the key off the node's disk"
        );
        assert_eq!(
            mount_dir(boot, token_volumes[0]),
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
    } else {
        assert!(init.is_empty(), "{overlay:?}: no bootstrap init container");
        let secret = tls.secret.as_ref().expect("tls is the cert-manager Secret");
        assert_eq!(secret.secret_name.as_deref(), Some(TLS_SECRET));
        let keys: Vec<(&str, &str)> = secret
            .items
            .iter()
            .flatten()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert_eq!(keys, [("tls.crt", "tls.crt"), ("tls.key", "tls.key")]);
    }

    // Service and NetworkPolicy select these pods and expose these ports.
    let service: Service = r.one("Service", NAME);
    let sspec = service.spec.unwrap();
    assert!(selector_matches(
        &LabelSelector {
            match_labels: sspec.selector.clone(),
            ..Default::default()
        },
        &labels
    ));
    let sports: BTreeMap<String, (i32, IntOrString)> = sspec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), (p.port, p.target_port.unwrap())))
        .collect();
    assert_eq!(
        sports["https"],
        (443, IntOrString::String("https".to_owned()))
    );
    assert_eq!(
        sports["metrics"],
        (9090, IntOrString::String("metrics".to_owned()))
    );

    let np: NetworkPolicy = r.one("NetworkPolicy", NAME);
    let np = np.spec.unwrap();
    assert!(selector_matches(
        &np.pod_selector.unwrap_or_default(),
        &labels
    ));
    assert_eq!(
        np.policy_types.as_deref(),
        Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
    );
    let ingress = np.ingress.unwrap_or_default();
    let rule_for = |port: i32| {
        ingress
            .iter()
            .find(|rule| {
                rule.ports
                    .iter()
                    .flatten()
                    .any(|p| p.port == Some(IntOrString::Int(port)))
            })
            .unwrap_or_else(|| panic!("no ingress rule for {port}"))
    };
    assert!(
        rule_for(8443).from.is_none(),
        "8443 from anywhere: the API server's address is not known"
    );
    let metrics_from = rule_for(9090)
        .from
        .clone()
        .expect("9090 only from monitoring namespaces");
    assert!(metrics_from.iter().all(|p| p.namespace_selector.is_some()));
    let egress_ports: BTreeSet<i32> = np
        .egress
        .unwrap_or_default()
        .iter()
        .flat_map(|e| e.ports.clone().unwrap_or_default())
        .map(|p| match p.port {
            Some(IntOrString::Int(n)) => n,
            other => panic!("egress port {other:?}"),
        })
        .collect();
    assert_eq!(
        egress_ports,
        BTreeSet::from([53, 443, 6443]),
        "{overlay:?}: egress only to DNS and the API server (bootstrap, failure-policy)"
    );
}

fn check_policy(text: &str) {
    let settings = PolicyFile::from_yaml(text).unwrap_or_else(|e| panic!("policy.yaml: {e}"));
    assert_eq!(
        settings.mode, None,
        "the mode comes from --mode and the namespace labels"
    );
    for rule in RuleId::ALL {
        assert_eq!(settings.action(rule), Action::Deny, "{rule}");
    }
    assert!(settings.rewrite.enabled);
    assert_eq!(settings.rewrite.target.render("nginx"), "dhi.io/nginx");
    assert!(
        !settings.templates.mutate,
        "templates are not mutated by default"
    );
    assert_eq!(
        settings.mappings(),
        PolicyFile::default().mappings(),
        "the built-in mappings"
    );
}

fn check_rbac(r: &Rendered) {
    let rule =
        |groups: &[&str], resources: &[&str], names: Option<&[&str]>, verbs: &[&str]| PolicyRule {
            api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
            resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
            resource_names: names.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            non_resource_urls: None,
        };
    let configs = [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ];
    // (name, namespaced rules, cluster rules) of each pair of roles the pod's account holds.
    let mut expected: Vec<(&str, Vec<PolicyRule>, Vec<PolicyRule>)> = vec![(
        "dhi-admission-arm",
        vec![rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            None,
            &["list"],
        )],
        vec![rule(
            &["admissionregistration.k8s.io"],
            &configs,
            Some(&[NAME]),
            &["get", "patch"],
        )],
    )];
    if r.overlay.bootstrap() {
        expected.push((
            "dhi-admission-bootstrap",
            vec![
                rule(&[""], &["secrets"], Some(&[TLS_SECRET]), &["get", "update"]),
                // create cannot be limited by resourceNames.
                rule(&[""], &["secrets"], None, &["create"]),
            ],
            vec![rule(
                &["admissionregistration.k8s.io"],
                &configs,
                Some(&[NAME]),
                &["get", "patch"],
            )],
        ));
    }
    let roles: Vec<Role> = r.all("Role");
    let cluster_roles: Vec<ClusterRole> = r.all("ClusterRole");
    let bindings: Vec<RoleBinding> = r.all("RoleBinding");
    let cluster_bindings: Vec<ClusterRoleBinding> = r.all("ClusterRoleBinding");
    let names = |metas: Vec<&Option<String>>| -> Vec<String> {
        metas.into_iter().map(|n| n.clone().unwrap()).collect()
    };
    let expected_names: Vec<String> = expected.iter().map(|e| e.0.to_owned()).collect();
    assert_eq!(
        names(roles.iter().map(|o| &o.metadata.name).collect()),
        expected_names
    );
    assert_eq!(
        names(cluster_roles.iter().map(|o| &o.metadata.name).collect()),
        expected_names
    );
    let subject_ok = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.as_deref()
            == Some(
                &[k8s_openapi::api::rbac::v1::Subject {
                    kind: "ServiceAccount".to_owned(),
                    name: NAME.to_owned(),
                    namespace: Some(NAMESPACE.to_owned()),
                    api_group: None,
                }][..],
            )
    };
    for (i, (name, namespaced, cluster)) in expected.iter().enumerate() {
        assert_eq!(roles[i].metadata.namespace.as_deref(), Some(NAMESPACE));
        assert_eq!(&roles[i].rules.clone().unwrap(), namespaced, "Role {name}");
        assert_eq!(
            &cluster_roles[i].rules.clone().unwrap(),
            cluster,
            "ClusterRole {name}"
        );
        assert!(cluster_roles[i].aggregation_rule.is_none());
        let binding = bindings
            .iter()
            .find(|b| b.role_ref.kind == "Role" && b.role_ref.name == *name)
            .unwrap_or_else(|| panic!("no RoleBinding to Role {name}"));
        assert!(subject_ok(&binding.subjects));
        let binding = cluster_bindings
            .iter()
            .find(|b| b.role_ref.kind == "ClusterRole" && b.role_ref.name == *name)
            .unwrap_or_else(|| panic!("no ClusterRoleBinding to ClusterRole {name}"));
        assert!(subject_ok(&binding.subjects));
    }
    assert_eq!(bindings.len(), expected.len());
    assert_eq!(cluster_bindings.len(), expected.len());
}

fn check_cert_manager(r: &Rendered) {
    let serving = r.raw("Certificate", NAME);
    assert_eq!(str_at(serving, "/metadata/namespace"), Some(NAMESPACE));
    assert_eq!(str_at(serving, "/spec/secretName"), Some(TLS_SECRET));
    let dns: Vec<&str> = list(&serving["spec"], "dnsNames")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(dns.contains(&"dhi-admission.dhi-system.svc"), "{dns:?}");
    assert_ne!(serving["spec"]["isCA"], json!(true));
    // serving <- CA issuer <- CA certificate <- self-signed issuer
    let ca_issuer = r.raw("Issuer", str_at(serving, "/spec/issuerRef/name").unwrap());
    let ca_secret = str_at(ca_issuer, "/spec/ca/secretName").expect("a CA issuer");
    let ca_cert = r
        .objects
        .iter()
        .find(|o| {
            str_at(o, "/kind") == Some("Certificate")
                && str_at(o, "/spec/secretName") == Some(ca_secret)
        })
        .expect("the CA Certificate");
    assert_eq!(ca_cert["spec"]["isCA"], json!(true));
    let root = r.raw("Issuer", str_at(ca_cert, "/spec/issuerRef/name").unwrap());
    assert!(
        root["spec"].get("selfSigned").is_some(),
        "the CA is self-signed"
    );
    for o in [serving, ca_cert] {
        assert_eq!(str_at(o, "/spec/privateKey/algorithm"), Some("ECDSA"));
    }
}

// === the policy engine on our manifests ===

fn review(engine: &Engine, doc: &Value, webhook: Webhook) -> dhi_policy::Decision {
    let json = serde_json::to_string(doc).unwrap();
    let object = decode_object(&json).unwrap();
    let kind = WorkloadKind::from_api_version_kind(
        str_at(doc, "/apiVersion").unwrap(),
        str_at(doc, "/kind").unwrap(),
    )
    .unwrap();
    let subject = Subject {
        kind,
        object: &object,
        old_object: None,
        scope: Scope::All,
    };
    engine.review(&subject, webhook, Mode::Enforce)
}

fn evaluate(engine: &Engine, doc: &Value) -> dhi_policy::Evaluation {
    let json = serde_json::to_string(doc).unwrap();
    let object = decode_object(&json).unwrap();
    let kind = WorkloadKind::from_api_version_kind(
        str_at(doc, "/apiVersion").unwrap(),
        str_at(doc, "/kind").unwrap(),
    )
    .unwrap();
    engine.evaluate(&Subject {
        kind,
        object: &object,
        old_object: None,
        scope: Scope::All,
    })
}

/// The pod a workload's template creates (what the mutating webhook patches).
fn pod_from_template(doc: &Value) -> Value {
    let kind = WorkloadKind::from_api_version_kind(
        str_at(doc, "/apiVersion").unwrap(),
        str_at(doc, "/kind").unwrap(),
    )
    .unwrap();
    let mut template = doc;
    for token in &kind.spec_path()[..kind.spec_path().len() - 1] {
        template = &template[*token];
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or(json!({})),
        "spec": template["spec"],
    })
}

fn images(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in doc["spec"][list].as_array().into_iter().flatten() {
            out.push(c["image"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// Applies the mutating webhook's patch, as the API server would.
fn mutated(engine: &Engine, pod: &Value) -> Value {
    let decision = review(engine, pod, Webhook::Mutate);
    assert!(decision.allowed);
    let mut out = pod.clone();
    json_patch::patch(&mut out, &decision.patch).expect("the patch applies");
    out
}

// === tests ===

#[test]
fn every_file_under_deploy_parses() {
    let mut seen = BTreeSet::new();
    for path in files_under(&deploy(), &["yaml", "yml", "json"]) {
        // The Helm chart's files are templates and values, not manifests: tests/helm_chart.rs
        // renders them and compares the result with deploy/rendered/.
        if path.starts_with(deploy().join("helm")) {
            continue;
        }
        let origin = rel(&path);
        let text = read(&path);
        let name = path.file_name().unwrap().to_str().unwrap();
        if name == "kustomization.yaml" {
            let k = kustomization(path.parent().unwrap());
            for r in list(&k, "resources") {
                let target = path.parent().unwrap().join(r.as_str().unwrap());
                assert!(
                    target.exists(),
                    "{origin}: resource {} does not exist",
                    target.display()
                );
            }
        } else if name == "policy.yaml" {
            check_policy(&text);
        } else if name == "matchconditions.yaml" {
            // A kustomize JSON Patch, not an object: tests/deploy_scope.rs checks it.
            assert!(yaml_docs(&text, &origin)[0].is_array(), "{origin}");
        } else if name.ends_with(".json") {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{origin}: {e}"));
            assert!(v.is_object(), "{origin}");
        } else {
            let docs = yaml_docs(&text, &origin);
            assert!(!docs.is_empty(), "{origin}: no document");
            for (i, doc) in docs.iter().enumerate() {
                seen.insert(check_object(doc, &format!("{origin}#{i}")));
            }
        }
    }
    // The walk really reached every part of the tree.
    for kind in [
        "v1/Namespace",
        "apps/v1/Deployment",
        "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration",
        "cert-manager.io/v1/Certificate",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
        "v1/Pod",
        "batch/v1/CronJob",
        "apps/v1/DaemonSet",
    ] {
        assert!(seen.contains(kind), "no {kind} found under deploy/");
    }
}

#[test]
fn overlays_render_as_promised() {
    for overlay in Overlay::ALL {
        let r = Rendered::new(overlay);
        for (i, o) in r.objects.iter().enumerate() {
            check_object(o, &format!("{overlay:?} rendered #{i}"));
        }
        check_webhooks(&r);
        check_deployment(&r);
        check_rbac(&r);
        let ns: Namespace = r.one("Namespace", NAMESPACE);
        assert_eq!(
            ns.metadata
                .labels
                .unwrap_or_default()
                .get("dhi.io/mode")
                .map(String::as_str),
            Some("off"),
            "the webhook's namespace is labelled out of the webhook"
        );
        if overlay == Overlay::CertManager {
            check_cert_manager(&r);
        } else {
            assert!(
                r.objects
                    .iter()
                    .all(|o| api_group(str_at(o, "/apiVersion").unwrap()) != "cert-manager.io")
            );
        }
    }
}

#[test]
fn renders_are_current() {
    let dirs = Overlay::ALL.iter().map(|o| o.dir()).chain(
        ["monitoring", "policyreport-crds", "audit-reports"]
            .map(|o| deploy().join("overlays").join(o)),
    );
    for dir in dirs {
        let Some(theirs) = kubectl_kustomize(&dir) else {
            // CI sets DHI_RENDER_REQUIRED: there a missing kubectl is a failure.
            assert!(
                std::env::var_os("DHI_RENDER_REQUIRED").is_none(),
                "kubectl is required to check deploy/rendered/"
            );
            eprintln!("kubectl not found: deploy/rendered/ is not compared with kustomize");
            return;
        };
        let ours = render(&dir);
        let (theirs, ours) = (by_identity(&theirs), by_identity(&ours));
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{}: objects differ from deploy/rendered/; run deploy/render.sh",
            rel(&dir)
        );
        for (id, theirs) in &theirs {
            let mut diffs = Vec::new();
            diff("", theirs, ours[id], &mut diffs);
            assert!(
                diffs.is_empty(),
                "{}: {id:?} differs from kubectl kustomize; run deploy/render.sh:\n  {}",
                rel(&dir),
                diffs.join("\n  ")
            );
        }
    }
}

#[test]
fn monitoring_matches_the_server() {
    let base = Rendered::new(Overlay::Base);
    let service: Service = base.one("Service", NAME);
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    let port_names: BTreeSet<String> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();

    let objects = render(&deploy().join("overlays/monitoring"));
    let find = |kind: &str| {
        objects
            .iter()
            .find(|o| str_at(o, "/kind") == Some(kind))
            .unwrap_or_else(|| panic!("monitoring: no {kind}"))
    };

    let sm = find("ServiceMonitor");
    let selector: LabelSelector = serde_json::from_value(sm["spec"]["selector"].clone()).unwrap();
    assert!(
        selector_matches(&selector, &service_labels),
        "ServiceMonitor selects the Service"
    );
    let sm_namespaces = &sm["spec"]["namespaceSelector"]["matchNames"];
    assert!(
        sm_namespaces
            .as_array()
            .unwrap()
            .contains(&json!(NAMESPACE))
    );
    for ep in list(&sm["spec"], "endpoints") {
        let port = ep["port"].as_str().unwrap();
        assert_eq!(port, "metrics", "scrape the plain-HTTP metrics port");
        assert!(port_names.contains(port), "Service has a port named {port}");
        assert_eq!(str_at(ep, "/path"), Some("/metrics"));
    }

    // Every dhi_admission_* name in a query must be a metric the server exports.
    let check_names = |expr: &str, origin: &str| {
        let mut rest = expr;
        while let Some(i) = rest.find("dhi_admission_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base_name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| *b == "dhi_admission_request_duration_seconds")
                })
                .unwrap_or(&name);
            assert!(
                METRICS.contains(&base_name),
                "{origin}: unknown metric {name} in {expr}"
            );
            rest = &rest[i + name.len()..];
        }
    };

    let dashboard_cm = find("ConfigMap");
    assert_eq!(
        str_at(dashboard_cm, "/metadata/labels/grafana_dashboard"),
        Some("1")
    );
    let data = dashboard_cm["data"].as_object().unwrap();
    assert_eq!(data.len(), 1);
    let dashboard: Value =
        serde_json::from_str(data.values().next().unwrap().as_str().unwrap()).unwrap();
    let exprs: Vec<String> = list(&dashboard, "panels")
        .iter()
        .flat_map(|p| list(p, "targets").to_vec())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    for e in &exprs {
        check_names(e, "dashboard");
    }
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let has = |needle: &str| exprs.iter().any(|e| squash(e).contains(&squash(needle)));
    for needle in [
        "sum by (decision) (rate(dhi_admission_requests_total",
        "histogram_quantile(0.5, sum by (le, webhook) (rate(dhi_admission_request_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, webhook) (rate(dhi_admission_request_duration_seconds_bucket",
        "sum by (rule, mode) (rate(dhi_admission_violations_total",
        "sum by (type) (rate(dhi_admission_mutations_total",
        "sum by (reason) (rate(dhi_admission_rewrites_skipped_total",
        "(dhi_admission_tls_cert_expiry_timestamp_seconds - time()) / 86400",
    ] {
        assert!(has(needle), "dashboard: no panel queries {needle}");
    }
    let ids: BTreeSet<i64> = list(&dashboard, "panels")
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        list(&dashboard, "panels").len(),
        "dashboard panel ids are unique"
    );

    let rule = find("PrometheusRule");
    let alerts: BTreeMap<String, String> = list(&rule["spec"], "groups")
        .iter()
        .flat_map(|g| list(g, "rules").to_vec())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                squash(r["expr"].as_str().unwrap()),
            )
        })
        .collect();
    for expr in alerts.values() {
        check_names(expr, "PrometheusRule");
    }
    let alert = |name: &str, needles: &[&str]| {
        let expr = alerts
            .get(name)
            .unwrap_or_else(|| panic!("no alert {name}"));
        for n in needles {
            assert!(expr.contains(&squash(n)), "{name}: {expr} lacks {n}");
        }
    };
    alert(
        "DhiAdmissionCertificateExpiringSoon",
        &[
            "(dhi_admission_tls_cert_expiry_timestamp_seconds - time()) / 86400",
            "< 21",
        ],
    );
    alert(
        "DhiAdmissionErrorRate",
        &["dhi_admission_requests_total{decision=\"error\"}"],
    );
    alert(
        "DhiAdmissionWebhookCallsFailing",
        &["apiserver_admission_webhook_rejection_count"],
    );
    alert(
        "DhiAdmissionHighLatency",
        &[
            "histogram_quantile(0.99",
            "dhi_admission_request_duration_seconds_bucket",
            "> 0.1",
        ],
    );
    alert(
        "DhiAdmissionNoReadyReplicas",
        &["deployment=\"dhi-admission\"", "== 0"],
    );
    alert(
        "DhiAdmissionMetricsAbsent",
        &["absent(up{namespace=\"dhi-system\", job=\"dhi-admission\"} == 1)"],
    );
    alert(
        "DhiAdmissionReloadFailing",
        &["dhi_admission_reloads_total{result=\"failure\"}"],
    );
}

#[test]
fn the_webhook_admits_its_own_deployment_without_a_patch() {
    let engine = Engine::default();
    for overlay in Overlay::ALL {
        let r = Rendered::new(overlay);
        let deployment = r.raw("Deployment", NAME).clone();

        // As shipped: the product image is not hardened by name, so nothing applies.
        let decision = review(&engine, &deployment, Webhook::Validate);
        assert!(
            decision.allowed && decision.violations.is_empty(),
            "{overlay:?}: {:?}",
            decision.violations
        );
        assert!(evaluate(&engine, &deployment).patch.is_empty());

        // As if it ran on a hardened image: the security context alone must satisfy the
        // rules and already say everything the mutating webhook would inject.
        let mut hardened = deployment.clone();
        for list in ["initContainers", "containers"] {
            for c in hardened["spec"]["template"]["spec"][list]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                c["image"] = json!(HARDENED_STAND_IN);
            }
        }
        let decision = review(&engine, &hardened, Webhook::Validate);
        assert!(
            decision.allowed && decision.violations.is_empty(),
            "{overlay:?}: {:?}",
            decision.violations
        );
        let eval = evaluate(&engine, &hardened);
        assert!(
            eval.patch.is_empty(),
            "{overlay:?}: would patch {:?}",
            eval.patch
        );
        assert!(eval.warnings.is_empty(), "{overlay:?}: {:?}", eval.warnings);
        let pod = pod_from_template(&hardened);
        let decision = review(&engine, &pod, Webhook::Mutate);
        assert!(
            decision.patch.is_empty(),
            "{overlay:?}: pods would be patched: {:?}",
            decision.patch
        );
    }
}

/// The background audit (deploy/overlays/audit-reports): its own account with exactly the
/// permissions it uses, the webhook's security context, and admitted by its own policy.
#[test]
fn the_audit_runs_least_privileged_and_passes_its_own_policy() {
    let objects = render(&deploy().join("overlays/audit-reports"));
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("audit-reports: no {kind} {name}"))
            .clone()
    };
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment"
        ])
    );
    let sa: ServiceAccount = typed(&find("ServiceAccount", "dhi-admission-audit"), "sa");
    assert_eq!(sa.automount_service_account_token, Some(false));

    let rule = |groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        resource_names: (!names.is_empty()).then(|| names.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        non_resource_urls: None,
    };
    let cluster: ClusterRole = typed(&find("ClusterRole", "dhi-admission-audit"), "cr");
    assert_eq!(
        cluster.rules.unwrap(),
        [
            rule(
                &[""],
                &["pods", "replicationcontrollers", "podtemplates"],
                &[],
                &["list", "watch"]
            ),
            rule(
                &["apps"],
                &["deployments", "statefulsets", "daemonsets", "replicasets"],
                &[],
                &["list", "watch"]
            ),
            rule(&["batch"], &["jobs", "cronjobs"], &[], &["list", "watch"]),
            rule(&[""], &["namespaces"], &[], &["list", "watch"]),
            rule(&[""], &["nodes"], &[], &["list"]),
            rule(
                &["wgpolicyk8s.io"],
                &["policyreports", "clusterpolicyreports"],
                &[],
                &["create", "patch", "update"]
            ),
        ]
    );
    let lease: Role = typed(&find("Role", "dhi-admission-audit-lease"), "role");
    assert_eq!(lease.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        lease.rules.unwrap(),
        [
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["dhi-admission-audit"],
                &["get", "update"]
            ),
            rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
        ]
    );
    for (kind, name) in [
        ("ClusterRoleBinding", "dhi-admission-audit"),
        ("RoleBinding", "dhi-admission-audit-lease"),
    ] {
        let binding = find(kind, name);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "dhi-admission-audit", "namespace": NAMESPACE}]),
            "{kind}"
        );
    }

    let raw = find("Deployment", "dhi-admission-audit");
    let deployment: Deployment = typed(&raw, "audit deployment");
    let spec = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("dhi-admission-audit")
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    let pod_sc = spec.security_context.as_ref().unwrap();
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert_eq!(spec.containers.len(), 1);
    let audit = &spec.containers[0];
    check_container_security(audit, "audit");
    let args = audit.args.clone().unwrap();
    assert_eq!(args[0], "audit");
    // The webhook's policy, from the ConfigMap the base generates.
    assert_eq!(
        flag(&args, "--config"),
        Some("/etc/dhi-admission/policy.yaml")
    );
    assert_eq!(mount_dir(audit, "policy"), "/etc/dhi-admission");
    let policy = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "policy");
    assert_eq!(
        policy
            .and_then(|v| v.config_map.as_ref())
            .map(|c| c.name.as_str()),
        Some("dhi-admission-policy")
    );

    // Admitted by its own policy, as shipped and as if it ran on a hardened image.
    let engine = Engine::default();
    let decision = review(&engine, &raw, Webhook::Validate);
    assert!(
        decision.allowed && decision.violations.is_empty(),
        "{:?}",
        decision.violations
    );
    let mut hardened = raw.clone();
    hardened["spec"]["template"]["spec"]["containers"][0]["image"] = json!(HARDENED_STAND_IN);
    let decision = review(&engine, &hardened, Webhook::Validate);
    assert!(
        decision.allowed && decision.violations.is_empty(),
        "{:?}",
        decision.violations
    );
    let eval = evaluate(&engine, &hardened);
    assert!(eval.patch.is_empty(), "would patch {:?}", eval.patch);
}

/// The PolicyReport CRDs accept what the audit writes: results by these outcomes, string
/// properties, and the two kinds at their scopes.
#[test]
fn the_policyreport_crds_are_v1alpha2_as_policy_reporter_reads_them() {
    let objects = render(&deploy().join("overlays/policyreport-crds"));
    let scopes: BTreeMap<String, String> = objects
        .iter()
        .map(|o| {
            (
                o["spec"]["names"]["kind"].as_str().unwrap().to_owned(),
                o["spec"]["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        BTreeMap::from([
            ("ClusterPolicyReport".to_owned(), "Cluster".to_owned()),
            ("PolicyReport".to_owned(), "Namespaced".to_owned()),
        ])
    );
    for crd in &objects {
        assert_eq!(crd["spec"]["group"], "wgpolicyk8s.io");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(
            (&version["name"], &version["served"], &version["storage"]),
            (&json!("v1alpha2"), &json!(true), &json!(true))
        );
        let schema = &version["schema"]["openAPIV3Schema"]["properties"];
        let result = &schema["results"]["items"]["properties"];
        assert_eq!(
            result["result"]["enum"],
            json!(["pass", "fail", "warn", "error", "skip"])
        );
        assert_eq!(
            result["properties"]["additionalProperties"],
            json!({"type": "string"})
        );
        assert_eq!(schema["results"]["items"]["required"], json!(["policy"]));
        let summary: BTreeSet<&str> = schema["summary"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            summary,
            BTreeSet::from(["pass", "fail", "warn", "error", "skip"])
        );
    }
}

/// What each example is for, as the engine must see it.
#[test]
fn examples_get_their_documented_verdicts() {
    let engine = Engine::default();
    let examples = deploy().join("examples");
    let mut checked = BTreeSet::new();
    let docs = |file: &str| {
        let path = examples.join(file);
        yaml_docs(&read(&path), &rel(&path))
    };

    // Istio-injected pod: istio-init (root) left alone, istio-proxy rewritten, the app
    // gets its user from the catalog; admitted.
    let istio = docs("istio-injected-pod.yaml").remove(0);
    let decision = review(&engine, &istio, Webhook::Mutate);
    assert!(decision.allowed);
    assert_eq!(
        decision.skipped,
        [SkipReason::RunsAsRoot],
        "istio-init stays upstream"
    );
    let patched = mutated(&engine, &istio);
    assert_eq!(
        images(&patched),
        [
            "docker.io/istio/proxyv2:1.30.3",
            "dhi.io/python:3.13",
            "dhi.io/istio-proxyv2:1.30.3"
        ]
    );
    let app = &patched["spec"]["containers"][0]["securityContext"];
    assert_eq!(app["runAsUser"], json!(NONROOT));
    assert_eq!(app["runAsNonRoot"], json!(true));
    assert_eq!(
        patched["spec"]["securityContext"]["fsGroup"],
        json!(NONROOT)
    );
    // Reinvocation converges: the patched pod needs nothing more and is admitted.
    assert!(
        evaluate(&engine, &patched).patch.is_empty(),
        "a second pass patches nothing"
    );
    let v = review(&engine, &patched, Webhook::Validate);
    assert!(v.allowed && v.violations.is_empty(), "{:?}", v.violations);
    checked.insert("istio-injected-pod.yaml");

    // The AdmissionReview for curl wraps exactly that pod, as the API server sends it.
    let text = read(&examples.join("admission-review.json"));
    let raw: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        raw["request"]["object"], istio,
        "admission-review.json wraps istio-injected-pod.yaml"
    );
    let review_obj: kube::core::admission::AdmissionReview<kube::core::DynamicObject> =
        serde_json::from_str(&text).expect("a v1 AdmissionReview");
    let request: kube::core::admission::AdmissionRequest<kube::core::DynamicObject> =
        review_obj.try_into().expect("with a request");
    assert_eq!(request.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(request.kind.kind, "Pod");
    assert_eq!(request.namespace.as_deref(), Some("default"));
    assert!(matches!(
        request.operation,
        kube::core::admission::Operation::Create
    ));
    checked.insert("admission-review.json");

    // Hubble Relay: the template is validated as is; its pods get the hardened image.
    let relay = docs("hubble-relay-deployment.yaml").remove(0);
    let v = review(&engine, &relay, Webhook::Validate);
    assert!(v.allowed && v.violations.is_empty(), "{:?}", v.violations);
    assert!(
        review(&engine, &relay, Webhook::Mutate).patch.is_empty(),
        "templates are not mutated"
    );
    let pod = mutated(&engine, &pod_from_template(&relay));
    assert_eq!(images(&pod), ["dhi.io/hubble-relay:1.20.1"]);
    assert_eq!(
        review(&engine, &pod_from_template(&relay), Webhook::Mutate)
            .patch
            .len(),
        1,
        "only the image"
    );
    checked.insert("hubble-relay-deployment.yaml");

    // istio-cni: root by design, so rewritten and admitted as root.
    let cni = docs("istio-cni-daemonset.yaml").remove(0);
    let v = review(&engine, &cni, Webhook::Validate);
    assert!(v.allowed && v.violations.is_empty(), "{:?}", v.violations);
    let pod = mutated(&engine, &pod_from_template(&cni));
    assert_eq!(images(&pod), ["dhi.io/istio-install-cni:1.30.3"]);
    let v = review(&engine, &pod, Webhook::Validate);
    assert!(v.allowed && v.violations.is_empty(), "{:?}", v.violations);
    checked.insert("istio-cni-daemonset.yaml");

    // pg_dump as UID 70: explicit, so nothing to add or deny.
    let backup = docs("postgres-backup-cronjob.yaml").remove(0);
    let v = review(&engine, &backup, Webhook::Validate);
    assert!(
        v.allowed && v.violations.is_empty() && v.warnings.is_empty(),
        "{:?}",
        v.warnings
    );
    assert!(evaluate(&engine, &backup).patch.is_empty());
    checked.insert("postgres-backup-cronjob.yaml");

    // The violations: denied for exactly privileged-port (nginx) and run-as-root (-dev as root).
    let bad = docs("violations-deployment.yaml").remove(0);
    let v = review(&engine, &bad, Webhook::Validate);
    assert!(!v.allowed);
    let mut found: Vec<(RuleId, &str)> = v
        .violations
        .iter()
        .map(|x| (x.rule, x.container.as_str()))
        .collect();
    found.sort_by_key(|(rule, _)| rule.as_str());
    assert_eq!(
        found,
        [
            (RuleId::PrivilegedPort, "nginx"),
            (RuleId::RunAsRoot, "debug-tools")
        ]
    );
    let message = v.denial_message(WorkloadKind::Deployment, "storefront");
    assert!(
        message.contains("8080") && message.contains("runtime variant"),
        "{message}"
    );
    // Audit mode admits the same object and says why it would not be.
    let json = serde_json::to_string(&bad).unwrap();
    let object = decode_object(&json).unwrap();
    let subject = Subject {
        kind: WorkloadKind::Deployment,
        object: &object,
        old_object: None,
        scope: Scope::All,
    };
    let audit = engine.review(&subject, Webhook::Validate, Mode::Audit);
    assert!(
        audit.allowed && audit.warnings.len() >= 2,
        "{:?}",
        audit.warnings
    );
    checked.insert("violations-deployment.yaml");

    // The fixed version: admitted, and fully specified, so no patch either.
    let good = docs("compliant-deployment.yaml");
    assert_eq!(good.len(), 2, "Deployment and Service");
    let v = review(&engine, &good[0], Webhook::Validate);
    assert!(
        v.allowed && v.violations.is_empty() && v.warnings.is_empty(),
        "{:?}",
        v.warnings
    );
    assert!(evaluate(&engine, &good[0]).patch.is_empty());
    assert!(
        review(&engine, &pod_from_template(&good[0]), Webhook::Mutate)
            .patch
            .is_empty()
    );
    checked.insert("compliant-deployment.yaml");

    // Every example has a verdict here.
    for path in files_under(&examples, &["yaml", "yml", "json"]) {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            checked.contains(name),
            "deploy/examples/{name} has no expected verdict in this test"
        );
    }
}

#[test]
fn dockerfile_builds_on_catalog_images_and_runs_nonroot() {
    let dockerfile = read(&repo().join("Dockerfile"));
    let facts: Vec<_> = catalog::builtin_facts().collect();
    let from: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(from.len() >= 2, "multi-stage: {from:?}");
    let args: BTreeMap<&str, &str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ARG "))
        .filter_map(|l| l.split_once('='))
        .collect();
    let resolve = |image: &str| -> String {
        match image.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
            Some(arg) => args
                .get(arg)
                .unwrap_or_else(|| panic!("ARG {arg} has no default"))
                .to_string(),
            None => image.to_owned(),
        }
    };
    let fact = |image: &str| {
        let rest = image
            .strip_prefix("dhi.io/")
            .unwrap_or_else(|| panic!("{image}: build on DHI images"));
        let (repo, tag) = rest
            .split_once(':')
            .unwrap_or_else(|| panic!("{image}: pin a tag"));
        facts
            .iter()
            .find(|(r, t, ..)| *r == repo && *t == tag)
            .copied()
            .unwrap_or_else(|| panic!("{image} is not in the catalog"))
    };
    let builder = resolve(from[0]);
    let (_, _, _, _, dev) = fact(&builder);
    assert!(
        dev,
        "{builder}: build on a -dev image (shell, package manager)"
    );
    let runtime = resolve(from.last().unwrap());
    let (_, _, uid, gid, dev) = fact(&runtime);
    assert!(
        !dev,
        "{runtime}: the runtime stage must not be a -dev image"
    );
    assert!(
        dockerfile.contains(&format!("USER {uid}:{gid}")),
        "runs as the base image's nonroot user"
    );
    assert_eq!(uid, NONROOT);
    assert!(dockerfile.contains("EXPOSE 8443 9090"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/dhi-admission"]"#));
    assert!(dockerfile.contains(r#"CMD ["serve"]"#));
    assert!(dockerfile.contains("--locked"));
    // rustls only: nothing in the build installs or links OpenSSL (comments aside).
    let instructions: String = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    for lib in ["openssl", "libssl"] {
        assert!(
            !instructions.contains(lib),
            "the Dockerfile mentions {lib}: rustls only"
        );
    }

    let ignore = read(&repo().join(".dockerignore"));
    let lines: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for needed in ["target/", ".git/", "certs/*.key"] {
        assert!(lines.contains(needed), ".dockerignore lacks {needed}");
    }
}
