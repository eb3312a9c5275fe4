//! Behaviour of the policy engine, rule by rule, through its public API.

use dhi_policy::{Engine, Mode, RuleId, Scope, Warning, Webhook, WorkloadKind, decode_object};
use serde_json::{Value, json};

use crate::support::{Ask, apply, engine, mutate, patch_json, pod, validate, violations};

// === mutation ===

#[test]
fn hardened_container_gets_catalog_user_and_pod_fs_group() {
    let p = pod(json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31"}]}));
    let d = mutate(&Engine::default(), &p);
    assert!(d.allowed);
    assert_eq!(
        patch_json(&d.patch),
        json!([
            {"op": "add", "path": "/spec/containers/0/securityContext",
             "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}},
            {"op": "add", "path": "/spec/securityContext", "value": {"fsGroup": 65532}},
        ])
    );
}

#[test]
fn catalog_uid_is_per_image() {
    let p = pod(json!({
        "securityContext": {},
        "containers": [
            {"name": "proxy", "image": "dhi.io/istio-proxyv2:1.30.3", "securityContext": {"privileged": false}},
            {"name": "db", "image": "registry.example.com/platform/dhi-postgres:17"},
        ]
    }));
    let d = mutate(&Engine::default(), &p);
    assert_eq!(
        patch_json(&d.patch),
        json!([
            {"op": "add", "path": "/spec/containers/0/securityContext/runAsUser", "value": 1337},
            {"op": "add", "path": "/spec/containers/0/securityContext/runAsGroup", "value": 1337},
            {"op": "add", "path": "/spec/containers/0/securityContext/runAsNonRoot", "value": true},
            {"op": "add", "path": "/spec/containers/1/securityContext",
             "value": {"runAsUser": 70, "runAsGroup": 70, "runAsNonRoot": true}},
            {"op": "add", "path": "/spec/securityContext/fsGroup", "value": 1337},
        ])
    );
}

#[test]
fn user_values_are_never_overwritten() {
    // Container-level and pod-level users both count as "set".
    let p = pod(json!({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
        "containers": [
            {"name": "a", "image": "dhi.io/nginx:1.31"},
            {"name": "b", "image": "dhi.io/nginx:1.31", "securityContext": {"runAsUser": 65532, "runAsNonRoot": false}},
        ]
    }));
    assert!(mutate(&Engine::default(), &p).patch.is_empty());
    // runAsNonRoot set at pod level is not added at container level.
    let p = pod(json!({
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "a", "image": "dhi.io/nginx:1.31"}]
    }));
    let d = mutate(&Engine::default(), &p);
    assert_eq!(
        patch_json(&d.patch)[0],
        json!({"op": "add", "path": "/spec/containers/0/securityContext",
               "value": {"runAsUser": 65532, "runAsGroup": 65532}})
    );
}

#[test]
fn non_hardened_containers_are_untouched() {
    let p = pod(json!({"containers": [
        {"name": "app", "image": "docker.io/library/nginx:1.27", "ports": [{"containerPort": 80}]},
        {"name": "root", "image": "ghcr.io/example/tool:1", "securityContext": {"runAsUser": 0}},
    ]}));
    let e = Engine::default();
    assert!(mutate(&e, &p).patch.is_empty());
    let v = validate(&e, &p);
    assert!(v.allowed && v.violations.is_empty() && v.warnings.is_empty());
}

#[test]
fn dev_variants_get_nothing_injected() {
    let p = pod(json!({"containers": [{"name": "build", "image": "dhi.io/python:3.13-dev"}]}));
    let d = mutate(&Engine::default(), &p);
    assert!(d.patch.is_empty(), "{:?}", d.patch);
}

#[test]
fn init_and_ephemeral_containers_are_mutated() {
    let p = pod(json!({
        "initContainers": [{"name": "init", "image": "dhi.io/busybox:1"}],
        "containers": [{"name": "app", "image": "example.com/app:1"}],
        "ephemeralContainers": [{"name": "debug", "image": "dhi.io/busybox:1"}],
    }));
    let d = mutate(&Engine::default(), &p);
    let paths: Vec<String> = patch_json(&d.patch)
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/initContainers/0/securityContext",
            "/spec/ephemeralContainers/0/securityContext",
            "/spec/securityContext"
        ]
    );
}

