//! The Helm chart (`deploy/helm/dhi-admission`) against the kustomize overlays.
//!
//! `helm template` for a choice of values and the committed render of the overlay for the
//! same choice (`deploy/rendered/`, kept current by `deploy/render.sh --check`) must hold
//! the same objects, equal field for field, except for these intentional differences,
//! each asserted where it is removed:
//!
//! - **Namespace.** The overlays create `dhi-system` with its labels; the chart installs into
//!   the release namespace (`helm install -n dhi-system --create-namespace`) and does not own
//!   it, because Helm cannot adopt the namespace its release is stored in. The exclusion by
//!   name (`kubernetes.io/metadata.name NotIn [kube-system, <release namespace>]`) is what
//!   keeps the webhook off its own pods either way.
//! - **Helm's labels** (`app.kubernetes.io/instance`, `app.kubernetes.io/managed-by`,
//!   `helm.sh/chart`) on every top-level object; selectors and pod labels are unchanged.
//! - **`nodeSelector: kubernetes.io/os: linux`** on the Deployment (the image is a Linux
//!   binary); the base Deployment has none.
//! - **Ignore, then Fail.** As in the overlays, every entry is installed with
//!   `failurePolicy: Ignore` and its intended policy in the `dhi.io/failure-policy`
//!   annotation, which the failure-policy container (`certs arm`) carries out once a replica
//!   is ready. The chart also runs a post-install/post-upgrade hook Job that waits for the
//!   Deployment and the caBundle, then patches the default entries to `Fail` at once, so
//!   `helm install` fails when the webhook never becomes ready; its patches are checked.
//! - **Kept CRDs.** With `audit.crds.install` the PolicyReport CRDs carry
//!   `helm.sh/resource-policy: keep`: uninstalling must not delete every report.
//! - **Hooks.** The lifecycle Jobs and their ServiceAccounts and RBAC exist only in the
//!   chart; they are checked on their own: least privilege, restricted security context,
//!   admitted by the project's own policy (`dhi-admission check`) without a patch.
//!
//! helm is `$DHI_HELM`, else `helm` on `PATH`, else the copy `tools/helm.sh` caches. Without
//! helm the tests print one line and pass, unless `DHI_HELM_REQUIRED=1` (CI): then they fail.

#[path = "common/cli.rs"]
mod cli;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use cli::{dhi, output_with_stdin};

const RELEASE: &str = "dhi-admission";
const NAMESPACE: &str = "dhi-system";
const NAME: &str = "dhi-admission";
const HOOK: &str = "helm.sh/hook";
/// The version tools/helm.sh builds and caches.
const HELM_VERSION: &str = "v3.21.4";
/// The one kubectl image the hooks run: in the DHI catalog, runtime variant, UID 65532.
const KUBECTL: &str = "dhi.io/kubectl:1.36.4";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/dhi-admission")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Every non-empty document of a multi-document YAML text.
fn yaml_docs(text: &str, origin: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{origin}: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

// === helm ===

/// The helm binary, or `None` (said once per run) when it is absent and not required.
fn helm() -> Option<PathBuf> {
    static HELM: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = HELM.get_or_init(|| {
        let found = find_helm();
        if found.is_none() && !required() {
            eprintln!("helm_chart: helm not found (run tools/helm.sh); chart not checked");
        }
        found
    });
    assert!(
        found.is_some() || !required(),
        "DHI_HELM_REQUIRED=1 but no helm found ($DHI_HELM, PATH, or run tools/helm.sh)"
    );
    found.clone()
}

fn required() -> bool {
    std::env::var("DHI_HELM_REQUIRED").is_ok_and(|v| v == "1")
}

fn find_helm() -> Option<PathBuf> {
    let cached = std::env::var_os("DHI_TOOLS_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("dhi-admission/tools"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dhi-admission/tools"))
        })
        .map(|c| c.join(format!("helm-{HELM_VERSION}/helm")));
    let candidates = std::env::var_os("DHI_HELM")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("helm")])
        .chain(cached);
    for candidate in candidates {
        let runs = Command::new(&candidate)
            .args(["version", "--short"])
            .output()
            .is_ok_and(|o| o.status.success());
        if runs {
            return Some(candidate);
        }
    }
    None
}

