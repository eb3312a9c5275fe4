//! The validator denies whatever the rules say, whatever form the object takes: every
//! spelling of a hardened image, every place a container can hide, every kind that
//! carries a pod template, CREATE and UPDATE, and through the AdmissionReview path.
//!
//! Each test asserts the exact rule ids and container names, so a test that still
//! passes after a change in what is denied is a test that was looked at.

use base64::Engine as _;
use dhi_policy::answer;
use dhi_policy::{Decision, Engine, Mode, RuleId, Scope, Webhook, WorkloadKind};
use serde_json::{Value, json};

use crate::support::{Ask, engine, mutate, nest, pod_in, validate, violations};

use RuleId::{InvalidImage, PrivilegedPort, RunAsRoot};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn pod(spec: Value) -> Value {
    pod_in("shop", spec)
}

fn one(image: &str) -> Value {
    pod(json!({"containers": [{"name": "app", "image": image}]}))
}

/// `kind`'s object around a pod spec.
fn workload(kind: WorkloadKind, spec: Value) -> Value {
    let mut v = nest(kind, spec);
    v["metadata"] = json!({"name": "web", "namespace": "shop"});
    v
}

fn validate_kind(engine: &Engine, kind: WorkloadKind, object: &Value) -> Decision {
    Ask::of(kind, object).review(engine, Webhook::Validate, Mode::Enforce)
}

/// The enforcing validating webhook's decision on an UPDATE from `old` to `new`.
fn validate_update(
    engine: &Engine,
    kind: WorkloadKind,
    new: &Value,
    old: &Value,
    scope: Scope,
) -> Decision {
    Ask::of(kind, new)
        .old(Some(old))
        .scope(scope)
        .review(engine, Webhook::Validate, Mode::Enforce)
}

fn expect(d: &Decision, want: &[(RuleId, &str)]) {
    let want: Vec<(RuleId, String)> = want.iter().map(|(r, c)| (*r, (*c).to_owned())).collect();
    assert_eq!(violations(d), want, "violations: {:#?}", d.violations);
    assert_eq!(
        d.allowed,
        want.is_empty(),
        "allowed must follow the violations"
    );
}

/// An AdmissionReview body.
fn review_body(
    kind: WorkloadKind,
    operation: &str,
    object: &Value,
    old: Option<&Value>,
    sub: Option<&str>,
) -> Vec<u8> {
    let mut request = json!({
        "uid": "6c1f7d0e-0b4e-4a8e-9a0b-7f3c2d1e0a99",
        "kind": {"group": kind.group(), "version": "v1", "kind": kind.as_str()},
        "name": "web",
        "namespace": "shop",
        "operation": operation,
        "object": object,
    });
    if let Some(old) = old {
        request["oldObject"] = old.clone();
    }
    if let Some(sub) = sub {
        request["subResource"] = json!(sub);
    }
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}))
        .unwrap()
}

/// The answer of the enforcing validating webhook: (allowed, status code, answer).
fn handle_validate(engine: &Engine, body: &[u8]) -> (bool, Option<i64>, answer::Answer) {
    let answer = answer::handle(engine, Webhook::Validate, Mode::Enforce, body);
    assert_eq!(answer.status, 200);
    let out: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        out["response"]["uid"],
        "6c1f7d0e-0b4e-4a8e-9a0b-7f3c2d1e0a99"
    );
    let allowed = out["response"]["allowed"].as_bool().unwrap();
    (allowed, out["response"]["status"]["code"].as_i64(), answer)
}

// === Image spellings ===

#[test]
fn registry_host_in_capitals_is_still_dhi_io() {
    let e = Engine::default();
    for image in ["DHI.IO/python:3.13-dev", "Dhi.Io/python:3.13-dev"] {
        let d = validate(&e, &one(image));
        expect(&d, &[(RunAsRoot, "app")]);
        assert_eq!(d.violations[0].image, "dhi.io/python:3.13-dev", "{image}");
    }
}

