//! The webhooks' generated `matchConditions` are a superset of what the engine acts on.
//!
//! Every generated request is evaluated twice: by the engine through its public entry
//! point (`Engine::admit`, both webhooks, both modes), and by a CEL interpreter running
//! the conditions from `dhi_policy::scope::match_conditions` over the same `request`,
//! `object` and `oldObject` kube-apiserver would bind. Wherever the engine patches,
//! denies, warns, annotates or fails, every condition must be true (and none may fail
//! to evaluate: an error would apply the failure policy instead).

use std::borrow::Cow;
use std::sync::Arc;

use cel::{Context, Env, Program, Value as CelValue};
use dhi_policy::image_ref::ImageRef;
use dhi_policy::scope::{MatchCondition, match_conditions};
use dhi_policy::{Engine, GroupKind, Mode, Operation, PolicyFile, Request, Webhook, WorkloadKind};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::nest;
use crate::support::strategies::{self, IMAGES};

/// Every normalisation the engine applies: ports, case, legacy hosts, library/, digests.
const NORMALISED: &[&str] = &[
    "dhi.io:443/python:3.13",
    "DHI.IO/python:3.13",
    "Dhi.Io:443/node:24-dev",
    "dhi.io/Python:3",
    "REGISTRY.EXAMPLE.COM/platform/dhi-node:24",
    "index.docker.io/istio/proxyv2:1.30.3",
    "DOCKER.IO/istio/proxyv2:1.30.3",
    "istio/proxyv2:1.30.3",
    "library/nginx:1.31",
    "docker.io/library/nginx",
    "index.docker.io/library/python:3.13",
    "docker.io/nginx:1.31",
    "Nginx:1.31",
    "localhost:5000/istio/proxyv2:1.30.3",
    "localhost/dhi-nginx",
    "mirror:5000/dhi-nginx:1",
    "a_b.c/nginx",
    "example.com/x/dhi",
    "example.com/dhi-",
    "dhi-nginx",
    "gcr.io/istio-release/install-cni:1.30.3-distroless",
    "quay.io/cilium/startup-script:v1",
    "quay.io/cilium/hubble-relay@sha256:abc",
    "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "nginx@sha512:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "python:3.13@sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "redis:",
    "",
    " ",
    "my.registry:5000/team/app:v2",
    "my.registry/team/app_x__y--z.w:tag_1",
    "mirror.example.com/custom/app:1",
    "postgres:17",
    "busybox:1.37",
];

/// Images built from pieces: hosts, paths and tags in every case and separator.
fn built_image() -> impl Strategy<Value = String> {
    (
        prop::sample::select(
            &[
                "",
                "dhi.io/",
                "DHI.io/",
                "dhi.io:443/",
                "dhi.io:5000/",
                "docker.io/",
                "index.docker.io/",
                "gcr.io/",
                "quay.io/",
                "localhost/",
                "localhost:5000/",
                "reg:5000/",
                "r-1.example.com/",
                "bad_host.com/",
                "UP.example.com/",
            ][..],
        ),
        prop::sample::select(
            &[
                "",
                "library/",
                "istio/",
                "istio-release/",
                "cilium/",
                "platform/",
                "a.b/",
                "x/y/",
            ][..],
        ),
        prop::sample::select(
            &[
                "nginx",
                "proxyv2",
                "pilot",
                "install-cni",
                "hubble-relay",
                "startup-script",
                "dhi-nginx",
                "dhi-",
                "dhi",
                "python",
                "app",
                "Nginx",
                "a..b",
                "a__b",
                "a---b",
                "falco",
            ][..],
        ),
        prop::sample::select(
            &[
                "",
                ":1",
                ":1.30.3-distroless",
                ":v1.20.1",
                ":-x",
                ":3.13-dev",
                ":",
            ][..],
        ),
        prop::sample::select(
            &[
                "",
                "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "@sha256:aaaa",
                "@md5:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ][..],
        ),
    )
        .prop_map(|(host, dir, name, tag, digest)| format!("{host}{dir}{name}{tag}{digest}"))
}

fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(IMAGES).prop_map(str::to_owned),
        2 => prop::sample::select(NORMALISED).prop_map(str::to_owned),
        3 => built_image(),
        1 => "[a-zA-Z0-9./:@_-]{0,40}",
        1 => "[a-z]{1,8}".prop_map(|s| format!("{s}/{}", "a".repeat(250))),
    ]
}

fn container(name: String) -> impl Strategy<Value = Value> {
    strategies::container(
        name,
        prop::option::of(image()),
        prop::option::of(prop::sample::select(&[0i64, 1337, 65532][..]))
            .prop_map(|uid| uid.map(|uid| json!({"runAsUser": uid}))),
        &[80, 8080],
    )
}

fn pod_spec() -> impl Strategy<Value = Value> {
    (
        strategies::pod_spec(container),
        prop::option::of(prop::sample::select(&[0i64, 65532][..])),
        any::<bool>(),
    )
        .prop_map(|(mut spec, pod_uid, windows)| {
            if let Some(uid) = pod_uid {
                spec["securityContext"] = json!({"runAsUser": uid});
            }
            if windows {
                spec["os"] = json!({"name": "windows"});
            }
            spec
        })
}