fn run_template(helm: &Path, namespace: &str, args: &[&str]) -> Output {
    Command::new(helm)
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("helm runs")
}

/// `helm template` into the default namespace with extra arguments; hooks included.
fn template(helm: &Path, args: &[&str]) -> Vec<Value> {
    template_in(helm, NAMESPACE, args)
}

fn template_in(helm: &Path, namespace: &str, args: &[&str]) -> Vec<Value> {
    let out = run_template(helm, namespace, args);
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = yaml_docs(
        &String::from_utf8(out.stdout).unwrap(),
        &format!("helm template {args:?}"),
    );
    for o in &objects {
        check_typed(o);
    }
    objects
}

/// The committed kustomize render of an overlay.
fn overlay(name: &str) -> Vec<Value> {
    let path = repo().join(format!("deploy/rendered/{name}.yaml"));
    yaml_docs(&read(&path), &path.display().to_string())
}

fn chart_version() -> String {
    let chart = yaml_docs(&read(&chart_dir().join("Chart.yaml")), "Chart.yaml").remove(0);
    str_at(&chart, "/version").unwrap().to_owned()
}

// === typed parsing ===

/// Parses `doc` as `T` and checks that serialising it back loses nothing: a field the
/// Kubernetes type does not know (misspelt, misplaced) fails here, as in deploy_manifests.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let origin = identity(doc);
    let value: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{origin:?}: {e}"));
    let mut diffs = Vec::new();
    diff("", doc, &serde_json::to_value(&value).unwrap(), &mut diffs);
    assert!(
        diffs.is_empty(),
        "{origin:?} does not round-trip: {diffs:#?}"
    );
    value
}

fn check_typed(doc: &Value) {
    match (str_at(doc, "/apiVersion"), str_at(doc, "/kind")) {
        (Some("v1"), Some("ServiceAccount")) => drop(typed::<ServiceAccount>(doc)),
        (Some("v1"), Some("ConfigMap")) => drop(typed::<ConfigMap>(doc)),
        (Some("v1"), Some("Service")) => drop(typed::<Service>(doc)),
        (Some("apps/v1"), Some("Deployment")) => drop(typed::<Deployment>(doc)),
        (Some("batch/v1"), Some("Job")) => drop(typed::<Job>(doc)),
        (Some("policy/v1"), Some("PodDisruptionBudget")) => drop(typed::<PodDisruptionBudget>(doc)),
        (Some("networking.k8s.io/v1"), Some("NetworkPolicy")) => drop(typed::<NetworkPolicy>(doc)),
        (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => drop(typed::<Role>(doc)),
        (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
            drop(typed::<RoleBinding>(doc))
        }
        (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
            drop(typed::<ClusterRole>(doc))
        }
        (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
            drop(typed::<ClusterRoleBinding>(doc))
        }
        (Some("admissionregistration.k8s.io/v1"), Some("MutatingWebhookConfiguration")) => {
            drop(typed::<MutatingWebhookConfiguration>(doc))
        }
        (Some("admissionregistration.k8s.io/v1"), Some("ValidatingWebhookConfiguration")) => {
            drop(typed::<ValidatingWebhookConfiguration>(doc))
        }
        (Some("admissionregistration.k8s.io/v1"), Some("ValidatingAdmissionPolicy")) => {
            drop(typed::<
                k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
            >(doc))
        }
        (Some("admissionregistration.k8s.io/v1"), Some("ValidatingAdmissionPolicyBinding")) => {
            drop(typed::<
                k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
            >(doc))
        }
        (Some("apiextensions.k8s.io/v1"), Some("CustomResourceDefinition")) => drop(typed::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(doc)),
        // Third-party kinds: the overlay comparison checks them field by field.
        (Some("monitoring.coreos.com/v1" | "cert-manager.io/v1"), Some(_)) => {}
        (av, k) => panic!("{av:?}/{k:?}: a kind this test does not know"),
    }
}

/// Paths where two JSON values differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(x), Some(y)) => diff(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p}: {x} only on the left")),
                    (None, Some(y)) => out.push(format!("{p}: {y} only on the right")),
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
        _ => out.push(format!("{path}: {a} vs {b}")),
    }
}

type Id = (String, String, String);

fn identity(o: &Value) -> Id {
    let s = |p| str_at(o, p).unwrap_or_default().to_owned();
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

fn is_hook(o: &Value) -> bool {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(HOOK))
        .is_some()
}

