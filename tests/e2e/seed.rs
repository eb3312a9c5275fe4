//! The seed workloads of the README, created through the API server and read back.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::cluster::{Answer, apps, create, pod_from_template, stored_pod, yaml, yaml_documents};
use super::webhook::{root_pod, setup};

/// A seed workload of deploy/examples/ and the pod its controller would make from it.
struct Seed {
    file: &'static str,
    pod: &'static str,
    /// The image of the first container, as written.
    image: &'static str,
    /// The image that container runs once admitted.
    hardened: &'static str,
}

const HUBBLE_RELAY: Seed = Seed {
    file: "hubble-relay-deployment.yaml",
    pod: "hubble-relay-5d8f7c9b4-x2x9z",
    image: "quay.io/cilium/hubble-relay:v1.20.1",
    hardened: "dhi.io/hubble-relay:1.20.1",
};

const ISTIO_CNI: Seed = Seed {
    file: "istio-cni-daemonset.yaml",
    pod: "istio-cni-node-7xk2p",
    image: "docker.io/istio/install-cni:1.30.3",
    hardened: "dhi.io/istio-install-cni:1.30.3",
};

/// For `test`, the workload of `seed` and its pod (there is no controller-manager here),
/// both admitted: the stored template keeps `image` (templates are judged, not patched:
/// templates.mutate is off by default), the stored pod's first container runs `hardened`,
/// with the catalog's fsGroup. Returns the pod's answer and the stored pod; `None` when
/// the suite is skipped.
async fn workload_and_pod(test: &str, seed: Seed) -> Option<(Answer, Value)> {
    let env = setup(test, &[], &[]).await?;
    let manifest = env.example(seed.file).await;
    let plural = format!("{}s", manifest["kind"].as_str().unwrap().to_lowercase());
    let stored = create(&env.client, &apps(&env.ns, &plural), &manifest, false).await;
    let template = &stored.assert_status(201).body["spec"]["template"];
    assert_eq!(template["spec"]["containers"][0]["image"], seed.image);
    let answer = env
        .create_pod(&pod_from_template(&manifest, seed.pod), false)
        .await;
    answer.assert_status(201);
    let stored = stored_pod(&env.client, &env.ns, seed.pod).await;
    assert_eq!(stored["spec"]["containers"][0]["image"], seed.hardened);
    assert_eq!(stored["spec"]["securityContext"]["fsGroup"], 65532);
    Some((answer, stored))
}

#[tokio::test]
async fn istio_injected_pod_is_stored_patched() {
    let Some(env) = setup("seed-istio", &[], &[]).await else {
        return;
    };
    let pod = env.example("istio-injected-pod.yaml").await;

    // As a person would: kubectl shows the webhook's warning.
    let out = env
        .cp
        .kubectl(&["create", "-f", "-"], Some(&pod.to_string()))
        .await;
    out.assert_ok();
    assert!(
        out.stderr.contains("Warning: container \"istio-init\"")
            && out.stderr.contains("it runs as root"),
        "kubectl shows why istio-init was not rewritten:\n{}",
        out.stderr
    );

    let stored = stored_pod(&env.client, &env.ns, "reviews-v1-6f9c7d8b5-k2x7q").await;
    let spec = &stored["spec"];
    assert_eq!(
        spec["containers"][0]["securityContext"],
        json!({"runAsGroup": 65532, "runAsNonRoot": true, "runAsUser": 65532}),
        "the app container runs as the catalog's user"
    );
    assert_eq!(spec["containers"][1]["name"], "istio-proxy");
    assert_eq!(
        spec["containers"][1]["image"],
        "dhi.io/istio-proxyv2:1.30.3"
    );
    assert_eq!(
        spec["containers"][1]["securityContext"]["runAsUser"], 1337,
        "istio-proxy keeps its own user"
    );
    assert_eq!(
        spec["initContainers"][0]["image"], "docker.io/istio/proxyv2:1.30.3",
        "istio-init runs as root: left alone"
    );
    assert_eq!(spec["initContainers"][0]["securityContext"]["runAsUser"], 0);
    assert_eq!(spec["securityContext"]["fsGroup"], 65532);
}