#[test]
fn capitals_in_the_repository_are_an_invalid_image() {
    let e = Engine::default();
    for image in [
        "dhi.io/Python:3",
        "dhi.io/PYTHON:3.13-dev",
        "Python:3.13",
        "registry.example.com/platform/DHI-python:3.13-dev",
        // Docker reads an upper-case first component without a dot as a registry host,
        // oci-spec as a Docker Hub path: refused rather than judged under either reading.
        "Mirror/dhi-python:3.13-dev",
        "Foo/bar:1",
    ] {
        expect(&validate(&e, &one(image)), &[(InvalidImage, "app")]);
    }
}

#[test]
fn a_digest_of_the_wrong_length_is_an_invalid_image() {
    let e = Engine::default();
    let hex63 = "a".repeat(63);
    let hex65 = "a".repeat(65);
    for image in [
        "dhi.io/python:3.13-dev@sha256".to_owned(),
        "dhi.io/python:3.13-dev@sha256:".to_owned(),
        "dhi.io/python:3.13-dev@sha256:abc".to_owned(),
        format!("dhi.io/python:3.13-dev@sha256:{hex63}"),
        format!("dhi.io/python:3.13-dev@sha256:{hex65}"),
        format!("dhi.io/python@sha256:{hex63}"),
    ] {
        expect(&validate(&e, &one(&image)), &[(InvalidImage, "app")]);
    }
}

#[test]
fn a_valid_digest_does_not_hide_a_dev_variant() {
    let e = Engine::default();
    let d = validate(&e, &one(&format!("dhi.io/python:3.13-dev@{DIGEST}")));
    expect(&d, &[(RunAsRoot, "app")]);
}

#[test]
fn empty_and_blank_images_are_invalid() {
    let e = Engine::default();
    for image in [
        "",
        " ",
        " dhi.io/python:3.13-dev",
        "dhi.io/python:3.13-dev ",
        "dhi.io./python:3.13-dev",
    ] {
        expect(&validate(&e, &one(image)), &[(InvalidImage, "app")]);
    }
}

#[test]
fn docker_hub_spellings_rewrite_identically() {
    let e = engine("rewrite: {officialImages: true}");
    let forms = [
        "nginx:1.31",
        "library/nginx:1.31",
        "docker.io/library/nginx:1.31",
        "index.docker.io/library/nginx:1.31",
        "DOCKER.IO/library/nginx:1.31",
        "Docker.io/nginx:1.31",
        "INDEX.DOCKER.IO/library/nginx:1.31",
    ];
    let patches: Vec<Value> = forms
        .iter()
        .map(|image| serde_json::to_value(&mutate(&e, &one(image)).patch).unwrap())
        .collect();
    assert_eq!(
        patches[0][0],
        json!({"op": "replace", "path": "/spec/containers/0/image", "value": "dhi.io/nginx:1.31"})
    );
    for (form, patch) in forms.iter().zip(&patches) {
        assert_eq!(patch, &patches[0], "{form} is rewritten differently");
    }
    // And a dev tag, in every spelling, is left alone (it would run as root) and never
    // becomes a hardened image that then runs as root.
    for form in ["python:3.13-dev", "docker.io/library/python:3.13-dev"] {
        let d = mutate(&e, &one(form));
        assert!(d.patch.is_empty(), "{form}: {:?}", d.patch);
    }
}

#[test]
fn without_official_images_no_docker_hub_spelling_is_rewritten() {
    let e = Engine::default();
    for image in [
        "nginx:1.31",
        "docker.io/library/nginx:1.31",
        "index.docker.io/library/nginx:1.31",
    ] {
        assert!(mutate(&e, &one(image)).patch.is_empty(), "{image}");
    }
}

#[test]
fn mirrored_dhi_names_are_hardened_under_any_registry() {
    let e = Engine::default();
    for image in [
        "registry.example.com/platform/dhi-python:3.13-dev",
        "localhost:5000/dhi-python:3.13-dev",
        "ghcr.io/a/b/c/dhi-python:3.13-dev",
        "dhi-python:3.13-dev",
        "docker.io/library/dhi-python:3.13-dev",
        "10.0.0.1:5000/mirror/dhi-python:3.13-dev",
    ] {
        let d = validate(&e, &one(image));
        expect(&d, &[(RunAsRoot, "app")]);
        assert!(
            d.violations[0].message.contains("dev variant"),
            "{image}: {}",
            d.violations[0].message
        );
    }
}

