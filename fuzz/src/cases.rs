//! Structured inputs for `engine_pod`: pods (and workloads) built from a small alphabet
//! of the image forms and security settings that matter, so the fuzzer spends its time
//! on combinations rather than on JSON syntax.

use arbitrary::{Arbitrary, Unstructured};
use dhi_policy::WorkloadKind;

pub use crate::checks::{POLICIES, engine};
use serde_json::{Map, Value, json};

/// Image repositories, in the forms people write them.
pub const REPOS: &[&str] = &[
    "dhi.io/nginx",
    "dhi.io/python",
    "docker.io/istio/proxyv2",
    "istio/proxyv2",
    "gcr.io/istio-release/pilot",
    "docker.io/istio/install-cni",
    "quay.io/cilium/hubble-relay",
    "quay.io/cilium/startup-script",
    "nginx",
    "docker.io/library/nginx",
    "index.docker.io/library/python",
    "python",
    "busybox",
    "DHI.IO/python",
    "registry.example.com/platform/dhi-python",
    "localhost:5000/dhi-python",
    "ghcr.io/a/b/c/dhi-istio-proxyv2",
    "dhi-nginx",
    "dhi.io/istio-proxyv2",
    "dhi.io/istio-install-cni",
    "dhi.io/falco",
    "dhi.io/postgres",
    "dhi.io/node",
    "dhi.io/Python",
    "dhi.io:443/python",
    "auto",
];

/// Tags, including the edge cases of the tag transforms (`v` alone, `-distroless`).
pub const TAGS: &[&str] = &[
    "1.31",
    "3.13-dev",
    "3.13",
    "1.30.3",
    "1.30.3-distroless",
    "v1.20.1",
    "v",
    "v.1",
    "latest",
    "dev",
    "17-alpine",
    "24",
    "0",
    "1.30-dev-distroless",
];

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Uid {
    Root,
    Istio,
    Nonroot,
    Other,
}

impl Uid {
    fn value(self) -> i64 {
        match self {
            Self::Root => 0,
            Self::Istio => 1337,
            Self::Nonroot => 65532,
            Self::Other => 1000,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Image {
    repo: u8,
    tag: Option<u8>,
    digest: bool,
}

impl Image {
    fn render(&self) -> String {
        let repo = REPOS[self.repo as usize % REPOS.len()];
        if repo == "auto" {
            return repo.to_owned();
        }
        let mut s = repo.to_owned();
        if let Some(t) = self.tag {
            s.push(':');
            s.push_str(TAGS[t as usize % TAGS.len()]);
        }
        if self.digest {
            s.push('@');
            s.push_str(DIGEST);
        }
        s
    }
}

#[derive(Debug, Arbitrary)]
enum Command {
    Sh,
    BinSh,
    Other,
}

#[derive(Debug, Arbitrary)]
struct ContainerCtx {
    run_as_user: Option<Uid>,
    run_as_group: Option<Uid>,
    run_as_non_root: Option<bool>,
    /// Write the absent fields as explicit `null`s.
    nulls: bool,
}

#[derive(Debug, Arbitrary)]
struct Port {
    port: u8,
    host_port: bool,
}

#[derive(Debug, Arbitrary)]
struct Container {
    image: Option<Image>,
    security_context: Option<Option<ContainerCtx>>,
    ports: Vec<Port>,
    command: Option<Command>,
}

#[derive(Debug, Arbitrary)]
struct PodCtx {
    run_as_user: Option<Uid>,
    run_as_group: Option<Uid>,
    run_as_non_root: Option<bool>,
    fs_group: Option<Uid>,
    sysctl: Option<u8>,
}

/// One generated case.
#[derive(Debug, Arbitrary)]
pub struct Case {
    policy: u8,
    kind: u8,
    security_context: Option<Option<PodCtx>>,
    host_network: Option<bool>,
    os: Option<bool>,
    pull_secrets: Option<Vec<bool>>,
    init: Vec<Container>,
    containers: Vec<Container>,
    ephemeral: Vec<Container>,
}

fn opt(map: &mut Map<String, Value>, key: &str, v: Option<Value>, nulls: bool) {
    match v {
        Some(v) => {
            map.insert(key.to_owned(), v);
        }
        None if nulls => {
            map.insert(key.to_owned(), Value::Null);
        }
        None => {}
    }
}

impl Container {
    fn to_json(&self, name: String) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), json!(name));
        if let Some(img) = &self.image {
            c.insert("image".into(), json!(img.render()));
        }
        match &self.security_context {
            None => {}
            Some(None) => {
                c.insert("securityContext".into(), Value::Null);
            }
            Some(Some(ctx)) => {
                let mut s = Map::new();
                opt(
                    &mut s,
                    "runAsUser",
                    ctx.run_as_user.map(|u| json!(u.value())),
                    ctx.nulls,
                );
                opt(
                    &mut s,
                    "runAsGroup",
                    ctx.run_as_group.map(|u| json!(u.value())),
                    ctx.nulls,
                );
                opt(
                    &mut s,
                    "runAsNonRoot",
                    ctx.run_as_non_root.map(|b| json!(b)),
                    ctx.nulls,
                );
                c.insert("securityContext".into(), Value::Object(s));
            }
        }
        if !self.ports.is_empty() {
            let ports: Vec<Value> = self
                .ports
                .iter()
                .take(3)
                .map(|p| {
                    let port = [80, 8080, 443, 53][p.port as usize % 4];
                    if p.host_port {
                        json!({"containerPort": port, "hostPort": port})
                    } else {
                        json!({"containerPort": port})
                    }
                })
                .collect();
            c.insert("ports".into(), Value::Array(ports));
        }
        match self.command {
            Some(Command::Sh) => {
                c.insert("command".into(), json!(["sh", "-c", "exec app"]));
            }
            Some(Command::BinSh) => {
                c.insert("command".into(), json!(["/bin/bash", "-c", "exec app"]));
            }
            Some(Command::Other) => {
                c.insert("command".into(), json!(["/app/server", "--port=80"]));
            }
            None => {}
        }
        Value::Object(c)
    }
}

