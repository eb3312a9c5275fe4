use serde_json::{Value, json};

use super::summary::{Counts, Summary};
use super::*;
use dhi_policy::{PolicyFile, decode_object};

fn engine(policy: &str) -> Engine {
    Engine::new(PolicyFile::from_yaml(policy).unwrap())
}

fn pod(containers: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": containers}}).to_string()
}

fn deployment(containers: Value) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": containers}}},
    })
    .to_string()
}

fn judged(
    engine: &Engine,
    kind: WorkloadKind,
    namespace: &str,
    mode: NamespaceMode,
    json: &str,
) -> WorkloadReport {
    let workload = Workload {
        kind,
        namespace,
        name: "w",
        uid: None,
        mode,
        object: decode_object(json).unwrap(),
    };
    judge(engine, workload).unwrap()
}

const ENFORCE: NamespaceMode = NamespaceMode::Judged(Mode::Enforce);
const AUDIT: NamespaceMode = NamespaceMode::Judged(Mode::Audit);

fn dev_pod() -> String {
    pod(json!([{"name": "py", "image": "dhi.io/python:3.13-dev"}]))
}

/// A runtime image with the user it runs as already set: nothing to patch.
fn hardened_pod() -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "spec": {
            "securityContext": {"fsGroup": 65532},
            "containers": [{
                "name": "web", "image": "dhi.io/nginx:1.31",
                "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true},
            }],
        },
    })
    .to_string()
}

fn outcomes(report: &WorkloadReport) -> Vec<(&'static str, &'static str)> {
    report
        .rules
        .iter()
        .map(|(rule, outcome)| (rule.as_str(), outcome.as_str()))
        .collect()
}

#[test]
fn namespace_modes_follow_the_label_as_the_manifests_route_it() {
    let resolve = |label| NamespaceMode::resolve(label, Mode::Enforce);
    assert_eq!(resolve(None), ENFORCE);
    assert_eq!(resolve(Some("audit")), AUDIT);
    assert_eq!(resolve(Some("off")), NamespaceMode::Off);
    assert_eq!(resolve(Some("warn")), NamespaceMode::Judged(Mode::Warn));
    // Not routed by the manifests: the server's mode.
    assert_eq!(resolve(Some("enforce")), ENFORCE);
    assert_eq!(NamespaceMode::resolve(Some("enforce"), Mode::Audit), AUDIT);
    // A label only relaxes: in an audit install a warn namespace is audited.
    assert_eq!(NamespaceMode::resolve(Some("warn"), Mode::Audit), AUDIT);
    assert_eq!(
        NamespaceMode::resolve(Some("audit"), Mode::Warn),
        NamespaceMode::Judged(Mode::Audit)
    );
}

#[test]
fn a_violation_is_denied_where_the_namespace_enforces_and_needs_a_fix_where_it_audits() {
    let engine = Engine::default();
    let denied = judged(&engine, WorkloadKind::Pod, "team", ENFORCE, &dev_pod());
    assert_eq!(denied.verdict, Verdict::Denied);
    assert_eq!(denied.pods, 1);
    assert_eq!(denied.violations.len(), 1);
    let v = &denied.violations[0];
    assert_eq!(
        (v.rule, v.container.as_str(), v.image.as_str()),
        (RuleId::RunAsRoot, "py", "dhi.io/python:3.13-dev")
    );
    assert_eq!(
        v.fix.as_deref(),
        Some(
            "use the runtime variant (tag without -dev), which runs as nonroot, or set a \
             non-zero runAsUser"
        )
    );
    assert_eq!(
        outcomes(&denied),
        [
            ("run-as-root", "fail"),
            ("privileged-port", "pass"),
            ("invalid-image", "pass"),
            ("hardened-image", "pass"),
        ]
    );
    let audited = judged(&engine, WorkloadKind::Pod, "team", AUDIT, &dev_pod());
    assert_eq!(audited.verdict, Verdict::NeedsFix);
    // Judged as enforcing would judge it: the same violations, not audit warnings.
    assert_eq!(audited.violations, denied.violations);
    assert_eq!(audited.warnings, denied.warnings);
}