#[test]
fn an_ipv6_registry_is_judged_like_any_other() {
    // distribution/reference (and so the kubelet) accepts bracketed IPv6 hosts: such an
    // image is pulled, so a hardened one is judged, and an upstream one admitted.
    let e = Engine::default();
    let d = validate(&e, &one("[::1]:5000/dhi-python:3.13-dev"));
    expect(&d, &[(RunAsRoot, "app")]);
    assert_eq!(d.violations[0].image, "[::1]:5000/dhi-python:3.13-dev");
    expect(&validate(&e, &one("[fd00::1]:5000/busybox:1.37")), &[]);
}

/// `dhi.io:443` is the same registry as `dhi.io` (443 is the HTTPS port every client
/// uses for it), so the kubelet pulls the same image; the validator must judge it the
/// same way.
///
/// Found by this suite: before the fix, `dhi.io:443/python:3.13-dev` was neither judged
/// nor patched (its registry was "dhi.io:443", not "dhi.io").
#[test]
fn dhi_io_with_its_default_port_is_still_dhi_io() {
    let e = Engine::default();
    for image in ["dhi.io:443/python:3.13-dev", "DHI.IO:443/python:3.13-dev"] {
        let d = validate(&e, &one(image));
        expect(&d, &[(RunAsRoot, "app")]);
        assert_eq!(d.violations[0].image, "dhi.io/python:3.13-dev");
    }
    // And the runtime variant is patched like dhi.io's.
    let d = mutate(&e, &one("dhi.io:443/nginx:1.31"));
    assert_eq!(
        serde_json::to_value(&d.patch).unwrap()[0],
        json!({"op": "add", "path": "/spec/containers/0/securityContext",
               "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}})
    );
    // Any other port is another registry (and not a hardened one).
    expect(&validate(&e, &one("dhi.io:5000/python:3.13-dev")), &[]);
}

// === Where the user comes from ===

#[test]
fn pod_level_root_with_container_unset_is_denied() {
    let e = Engine::default();
    for container_ctx in [
        None,
        Some(json!({})),
        Some(json!({"runAsUser": null})),
        Some(Value::Null),
    ] {
        let mut c = json!({"name": "web", "image": "dhi.io/nginx:1.31"});
        if let Some(ctx) = &container_ctx {
            c["securityContext"] = ctx.clone();
        }
        let d = validate(
            &e,
            &pod(json!({"securityContext": {"runAsUser": 0}, "containers": [c]})),
        );
        expect(&d, &[(RunAsRoot, "web")]);
        assert!(
            d.violations[0]
                .message
                .contains("the pod securityContext sets runAsUser: 0"),
            "{container_ctx:?}: {}",
            d.violations[0].message
        );
    }
}

#[test]
fn container_root_overrides_pod_nonroot() {
    let e = Engine::default();
    let d = validate(
        &e,
        &pod(json!({
            "securityContext": {"runAsUser": 65532, "runAsNonRoot": true},
            "containers": [
                {"name": "ok", "image": "dhi.io/nginx:1.31"},
                {"name": "web", "image": "dhi.io/nginx:1.31", "securityContext": {"runAsUser": 0}},
            ],
        })),
    );
    expect(&d, &[(RunAsRoot, "web")]);
    assert!(
        d.violations[0]
            .message
            .contains("its securityContext sets runAsUser: 0")
    );
}

#[test]
fn container_nonroot_overrides_pod_root() {
    let e = Engine::default();
    let d = validate(
        &e,
        &pod(json!({
            "securityContext": {"runAsUser": 0},
            "containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "securityContext": {"runAsUser": 65532}}],
        })),
    );
    expect(&d, &[]);
}

// === Where containers hide ===

#[test]
fn init_containers_are_judged() {
    let e = Engine::default();
    let d = validate(
        &e,
        &pod(json!({
            "initContainers": [
                {"name": "migrate", "image": "dhi.io/python:3.13-dev"},
                {"name": "sidecar", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]},
            ],
            "containers": [{"name": "app", "image": "dhi.io/nginx:1.31"}],
        })),
    );
    expect(&d, &[(RunAsRoot, "migrate"), (PrivilegedPort, "sidecar")]);
}

#[test]
fn ephemeral_containers_are_judged_in_the_pod_spec() {
    let e = Engine::default();
    let d = validate(
        &e,
        &pod(json!({
            "containers": [{"name": "app", "image": "dhi.io/nginx:1.31"}],
            "ephemeralContainers": [{"name": "debugger", "image": "dhi.io/python:3.13-dev"}],
        })),
    );
    expect(&d, &[(RunAsRoot, "debugger")]);
}

#[test]
fn kubectl_debug_through_the_subresource_is_denied() {
    let e = Engine::default();
    let old = pod(json!({"containers": [{"name": "app", "image": "dhi.io/nginx:1.31"}]}));
    let new = pod(json!({
        "containers": [{"name": "app", "image": "dhi.io/nginx:1.31"}],
        "ephemeralContainers": [{"name": "debugger-x7k2p", "image": "dhi.io/python:3.13-dev", "targetContainerName": "app"}],
    }));
    // Engine: the subresource scope judges the ephemeral containers only.
    let d = validate_update(&e, WorkloadKind::Pod, &new, &old, Scope::EphemeralOnly);
    expect(&d, &[(RunAsRoot, "debugger-x7k2p")]);
    // Review: UPDATE pods/ephemeralcontainers.
    let body = review_body(
        WorkloadKind::Pod,
        "UPDATE",
        &new,
        Some(&old),
        Some("ephemeralcontainers"),
    );
    let (allowed, code, answer) = handle_validate(&e, &body);
    assert!(!allowed);
    assert_eq!(code, Some(403));
    assert_eq!(answer.violations, vec![RunAsRoot]);
    // A debug container from an ordinary image is not ours to judge.
    let ok = pod(json!({
        "containers": [{"name": "app", "image": "dhi.io/nginx:1.31"}],
        "ephemeralContainers": [{"name": "debugger", "image": "busybox:1.37"}],
    }));
    let body = review_body(
        WorkloadKind::Pod,
        "UPDATE",
        &ok,
        Some(&old),
        Some("ephemeralcontainers"),
    );
    assert!(handle_validate(&e, &body).0);
}

#[test]
fn every_workload_kind_is_denied_for_the_same_bad_template() {
    let e = Engine::default();
    let spec = json!({
        "initContainers": [{"name": "init", "image": "localhost:5000/dhi-python:3.13-dev"}],
        "containers": [
            {"name": "app", "image": "dhi.io/python:3.13-dev"},
            {"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 443}]},
        ],
    });
    let want = [
        (RunAsRoot, "init"),
        (RunAsRoot, "app"),
        (PrivilegedPort, "web"),
    ];
    assert_eq!(WorkloadKind::ALL.len(), 9);
    for kind in WorkloadKind::ALL {
        let object = workload(kind, spec.clone());
        let d = validate_kind(&e, kind, &object);
        expect(&d, &want);
        // And through the review path, with the kind's API group.
        let (allowed, code, answer) =
            handle_validate(&e, &review_body(kind, "CREATE", &object, None, None));
        assert!(!allowed, "{kind}");
        assert_eq!(code, Some(403), "{kind}");
        assert_eq!(
            answer.violations,
            vec![RunAsRoot, RunAsRoot, PrivilegedPort],
            "{kind}"
        );
    }
}

#[test]
fn a_workload_kind_under_another_group_is_not_silently_allowed() {
    // kube-apiserver only sends what the webhook rules select; anything else is an
    // error answer (allowed: false), never a silent allow.
    let e = Engine::default();
    let object = workload(
        WorkloadKind::Deployment,
        json!({"containers": [{"name": "app", "image": "dhi.io/python:3.13-dev"}]}),
    );
    let mut body: Value = serde_json::from_slice(&review_body(
        WorkloadKind::Deployment,
        "CREATE",
        &object,
        None,
        None,
    ))
    .unwrap();
    body["request"]["kind"]["group"] = json!("example.com");
    let (allowed, code, _) = handle_validate(&e, &serde_json::to_vec(&body).unwrap());
    assert!(!allowed);
    assert_eq!(code, Some(400));
}

// === UPDATE ===

#[test]
fn update_that_switches_to_a_hardened_image_is_denied() {
    let e = Engine::default();
    let old_spec = json!({"containers": [{"name": "app", "image": "python:3.13"}]});
    let new_spec = json!({"containers": [{"name": "app", "image": "dhi.io/python:3.13-dev"}]});
    for kind in WorkloadKind::ALL {
        let old = workload(kind, old_spec.clone());
        let new = workload(kind, new_spec.clone());
        assert!(
            validate_kind(&e, kind, &old).allowed,
            "{kind}: the old object is compliant"
        );
        let d = validate_update(&e, kind, &new, &old, Scope::All);
        expect(&d, &[(RunAsRoot, "app")]);
        let (allowed, code, answer) =
            handle_validate(&e, &review_body(kind, "UPDATE", &new, Some(&old), None));
        assert!(!allowed, "{kind}");
        assert_eq!(code, Some(403), "{kind}");
        assert_eq!(answer.violations, vec![RunAsRoot], "{kind}");
    }
}

#[test]
fn update_that_adds_root_to_a_compliant_hardened_pod_is_denied() {
    let e = Engine::default();
    let old = pod(json!({"containers": [{"name": "app", "image": "dhi.io/nginx:1.31"}]}));
    let new = pod(
        json!({"securityContext": {"runAsUser": 0}, "containers": [{"name": "app", "image": "dhi.io/nginx:1.31"}]}),
    );
    let d = validate_update(&e, WorkloadKind::Pod, &new, &old, Scope::All);
    expect(&d, &[(RunAsRoot, "app")]);
}

/// Like Pod Security Admission, an UPDATE that leaves the pod spec as it was is not
/// judged again: an object admitted before the policy (or while its namespace was in
/// audit mode) must stay manageable — scaled, relabelled, annotated, its finalizers
/// removed — or it could never be deleted cleanly. Nothing new runs because of it: the
/// pods such a workload creates are Pod CREATEs, and those are judged.
#[test]
fn update_that_leaves_a_violating_spec_unchanged_is_allowed() {
    let e = Engine::default();
    let spec = json!({"containers": [{"name": "app", "image": "dhi.io/python:3.13-dev"}]});
    for kind in WorkloadKind::ALL {
        let old = workload(kind, spec.clone());
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"team": "payments"});
        if kind != WorkloadKind::Pod && kind != WorkloadKind::PodTemplate {
            new["spec"]["replicas"] = json!(5);
        }
        assert!(
            !validate_kind(&e, kind, &old).allowed,
            "{kind}: the object itself violates"
        );
        let d = validate_update(&e, kind, &new, &old, Scope::All);
        expect(&d, &[]);
        let (allowed, _, _) =
            handle_validate(&e, &review_body(kind, "UPDATE", &new, Some(&old), None));
        assert!(allowed, "{kind}");
        // The pods it creates are still judged.
        let created = pod(spec.clone());
        assert!(
            !handle_validate(
                &e,
                &review_body(WorkloadKind::Pod, "CREATE", &created, None, None)
            )
            .0
        );
    }
}