#[test]
fn windows_pods_get_no_linux_fields() {
    let p = pod(
        json!({"os": {"name": "windows"}, "containers": [{"name": "a", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]}]}),
    );
    let e = Engine::default();
    assert!(mutate(&e, &p).patch.is_empty());
    assert!(validate(&e, &p).violations.is_empty());
}

// === rewrites ===

#[test]
fn istio_images_are_rewritten_and_get_their_user() {
    let p = pod(json!({"containers": [
        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.3-distroless", "ports": [{"containerPort": 15090}]},
        {"name": "discovery", "image": "gcr.io/istio-release/pilot:1.30.3"},
    ]}));
    let d = mutate(&Engine::default(), &p);
    let ops = patch_json(&d.patch);
    assert_eq!(
        ops[0],
        json!({"op": "replace", "path": "/spec/containers/0/image", "value": "dhi.io/istio-proxyv2:1.30.3"})
    );
    assert_eq!(
        ops[1],
        json!({"op": "add", "path": "/spec/containers/0/securityContext", "value": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true}})
    );
    assert_eq!(
        ops[2],
        json!({"op": "replace", "path": "/spec/containers/1/image", "value": "dhi.io/istio-pilot:1.30.3"})
    );
    // Idempotent: the rewritten object is hardened and complete.
    let fixed = apply(&p, &d.patch);
    assert!(mutate(&Engine::default(), &fixed).patch.is_empty());
}

#[test]
fn cilium_tags_drop_the_v() {
    let p = pod(json!({"containers": [
        {"name": "relay", "image": "quay.io/cilium/hubble-relay:v1.20.1"},
        {"name": "startup", "image": "quay.io/cilium/startup-script:v0.20260701"},
    ]}));
    let d = mutate(&Engine::default(), &p);
    let ops = patch_json(&d.patch);
    assert_eq!(ops[0]["value"], "dhi.io/hubble-relay:1.20.1");
    assert_eq!(ops[2]["value"], "dhi.io/cilium-startup-script:0.20260701");
}

#[test]
fn rewrites_that_would_not_be_admitted_are_skipped_with_a_reason() {
    let digest = format!("sha256:{}", "b".repeat(64));
    let p = pod(json!({
        "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.30.3",
            "securityContext": {"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}],
        "containers": [
            {"name": "pinned", "image": format!("docker.io/istio/proxyv2:1.30.3@{digest}")},
            {"name": "low-port", "image": "docker.io/istio/proxyv2:1.30.3", "ports": [{"containerPort": 80}]},
            {"name": "shell", "image": "docker.io/istio/proxyv2:1.30.3", "command": ["/bin/sh", "-c", "exec pilot-agent"]},
        ]
    }));
    let d = mutate(&Engine::default(), &p);
    assert!(d.patch.is_empty(), "{:?}", d.patch);
    let reasons: Vec<&str> = d.skipped.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        reasons,
        ["runs_as_root", "digest", "privileged_port", "shell_command"]
    );
    assert_eq!(d.warnings.len(), 4);
    assert!(d.warnings[0].starts_with("container \"istio-init\": docker.io/istio/proxyv2:1.30.3 not rewritten to dhi.io/istio-proxyv2:1.30.3: it runs as root"), "{}", d.warnings[0]);
    // Skipped containers stay non-hardened: nothing to deny.
    assert!(validate(&Engine::default(), &p).allowed);
}

#[test]
fn low_port_rewrite_goes_ahead_when_the_sysctl_permits_it() {
    let p = pod(json!({
        "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}]},
        "containers": [{"name": "gw", "image": "docker.io/istio/proxyv2:1.30.3", "ports": [{"containerPort": 80}]}]
    }));
    let d = mutate(&Engine::default(), &p);
    assert_eq!(
        patch_json(&d.patch)[0]["value"],
        "dhi.io/istio-proxyv2:1.30.3"
    );
}

