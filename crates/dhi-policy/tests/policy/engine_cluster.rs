//! Decisions that must hold in a real cluster (issue 11): rewrites only to images that
//! exist, the right variant for an unknown tag, and the odd cases around them.

use dhi_policy::{
    Engine, GroupKind, Mode, Operation, Request, RuleId, SkipReason, Webhook, WorkloadKind,
};
use serde_json::{Value, json};

use crate::support::{self, engine, mutate, pod, validate};

fn one(name: &str, image: &str) -> Value {
    pod(json!({"containers": [{"name": name, "image": image}]}))
}

fn patch_json(d: &dhi_policy::Decision) -> Value {
    support::patch_json(&d.patch)
}

/// `image` in container "relay" is rewritten to `want`, with nothing skipped or warned.
fn assert_rewritten_cleanly(e: &Engine, image: &str, want: &str) {
    let m = mutate(e, &one("relay", image));
    assert_rewritten_to(&m, want);
    assert!(m.skipped.is_empty() && m.warnings.is_empty());
}

/// The first operation of the patch rewrites container 0 to `image`.
fn assert_rewritten_to(d: &dhi_policy::Decision, image: &str) {
    assert_eq!(
        patch_json(d)[0],
        json!({"op": "replace", "path": "/spec/containers/0/image", "value": image})
    );
}

// === rewrites must point at images that exist ===

#[test]
fn rewrite_to_a_tag_the_catalog_lacks_is_skipped_with_the_lines_that_exist() {
    let e = Engine::default();
    let p = one("hubble-relay", "quay.io/cilium/hubble-relay:v1.16.5");
    let m = mutate(&e, &p);
    assert!(m.allowed);
    assert_eq!(patch_json(&m), json!([]));
    assert_eq!(m.skipped, [SkipReason::UnknownTag]);
    assert_eq!(
        m.warnings,
        [
            "container \"hubble-relay\": quay.io/cilium/hubble-relay:v1.16.5 not rewritten: \
          dhi.io/hubble-relay has no tag 1.16.5; available lines: 1.18, 1.19, 1.20"
        ]
    );
    // Not rewritten, so not hardened: nothing to judge.
    let v = validate(&e, &p);
    assert!(v.allowed && v.warnings.is_empty() && v.violations.is_empty());

    for (tag, lines) in [
        ("1.19.0", "1.30"),
        ("latest", "1.30"),
        ("1.30.3-debug", "1.30"),
    ] {
        let image = format!("docker.io/istio/proxyv2:{tag}");
        let m = mutate(&e, &one("istio-proxy", &image));
        assert_eq!(patch_json(&m), json!([]), "{tag}");
        assert_eq!(m.skipped, [SkipReason::UnknownTag], "{tag}");
        assert_eq!(
            m.warnings,
            [format!(
                "container \"istio-proxy\": {image} not rewritten: dhi.io/istio-proxyv2 has no \
                 tag {tag}; available lines: {lines}"
            )]
        );
    }
    // A listed tag is still rewritten.
    assert_rewritten_cleanly(
        &e,
        "quay.io/cilium/hubble-relay:v1.20.1",
        "dhi.io/hubble-relay:1.20.1",
    );
}

#[test]
fn rewrite_tags_any_opts_out_of_the_tag_check() {
    let e = engine("rewrite: {tags: any}");
    assert_rewritten_cleanly(
        &e,
        "quay.io/cilium/hubble-relay:v1.16.5",
        "dhi.io/hubble-relay:1.16.5",
    );
}

#[test]
fn official_images_are_rewritten_only_to_listed_tags() {
    let e = engine("rewrite: {officialImages: true}");
    let m = mutate(&e, &one("web", "nginx:1.31"));
    assert_rewritten_to(&m, "dhi.io/nginx:1.31");
    let m = mutate(&e, &one("web", "nginx:1.27"));
    assert_eq!(patch_json(&m), json!([]));
    assert_eq!(
        m.warnings,
        [
            "container \"web\": docker.io/library/nginx:1.27 not rewritten: dhi.io/nginx has no tag \
          1.27; available lines: 1.30, 1.31"
        ]
    );
}

