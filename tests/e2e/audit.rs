//! Audit mode: everything admitted unchanged, the findings as warnings to the client and as
//! annotations in the API server's audit log; and namespaces labelled `dhi.io/mode=off`, which
//! the webhook never sees.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};

use super::cluster::{TEST_LABEL, create, pods, service_accounts, yaml};
use super::webhook::setup;

fn event_for<'a>(ns: &'a str, resource: &'a str, name: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e: &Value| {
        e["objectRef"]["namespace"] == ns
            && e["objectRef"]["resource"] == resource
            && e["objectRef"]["name"] == name
            && e["verb"] == "create"
            && e["stage"] == "ResponseComplete"
    }
}

#[tokio::test]
async fn audit_namespace_gets_warnings_and_audit_annotations() {
    let Some(env) = setup("audit", &[("dhi.io/mode", "audit")], &[]).await else {
        return;
    };

    // kubectl, as a person would: admitted, with the findings as warnings.
    let out = env
        .cp
        .kubectl(
            &[
                "apply",
                "-n",
                &env.ns,
                "-f",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/deploy/examples/violations-deployment.yaml"
                ),
            ],
            None,
        )
        .await;
    out.assert_ok();
    assert!(
        out.stdout.contains("deployment.apps/storefront created"),
        "{}",
        out.stdout
    );
    for expected in [
        "Warning: audit: [privileged-port] container \"nginx\": Fix: listen on 8080",
        "Warning: audit: [run-as-root] container \"debug-tools\": Fix: remove runAsUser: 0",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected:?} not in:\n{}",
            out.stderr
        );
    }

    let event = env
        .cp
        .audit_event(
            "the audit event of the Deployment",
            event_for(&env.ns, "deployments", "storefront"),
        )
        .await;
    let annotations = &event["annotations"];
    assert_eq!(
        annotations["validate-audit.dhi.io/violation.privileged-port"], "nginx (dhi.io/nginx:1.31)",
        "{annotations}"
    );
    assert_eq!(
        annotations["validate-audit.dhi.io/violation.run-as-root"],
        "debug-tools (dhi.io/python:3.13-dev)",
        "{annotations}"
    );
    // The complete finding, fix included, beside the list.
    assert!(
        annotations["validate-audit.dhi.io/finding.privileged-port"]
            .as_str()
            .is_some_and(|f| f.contains("Fix: listen on 8080")),
        "{annotations}"
    );

    // A pod is admitted unpatched; what would have been patched is reported.
    service_accounts(&env.client, &env.ns, &["bookinfo-reviews"]).await;
    let mut pod = yaml("deploy/examples/istio-injected-pod.yaml");
    pod["metadata"]["namespace"] = json!(env.ns);
    let answer = create(&env.client, &pods(&env.ns), &pod, false).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.starts_with("audit: dhi-admission would patch this object:")),
        "{:?}",
        answer.warnings
    );
    let stored = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .get("reviews-v1-6f9c7d8b5-k2x7q")
        .await
        .unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(
        spec.containers[1].image.as_deref(),
        Some("docker.io/istio/proxyv2:1.30.3"),
        "audit never patches"
    );
    assert!(spec.containers[0].security_context.is_none());
    let event = env
        .cp
        .audit_event(
            "the audit event of the pod",
            event_for(&env.ns, "pods", "reviews-v1-6f9c7d8b5-k2x7q"),
        )
        .await;
    let planned = event["annotations"]["mutate-audit.dhi.io/planned-mutations"]
        .as_str()
        .unwrap_or_else(|| panic!("no planned-mutations annotation: {}", event["annotations"]));
    assert_eq!(
        planned,
        "image_rewrite x1, run_as_user x1, run_as_group x1, run_as_non_root x1, fs_group x1"
    );

    // A violating pod too: admitted, reported.
    let answer = create(
        &env.client,
        &pods(&env.ns),
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-python"},
                "spec": {"containers": [{"name": "app", "image": "dhi.io/python:3.13",
                                         "securityContext": {"runAsUser": 0}}]}}),
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.starts_with("audit: [run-as-root] container \"app\"")),
        "{:?}",
        answer.warnings
    );
}

#[tokio::test]
async fn server_wide_audit_mode_admits_and_warns() {
    let Some(env) = setup("audit-server", &[], &["--mode", "audit"]).await else {
        return;
    };
    let deployment = yaml("deploy/examples/violations-deployment.yaml");
    let answer = create(
        &env.client,
        &super::cluster::apps(&env.ns, "deployments"),
        &deployment,
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.contains("[privileged-port]")),
        "{:?}",
        answer.warnings
    );
    let event = env
        .cp
        .audit_event(
            "the audit event of the Deployment",
            event_for(&env.ns, "deployments", "storefront"),
        )
        .await;
    assert!(
        event["annotations"]["validate.dhi.io/violation.privileged-port"].is_string(),
        "{}",
        event["annotations"]
    );
}

#[tokio::test]
async fn namespaces_labelled_off_are_not_sent_to_the_webhook() {
    let Some(env) = setup("mode-off", &[], &[]).await else {
        return;
    };
    // A second namespace of the same test, opted out.
    let opted_out = "e2e-mode-off-opted-out";
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(opted_out.into()),
            labels: Some(
                [(TEST_LABEL, "mode-off"), ("dhi.io/mode", "off")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .unwrap();
    service_accounts(&env.client, opted_out, &["default"]).await;

    let deployment = yaml("deploy/examples/violations-deployment.yaml");
    let answer = create(
        &env.client,
        &super::cluster::apps(opted_out, "deployments"),
        &deployment,
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    let answer = create(
        &env.client,
        &pods(opted_out),
        &super::webhook::probe_pod(),
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        answer.body["spec"]["containers"][0]["securityContext"].is_null(),
        "not patched: {}",
        answer.body
    );
    // The same in the namespace without the label is refused.
    let answer = create(
        &env.client,
        &super::cluster::apps(&env.ns, "deployments"),
        &deployment,
        false,
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
}
