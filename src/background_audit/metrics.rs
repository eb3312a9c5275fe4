//! The audit's metrics, registered into a registry passed in (no globals), served on
//! `/metrics` with `/healthz` by the same listener code as `serve` ([`crate::metrics::serve`]).
//!
//! `dhi_admission_audit_workloads{rule,result}` counts workloads by rule and result; the
//! `namespace` label is added only with `--metrics-namespace-label`: a cluster's
//! namespaces are unbounded, and each one multiplies the series by rules × results.

use std::collections::{BTreeMap, BTreeSet};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Registry};
use tokio::sync::watch;

use crate::metrics::Families;

/// Which report a write was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportKind {
    /// A namespace's `PolicyReport`.
    Namespaced,
    /// The `ClusterPolicyReport` summary.
    Cluster,
}

impl ReportKind {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Namespaced => "PolicyReport",
            Self::Cluster => "ClusterPolicyReport",
        }
    }
}

/// Where the unprivileged port start the engine judges with comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortStartSource {
    /// The policy file's `runtime.unprivilegedPortStart`.
    Policy,
    /// Detected from the nodes' container runtimes (`--detect-runtime-ports`).
    Detected,
    /// Neither: the kernel's 1024.
    Kernel,
}

impl PortStartSource {
    /// Every source.
    pub(crate) const ALL: [Self; 3] = [Self::Policy, Self::Detected, Self::Kernel];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Detected => "detected",
            Self::Kernel => "kernel",
        }
    }
}

/// One series of the workloads gauge: namespace (when labelled), rule, result.
pub(crate) type WorkloadSeries = (Option<String>, &'static str, &'static str);

/// Every metric the audit exports.
#[derive(Clone)]
pub(crate) struct AuditMetrics {
    registry: Registry,
    workloads: IntGaugeVec,
    namespace_label: bool,
    writes: IntCounterVec,
    unchanged: IntCounterVec,
    leader: IntGauge,
    port_start: IntGaugeVec,
    rejudged: IntCounterVec,
    shown: std::sync::Arc<std::sync::Mutex<BTreeSet<WorkloadSeries>>>,
}

impl AuditMetrics {
    /// Registers the families; `namespace_label` adds the namespace to the workloads gauge.
    pub(crate) fn new(registry: Registry, namespace_label: bool) -> prometheus::Result<Self> {
        let families = Families(&registry);
        let labels: &[&str] = if namespace_label {
            &["namespace", "rule", "result"]
        } else {
            &["rule", "result"]
        };
        let workloads: IntGaugeVec = families.by(
            "dhi_admission_audit_workloads",
            "Workloads in the cluster by rule and result, as last judged by the background audit.",
            labels,
        )?;
        let writes: IntCounterVec = families.by(
            "dhi_admission_audit_report_writes_total",
            "Report writes (server-side apply) sent by the leader, by report kind and result.",
            &["kind", "result"],
        )?;
        let unchanged: IntCounterVec = families.by(
            "dhi_admission_audit_report_writes_skipped_total",
            "Reports rendered but not written because they equal the last one written.",
            &["kind"],
        )?;
        let leader: IntGauge = families.one(
            "dhi_admission_audit_leader",
            "1 while this replica holds the lease and writes the reports.",
        )?;
        let port_start: IntGaugeVec = families.by(
            "dhi_admission_audit_unprivileged_port_start",
            "The runtime's unprivileged port start the audit judges pods off the host network \
                 with (hostNetwork pods: 1024), by where it comes from; 0 means privileged-port \
                 applies to hostNetwork pods only.",
            &["source"],
        )?;
        let rejudged: IntCounterVec = families.by(
            "dhi_admission_audit_judged_total",
            "Workloads judged, by why: a watch event (the first list included) or a relist (the \
                 resync interval, a new policy, catalog or runtime detection, an expired watch).",
            &["trigger"],
        )?;
        for kind in [ReportKind::Namespaced, ReportKind::Cluster] {
            for result in ["applied", "failed"] {
                writes.with_label_values(&[kind.as_str(), result]);
            }
            unchanged.with_label_values(&[kind.as_str()]);
        }
        for trigger in ["event", "resync"] {
            rejudged.with_label_values(&[trigger]);
        }
        Ok(Self {
            registry,
            workloads,
            namespace_label,
            writes,
            unchanged,
            leader,
            port_start,
            rejudged,
            shown: Default::default(),
        })
    }

    /// Whether the workloads gauge carries the namespace.
    pub(crate) fn namespace_label(&self) -> bool {
        self.namespace_label
    }

