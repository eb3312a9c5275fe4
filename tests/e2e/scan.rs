//! `dhi-admission scan` against the real API server: workloads created as a brownfield
//! cluster has them (no webhook sees these namespaces), a Deployment with its ReplicaSet
//! and pods made by hand (there is no controller-manager), and the report read back.

use serde_json::{Value, json};

use super::cluster::{apps, bare, create, namespace_with, pods};
use super::webhook::run;

/// Creates `object` in the collection at `path`, asserting success; returns it as stored.
async fn created(client: &kube::Client, path: &str, object: &Value) -> Value {
    let answer = create(client, path, object, false).await;
    assert!(
        (200..300).contains(&answer.status),
        "{}: {}",
        answer.status,
        answer.body
    );
    answer.body
}

fn owner(object: &Value) -> Value {
    json!([{
        "apiVersion": object["apiVersion"], "kind": object["kind"],
        "name": object["metadata"]["name"], "uid": object["metadata"]["uid"],
        "controller": true,
    }])
}

fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}

/// A pod of the `web` ReplicaSet, as its controller would create it from the template.
fn web_pod(name: &str, image: &str, replica_set: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": owner(replica_set)},
        "spec": {"containers": [{"name": "web", "image": image}]},
    })
}

/// A pod that already runs as the webhook would make it run.
fn hardened_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hardened"},
        "spec": {
            "securityContext": {"fsGroup": 65532},
            "containers": [{
                "name": "app", "image": "dhi.io/nginx:1.31",
                "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true},
            }],
        },
    })
}

fn workload(kind: &str, api_version: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    })
}

/// Runs `scan ARGS --output json`; returns the exit code and the report.
fn scan(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec![
        "scan",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--output",
        "json",
    ];
    all.extend_from_slice(args);
    let out = run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

/// The report of the workload `name`.
fn workload_named<'a>(report: &'a Value, name: &str) -> &'a Value {
    let workloads = report["workloads"].as_array().unwrap();
    workloads.iter().find(|w| w["name"] == name).unwrap()
}

/// What each workload's report says, without uids and patches.
fn rows(report: &Value, namespace: &str) -> Vec<Value> {
    report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["namespace"] == namespace)
        .map(|w| {
            json!({
                "kind": w["kind"], "name": w["name"], "mode": w["mode"],
                "verdict": w["verdict"], "pods": w["pods"], "owner": w.get("owner"),
                "rules": w["rules"],
                "violations": w["violations"].as_array().unwrap().iter()
                    .map(|v| json!([v["rule"], v["container"], v["image"]])).collect::<Vec<_>>(),
                "images": w["images"],
                "patch_ops": w["patch"].as_array().unwrap().len(),
                "patched_by": w["patched_by"],
            })
        })
        .collect()
}

const PASS: &str = "pass";

fn rules(run_as_root: &str, hardened_image: &str) -> Value {
    json!({"run-as-root": run_as_root, "privileged-port": PASS, "invalid-image": PASS,
           "hardened-image": hardened_image})
}

