//! The real `dhi-admission serve`, and the shipped webhook configurations registered by URL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::Client;
use serde_json::{Value, json};

use super::cluster::{
    Answer, TEST_LABEL, apps, create, delete, free_port, http_get, pod, pods, service_accounts,
    yaml,
};

/// The collections of the two kinds of webhook configuration.
pub const MUTATING: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
pub const VALIDATING: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";

/// `dhi-admission serve` on loopback ports, killed when dropped.
pub struct Server {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA that signed its serving certificate.
    pub ca_pem: String,
    pub log: PathBuf,
    child: Child,
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_dhi-admission")
}

/// The binary, to be given its arguments: nothing on its stdin, and without the `DHI_*`
/// environment of whoever runs the tests (the flags' fallbacks must not leak in).
pub fn command() -> Command {
    let mut command = Command::new(binary());
    command.stdin(Stdio::null());
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("DHI_")) {
        command.env_remove(key);
    }
    command
}

/// Spawns `cmd` (see [`command`]) for a test, its stderr to `log`; then waits until it
/// answers 200 on `path` of `metrics`, and panics with the log if it exits first or is not
/// up in 30 s.
pub async fn spawn_serving(mut cmd: Command, log: &Path, metrics: SocketAddr, path: &str) -> Child {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn dhi-admission");
    // The subcommand, after `--log-level LEVEL`.
    let what = cmd.get_args().nth(2).unwrap_or_default().to_string_lossy();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(metrics, path).await.is_none() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "dhi-admission {what} exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dhi-admission {what} not up on {path} in 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Runs the binary with `args` to completion.
pub fn run(args: &[&str]) -> std::process::Output {
    command().args(args).output().expect("dhi-admission runs")
}

impl Server {
    /// Generates a serving certificate for 127.0.0.1 with `certs generate` into `dir/certs`,
    /// and serves with it and `extra` arguments.
    pub async fn start(dir: &Path, extra: &[&str]) -> Server {
        let certs = dir.join("certs");
        let out = run(&[
            "certs",
            "generate",
            "--out",
            certs.to_str().unwrap(),
            "--days",
            "2",
        ]);
        assert!(
            out.status.success(),
            "certs generate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca_pem = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
        Server::start_with(
            dir,
            &certs.join("tls.crt"),
            &certs.join("tls.key"),
            ca_pem,
            None,
            extra,
        )
        .await
    }

    /// Serves with the given key pair (on `port`, or a free one).
    pub async fn start_with(
        dir: &Path,
        cert: &Path,
        key: &Path,
        ca_pem: String,
        port: Option<u16>,
        extra: &[&str],
    ) -> Server {
        let port = port.unwrap_or_else(free_port);
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("dhi-admission-{port}.log"));
        let mut cmd = command();
        cmd.args(["--log-level", "info", "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args([
                "--reload-interval-ms",
                "200",
                "--shutdown-grace-seconds",
                "1",
            ])
            .args(extra);
        let child = spawn_serving(cmd, &log, metrics, "/readyz").await;
        Server {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem,
            log,
            child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped configurations (deploy/base; the validating one with its generated
/// matchConditions) as the
/// enforce overlay makes them (the non-audit entries fail closed), named `name`, pointed by URL at `url` (each entry keeps
/// its path), trusting `ca_pem` when given, and seeing only the namespaces of `test`.
pub fn configurations(name: &str, test: &str, url: &str, ca_pem: Option<&str>) -> [Value; 2] {
    let mut configs = [
        yaml("deploy/base/mutatingwebhookconfiguration.yaml"),
        yaml("deploy/base/validatingwebhookconfiguration.yaml"),
    ];
    // As kustomize renders them: the validating one with the generated matchConditions.
    let conditions = yaml("deploy/base/matchconditions.yaml")[0]["value"].clone();
    for webhook in configs[1]["webhooks"].as_array_mut().unwrap() {
        webhook["matchConditions"] = conditions.clone();
    }
    for config in &mut configs {
        config["metadata"]["name"] = json!(name);
        for webhook in config["webhooks"].as_array_mut().unwrap() {
            let path = webhook["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap()
                .to_owned();
            let mut client_config = json!({"url": format!("{url}{path}")});
            if let Some(ca) = ca_pem {
                client_config["caBundle"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(ca));
            }
            webhook["clientConfig"] = client_config;
            // What `certs arm` makes of the enforce overlay once a replica is ready
            // (tests/e2e/safe_install.rs): the default entries Fail, audit and warn Ignore.
            if !path.ends_with("/audit") && !path.ends_with("/warn") {
                webhook["failurePolicy"] = json!("Fail");
            }
            webhook["namespaceSelector"]["matchExpressions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"key": TEST_LABEL, "operator": "In", "values": [test]}));
        }
    }
    configs
}

/// Creates both configurations.
pub async fn apply(client: &Client, configs: &[Value; 2]) {
    for (config, path) in configs.iter().zip([MUTATING, VALIDATING]) {
        let answer = create(client, path, config, false).await;
        assert_eq!(answer.status, 201, "creating {path}: {}", answer.body);
    }
}

/// Registers the shipped configurations for `server`, seen by the namespaces of `test`.
pub async fn register(client: &Client, test: &str, server: &Server) {
    let configs = configurations(
        &format!("dhi-e2e-{test}"),
        test,
        &server.url,
        Some(&server.ca_pem),
    );
    apply(client, &configs).await;
}

/// A pod that every mode reports: a hardened nginx declaring port 80.
pub fn probe_pod() -> Value {
    let nginx = json!({"name": "nginx", "image": "dhi.io/nginx:1.31",
                       "ports": [{"containerPort": 80}]});
    pod("probe", json!([nginx]))
}

/// A pod that every mode reports as run-as-root: a hardened container `app` forced to root.
pub fn root_pod() -> Value {
    let app = json!({"name": "app", "image": "dhi.io/python:3.13",
                     "securityContext": {"runAsUser": 0}});
    pod("root-python", json!([app]))
}

/// Waits until the API server sends `ns`'s pods to the webhook (its configuration informer
/// and namespace cache lag behind writes): a dry-run probe pod is denied, or with `audit`
/// admitted with the finding as a warning.
pub async fn wait_active(client: &Client, ns: &str, audit: bool) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = create(client, &pods(ns), &probe_pod(), true).await;
        let seen = if audit {
            answer.status == 201
                && answer
                    .warnings
                    .iter()
                    .any(|w| w.contains("[privileged-port]"))
        } else {
            answer.status >= 400 && answer.message().contains("[privileged-port]")
        };
        if seen {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook did not judge pods in {ns} within 20s; last answer: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes both configurations named `name`.
pub async fn unregister(client: &Client, name: &str) {
    for path in [MUTATING, VALIDATING] {
        delete(client, &format!("{path}/{name}")).await;
    }
}

/// What most tests start from: the control plane, a client, the test's namespace (with
/// `labels`), its own `dhi-admission serve` (with `serve_args`) registered for it, and the
/// webhook already judging the namespace's pods.
pub struct Env {
    pub cp: &'static super::cluster::ControlPlane,
    pub client: Client,
    pub ns: String,
    /// Kept running for the test.
    _server: Server,
}

impl Env {
    /// POSTs `pod` to the namespace's pods (a dry run when `dry_run`).
    pub async fn create_pod(&self, pod: &Value, dry_run: bool) -> Answer {
        create(&self.client, &pods(&self.ns), pod, dry_run).await
    }

    /// POSTs `deployment` to the namespace's Deployments.
    pub async fn create_deployment(&self, deployment: &Value) -> Answer {
        create(
            &self.client,
            &apps(&self.ns, "deployments"),
            deployment,
            false,
        )
        .await
    }

    /// The example `file` (deploy/examples/) placed in the namespace, with the ServiceAccount
    /// its pod (or its pod template) runs as created.
    pub async fn example(&self, file: &str) -> Value {
        let mut example = yaml(&format!("deploy/examples/{file}"));
        example["metadata"]["namespace"] = json!(self.ns);
        let spec = match example["kind"].as_str() {
            Some("Pod") => &example["spec"],
            _ => &example["spec"]["template"]["spec"],
        };
        if let Some(account) = spec["serviceAccountName"].as_str() {
            service_accounts(&self.client, &self.ns, &[account]).await;
        }
        example
    }
}

/// `None` when the suite is skipped (see [`super::cluster::control_plane`]).
pub async fn setup(test: &str, labels: &[(&str, &str)], serve_args: &[&str]) -> Option<Env> {
    let cp = super::cluster::control_plane()?;
    let client = cp.client().await;
    let ns = super::cluster::namespace(&client, test, labels).await;
    let server = Server::start(&cp.test_dir(test), serve_args).await;
    register(&client, test, &server).await;
    // Audit and warn never deny: the probe pod is admitted with its finding as a warning.
    let audit = labels.contains(&("dhi.io/mode", "audit"))
        || labels.contains(&("dhi.io/mode", "warn"))
        || serve_args.windows(2).any(|w| w == ["--mode", "audit"]);
    wait_active(&client, &ns, audit).await;
    Some(Env {
        cp,
        client,
        ns,
        _server: server,
    })
}