#[test]
fn hardened_ready_and_not_reviewed() {
    let engine = engine("exempt: {namespaces: [kube-system]}");
    let hardened = judged(&engine, WorkloadKind::Pod, "team", ENFORCE, &hardened_pod());
    assert_eq!(hardened.verdict, Verdict::Hardened);
    assert!(hardened.patch.is_empty() && hardened.images.is_empty());

    // Hardened, but the webhook injects the user: ready, patched in its pods.
    let unpatched = deployment(json!([{"name": "web", "image": "dhi.io/nginx:1.31"}]));
    let ready = judged(
        &engine,
        WorkloadKind::Deployment,
        "team",
        ENFORCE,
        &unpatched,
    );
    assert_eq!(ready.verdict, Verdict::Ready);
    assert_eq!(ready.patched_by, PatchedBy::Pods);
    assert_eq!(ready.pods, 0);
    assert_eq!(
        serde_json::to_value(&ready.patch).unwrap()[0],
        json!({
            "op": "add",
            "path": "/spec/template/spec/containers/0/securityContext",
            "value": {"runAsGroup": 65532, "runAsNonRoot": true, "runAsUser": 65532},
        })
    );

    let exempt = judged(
        &engine,
        WorkloadKind::Pod,
        "kube-system",
        ENFORCE,
        &dev_pod(),
    );
    assert_eq!(exempt.verdict, Verdict::NotReviewed);
    assert_eq!(
        exempt.not_reviewed.as_deref(),
        Some("namespace kube-system is exempt")
    );
    assert!(exempt.violations.is_empty() && exempt.patch.is_empty());
    assert!(exempt.rules.values().all(|o| *o == RuleResult::Skip));

    let off = judged(
        &engine,
        WorkloadKind::Pod,
        "legacy",
        NamespaceMode::Off,
        &dev_pod(),
    );
    assert_eq!(off.verdict, Verdict::NotReviewed);
    assert_eq!(
        off.not_reviewed.as_deref(),
        Some("namespace legacy is labelled dhi.io/mode=off")
    );
}

#[test]
fn upstream_images_carry_their_catalog_equivalent() {
    let engine = Engine::default();
    let json = deployment(json!([
        {"name": "exact", "image": "nginx:1.31"},
        {"name": "old", "image": "nginx:1.27"},
        {"name": "own", "image": "registry.example.com/team/app:2"},
        {"name": "hard", "image": "dhi.io/nginx:1.31"},
    ]));
    let report = judged(&engine, WorkloadKind::Deployment, "team", ENFORCE, &json);
    assert_eq!(report.verdict, Verdict::Ready);
    assert_eq!(
        serde_json::to_value(&report.images).unwrap(),
        json!([
            {"container": "exact", "image": "nginx:1.31",
             "equivalent": "exact", "target": "dhi.io/nginx:1.31"},
            {"container": "old", "image": "nginx:1.27",
             "equivalent": "other-tags", "repository": "dhi.io/nginx", "tag": "1.27",
             "nearest": ["1.30", "1.31"]},
            {"container": "own", "image": "registry.example.com/team/app:2",
             "equivalent": "none"},
        ])
    );
    assert_eq!(report.rules[&Rule::HardenedImage], RuleResult::Warn);
}

#[test]
fn the_json_field_names_are_stable() {
    let report = judged(
        &Engine::default(),
        WorkloadKind::Pod,
        "team",
        ENFORCE,
        &dev_pod(),
    );
    let value = serde_json::to_value(&report).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "images",
            "kind",
            "mode",
            "name",
            "namespace",
            "patch",
            "patched_by",
            "pods",
            "rules",
            "verdict",
            "violations",
            "warnings",
        ]
    );
    assert_eq!(value["kind"], "Pod");
    assert_eq!(value["mode"], "enforce");
    assert_eq!(value["verdict"], "denied");
    assert_eq!(value["patched_by"], "none", "nothing to patch");
    assert_eq!(value["rules"]["run-as-root"], "fail");
    assert_eq!(value["violations"][0]["rule"], "run-as-root");
}

