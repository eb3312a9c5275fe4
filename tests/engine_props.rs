//! Property tests over generated pods: the engine's patches apply, are idempotent,
//! touch only hardened (or rewritten) containers, rewrite only to tags the catalog lists
//! (unless `rewrite.tags: any`), validating the fixed object gives the verdict the engine
//! gave the original, and the webhook, `check` and `--fix` agree.

use dhi_policy::image_ref::ImageRef;
use dhi_policy::policy_file::TagCheck;
use dhi_policy::{
    Engine, Evaluation, GroupKind, Mode, PolicyFile, Request, Scope, Subject, Webhook,
    WorkloadKind, decode_object,
};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

const IMAGES: &[&str] = &[
    "dhi.io/nginx:1.31",
    "dhi.io/python:3.13-dev",
    "dhi.io/istio-proxyv2:1.30.3",
    "dhi.io/postgres:17",
    "dhi.io/istio-install-cni:1.30.3",
    "registry.example.com/platform/dhi-node:24",
    "docker.io/istio/proxyv2:1.30.3",
    "docker.io/istio/proxyv2:1.30.3-distroless",
    "gcr.io/istio-release/pilot:1.30.3",
    "quay.io/cilium/hubble-relay:v1.20.1",
    "quay.io/cilium/hubble-relay:v1.16.5",
    "docker.io/istio/proxyv2:1.19.0",
    "docker.io/istio/proxyv2:latest",
    "docker.io/istio/proxyv2",
    "nginx:1.27",
    "dhi.io/k8s-device-plugin:0.20.1-compat",
    "dhi.io/sbx-templates:claude-code",
    "dhi.io/no-such-repo:1",
    "[fd00::10]:5000/platform/dhi-nginx:1.31",
    "nginx",
    "nginx:1.31",
    "ghcr.io/example/app:2",
    "dhi.io/falco:0",
    "auto",
    "dhi.io/nginx:1.31@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "docker.io/istio/proxyv2@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Not A Ref",
];

fn uid() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(1337)),
        Just(Some(65532))
    ]
}

fn security_context() -> impl Strategy<Value = Option<Value>> {
    (
        any::<bool>(),
        uid(),
        prop::option::of(any::<bool>()),
        prop::option::of(Just(2000i64)),
    )
        .prop_map(|(present, uid, non_root, gid)| {
            present.then(|| {
                let mut m = Map::new();
                if let Some(u) = uid {
                    m.insert("runAsUser".into(), json!(u));
                }
                if let Some(n) = non_root {
                    m.insert("runAsNonRoot".into(), json!(n));
                }
                if let Some(g) = gid {
                    m.insert("runAsGroup".into(), json!(g));
                }
                Value::Object(m)
            })
        })
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(IMAGES),
        security_context(),
        prop::collection::vec(prop::sample::select(&[80i64, 443, 8080, 15090][..]), 0..3),
        any::<bool>(),
    )
        .prop_map(move |(image, ctx, ports, shell)| {
            let mut c = json!({"name": name, "image": image});
            if let Some(ctx) = ctx {
                c["securityContext"] = ctx;
            }
            if !ports.is_empty() {
                c["ports"] = ports.iter().map(|p| json!({"containerPort": p})).collect();
            }
            if shell {
                c["command"] = json!(["/bin/sh", "-c", "run"]);
            }
            c
        })
}

fn containers(prefix: &'static str, max: usize) -> impl Strategy<Value = Vec<Value>> {
    (0..=max).prop_flat_map(move |n| {
        (0..n)
            .map(|i| container(format!("{prefix}{i}")))
            .collect::<Vec<_>>()
    })
}

