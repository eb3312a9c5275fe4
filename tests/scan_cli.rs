//! `dhi-admission scan` as users run it: argument errors, and the real binary against
//! the stand-in API server of the benchmark (bench/standin.rs) on a loopback port, with
//! exact reports and exit codes. The real API server is in tests/e2e/scan.rs.

#[path = "common/cli.rs"]
mod cli;
#[path = "../bench/standin.rs"]
#[allow(dead_code)]
mod standin;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cli::{Run, dhi};
use serde_json::{Value, json};
use standin::{Cluster, Shape};

fn scan(args: &[&str]) -> Run {
    let mut command = dhi(&["scan"]);
    command.args(args);
    command.output().unwrap().into()
}

/// A kubeconfig for a stand-in serving one namespace (`ns-000`) of ten workloads
/// (bench/standin.rs: KINDS and IMAGES) with two pods each; started once.
fn standin() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        serve(Cluster::generate(Shape {
            namespaces: 1,
            workloads: 10,
            pods: 2,
        }))
    })
}

/// Serves `cluster` on a loopback port for the rest of the test binary; its kubeconfig.
fn serve(cluster: Cluster) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("kubeconfig");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            cluster.serve(listener).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    std::fs::write(&path, standin::kubeconfig(addr)).unwrap();
    path
}

/// PodTemplates are judged by the webhook and `check`, and so by `scan`.
#[test]
fn pod_templates_are_scanned() {
    let cluster = Cluster::generate(Shape {
        namespaces: 1,
        workloads: 0,
        pods: 0,
    })
    .with_pod_template("ns-000", "legacy-template", "dhi.io/python:3.13-dev");
    let kubeconfig = serve(cluster);
    let run = scan(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "-n",
        "ns-000",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = json(&run);
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1, "{report:#}");
    assert_eq!(workloads[0]["kind"], "PodTemplate", "{report:#}");
    assert_eq!(workloads[0]["name"], "legacy-template");
    assert_eq!(workloads[0]["verdict"], "denied", "{report:#}");
}

fn kubeconfig() -> &'static str {
    standin().to_str().unwrap()
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", run.stdout, run.stderr))
}

#[test]
fn argument_errors_exit_2_before_any_request() {
    let bad_ns = scan(&["-n", "Team_A"]);
    assert_eq!(bad_ns.code, 2);
    assert_eq!(
        bad_ns.stderr,
        "error: -n \"Team_A\": not a namespace name (lower-case letters, digits and '-', at most 63)\n"
    );
    let both = scan(&["-n", "team", "-A"]);
    assert_eq!(both.code, 2);
    assert!(
        both.stderr
            .contains("the argument '--namespace <NAME>' cannot be used with '--all-namespaces'"),
        "{}",
        both.stderr
    );
    for args in [
        &["--output", "xml"][..],
        &["--page-size", "0"],
        &["--mode", "strict"],
    ] {
        let run = scan(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: invalid value"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
    let missing = scan(&["--kubeconfig", "/nonexistent/kubeconfig", "-A"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .starts_with("error: cannot read kubeconfig /nonexistent/kubeconfig: "),
        "{}",
        missing.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: {run-as-rot: warn}\n").unwrap();
    let bad_policy = scan(&["--policy", policy.to_str().unwrap(), "-A"]);
    assert_eq!(bad_policy.code, 2);
    assert!(
        bad_policy
            .stderr
            .starts_with(&format!("error: policy {}: ", policy.display())),
        "{}",
        bad_policy.stderr
    );
}

#[test]
fn a_namespace_that_does_not_exist_is_an_error() {
    let run = scan(&["--kubeconfig", kubeconfig(), "-n", "ns-404"]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "error: reading namespace ns-404: GET /api/v1/namespaces/ns-404: 404 Not Found: the \
         server could not find the requested resource (/api/v1/namespaces/ns-404)\n"
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn a_namespace_whose_labels_cannot_be_read_is_judged_in_the_servers_mode() {
    let run = scan(&[
        "--kubeconfig",
        kubeconfig(),
        "-n",
        "forbidden-team",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "warning: cannot read namespace forbidden-team (GET /api/v1/namespaces/forbidden-team: \
         403 Forbidden: namespaces \"forbidden-team\" is forbidden: User \"standin\" cannot get \
         resource \"namespaces\" in API group \"\" in the namespace \"forbidden-team\"); its \
         dhi.io/mode label is not known: judged in the server's mode (enforce)\n"
    );
    assert_eq!(json(&run)["workloads"], json!([]));
}

#[test]
fn the_stand_in_cluster_is_reported_through_its_owners_whatever_the_page_size() {
    // The context's namespace (ns-000) by default.
    let small = scan(&[
        "--kubeconfig",
        kubeconfig(),
        "-o",
        "json",
        "--page-size",
        "3",
    ]);
    assert_eq!(
        small.code, 1,
        "two Deployments run a -dev image as root: {}",
        small.stderr
    );
    assert_eq!(small.stderr, "");
    let report = json(&small);
    let rows: Vec<(&str, &str, &str, u64)> = report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["kind"].as_str().unwrap(),
                w["name"].as_str().unwrap(),
                w["verdict"].as_str().unwrap(),
                w["pods"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("CronJob", "cronjob-7", "ready", 2),
            ("DaemonSet", "daemonset-4", "ready", 2),
            ("Deployment", "deployment-0", "ready", 2),
            ("Deployment", "deployment-1", "ready", 2),
            ("Deployment", "deployment-3", "denied", 2),
            ("Deployment", "deployment-5", "ready", 2),
            ("Deployment", "deployment-6", "ready", 2),
            ("Deployment", "deployment-8", "denied", 2),
            ("Deployment", "deployment-9", "ready", 2),
            ("StatefulSet", "statefulset-2", "ready", 2),
        ]
    );
    let counts = json!({
        "workloads": 10, "pods": 20, "already_hardened": 0, "ready_to_enforce": 8,
        "needs_fix": 0, "denied": 2, "not_reviewed": 0,
        "has_equivalent": 12, "equivalent_other_tag": 2, "no_equivalent": 2,
    });
    assert_eq!(
        report["summary"],
        json!({"namespaces": {"ns-000": counts}, "cluster": counts})
    );

    let all = scan(&["--kubeconfig", kubeconfig(), "-o", "json", "-A"]);
    assert_eq!(all.code, 1);
    assert_eq!(
        all.stdout, small.stdout,
        "-A on a one-namespace cluster, one page"
    );
}

#[test]
fn text_and_policyreport_outputs() {
    let text = scan(&["--kubeconfig", kubeconfig(), "-A"]);
    assert_eq!(text.code, 1);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "NAMESPACE  KIND         NAME           MODE     VERDICT  PODS"
    );
    assert_eq!(
        lines[lines.len() - 1],
        "(cluster)  10         20    0         8      0          2       0             12          2          2"
    );
    let reports = scan(&["--kubeconfig", kubeconfig(), "-A", "-o", "policyreport"]);
    assert_eq!(reports.code, 1);
    let documents: Vec<Value> = serde_saphyr::from_multiple(&reports.stdout).unwrap();
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["PolicyReport", "ClusterPolicyReport"]);
    assert_eq!(
        documents[0]["summary"],
        json!({"pass": 28, "fail": 2, "warn": 10, "error": 0, "skip": 0})
    );
}