#[test]
fn a_pod_says_more_than_its_template_only_with_findings_of_its_own() {
    let engine = Engine::default();
    let template = deployment(json!([{"name": "web", "image": "nginx:1.31"}]));
    let owner = judged(
        &engine,
        WorkloadKind::Deployment,
        "team",
        ENFORCE,
        &template,
    );
    let same = judged(
        &engine,
        WorkloadKind::Pod,
        "team",
        ENFORCE,
        &pod(json!([{"name": "web", "image": "nginx:1.31"}])),
    );
    assert!(!same.says_more_than(&owner));
    // The webhook already patched it: hardened now, nothing more to say.
    assert!(
        !judged(&engine, WorkloadKind::Pod, "team", ENFORCE, &hardened_pod())
            .says_more_than(&owner)
    );
    // An older image than the template's (a rollout in progress).
    let older = pod(json!([{"name": "web", "image": "nginx:1.27"}]));
    assert!(judged(&engine, WorkloadKind::Pod, "team", ENFORCE, &older).says_more_than(&owner));
    // A violation the template does not have.
    assert!(judged(&engine, WorkloadKind::Pod, "team", ENFORCE, &dev_pod()).says_more_than(&owner));
    // The same patch, at the pod's paths.
    let hardened_template = deployment(json!([{"name": "web", "image": "dhi.io/nginx:1.31"}]));
    let owner = judged(
        &engine,
        WorkloadKind::Deployment,
        "team",
        ENFORCE,
        &hardened_template,
    );
    let unpatched = pod(json!([{"name": "web", "image": "dhi.io/nginx:1.31"}]));
    let pod_report = judged(&engine, WorkloadKind::Pod, "team", ENFORCE, &unpatched);
    assert!(!pod_report.patch.is_empty());
    assert!(!pod_report.says_more_than(&owner));
}

fn sample() -> Vec<WorkloadReport> {
    let engine = engine("exempt: {namespaces: [kube-system]}");
    let mut deployment_report = judged(
        &engine,
        WorkloadKind::Deployment,
        "a",
        ENFORCE,
        &deployment(json!([
            {"name": "web", "image": "nginx:1.31"},
            {"name": "own", "image": "registry.example.com/team/app:2"},
        ])),
    );
    deployment_report.pods = 3;
    vec![
        deployment_report,
        judged(&engine, WorkloadKind::Pod, "a", ENFORCE, &dev_pod()),
        judged(&engine, WorkloadKind::Pod, "b", AUDIT, &dev_pod()),
        judged(&engine, WorkloadKind::Pod, "b", AUDIT, &hardened_pod()),
        judged(
            &engine,
            WorkloadKind::Pod,
            "kube-system",
            ENFORCE,
            &dev_pod(),
        ),
    ]
}

#[test]
fn the_summary_counts_per_namespace_then_for_the_cluster() {
    let summary = Summary::of(&sample());
    let a = Counts {
        workloads: 2,
        pods: 4,
        ready_to_enforce: 1,
        denied: 1,
        has_equivalent: 1,
        no_equivalent: 1,
        ..Counts::default()
    };
    let b = Counts {
        workloads: 2,
        pods: 2,
        already_hardened: 1,
        needs_fix: 1,
        ..Counts::default()
    };
    let kube_system = Counts {
        workloads: 1,
        pods: 1,
        not_reviewed: 1,
        ..Counts::default()
    };
    assert_eq!(
        summary.namespaces.iter().collect::<Vec<_>>(),
        [
            (&"a".to_owned(), &a),
            (&"b".to_owned(), &b),
            (&"kube-system".to_owned(), &kube_system),
        ]
    );
    assert_eq!(
        summary.cluster,
        Counts {
            workloads: 5,
            pods: 7,
            already_hardened: 1,
            ready_to_enforce: 1,
            needs_fix: 1,
            denied: 1,
            not_reviewed: 1,
            has_equivalent: 1,
            equivalent_other_tag: 0,
            no_equivalent: 1,
        }
    );
}