// === the right variant for an unknown tag ===

#[test]
fn unknown_tag_resolves_within_its_family_and_is_named() {
    let e = Engine::default();
    // The next patch of a root `-compat` family: root by design, nothing injected.
    let p = one("plugin", "dhi.io/k8s-device-plugin:0.20.1-compat");
    let m = mutate(&e, &p);
    assert_eq!(patch_json(&m), json!([]));
    let v = validate(&e, &p);
    assert!(v.allowed, "{:?}", v.violations);
    assert_eq!(
        v.warnings,
        [
            "container \"plugin\": dhi.io/k8s-device-plugin:0.20.1-compat is not in the catalog \
          snapshot of 2026-08-22; UID 0 assumed"
        ]
    );
    // .NET SDK: root like its family, not 65532.
    let m = mutate(&e, &one("sdk", "dhi.io/dotnet:10.0.999-sdk-alpine3.22"));
    assert_eq!(patch_json(&m), json!([]));
    // The runtime family of the same repository: nonroot, injected.
    let m = mutate(&e, &one("app", "dhi.io/dotnet:10.0.99-alpine3.22"));
    assert_eq!(
        patch_json(&m)[0],
        json!({"op": "add", "path": "/spec/containers/0/securityContext",
               "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}})
    );
}

#[test]
fn unknown_repository_is_a_warning_not_a_denial() {
    let e = Engine::default();
    let p = one("app", "dhi.io/no-such-repo:1");
    let v = validate(&e, &p);
    assert!(v.allowed && v.violations.is_empty());
    assert_eq!(
        v.warnings,
        [
            "container \"app\": dhi.io/no-such-repo is not in the catalog snapshot of 2026-08-22; \
          UID 65532 assumed"
        ]
    );
    let m = mutate(&e, &p);
    assert_eq!(
        patch_json(&m)[0],
        json!({"op": "add", "path": "/spec/containers/0/securityContext",
               "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}})
    );
    // Listed tags and digests say nothing.
    for image in [
        "dhi.io/nginx:1.31",
        "dhi.io/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(
            validate(&e, &one("web", image)).warnings.is_empty(),
            "{image}"
        );
    }
}

#[test]
fn dev_variant_with_a_non_zero_uid_is_treated_by_its_uid() {
    let e = Engine::default();
    let p = one("agent", "dhi.io/sbx-templates:claude-code");
    let m = mutate(&e, &p);
    assert_eq!(
        patch_json(&m),
        json!([
            {"op": "add", "path": "/spec/containers/0/securityContext",
             "value": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true}},
            {"op": "add", "path": "/spec/securityContext", "value": {"fsGroup": 1000}},
        ])
    );
    let v = validate(&e, &p);
    assert!(v.allowed && v.violations.is_empty());
    assert_eq!(
        v.warnings,
        [
            "container \"agent\" uses dev variant dhi.io/sbx-templates:claude-code (UID 1000, shell, \
          package manager): use a runtime variant in production where there is one"
        ]
    );
    // A root dev variant is still called root, and denied without a user.
    let v = validate(&e, &one("build", "dhi.io/python:3.13-dev"));
    assert_eq!(v.violations[0].rule, RuleId::RunAsRoot);
    assert_eq!(
        v.warnings,
        [
            "container \"build\" uses dev variant dhi.io/python:3.13-dev (root, shell, package \
          manager): use the runtime variant (tag without -dev) in production"
        ]
    );
}

// === updates ===

/// One enforcing webhook's answer to a request read as the server reads it.
fn admit(engine: &Engine, webhook: Webhook, request: &Value) -> dhi_policy::Decision {
    support::admit(engine, webhook, Mode::Enforce, request)
}

fn nginx_deployment(replicas: i64, env: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "nginx", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}],
             "env": [{"name": "MODE", "value": env}]}]}}}})
}

fn update(kind: &str, group: &str, object: &Value, old: &Value) -> Value {
    json!({"uid": "u", "kind": {"group": group, "version": "v1", "kind": kind},
        "operation": "UPDATE", "namespace": "default", "name": "web",
        "object": object, "oldObject": old})
}