fn find<'v>(objects: &'v [Value], kind: &str, name: &str) -> &'v Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| str_at(o, "/kind") == Some(kind) && str_at(o, "/metadata/name") == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name}");
    found[0]
}

// === the comparison ===

/// The chart's render split into what corresponds to the overlay and its hooks, with
/// the intentional differences removed (each one asserted first).
struct Normalised {
    objects: BTreeMap<Id, Value>,
    hooks: Vec<Value>,
}

fn normalise(chart: &[Value], enforcing: bool) -> Normalised {
    let chart_label = format!("dhi-admission-{}", chart_version());
    let mut objects = BTreeMap::new();
    let mut hooks = Vec::new();
    for o in chart {
        if is_hook(o) {
            hooks.push(o.clone());
            continue;
        }
        let mut o = o.clone();
        let id = identity(&o);
        // Helm's labels, exactly these values, on every object.
        let labels = o["metadata"]["labels"]
            .as_object_mut()
            .unwrap_or_else(|| panic!("{id:?}: no labels"));
        for (key, value) in [
            ("app.kubernetes.io/instance", RELEASE),
            ("app.kubernetes.io/managed-by", "Helm"),
            ("helm.sh/chart", chart_label.as_str()),
        ] {
            assert_eq!(
                labels.remove(key).as_ref().and_then(Value::as_str),
                Some(value),
                "{id:?}: label {key}"
            );
        }
        if id.0 == "Deployment" {
            let spec = o["spec"]["template"]["spec"].as_object_mut().unwrap();
            assert_eq!(
                spec.remove("nodeSelector"),
                Some(json!({"kubernetes.io/os": "linux"})),
                "{id:?}: nodeSelector"
            );
        }
        if id.0.ends_with("WebhookConfiguration") {
            for entry in o["webhooks"].as_array_mut().unwrap() {
                let name = entry["name"].as_str().unwrap().to_owned();
                // Every entry is fail-open as installed.
                assert_eq!(
                    entry["failurePolicy"], "Ignore",
                    "{id:?} {name} as installed"
                );
            }
        }
        assert!(objects.insert(id.clone(), o).is_none(), "{id:?} twice");
    }
    if enforcing {
        check_failure_policy_hook(&hooks);
    } else {
        assert!(
            !hooks
                .iter()
                .any(|h| str_at(h, "/metadata/name") == Some("dhi-admission-failure-policy")),
            "no failure-policy hook when nothing is to become Fail"
        );
    }
    check_pre_delete_hook(&hooks);
    Normalised { objects, hooks }
}

/// The overlay's objects without its Namespace (asserted to be the only one).
fn overlay_objects(name: &str) -> BTreeMap<Id, Value> {
    let mut out = BTreeMap::new();
    for o in overlay(name) {
        if str_at(&o, "/kind") == Some("Namespace") {
            assert_eq!(str_at(&o, "/metadata/name"), Some(NAMESPACE));
            continue;
        }
        out.insert(identity(&o), o);
    }
    out
}

/// The same identities, and each object equal field for field.
fn assert_same(chart: &BTreeMap<Id, Value>, overlay: &BTreeMap<Id, Value>, what: &str) {
    let chart_ids: BTreeSet<&Id> = chart.keys().collect();
    let overlay_ids: BTreeSet<&Id> = overlay.keys().collect();
    assert_eq!(
        chart_ids, overlay_ids,
        "{what}: objects (kind, namespace, name)"
    );
    let mut diffs = Vec::new();
    for (id, o) in overlay {
        let mut d = Vec::new();
        diff("", &chart[id], o, &mut d);
        diffs.extend(d.into_iter().map(|d| format!("{id:?} {d}")));
    }
    assert!(
        diffs.is_empty(),
        "{what}: chart (left) and overlay (right) differ:\n  {}",
        diffs.join("\n  ")
    );
}

// === the hooks ===

fn annotations(o: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(o["metadata"]["annotations"].clone()).unwrap()
}

fn hook_objects<'h>(hooks: &'h [Value], name: &str) -> Vec<&'h Value> {
    hooks
        .iter()
        .filter(|h| str_at(h, "/metadata/name") == Some(name))
        .collect()
}

