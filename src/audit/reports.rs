//! From the engine's finding on a workload to the audit's compact entry, and from the
//! entries to `wgpolicyk8s.io/v1alpha2` reports.
//!
//! Each workload gets one result per rule in force: `fail` when the rule denies it, `warn`
//! when the rule's action is `warn` and it matched, `pass` otherwise; `skip` for every
//! rule in an exempt namespace, `error` when the object cannot be read. The verdict is
//! enforce's, whatever the mode: the report answers "what would be denied"; the mode in
//! force is a property.

use std::borrow::Cow;
use std::collections::BTreeMap;

use dhi_policy::{Action, Engine, Finding, GroupKind, Mode, Request, RuleId, WorkloadKind};
use json_patch::PatchOperation;
use serde_json::{Map, Value, json};

use super::store::Workload;

/// The `policy` of every result, and the `source` of every report.
pub const POLICY: &str = "dhi-admission";

/// A report keeps at most this many results (a PolicyReport is one etcd object, at most
/// 1.5 MiB); past it, passing results are dropped first. The summary counts them all.
pub const MAX_RESULTS: usize = 2000;

/// A rule's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Denied (enforce) by the rule.
    Fail,
    /// Matched a rule whose action is warn.
    Warn,
    /// The object could not be read.
    Error,
    /// Not judged (exempt namespace).
    Skip,
    /// Judged and clean.
    Pass,
}

impl Outcome {
    /// As the PolicyReport schema spells it; also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Skip => "skip",
            Self::Pass => "pass",
        }
    }
}

/// One rule's result on one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    /// The rule.
    pub rule: RuleId,
    /// Its outcome.
    pub outcome: Outcome,
    /// What is wrong and how to fix it (the engine's messages), or why it passed.
    pub message: Cow<'static, str>,
}

/// What the audit keeps of a workload: its results and the hardened images its patch
/// would switch it to. No object, no spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `metadata.uid`, for Policy Reporter's links to the resource.
    pub uid: Option<Box<str>>,
    /// One per rule in force.
    pub results: Vec<RuleResult>,
    /// `image → hardened image` for every image the mutating webhook would rewrite.
    pub hardened: Vec<(Box<str>, Box<str>)>,
    /// The mode in force (the reports' verdicts are enforce's).
    pub mode: Mode,
    /// The note on the runtime's port start, on privileged-port results.
    pub port_note: Option<Box<str>>,
}

/// How workloads are judged: the mode in force and the port-start note.
#[derive(Debug, Clone, Default)]
pub struct Judging {
    mode: Mode,
    port_note: Option<Box<str>>,
}

impl Judging {
    /// For a mode, with the note privileged-port results carry.
    pub fn new(mode: Mode, port_note: Option<String>) -> Self {
        Self {
            mode,
            port_note: port_note.map(String::into_boxed_str),
        }
    }

    /// Judges one workload, as the webhooks would on its CREATE.
    pub fn judge(
        &self,
        engine: &Engine,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        object: &Value,
    ) -> Entry {
        let mut request = Request::create(GroupKind::from(kind), Some(namespace), object);
        request.name = Some(Cow::Borrowed(name));
        let rules = RuleId::ALL
            .into_iter()
            .filter(|rule| engine.policy_file().action(*rule) != Action::Off);
        let (results, hardened) = match engine.find(Mode::Enforce, request) {
            Ok(finding) => match &finding.not_reviewed {
                Some(why) => (
                    rules
                        .map(|rule| RuleResult {
                            rule,
                            outcome: Outcome::Skip,
                            message: Cow::Owned(format!("not reviewed: {why}")),
                        })
                        .collect(),
                    Vec::new(),
                ),
                None => (
                    rules.map(|rule| rule_result(rule, &finding)).collect(),
                    hardened_images(&finding, object),
                ),
            },
            Err(err) => (
                rules
                    .map(|rule| RuleResult {
                        rule,
                        outcome: Outcome::Error,
                        message: Cow::Owned(bounded(&err.to_string())),
                    })
                    .collect(),
                Vec::new(),
            ),
        };
        Entry {
            uid: uid.map(Into::into),
            results,
            hardened,
            mode: self.mode,
            port_note: self.port_note.clone(),
        }
    }
}

