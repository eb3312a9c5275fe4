//! The outcome of a check, as text for people or as one JSON document for tools.

use std::io::{self, Write};
use std::process::ExitCode;

use json_patch::PatchOperation;
use serde::Serialize;

use super::error::InputError;
use super::objects::{Candidate, Skipped};
use super::origin::Origin;
use crate::exit::Exit;
use dhi_policy::{Finding, Mode, PatchedBy, Violation};

/// One line of the report, in input order.
#[derive(Debug)]
pub(super) enum Entry {
    /// An object the webhook reviews, and its verdict.
    Checked {
        /// The object.
        candidate: Candidate,
        /// The verdict and the patch.
        finding: Finding,
    },
    /// Something the webhook does not review.
    Skipped(Skipped),
    /// Input that could not be checked.
    Error(InputError),
}

impl Entry {
    /// A Kubernetes object was found (judged or skipped), or input that could not be
    /// read: anything but documents that are not objects at all.
    pub(super) fn is_object_or_error(&self) -> bool {
        match self {
            Self::Checked { .. } | Self::Error(_) => true,
            Self::Skipped(skipped) => skipped.kind.is_some(),
        }
    }
}

/// Everything a check found.
#[derive(Debug)]
pub(super) struct Report {
    /// The mode the verdicts were given in.
    pub mode: Mode,
    /// The patches were applied (`--fix`) and the verdicts are on the result.
    pub fixed: bool,
    /// What was found, in input order.
    pub entries: Vec<Entry>,
}

/// The counts at the end of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(super) struct Tally {
    /// Objects reviewed.
    pub objects: usize,
    /// Of which admitted.
    pub admitted: usize,
    /// Of which denied.
    pub denied: usize,
    /// Documents and objects not reviewed.
    pub skipped: usize,
    /// Inputs that could not be checked.
    pub errors: usize,
}

impl Report {
    /// Counts the entries.
    pub(super) fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for entry in &self.entries {
            match entry {
                Entry::Checked { finding, .. } => {
                    tally.objects += 1;
                    if finding.allowed {
                        tally.admitted += 1;
                    } else {
                        tally.denied += 1;
                    }
                }
                Entry::Skipped(_) => tally.skipped += 1,
                Entry::Error(_) => tally.errors += 1,
            }
        }
        tally
    }

    /// The input errors.
    pub(super) fn errors(&self) -> impl Iterator<Item = &InputError> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Error(err) => Some(err),
            _ => None,
        })
    }

    /// 2 for bad input, else 1 if anything is denied, else 0.
    pub(super) fn exit_code(&self) -> ExitCode {
        let tally = self.tally();
        Exit::of(tally.errors, tally.denied).into()
    }

    /// One paragraph per object, a line per skipped document, then the summary.
    /// Input errors are not repeated here: they go to standard error as they are.
    /// `quiet` keeps only what needs attention: denied objects with their violations,
    /// and warnings; then the summary.
    pub(super) fn write_text(&self, out: &mut impl Write, quiet: bool) -> io::Result<()> {
        for entry in &self.entries {
            match entry {
                Entry::Checked { candidate, finding } if quiet => {
                    if !finding.allowed || !finding.warnings.is_empty() {
                        write_heading(out, candidate, finding)?;
                        write_findings(out, finding)?;
                    }
                }
                Entry::Checked { candidate, finding } => {
                    write_heading(out, candidate, finding)?;
                    if let Some(reason) = &finding.not_reviewed {
                        writeln!(out, "  not reviewed: {reason}")?;
                    }
                    write_findings(out, finding)?;
                    self.write_patch(out, finding)?;
                }
                Entry::Skipped(_) if quiet => {}
                Entry::Skipped(skipped) => write_skipped(out, skipped)?,
                Entry::Error(_) => {}
            }
        }
        writeln!(out, "{}", summary_line(&self.tally()))
    }

    fn write_patch(&self, out: &mut impl Write, finding: &Finding) -> io::Result<()> {
        if !finding.patch.is_empty() {
            writeln!(out, "  {}", self.patch_heading(finding.patched_by))?;
            for op in &finding.patch {
                writeln!(out, "    {}", describe(op))?;
            }
        }
        Ok(())
    }

    fn patch_heading(&self, target: PatchedBy) -> String {
        let who = match target {
            PatchedBy::Object => "applied to this object by the webhook",
            PatchedBy::Pods => "applied by the webhook when the pods are created",
            PatchedBy::None => "not applied by the webhook to this request",
        };
        let audit = if self.mode == Mode::Audit && target != PatchedBy::None {
            " in enforce mode; audit mode only reports it"
        } else {
            ""
        };
        let fixed = if self.fixed { ", and by --fix" } else { "" };
        format!("patch ({who}{audit}{fixed}):")
    }

    /// The whole report as one JSON document.
    pub(super) fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        let mut report = JsonReport {
            mode: self.mode.as_str(),
            fixed: self.fixed,
            objects: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
            summary: self.tally(),
        };
        for entry in &self.entries {
            match entry {
                Entry::Checked { candidate, finding } => {
                    report.objects.push(JsonObject::new(candidate, finding))
                }
                Entry::Skipped(skipped) => report.skipped.push(JsonSkipped::new(skipped)),
                Entry::Error(err) => report.errors.push(JsonError::new(err)),
            }
        }
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)
    }
}

/// `DENIED  Deployment shop/web (file, document 1)`
fn write_heading(out: &mut impl Write, target: &Candidate, finding: &Finding) -> io::Result<()> {
    let verdict = if finding.allowed {
        "ADMITTED"
    } else {
        "DENIED"
    };
    let name = display_name(target.namespace.as_deref(), target.name.as_deref());
    writeln!(
        out,
        "{verdict:<7} {} {name} ({})",
        target.kind, target.origin
    )
}