fn wrap(kind: WorkloadKind, spec: Value, replicas: i64) -> Value {
    let mut object = nest(kind, spec);
    if kind.is_template() && kind != WorkloadKind::PodTemplate {
        object["spec"]["replicas"] = json!(replicas);
    }
    object["metadata"] = json!({"name": "generated", "namespace": "team"});
    object
}

const POLICIES: &[&str] = &[
    "",
    "rewrite:\n  target: registry.example.com/platform/dhi-{repo}\n  officialImages: true\n",
    "rewrite: {enabled: false}\nrules: {invalid-image: warn}\n",
    "rewrite:\n  defaultMappings: false\n  mappings: [{from: ghcr.io/example/app, to: node}, {from: docker.io/library/busybox, to: busybox}]\n",
    "exempt: {namespaces: [legacy]}\nrules: {invalid-image: off, run-as-root: warn}\n",
];

/// The conditions of one policy, compiled.
struct Compiled {
    engine: Engine,
    programs: Vec<(MatchCondition, Program)>,
}

fn compile(policy: &str) -> Compiled {
    let policy = PolicyFile::from_yaml(policy).expect("test policy");
    let env = Arc::new(Env::stdlib());
    let programs = match_conditions(&policy)
        .into_iter()
        .map(|c| {
            let program = env
                .compile(&c.expression)
                .unwrap_or_else(|e| panic!("{}: {e:?}", c.name));
            (c, program)
        })
        .collect();
    Compiled {
        engine: Engine::new(policy),
        programs,
    }
}

fn compiled() -> &'static [Compiled] {
    static COMPILED: std::sync::OnceLock<Vec<Compiled>> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| POLICIES.iter().map(|p| compile(p)).collect())
}

/// One generated admission request, as kube-apiserver would describe it.
#[derive(Debug, Clone)]
struct Generated {
    kind: WorkloadKind,
    operation: Operation,
    sub_resource: Option<&'static str>,
    namespace: &'static str,
    object: Value,
    old_object: Option<Value>,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop::sample::select(&WorkloadKind::ALL[..]),
        pod_spec(),
        pod_spec(),
        0u8..6,
        prop::sample::select(&["team", "legacy"][..]),
        1i64..3,
    )
        .prop_map(|(kind, spec, old_spec, shape, namespace, replicas)| {
            let object = wrap(kind, spec.clone(), replicas);
            let (operation, sub_resource, old_object) = match shape {
                // CREATE
                0 | 1 => (Operation::Create, None, None),
                // UPDATE of something else than the pod spec (scale, labels).
                2 => {
                    let mut old = wrap(kind, spec.clone(), 3);
                    old["metadata"]["labels"] = json!({"changed": "yes"});
                    (Operation::Update, None, Some(old))
                }
                // UPDATE with another pod spec.
                3 => (
                    Operation::Update,
                    None,
                    Some(wrap(kind, old_spec, replicas)),
                ),
                // `kubectl debug`: the pod's ephemeral containers change.
                4 => {
                    let mut old_spec = spec.clone();
                    old_spec
                        .as_object_mut()
                        .unwrap()
                        .remove("ephemeralContainers");
                    (
                        Operation::Update,
                        Some("ephemeralcontainers"),
                        Some(wrap(kind, old_spec, replicas)),
                    )
                }
                _ => (Operation::Update, None, Some(object.clone())),
            };
            Generated {
                kind,
                operation,
                sub_resource,
                namespace,
                object,
                old_object,
            }
        })
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Every condition's value; `Err` names a condition that did not evaluate to a bool.
fn conditions_hold(compiled: &Compiled, g: &Generated) -> Result<bool, String> {
    let request = json!({
        "operation": operation_name(g.operation),
        "kind": {"group": g.kind.group(), "version": "v1", "kind": g.kind.as_str()},
        "namespace": g.namespace,
        "subResource": g.sub_resource.unwrap_or(""),
        "name": "generated",
    });
    let mut context = Context::default();
    context.add_variable_from_value("request", cel::to_value(&request).unwrap());
    context.add_variable_from_value("object", cel::to_value(&g.object).unwrap());
    let old = g.old_object.clone().unwrap_or(Value::Null);
    context.add_variable_from_value("oldObject", cel::to_value(&old).unwrap());
    let mut all = true;
    for (condition, program) in &compiled.programs {
        match program.execute(&context) {
            Ok(CelValue::Bool(b)) => all &= b,
            other => return Err(format!("{}: {other:?}", condition.name)),
        }
    }
    Ok(all)
}