fn rule_result(rule: RuleId, finding: &Finding) -> RuleResult {
    let denied: Vec<&str> = finding
        .violations
        .iter()
        .filter(|v| v.rule == rule)
        .map(|v| v.message.as_str())
        .collect();
    if !denied.is_empty() {
        return RuleResult {
            rule,
            outcome: Outcome::Fail,
            message: Cow::Owned(bounded(&denied.join("; "))),
        };
    }
    // Warn-action matches come back as the warnings `[rule] message`.
    let prefix = format!("[{rule}] ");
    let warned: Vec<&str> = finding
        .warnings
        .iter()
        .filter_map(|w| w.strip_prefix(prefix.as_str()))
        .collect();
    if !warned.is_empty() {
        return RuleResult {
            rule,
            outcome: Outcome::Warn,
            message: Cow::Owned(bounded(&warned.join("; "))),
        };
    }
    RuleResult {
        rule,
        outcome: Outcome::Pass,
        message: Cow::Borrowed(passed(rule)),
    }
}

fn passed(rule: RuleId) -> &'static str {
    match rule {
        RuleId::RunAsRoot => "no hardened container runs as root",
        RuleId::PrivilegedPort => "no hardened nonroot container declares a port it could not bind",
        RuleId::InvalidImage => "every image is a valid reference",
    }
}

/// The image rewrites in a finding's patch: `(image, hardened image)`.
fn hardened_images(finding: &Finding, object: &Value) -> Vec<(Box<str>, Box<str>)> {
    finding
        .patch
        .iter()
        .filter_map(|op| match op {
            PatchOperation::Replace(op) if op.path.as_str().ends_with("/image") => {
                let from = object.pointer(op.path.as_str())?.as_str()?;
                let to = op.value.as_str()?;
                Some((from.into(), to.into()))
            }
            _ => None,
        })
        .collect()
}

/// Messages are the engine's, bounded: a report is one object with many of them.
fn bounded(text: &str) -> String {
    const MAX: usize = 1024;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The results of an entry, for the metrics: `(rule, result)`.
pub fn rule_results(entry: &Entry) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    entry
        .results
        .iter()
        .map(|r| (r.rule.as_str(), r.outcome.as_str()))
}

/// Counts by outcome, as the schema's `summary`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Summary {
    pass: u64,
    fail: u64,
    warn: u64,
    error: u64,
    skip: u64,
}

impl Summary {
    fn add(&mut self, outcome: Outcome) {
        *match outcome {
            Outcome::Pass => &mut self.pass,
            Outcome::Fail => &mut self.fail,
            Outcome::Warn => &mut self.warn,
            Outcome::Error => &mut self.error,
            Outcome::Skip => &mut self.skip,
        } += 1;
    }

    fn worst(&self) -> Outcome {
        [
            (self.fail, Outcome::Fail),
            (self.error, Outcome::Error),
            (self.warn, Outcome::Warn),
            (self.pass, Outcome::Pass),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map_or(Outcome::Skip, |(_, o)| o)
    }

    fn to_json(self) -> Value {
        json!({"pass": self.pass, "fail": self.fail, "warn": self.warn, "error": self.error, "skip": self.skip})
    }
}

fn labels() -> Value {
    json!({
        "app.kubernetes.io/managed-by": "dhi-admission",
        "app.kubernetes.io/part-of": "dhi-admission",
    })
}

/// A namespace's PolicyReport: a result per workload and rule.
pub fn namespace_report<'e>(
    name: &str,
    namespace: &str,
    workloads: impl Iterator<Item = Workload<'e, Entry>>,
) -> Value {
    let mut summary = Summary::default();
    let mut results = Vec::new();
    for (kind, workload, entry) in workloads {
        let mut resource = json!({
            "apiVersion": api_version(kind),
            "kind": kind.as_str(),
            "name": workload,
            "namespace": namespace,
        });
        if let Some(uid) = &entry.uid {
            resource["uid"] = uid.as_ref().into();
        }
        for result in &entry.results {
            summary.add(result.outcome);
            results.push((result.outcome, result_json(result, entry, &resource)));
        }
    }
    if results.len() > MAX_RESULTS {
        // Stable: failing and warning results first, in workload order.
        results.sort_by_key(|(outcome, _)| *outcome == Outcome::Pass);
        results.truncate(MAX_RESULTS);
        tracing::warn!(
            namespace,
            kept = MAX_RESULTS,
            "too many results for one PolicyReport; passing results left out (the summary counts them)"
        );
    }
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": name, "namespace": namespace, "labels": labels()},
        "summary": summary.to_json(),
        "results": results.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
    })
}