#[test]
fn update_that_changes_any_template_field_is_judged_again() {
    let e = Engine::default();
    let old = nginx_deployment(1, "a");
    // Only env changed: a field the rules never read. The new pods would be denied.
    let changed = update("Deployment", "apps", &nginx_deployment(1, "b"), &old);
    let v = admit(&e, Webhook::Validate, &changed);
    assert!(!v.allowed);
    assert_eq!(v.violations[0].rule, RuleId::PrivilegedPort);
    // Scale only: the template is as it was, and stays exempt.
    let scaled = update("Deployment", "apps", &nginx_deployment(3, "a"), &old);
    let v = admit(&e, Webhook::Validate, &scaled);
    assert!(v.allowed && v.violations.is_empty() && v.warnings.is_empty());
    // check reads objects as values: the same answers.
    let find = |object: &Value| {
        let request = Request {
            uid: None,
            kind: GroupKind::from(WorkloadKind::Deployment),
            operation: Operation::Update,
            sub_resource: None,
            name: None,
            namespace: Some("default".into()),
            object: Some(object),
            old_object: Some(&old),
        };
        e.find(Mode::Enforce, request).expect("found")
    };
    let changed = find(&nginx_deployment(1, "b"));
    assert!(!changed.allowed);
    assert_eq!(changed.violations[0].rule, RuleId::PrivilegedPort);
    let scaled = find(&nginx_deployment(3, "a"));
    assert!(scaled.allowed && scaled.patch.is_empty() && scaled.violations.is_empty());
}

// === Windows ===

