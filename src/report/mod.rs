//! Reports on workloads that already run: what `scan` prints and the background audit
//! writes as PolicyReports.
//!
//! # The API
//!
//! - [`NamespaceMode::resolve`]: a namespace's mode from its `dhi.io/mode` label and the
//!   server-wide mode, as the deploy manifests route requests.
//! - [`judge`]: one workload's [`WorkloadReport`]. The verdict comes from
//!   [`Engine::find`], the entry point `check` uses, asked in enforce mode (the question
//!   is what enforcing would do); the namespace's mode only says whether a violation
//!   is denied today ([`Verdict::Denied`]) or merely needs a fix ([`Verdict::NeedsFix`]).
//!   Each image that is not hardened carries what the catalog offers in its place
//!   ([`Engine::equivalent`]).
//! - [`WorkloadReport::says_more_than`]: whether a pod's report tells something its
//!   owner's template report does not; if not, the pod is counted in its owner's `pods`.
//! - [`Summary::of`]: the counts per namespace, then for the cluster.
//! - [`policyreport::namespace_reports`] and [`policyreport::cluster_report`]: the
//!   `wgpolicyk8s.io/v1alpha2` objects (one PolicyReport per namespace, one result per
//!   workload and rule; a ClusterPolicyReport with a result per namespace).
//! - [`text::write`]: the table `scan --output text` prints.
//!
//! Everything here is pure: no cluster access, no clock.

pub mod policyreport;
pub mod summary;
pub mod text;

use std::collections::BTreeMap;
use std::fmt;

use json_patch::PatchOperation;
use serde::Serialize;

use dhi_policy::{
    Action, Engine, Equivalent, Finding, GroupKind, MAX_LISTED, Mode, ObjectView, PatchedBy,
    Request, RequestError, RuleId, WorkloadKind,
};

/// The namespace label that routes requests to the webhooks (deploy/README.md).
pub const MODE_LABEL: &str = "dhi.io/mode";

/// How the webhooks treat a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceMode {
    /// The webhooks judge it in this mode.
    Judged(Mode),
    /// `dhi.io/mode: off`: the webhooks never see it.
    Off,
}

impl NamespaceMode {
    /// The mode for a namespace's `dhi.io/mode` label: `off` is never called, `audit` and
    /// `warn` are routed to their own webhook entries, which only relax the server's mode
    /// ([`Mode::at_most`]); no label, or any other value, gets the server's mode.
    pub fn resolve(label: Option<&str>, server: Mode) -> Self {
        match label {
            Some("off") => Self::Off,
            Some("audit") => Self::Judged(Mode::Audit.at_most(server)),
            Some("warn") => Self::Judged(Mode::Warn.at_most(server)),
            _ => Self::Judged(server),
        }
    }

    /// `enforce`, `warn`, `audit` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Judged(mode) => mode.as_str(),
            Self::Off => "off",
        }
    }
}

impl Serialize for NamespaceMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a workload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A rule denies it and its namespace enforces: the next pod it creates is refused.
    Denied,
    /// A rule denies it, but its namespace audits or warns: fix it before enforcing.
    NeedsFix,
    /// Enforcing admits it (the webhook's patch, if any, makes it run).
    Ready,
    /// Every image is hardened and nothing needs patching.
    Hardened,
    /// The webhooks do not look at it (an exempt or `dhi.io/mode: off` namespace).
    NotReviewed,
}

impl Verdict {
    /// As in JSON and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::NeedsFix => "needs-fix",
            Self::Ready => "ready",
            Self::Hardened => "hardened",
            Self::NotReviewed => "not-reviewed",
        }
    }
}

/// A rule as reported: the engine's rules, plus whether the images are hardened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// [`RuleId::RunAsRoot`]
    RunAsRoot,
    /// [`RuleId::PrivilegedPort`]
    PrivilegedPort,
    /// [`RuleId::InvalidImage`]
    InvalidImage,
    /// Every container runs a Docker Hardened Image (a warning, never a denial).
    HardenedImage,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Self; 4] = [
        Self::RunAsRoot,
        Self::PrivilegedPort,
        Self::InvalidImage,
        Self::HardenedImage,
    ];

    /// The rule id as in policies and PolicyReports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunAsRoot => RuleId::RunAsRoot.as_str(),
            Self::PrivilegedPort => RuleId::PrivilegedPort.as_str(),
            Self::InvalidImage => RuleId::InvalidImage.as_str(),
            Self::HardenedImage => "hardened-image",
        }
    }

    fn engine_rule(self) -> Option<RuleId> {
        match self {
            Self::RunAsRoot => Some(RuleId::RunAsRoot),
            Self::PrivilegedPort => Some(RuleId::PrivilegedPort),
            Self::InvalidImage => Some(RuleId::InvalidImage),
            Self::HardenedImage => None,
        }
    }
}