#[test]
fn mirror_target_and_pull_secrets() {
    let e = engine(
        "rewrite:\n  target: registry.example.com/platform/dhi-{repo}\n  imagePullSecrets: [dhi-pull, other]\n",
    );
    let p = pod(json!({
        "imagePullSecrets": [{"name": "other"}],
        "containers": [{"name": "relay", "image": "quay.io/cilium/hubble-relay:v1.20.1"}]
    }));
    let d = mutate(&e, &p);
    let ops = patch_json(&d.patch);
    assert_eq!(
        ops[0]["value"],
        "registry.example.com/platform/dhi-hubble-relay:1.20.1"
    );
    assert_eq!(
        ops.as_array().unwrap().last().unwrap(),
        &json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "dhi-pull"}})
    );
    let fixed = apply(&p, &d.patch);
    assert!(
        mutate(&e, &fixed).patch.is_empty(),
        "idempotent with a mirror"
    );
}

#[test]
fn official_images_only_when_opted_in() {
    let p = pod(
        json!({"containers": [{"name": "web", "image": "nginx:1.31", "ports": [{"containerPort": 8080}]}]}),
    );
    assert!(mutate(&Engine::default(), &p).patch.is_empty());
    let e = engine("rewrite: {officialImages: true}");
    let d = mutate(&e, &p);
    assert_eq!(patch_json(&d.patch)[0]["value"], "dhi.io/nginx:1.31");
    // Not in the catalog: left alone.
    let p =
        pod(json!({"containers": [{"name": "x", "image": "docker.io/library/not-a-dhi-image:1"}]}));
    assert!(mutate(&e, &p).patch.is_empty());
}

#[test]
fn rewrite_can_be_switched_off() {
    let p = pod(
        json!({"containers": [{"name": "relay", "image": "quay.io/cilium/hubble-relay:v1.20.1"}]}),
    );
    assert!(
        mutate(&engine("rewrite: {enabled: false}"), &p)
            .patch
            .is_empty()
    );
}

#[test]
fn hardened_references_are_never_re_prefixed() {
    for image in [
        "dhi.io/istio-proxyv2:1.30.3",
        "registry.example.com/platform/dhi-istio-proxyv2:1.30.3",
    ] {
        let p = pod(
            json!({"containers": [{"name": "p", "image": image, "securityContext": {"runAsUser": 1337}}]}),
        );
        let d = mutate(&Engine::default(), &p);
        assert!(
            patch_json(&d.patch)
                .as_array()
                .unwrap()
                .iter()
                .all(|op| !op["path"].as_str().unwrap().ends_with("/image")),
            "{image}"
        );
    }
}

// === validation ===

#[test]
fn run_as_root_explicit_container_and_pod() {
    let e = Engine::default();
    let p = pod(
        json!({"containers": [{"name": "app", "image": "dhi.io/python:3.13", "securityContext": {"runAsUser": 0}}]}),
    );
    let d = validate(&e, &p);
    assert!(!d.allowed);
    assert_eq!(violations(&d), [(RuleId::RunAsRoot, "app".to_owned())]);
    assert!(
        d.violations[0]
            .message
            .contains("its securityContext sets runAsUser: 0")
    );
    assert!(
        d.violations[0]
            .message
            .contains("Fix: remove runAsUser: 0, or set the container's runAsUser to 65532")
    );

    let p = pod(
        json!({"securityContext": {"runAsUser": 0}, "containers": [{"name": "app", "image": "dhi.io/python:3.13"}]}),
    );
    let d = validate(&e, &p);
    assert_eq!(violations(&d), [(RuleId::RunAsRoot, "app".to_owned())]);
    assert!(
        d.violations[0]
            .message
            .contains("the pod securityContext sets runAsUser: 0")
    );
    // A container value wins over the pod's.
    let p = pod(
        json!({"securityContext": {"runAsUser": 0}, "containers": [{"name": "app", "image": "dhi.io/python:3.13", "securityContext": {"runAsUser": 65532}}]}),
    );
    assert!(validate(&e, &p).allowed);
}

