//! Reinvocation: a sidecar injector that runs after dhi-admission adds containers, and
//! `reinvocationPolicy: IfNeeded` (as shipped) has the API server call dhi-admission again.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::cluster::{
    TEST_LABEL, bare, create, delete, eventually, namespace, pod, pods, stored_pod,
};
use super::injector::Injector;
use super::webhook::{MUTATING, Server, apply, configurations, unregister, wait_active};

/// The injector's configuration: named to sort after dhi-admission's (the API server calls
/// mutating configurations in name order), never reinvoked itself.
fn injector_configuration(injector: &Injector, tests: &[&str]) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "zz-e2e-injector"},
        "webhooks": [{
            "name": "inject.e2e.dhi.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "clientConfig": {
                "url": format!("{}/inject", injector.url),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&injector.ca_pem),
            },
            "namespaceSelector": {"matchExpressions": [
                {"key": TEST_LABEL, "operator": "In", "values": tests},
            ]},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
        }],
    })
}

fn app_pod(name: &str) -> Value {
    let app = json!({"name": "app", "image": "docker.io/library/busybox:1.37",
                     "command": ["sleep", "3600"]});
    pod(name, json!([app]))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod}"))
}

/// Waits until the injector's containers appear in a dry run in `ns`.
async fn wait_injecting(client: &kube::Client, ns: &str) {
    eventually(
        &format!("the injector to see {ns}"),
        Duration::from_secs(20),
        || async {
            let answer = create(client, &pods(ns), &app_pod("probe"), true).await;
            let names = answer.body["spec"]["containers"].to_string();
            (answer.status == 201 && names.contains("log-shipper")).then_some(())
        },
    )
    .await;
}

// The injector's server runs on this test's runtime while the API server calls it: two
// worker threads, so a blocked one never stalls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_injected_after_us_are_patched_on_reinvocation() {
    let Some(bare) = bare("reinvoke", true).await else {
        return;
    };
    let (cp, client, ns, dir) = (bare.cp, bare.client, bare.ns, bare.dir);
    let ns_never = namespace(&client, "reinvoke-never", &[]).await;
    let server = Server::start(&dir, &[]).await;

    // As shipped (IfNeeded) for one namespace; Never for the other, to show the difference.
    let shipped = configurations(
        "dhi-e2e-reinvoke",
        "reinvoke",
        &server.url,
        Some(&server.ca_pem),
    );
    apply(&client, &shipped).await;
    let mut never = configurations(
        "dhi-e2e-reinvoke-never",
        "reinvoke-never",
        &server.url,
        Some(&server.ca_pem),
    );
    for webhook in never[0]["webhooks"].as_array_mut().unwrap() {
        assert_eq!(webhook["reinvocationPolicy"], "IfNeeded", "as shipped");
        webhook["reinvocationPolicy"] = json!("Never");
    }
    apply(&client, &never).await;
    let injector = Injector::start().await;
    let answer = create(
        &client,
        MUTATING,
        &injector_configuration(&injector, &["reinvoke", "reinvoke-never"]),
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    for ns in [&ns, &ns_never] {
        wait_active(&client, ns, false).await;
        wait_injecting(&client, ns).await;
    }

    // IfNeeded: the containers added after our first call are secured and rewritten.
    let calls = injector.calls();
    let answer = create(&client, &pods(&ns), &app_pod("web"), false).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(injector.calls(), calls + 1, "the injector is called once");
    let pod = stored_pod(&client, &ns, "web").await;
    assert_eq!(
        container(&pod, "app")["securityContext"],
        Value::Null,
        "not a hardened image: untouched"
    );
    assert_eq!(
        container(&pod, "log-shipper")["securityContext"],
        json!({"runAsGroup": 65532, "runAsNonRoot": true, "runAsUser": 65532})
    );
    assert_eq!(
        container(&pod, "mesh-proxy")["image"],
        "dhi.io/istio-proxyv2:1.30.3"
    );
    assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 65532);

    // The API server records each mutating call in the audit event: ours in round 1 changed it.
    let event = cp.create_event(&ns, "pods", "web").await;
    let rounds: Vec<(String, Value)> = event["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("mutation.webhook.admission.k8s.io/"))
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v.as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert!(
        rounds.iter().any(|(k, v)| k.contains("round_1")
            && v["configuration"] == "dhi-e2e-reinvoke"
            && v["webhook"] == "mutate.dhi.io"
            && v["mutated"] == true),
        "dhi-admission reinvoked and mutated in round 1: {rounds:?}"
    );

    // Never: the injected containers are stored as the injector wrote them.
    let answer = create(&client, &pods(&ns_never), &app_pod("web"), false).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let pod = stored_pod(&client, &ns_never, "web").await;
    assert_eq!(
        container(&pod, "log-shipper")["securityContext"],
        Value::Null
    );
    assert_eq!(
        container(&pod, "mesh-proxy")["image"],
        "docker.io/istio/proxyv2:1.30.3"
    );

    unregister(&client, "dhi-e2e-reinvoke").await;
    unregister(&client, "dhi-e2e-reinvoke-never").await;
    delete(&client, &format!("{MUTATING}/zz-e2e-injector")).await;
}