/// A rule's result for one workload, in PolicyReport terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleResult {
    /// Nothing found.
    Pass,
    /// A `deny` rule matched.
    Fail,
    /// A `warn` rule matched, or an image is not hardened.
    Warn,
    /// The rule is off, or the workload is not reviewed.
    Skip,
}

impl RuleResult {
    /// As in PolicyReports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Warn => "warn",
            Self::Skip => "skip",
        }
    }
}

/// A denying rule that matched one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViolationReport {
    /// The rule.
    pub rule: RuleId,
    /// The container.
    pub container: String,
    /// The image as it will run (after the webhook's rewrite).
    pub image: String,
    /// What is wrong, and the fix.
    pub message: String,
    /// The fix alone (the message's text after `Fix: `).
    pub fix: Option<String>,
}

impl fmt::Display for ViolationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

/// An image that is not hardened, and what the catalog offers in its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageReport {
    /// The container.
    pub container: String,
    /// The image as written.
    pub image: String,
    /// The hardened equivalent: never `Hardened` or `NotAnImage`, which are not
    /// reported (see [`Equivalent::is_upstream`]).
    #[serde(flatten)]
    pub equivalent: Equivalent,
}

/// A workload's owner, when the workload is a pod reported on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerRef {
    /// Its kind.
    #[serde(serialize_with = "kind_name")]
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
}

/// Everything reported about one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadReport {
    /// `Deployment`, `Pod`, ...
    #[serde(serialize_with = "kind_name")]
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid, when it came from a cluster (for PolicyReport resources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// For a pod that says more than its owner's template: the owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
    /// How the webhooks treat its namespace.
    pub mode: NamespaceMode,
    /// Where it stands.
    pub verdict: Verdict,
    /// Why it is not reviewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_reviewed: Option<String>,
    /// Running pods reported through it (1 for a pod).
    pub pods: usize,
    /// Each rule's result.
    pub rules: BTreeMap<Rule, RuleResult>,
    /// The denying rules that match, with their fixes.
    pub violations: Vec<ViolationReport>,
    /// Everything else worth telling.
    pub warnings: Vec<String>,
    /// The JSON Patch (RFC 6902) the mutating webhook computes for it.
    pub patch: Vec<PatchOperation>,
    /// Who applies the patch: `object`, `pods` (a template's pods) or `none`.
    #[serde(serialize_with = "patched_by_name")]
    pub patched_by: PatchedBy,
    /// The images that are not hardened, with their equivalents.
    pub images: Vec<ImageReport>,
}

