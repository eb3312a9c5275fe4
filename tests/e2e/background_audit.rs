//! `dhi-admission audit` against the real API server: the PolicyReport of a namespace
//! appears with the exact results, follows changes to its workloads, and of two replicas
//! exactly one holds the Lease and writes; the other takes over when it dies.
//!
//! Each test runs its own audit processes with their own report and lease names, so the
//! reports they write in every namespace of the shared control plane never meet.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use kube::Client;
use serde_json::{Value, json};

use super::cluster::{
    ControlPlane, JSON_PATCH, apps, control_plane, create_all, delete, eventually, free_port, get,
    http_get, namespace, patch,
};
use super::webhook::{command, spawn_serving};

const CRDS: &str = "deploy/overlays/policyreport-crds";
const GROUP: &str = "/apis/wgpolicyk8s.io/v1alpha2";

/// Installs the shipped PolicyReport CRDs (idempotent) and waits until they are served.
async fn install_crds(cp: &ControlPlane) {
    let dir = format!("{}/{CRDS}", env!("CARGO_MANIFEST_DIR"));
    cp.kubectl(&["apply", "--server-side", "-k", &dir], None)
        .await
        .assert_ok();
    cp.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/policyreports.wgpolicyk8s.io",
            "crd/clusterpolicyreports.wgpolicyk8s.io",
        ],
        None,
    )
    .await
    .assert_ok();
}

/// `dhi-admission audit` on a loopback metrics port, killed when dropped.
struct Audit {
    identity: String,
    metrics: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl Audit {
    /// Starts an audit named `identity` that writes reports named `report` and elects its
    /// writer on the Lease `lease` in `lease_ns`, with short lease timings.
    async fn start(
        cp: &ControlPlane,
        dir: &Path,
        identity: &str,
        report: &str,
        lease_ns: &str,
        lease: &str,
        extra: &[&str],
    ) -> Audit {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("audit-{identity}.log"));
        let mut cmd = command();
        cmd.args(["--log-level", "info", "audit", "--kubeconfig"])
            .arg(&cp.kubeconfig)
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--identity", identity, "--report-name", report])
            .args(["--lease-namespace", lease_ns, "--lease-name", lease])
            .args([
                "--lease-duration-seconds",
                "3",
                "--renew-deadline-seconds",
                "2",
                "--lease-retry-ms",
                "300",
                "--debounce-ms",
                "100",
            ])
            .args(extra);
        let child = spawn_serving(cmd, &log, metrics, "/healthz").await;
        Audit {
            identity: identity.to_owned(),
            metrics,
            log,
            child,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric's value (the first series whose line starts with `series`).
    async fn metric(&self, series: &str) -> f64 {
        let text = http_get(self.metrics, "/metrics").await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not exported by {}:\n{text}", self.identity))
    }

    async fn leads(&self) -> bool {
        self.metric("dhi_admission_audit_leader ").await == 1.0
    }

    async fn writes(&self) -> f64 {
        self.metric(
            "dhi_admission_audit_report_writes_total{kind=\"PolicyReport\",result=\"applied\"}",
        )
        .await
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deployment(name: &str, image: &str, port: u16) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": name, "image": image, "ports": [{"containerPort": port}]}
                ]}
            }
        }
    })
}

/// Moves the Deployment `web` from port 80 to 8080 (a JSON Patch: a strategic merge
/// would add the port, ports merge by number).
async fn move_to_port_8080(client: &Client, ns: &str) {
    let ops = json!([{
        "op": "replace",
        "path": "/spec/template/spec/containers/0/ports/0/containerPort",
        "value": 8080
    }]);
    let path = format!("{}/web", apps(ns, "deployments"));
    let patched = patch(client, &path, JSON_PATCH, &ops).await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
}

/// The PolicyReport `name` in `ns`, once it exists.
async fn report(client: &Client, ns: &str, name: &str) -> Option<Value> {
    let path = format!("{GROUP}/namespaces/{ns}/policyreports/{name}");
    let answer = get(client, &path).await;
    (answer.status == 200).then_some(answer.body)
}