#[test]
fn one_policy_report_per_namespace_with_a_result_per_workload_and_rule() {
    let reports = sample();
    let policy_reports = policyreport::namespace_reports(&reports);
    assert_eq!(
        policy_reports
            .iter()
            .map(|r| (
                r.metadata.namespace.as_deref().unwrap(),
                r.results.len(),
                r.summary
            ))
            .collect::<Vec<_>>(),
        [
            (
                "a",
                8,
                policyreport::ResultCounts {
                    pass: 6,
                    fail: 1,
                    warn: 1,
                    ..Default::default()
                }
            ),
            (
                "b",
                8,
                policyreport::ResultCounts {
                    pass: 7,
                    fail: 1,
                    ..Default::default()
                }
            ),
            (
                "kube-system",
                4,
                policyreport::ResultCounts {
                    skip: 4,
                    ..Default::default()
                }
            ),
        ]
    );
    let a = serde_json::to_value(&policy_reports[0]).unwrap();
    assert_eq!(a["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(a["kind"], "PolicyReport");
    assert_eq!(
        a["metadata"],
        json!({"name": "dhi-admission", "namespace": "a",
               "labels": {"app.kubernetes.io/managed-by": "dhi-admission"}})
    );
    assert_eq!(
        a["results"][3],
        json!({
            "source": "dhi-admission", "policy": "dhi-admission", "rule": "hardened-image",
            "result": "warn", "scored": true,
            "message": "2 containers are not on Docker Hardened Images",
            "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "w", "namespace": "a"}],
            "properties": {
                "equivalent": "web=dhi.io/nginx:1.31, own=none",
                "mode": "enforce", "verdict": "ready",
            },
        })
    );
    let fail = &a["results"][4];
    assert_eq!(fail["rule"], "run-as-root");
    assert_eq!(fail["result"], "fail");
    assert_eq!(
        fail["properties"]["fix"],
        "use the runtime variant (tag without -dev), which runs as nonroot, or set a non-zero runAsUser"
    );
    assert_eq!(fail["properties"]["verdict"], "denied");
}

#[test]
fn the_cluster_report_has_a_result_per_namespace() {
    let cluster = policyreport::cluster_report(&Summary::of(&sample()));
    let value = serde_json::to_value(&cluster).unwrap();
    assert_eq!(value["kind"], "ClusterPolicyReport");
    assert!(value["metadata"].get("namespace").is_none());
    let results: Vec<(&str, &str)> = value["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resources"][0]["name"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [("a", "fail"), ("b", "warn"), ("kube-system", "skip")]
    );
    assert_eq!(
        value["summary"],
        json!({"pass": 0, "fail": 1, "warn": 1, "error": 0, "skip": 1})
    );
    assert_eq!(value["results"][1]["properties"]["needs_fix"], "1");
    assert_eq!(
        value["results"][1]["message"],
        "2 workloads: 1 already hardened, 0 ready to enforce, 1 need a fix, 0 denied, 0 not reviewed"
    );
}

#[test]
fn the_table_lists_each_workload_with_what_it_needs_then_the_summary() {
    let reports = sample();
    let mut out = Vec::new();
    text::write(&mut out, &reports[..1], &Summary::of(&reports[..1])).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\
NAMESPACE  KIND        NAME  MODE     VERDICT  PODS
a          Deployment  w     enforce  ready    3
    image web: nginx:1.31 -> dhi.io/nginx:1.31
    image own: registry.example.com/team/app:2 -> none

NAMESPACE  WORKLOADS  PODS  HARDENED  READY  NEEDS-FIX  DENIED  NOT-REVIEWED  EQUIVALENT  OTHER-TAG  NO-EQUIVALENT
a          1          3     0         1      0          0       0             1           0          1
(cluster)  1          3     0         1      0          0       0             1           0          1
"
    );
}
