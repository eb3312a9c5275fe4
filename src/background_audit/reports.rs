//! The audit's side of the report model ([`crate::report`], shared with `scan`): judging a
//! watched workload into a [`WorkloadReport`], and rendering the stored reports into the
//! `wgpolicyk8s.io/v1alpha2` objects the audit writes.
//!
//! What the audit adds to the shared builders: its report name (`--report-name`), the
//! note on the runtime's unprivileged port start on every `privileged-port` result, an
//! empty PolicyReport for a namespace whose last workload went away, and a bound on the
//! results of one object (a PolicyReport is one etcd object).

use std::collections::BTreeMap;

use dhi_policy::{Engine, RuleId, WorkloadKind, decode_object};
use serde_json::Value;

use crate::report::policyreport::{self, PolicyReport, ResultCounts};
use crate::report::summary::Summary;
use crate::report::{self, NamespaceMode, RuleResult, WorkloadReport};

/// A report keeps at most this many results (an object in etcd is at most 1.5 MiB, and a
/// result is a few hundred bytes); past it, passing and skipped results are left out
/// first. The summary still counts every result.
pub(crate) const MAX_RESULTS: usize = 2000;

/// The property on `privileged-port` results that says which unprivileged port start
/// they were judged with.
pub(crate) const PORT_PROPERTY: &str = "unprivilegedPortStart";

/// Judges one watched workload as `scan` does; `None` (logged) when the engine cannot read
/// it, as `scan` leaves such workloads out of its reports.
pub(crate) fn judge(
    engine: &Engine,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
    mode: NamespaceMode,
    object: &str,
) -> Option<WorkloadReport> {
    let view = match decode_object(object) {
        Ok(view) => view,
        Err(err) => {
            tracing::warn!(%namespace, %name, kind = kind.as_str(), error = %err, "cannot read the workload; not reported");
            return None;
        }
    };
    let workload = report::Workload {
        kind,
        namespace,
        name,
        uid,
        mode,
        object: view,
    };
    match report::judge(engine, workload) {
        Ok(report) => Some(report),
        Err(err) => {
            tracing::warn!(%namespace, %name, kind = kind.as_str(), error = %err, "cannot judge the workload; not reported");
            None
        }
    }
}

/// `(rule, result)` of each rule on a workload, for the metrics.
pub(crate) fn rule_results(
    report: &WorkloadReport,
) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    report
        .rules
        .iter()
        .map(|(rule, outcome)| (rule.as_str(), outcome.as_str()))
}

/// A namespace's PolicyReport, named `name`, with `port_note` on its privileged-port results.
pub(crate) fn namespace_report<'r>(
    name: &str,
    namespace: &str,
    reports: impl Iterator<Item = &'r WorkloadReport>,
    port_note: Option<&str>,
) -> Value {
    let mut report = policyreport::namespace_reports(reports)
        .pop()
        .unwrap_or_else(|| empty(namespace));
    report.metadata.name = name.to_owned();
    if let Some(note) = port_note {
        for result in &mut report.results {
            if result.rule == RuleId::PrivilegedPort.as_str() {
                result
                    .properties
                    .insert(PORT_PROPERTY.to_owned(), note.to_owned());
            }
        }
    }
    bound(&mut report, namespace);
    serde_json::to_value(&report).unwrap_or_default()
}

/// The ClusterPolicyReport over every stored report, named `name`.
pub(crate) fn cluster_report<'r>(
    name: &str,
    reports: impl Iterator<Item = &'r WorkloadReport>,
) -> Value {
    let mut report = policyreport::cluster_report(&Summary::of(reports));
    report.metadata.name = name.to_owned();
    bound(&mut report, "");
    serde_json::to_value(&report).unwrap_or_default()
}

/// A namespace without workloads: no results (it had some; the report says they are gone).
fn empty(namespace: &str) -> PolicyReport {
    PolicyReport {
        api_version: policyreport::API_VERSION,
        kind: "PolicyReport",
        metadata: policyreport::Metadata {
            name: String::new(),
            namespace: Some(namespace.to_owned()),
            labels: BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "dhi-admission".to_owned(),
            )]),
        },
        summary: ResultCounts::default(),
        results: Vec::new(),
    }
}