/// The hook's objects: ServiceAccount and RBAC first (weight -5), then the Job (0), all
/// for `events`, recreated on each run and deleted on success. Returns the Job.
fn check_hook_objects<'h>(
    hooks: &'h [Value],
    name: &str,
    events: &str,
    kinds: &[&str],
) -> &'h Value {
    let objects = hook_objects(hooks, name);
    let found: BTreeSet<&str> = objects
        .iter()
        .map(|o| str_at(o, "/kind").unwrap())
        .collect();
    let expected: BTreeSet<&str> = kinds.iter().copied().chain(["Job"]).collect();
    assert_eq!(found, expected, "{name}: hook objects");
    for o in &objects {
        let a = annotations(o);
        let weight = if str_at(o, "/kind") == Some("Job") {
            "0"
        } else {
            "-5"
        };
        assert_eq!(
            a,
            BTreeMap::from([
                (HOOK.to_owned(), events.to_owned()),
                ("helm.sh/hook-weight".to_owned(), weight.to_owned()),
                (
                    "helm.sh/hook-delete-policy".to_owned(),
                    "before-hook-creation,hook-succeeded".to_owned()
                ),
            ]),
            "{name} {:?}: annotations",
            str_at(o, "/kind")
        );
        if let Some(ns) = str_at(o, "/metadata/namespace") {
            assert_eq!(ns, NAMESPACE);
        }
    }
    let job = objects
        .into_iter()
        .find(|o| str_at(o, "/kind") == Some("Job"))
        .unwrap();
    let job_typed: Job = typed(job);
    let pod = job_typed.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(name));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    // Not selected by the webhook's Service, PDB or NetworkPolicy.
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "dhi-admission-hook"
    );
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.run_as_non_root, Some(true));
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        check_hook_container(c, name);
    }
    // The bindings give the Job's ServiceAccount exactly the hook's own roles.
    for o in hook_objects(hooks, name) {
        if str_at(o, "/kind").is_some_and(|k| k.ends_with("Binding")) {
            assert_eq!(o["roleRef"]["name"], name, "{name}: roleRef");
            assert_eq!(
                o["subjects"],
                json!([{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]),
                "{name}: subjects"
            );
        }
    }
    job
}

fn check_hook_container(c: &Container, hook: &str) {
    let who = format!("{hook} container {}", c.name);
    assert_eq!(c.image.as_deref(), Some(KUBECTL), "{who}");
    // The image's entrypoint is kubectl; there is no shell to run anything else.
    assert!(c.command.is_none(), "{who}: command");
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(65532), "{who}");
    assert_eq!(sc.run_as_group, Some(65532), "{who}");
    assert_eq!(sc.run_as_non_root, Some(true), "{who}");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{who}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{who}");
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()]),
        "{who}"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{who}"
    );
    assert!(c.ports.is_none(), "{who}: no ports");
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key("memory")),
        "{who}: memory limit"
    );
}

fn rules_of(o: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(o["rules"].clone()).unwrap()
}

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        resource_names: Some(strings(names)),
        verbs: strings(verbs),
        non_resource_urls: None,
    }
}

fn args(job: &Value, list: &str, name: &str) -> Vec<String> {
    let containers = job["spec"]["template"]["spec"][list].as_array().unwrap();
    let c = containers
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name}"));
    serde_json::from_value(c["args"].clone()).unwrap()
}

