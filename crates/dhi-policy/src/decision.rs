//! Decisions (one webhook's answer) and findings (`check`'s answer to both webhooks).

use std::collections::BTreeMap;

use json_patch::PatchOperation;

use crate::model::{Mode, MutationKind, SkipReason, Violation, Warning};
use crate::rules::Evaluation;
use crate::workload::WorkloadKind;

/// kube-apiserver truncates longer warnings; the admission layer shortens them itself,
/// on a char boundary, marking the cut.
pub const MAX_WARNING_LEN: usize = 255;

/// Findings listed one by one in a denial, in warnings and in audit annotations; the
/// rest are counted. Bounds the answer to a hostile object with thousands of containers.
pub const MAX_LISTED: usize = 20;

/// The engine's answer for one object and one webhook.
#[derive(Debug, Default)]
pub struct Decision {
    /// Admit the object.
    pub allowed: bool,
    /// Operations to apply (empty in audit mode and for unmutated kinds).
    pub patch: Vec<PatchOperation>,
    /// What the patch changes.
    pub mutations: Vec<MutationKind>,
    /// Every `deny` rule that matched (reported as warnings in audit mode).
    pub violations: Vec<Violation>,
    /// Why rewrites were skipped, for metrics.
    pub skipped: Vec<SkipReason>,
    /// Messages for the client (the admission layer shortens them for kube-apiserver).
    pub warnings: Vec<String>,
    /// Audit-log annotations (audit mode).
    pub audit_annotations: BTreeMap<String, String>,
}

impl Decision {
    /// The mutating webhook's answer; `mutates` says whether it patches this kind.
    pub(crate) fn for_mutate(eval: Evaluation, mode: Mode, mutates: bool) -> Self {
        let mut decision = Self {
            allowed: true,
            ..Self::default()
        };
        for w in &eval.warnings {
            if let Warning::RewriteSkipped { reason, .. } = w {
                decision.skipped.push(*reason);
                decision.warnings.push(w.to_string());
            }
        }
        if !mutates || eval.patch.is_empty() {
            return decision;
        }
        match mode {
            Mode::Enforce | Mode::Warn => {
                decision.patch = eval.patch;
                decision.mutations = eval.mutations;
            }
            Mode::Audit => {
                let planned = summarize(&eval.mutations);
                decision.warnings.push(format!(
                    "audit: dhi-admission would patch this object: {planned}"
                ));
                decision
                    .audit_annotations
                    .insert("planned-mutations".to_owned(), planned);
            }
        }
        decision
    }

    /// The validating webhook's answer.
    pub(crate) fn for_validate(eval: Evaluation, mode: Mode) -> Self {
        let mut decision = Self {
            allowed: mode != Mode::Enforce || eval.violations.is_empty(),
            ..Self::default()
        };
        if mode != Mode::Enforce {
            // Warn: the violations as warnings (prefixed `warn:`); audit also records them
            // as audit annotations.
            let prefix = mode.as_str();
            for v in eval.violations.iter().take(MAX_LISTED) {
                decision.warnings.push(format!("{prefix}: {v}"));
                if mode == Mode::Warn {
                    continue;
                }
                let key = format!("violation.{}", v.rule);
                let entry = decision.audit_annotations.entry(key).or_default();
                if !entry.is_empty() {
                    entry.push_str("; ");
                }
                entry.push_str(&format!("{} ({})", v.container, v.image));
            }
            if eval.violations.len() > MAX_LISTED {
                let more = eval.violations.len() - MAX_LISTED;
                decision
                    .warnings
                    .push(format!("{prefix}: and {more} more violations"));
            }
        }
        for w in &eval.warnings {
            if !matches!(w, Warning::RewriteSkipped { .. }) {
                decision.warnings.push(w.to_string());
            }
        }
        decision.violations = eval.violations;
        decision
    }

    /// Admit without patch or findings.
    pub fn allowed_untouched() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    /// The `status.message` of a denial: every violation with its fix.
    pub fn denial_message(&self, kind: WorkloadKind, name: &str) -> String {
        let n = self.violations.len();
        let mut msg = format!(
            "{kind} {name} cannot run on Docker Hardened Images ({n} violation{}):",
            if n == 1 { "" } else { "s" }
        );
        for v in self.violations.iter().take(MAX_LISTED) {
            msg.push_str("\n- ");
            msg.push_str(&v.to_string());
        }
        if n > MAX_LISTED {
            msg.push_str(&format!("\n- and {} more", n - MAX_LISTED));
        }
        msg
    }
}

/// Who applies a planned patch, if the webhook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchedBy {
    /// The mutating webhook patches this object (in enforce mode).
    Object,
    /// The object is a template: the webhook patches the pods created from it.
    Pods,
    /// The webhook does not patch this request (a pod UPDATE, `kubectl debug`).
    None,
}

impl PatchedBy {
    /// The name used in JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Pods => "pods",
            Self::None => "none",
        }
    }
}

/// What `check` reports about one object: both webhooks' answers, and the whole patch
/// whoever applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The webhooks admit the object.
    pub allowed: bool,
    /// Why they do not (in audit mode these are warnings instead).
    pub violations: Vec<Violation>,
    /// The warnings of both webhooks, each once.
    pub warnings: Vec<String>,
    /// The operations that make the object run on hardened images, whoever applies them.
    pub patch: Vec<PatchOperation>,
    /// Who applies the patch.
    pub patched_by: PatchedBy,
    /// Why the webhooks let the object through without looking at it.
    pub not_reviewed: Option<String>,
}

impl Finding {
    /// An object the webhooks do not look at.
    pub(crate) fn not_reviewed(reason: String) -> Self {
        Self {
            allowed: true,
            violations: Vec::new(),
            warnings: Vec::new(),
            patch: Vec::new(),
            patched_by: PatchedBy::None,
            not_reviewed: Some(reason),
        }
    }
}

/// Both webhooks' warnings in order, each once.
pub(crate) fn merge_warnings(first: Vec<String>, second: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(first.len() + second.len());
    for warning in first.into_iter().chain(second) {
        if !out.contains(&warning) {
            out.push(warning);
        }
    }
    out
}

/// `image_rewrite x2, run_as_user x2`
fn summarize(mutations: &[MutationKind]) -> String {
    MutationKind::ALL
        .iter()
        .filter_map(|kind| {
            let n = mutations.iter().filter(|m| *m == kind).count();
            (n > 0).then(|| format!("{} x{n}", kind.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cuts a warning to [`MAX_WARNING_LEN`] bytes on a char boundary, marking the cut.
pub fn shorten(mut s: String) -> String {
    if s.len() > MAX_WARNING_LEN {
        let mut end = MAX_WARNING_LEN - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_merged_once_in_order() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            merge_warnings(s(&["a", "b"]), s(&["b", "c", "a"])),
            s(&["a", "b", "c"])
        );
    }
}