#[test]
fn update_without_old_object_is_judged_like_a_create() {
    let e = Engine::default();
    let new = one("dhi.io/python:3.13-dev");
    let (allowed, code, _) = handle_validate(
        &e,
        &review_body(WorkloadKind::Pod, "UPDATE", &new, None, None),
    );
    assert!(!allowed);
    assert_eq!(code, Some(403));
}

// === What is deliberately not judged ===

#[test]
fn istio_auto_placeholder_is_skipped() {
    let e = Engine::default();
    let object = pod(json!({
        "securityContext": {"runAsUser": 0},
        "containers": [{"name": "istio-proxy", "image": "auto", "ports": [{"containerPort": 80}]}],
    }));
    expect(&validate(&e, &object), &[]);
    assert!(mutate(&e, &object).patch.is_empty());
    // Only the exact placeholder: `auto:1` is an image (docker.io/library/auto).
    assert!(validate(&e, &one("auto:1")).allowed);
}

/// Windows pods are not judged: hardened images are Linux images, the kubelet of a
/// Linux node refuses a pod whose spec.os.name is windows, and the API server forbids
/// runAsUser on Windows pods.
#[test]
fn windows_pods_are_not_judged() {
    let e = Engine::default();
    let object = pod(json!({
        "os": {"name": "windows"},
        "containers": [{"name": "app", "image": "dhi.io/python:3.13-dev", "ports": [{"containerPort": 80}]}],
    }));
    expect(&validate(&e, &object), &[]);
    assert!(mutate(&e, &object).patch.is_empty());
    // But "linux" (or any other value) is judged.
    let mut linux = object.clone();
    linux["spec"]["os"]["name"] = json!("linux");
    expect(
        &validate(&e, &linux),
        &[(RunAsRoot, "app"), (PrivilegedPort, "app")],
    );
}

