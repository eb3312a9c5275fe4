//! UPDATE flows: scaling and label changes are admitted without judging the pod spec again,
//! template and image changes are judged, and `kubectl debug` goes through the
//! `pods/ephemeralcontainers` subresource.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::cluster::{
    ControlPlane, JSON_PATCH, Kubectl, TEST_LABEL, apps, bare, create, eventually, patch, pod,
    pods, yaml,
};
use super::webhook::{Server, register, setup, wait_active};

const MERGE: &str = "application/merge-patch+json";

/// `kubectl set image -n ns target container=image`.
async fn set_image(cp: &ControlPlane, ns: &str, target: &str, container_image: &str) -> Kubectl {
    cp.kubectl(&["set", "image", "-n", ns, target, container_image], None)
        .await
}

/// `kubectl debug` of the pod `web`: the container `container` of `image`, running python3.
async fn debug(cp: &ControlPlane, ns: &str, image: &str, container: &str) -> Kubectl {
    let (image, container) = (
        format!("--image={image}"),
        format!("--container={container}"),
    );
    let args = [
        "debug", "-n", ns, "web", &image, &container, "--", "python3",
    ];
    cp.kubectl(&args, None).await
}

#[tokio::test]
async fn deployment_updates_are_judged_when_the_pod_spec_changes() {
    let test = "updates-deploy";
    // Created before the webhook sees the namespace: a Deployment the policy would deny.
    let Some(bare) = bare(test, false).await else {
        return;
    };
    let (cp, client, ns, dir) = (bare.cp, bare.client, bare.ns, bare.dir);
    let violating = yaml("deploy/examples/violations-deployment.yaml");
    let answer = create(&client, &apps(&ns, "deployments"), &violating, false).await;
    assert_eq!(answer.status, 201, "{}", answer.body);

    let server = Server::start(&dir, &[]).await;
    register(&client, test, &server).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {TEST_LABEL: test}}})),
        )
        .await
        .unwrap();
    wait_active(&client, &ns, false).await;

    let path = format!("{}/storefront", apps(&ns, "deployments"));
    let merge = |body: Value| {
        let client = client.clone();
        let path = path.clone();
        async move { patch(&client, &path, MERGE, &body).await }
    };

    // Scaling through the resource itself: an UPDATE the webhook sees, spec unchanged.
    let answer = merge(json!({"spec": {"replicas": 5}})).await;
    assert_eq!(answer.status, 200, "scale by patch: {}", answer.body);
    // Labels.
    let answer = merge(json!({"metadata": {"labels": {"tier": "web"}}})).await;
    assert_eq!(answer.status, 200, "label: {}", answer.body);
    // kubectl scale goes through the scale subresource.
    cp.kubectl(
        &["scale", "-n", &ns, "deployment/storefront", "--replicas=3"],
        None,
    )
    .await
    .assert_ok();
    let stored = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("storefront")
        .await
        .unwrap();
    assert_eq!(stored.spec.unwrap().replicas, Some(3));

    // A restart changes only the template's annotations, not the pod spec: admitted.
    cp.kubectl(
        &["rollout", "restart", "-n", &ns, "deployment/storefront"],
        None,
    )
    .await
    .assert_ok();

    // Any change to the pod spec is judged, fields no rule reads (env) included: its new
    // pods would be judged at creation anyway, and a rollout stalled halfway is worse
    // than an early no. The Deployment still has its old violations.
    let env = json!([{"op": "add", "path": "/spec/template/spec/containers/0/env",
                      "value": [{"name": "WORKERS", "value": "4"}]}]);
    patch(&client, &path, JSON_PATCH, &env)
        .await
        .assert_status(403)
        .assert_message(|m| m.contains("[privileged-port]"));

    // A change to a judged field is judged: the old violations are still there.
    let port = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/ports/0/containerPort",
                       "value": 81}]);
    patch(&client, &path, JSON_PATCH, &port)
        .await
        .assert_status(403)
        .assert_message(|m| m.contains("declares port 81") && m.contains("[run-as-root]"));

    // Fixing both violations is admitted.
    let fixed = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "nginx", "image": "dhi.io/nginx:1.31", "ports": [{"name": "http", "containerPort": 8080}]},
        {"name": "debug-tools", "image": "dhi.io/python:3.13", "command": ["python3", "-m", "http.server", "9000"]},
    ]}}}});
    let answer = merge(fixed).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // And breaking it again through kubectl is refused with the rule and the fix.
    let dev = "debug-tools=dhi.io/python:3.13-dev";
    set_image(cp, &ns, "deployment/storefront", dev)
        .await
        .assert_failed()
        .assert_stderr(|e| {
            e.contains("[run-as-root] container \"debug-tools\" (dhi.io/python:3.13-dev)")
                && e.contains("Fix: ")
        });
}