    /// Sets the workloads gauge to these counts; series that dropped to nothing are
    /// removed, not left at their last value.
    pub(crate) fn set_workloads(&self, counts: &BTreeMap<WorkloadSeries, i64>) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        for gone in shown.iter().filter(|s| !counts.contains_key(*s)) {
            let _ = self.workloads.remove_label_values(&labels(gone));
        }
        for (series, n) in counts {
            self.workloads.with_label_values(&labels(series)).set(*n);
        }
        *shown = counts.keys().cloned().collect();
    }

    /// Counts a report write.
    pub(crate) fn wrote(&self, kind: ReportKind, ok: bool) {
        let result = if ok { "applied" } else { "failed" };
        self.writes
            .with_label_values(&[kind.as_str(), result])
            .inc();
    }

    /// Counts a report that was not written because nothing changed.
    pub(crate) fn unchanged(&self, kind: ReportKind) {
        self.unchanged.with_label_values(&[kind.as_str()]).inc();
    }

    /// Whether this replica leads.
    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The port start in force and where it comes from (the other sources read 0 series:
    /// one series is present at a time).
    pub(crate) fn set_port_start(&self, source: PortStartSource, start: u16) {
        for other in PortStartSource::ALL {
            let _ = self.port_start.remove_label_values(&[other.as_str()]);
        }
        self.port_start
            .with_label_values(&[source.as_str()])
            .set(i64::from(start));
    }

    /// Counts workloads judged.
    pub(crate) fn judged(&self, resync: bool, n: u64) {
        let trigger = if resync { "resync" } else { "event" };
        self.rejudged.with_label_values(&[trigger]).inc_by(n);
    }

    /// The text exposition of every metric in the registry.
    #[cfg(test)]
    pub(crate) fn render(&self) -> String {
        crate::metrics::render(&self.registry)
    }
}

fn labels(series: &WorkloadSeries) -> Vec<&str> {
    let (namespace, rule, result) = series;
    match namespace {
        Some(ns) => vec![ns.as_str(), rule, result],
        None => vec![rule, result],
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `stop`, on the listener code of
/// `serve` (no `/readyz`: the audit takes no traffic).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: AuditMetrics,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    crate::metrics::serve(listener, metrics.registry, None, stopped).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        entries: &[(Option<&str>, &'static str, &'static str, i64)],
    ) -> BTreeMap<WorkloadSeries, i64> {
        entries
            .iter()
            .map(|(ns, rule, result, n)| ((ns.map(str::to_owned), *rule, *result), *n))
            .collect()
    }

    fn lines(m: &AuditMetrics, prefix: &str) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn workload_gauges_follow_the_counts_and_drop_vanished_series() {
        let m = AuditMetrics::new(Registry::new(), false).unwrap();
        m.set_workloads(&counts(&[
            (None, "run-as-root", "fail", 2),
            (None, "run-as-root", "pass", 5),
        ]));
        assert_eq!(
            lines(&m, "dhi_admission_audit_workloads{"),
            [
                "dhi_admission_audit_workloads{result=\"fail\",rule=\"run-as-root\"} 2",
                "dhi_admission_audit_workloads{result=\"pass\",rule=\"run-as-root\"} 5",
            ]
        );
        m.set_workloads(&counts(&[(None, "run-as-root", "pass", 7)]));
        assert_eq!(
            lines(&m, "dhi_admission_audit_workloads{"),
            ["dhi_admission_audit_workloads{result=\"pass\",rule=\"run-as-root\"} 7"]
        );
    }

    #[test]
    fn the_namespace_label_is_opt_in() {
        let m = AuditMetrics::new(Registry::new(), true).unwrap();
        m.set_workloads(&counts(&[(Some("shop"), "privileged-port", "warn", 1)]));
        assert_eq!(
            lines(&m, "dhi_admission_audit_workloads{"),
            [
                "dhi_admission_audit_workloads{namespace=\"shop\",result=\"warn\",rule=\"privileged-port\"} 1"
            ]
        );
    }

    #[test]
    fn writes_leader_and_port_start_are_exported() {
        let m = AuditMetrics::new(Registry::new(), false).unwrap();
        m.wrote(ReportKind::Namespaced, true);
        m.wrote(ReportKind::Namespaced, true);
        m.unchanged(ReportKind::Cluster);
        m.set_leader(true);
        m.set_port_start(PortStartSource::Kernel, 1024);
        m.set_port_start(PortStartSource::Detected, 0);
        let text = m.render();
        for line in [
            "dhi_admission_audit_report_writes_total{kind=\"PolicyReport\",result=\"applied\"} 2",
            "dhi_admission_audit_report_writes_total{kind=\"ClusterPolicyReport\",result=\"failed\"} 0",
            "dhi_admission_audit_report_writes_skipped_total{kind=\"ClusterPolicyReport\"} 1",
            "dhi_admission_audit_leader 1",
            "dhi_admission_audit_unprivileged_port_start{source=\"detected\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(!text.contains("source=\"kernel\""), "{text}");
    }
}
