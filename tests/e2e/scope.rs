//! Webhooks scoped by the generated `matchConditions` (deploy/base/matchconditions.yaml):
//! the real API server accepts them, and with the webhook DOWN and `failurePolicy: Fail`
//! it admits the pods they exclude and refuses the ones they include.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster::{create, pods, send};
use super::webhook::{apply, configurations, unregister};

/// The shipped configurations, pointed at `url`, with the shipped conditions on both: the
/// validating one as shipped, the mutating one as an install with no sidecar injector
/// after dhi-admission would add them (deploy/README.md).
fn scoped(name: &str, test: &str, url: &str) -> [Value; 2] {
    let mut configs = configurations(name, test, url, None);
    let conditions = configs[1]["webhooks"][0]["matchConditions"].clone();
    assert_eq!(conditions.as_array().map(Vec::len), Some(5));
    for webhook in configs[0]["webhooks"].as_array_mut().unwrap() {
        webhook["matchConditions"] = conditions.clone();
    }
    configs
}

fn pod(image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "scoped"},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}

#[tokio::test]
async fn excluded_pods_do_not_depend_on_the_webhook() {
    const TEST: &str = "scope";
    let Some(cp) = super::cluster::control_plane() else {
        return;
    };
    let client = cp.client().await;
    let ns = super::cluster::namespace(&client, TEST, &[]).await;
    // Nothing listens there: every call fails, and the enforce entries fail closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let name = format!("dhi-e2e-{TEST}");
    let configs = scoped(&name, TEST, &format!("https://127.0.0.1:{port}"));
    // The API server validates (compiles, and checks the cost of) every expression here.
    apply(&client, &configs).await;

    // The API server's configuration informer lags behind the write: wait until a pod the
    // conditions include is refused, then ask about every other image once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = create(&client, &pods(&ns), &pod("dhi.io/nginx:1.31"), true).await;
        if answer.status >= 400 {
            assert_eq!(answer.status, 500, "{answer:?}");
            assert!(
                answer
                    .message()
                    .contains("failed calling webhook \"mutate.dhi.io\""),
                "{answer:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for image in [
        "dhi.io:443/python:3.13",
        "DHI.IO/python:3.13",
        "registry.example.com/platform/dhi-node:24",
        "docker.io/istio/proxyv2:1.30.3",
        "quay.io/cilium/hubble-relay:v1.20.1",
    ] {
        let answer = create(&client, &pods(&ns), &pod(image), true).await;
        assert_eq!(answer.status, 500, "{image} must be sent: {answer:?}");
        assert!(
            answer.message().contains("failed calling webhook"),
            "{image}: {answer:?}"
        );
    }
    for image in [
        "registry.k8s.io/pause:3.10",
        "nginx:1.31",
        "quay.io/calico/node:v3.30.0",
        "ghcr.io/example/app:2",
    ] {
        let answer = create(&client, &pods(&ns), &pod(image), true).await;
        assert_eq!(
            answer.status, 201,
            "{image} must be admitted without the webhook: {answer:?}"
        );
    }
    unregister(&client, &name).await;
}

/// `certs bootstrap --config` writes the policy's conditions into the validating
/// configuration (shipped without them here), and a second run changes nothing.
#[tokio::test]
async fn bootstrap_publishes_the_conditions() {
    const TEST: &str = "scope-bootstrap";
    let Some(cp) = super::cluster::control_plane() else {
        return;
    };
    let client = cp.client().await;
    let ns = super::cluster::namespace(&client, TEST, &[]).await;
    let name = format!("dhi-e2e-{TEST}");
    let mut configs = configurations(&name, TEST, "https://127.0.0.1:9", None);
    let expected = configs[1]["webhooks"][0]["matchConditions"].clone();
    for webhook in configs[1]["webhooks"].as_array_mut().unwrap() {
        webhook.as_object_mut().unwrap().remove("matchConditions");
    }
    apply(&client, &configs).await;
    let kubeconfig = cp.kubeconfig.to_str().unwrap();
    let out = cp.test_dir(TEST).join("out");
    let args = [
        "certs",
        "bootstrap",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        &ns,
        "--secret",
        "tls",
        "--service",
        "svc",
        "--webhook-config",
        &name,
        "--out",
        out.to_str().unwrap(),
        "--config",
        "deploy/base/policy.yaml",
    ];
    let dir = env!("CARGO_MANIFEST_DIR");
    for round in 0..2 {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_dhi-admission"))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "round {round}: {log}");
        assert_eq!(
            log.contains("patched matchConditions"),
            round == 0,
            "round {round}: {log}"
        );
    }
    let path =
        format!("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}");
    let answer = send(&client, "GET", &path, "application/json", None).await;
    for webhook in answer.body["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["matchConditions"], expected, "{}", webhook["name"]);
    }
    unregister(&client, &name).await;
}

/// Sets label `key` of namespace `ns` as user `e2e-alice` in `groups` (impersonated).
async fn label_as(
    client: &kube::Client,
    ns: &str,
    key: &str,
    value: &str,
    groups: &[&str],
) -> (u16, Value) {
    let patch = json!({"metadata": {"labels": {key: value}}});
    let mut request = http::Request::builder()
        .method("PATCH")
        .uri(format!("/api/v1/namespaces/{ns}"))
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .header(http::header::ACCEPT, "application/json")
        .header("Impersonate-User", "e2e-alice");
    for group in groups {
        request = request.header("Impersonate-Group", *group);
    }
    let request = request
        .body(kube::client::Body::from(
            serde_json::to_vec(&patch).unwrap(),
        ))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The shipped ValidatingAdmissionPolicy is accepted, and only its groups may change the
/// `dhi.io/mode` label (its binding narrowed to this test's namespace).
#[tokio::test]
async fn only_mode_admins_change_the_mode_label() {
    const TEST: &str = "scope-vap";
    let Some(cp) = super::cluster::control_plane() else {
        return;
    };
    let client = cp.client().await;
    let ns = super::cluster::namespace(&client, TEST, &[]).await;
    let docs = super::cluster::yaml_documents("deploy/base/modelabelpolicy.yaml");
    let (mut policy, mut binding) = (docs[0].clone(), docs[1].clone());
    let name = format!("dhi-e2e-{TEST}");
    policy["metadata"]["name"] = json!(name);
    binding["metadata"]["name"] = json!(name);
    binding["spec"]["policyName"] = json!(name);
    binding["spec"]["matchResources"] =
        json!({"objectSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
    let base = "/apis/admissionregistration.k8s.io/v1";
    let answer = create(
        &client,
        &format!("{base}/validatingadmissionpolicies"),
        &policy,
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let answer = create(
        &client,
        &format!("{base}/validatingadmissionpolicybindings"),
        &binding,
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    // RBAC lets the impersonated user patch namespaces; only the policy can refuse it.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch"]}]});
    let role_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "e2e-alice"}]});
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    assert_eq!(
        create(&client, &format!("{rbac}/clusterroles"), &role, false)
            .await
            .status,
        201
    );
    assert_eq!(
        create(
            &client,
            &format!("{rbac}/clusterrolebindings"),
            &role_binding,
            false
        )
        .await
        .status,
        201
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = label_as(
            &client,
            &ns,
            "dhi.io/mode",
            "off",
            &["system:authenticated"],
        )
        .await;
        if status == 403
            && body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("dhi-admission:mode-admins")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {status} {body}");
        // Put the label back as it was, should the policy not be active yet.
        send(
            &client,
            "PATCH",
            &format!("/api/v1/namespaces/{ns}"),
            "application/json-patch+json",
            Some(&json!([{"op": "remove", "path": "/metadata/labels/dhi.io~1mode"}])),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = label_as(
        &client,
        &ns,
        "dhi.io/mode",
        "audit",
        &["system:authenticated", "dhi-admission:mode-admins"],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["labels"]["dhi.io/mode"], "audit");
    // Another label, changed by a user outside the groups, is not judged.
    let (status, body) = label_as(&client, &ns, "team", "a", &["system:authenticated"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["labels"]["dhi.io/mode"], "audit");
    // Only the values the webhook configurations route, even for a mode admin: a misspelt
    // mode would otherwise silently mean enforce.
    let admin = ["system:authenticated", "dhi-admission:mode-admins"];
    let (status, body) = label_as(&client, &ns, "dhi.io/mode", "wran", &admin).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the dhi.io/mode label takes enforce, warn, audit or off"),
        "{body}"
    );
    let (status, body) = label_as(&client, &ns, "dhi.io/mode", "warn", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["labels"]["dhi.io/mode"], "warn");

    for path in [
        format!("{base}/validatingadmissionpolicybindings/{name}"),
        format!("{base}/validatingadmissionpolicies/{name}"),
        format!("{rbac}/clusterrolebindings/{name}"),
        format!("{rbac}/clusterroles/{name}"),
    ] {
        send(&client, "DELETE", &path, "application/json", None).await;
    }
}