fn check_failure_policy_hook(hooks: &[Value]) {
    let name = "dhi-admission-failure-policy";
    let job = check_hook_objects(
        hooks,
        name,
        "post-install,post-upgrade",
        &[
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        ],
    );
    let configs = [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ];
    let objects = hook_objects(hooks, name);
    let role = objects.iter().find(|o| o["kind"] == "Role").unwrap();
    assert_eq!(
        rules_of(role),
        [rule(
            &["apps"],
            &["deployments"],
            &[NAME],
            &["get", "list", "watch"]
        )]
    );
    let cluster_role = objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    assert_eq!(
        rules_of(cluster_role),
        [rule(
            &["admissionregistration.k8s.io"],
            &configs,
            &[NAME],
            &["get", "list", "watch", "patch"]
        )]
    );

    // In order: the Deployment Available, both caBundles set, then each default entry to
    // Fail, guarded by a test of its name.
    let init: Vec<&str> = job["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["wait-available", "wait-ca-bundle", "fail-mutating"]);
    let wait = args(job, "initContainers", "wait-available");
    assert_eq!(
        wait,
        [
            "wait",
            "--namespace=dhi-system",
            "--for=condition=Available",
            "--timeout=240s",
            "deployment/dhi-admission"
        ]
    );
    let ca = args(job, "initContainers", "wait-ca-bundle");
    assert_eq!(
        ca,
        [
            "wait",
            "--for=jsonpath={.webhooks[0].clientConfig.caBundle}",
            "--timeout=240s",
            "mutatingwebhookconfiguration/dhi-admission",
            "validatingwebhookconfiguration/dhi-admission"
        ]
    );
    for (list, container, kind, entry) in [
        (
            "initContainers",
            "fail-mutating",
            "mutatingwebhookconfiguration",
            "mutate.dhi.io",
        ),
        (
            "containers",
            "fail-validating",
            "validatingwebhookconfiguration",
            "validate.dhi.io",
        ),
    ] {
        let a = args(job, list, container);
        assert_eq!(a[..4], ["patch", kind, NAME, "--type=json"]);
        let patch: Value = serde_json::from_str(a[4].strip_prefix("--patch=").unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/webhooks/0/name", "value": entry},
                {"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"},
            ])
        );
        assert_eq!(a.len(), 5);
    }
}

fn check_pre_delete_hook(hooks: &[Value]) {
    let name = "dhi-admission-pre-delete";
    let job = check_hook_objects(
        hooks,
        name,
        "pre-delete",
        &["ServiceAccount", "ClusterRole", "ClusterRoleBinding"],
    );
    let cluster_role = hook_objects(hooks, name)
        .into_iter()
        .find(|o| o["kind"] == "ClusterRole")
        .unwrap();
    assert_eq!(
        rules_of(cluster_role),
        [rule(
            &["admissionregistration.k8s.io"],
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations"
            ],
            &[NAME],
            &["get", "delete"]
        )]
    );
    assert_eq!(
        args(job, "containers", "delete-webhook-configurations"),
        [
            "delete",
            "mutatingwebhookconfiguration/dhi-admission",
            "validatingwebhookconfiguration/dhi-admission",
            "--ignore-not-found",
            "--wait=false"
        ]
    );
    assert!(job["spec"]["template"]["spec"]["initContainers"].is_null());
}

/// `dhi-admission check -o json` on the hook Jobs: the project's own policy admits them,
/// with nothing to patch and nothing to warn about.
fn check_with_policy(jobs: &[&Value]) {
    // One JSON document (check reads JSON input as a single document): a List.
    let input = json!({"apiVersion": "v1", "kind": "List", "items": jobs});
    let out = output_with_stdin(
        dhi(&["check", "-o", "json", "-"]),
        input.to_string().as_bytes(),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), jobs.len(), "{report:#}");
    for o in objects {
        assert_eq!(o["kind"], "Job");
        assert_eq!(o["allowed"], true, "{o:#}");
        assert_eq!(o["violations"], json!([]), "{o:#}");
        assert_eq!(o["warnings"], json!([]), "{o:#}");
        assert_eq!(o["patch"], json!([]), "{o:#}");
    }
}

// === tests ===

#[test]
fn default_values_render_the_enforce_overlay() {
    let Some(helm) = helm() else { return };
    let chart = template(&helm, &[]);
    let n = normalise(&chart, true);
    assert_same(
        &n.objects,
        &overlay_objects("enforce"),
        "default values vs enforce",
    );
    assert_eq!(
        n.hooks.len(),
        6 + 4,
        "failure-policy and pre-delete hook objects"
    );
}

#[test]
fn audit_mode_renders_the_audit_overlay() {
    let Some(helm) = helm() else { return };
    let chart = template(&helm, &["--set", "mode=audit"]);
    let n = normalise(&chart, false);
    assert_same(&n.objects, &overlay_objects("audit"), "mode=audit vs audit");
}

#[test]
fn cert_manager_renders_the_cert_manager_overlay() {
    let Some(helm) = helm() else { return };
    let chart = template(&helm, &["--set", "certificates.source=cert-manager"]);
    let n = normalise(&chart, true);
    assert_same(
        &n.objects,
        &overlay_objects("cert-manager"),
        "certificates.source=cert-manager vs cert-manager",
    );
}

