//! Warn mode by namespace label: `dhi.io/mode: warn` routes the namespace to the -warn
//! entries (/mutate/warn, /validate/warn): pods are patched as in enforce, violations come
//! back as warnings, nothing is denied.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

use super::cluster::{create, pods};
use super::webhook::setup;

#[tokio::test]
async fn warn_namespace_patches_and_warns_without_denying() {
    let Some(env) = setup("warn", &[("dhi.io/mode", "warn")], &[]).await else {
        return;
    };
    // A root container next to a hardened one: enforce would deny it.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-and-nginx"},
    "spec": {"containers": [
        {"name": "web", "image": "dhi.io/nginx:1.31"},
        {"name": "app", "image": "dhi.io/python:3.13", "securityContext": {"runAsUser": 0}},
    ]}});
    let answer = create(&env.client, &pods(&env.ns), &pod, false).await;
    assert_eq!(answer.status, 201, "warn never denies: {}", answer.body);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w
                .starts_with("warn: [run-as-root] container \"app\": Fix: remove runAsUser: 0")),
        "{:?}",
        answer.warnings
    );
    assert!(
        !answer.warnings.iter().any(|w| w.starts_with("audit: ")),
        "{:?}",
        answer.warnings
    );
    // And patched, as enforce patches: the catalog's user for the hardened container.
    let stored = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .get("root-and-nginx")
        .await
        .unwrap();
    let spec = serde_json::to_value(stored.spec.unwrap()).unwrap();
    assert_eq!(
        spec["containers"][0]["securityContext"],
        json!({"runAsGroup": 65532, "runAsNonRoot": true, "runAsUser": 65532}),
        "{spec}"
    );
    assert_eq!(spec["containers"][1]["securityContext"]["runAsUser"], 0);
}