fn pod_spec() -> impl Strategy<Value = Value> {
    (
        containers("init", 2),
        containers("c", 3),
        containers("debug", 1),
        security_context(),
        prop::option::of(prop::sample::select(&["0", "80", "1024"][..])),
        any::<bool>(),
        prop::option::of(Just(vec![json!({"name": "dhi-pull"})])),
    )
        .prop_map(|(init, main, eph, ctx, sysctl, host_network, secrets)| {
            let mut spec = json!({"containers": main});
            if !init.is_empty() {
                spec["initContainers"] = json!(init);
            }
            if !eph.is_empty() {
                spec["ephemeralContainers"] = json!(eph);
            }
            let mut ctx = ctx.unwrap_or_else(|| json!({}));
            if let Some(start) = sysctl {
                ctx["sysctls"] =
                    json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": start}]);
            }
            if ctx.as_object().is_some_and(|m| !m.is_empty()) {
                spec["securityContext"] = ctx;
            }
            if host_network {
                spec["hostNetwork"] = json!(true);
            }
            if let Some(s) = secrets {
                spec["imagePullSecrets"] = json!(s);
            }
            spec
        })
}

fn engines() -> Vec<Engine> {
    vec![
        Engine::default(),
        Engine::new(
            PolicyFile::from_yaml(
                "rewrite:\n  target: registry.example.com/platform/dhi-{repo}\n  officialImages: true\n  imagePullSecrets: [dhi-pull, extra]\n",
            )
            .unwrap(),
        ),
        Engine::new(
            PolicyFile::from_yaml("rewrite:\n  officialImages: true\n  tags: any\n").unwrap(),
        ),
        Engine::new(PolicyFile::from_yaml("templates: {mutate: true}").unwrap()),
    ]
}

fn evaluate(engine: &Engine, kind: WorkloadKind, object: &Value) -> Evaluation {
    let text = object.to_string();
    let view = decode_object(&text).expect("generated objects decode");
    engine.evaluate(&Subject {
        kind,
        object: &view,
        old_object: None,
        scope: Scope::All,
    })
}

fn verdict(engine: &Engine, kind: WorkloadKind, object: &Value) -> (bool, Vec<(String, String)>) {
    let text = object.to_string();
    let view = decode_object(&text).expect("decodes");
    let d = engine.review(
        &Subject {
            kind,
            object: &view,
            old_object: None,
            scope: Scope::All,
        },
        Webhook::Validate,
        Mode::Enforce,
    );
    let mut v: Vec<_> = d
        .violations
        .iter()
        .map(|v| (v.rule.to_string(), v.container.clone()))
        .collect();
    v.sort();
    (d.allowed, v)
}

fn wrap(kind: WorkloadKind, spec: Value) -> Value {
    let mut object = spec;
    for token in kind.spec_path().iter().rev() {
        object = json!({ *token: object });
    }
    object["apiVersion"] = json!("v1");
    object["kind"] = json!(kind.as_str());
    object["metadata"] = json!({"name": "generated"});
    object
}

fn is_hardened(image: &str) -> bool {
    ImageRef::parse(image)
        .ok()
        .and_then(|r| r.hardened_repo().map(|_| ()))
        .is_some()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn patches_apply_are_idempotent_and_preserve_the_verdict(
        spec in pod_spec(),
        kind in prop::sample::select(&WorkloadKind::ALL[..]),
        which in 0usize..4,
    ) {
        let engine = &engines()[which];
        let object = wrap(kind, spec);
        let eval = evaluate(engine, kind, &object);
        let mut fixed = object.clone();
        json_patch::patch(&mut fixed, &eval.patch).expect("the patch applies to its input");

        // Idempotent: the fixed object needs nothing more.
        let again = evaluate(engine, kind, &fixed);
        prop_assert!(again.patch.is_empty(), "second patch: {:?}", again.patch);

        // Only hardened containers are touched: every container path in the patch
        // names a container whose image is hardened once patched.
        let prefix = format!("/{}", kind.spec_path().join("/"));
        for op in serde_json::to_value(&eval.patch).unwrap().as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            let rest = path.strip_prefix(&prefix).expect("patch stays inside the pod spec");
            let mut parts = rest.trim_start_matches('/').split('/');
            let field = parts.next().unwrap();
            if matches!(field, "containers" | "initContainers" | "ephemeralContainers") {
                let index: usize = parts.next().unwrap().parse().unwrap();
                let spec_ptr = format!("{prefix}/{field}/{index}/image");
                let image = fixed.pointer(&spec_ptr).and_then(Value::as_str).unwrap();
                prop_assert!(is_hardened(image), "{path} touches non-hardened {image}");
                // A rewrite points at a tag the catalog lists, unless the policy opts out.
                if op["op"] == "replace" && path.ends_with("/image")
                    && engine.policy_file().rewrite.tags == TagCheck::Catalog
                {
                    let r = ImageRef::parse(image).unwrap();
                    let repo = r.hardened_repo().unwrap();
                    prop_assert!(
                        engine.catalog().has_tag(repo, r.tag_or_latest()),
                        "{path}: {image} is not in the catalog"
                    );
                }
            } else {
                prop_assert!(matches!(field, "securityContext" | "imagePullSecrets"), "unexpected {path}");
            }
        }

        // Validating the fixed object agrees with validating the original.
        prop_assert_eq!(verdict(engine, kind, &object), verdict(engine, kind, &fixed));
    }
}

