//! Decisions (one webhook's answer) and findings (`check`'s answer to both webhooks).

use std::collections::BTreeMap;

use json_patch::PatchOperation;

use crate::model::{Mode, MutationKind, SkipReason, Violation, Warning};
use crate::rules::Evaluation;
use crate::workload::WorkloadKind;

/// kube-apiserver's warning recorder (k8s.io/apiserver) cuts each warning to this many
/// characters, but only once the warnings of one response pass [`WARNINGS_TOTAL`].
pub const WARNING_CUT: usize = 256;

/// The characters of warnings one response carries whole; past it kube-apiserver cuts each
/// warning to [`WARNING_CUT`] and drops those that start beyond it.
pub const WARNINGS_TOTAL: usize = 4096;

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
    /// Messages for the client, whole ([`as_api_server_sends`] shapes them for the wire).
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
                decision.warnings.push(format!("{prefix}: {}", headline(v)));
                if mode == Mode::Warn {
                    continue;
                }
                let listed = format!("{} ({})", v.container, v.image);
                append(
                    &mut decision.audit_annotations,
                    format!("violation.{}", v.rule),
                    "; ",
                    &listed,
                );
                // The whole finding, fix included: the audit log is where an audited
                // cluster's findings are read later, and a warning may have been cut.
                append(
                    &mut decision.audit_annotations,
                    format!("finding.{}", v.rule),
                    "\n",
                    &v.message,
                );
            }
            if eval.violations.len() > MAX_LISTED {
                let more = eval.violations.len() - MAX_LISTED;
                decision
                    .warnings
                    .push(format!("{prefix}: and {more} more violations"));
            }
        }
        for w in &eval.warnings {
            match w {
                Warning::RewriteSkipped { .. } => {}
                Warning::Rule(v) => decision.warnings.push(headline(v)),
                w => decision.warnings.push(w.to_string()),
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

/// A finding as a warning: the rule, the container and the fix first, where they fit in
/// kube-apiserver's cut to [`WARNING_CUT`] characters, and what was found after them.
/// A message is written `container "NAME" (IMAGE) WHAT. Fix: FIX`; the full message
/// stays in the violation, for denials, `check` and the audit annotations.
pub(crate) fn headline(v: &Violation) -> String {
    // The last one: the fix is the engine's own text, while the part before it quotes
    // what the object says (an invalid image may contain anything).
    let Some((what, fix)) = v.message.rsplit_once(". Fix: ") else {
        return format!("[{}] {}", v.rule, v.message);
    };
    let named = format!("container {:?}", v.container);
    let what = what.strip_prefix(&named).unwrap_or(what);
    let what = what.trim_start_matches(':').trim_start();
    let image = format!("({}) ", v.image);
    let why = match what.strip_prefix(&image) {
        Some(rest) => format!("{} {rest}", v.image),
        None => what.to_owned(),
    };
    format!("[{}] {named}: Fix: {fix}. Why: {why}", v.rule)
}

fn append(map: &mut BTreeMap<String, String>, key: String, separator: &str, value: &str) {
    let entry = map.entry(key).or_default();
    if !entry.is_empty() {
        entry.push_str(separator);
    }
    entry.push_str(value);
}

/// The warnings of one answer as kube-apiserver passes them on: at most [`MAX_LISTED`]
/// and a count of the rest, in ASCII (clients that need ASCII header values drop any
/// other warning), and cut the way the API server's warning recorder cuts them, so that
/// what the webhook sends is exactly what the client gets.
pub fn as_api_server_sends(warnings: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in warnings.iter().take(MAX_LISTED) {
        let w = ascii(w);
        // The recorder sends each text once.
        if !w.is_empty() && !out.contains(&w) {
            out.push(w);
        }
    }
    if warnings.len() > MAX_LISTED {
        out.push(format!("and {} more warnings", warnings.len() - MAX_LISTED));
    }
    if out.iter().map(String::len).sum::<usize>() <= WARNINGS_TOTAL {
        return out;
    }
    // Past the total, the recorder cuts every warning and adds more only while what it
    // has written stays below the total.
    let mut written = 0;
    let mut cut = Vec::with_capacity(out.len());
    for mut w in out {
        if written >= WARNINGS_TOTAL {
            break;
        }
        w.truncate(WARNING_CUT);
        written += w.len();
        cut.push(w);
    }
    cut
}

/// Non-ASCII characters written as Rust escapes (`\u{e9}`); ASCII is kept as is, so one
/// byte is one character from here on.
fn ascii(s: &str) -> String {
    if s.is_ascii() {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
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