/// Keeps at most [`MAX_RESULTS`] results, failing and warning ones first.
fn bound(report: &mut PolicyReport, namespace: &str) {
    if report.results.len() <= MAX_RESULTS {
        return;
    }
    // Stable: within each group the workloads keep their order.
    report
        .results
        .sort_by_key(|r| !matches!(r.result, RuleResult::Fail | RuleResult::Warn));
    report.results.truncate(MAX_RESULTS);
    tracing::warn!(
        namespace,
        kept = MAX_RESULTS,
        "too many results for one report; passing and skipped results left out (the summary counts them)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhi_policy::{Mode, PolicyFile};
    use serde_json::json;

    fn deployment(image: &str, port: u16) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": image, "ports": [{"containerPort": port}]}
            ]}}}
        })
    }

    fn judged(engine: &Engine, object: &Value) -> WorkloadReport {
        let object = object.to_string();
        judge(
            engine,
            WorkloadKind::Deployment,
            "shop",
            "web",
            Some("uid-1"),
            NamespaceMode::Judged(Mode::Enforce),
            &object,
        )
        .expect("a readable deployment is judged")
    }

    fn results(report: &Value) -> Vec<(String, String)> {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rule"].as_str().unwrap().to_owned(),
                    r["result"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_namespace_report_carries_the_port_note_on_privileged_port_only() {
        let engine = Engine::default();
        let report = judged(&engine, &deployment("dhi.io/nginx:1.29", 80));
        let note = "every Linux node (2) runs containerd 2.x";
        let written = namespace_report("audit", "shop", [&report].into_iter(), Some(note));
        assert_eq!(written["metadata"]["name"], "audit");
        assert_eq!(written["metadata"]["namespace"], "shop");
        assert_eq!(
            results(&written),
            [
                ("run-as-root".to_owned(), "pass".to_owned()),
                ("privileged-port".to_owned(), "fail".to_owned()),
                ("invalid-image".to_owned(), "pass".to_owned()),
                ("hardened-image".to_owned(), "pass".to_owned()),
            ]
        );
        for result in written["results"].as_array().unwrap() {
            let has_note = result["properties"].get(PORT_PROPERTY).is_some();
            assert_eq!(has_note, result["rule"] == "privileged-port", "{result}");
        }
        assert_eq!(written["results"][1]["properties"][PORT_PROPERTY], note);
        assert_eq!(written["results"][0]["resources"][0]["uid"], "uid-1");
    }

    #[test]
    fn the_runtime_port_start_clears_privileged_port_off_the_host_network() {
        let mut policy = PolicyFile::default();
        policy.runtime.unprivileged_port_start = Some(0);
        let engine = Engine::new(policy);
        let report = judged(&engine, &deployment("dhi.io/nginx:1.29", 80));
        assert_eq!(
            report.rules[&report::Rule::PrivilegedPort],
            RuleResult::Pass
        );
        let mut host = deployment("dhi.io/nginx:1.29", 80);
        host["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        let report = judged(&engine, &host);
        assert_eq!(
            report.rules[&report::Rule::PrivilegedPort],
            RuleResult::Fail
        );
    }

    #[test]
    fn an_emptied_namespace_gets_an_empty_report() {
        let written = namespace_report("dhi-admission", "gone", std::iter::empty(), None);
        assert_eq!(written["kind"], "PolicyReport");
        assert_eq!(written["metadata"]["namespace"], "gone");
        assert_eq!(written["results"], json!([]));
        assert_eq!(
            written["summary"],
            json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0})
        );
    }

    #[test]
    fn unreadable_workloads_are_left_out() {
        let bad = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": "nope"}}}});
        let judged = judge(
            &Engine::default(),
            WorkloadKind::Deployment,
            "shop",
            "web",
            None,
            NamespaceMode::Judged(Mode::Enforce),
            &bad.to_string(),
        );
        assert_eq!(judged, None);
    }

    #[test]
    fn oversized_reports_keep_their_failures() {
        let engine = Engine::default();
        let failing = judged(&engine, &deployment("dhi.io/nginx:1.29", 80));
        let passing = judged(&engine, &deployment("dhi.io/nginx:1.29", 8080));
        let mut reports: Vec<WorkloadReport> = (0..MAX_RESULTS)
            .map(|i| WorkloadReport {
                name: format!("ok-{i}"),
                ..passing.clone()
            })
            .collect();
        reports.push(failing);
        let written = namespace_report("r", "shop", reports.iter(), None);
        let kept = written["results"].as_array().unwrap();
        assert_eq!(kept.len(), MAX_RESULTS);
        assert_eq!(kept[0]["result"], "fail");
        assert_eq!(kept[0]["resources"][0]["name"], "web");
        // The summary counts everything, left out or not.
        assert_eq!(written["summary"]["pass"], json!(4 * MAX_RESULTS + 3));
    }
}