// === Ports ===

fn web(sysctl: Option<&str>, host_network: bool, port: u16) -> Value {
    let mut spec = json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": port}]}]});
    if let Some(value) = sysctl {
        spec["securityContext"] =
            json!({"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": value}]});
    }
    if host_network {
        spec["hostNetwork"] = json!(true);
    }
    pod(spec)
}

#[test]
fn port_80_is_denied_for_a_nonroot_hardened_image() {
    expect(
        &validate(&Engine::default(), &web(None, false, 80)),
        &[(PrivilegedPort, "web")],
    );
}

#[test]
fn the_unprivileged_port_sysctl_permits_port_80() {
    let e = Engine::default();
    expect(&validate(&e, &web(Some("0"), false, 80)), &[]);
    expect(&validate(&e, &web(Some("80"), false, 80)), &[]);
    // A start above the port does not.
    expect(
        &validate(&e, &web(Some("81"), false, 80)),
        &[(PrivilegedPort, "web")],
    );
}

#[test]
fn the_sysctl_does_not_help_with_host_network() {
    let e = Engine::default();
    let d = validate(&e, &web(Some("0"), true, 80));
    expect(&d, &[(PrivilegedPort, "web")]);
    assert!(
        !d.violations[0]
            .message
            .contains("ip_unprivileged_port_start"),
        "no sysctl advice with hostNetwork"
    );
}

