//! `wgpolicyk8s.io/v1alpha2` PolicyReports (one per namespace, a result per workload and
//! rule) and a ClusterPolicyReport (a result per namespace): the objects Policy
//! Reporter's UI reads.
//!
//! Results carry no timestamp: the same workloads give the same objects, so a writer
//! can tell that nothing changed by comparing them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::summary::{Counts, Summary};
use super::{Rule, RuleResult, WorkloadReport};
use dhi_policy::MAX_LISTED;

/// `apiVersion` of both kinds.
pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
/// `metadata.name` of every report written.
pub const REPORT_NAME: &str = "dhi-admission";
/// `results[].policy` and `results[].source`.
pub const POLICY: &str = "dhi-admission";

/// A PolicyReport or a ClusterPolicyReport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// [`API_VERSION`]
    pub api_version: &'static str,
    /// `PolicyReport` or `ClusterPolicyReport`.
    pub kind: &'static str,
    /// Name, namespace (PolicyReport only) and labels.
    pub metadata: Metadata,
    /// The results counted by outcome.
    pub summary: ResultCounts,
    /// One per workload and rule (per namespace in the ClusterPolicyReport).
    pub results: Vec<ReportResult>,
}

/// The report's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// [`REPORT_NAME`]
    pub name: String,
    /// The namespace reported on; absent for the ClusterPolicyReport.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `app.kubernetes.io/managed-by: dhi-admission`.
    pub labels: BTreeMap<String, String>,
}

/// `summary`: results by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResultCounts {
    /// pass
    pub pass: usize,
    /// fail
    pub fail: usize,
    /// warn
    pub warn: usize,
    /// error (never written: a workload that cannot be read is not reported)
    pub error: usize,
    /// skip
    pub skip: usize,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    /// [`POLICY`]
    pub source: &'static str,
    /// [`POLICY`]
    pub policy: &'static str,
    /// The rule.
    pub rule: &'static str,
    /// pass, fail, warn or skip.
    pub result: RuleResult,
    /// What was found.
    pub message: String,
    /// Whether the result counts towards a score.
    pub scored: bool,
    /// The workload (or namespace) the result is about.
    pub resources: Vec<ResourceRef>,
    /// The fix, the hardened equivalents, the mode and the verdict.
    pub properties: BTreeMap<String, String>,
}

/// An object a result is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (not for namespaces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its uid, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_owned(),
        "dhi-admission".to_owned(),
    )])
}

impl ResultCounts {
    fn count(&mut self, outcome: RuleResult) {
        match outcome {
            RuleResult::Pass => self.pass += 1,
            RuleResult::Fail => self.fail += 1,
            RuleResult::Warn => self.warn += 1,
            RuleResult::Skip => self.skip += 1,
        }
    }

    fn of(results: &[ReportResult]) -> Self {
        let mut counts = Self::default();
        for result in results {
            counts.count(result.result);
        }
        counts
    }
}

/// One PolicyReport per namespace that has workloads, sorted by namespace; results in
/// the order of the reports, then of [`Rule::ALL`].
pub fn namespace_reports<'r>(
    reports: impl IntoIterator<Item = &'r WorkloadReport>,
) -> Vec<PolicyReport> {
    let mut by_namespace: BTreeMap<&str, Vec<ReportResult>> = BTreeMap::new();
    for report in reports {
        by_namespace
            .entry(&report.namespace)
            .or_default()
            .extend(results(report));
    }
    by_namespace
        .into_iter()
        .map(|(namespace, results)| PolicyReport {
            api_version: API_VERSION,
            kind: "PolicyReport",
            metadata: Metadata {
                name: REPORT_NAME.to_owned(),
                namespace: Some(namespace.to_owned()),
                labels: labels(),
            },
            summary: ResultCounts::of(&results),
            results,
        })
        .collect()
}