#[tokio::test]
async fn pod_updates_and_kubectl_debug() {
    let Some(env) = setup("updates-pod", &[], &[]).await else {
        return;
    };
    let app = json!({"name": "app", "image": "dhi.io/python:3.13",
                     "command": ["python3", "-m", "http.server", "8080"]});
    env.create_pod(&pod("web", json!([app])), false)
        .await
        .assert_status(201);
    let api = Api::<Pod>::namespaced(env.client.clone(), &env.ns);
    let stored = api.get("web").await.unwrap();
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(
        spec.containers[0]
            .security_context
            .as_ref()
            .unwrap()
            .run_as_user,
        Some(65532)
    );

    // A label change on the pod: admitted, not judged.
    let path = format!("{}/web", pods(&env.ns));
    let label = json!({"metadata": {"labels": {"release": "canary"}}});
    patch(&env.client, &path, MERGE, &label)
        .await
        .assert_status(200);

    // The image is one of the few mutable pod fields, and a change is judged. A dev variant
    // is admitted here (with a warning): the UID injected at creation keeps it nonroot.
    let (cp, ns) = (env.cp, &env.ns);
    set_image(cp, ns, "pod/web", "app=dhi.io/python:3.13-dev")
        .await
        .assert_ok()
        .assert_stderr(|e| {
            e.contains("Warning: container \"app\" uses dev variant dhi.io/python:3.13-dev")
        });
    // An image the kubelet could not pull is refused.
    set_image(cp, ns, "pod/web", "app=dhi.io/Python:3.13")
        .await
        .assert_failed()
        .assert_stderr(|e| e.contains("[invalid-image]"));

    // kubectl debug with a root dev image: the pods/ephemeralcontainers UPDATE is refused.
    // kubectl debug shows the denial.
    debug(cp, ns, "dhi.io/python:3.13-dev", "dbg-root")
        .await
        .assert_failed()
        .assert_stderr(|e| {
            e.contains("[run-as-root] container \"dbg-root\" (dhi.io/python:3.13-dev)")
                && e.contains("Fix: ")
        });

    // A runtime image is admitted.
    debug(cp, ns, "dhi.io/python:3.13", "dbg").await.assert_ok();
    let stored = eventually("the debug container", Duration::from_secs(10), || async {
        let pod = api.get("web").await.unwrap();
        let found = pod
            .spec
            .as_ref()
            .unwrap()
            .ephemeral_containers
            .as_ref()?
            .iter()
            .any(|c| c.name == "dbg");
        found.then_some(pod)
    })
    .await;
    let ephemeral = stored.spec.unwrap().ephemeral_containers.unwrap();
    assert_eq!(ephemeral.len(), 1, "the refused one was not added");
    // The mutating webhook is registered for `pods/ephemeralcontainers`: the hardened
    // debug container gets its user, or the kubelet would refuse it under runAsNonRoot.
    let sc = ephemeral[0].security_context.clone().unwrap_or_default();
    assert_eq!(
        sc.run_as_user,
        Some(65532),
        "user injected into the debug container"
    );
    assert_eq!(sc.run_as_non_root, Some(true));
}
