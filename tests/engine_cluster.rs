//! Decisions that must hold in a real cluster (issue 11): rewrites only to images that
//! exist, the right variant for an unknown tag, and the odd cases around them.

use dhi_policy::{
    Decision, Engine, Mode, PolicyFile, RuleId, Scope, SkipReason, Subject, Webhook, WorkloadKind,
    decode_object,
};
use serde_json::{Value, json};

fn engine(yaml: &str) -> Engine {
    Engine::new(PolicyFile::from_yaml(yaml).expect("policy"))
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn one(name: &str, image: &str) -> Value {
    pod(json!({"containers": [{"name": name, "image": image}]}))
}

fn review_update(
    engine: &Engine,
    kind: WorkloadKind,
    object: &Value,
    old: Option<&Value>,
    webhook: Webhook,
) -> Decision {
    let text = object.to_string();
    let view = decode_object(&text).expect("decodes");
    let old_text = old.map(Value::to_string);
    let old_view = old_text
        .as_deref()
        .map(|t| decode_object(t).expect("decodes"));
    let subject = Subject {
        kind,
        object: &view,
        old_object: old_view.as_ref(),
        scope: Scope::All,
    };
    engine.review(&subject, webhook, Mode::Enforce)
}

fn mutate(engine: &Engine, object: &Value) -> Decision {
    review_update(engine, WorkloadKind::Pod, object, None, Webhook::Mutate)
}

fn validate(engine: &Engine, object: &Value) -> Decision {
    review_update(engine, WorkloadKind::Pod, object, None, Webhook::Validate)
}

fn patch_json(d: &Decision) -> Value {
    serde_json::to_value(&d.patch).unwrap()
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
        ["container \"hubble-relay\": quay.io/cilium/hubble-relay:v1.16.5 not rewritten: \
          dhi.io/hubble-relay has no tag 1.16.5; available lines: 1.18, 1.19, 1.20"]
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
    let m = mutate(&e, &one("relay", "quay.io/cilium/hubble-relay:v1.20.1"));
    assert_eq!(
        patch_json(&m)[0],
        json!({"op": "replace", "path": "/spec/containers/0/image", "value": "dhi.io/hubble-relay:1.20.1"})
    );
    assert!(m.skipped.is_empty() && m.warnings.is_empty());
}

#[test]
fn rewrite_tags_any_opts_out_of_the_tag_check() {
    let e = engine("rewrite: {tags: any}");
    let m = mutate(&e, &one("relay", "quay.io/cilium/hubble-relay:v1.16.5"));
    assert_eq!(
        patch_json(&m)[0],
        json!({"op": "replace", "path": "/spec/containers/0/image", "value": "dhi.io/hubble-relay:1.16.5"})
    );
    assert!(m.skipped.is_empty() && m.warnings.is_empty());
}

#[test]
fn official_images_are_rewritten_only_to_listed_tags() {
    let e = engine("rewrite: {officialImages: true}");
    let m = mutate(&e, &one("web", "nginx:1.31"));
    assert_eq!(
        patch_json(&m)[0],
        json!({"op": "replace", "path": "/spec/containers/0/image", "value": "dhi.io/nginx:1.31"})
    );
    let m = mutate(&e, &one("web", "nginx:1.27"));
    assert_eq!(patch_json(&m), json!([]));
    assert_eq!(
        m.warnings,
        ["container \"web\": docker.io/library/nginx:1.27 not rewritten: dhi.io/nginx has no tag \
          1.27; available lines: 1.30, 1.31"]
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
        ["container \"plugin\": dhi.io/k8s-device-plugin:0.20.1-compat is not in the catalog \
          snapshot of 2026-08-22; UID 0 assumed"]
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
        ["container \"app\": dhi.io/no-such-repo is not in the catalog snapshot of 2026-08-22; \
          UID 65532 assumed"]
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
        assert!(validate(&e, &one("web", image)).warnings.is_empty(), "{image}");
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
        ["container \"agent\" uses dev variant dhi.io/sbx-templates:claude-code (UID 1000, shell, \
          package manager): use a runtime variant in production where there is one"]
    );
    // A root dev variant is still called root, and denied without a user.
    let v = validate(&e, &one("build", "dhi.io/python:3.13-dev"));
    assert_eq!(v.violations[0].rule, RuleId::RunAsRoot);
    assert_eq!(
        v.warnings,
        ["container \"build\" uses dev variant dhi.io/python:3.13-dev (root, shell, package \
          manager): use the runtime variant (tag without -dev) in production"]
    );
}