#[test]
fn dev_variant_runs_as_root_unless_given_a_user() {
    let e = Engine::default();
    let p =
        pod(json!({"containers": [{"name": "build", "image": "dhi.io/python:3.13-debian13-dev"}]}));
    let d = validate(&e, &p);
    assert_eq!(violations(&d), [(RuleId::RunAsRoot, "build".to_owned())]);
    assert!(d.violations[0].message.contains("use the runtime variant"));
    let p = pod(
        json!({"containers": [{"name": "build", "image": "dhi.io/python:3.13-dev", "securityContext": {"runAsUser": 1000}}]}),
    );
    let d = validate(&e, &p);
    assert!(d.allowed);
    assert_eq!(d.warnings.len(), 1);
    assert!(d.warnings[0].contains("dev variant"), "{}", d.warnings[0]);
}

#[test]
fn root_is_allowed_for_node_agents() {
    let e = Engine::default();
    let p = pod(json!({"hostNetwork": true, "containers": [
        {"name": "install-cni", "image": "dhi.io/istio-install-cni:1.30.3", "securityContext": {"runAsUser": 0, "privileged": true}},
        {"name": "falco", "image": "dhi.io/falco:0", "ports": [{"containerPort": 80, "hostPort": 80}]},
    ]}));
    let d = validate(&e, &p);
    assert!(d.allowed, "{:?}", d.violations);
}

#[test]
fn privileged_port_with_fix_and_sysctl() {
    let e = Engine::default();
    let p = pod(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}, {"containerPort": 443}, {"containerPort": 8080}]}]}),
    );
    let d = validate(&e, &p);
    assert_eq!(violations(&d), [(RuleId::PrivilegedPort, "web".to_owned())]);
    let msg = &d.violations[0].message;
    assert!(
        msg.contains("declares port 80, 443 but runs as UID 65532"),
        "{msg}"
    );
    assert!(
        msg.contains("listen on 8080 and map Service port 80 to it (targetPort: 8080)"),
        "{msg}"
    );
    assert!(
        msg.contains("net.ipv4.ip_unprivileged_port_start=80"),
        "{msg}"
    );

    let with = |value: &str, host: bool| {
        pod(json!({
            "hostNetwork": host,
            "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": value}]},
            "containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80, "hostPort": 80}]}]
        }))
    };
    assert!(validate(&e, &with("80", false)).allowed);
    assert!(validate(&e, &with("0", false)).allowed);
    assert!(!validate(&e, &with("81", false)).allowed);
    // With hostNetwork the node's setting applies; the pod sysctl cannot help.
    let d = validate(&e, &with("0", true));
    assert_eq!(violations(&d), [(RuleId::PrivilegedPort, "web".to_owned())]);
    assert!(!d.violations[0].message.contains("sysctl"));
}

#[test]
fn host_port_counts_only_with_host_network() {
    let e = Engine::default();
    let p = pod(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 8080, "hostPort": 80}]}]}),
    );
    assert!(validate(&e, &p).allowed);
    let p = pod(
        json!({"hostNetwork": true, "containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 8080, "hostPort": 80}]}]}),
    );
    assert!(!validate(&e, &p).allowed);
}

#[test]
fn every_violation_is_listed_in_the_denial() {
    let e = Engine::default();
    let p = pod(json!({"containers": [
        {"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]},
        {"name": "build", "image": "dhi.io/python:3.13-dev"},
        {"name": "typo", "image": "dhi.io/Python:3"},
    ]}));
    let d = validate(&e, &p);
    assert_eq!(
        violations(&d),
        [
            (RuleId::PrivilegedPort, "web".to_owned()),
            (RuleId::RunAsRoot, "build".to_owned()),
            (RuleId::InvalidImage, "typo".to_owned())
        ]
    );
    let msg = d.denial_message(WorkloadKind::Pod, "web");
    assert!(msg.starts_with("Pod web cannot run on Docker Hardened Images (3 violations):\n- [privileged-port] container \"web\" (dhi.io/nginx:1.31)"), "{msg}");
    assert!(msg.contains("\n- [run-as-root] container \"build\" (dhi.io/python:3.13-dev)"));
    assert!(msg.contains("\n- [invalid-image] container \"typo\": image \"dhi.io/Python:3\" is not a valid reference (repository name must be lowercase)"));
}

#[test]
fn rule_actions_warn_and_off() {
    let p = pod(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]}]}),
    );
    let d = validate(&engine("rules: {privileged-port: warn}"), &p);
    assert!(d.allowed && d.violations.is_empty());
    assert_eq!(d.warnings.len(), 1);
    assert!(d.warnings[0].starts_with("[privileged-port] container \"web\""));
    let d = validate(&engine("rules: {privileged-port: off}"), &p);
    assert!(d.allowed && d.warnings.is_empty());
}