#[test]
fn host_ports_count_with_host_network() {
    let e = Engine::default();
    let spec = |host_network: bool| {
        pod(json!({
            "hostNetwork": host_network,
            "containers": [{"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 8080, "hostPort": 443}]}],
        }))
    };
    expect(&validate(&e, &spec(true)), &[(PrivilegedPort, "web")]);
    expect(&validate(&e, &spec(false)), &[]);
}

// === Review forms ===

#[test]
fn a_body_that_cannot_be_read_is_refused_not_allowed() {
    let e = Engine::default();
    // Duplicate keys: kube-apiserver never sends them; we refuse rather than guess.
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"6c1f7d0e-0b4e-4a8e-9a0b-7f3c2d1e0a99","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[{"name":"app","image":"dhi.io/nginx:1.31","securityContext":{"runAsUser":65532,"runAsUser":0}}]}}}}"#;
    let (allowed, code, _) = handle_validate(&e, body);
    assert!(!allowed);
    assert_eq!(code, Some(400));
    // A float where the API has an integer.
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"6c1f7d0e-0b4e-4a8e-9a0b-7f3c2d1e0a99","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"securityContext":{"runAsUser":0.0},"containers":[{"name":"app","image":"dhi.io/nginx:1.31"}]}}}}"#;
    let (allowed, code, _) = handle_validate(&e, body);
    assert!(!allowed);
    assert_eq!(code, Some(400));
}

#[test]
fn the_mutating_webhook_never_patches_a_non_hardened_container() {
    // Docker Official Images are left alone unless `rewrite.officialImages` is set.
    let e = engine("rewrite: {imagePullSecrets: [dhi-pull]}");
    let object = pod(json!({
        "containers": [
            {"name": "app", "image": "dhi.io/nginx:1.31"},
            {"name": "other", "image": "ghcr.io/acme/app:1"},
            {"name": "busybox", "image": "busybox:1.37"},
        ],
    }));
    let answer = answer::handle(
        &e,
        Webhook::Mutate,
        Mode::Enforce,
        &review_body(WorkloadKind::Pod, "CREATE", &object, None, None),
    );
    let out: Value = serde_json::from_slice(&answer.body).unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(out["response"]["patch"].as_str().expect("a patch"))
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    let paths: Vec<&str> = ops.iter().map(|op| op["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/0/securityContext",
            "/spec/securityContext"
        ]
    );
}