impl Case {
    /// Reads a case from fuzzer bytes.
    pub fn from_bytes(data: &[u8]) -> arbitrary::Result<Self> {
        Self::arbitrary_take_rest(Unstructured::new(data))
    }

    /// The policy index.
    pub fn policy(&self) -> usize {
        self.policy as usize % POLICIES.len()
    }

    /// The kind.
    pub fn kind(&self) -> WorkloadKind {
        WorkloadKind::ALL[self.kind as usize % WorkloadKind::ALL.len()]
    }

    /// The pod spec as JSON.
    pub fn spec(&self) -> Value {
        let mut spec = Map::new();
        let list = |cs: &[Container], prefix: &str| -> Value {
            Value::Array(
                cs.iter()
                    .take(4)
                    .enumerate()
                    .map(|(i, c)| c.to_json(format!("{prefix}-{i}")))
                    .collect(),
            )
        };
        spec.insert("containers".into(), list(&self.containers, "app"));
        if !self.init.is_empty() {
            spec.insert("initContainers".into(), list(&self.init, "init"));
        }
        if !self.ephemeral.is_empty() {
            spec.insert("ephemeralContainers".into(), list(&self.ephemeral, "debug"));
        }
        match &self.security_context {
            None => {}
            Some(None) => {
                spec.insert("securityContext".into(), Value::Null);
            }
            Some(Some(p)) => {
                let mut s = Map::new();
                opt(
                    &mut s,
                    "runAsUser",
                    p.run_as_user.map(|u| json!(u.value())),
                    false,
                );
                opt(
                    &mut s,
                    "runAsGroup",
                    p.run_as_group.map(|u| json!(u.value())),
                    false,
                );
                opt(
                    &mut s,
                    "runAsNonRoot",
                    p.run_as_non_root.map(|b| json!(b)),
                    false,
                );
                opt(
                    &mut s,
                    "fsGroup",
                    p.fs_group.map(|u| json!(u.value())),
                    false,
                );
                if let Some(v) = p.sysctl {
                    let (name, value) = match v % 4 {
                        0 => ("net.ipv4.ip_unprivileged_port_start", "0"),
                        1 => ("net.ipv4.ip_unprivileged_port_start", "443"),
                        2 => ("net/ipv4/ip_unprivileged_port_start", "80"),
                        _ => ("kernel.shm_rmid_forced", "1"),
                    };
                    s.insert("sysctls".into(), json!([{"name": name, "value": value}]));
                }
                spec.insert("securityContext".into(), Value::Object(s));
            }
        }
        if let Some(h) = self.host_network {
            spec.insert("hostNetwork".into(), json!(h));
        }
        if let Some(windows) = self.os {
            spec.insert(
                "os".into(),
                json!({"name": if windows { "windows" } else { "linux" }}),
            );
        }
        if let Some(secrets) = &self.pull_secrets {
            let list: Vec<Value> = secrets
                .iter()
                .take(3)
                .map(|b| json!({"name": if *b { "dhi-pull" } else { "regcred" }}))
                .collect();
            spec.insert("imagePullSecrets".into(), Value::Array(list));
        }
        Value::Object(spec)
    }

    /// The whole object for the case's kind.
    pub fn object(&self) -> Value {
        let kind = self.kind();
        let mut v = self.spec();
        for token in kind.spec_path().iter().rev() {
            v = json!({ *token: v });
        }
        let api_version = match kind {
            WorkloadKind::Pod | WorkloadKind::PodTemplate | WorkloadKind::ReplicationController => {
                "v1"
            }
            WorkloadKind::Job | WorkloadKind::CronJob => "batch/v1",
            _ => "apps/v1",
        };
        v["apiVersion"] = json!(api_version);
        v["kind"] = json!(kind.as_str());
        v["metadata"] = json!({"name": "fuzz", "namespace": "default"});
        v
    }
}