#[tokio::test]
async fn scan_reports_each_owner_once_with_fixes_patches_and_equivalents() {
    // Unrouted: no webhook of any test sees these namespaces, as in a cluster before
    // dhi-admission is installed.
    let Some(bare) = bare("scan", false).await else {
        return;
    };
    let (cp, client, ns) = (bare.cp, bare.client, bare.ns);
    let audit = namespace_with(&client, "scan-audit", false, &[("dhi.io/mode", "audit")]).await;
    let off = namespace_with(&client, "scan-off", false, &[("dhi.io/mode", "off")]).await;

    let web = workload("Deployment", "apps/v1", "web", "nginx:1.31");
    let deployment = created(&client, &apps(&ns, "deployments"), &web).await;
    let mut replica_set = workload("ReplicaSet", "apps/v1", "web-5d8f", "nginx:1.31");
    replica_set["metadata"]["ownerReferences"] = owner(&deployment);
    let replica_set = created(&client, &apps(&ns, "replicasets"), &replica_set).await;
    // Two pods as the ReplicaSet made them, and one left from an older template.
    for (name, image) in [
        ("web-5d8f-a", "nginx:1.31"),
        ("web-5d8f-b", "nginx:1.31"),
        ("web-5d8f-c", "nginx:1.27"),
    ] {
        created(&client, &pods(&ns), &web_pod(name, image, &replica_set)).await;
    }
    for p in [
        pod("debug", "dhi.io/python:3.13-dev"),
        hardened_pod(),
        pod("proxy", "docker.io/istio/proxyv2:1.30.3-distroless"),
        pod("app", "registry.example.com/team/app:2"),
    ] {
        created(&client, &pods(&ns), &p).await;
    }
    for other in [&audit, &off] {
        created(
            &client,
            &pods(other),
            &pod("debug", "dhi.io/python:3.13-dev"),
        )
        .await;
    }

    // One namespace: the exact report, exit 1 (a denied workload).
    let (code, report) = scan(&cp.kubeconfig, &["-n", &ns, "--page-size", "2"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["mode"], "enforce");
    assert_eq!(report["errors"], json!([]));
    let nginx = json!([{"container": "web", "image": "nginx:1.31",
                        "equivalent": "exact", "target": "dhi.io/nginx:1.31"}]);
    let denied_rules = rules("fail", PASS);
    assert_eq!(
        rows(&report, &ns),
        [
            json!({"kind": "Deployment", "name": "web", "mode": "enforce", "verdict": "ready",
                   "pods": 2, "owner": null, "rules": rules(PASS, "warn"), "violations": [],
                   "images": nginx, "patch_ops": 0, "patched_by": "none"}),
            json!({"kind": "Pod", "name": "app", "mode": "enforce", "verdict": "ready",
                   "pods": 1, "owner": null, "rules": rules(PASS, "warn"), "violations": [],
                   "images": [{"container": "app", "image": "registry.example.com/team/app:2",
                               "equivalent": "none"}],
                   "patch_ops": 0, "patched_by": "none"}),
            json!({"kind": "Pod", "name": "debug", "mode": "enforce", "verdict": "denied",
                   "pods": 1, "owner": null, "rules": denied_rules, "images": [],
                   "violations": [["run-as-root", "app", "dhi.io/python:3.13-dev"]],
                   "patch_ops": 0, "patched_by": "none"}),
            json!({"kind": "Pod", "name": "hardened", "mode": "enforce", "verdict": "hardened",
                   "pods": 1, "owner": null, "rules": rules(PASS, PASS), "violations": [],
                   "images": [], "patch_ops": 0, "patched_by": "none"}),
            json!({"kind": "Pod", "name": "proxy", "mode": "enforce", "verdict": "ready",
                   "pods": 1, "owner": null, "rules": rules(PASS, "warn"), "violations": [],
                   "images": [{"container": "app",
                               "image": "docker.io/istio/proxyv2:1.30.3-distroless",
                               "equivalent": "exact", "target": "dhi.io/istio-proxyv2:1.30.3"}],
                   "patch_ops": 3, "patched_by": "object"}),
            json!({"kind": "Pod", "name": "web-5d8f-c", "mode": "enforce", "verdict": "ready",
                   "pods": 1, "owner": {"kind": "Deployment", "name": "web"},
                   "rules": rules(PASS, "warn"), "violations": [],
                   "images": [{"container": "web", "image": "nginx:1.27",
                               "equivalent": "other-tags", "repository": "dhi.io/nginx",
                               "tag": "1.27", "nearest": ["1.30", "1.31"]}],
                   "patch_ops": 0, "patched_by": "none"}),
        ]
    );
    let proxy = workload_named(&report, "proxy");
    assert_eq!(
        proxy["patch"],
        json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": "dhi.io/istio-proxyv2:1.30.3"},
            {"op": "add", "path": "/spec/containers/0/securityContext",
             "value": {"runAsGroup": 1337, "runAsNonRoot": true, "runAsUser": 1337}},
            // The API server stores an empty pod securityContext: the patch adds to it.
            {"op": "add", "path": "/spec/securityContext/fsGroup", "value": 1337},
        ])
    );
    let debug = workload_named(&report, "debug");
    assert_eq!(
        debug["violations"][0]["fix"],
        "use the runtime variant (tag without -dev), which runs as nonroot, or set a non-zero runAsUser"
    );
    assert_eq!(
        debug["uid"].as_str().map(str::len),
        Some(36),
        "uids are reported for PolicyReport resources"
    );
    let counts = json!({
        "workloads": 6, "pods": 7, "already_hardened": 1, "ready_to_enforce": 4,
        "needs_fix": 0, "denied": 1, "not_reviewed": 0,
        "has_equivalent": 2, "equivalent_other_tag": 1, "no_equivalent": 1,
    });
    assert_eq!(
        report["summary"],
        json!({"namespaces": {&ns: counts.clone()}, "cluster": counts})
    );

    // Every namespace: the audit namespace needs a fix, the `off` one is not reviewed.
    // Other tests' namespaces come and go meanwhile: only ours are asserted.
    let (_, all) = scan(&cp.kubeconfig, &["-A"]);
    assert_eq!(rows(&all, &ns), rows(&report, &ns));
    assert_eq!(
        all["summary"]["namespaces"][&ns],
        report["summary"]["cluster"]
    );
    assert_eq!(
        rows(&all, &audit),
        [
            json!({"kind": "Pod", "name": "debug", "mode": "audit", "verdict": "needs-fix",
                "pods": 1, "owner": null, "rules": rules("fail", PASS), "images": [],
                "violations": [["run-as-root", "app", "dhi.io/python:3.13-dev"]],
                "patch_ops": 0, "patched_by": "none"})
        ]
    );
    let skip = json!({"run-as-root": "skip", "privileged-port": "skip",
                      "invalid-image": "skip", "hardened-image": "skip"});
    assert_eq!(
        rows(&all, &off),
        [
            json!({"kind": "Pod", "name": "debug", "mode": "off", "verdict": "not-reviewed",
                "pods": 1, "owner": null, "rules": skip, "images": [], "violations": [],
                "patch_ops": 0, "patched_by": "none"})
        ]
    );

    // The PolicyReports, as Policy Reporter would read them.
    let out = run(&[
        "scan",
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
        "-n",
        &ns,
        "--output",
        "policyreport",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(documents.len(), 2, "{text}");
    assert_eq!(documents[0]["kind"], "PolicyReport");
    assert_eq!(documents[0]["metadata"]["namespace"], json!(ns));
    assert_eq!(
        documents[0]["summary"],
        json!({"pass": 19, "fail": 1, "warn": 4, "error": 0, "skip": 0}),
        "6 workloads x 4 rules: one run-as-root failure, four upstream images"
    );
    assert_eq!(documents[1]["kind"], "ClusterPolicyReport");
    assert_eq!(documents[1]["results"][0]["result"], "fail");
}