#[test]
fn exempt_images_are_neither_judged_nor_patched() {
    let e = engine("exempt: {images: ['dhi.io/python:*-dev']}");
    let p = pod(json!({"containers": [{"name": "build", "image": "dhi.io/python:3.13-dev"}]}));
    assert!(validate(&e, &p).allowed);
    let p = pod(json!({"containers": [{"name": "a", "image": "dhi.io/python:3.13"}]}));
    assert!(
        !mutate(&e, &p).patch.is_empty(),
        "non-matching images still patched"
    );
}

#[test]
fn istio_placeholder_and_missing_images_are_skipped() {
    let p = pod(
        json!({"containers": [{"name": "istio-proxy", "image": "auto"}, {"name": "no-image"}]}),
    );
    let e = Engine::default();
    assert!(mutate(&e, &p).patch.is_empty());
    assert!(validate(&e, &p).allowed);
}

#[test]
fn warnings_fit_kube_apiserver_limit() {
    let long = "x".repeat(400);
    let p = pod(
        json!({"containers": [{"name": long, "image": "dhi.io/python:3.13-dev", "securityContext": {"runAsUser": 5}}]}),
    );
    let d = validate(&Engine::default(), &p);
    assert_eq!(d.warnings.len(), 1);
    // The decision keeps the whole text (check prints it); the webhook sends it as
    // kube-apiserver passes it on: whole while one answer's warnings fit in 4 KiB.
    assert!(d.warnings[0].len() > 400);
    assert_eq!(dhi_policy::as_api_server_sends(&d.warnings), d.warnings);
    // Past 4 KiB in all, each is cut to 256 bytes, as the API server's recorder cuts.
    let many: Vec<String> = (0..12)
        .map(|i| format!("{} ({i})", d.warnings[0]))
        .collect();
    let sent = dhi_policy::as_api_server_sends(&many);
    assert_eq!(sent.len(), many.len());
    for (w, whole) in sent.iter().zip(&many) {
        assert_eq!(w.len(), dhi_policy::WARNING_CUT);
        assert!(whole.starts_with(w.as_str()), "{w}");
    }
}

// === templates and modes ===

fn deployment(spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec}}})
}

#[test]
fn templates_are_validated_as_they_will_run_but_not_mutated_by_default() {
    let e = Engine::default();
    let d = deployment(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]}]}),
    );
    let v = Ask::of(WorkloadKind::Deployment, &d).review(&e, Webhook::Validate, Mode::Enforce);
    assert_eq!(violations(&v), [(RuleId::PrivilegedPort, "web".to_owned())]);
    let m = Ask::of(WorkloadKind::Deployment, &d).review(&e, Webhook::Mutate, Mode::Enforce);
    assert!(m.patch.is_empty());
    // The raw plan still exists (check --fix uses it), addressed into the template.
    let eval = Ask::of(WorkloadKind::Deployment, &d).evaluate(&e);
    assert_eq!(
        patch_json(&eval.patch)[0]["path"],
        "/spec/template/spec/containers/0/securityContext"
    );
    // With the switch on, the webhook patches templates too.
    let m = Ask::of(WorkloadKind::Deployment, &d).review(
        &engine("templates: {mutate: true}"),
        Webhook::Mutate,
        Mode::Enforce,
    );
    assert_eq!(
        patch_json(&m.patch)[0]["path"],
        "/spec/template/spec/containers/0/securityContext"
    );
}

