//! Webhooks scoped by the generated `matchConditions` (deploy/base/matchconditions.yaml):
//! the real API server accepts them, and with the webhook DOWN and `failurePolicy: Fail`
//! it admits the pods they exclude and refuses the ones they include.

use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::{
    Answer, Bare, JSON_PATCH, bare, create, delete, eventually, free_port, get, patch, pods,
    send_with, yaml_documents,
};
use super::webhook::{apply, command, configurations, unregister};

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
    super::cluster::pod("scoped", json!([{"name": "app", "image": image}]))
}

#[tokio::test]
async fn excluded_pods_do_not_depend_on_the_webhook() {
    const TEST: &str = "scope";
    let Some(Bare { client, ns, .. }) = bare(TEST, true).await else {
        return;
    };
    // Nothing listens there: every call fails, and the enforce entries fail closed.
    let port = free_port();
    let name = format!("dhi-e2e-{TEST}");
    let configs = scoped(&name, TEST, &format!("https://127.0.0.1:{port}"));
    // The API server validates (compiles, and checks the cost of) every expression here.
    apply(&client, &configs).await;

    // The API server's configuration informer lags behind the write: wait until a pod the
    // conditions include is refused, then ask about every other image once.
    let refused = eventually(
        "a hardened pod refused",
        Duration::from_secs(20),
        || async {
            let answer = create(&client, &pods(&ns), &pod("dhi.io/nginx:1.31"), true).await;
            (answer.status >= 400).then_some(answer)
        },
    )
    .await;
    assert_eq!(refused.status, 500, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("failed calling webhook \"mutate.dhi.io\""),
        "{refused:?}"
    );
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
    let Some(bare) = bare(TEST, true).await else {
        return;
    };
    let (cp, client, ns, dir) = (bare.cp, bare.client, bare.ns, bare.dir);
    let name = format!("dhi-e2e-{TEST}");
    let mut configs = configurations(&name, TEST, "https://127.0.0.1:9", None);
    let expected = configs[1]["webhooks"][0]["matchConditions"].clone();
    for webhook in configs[1]["webhooks"].as_array_mut().unwrap() {
        webhook.as_object_mut().unwrap().remove("matchConditions");
    }
    apply(&client, &configs).await;
    let kubeconfig = cp.kubeconfig.to_str().unwrap();
    let out = dir.join("out");
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
    for round in 0..2 {
        let output = command()
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
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
    let answer = get(&client, &path).await;
    for webhook in answer.body["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["matchConditions"], expected, "{}", webhook["name"]);
    }
    unregister(&client, &name).await;
}

/// Sets label `key` of namespace `ns` as user `e2e-alice` in `groups` (impersonated).
async fn label_as(
    client: &kube::Client,
    ns: &str,
    (key, value): (&str, &str),
    groups: &[&str],
) -> Answer {
    let patch = json!({"metadata": {"labels": {key: value}}});
    let mut headers = vec![("Impersonate-User", "e2e-alice")];
    headers.extend(groups.iter().map(|group| ("Impersonate-Group", *group)));
    let path = format!("/api/v1/namespaces/{ns}");
    let merge = "application/merge-patch+json";
    send_with(client, "PATCH", &path, merge, Some(&patch), &headers).await
}

/// The shipped ValidatingAdmissionPolicy is accepted, and only its groups may change the
/// `dhi.io/mode` label (its binding narrowed to this test's namespace).
#[tokio::test]
async fn only_mode_admins_change_the_mode_label() {
    const TEST: &str = "scope-vap";
    let Some(Bare { client, ns, .. }) = bare(TEST, true).await else {
        return;
    };
    let docs = yaml_documents("deploy/base/modelabelpolicy.yaml");
    let (mut policy, mut binding) = (docs[0].clone(), docs[1].clone());
    let name = format!("dhi-e2e-{TEST}");
    policy["metadata"]["name"] = json!(name);
    binding["metadata"]["name"] = json!(name);
    binding["spec"]["policyName"] = json!(name);
    binding["spec"]["matchResources"] =
        json!({"objectSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
    // RBAC lets the impersonated user patch namespaces; only the policy can refuse it.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch"]}]});
    let role_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "e2e-alice"}]});
    let base = "/apis/admissionregistration.k8s.io/v1";
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let collections = [
        (format!("{base}/validatingadmissionpolicies"), policy),
        (format!("{base}/validatingadmissionpolicybindings"), binding),
        (format!("{rbac}/clusterroles"), role),
        (format!("{rbac}/clusterrolebindings"), role_binding),
    ];
    for (collection, object) in &collections {
        let answer = create(&client, collection, object, false).await;
        assert_eq!(answer.status, 201, "{answer:?}");
    }

    let user = ["system:authenticated"];
    eventually("the policy to refuse", Duration::from_secs(20), || async {
        let answer = label_as(&client, &ns, ("dhi.io/mode", "off"), &user).await;
        if answer.status == 403 && answer.message().contains("dhi-admission:mode-admins") {
            return Some(());
        }
        // Put the label back as it was, should the policy not be active yet.
        let remove = json!([{"op": "remove", "path": "/metadata/labels/dhi.io~1mode"}]);
        patch(
            &client,
            &format!("/api/v1/namespaces/{ns}"),
            JSON_PATCH,
            &remove,
        )
        .await;
        None
    })
    .await;
    let admin = ["system:authenticated", "dhi-admission:mode-admins"];
    let answer = label_as(&client, &ns, ("dhi.io/mode", "audit"), &admin).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["metadata"]["labels"]["dhi.io/mode"], "audit");
    // Another label, changed by a user outside the groups, is not judged.
    let answer = label_as(&client, &ns, ("team", "a"), &user).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["metadata"]["labels"]["dhi.io/mode"], "audit");
    // Only the values the webhook configurations route, even for a mode admin: a misspelt
    // mode would otherwise silently mean enforce.
    let answer = label_as(&client, &ns, ("dhi.io/mode", "wran"), &admin).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    answer
        .assert_message(|m| m.contains("the dhi.io/mode label takes enforce, warn, audit or off"));
    let answer = label_as(&client, &ns, ("dhi.io/mode", "warn"), &admin).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["metadata"]["labels"]["dhi.io/mode"], "warn");

    for (collection, object) in collections.iter().rev() {
        let name = object["metadata"]["name"].as_str().unwrap();
        delete(&client, &format!("{collection}/{name}")).await;
    }
}