/// `(workload, rule, result)` of every result, in the report's order.
fn outcomes(report: &Value) -> Vec<(String, String, String)> {
    report["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["resources"][0]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r["rule"].as_str().unwrap_or_default().to_owned(),
                r["result"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The rules of every workload's results, in the report's order.
const RULES: [&str; 4] = [
    "run-as-root",
    "privileged-port",
    "invalid-image",
    "hardened-image",
];

/// Each workload's results for [`RULES`], one `(workload, rule, result)` each.
fn expected(rows: &[(&str, [&str; 4])]) -> Vec<(String, String, String)> {
    rows.iter()
        .flat_map(|(workload, results)| {
            RULES
                .iter()
                .zip(results)
                .map(|(rule, result)| (workload.to_string(), rule.to_string(), result.to_string()))
        })
        .collect()
}

/// Waits until the namespace's report holds exactly `rows` (each workload's results for
/// [`RULES`]), and returns it.
async fn report_with(client: &Client, ns: &str, name: &str, rows: &[(&str, [&str; 4])]) -> Value {
    let want = expected(rows);
    let mut last = Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(report) = report(client, ns, name).await {
                if outcomes(&report) == want {
                    return report;
                }
                last = report;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "the PolicyReport never held {want:?}; last seen:\n{}",
            serde_json::to_string_pretty(&last).unwrap()
        )
    })
}

/// What each test starts from: the control plane with the CRDs installed, a client, the
/// test's namespace holding `deployments`, its directory, and the name (`e2e-<test>`, the
/// namespace's) its audits give their reports and their Lease.
struct Case {
    cp: &'static ControlPlane,
    client: Client,
    ns: String,
    dir: PathBuf,
    name: String,
}

impl Case {
    /// `None` when the suite is skipped.
    async fn start(test: &str, deployments: impl IntoIterator<Item = Value>) -> Option<Case> {
        let cp = control_plane()?;
        let client = cp.client().await;
        install_crds(cp).await;
        let ns = namespace(&client, test, &[]).await;
        create_all(&client, &apps(&ns, "deployments"), deployments).await;
        Some(Case {
            cp,
            dir: cp.test_dir(test),
            name: format!("e2e-{test}"),
            client,
            ns,
        })
    }

    /// An audit named `identity` over this case's report and Lease (in its namespace).
    async fn audit(&self, identity: &str, extra: &[&str]) -> Audit {
        let (ns, name) = (&self.ns, &self.name);
        Audit::start(self.cp, &self.dir, identity, name, ns, name, extra).await
    }

    /// The namespace's report, once it exists.
    async fn report(&self) -> Option<Value> {
        report(&self.client, &self.ns, &self.name).await
    }

    /// Waits until the namespace's report holds exactly `rows`, see [`report_with`].
    async fn report_with(&self, rows: &[(&str, [&str; 4])]) -> Value {
        report_with(&self.client, &self.ns, &self.name, rows).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_report_follows_its_workloads() {
    // web: a hardened nginx on port 80, which its nonroot user cannot bind.
    // legacy: the upstream nginx, whose hardened equivalent the catalog lists.
    let deployments = [
        deployment("web", "dhi.io/nginx:1.31", 80),
        deployment("legacy", "docker.io/library/nginx:1.31", 8080),
    ];
    let Some(case) = Case::start("audit-reports", deployments).await else {
        return;
    };
    let (client, ns, report_name) = (&case.client, &case.ns, &case.name);
    let audit = case.audit("solo", &["--resync-seconds", "1"]).await;

    let legacy = ("legacy", ["pass", "pass", "pass", "warn"]);
    let first = case
        .report_with(&[legacy, ("web", ["pass", "fail", "pass", "pass"])])
        .await;
    assert_eq!(
        first["summary"],
        json!({"pass": 6, "fail": 1, "warn": 1, "error": 0, "skip": 0})
    );
    let web_port = &first["results"][5];
    assert_eq!(web_port["resources"][0]["kind"], "Deployment");
    assert_eq!(web_port["resources"][0]["apiVersion"], "apps/v1");
    assert!(
        web_port["properties"]["fix"]
            .as_str()
            .is_some_and(|fix| !fix.is_empty()),
        "{web_port}"
    );
    assert_eq!(
        first["results"][3]["properties"]["equivalent"],
        "legacy=dhi.io/nginx:1.31"
    );
    // Written by server-side apply, under the audit's field manager.
    let managers: Vec<Value> = first["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!([m["manager"], m["operation"]]))
        .collect();
    assert_eq!(managers, [json!(["dhi-admission-audit", "Apply"])]);

    // The fix lands: port 8080. Only web's privileged-port result changes.
    move_to_port_8080(client, ns).await;
    let web = ("web", ["pass", "pass", "pass", "pass"]);
    case.report_with(&[legacy, web]).await;

    // A deleted workload leaves the report.
    let deleted = delete(client, &format!("{}/legacy", apps(ns, "deployments"))).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    case.report_with(&[web]).await;

    // The cluster report has the namespace's line.
    let cluster = eventually(
        "the ClusterPolicyReport's line for the namespace",
        Duration::from_secs(15),
        || async {
            let path = format!("{GROUP}/clusterpolicyreports/{report_name}");
            let answer = get(client, &path).await;
            answer.body["results"]
                .as_array()?
                .iter()
                .find(|r| {
                    r["resources"][0]["name"] == ns.as_str() && r["properties"]["workloads"] == "1"
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(cluster["rule"], "ready-to-enforce");
    assert_eq!(cluster["result"], "pass");

    // Nothing changes in the namespace: its report is not written again, though the
    // audit re-lists and re-judges every workload each second (--resync-seconds 1).
    let settled = case.report().await.unwrap();
    let resyncs = audit
        .metric("dhi_admission_audit_judged_total{trigger=\"resync\"}")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = case.report().await.unwrap();
    assert_eq!(
        later["metadata"]["resourceVersion"],
        settled["metadata"]["resourceVersion"],
        "rewritten with nothing changed:\n{}",
        audit.logs()
    );
    let rejudged = audit
        .metric("dhi_admission_audit_judged_total{trigger=\"resync\"}")
        .await;
    assert!(
        rejudged > resyncs,
        "no resync in 3 s ({resyncs} -> {rejudged})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_writes_and_the_other_takes_over() {
    let web = [deployment("web", "dhi.io/nginx:1.31", 80)];
    let Some(case) = Case::start("audit-lease", web).await else {
        return;
    };
    let (client, ns, lease) = (&case.client, &case.ns, &case.name);
    let a = case.audit("replica-a", &[]).await;
    let b = case.audit("replica-b", &[]).await;
    case.report_with(&[("web", ["pass", "fail", "pass", "pass"])])
        .await;

    // Exactly one leads, the Lease names it, and only it has written.
    let holder = eventually("one leader", Duration::from_secs(15), || async {
        match (a.leads().await, b.leads().await) {
            (true, false) => Some("replica-a"),
            (false, true) => Some("replica-b"),
            _ => None,
        }
    })
    .await;
    let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{lease}");
    let read = get(client, &lease_path).await;
    assert_eq!(read.body["spec"]["holderIdentity"], holder);
    assert_eq!(read.body["spec"]["leaseDurationSeconds"], 3);
    let (leader, standby) = if holder == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };
    assert!(leader.writes().await >= 1.0, "{}", leader.logs());
    assert_eq!(standby.writes().await, 0.0, "{}", standby.logs());

    // The leader dies without releasing the Lease: the standby takes over once it expires.
    drop(leader);
    eventually("the standby to lead", Duration::from_secs(20), || async {
        standby.leads().await.then_some(())
    })
    .await;
    let read = get(client, &lease_path).await;
    assert_eq!(
        read.body["spec"]["holderIdentity"],
        standby.identity.as_str()
    );
    assert!(
        read.body["spec"]["leaseTransitions"].as_i64() >= Some(1),
        "{}",
        read.body
    );

    // And it writes: the next change reaches the report through it.
    move_to_port_8080(client, ns).await;
    case.report_with(&[("web", ["pass", "pass", "pass", "pass"])])
        .await;
    assert!(standby.writes().await >= 1.0, "{}", standby.logs());
}

fn node(name: &str, runtime: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"nodeInfo": {
            "machineID": name, "systemUUID": name, "bootID": name,
            "kernelVersion": "6.8.0", "osImage": "Ubuntu 24.04", "kubeletVersion": "v1.36.3",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            "containerRuntimeVersion": runtime
        }}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_2_on_every_node_lifts_privileged_port_off_the_host_network() {
    let mut host = deployment("host", "dhi.io/nginx:1.31", 80);
    host["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    let Some(case) = Case::start(
        "audit-runtime",
        [deployment("web", "dhi.io/nginx:1.31", 80), host],
    )
    .await
    else {
        return;
    };
    let client = &case.client;
    // The control plane has no kubelet: the nodes are written as kubelets would register.
    // No other test reads nodes, and these are the only ones.
    let nodes = "/api/v1/nodes";
    create_all(
        client,
        nodes,
        [node("e2e-audit-node-a", "containerd://2.1.4")],
    )
    .await;
    let audit = case
        .audit(
            "runtime",
            &["--detect-runtime-ports", "--resync-seconds", "1"],
        )
        .await;
    // Port 80 is bindable off the host network; the hostNetwork pod keeps the rule.
    let host = ("host", ["pass", "fail", "pass", "pass"]);
    let lifted = case
        .report_with(&[host, ("web", ["pass", "pass", "pass", "pass"])])
        .await;
    assert_eq!(
        lifted["results"][5]["properties"]["unprivilegedPortStart"],
        "every Linux node (1) runs containerd 2.x: pods off the host network may bind ports \
         below 1024, privileged-port applies to hostNetwork pods only"
    );
    assert_eq!(
        audit
            .metric("dhi_admission_audit_unprivileged_port_start{source=\"detected\"}")
            .await,
        0.0
    );

    // A CRI-O node joins: the rule applies to every pod again, from the next resync.
    create_all(client, nodes, [node("e2e-audit-node-b", "cri-o://1.31.0")]).await;
    let kept = case
        .report_with(&[host, ("web", ["pass", "fail", "pass", "pass"])])
        .await;
    assert_eq!(
        kept["results"][5]["properties"]["unprivilegedPortStart"],
        "privileged-port applies to every pod: node e2e-audit-node-b runs cri-o://1.31.0"
    );
    assert_eq!(
        audit
            .metric("dhi_admission_audit_unprivileged_port_start{source=\"kernel\"}")
            .await,
        1024.0
    );
    for name in ["e2e-audit-node-a", "e2e-audit-node-b"] {
        let deleted = delete(client, &format!("{nodes}/{name}")).await;
        assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_judges_every_workload_again() {
    let web = [deployment("web", "dhi.io/nginx:1.31", 80)];
    let Some(case) = Case::start("audit-policy", web).await else {
        return;
    };
    let dir = &case.dir;
    let policy = dir.join("policy.yaml");
    // Replaced whole, as the kubelet swaps a ConfigMap volume's files: a reader never sees
    // a half-written file (an empty one is the default policy, and valid).
    let write = |text: &str| {
        let next = dir.join("policy.yaml.next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &policy).unwrap();
    };
    write("rules: {}\n");
    let config = policy.to_str().unwrap();
    let reload = ["--config", config, "--reload-interval-ms", "200"];
    let _audit = case.audit("policy", &reload).await;
    let rows = |port: &'static str| [("web", ["pass", port, "pass", "pass"])];
    case.report_with(&rows("fail")).await;
    // The rule becomes a warning: the workload did not change, its report does.
    write("rules: {privileged-port: warn}\n");
    case.report_with(&rows("warn")).await;
    // A broken policy is refused; the last good one stays in force.
    write("rules: {privileged-port: sometimes}\n");
    tokio::time::sleep(Duration::from_secs(1)).await;
    case.report_with(&rows("warn")).await;
    // Off: the rule is skipped.
    write("rules: {privileged-port: \"off\"}\n");
    case.report_with(&rows("skip")).await;
}