/// The objects that `values` add to the default rendering.
fn added_by(helm: &Path, values: &[&str]) -> BTreeMap<Id, Value> {
    let without = normalise(&template(helm, &[]), true).objects;
    normalise(&template(helm, values), true)
        .objects
        .into_iter()
        .filter(|(id, _)| !without.contains_key(id))
        .collect()
}

#[test]
fn monitoring_renders_the_monitoring_overlay() {
    let Some(helm) = helm() else { return };
    let on = [
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true",
    ];
    let added = added_by(&helm, &on);
    let monitoring = overlay_objects("monitoring");
    assert_same(&added, &monitoring, "monitoring.*.enabled vs monitoring");
    // The dashboard's ConfigMap is what Grafana's sidecar looks for.
    let dashboard = &monitoring[&(
        "ConfigMap".to_owned(),
        NAMESPACE.to_owned(),
        "dhi-admission-dashboard".to_owned(),
    )];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
}

#[test]
fn audit_renders_the_audit_reports_overlays() {
    let Some(helm) = helm() else { return };
    let on = [
        "--set",
        "audit.enabled=true",
        "--set",
        "audit.crds.install=true",
    ];
    let mut added = added_by(&helm, &on);
    // The chart keeps the CRDs on uninstall: deleting them would delete every report,
    // Kyverno's and Policy Reporter's included.
    for (id, o) in added
        .iter_mut()
        .filter(|(id, _)| id.0 == "CustomResourceDefinition")
    {
        let annotations = o["metadata"].as_object_mut().unwrap().remove("annotations");
        assert_eq!(
            annotations,
            Some(json!({"helm.sh/resource-policy": "keep"})),
            "{id:?}"
        );
    }
    let mut overlays = overlay_objects("audit-reports");
    overlays.extend(overlay_objects("policyreport-crds"));
    assert_same(
        &added,
        &overlays,
        "audit.enabled, audit.crds.install vs audit-reports, policyreport-crds",
    );
    // The audit's options reach its arguments, and only when set.
    let set = [
        "--set",
        "audit.enabled=true",
        "--set",
        "audit.resyncSeconds=120",
        "--set",
        "audit.detectRuntimePorts=true",
        "--set",
        "audit.metricsNamespaceLabel=true",
    ];
    let chart = template(&helm, &set);
    let deployment: Deployment = typed(find(&chart, "Deployment", "dhi-admission-audit"));
    let spec = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        spec.containers[0].args.as_deref().unwrap()[7..],
        [
            "--resync-seconds",
            "120",
            "--detect-runtime-ports",
            "--metrics-namespace-label"
        ]
    );
    assert!(
        !chart
            .iter()
            .any(|o| o["kind"] == "CustomResourceDefinition"),
        "CRDs only with audit.crds.install"
    );
}

#[test]
fn hooks_run_least_privileged_and_pass_the_policy() {
    let Some(helm) = helm() else { return };
    let chart = template(&helm, &[]);
    let hooks: Vec<&Value> = chart.iter().filter(|o| is_hook(o)).collect();
    let jobs: Vec<&Value> = hooks
        .iter()
        .copied()
        .filter(|o| o["kind"] == "Job")
        .collect();
    assert_eq!(jobs.len(), 2);
    check_with_policy(&jobs);
    // The webhook's Service selects the webhook's pods, never a hook's.
    let service: Service = typed(find(&chart, "Service", NAME));
    let selector = service.spec.unwrap().selector.unwrap();
    for job in &jobs {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(job["spec"]["template"]["metadata"]["labels"].clone()).unwrap();
        assert!(
            !selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "{:?}",
            identity(job)
        );
    }
}