/// Whether the engine does anything for the request, on either webhook, in either mode.
fn engine_acts(engine: &Engine, g: &Generated) -> Option<String> {
    for webhook in [Webhook::Mutate, Webhook::Validate] {
        for mode in [Mode::Enforce, Mode::Audit, Mode::Warn] {
            let request: Request<'_, &Value> = Request {
                uid: Some(Cow::Borrowed("uid")),
                kind: GroupKind::from(g.kind),
                operation: g.operation,
                sub_resource: g.sub_resource.map(Cow::Borrowed),
                name: Some(Cow::Borrowed("generated")),
                namespace: Some(Cow::Borrowed(g.namespace)),
                object: Some(&g.object),
                old_object: g.old_object.as_ref(),
            };
            match engine.admit(webhook, mode, request) {
                Err(err) => return Some(format!("{webhook:?} {mode}: error {err}")),
                Ok(a) => {
                    let d = a.decision;
                    if !d.allowed
                        || !d.patch.is_empty()
                        || !d.warnings.is_empty()
                        || !d.audit_annotations.is_empty()
                    {
                        return Some(format!(
                            "{webhook:?} {mode}: allowed {}, patch {:?}, warnings {:?}",
                            d.allowed, d.patch, d.warnings
                        ));
                    }
                }
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn conditions_are_a_superset_of_what_the_engine_acts_on(
        g in generated(),
        which in 0usize..POLICIES.len(),
    ) {
        let compiled = &compiled()[which];
        let hold = conditions_hold(compiled, &g);
        prop_assert!(hold.is_ok(), "a condition failed to evaluate: {hold:?}");
        if let Some(acts) = engine_acts(&compiled.engine, &g) {
            prop_assert!(
                hold.unwrap(),
                "policy {which}: the engine acts ({acts}) but the conditions exclude {g:#?}"
            );
        }
    }

    /// The image classifier alone, over many more strings than pods can carry.
    #[test]
    fn images_the_conditions_skip_are_upstream_and_unmapped(
        image in image(),
        which in 0usize..POLICIES.len(),
    ) {
        let compiled = &compiled()[which];
        let g = Generated {
            kind: WorkloadKind::Pod,
            operation: Operation::Create,
            sub_resource: None,
            namespace: "team",
            object: wrap(WorkloadKind::Pod, json!({"containers": [{"name": "c", "image": image}]}), 1),
            old_object: None,
        };
        let hold = conditions_hold(compiled, &g).expect("evaluates");
        if !hold {
            // Skipped: it must parse, be upstream, and have no rewrite target.
            let parsed = ImageRef::parse(&image);
            prop_assert!(parsed.is_ok() || image == "auto", "{image:?} skipped but invalid");
            if let Ok(r) = parsed {
                prop_assert!(r.hardened_repo().is_none(), "{image:?} skipped but hardened");
            }
            prop_assert!(engine_acts(&compiled.engine, &g).is_none(), "{image:?} skipped but acted on");
        }
    }
}

#[test]
fn known_images_are_classified_as_expected() {
    let compiled = &compiled()[0];
    let sent = |image: &str| {
        let g = Generated {
            kind: WorkloadKind::Deployment,
            operation: Operation::Create,
            sub_resource: None,
            namespace: "team",
            object: wrap(
                WorkloadKind::Deployment,
                json!({"containers": [{"name": "c", "image": image}]}),
                1,
            ),
            old_object: None,
        };
        conditions_hold(compiled, &g).unwrap()
    };
    for image in [
        "dhi.io/nginx:1.31",
        "dhi.io:443/python:3.13",
        "DHI.IO/python",
        "registry.example.com/platform/dhi-node:24",
        "REGISTRY.EXAMPLE.COM/platform/dhi-node:24",
        "docker.io/istio/proxyv2:1.30.3",
        "index.docker.io/istio/proxyv2:1.30.3",
        "istio/proxyv2",
        "quay.io/cilium/hubble-relay:v1.20.1",
        "Nginx",
        "nginx@sha256:abc",
        "a_b.c/nginx",
        "localhost:5000/app",
    ] {
        assert!(sent(image), "{image} must be sent");
    }
    for image in [
        "nginx",
        "nginx:1.31",
        "docker.io/library/nginx:1.31",
        "ghcr.io/example/app:2",
        "my.registry:5000/team/app:v2",
        "postgres:17@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "auto",
    ] {
        assert!(!sent(image), "{image} must not be sent");
    }
}

#[test]
fn updates_that_keep_the_pod_spec_are_not_sent() {
    let compiled = &compiled()[0];
    let spec = json!({"containers": [{"name": "c", "image": "dhi.io/nginx:1.31"}]});
    let object = wrap(WorkloadKind::Deployment, spec.clone(), 1);
    let scaled = wrap(WorkloadKind::Deployment, spec, 5);
    let update = |old: Value| Generated {
        kind: WorkloadKind::Deployment,
        operation: Operation::Update,
        sub_resource: None,
        namespace: "team",
        object: object.clone(),
        old_object: Some(old),
    };
    assert_eq!(conditions_hold(compiled, &update(scaled)), Ok(false));
    let other = wrap(
        WorkloadKind::Deployment,
        json!({"containers": [{"name": "c", "image": "dhi.io/nginx:1.30"}]}),
        1,
    );
    assert_eq!(conditions_hold(compiled, &update(other)), Ok(true));
    let exempt = &self::compiled()[4];
    let in_legacy = Generated {
        namespace: "legacy",
        ..update(Value::Null)
    };
    assert_eq!(conditions_hold(exempt, &in_legacy), Ok(false));
}
