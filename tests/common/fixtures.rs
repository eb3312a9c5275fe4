//! AdmissionReview fixtures and builders, shared by the integration tests and the
//! engine's benchmarks (`crates/dhi-policy/benches/engine.rs` includes this file).
//!
//! Depends on `serde_json` only. The files under `tests/fixtures/reviews/` are what
//! kube-apiserver sends (pretty-printed); the generated large pod is deterministic, so
//! its size and answer are stable from run to run.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// Where the review fixtures live: `tests/fixtures/reviews` of the workspace, found from
/// whichever package includes this file (the root's tests, the engine's benchmarks).
pub fn fixtures_dir() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("tests/fixtures/reviews"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("no tests/fixtures/reviews above {}", manifest.display()))
}

/// The Istio-injected pod (istio-init as root with NET_ADMIN/NET_RAW, the app on
/// `dhi.io/python:3.13`, the `istio-proxy` sidecar as 1337), about 9 KB compact.
pub const ISTIO_POD: &str = "istio-pod.json";
/// A one-container pod on `dhi.io/nginx:1.31`, port 8080.
pub const SMALL_POD: &str = "small-pod.json";
/// A Deployment of `dhi.io/node:24`.
pub const DEPLOYMENT: &str = "deployment.json";

/// The raw bytes of a fixture file, exactly as stored.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// A fixture parsed.
pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

/// A fixture re-serialised compactly, as kube-apiserver sends it.
pub fn fixture_compact(name: &str) -> Vec<u8> {
    serde_json::to_vec(&fixture(name)).expect("serialise")
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A fresh request uid, unique within the process (UUID-shaped, deterministic order).
pub fn next_uid() -> String {
    let n = NEXT_UID.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Replaces the request uid of a review; returns the new uid.
pub fn set_uid(review: &mut Value, uid: &str) {
    review["request"]["uid"] = json!(uid);
}

/// A container with a name and an image.
pub fn container(name: &str, image: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    })
}

/// A container that declares `port`.
pub fn container_with_port(name: &str, image: &str, port: i64) -> Value {
    let mut c = container(name, image);
    c["ports"] = json!([{"name": "http", "containerPort": port, "protocol": "TCP"}]);
    c
}

/// A pod object in `namespace` with these containers and an empty pod securityContext.
pub fn pod(name: &str, namespace: &str, containers: Vec<Value>) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "containers": containers,
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler"
        },
        "status": {}
    })
}

/// A Deployment object whose template has these containers.
pub fn deployment(name: &str, namespace: &str, containers: Vec<Value>) -> Value {
    json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": containers,
                    "restartPolicy": "Always",
                    "securityContext": {}
                }
            }
        },
        "status": {}
    })
}

/// `(group, version, kind, resource)` for an object's `apiVersion` and `kind`.
fn gvkr(object: &Value) -> (String, String, String, String) {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or("Pod").to_owned();
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.to_owned()),
    };
    let resource = match kind.as_str() {
        "Pod" => "pods".to_owned(),
        "Deployment" => "deployments".to_owned(),
        "StatefulSet" => "statefulsets".to_owned(),
        "DaemonSet" => "daemonsets".to_owned(),
        "ReplicaSet" => "replicasets".to_owned(),
        "Job" => "jobs".to_owned(),
        "CronJob" => "cronjobs".to_owned(),
        other => format!("{}s", other.to_lowercase()),
    };
    (group, version, kind, resource)
}

/// A CREATE review of `object` with a fresh uid, shaped like kube-apiserver's.
pub fn review(object: &Value) -> Value {
    review_op(object, "CREATE", None)
}

/// A review of `object` for `operation` (CREATE, UPDATE, DELETE, CONNECT), with
/// `old_object` for UPDATE and DELETE.
pub fn review_op(object: &Value, operation: &str, old_object: Option<&Value>) -> Value {
    let source = if object.is_null() {
        old_object.unwrap_or(object)
    } else {
        object
    };
    let (group, version, kind, resource) = gvkr(source);
    let namespace = source["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = source["metadata"]["name"].as_str().unwrap_or("");
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        _ => "PodExecOptions",
    };
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": next_uid(),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": old_object.cloned().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// A pod that breaks every rule, for `/validate`: `web` (`dhi.io/nginx:1.31`) runs as
/// root on port 80, `tools` is a dev variant, `bad` has an invalid image reference.
pub fn violating_pod(name: &str) -> Value {
    let mut web = container_with_port("web", "dhi.io/nginx:1.31", 80);
    web["securityContext"] = json!({"runAsUser": 0});
    pod(
        name,
        "default",
        vec![
            web,
            container("tools", "dhi.io/python:3.13-dev"),
            container("bad", "docker.io/Library/Nginx:1.29"),
        ],
    )
}

/// A nonroot hardened container on port 80, denied by `privileged-port` only.
pub fn low_port_pod(name: &str) -> Value {
    pod(
        name,
        "default",
        vec![container_with_port("web", "dhi.io/nginx:1.31", 80)],
    )
}

/// A pod of about 200 KB: 24 containers with 88 environment variables each, mixing
/// hardened images, mapped upstream images (rewritten) and unmapped ones (untouched).
pub fn large_pod() -> Value {
    large_pod_sized(24, 88)
}

/// A deterministic pod with `containers` containers of `env` variables each.
pub fn large_pod_sized(containers: usize, env: usize) -> Value {
    let images = [
        "dhi.io/python:3.13",
        "docker.io/istio/proxyv2:1.30.3",
        "dhi.io/node:24",
        "docker.io/library/nginx:1.31",
    ];
    let list: Vec<Value> = (0..containers)
        .map(|i| {
            let image = images[i % images.len()];
            let mut c = container_with_port(&format!("worker-{i:03}"), image, 8000 + i as i64);
            c["env"] = Value::Array(
                (0..env)
                    .map(|j| {
                        json!({
                            "name": format!("WORKER_{i:03}_SETTING_{j:03}"),
                            "value": format!("value-{i:03}-{j:03}-0123456789abcdefghijklmnopqrstuv")
                        })
                    })
                    .collect(),
            );
            c["args"] = json!(["--worker", i.to_string(), "--log-format=json"]);
            if image.contains("istio") {
                c["securityContext"] =
                    json!({"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true});
            }
            c
        })
        .collect();
    let mut p = pod("batch-workers", "data", list);
    p["metadata"]["annotations"] = json!({"example.com/owner": "data-platform"});
    p
}

/// The review of [`large_pod`].
pub fn large_pod_review() -> Value {
    review(&large_pod())
}
