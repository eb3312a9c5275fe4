//! A stand-in API server for `dhi-admission scan`: generated namespaces, workloads and
//! pods served as kube-apiserver lists them (`limit`/`continue` paging, one namespace
//! or all), over plain HTTP on loopback. Used by `bench/scan.sh` (through
//! `examples/scan_standin.rs`) and by `tests/scan_cli.rs`.
//!
//! Each namespace `ns-NNN` holds `workloads` workloads of `pods` pods each, in a fixed
//! rotation of kinds and images (see [`KINDS`] and [`IMAGES`]), so the counts a scan
//! reports follow from the shape. Objects carry what real ones carry (labels,
//! annotations, managedFields, status) so that reading them costs what it costs in a
//! cluster: a pod is about 2.3 KiB of JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How big the generated cluster is.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Namespaces `ns-000`, `ns-001`, ...
    pub namespaces: usize,
    /// Workloads per namespace.
    pub workloads: usize,
    /// Pods per workload.
    pub pods: usize,
}

/// The workload kinds in rotation: workload `i` of a namespace is `KINDS[i % 10]`.
/// Seven Deployments (each with a ReplicaSet), a StatefulSet, a DaemonSet and a CronJob
/// (with a Job).
pub const KINDS: [&str; 10] = [
    "Deployment",
    "Deployment",
    "StatefulSet",
    "Deployment",
    "DaemonSet",
    "Deployment",
    "Deployment",
    "CronJob",
    "Deployment",
    "Deployment",
];

/// The app container's image of workload `i` is `IMAGES[i % 5]`; every pod also has a
/// `docker.io/istio/proxyv2:1.30.3-distroless` sidecar, which the webhook rewrites.
pub const IMAGES: [&str; 5] = [
    "nginx:1.31",
    "dhi.io/nginx:1.31",
    "registry.example.com/team/app:2",
    "dhi.io/python:3.13-dev",
    "nginx:1.27",
];

/// Every list the stand-in serves: items by collection (`pods`, `deployments`, ...),
/// each with its namespace and its JSON.
pub struct Cluster {
    lists: BTreeMap<&'static str, Vec<(String, String)>>,
    namespaces: Vec<(String, String)>,
}

fn meta(name: &str, ns: &str, uid: &str, owner: Option<(&str, &str, &str, &str)>) -> Value {
    let mut meta = json!({
        "name": name, "namespace": ns, "uid": uid, "resourceVersion": "4242",
        "creationTimestamp": "2026-11-30T10:00:00Z",
        "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop",
                   "pod-template-hash": "5d8f9c7b6"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"},
        "managedFields": [{
            "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/name": {},
                "f:pod-template-hash": {}}, "f:ownerReferences": {".": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {},
                    "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {},
                    "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                    "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {},
                    "f:schedulerName": {}, "f:securityContext": {},
                    "f:terminationGracePeriodSeconds": {}}},
        }],
    });
    if let Some((api_version, kind, owner_name, owner_uid)) = owner {
        meta["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind,
            "name": owner_name, "uid": owner_uid, "controller": true,
            "blockOwnerDeletion": true}]);
    }
    meta
}

fn pod_spec(image: &str) -> Value {
    let container = |name: &str, image: &str, port: u16| {
        json!({
            "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": port, "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "eu-west-1"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"memory": "256Mi"}},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        })
    };
    json!({
        "containers": [
            container("app", image, 8080),
            container("proxy", "docker.io/istio/proxyv2:1.30.3-distroless", 15090),
        ],
        "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
        "securityContext": {}, "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
        "nodeName": "node-7", "enableServiceLinks": true,
    })
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app.kubernetes.io/name": "w"}}, "spec": pod_spec(image)})
}

/// A workload object of `kind` whose pod template runs `image`.
fn workload(kind: &str, name: &str, ns: &str, uid: &str, image: &str) -> Value {
    let (api_version, spec) = match kind {
        "CronJob" => (
            "batch/v1",
            json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template(image)}}}),
        ),
        "Job" => ("batch/v1", json!({"template": template(image)})),
        _ => (
            "apps/v1",
            json!({"replicas": 5, "selector": {"matchLabels": {"app.kubernetes.io/name": "w"}},
                   "template": template(image)}),
        ),
    };
    json!({"apiVersion": api_version, "kind": kind, "metadata": meta(name, ns, uid, None),
           "spec": spec, "status": {"replicas": 5, "readyReplicas": 5}})
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "ReplicaSet" => "replicasets",
        "CronJob" => "cronjobs",
        "Job" => "jobs",
        _ => "pods",
    }
}