/// The violations and the warnings, a line each.
fn write_findings(out: &mut impl Write, finding: &Finding) -> io::Result<()> {
    for violation in &finding.violations {
        writeln!(out, "  {violation}")?;
    }
    for warning in &finding.warnings {
        writeln!(out, "  warning: {warning}")?;
    }
    Ok(())
}

/// `SKIPPED Service shop/web (file, document 1): no pod spec`
fn write_skipped(out: &mut impl Write, skipped: &Skipped) -> io::Result<()> {
    let kind = skipped.kind.as_deref().unwrap_or("document");
    let name = match skipped.name {
        Some(_) => format!(
            " {}",
            display_name(skipped.namespace.as_deref(), skipped.name.as_deref())
        ),
        None => String::new(),
    };
    writeln!(
        out,
        "SKIPPED {kind}{name} ({}): {}",
        skipped.origin, skipped.reason
    )
}

/// `3 objects: 2 admitted, 1 denied, 4 skipped`, and errors if any.
fn summary_line(s: &Tally) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut line = format!(
        "{}: {} admitted, {} denied, {} skipped",
        plural(s.objects, "object"),
        s.admitted,
        s.denied,
        s.skipped
    );
    if s.errors > 0 {
        line.push_str(&format!(", {}", plural(s.errors, "error")));
    }
    line
}

fn display_name(namespace: Option<&str>, name: Option<&str>) -> String {
    let name = name.unwrap_or("(unnamed)");
    match namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    }
}

/// `op path value`, the value as compact JSON.
fn describe(op: &PatchOperation) -> String {
    match op {
        PatchOperation::Add(o) => format!("add {} {}", o.path, o.value),
        PatchOperation::Replace(o) => format!("replace {} {}", o.path, o.value),
        PatchOperation::Test(o) => format!("test {} {}", o.path, o.value),
        PatchOperation::Remove(o) => format!("remove {}", o.path),
        PatchOperation::Move(o) => format!("move {} {}", o.from, o.path),
        PatchOperation::Copy(o) => format!("copy {} {}", o.from, o.path),
    }
}

#[derive(Serialize)]
struct JsonReport<'r> {
    mode: &'static str,
    fixed: bool,
    objects: Vec<JsonObject<'r>>,
    skipped: Vec<JsonSkipped<'r>>,
    errors: Vec<JsonError<'r>>,
    summary: Tally,
}

/// Where, in the JSON report: source, document and the pointer inside the document.
#[derive(Serialize)]
struct JsonOrigin<'r> {
    source: String,
    document: Option<usize>,
    path: &'r str,
}

impl<'r> JsonOrigin<'r> {
    fn new(origin: &'r Origin) -> Self {
        Self {
            source: origin.source.to_string(),
            document: origin.document,
            path: origin.pointer.as_str(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonObject<'r> {
    #[serde(flatten)]
    origin: JsonOrigin<'r>,
    kind: &'static str,
    namespace: Option<&'r str>,
    name: Option<&'r str>,
    allowed: bool,
    violations: &'r [Violation],
    warnings: &'r [String],
    patch: &'r [PatchOperation],
    patch_target: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_reviewed: Option<&'r str>,
}

impl<'r> JsonObject<'r> {
    fn new(target: &'r Candidate, finding: &'r Finding) -> Self {
        Self {
            origin: JsonOrigin::new(&target.origin),
            kind: target.kind.as_str(),
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
            allowed: finding.allowed,
            violations: &finding.violations,
            warnings: &finding.warnings,
            patch: &finding.patch,
            patch_target: finding.patched_by.as_str(),
            not_reviewed: finding.not_reviewed.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct JsonSkipped<'r> {
    #[serde(flatten)]
    origin: JsonOrigin<'r>,
    kind: Option<&'r str>,
    namespace: Option<&'r str>,
    name: Option<&'r str>,
    reason: &'r str,
}

impl<'r> JsonSkipped<'r> {
    fn new(skipped: &'r Skipped) -> Self {
        Self {
            origin: JsonOrigin::new(&skipped.origin),
            kind: skipped.kind.as_deref(),
            namespace: skipped.namespace.as_deref(),
            name: skipped.name.as_deref(),
            reason: &skipped.reason,
        }
    }
}

#[derive(Serialize)]
struct JsonError<'r> {
    #[serde(flatten)]
    origin: JsonOrigin<'r>,
    message: String,
}

impl<'r> JsonError<'r> {
    fn new(err: &'r InputError) -> Self {
        Self {
            origin: JsonOrigin::new(&err.origin),
            message: err.cause.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_count_what_was_found() {
        let s = Tally {
            objects: 3,
            admitted: 2,
            denied: 1,
            skipped: 4,
            errors: 0,
        };
        assert_eq!(
            summary_line(&s),
            "3 objects: 2 admitted, 1 denied, 4 skipped"
        );
        let s = Tally {
            objects: 1,
            admitted: 1,
            errors: 1,
            ..Tally::default()
        };
        assert_eq!(
            summary_line(&s),
            "1 object: 1 admitted, 0 denied, 0 skipped, 1 error"
        );
    }

    #[test]
    fn names_show_their_namespace() {
        assert_eq!(display_name(Some("shop"), Some("web")), "shop/web");
        assert_eq!(display_name(None, Some("web")), "web");
        assert_eq!(display_name(None, None), "(unnamed)");
    }
}