fn result_json(result: &RuleResult, entry: &Entry, resource: &Value) -> Value {
    let mut properties = Map::new();
    properties.insert("mode".into(), entry.mode.as_str().into());
    if !entry.hardened.is_empty() {
        let pairs: Vec<String> = entry
            .hardened
            .iter()
            .map(|(from, to)| format!("{from} -> {to}"))
            .collect();
        properties.insert("hardenedEquivalent".into(), pairs.join(", ").into());
    }
    if result.outcome != Outcome::Pass && result.outcome != Outcome::Skip {
        properties.insert("fix".into(), result.message.as_ref().into());
    }
    if let (RuleId::PrivilegedPort, Some(note)) = (result.rule, &entry.port_note) {
        properties.insert("unprivilegedPortStart".into(), note.as_ref().into());
    }
    json!({
        "policy": POLICY,
        "rule": result.rule.as_str(),
        "result": result.outcome.as_str(),
        "severity": severity(result.rule),
        "category": "Docker Hardened Images",
        "source": POLICY,
        "scored": true,
        "message": result.message,
        "resources": [resource],
        "properties": properties,
    })
}

fn severity(rule: RuleId) -> &'static str {
    match rule {
        RuleId::RunAsRoot | RuleId::InvalidImage => "high",
        RuleId::PrivilegedPort => "medium",
    }
}

fn api_version(kind: WorkloadKind) -> &'static str {
    match kind.group() {
        "" => "v1",
        "apps" => "apps/v1",
        _ => "batch/v1",
    }
}

/// The ClusterPolicyReport: one result per namespace, its worst outcome, with the
/// counts; the summary counts every workload's results in the cluster.
pub fn cluster_report<'e>(
    name: &str,
    workloads: impl Iterator<Item = (&'e str, Workload<'e, Entry>)>,
) -> Value {
    let mut total = Summary::default();
    let mut by_namespace: BTreeMap<&str, (Summary, u64)> = BTreeMap::new();
    for (namespace, (_, _, entry)) in workloads {
        let (summary, count) = by_namespace.entry(namespace).or_default();
        *count += 1;
        for result in &entry.results {
            summary.add(result.outcome);
            total.add(result.outcome);
        }
    }
    let mut results: Vec<Value> = by_namespace
        .iter()
        .map(|(namespace, (s, workloads))| {
            json!({
                "policy": POLICY,
                "rule": "namespace",
                "result": s.worst().as_str(),
                "source": POLICY,
                "scored": true,
                "message": format!(
                    "{workloads} workloads: {} fail, {} warn, {} pass, {} error, {} skip",
                    s.fail, s.warn, s.pass, s.error, s.skip
                ),
                "resources": [{"apiVersion": "v1", "kind": "Namespace", "name": namespace}],
                "properties": {
                    "workloads": workloads.to_string(),
                    "fail": s.fail.to_string(),
                    "warn": s.warn.to_string(),
                    "pass": s.pass.to_string(),
                },
            })
        })
        .collect();
    results.truncate(MAX_RESULTS);
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "ClusterPolicyReport",
        "metadata": {"name": name, "labels": labels()},
        "summary": total.to_json(),
        "results": results,
    })
}