/// The webhook's answer, as the server reads a request (objects kept raw).
fn webhook(
    engine: &Engine,
    webhook: Webhook,
    kind: WorkloadKind,
    object: &Value,
) -> dhi_policy::Decision {
    let request = json!({"uid": "u", "kind": {"group": kind.group(), "version": "v1", "kind": kind.as_str()},
        "operation": "CREATE", "namespace": "default", "object": object});
    let text = request.to_string();
    let request: Request<'_, &RawValue> = serde_json::from_str(&text).unwrap();
    engine
        .admit(webhook, Mode::Enforce, request)
        .unwrap()
        .decision
}

/// `check`'s answer, as it reads a manifest (objects as values).
fn check(engine: &Engine, kind: WorkloadKind, object: &Value) -> dhi_policy::Finding {
    let request = Request::create(GroupKind::from(kind), Some("default"), object);
    engine.find(Mode::Enforce, request).unwrap()
}

fn rules_of(violations: &[dhi_policy::Violation]) -> Vec<(String, String)> {
    let mut v: Vec<_> = violations
        .iter()
        .map(|v| (v.rule.to_string(), v.container.clone()))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn check_the_webhook_and_fix_agree(
        spec in pod_spec(),
        kind in prop::sample::select(&WorkloadKind::ALL[..]),
        which in 0usize..4,
    ) {
        let engine = &engines()[which];
        let object = wrap(kind, spec);
        let found = check(engine, kind, &object);
        let validated = webhook(engine, Webhook::Validate, kind, &object);
        let mutated = webhook(engine, Webhook::Mutate, kind, &object);

        // Same verdict, same violations, same warnings (check merges both webhooks').
        prop_assert_eq!(found.allowed, validated.allowed && mutated.allowed);
        prop_assert_eq!(rules_of(&found.violations), rules_of(&validated.violations));
        for w in validated.warnings.iter().chain(&mutated.warnings) {
            prop_assert!(found.warnings.contains(w), "check lacks {w}");
        }
        prop_assert_eq!(found.warnings.len(), {
            let mut all: Vec<&String> = validated.warnings.iter().chain(&mutated.warnings).collect();
            all.sort();
            all.dedup();
            all.len()
        });

        // Same patch: the webhook's for pods (and templates when it patches them); for
        // templates it does not patch, the one their pods will get.
        let patches_templates = engine.policy_file().templates.mutate;
        if kind == WorkloadKind::Pod || patches_templates {
            prop_assert_eq!(
                serde_json::to_value(&found.patch).unwrap(),
                serde_json::to_value(&mutated.patch).unwrap()
            );
        } else {
            prop_assert!(mutated.patch.is_empty());
            prop_assert_eq!(
                serde_json::to_value(&found.patch).unwrap(),
                serde_json::to_value(&evaluate(engine, kind, &object).patch).unwrap()
            );
        }

        // --fix: the patched object needs nothing more, and is judged as the original.
        let mut fixed = object.clone();
        json_patch::patch(&mut fixed, &found.patch).expect("the patch applies");
        let refound = check(engine, kind, &fixed);
        prop_assert!(refound.patch.is_empty(), "after --fix: {:?}", refound.patch);
        prop_assert_eq!(refound.allowed, found.allowed);
        prop_assert_eq!(rules_of(&refound.violations), rules_of(&found.violations));
    }
}