#[test]
fn values_reach_the_objects() {
    let Some(helm) = helm() else { return };
    let image = "registry.example.com/platform/dhi-admission:9.9.9";
    let chart = template_in(
        &helm,
        "webhooks",
        &[
            "--set",
            &format!("image={image}"),
            "--set",
            "replicas=3",
            "--set",
            "webhook.excludedNamespaces={kube-system,istio-system}",
            "--set",
            "webhook.objectSelector.matchLabels.team=platform",
            "--set",
            "webhook.timeoutSeconds=3",
            "--set",
            "failurePolicy=Ignore",
            "--set",
            "policy=mode: audit\n",
            "--set",
            "podDisruptionBudget.enabled=false",
            "--set",
            "imagePullSecrets[0].name=dhi-pull",
        ],
    );
    // Pull secrets reach every pod: the webhook's and the hooks' (dhi.io/kubectl).
    for (kind, name, pointer) in [
        ("Deployment", NAME, "/spec/template/spec/imagePullSecrets"),
        (
            "Job",
            "dhi-admission-pre-delete",
            "/spec/template/spec/imagePullSecrets",
        ),
    ] {
        assert_eq!(
            find(&chart, kind, name).pointer(pointer),
            Some(&json!([{"name": "dhi-pull"}])),
            "{kind} {name}"
        );
    }
    // One image setting: every container of the webhook's pods.
    let deployment: Deployment = typed(find(&chart, "Deployment", NAME));
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    let images: Vec<&str> = pod
        .init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .filter_map(|c| c.image.as_deref())
        .collect();
    assert_eq!(images, [image, image, image]);
    let bootstrap = &pod.init_containers.as_ref().unwrap()[0];
    let arm = &pod.containers[1];
    for c in [bootstrap, arm] {
        assert!(
            c.args
                .as_ref()
                .unwrap()
                .windows(2)
                .any(|w| w == ["--namespace", "webhooks"]),
            "{}",
            c.name
        );
    }
    // The release namespace is excluded and called; Ignore means no hook switches to Fail,
    // and the failure-policy container is told to keep every entry Ignore.
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = find(&chart, kind, NAME);
        let intent = config["metadata"]["annotations"]["dhi.io/failure-policy"]
            .as_str()
            .unwrap();
        assert!(!intent.contains("Fail"), "{kind}: {intent}");
        for entry in config["webhooks"].as_array().unwrap() {
            assert_eq!(entry["failurePolicy"], "Ignore");
            assert_eq!(entry["timeoutSeconds"], 3);
            assert_eq!(entry["clientConfig"]["service"]["namespace"], "webhooks");
            assert_eq!(
                entry["namespaceSelector"]["matchExpressions"][0],
                json!({
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", "istio-system", "webhooks"],
                })
            );
            assert_eq!(
                entry["objectSelector"],
                json!({"matchLabels": {"team": "platform"}})
            );
        }
    }
    assert!(
        !chart
            .iter()
            .any(|o| str_at(o, "/metadata/name") == Some("dhi-admission-failure-policy"))
    );
    assert!(!chart.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
    let policy = find(&chart, "ConfigMap", "dhi-admission-policy");
    assert_eq!(policy["data"]["policy.yaml"], "mode: audit\n");
}

#[test]
fn the_chart_policy_and_dashboard_are_the_overlays_files() {
    // The chart cannot read files outside its directory: these are copies, and must stay so.
    for (copy, original) in [
        ("files/policy.yaml", "deploy/base/policy.yaml"),
        (
            "files/dashboard.json",
            "deploy/overlays/monitoring/dashboards/dhi-admission.json",
        ),
        (
            "files/policyreports.yaml",
            "deploy/overlays/policyreport-crds/policyreports.yaml",
        ),
        (
            "files/clusterpolicyreports.yaml",
            "deploy/overlays/policyreport-crds/clusterpolicyreports.yaml",
        ),
    ] {
        assert_eq!(
            read(&chart_dir().join(copy)),
            read(&repo().join(original)),
            "deploy/helm/dhi-admission/{copy} differs from {original}: copy it again"
        );
    }
}

#[test]
fn misspelt_or_invalid_values_fail_the_render() {
    let Some(helm) = helm() else { return };
    for (set, complaint) in [
        ("mode=enforcing", "mode"),
        ("failurePolicy=fail", "failurePolicy"),
        ("webhook.timeoutSecond=3", "timeoutSecond"),
        ("webhook.timeoutSeconds=60", "timeoutSeconds"),
        ("certificates.source=vault", "source"),
        ("monitoring.serviceMonitor.enable=true", "enable"),
        ("replica=3", "replica"),
        ("image=Not A Reference", "image"),
        ("hooks.image=", "image"),
    ] {
        let out = run_template(&helm, NAMESPACE, &["--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(complaint),
            "--set {set}: {stderr}"
        );
    }
}