/// A workload's results, one per rule.
pub fn results(report: &WorkloadReport) -> Vec<ReportResult> {
    let resource = ResourceRef {
        api_version: api_version(report.kind.group()),
        kind: report.kind.as_str().to_owned(),
        name: report.name.clone(),
        namespace: Some(report.namespace.clone()),
        uid: report.uid.clone(),
    };
    Rule::ALL
        .iter()
        .map(|&rule| {
            let outcome = report.rules.get(&rule).copied().unwrap_or(RuleResult::Skip);
            let mut properties = BTreeMap::from([
                ("mode".to_owned(), report.mode.as_str().to_owned()),
                ("verdict".to_owned(), report.verdict.as_str().to_owned()),
            ]);
            let message = match rule {
                Rule::HardenedImage => {
                    if !report.images.is_empty() {
                        properties.insert("equivalent".to_owned(), equivalents(report));
                    }
                    hardened_image_message(report, outcome)
                }
                _ => {
                    let matched: Vec<_> = report
                        .violations
                        .iter()
                        .filter(|v| v.rule.as_str() == rule.as_str())
                        .take(MAX_LISTED)
                        .collect();
                    let fixes: Vec<_> = matched.iter().filter_map(|v| v.fix.as_deref()).collect();
                    if !fixes.is_empty() {
                        properties.insert("fix".to_owned(), fixes.join("; "));
                    }
                    if !matched.is_empty() && !report.images.is_empty() {
                        properties.insert("equivalent".to_owned(), equivalents(report));
                    }
                    match (outcome, matched.as_slice()) {
                        (RuleResult::Skip, _) => skipped_message(report),
                        (_, []) => format!("{} {}: no finding", report.kind, report.name),
                        (_, matched) => matched
                            .iter()
                            .map(|v| v.message.as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    }
                }
            };
            ReportResult {
                source: POLICY,
                policy: POLICY,
                rule: rule.as_str(),
                result: outcome,
                message,
                scored: true,
                resources: vec![resource.clone()],
                properties,
            }
        })
        .collect()
}

fn skipped_message(report: &WorkloadReport) -> String {
    match &report.not_reviewed {
        Some(reason) => format!("not reviewed: {reason}"),
        None => "the rule is off in the policy".to_owned(),
    }
}

fn hardened_image_message(report: &WorkloadReport, outcome: RuleResult) -> String {
    if outcome == RuleResult::Skip {
        return skipped_message(report);
    }
    match report.images.len() {
        0 => "every container runs a Docker Hardened Image".to_owned(),
        n => format!(
            "{n} container{} not on Docker Hardened Images",
            if n == 1 { " is" } else { "s are" }
        ),
    }
}

/// `container=equivalent` pairs, at most [`MAX_LISTED`].
fn equivalents(report: &WorkloadReport) -> String {
    let mut pairs: Vec<String> = report
        .images
        .iter()
        .take(MAX_LISTED)
        .map(|i| format!("{}={}", i.container, i.equivalent.describe()))
        .collect();
    if report.images.len() > MAX_LISTED {
        pairs.push(format!("and {} more", report.images.len() - MAX_LISTED));
    }
    pairs.join(", ")
}

fn api_version(group: &str) -> String {
    if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    }
}

/// The ClusterPolicyReport: a result per namespace (rule `ready-to-enforce`: fail when
/// a workload is denied, warn when one needs a fix, skip when none is reviewed), with
/// the namespace's counts in its properties.
pub fn cluster_report(summary: &Summary) -> PolicyReport {
    let results: Vec<ReportResult> = summary
        .namespaces
        .iter()
        .map(|(namespace, counts)| ReportResult {
            source: POLICY,
            policy: POLICY,
            rule: "ready-to-enforce",
            result: namespace_outcome(counts),
            message: namespace_message(counts),
            scored: true,
            resources: vec![ResourceRef {
                api_version: "v1".to_owned(),
                kind: "Namespace".to_owned(),
                name: namespace.clone(),
                namespace: None,
                uid: None,
            }],
            properties: count_properties(counts),
        })
        .collect();
    PolicyReport {
        api_version: API_VERSION,
        kind: "ClusterPolicyReport",
        metadata: Metadata {
            name: REPORT_NAME.to_owned(),
            namespace: None,
            labels: labels(),
        },
        summary: ResultCounts::of(&results),
        results,
    }
}

fn namespace_outcome(counts: &Counts) -> RuleResult {
    if counts.denied > 0 {
        RuleResult::Fail
    } else if counts.needs_fix > 0 {
        RuleResult::Warn
    } else if counts.not_reviewed == counts.workloads {
        RuleResult::Skip
    } else {
        RuleResult::Pass
    }
}

fn namespace_message(counts: &Counts) -> String {
    format!(
        "{} workloads: {} already hardened, {} ready to enforce, {} need a fix, {} denied, {} not reviewed",
        counts.workloads,
        counts.already_hardened,
        counts.ready_to_enforce,
        counts.needs_fix,
        counts.denied,
        counts.not_reviewed
    )
}

fn count_properties(counts: &Counts) -> BTreeMap<String, String> {
    // The same names as `scan --output json`'s summary.
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(counts) else {
        return BTreeMap::new();
    };
    fields
        .into_iter()
        .map(|(key, value)| (key, value.to_string()))
        .collect()
}
