//! Audit mode: everything admitted unchanged, the findings as warnings to the client and as
//! annotations in the API server's audit log; and namespaces labelled `dhi.io/mode=off`, which
//! the webhook never sees.

use super::cluster::{TEST_LABEL, apps, create, namespace_with, pods, stored_pod, yaml};
use super::webhook::{probe_pod, root_pod, setup};

#[tokio::test]
async fn audit_namespace_gets_warnings_and_audit_annotations() {
    let Some(env) = setup("audit", &[("dhi.io/mode", "audit")], &[]).await else {
        return;
    };

    // kubectl, as a person would: admitted, with the findings as warnings.
    let out = env
        .cp
        .kubectl_apply(&env.ns, "deploy/examples/violations-deployment.yaml")
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
        .create_event(&env.ns, "deployments", "storefront")
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
    let pod = env.example("istio-injected-pod.yaml").await;
    let answer = env.create_pod(&pod, false).await;
    answer
        .assert_status(201)
        .assert_warning(|w| w.starts_with("audit: dhi-admission would patch this object:"));
    let name = "reviews-v1-6f9c7d8b5-k2x7q";
    let stored = stored_pod(&env.client, &env.ns, name).await;
    let containers = &stored["spec"]["containers"];
    assert_eq!(
        containers[1]["image"], "docker.io/istio/proxyv2:1.30.3",
        "audit never patches"
    );
    assert!(containers[0]["securityContext"].is_null());
    let event = env.cp.create_event(&env.ns, "pods", name).await;
    let planned = event["annotations"]["mutate-audit.dhi.io/planned-mutations"]
        .as_str()
        .unwrap_or_else(|| panic!("no planned-mutations annotation: {}", event["annotations"]));
    assert_eq!(
        planned,
        "image_rewrite x1, run_as_user x1, run_as_group x1, run_as_non_root x1, fs_group x1"
    );

    // A violating pod too: admitted, reported.
    let answer = env.create_pod(&root_pod(), false).await;
    answer
        .assert_status(201)
        .assert_warning(|w| w.starts_with("audit: [run-as-root] container \"app\""));
}

#[tokio::test]
async fn server_wide_audit_mode_admits_and_warns() {
    let Some(env) = setup("audit-server", &[], &["--mode", "audit"]).await else {
        return;
    };
    let deployment = yaml("deploy/examples/violations-deployment.yaml");
    let answer = env.create_deployment(&deployment).await;
    answer
        .assert_status(201)
        .assert_warning(|w| w.contains("[privileged-port]"));
    let event = env
        .cp
        .create_event(&env.ns, "deployments", "storefront")
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
    // A second namespace of the same test (e2e-mode-off-opted-out), opted out.
    let labels = [(TEST_LABEL, "mode-off"), ("dhi.io/mode", "off")];
    let opted_out = &namespace_with(&env.client, "mode-off-opted-out", false, &labels).await;

    let deployment = yaml("deploy/examples/violations-deployment.yaml");
    let answer = create(
        &env.client,
        &apps(opted_out, "deployments"),
        &deployment,
        false,
    )
    .await;
    answer.assert_status(201).assert_no_warnings();
    let answer = create(&env.client, &pods(opted_out), &probe_pod(), false).await;
    answer.assert_status(201);
    assert!(
        answer.body["spec"]["containers"][0]["securityContext"].is_null(),
        "not patched: {}",
        answer.body
    );
    // The same in the namespace without the label is refused.
    env.create_deployment(&deployment).await.assert_status(403);
}