#[test]
fn upstream_template_that_would_be_rewritten_is_judged_as_rewritten() {
    // A CronJob of upstream hubble-relay with port 80: the rewrite is skipped, so the
    // pods keep the upstream image and nothing is denied.
    let e = Engine::default();
    let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {"containers": [
            {"name": "relay", "image": "quay.io/cilium/hubble-relay:v1.20.1", "ports": [{"containerPort": 80}]}]}}}}}});
    assert!(
        Ask::of(WorkloadKind::CronJob, &cj)
            .review(&e, Webhook::Validate, Mode::Enforce)
            .allowed
    );
    let eval = Ask::of(WorkloadKind::CronJob, &cj).evaluate(&e);
    assert!(eval.patch.is_empty());
    assert!(matches!(eval.warnings[0], Warning::RewriteSkipped { .. }));
}

#[test]
fn audit_mode_allows_without_patch_and_reports() {
    let e = Engine::default();
    let p = pod(json!({"containers": [
        {"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]},
        {"name": "build", "image": "dhi.io/python:3.13-dev"},
    ]}));
    let v = Ask::of(WorkloadKind::Pod, &p).review(&e, Webhook::Validate, Mode::Audit);
    assert!(v.allowed);
    assert_eq!(v.violations.len(), 2);
    assert!(v.warnings[0].starts_with("audit: [privileged-port] container \"web\""));
    assert_eq!(
        v.audit_annotations["violation.privileged-port"],
        "web (dhi.io/nginx:1.31)"
    );
    assert_eq!(
        v.audit_annotations["violation.run-as-root"],
        "build (dhi.io/python:3.13-dev)"
    );
    let m = Ask::of(WorkloadKind::Pod, &p).review(&e, Webhook::Mutate, Mode::Audit);
    assert!(m.allowed && m.patch.is_empty() && m.mutations.is_empty());
    assert_eq!(
        m.audit_annotations["planned-mutations"],
        "run_as_user x1, run_as_group x1, run_as_non_root x1, fs_group x1"
    );
}

#[test]
fn unchanged_update_is_not_judged_again() {
    let e = Engine::default();
    let old = pod(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]}]}),
    );
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({"touched": "yes"});
    let judged = |object: &Value| {
        Ask::pod(object)
            .old(Some(&old))
            .review(&e, Webhook::Validate, Mode::Enforce)
    };
    assert!(judged(&new).allowed);
    // Changing the image is judged.
    let mut changed = old.clone();
    changed["spec"]["containers"][0]["image"] = json!("dhi.io/nginx:1.30");
    assert!(!judged(&changed).allowed);
}

#[test]
fn ephemeral_scope_judges_only_debug_containers() {
    let e = Engine::default();
    let p = pod(json!({
        "containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]}],
        "ephemeralContainers": [{"name": "debugger", "image": "dhi.io/busybox:1-dev"}],
    }));
    let d = Ask::pod(&p)
        .scope(Scope::EphemeralOnly)
        .review(&e, Webhook::Validate, Mode::Enforce);
    assert_eq!(violations(&d), [(RuleId::RunAsRoot, "debugger".to_owned())]);
}

#[test]
fn decode_errors_name_the_field() {
    let bad =
        json!({"spec": {"containers": [{"name": "a", "securityContext": {"runAsUser": "zero"}}]}})
            .to_string();
    let err = decode_object(&bad).unwrap_err();
    assert_eq!(err.path, "spec.containers[0].securityContext.runAsUser");
    assert!(
        err.message.contains("invalid type: string \"zero\""),
        "{}",
        err.message
    );
    let huge = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 1e30}]}]}})
        .to_string();
    assert_eq!(
        decode_object(&huge).unwrap_err().path,
        "spec.containers[0].ports[0].containerPort"
    );
}