fn kind_name<S: serde::Serializer>(kind: &WorkloadKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

fn patched_by_name<S: serde::Serializer>(by: &PatchedBy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(by.as_str())
}

/// One workload to judge.
#[derive(Debug)]
pub struct Workload<'v, 'a> {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: &'v str,
    /// Its name.
    pub name: &'v str,
    /// Its uid, if known.
    pub uid: Option<&'v str>,
    /// How the webhooks treat the namespace.
    pub mode: NamespaceMode,
    /// The object, decoded as the engine reads it.
    pub object: ObjectView<'a>,
}

/// One workload's report, judged by the engine as `check` judges a manifest.
pub fn judge(engine: &Engine, workload: Workload<'_, '_>) -> Result<WorkloadReport, RequestError> {
    let Workload {
        kind,
        namespace,
        name,
        uid,
        mode,
        object,
    } = workload;
    let images = images(engine, kind, &object);
    let mut report = WorkloadReport {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.map(str::to_owned),
        owner: None,
        mode,
        verdict: Verdict::NotReviewed,
        not_reviewed: None,
        pods: usize::from(kind == WorkloadKind::Pod),
        rules: Rule::ALL.iter().map(|r| (*r, RuleResult::Skip)).collect(),
        violations: Vec::new(),
        warnings: Vec::new(),
        patch: Vec::new(),
        patched_by: PatchedBy::None,
        images,
    };
    let NamespaceMode::Judged(mode) = mode else {
        report.not_reviewed = Some(format!(
            "namespace {namespace} is labelled {MODE_LABEL}=off"
        ));
        return Ok(report);
    };
    let request = Request::create(GroupKind::from(kind), Some(namespace), object);
    let finding = engine.find(Mode::Enforce, request)?;
    apply_finding(engine, &mut report, mode, finding);
    Ok(report)
}

fn apply_finding(engine: &Engine, report: &mut WorkloadReport, mode: Mode, finding: Finding) {
    if let Some(reason) = finding.not_reviewed {
        report.not_reviewed = Some(reason);
        return;
    }
    report.violations = finding
        .violations
        .into_iter()
        .map(|v| ViolationReport {
            fix: v.message.split_once("Fix: ").map(|(_, fix)| fix.to_owned()),
            rule: v.rule,
            container: v.container,
            image: v.image,
            message: v.message,
        })
        .collect();
    report.warnings = finding.warnings;
    // `find` names who would apply a patch even when there is none to apply.
    report.patched_by = if finding.patch.is_empty() {
        PatchedBy::None
    } else {
        finding.patched_by
    };
    report.patch = finding.patch;
    for rule in Rule::ALL {
        let outcome = match rule.engine_rule() {
            Some(id) => rule_outcome(engine, report, id),
            None if report.images.is_empty() => RuleResult::Pass,
            None => RuleResult::Warn,
        };
        report.rules.insert(rule, outcome);
    }
    report.verdict = match (report.violations.is_empty(), mode) {
        (false, Mode::Enforce) => Verdict::Denied,
        (false, _) => Verdict::NeedsFix,
        (true, _) if report.images.is_empty() && report.patch.is_empty() => Verdict::Hardened,
        (true, _) => Verdict::Ready,
    };
}

fn rule_outcome(engine: &Engine, report: &WorkloadReport, rule: RuleId) -> RuleResult {
    if engine.policy_file().action(rule) == Action::Off {
        return RuleResult::Skip;
    }
    if report.violations.iter().any(|v| v.rule == rule) {
        return RuleResult::Fail;
    }
    // A `warn` rule's finding is a warning written `[rule] message` (model::Warning::Rule).
    let prefix = format!("[{rule}] ");
    if report.warnings.iter().any(|w| w.starts_with(&prefix)) {
        RuleResult::Warn
    } else {
        RuleResult::Pass
    }
}

/// The containers' images that are not hardened, with their equivalents.
fn images(engine: &Engine, kind: WorkloadKind, object: &ObjectView<'_>) -> Vec<ImageReport> {
    let Some(spec) = kind.pod_spec(object) else {
        return Vec::new();
    };
    let lists = [
        &spec.init_containers,
        &spec.containers,
        &spec.ephemeral_containers,
    ];
    lists
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|c| {
            let image = c.image.as_deref()?;
            let equivalent = Some(engine.equivalent(image)).filter(Equivalent::is_upstream)?;
            Some(ImageReport {
                container: c.name.to_string(),
                image: image.to_owned(),
                equivalent,
            })
        })
        .collect()
}

impl WorkloadReport {
    /// Whether this report (a pod's) tells something that `owner`'s (its top owner's
    /// template) does not: a violation, an image that is not hardened, or a patch of its
    /// own that is not the template's. Less is not more: a pod the webhook already
    /// patched runs hardened images and has no patch left, and is its owner's business.
    pub fn says_more_than(&self, owner: &WorkloadReport) -> bool {
        let new_violation = self.violations.iter().any(|v| {
            !owner
                .violations
                .iter()
                .any(|o| (o.rule, &o.container, &o.image) == (v.rule, &v.container, &v.image))
        });
        let new_image = self.images.iter().any(|i| !owner.images.contains(i));
        new_violation
            || new_image
            || !self.patch.is_empty() && relative_patch(self) != relative_patch(owner)
    }

    /// At most [`MAX_LISTED`] violations' fixes, for one-line summaries.
    pub fn fixes(&self) -> Vec<&str> {
        self.violations
            .iter()
            .filter_map(|v| v.fix.as_deref())
            .take(MAX_LISTED)
            .collect()
    }
}

fn relative_patch(report: &WorkloadReport) -> Vec<serde_json::Value> {
    let prefix: String = report
        .kind
        .spec_path()
        .iter()
        .map(|token| format!("/{token}"))
        .collect();
    report
        .patch
        .iter()
        .filter_map(|op| {
            let mut op = serde_json::to_value(op).ok()?;
            if let Some(path) = op.get_mut("path") {
                let relative = path.as_str()?.strip_prefix(&prefix)?.to_owned();
                *path = serde_json::Value::String(relative);
            }
            Some(op)
        })
        .collect()
}

#[cfg(test)]
mod tests;
