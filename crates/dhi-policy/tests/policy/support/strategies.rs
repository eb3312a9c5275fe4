//! The generators the property tests share: images, security contexts, containers and
//! pod specs. Each test picks the container it needs and adds its own pod fields.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Images of every class the engine tells apart: hardened (runtime, dev, mirrored,
/// unknown), upstream with and without a mapping, official, digests, placeholders and
/// invalid references.
pub const IMAGES: &[&str] = &[
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

/// No user, root, Istio's user or the usual nonroot user.
pub fn uid() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(1337)),
        Just(Some(65532))
    ]
}

/// A security context with any of runAsUser, runAsNonRoot and runAsGroup, or none.
pub fn security_context() -> impl Strategy<Value = Option<Value>> {
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

/// A container named `name` with an image from `image` (none if it gives none), a
/// security context from `security`, up to two of `ports`, and maybe a shell command.
pub fn container(
    name: String,
    image: impl Strategy<Value = Option<String>>,
    security: impl Strategy<Value = Option<Value>>,
    ports: &'static [i64],
) -> impl Strategy<Value = Value> {
    (
        image,
        security,
        prop::collection::vec(prop::sample::select(ports), 0..3),
        any::<bool>(),
    )
        .prop_map(move |(image, ctx, ports, shell)| {
            let mut c = json!({"name": name});
            if let Some(image) = image {
                c["image"] = json!(image);
            }
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

/// Up to `max` containers named `{prefix}{i}`.
fn containers<S: Strategy<Value = Value>>(
    prefix: &'static str,
    max: usize,
    make: fn(String) -> S,
) -> impl Strategy<Value = Vec<Value>> {
    (0..=max).prop_flat_map(move |n| {
        (0..n)
            .map(|i| make(format!("{prefix}{i}")))
            .collect::<Vec<_>>()
    })
}

/// A pod spec with up to two init containers, three containers and one ephemeral
/// container, each made by `make`; the caller adds the pod's own fields.
pub fn pod_spec<S: Strategy<Value = Value>>(make: fn(String) -> S) -> impl Strategy<Value = Value> {
    (
        containers("init", 2, make),
        containers("c", 3, make),
        containers("debug", 1, make),
    )
        .prop_map(|(init, main, eph)| {
            let mut spec = json!({"containers": main});
            if !init.is_empty() {
                spec["initContainers"] = json!(init);
            }
            if !eph.is_empty() {
                spec["ephemeralContainers"] = json!(eph);
            }
            spec
        })
}