#[tokio::test]
async fn hubble_relay_deployment_is_admitted_and_its_pods_rewritten() {
    let Some((answer, pod)) = workload_and_pod("seed-hubble", HUBBLE_RELAY).await else {
        return;
    };
    answer.assert_no_warnings();
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["runAsUser"], 65532,
        "already the image's user: nothing else changes"
    );
    assert!(
        pod["spec"]["imagePullSecrets"].is_null(),
        "the built-in policy names no pull secret"
    );
}

#[tokio::test]
async fn istio_cni_daemonset_is_admitted_as_root_and_its_pods_rewritten() {
    let Some((_, pod)) = workload_and_pod("seed-istio-cni", ISTIO_CNI).await else {
        return;
    };
    let security = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(
        security["runAsUser"], 0,
        "root by design for istio-install-cni"
    );
    assert_eq!(security["privileged"], true);
}

#[tokio::test]
async fn cilium_startup_script_pod_is_rewritten_and_admitted_as_root() {
    let Some(env) = setup("seed-cilium", &[], &[]).await else {
        return;
    };
    // Cilium's node-init DaemonSet pod, as its Helm chart renders it.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cilium-node-init-4kq8d", "labels": {"app": "cilium-node-init"}},
        "spec": {
            "hostNetwork": true, "hostPID": true,
            "containers": [{
                "name": "node-init",
                "image": "quay.io/cilium/startup-script:v0.20260701",
                "env": [{"name": "STARTUP_SCRIPT", "value": "#!/bin/bash\necho done\n"}],
                "securityContext": {"privileged": true, "runAsUser": 0},
            }],
        },
    });
    env.create_pod(&pod, false).await.assert_status(201);
    let stored = stored_pod(&env.client, &env.ns, "cilium-node-init-4kq8d").await;
    let container = &stored["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "dhi.io/cilium-startup-script:0.20260701"
    );
    assert_eq!(container["securityContext"]["runAsUser"], 0);
}

#[tokio::test]
async fn violations_reach_the_client_with_rule_ids_and_fixes() {
    let Some(env) = setup("seed-deny", &[], &[]).await else {
        return;
    };
    let manifest = yaml("deploy/examples/violations-deployment.yaml");
    let deployment: Deployment = serde_json::from_value(manifest).unwrap();
    let api = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);

    // The typed client: the Status the API server built from our answer.
    let err = api
        .create(&PostParams::default(), &deployment)
        .await
        .expect_err("denied");
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}");
    };
    let message = status.message.clone();
    assert!(
        message.starts_with("admission webhook \"validate.dhi.io\" denied the request: Deployment storefront cannot run on Docker Hardened Images (2 violations):"),
        "{message}"
    );
    for expected in [
        "- [privileged-port] container \"nginx\" (dhi.io/nginx:1.31) declares port 80",
        "Fix: listen on 8080 and map Service port 80 to it (targetPort: 8080)",
        "- [run-as-root] container \"debug-tools\" (dhi.io/python:3.13-dev) would run as root",
        "Fix: remove runAsUser: 0 and use the runtime variant",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        api.get_opt("storefront").await.unwrap().is_none(),
        "nothing stored"
    );

    // kubectl, as a person would run it.
    env.cp
        .kubectl_apply(&env.ns, "deploy/examples/violations-deployment.yaml")
        .await
        .assert_failed()
        .assert_stderr(|e| {
            e.contains("[privileged-port]") && e.contains("[run-as-root]") && e.contains("Fix: ")
        });

    // A pod is judged after it is patched: a hardened container forced to root.
    let answer = env.create_pod(&root_pod(), false).await;
    assert!(answer.status >= 400, "{}", answer.body);
    answer.assert_message(|m| m.contains("[run-as-root] container \"app\"") && m.contains("Fix: "));

    // The compliant Deployment of the same name is admitted untouched.
    let compliant = yaml_documents("deploy/examples/compliant-deployment.yaml").remove(0);
    let answer = env.create_deployment(&compliant).await;
    answer.assert_status(201).assert_no_warnings();
}