impl Cluster {
    /// Generates the objects of `shape`.
    pub fn generate(shape: Shape) -> Self {
        let mut lists: BTreeMap<&'static str, Vec<(String, String)>> = BTreeMap::new();
        let mut namespaces = Vec::new();
        let mut push = |plural: &'static str, ns: &str, object: &Value| {
            lists
                .entry(plural)
                .or_default()
                .push((ns.to_owned(), object.to_string()));
        };
        for n in 0..shape.namespaces {
            let ns = format!("ns-{n:03}");
            // Every tenth namespace audits, every twenty-fifth is off.
            let mut labels = json!({"kubernetes.io/metadata.name": ns});
            if n % 25 == 24 {
                labels["dhi.io/mode"] = json!("off");
            } else if n % 10 == 9 {
                labels["dhi.io/mode"] = json!("audit");
            }
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "uid": format!("ns-{n}"), "labels": labels},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            namespaces.push((ns.clone(), namespace.to_string()));
            for w in 0..shape.workloads {
                let kind = KINDS[w % KINDS.len()];
                let image = IMAGES[w % IMAGES.len()];
                let name = format!("{}-{w}", kind.to_lowercase());
                let uid = format!("{ns}-w{w}");
                push(plural(kind), &ns, &workload(kind, &name, &ns, &uid, image));
                // The object that owns the pods: a ReplicaSet or Job in between, or the workload.
                let (owner_kind, owner_api, owner_name, owner_uid) = match kind {
                    "Deployment" | "CronJob" => {
                        let (mid_kind, api) = if kind == "Deployment" {
                            ("ReplicaSet", "apps/v1")
                        } else {
                            ("Job", "batch/v1")
                        };
                        let mid_name = format!("{name}-5d8f9c7b6");
                        let mid_uid = format!("{uid}-m");
                        let mut mid = workload(mid_kind, &mid_name, &ns, &mid_uid, image);
                        let api_version = if kind == "Deployment" {
                            "apps/v1"
                        } else {
                            "batch/v1"
                        };
                        mid["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version,
                            "kind": kind, "name": name, "uid": uid, "controller": true}]);
                        push(plural(mid_kind), &ns, &mid);
                        (mid_kind, api, mid_name, mid_uid)
                    }
                    _ => (kind, "apps/v1", name.clone(), uid.clone()),
                };
                for p in 0..shape.pods {
                    let pod_name = format!("{owner_name}-{p:05}");
                    let pod_meta = meta(
                        &pod_name,
                        &ns,
                        &format!("{owner_uid}-p{p}"),
                        Some((owner_api, owner_kind, &owner_name, &owner_uid)),
                    );
                    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
                        "spec": pod_spec(image),
                        "status": {"phase": "Running", "podIP": "10.1.2.3", "hostIP": "10.0.0.7",
                                   "startTime": "2026-11-30T10:00:01Z",
                                   "conditions": [{"type": "Ready", "status": "True"}]}});
                    push("pods", &ns, &pod);
                }
            }
        }
        Self { lists, namespaces }
    }

    /// Adds a PodTemplate `name` in `ns` whose template runs `image`: a kind that runs no
    /// pod itself but that the webhook judges, and so `scan` too.
    // tests/scan_cli.rs adds one; the benchmark's example does not.
    #[allow(dead_code)]
    pub fn with_pod_template(mut self, ns: &str, name: &str, image: &str) -> Self {
        let object = json!({"apiVersion": "v1", "kind": "PodTemplate",
            "metadata": meta(name, ns, &format!("{ns}-{name}"), None), "template": template(image)});
        self.lists
            .entry("podtemplates")
            .or_default()
            .push((ns.to_owned(), object.to_string()));
        self
    }

    /// Serves the cluster on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let app = Router::new().fallback(handle).with_state(Arc::new(self));
        axum::serve(listener, app).await
    }

    /// The list or object at `path`, paged by `query`.
    fn answer(&self, path: &str, query: Option<&str>) -> Response {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // /api/v1/... or /apis/GROUP/v1/...
        let rest = match segments.as_slice() {
            ["api", "v1", rest @ ..] | ["apis", _, "v1", rest @ ..] => rest,
            _ => return not_found(path),
        };
        let (ns, plural) = match rest {
            ["namespaces"] => return self.page(&self.namespaces, None, query, "NamespaceList"),
            // As for a user whose Role covers one namespace's workloads, not the Namespace.
            ["namespaces", ns] if ns.starts_with("forbidden-") => {
                return forbidden(&format!(
                    "namespaces \"{ns}\" is forbidden: User \"standin\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"{ns}\""
                ));
            }
            ["namespaces", ns] => {
                return match self.namespaces.iter().find(|(n, _)| n == ns) {
                    Some((_, object)) => json_response(object.clone()),
                    None => not_found(path),
                };
            }
            ["namespaces", ns, plural] => (Some(*ns), *plural),
            [plural] => (None, *plural),
            _ => return not_found(path),
        };
        match self.lists.get(plural) {
            Some(items) => self.page(items, ns, query, "List"),
            None => self.page(&[], ns, query, "List"),
        }
    }

    fn page(
        &self,
        items: &[(String, String)],
        ns: Option<&str>,
        query: Option<&str>,
        kind: &str,
    ) -> Response {
        let param = |name: &str| {
            query?
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let limit = param("limit").unwrap_or(usize::MAX);
        let start = param("continue").unwrap_or(0);
        let selected: Vec<&String> = items
            .iter()
            .filter(|(n, _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, object)| object)
            .skip(start)
            .take(limit.saturating_add(1))
            .collect();
        let more = selected.len() > limit;
        let mut body =
            String::with_capacity(selected.iter().map(|s| s.len() + 1).sum::<usize>() + 128);
        body.push_str(r#"{"apiVersion":"v1","kind":""#);
        body.push_str(kind);
        body.push_str(r#"","metadata":{"resourceVersion":"4242""#);
        if more {
            body.push_str(&format!(r#","continue":"{}""#, start + limit));
        }
        body.push_str(r#"},"items":["#);
        for (i, object) in selected.iter().take(limit).enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(object);
        }
        body.push_str("]}");
        json_response(body)
    }
}

async fn handle(
    State(cluster): State<Arc<Cluster>>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    cluster.answer(uri.path(), query.as_deref())
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn not_found(path: &str) -> Response {
    let message = format!("the server could not find the requested resource ({path})");
    failure(StatusCode::NOT_FOUND, "NotFound", &message)
}

fn forbidden(message: &str) -> Response {
    failure(StatusCode::FORBIDDEN, "Forbidden", message)
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        status.to_string(),
    )
        .into_response()
}

/// A kubeconfig for `http://ADDR`, with a token that the stand-in ignores.
pub fn kubeconfig(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: standin\n  user:\n    token: standin\ncontexts:\n- name: standin\n  context:\n    \
         cluster: standin\n    user: standin\n    namespace: ns-000\ncurrent-context: standin\n"
    )
}