#[test]
fn windows_pods_are_recognised_three_ways_and_get_nothing() {
    let e = engine("rewrite: {officialImages: true}");
    let container =
        json!({"name": "web", "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]});
    let proxy = json!({"name": "proxy", "image": "docker.io/istio/proxyv2:1.30.3"});
    let host_process = json!({"name": "hp", "image": "dhi.io/nginx:1.31",
        "securityContext": {"windowsOptions": {"hostProcess": true}}});
    for spec in [
        json!({"os": {"name": "windows"}, "containers": [container, proxy]}),
        json!({"nodeSelector": {"kubernetes.io/os": "windows"}, "containers": [container, proxy]}),
        json!({"securityContext": {"windowsOptions": {"hostProcess": true}}, "containers": [container, proxy]}),
        json!({"containers": [container, proxy, host_process]}),
    ] {
        let p = pod(spec.clone());
        let m = mutate(&e, &p);
        assert_eq!(patch_json(&m), json!([]), "{spec}");
        let v = validate(&e, &p);
        assert!(
            v.allowed && v.violations.is_empty() && v.warnings.is_empty(),
            "{spec}"
        );
    }
    // A Linux nodeSelector changes nothing.
    let p = pod(json!({"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [container]}));
    assert_eq!(validate(&e, &p).violations[0].rule, RuleId::PrivilegedPort);
}

// === the port rule and root ===

#[test]
fn root_tolerated_by_the_policy_can_bind_low_ports() {
    let root_web = pod(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31",
        "securityContext": {"runAsUser": 0}, "ports": [{"containerPort": 80}]}]}),
    );
    for (policy, warnings) in [("warn", 1), ("off", 0)] {
        let e = engine(&format!("rules: {{run-as-root: {policy}}}"));
        let v = validate(&e, &root_web);
        assert!(
            v.allowed && v.violations.is_empty(),
            "{policy}: {:?}",
            v.violations
        );
        assert_eq!(v.warnings.len(), warnings, "{policy}: {:?}", v.warnings);
        if warnings == 1 {
            assert!(v.warnings[0].starts_with("[run-as-root] container \"web\""));
        }
    }
    // With run-as-root denied the container must become nonroot: both rules apply.
    let v = validate(&Engine::default(), &root_web);
    let rules: Vec<RuleId> = v.violations.iter().map(|v| v.rule).collect();
    assert_eq!(rules, [RuleId::RunAsRoot, RuleId::PrivilegedPort]);
}

// === the runtime's unprivileged port start ===

#[test]
fn runtime_unprivileged_port_start_applies_to_pods_off_the_host_network() {
    let web = pod(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31",
        "ports": [{"containerPort": 80}]}]}),
    );
    let v = validate(&Engine::default(), &web);
    assert_eq!(
        v.violations[0].message,
        "container \"web\" (dhi.io/nginx:1.31) declares port 80 but runs as UID 65532 and cannot \
         bind ports below 1024. Fix: listen on 8080 and map Service port 80 to it (targetPort: \
         8080), or set the pod sysctl net.ipv4.ip_unprivileged_port_start=80 (if the container \
         runtime already sets it for pods, as containerd 2.x, Docker and k3s do, set \
         runtime.unprivilegedPortStart: 0 in the dhi-admission policy)"
    );
    let containerd = engine("runtime: {unprivilegedPortStart: 0}");
    let v = validate(&containerd, &web);
    assert!(v.allowed && v.violations.is_empty());
    let partly = engine("runtime: {unprivilegedPortStart: 443}");
    let web_443 = pod(
        json!({"containers": [{"name": "web", "image": "dhi.io/nginx:1.31",
        "ports": [{"containerPort": 80}, {"containerPort": 443}]}]}),
    );
    let v = validate(&partly, &web_443);
    assert!(
        v.violations[0].message.contains("declares port 80 but"),
        "{}",
        v.violations[0].message
    );
    // On the host network the node's own setting applies, which the policy cannot know.
    let host = pod(json!({"hostNetwork": true, "containers": [{"name": "web",
        "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80, "hostPort": 80}]}]}));
    let v = validate(&containerd, &host);
    assert_eq!(
        v.violations[0].message,
        "container \"web\" (dhi.io/nginx:1.31) declares port 80 but runs as UID 65532 and cannot \
         bind ports below 1024. Fix: listen on 8080 and map Service port 80 to it (targetPort: \
         8080)"
    );
}

// === references ===

#[test]
fn bracketed_ipv6_registries_are_valid_and_upper_case_digests_are_not() {
    let e = Engine::default();
    let v = validate(&e, &one("app", "[fd00::10]:5000/team/app:1.4.2"));
    assert!(v.allowed && v.violations.is_empty() && v.warnings.is_empty());
    let v = validate(&e, &one("web", "[fd00::10]:5000/platform/dhi-nginx:1.31"));
    assert!(v.allowed);
    let m = mutate(&e, &one("web", "[fd00::10]:5000/platform/dhi-nginx:1.31"));
    assert_eq!(
        patch_json(&m)[0]["value"],
        json!({"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true})
    );
    let upper = format!("dhi.io/nginx@sha256:{}", "AB".repeat(32));
    let v = validate(&e, &one("web", &upper));
    assert!(!v.allowed);
    assert_eq!(v.violations[0].rule, RuleId::InvalidImage);
    assert_eq!(
        v.violations[0].message,
        format!(
            "container \"web\": image \"{upper}\" is not a valid reference (invalid checksum \
             digest format), so the kubelet cannot pull it. Fix: write it as \
             [registry/]repository[:tag][@digest], repository in lower case"
        )
    );
}

// === kubectl debug ===

fn debug_request(object: &Value, old: &Value) -> Value {
    json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "subResource": "ephemeralcontainers", "operation": "UPDATE",
        "namespace": "default", "name": "web", "object": object, "oldObject": old})
}

#[test]
fn kubectl_debug_containers_get_the_user_injection_new_ones_only() {
    let e = Engine::default();
    let app = json!({"name": "app", "image": "dhi.io/nginx:1.31",
        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532}});
    let earlier = json!({"name": "debugger-a", "image": "busybox:1.37"});
    let old = pod(
        json!({"securityContext": {"runAsNonRoot": true, "fsGroup": 65532},
        "containers": [app], "ephemeralContainers": [earlier]}),
    );
    let new = pod(
        json!({"securityContext": {"runAsNonRoot": true, "fsGroup": 65532},
        "containers": [app], "ephemeralContainers": [earlier,
            {"name": "debugger-b", "image": "dhi.io/busybox:1.37", "targetContainerName": "app"}]}),
    );
    let m = admit(&e, Webhook::Mutate, &debug_request(&new, &old));
    assert!(m.allowed);
    // runAsNonRoot is set on the pod, so only the numeric user and group are added.
    assert_eq!(
        patch_json(&m),
        json!([{"op": "add", "path": "/spec/ephemeralContainers/1/securityContext",
                "value": {"runAsUser": 65532, "runAsGroup": 65532}}])
    );
    let v = admit(&e, Webhook::Validate, &debug_request(&new, &old));
    assert!(v.allowed && v.violations.is_empty() && v.warnings.is_empty());

    // A debug container already there is neither patched nor judged again.
    let hardened_earlier = json!({"name": "debugger-a", "image": "dhi.io/busybox:1-dev"});
    let old = pod(json!({"containers": [app], "ephemeralContainers": [hardened_earlier]}));
    let new = pod(
        json!({"containers": [app], "ephemeralContainers": [hardened_earlier,
        {"name": "debugger-b", "image": "dhi.io/busybox:1.37"}]}),
    );
    let m = admit(&e, Webhook::Mutate, &debug_request(&new, &old));
    assert_eq!(
        patch_json(&m),
        json!([{"op": "add", "path": "/spec/ephemeralContainers/1/securityContext",
                "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}}])
    );
    let v = admit(&e, Webhook::Validate, &debug_request(&new, &old));
    assert!(v.allowed && v.violations.is_empty(), "{:?}", v.violations);

    // A root debug image added now is still denied, and not patched.
    let new = pod(
        json!({"containers": [app], "ephemeralContainers": [hardened_earlier,
        {"name": "debugger-c", "image": "dhi.io/python:3.13-dev"}]}),
    );
    let m = admit(&e, Webhook::Mutate, &debug_request(&new, &old));
    assert_eq!(patch_json(&m), json!([]));
    let v = admit(&e, Webhook::Validate, &debug_request(&new, &old));
    assert!(!v.allowed);
    assert_eq!(v.violations[0].container, "debugger-c");
}

#[test]
fn pod_update_switching_to_a_hardened_image_without_a_user_is_named() {
    let e = Engine::default();
    let with = |image: &str, ctx: Value| {
        pod(json!({"securityContext": ctx, "containers": [{"name": "app", "image": image}]}))
    };
    let pod_update = |object: &Value, old: &Value| update("Pod", "", object, old);
    let non_root = json!({"runAsNonRoot": true});
    let old = with("busybox:1.37", non_root.clone());
    let new = with("dhi.io/busybox:1.37", non_root.clone());
    let v = admit(&e, Webhook::Validate, &pod_update(&new, &old));
    assert!(v.allowed);
    assert_eq!(
        v.warnings,
        [
            "container \"app\": switched to dhi.io/busybox:1.37 in a running pod, whose \
          securityContext cannot change: without runAsUser 65532 the kubelet refuses it under \
          runAsNonRoot. Change the workload's template instead"
        ]
    );
    // The mutating webhook cannot patch it: a pod's security context is immutable.
    let m = admit(&e, Webhook::Mutate, &pod_update(&new, &old));
    assert_eq!(patch_json(&m), json!([]));
    // With a numeric user, or without runAsNonRoot, the image runs: nothing to say.
    let numeric = json!({"runAsNonRoot": true, "runAsUser": 65532});
    let v = admit(
        &e,
        Webhook::Validate,
        &pod_update(
            &with("dhi.io/busybox:1.37", numeric.clone()),
            &with("busybox:1.37", numeric),
        ),
    );
    assert!(v.allowed && v.warnings.is_empty());
    let v = admit(
        &e,
        Webhook::Validate,
        &pod_update(
            &with("dhi.io/busybox:1.37", json!({})),
            &with("busybox:1.37", json!({})),
        ),
    );
    assert!(v.allowed && v.warnings.is_empty());
    // An image that did not change says nothing either.
    let v = admit(&e, Webhook::Validate, &pod_update(&new, &new));
    assert!(v.allowed && v.warnings.is_empty());
}
