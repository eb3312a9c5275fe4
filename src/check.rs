//! `dhi-admission check`: the webhook's verdicts on manifests, offline.
//!
//! Reads files, directories and standard input (multi-document YAML, JSON, `List`s and
//! AdmissionReviews), routes each object as the admission server does and asks the same
//! [`Engine`] for the verdict, so a manifest that passes here is admitted in the cluster
//! under the same policy and mode. Each object is reported with its violations, its
//! warnings and the patch that makes it run on Docker Hardened Images; `--fix` applies
//! that patch and prints the manifests or writes them to files ([`fix`]). The report is
//! text, JSON or SARIF ([`sarif`]).
//!
//! Exit status: 0 when everything is admitted, 1 when something is denied, 2 for bad
//! input or usage (the error names the file and the document). A path without any
//! Kubernetes object is bad input unless `--allow-empty` says it may be empty.

mod error;
mod fix;
mod input;
mod locate;
mod objects;
mod origin;
mod report;
mod review;
mod sarif;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use clap::ValueEnum;
use serde_json::Value;

use crate::exit::Exit;
use crate::policy_source::PolicyArgs;
use dhi_policy::{Engine, Finding, Mode};
use error::Cause;
use fix::{CheckedFile, Output as FixOutput};
use input::Document;
use objects::{Candidate, Item};
use origin::{Origin, Source};
use report::{Entry, Report};

/// Arguments of `dhi-admission check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Files or directories to check (directories recursively: *.yaml, *.yml, *.json);
    /// `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The policy file, mode and catalog.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
    /// Print the manifests with the planned patches applied, as multi-document YAML
    /// (keys sorted, comments dropped), each document after a `# Source: FILE` line;
    /// the report goes to standard error and the verdicts are those of the patched
    /// objects. AdmissionReview documents are left out (kubectl apply refuses them).
    #[arg(long)]
    pub fix: bool,
    /// With --fix: write one fixed file per input file under DIR, mirroring the input
    /// tree (files with nothing to patch are copied as they are), instead of printing.
    #[arg(long, value_name = "DIR")]
    #[arg(requires = "fix", conflicts_with = "in_place")]
    pub out_dir: Option<PathBuf>,
    /// With --fix: rewrite the input files that have something to patch, in place.
    #[arg(long, requires = "fix")]
    pub in_place: bool,
    /// Text report: only denied objects and warnings, then the summary line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Succeed on input without any Kubernetes object (empty standard input, a directory
    /// without manifests). By default each path must hold one: a pipeline step that
    /// renders nothing usually has a bug, and passing it would hide it.
    #[arg(long)]
    pub allow_empty: bool,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckOutput {
    /// A paragraph per object and a summary line.
    Text,
    /// One JSON document: objects, skipped, errors, summary.
    Json,
    /// SARIF 2.1.0, for code-scanning UIs: each violation and warning on its file's line.
    Sarif,
}

/// Runs the command and returns its exit status.
pub fn run(args: CheckArgs) -> ExitCode {
    match check(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            Exit::Error.into()
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let fix_output = fix_output(args)?;
    let policy = args.policy.load()?;
    let (engine, mode) = (&policy.engine, policy.mode);
    let mut entries = Vec::new();
    let mut files = Vec::new();
    for path in &args.paths {
        let input = input::read_path(path);
        for passed_over in &input.passed_over {
            eprintln!("note: {passed_over}");
        }
        let first = entries.len();
        for file in input.files {
            match file {
                Ok(file) => {
                    files.push(check_file(engine, mode, args.fix, path, file, &mut entries))
                }
                Err(err) => entries.push(Entry::Error(err)),
            }
        }
        if !args.allow_empty && !entries[first..].iter().any(Entry::is_object_or_error) {
            entries.push(Entry::Error(
                Cause::Empty.at(Origin::source(&Source::of_arg(path))),
            ));
        }
    }
    let report = Report {
        mode,
        fixed: args.fix,
        entries,
    };
    for err in report.errors() {
        eprintln!("error: {err}");
    }
    let documents = files.iter().flat_map(|file| &file.documents);
    let locator = locate::Locator::new(documents);
    if let Some(output) = fix_output {
        // Half a manifest set piped into `kubectl apply` is worse than none.
        if report.tally().errors == 0 {
            fix::write(&output, &files)?;
        }
        write_report(&mut io::stderr().lock(), &report, args, &locator)?;
    } else {
        write_stdout(|out| Ok(write_report(out, &report, args, &locator)?))?;
    }
    Ok(report.exit_code())
}

/// Where `--fix` writes, if it is given; refuses what cannot be written back.
fn fix_output(args: &CheckArgs) -> anyhow::Result<Option<FixOutput>> {
    if !args.fix {
        return Ok(None);
    }
    let output = match (&args.out_dir, args.in_place) {
        (Some(dir), _) => FixOutput::OutDir(dir.clone()),
        (None, true) => FixOutput::InPlace,
        (None, false) => return Ok(Some(FixOutput::Stdout)),
    };
    if args.paths.iter().any(|path| path.as_os_str() == "-") {
        return Err(anyhow!(
            "--out-dir and --in-place write files: standard input (-) has none to write; \
             use --fix alone to print the fixed manifests"
        ));
    }
    Ok(Some(output))
}

/// Checks the documents of one file, adding their entries; with `fix` they are patched.
fn check_file(
    engine: &Engine,
    mode: Mode,
    fix: bool,
    root: &Path,
    file: input::SourceFile,
    entries: &mut Vec<Entry>,
) -> CheckedFile {
    let mut documents = Vec::new();
    let mut patched = false;
    for document in file.documents {
        match document {
            Ok(mut document) => {
                for entry in check_document(engine, mode, fix, &mut document) {
                    patched |= fix
                        && matches!(&entry, Entry::Checked { finding, .. } if !finding.patch.is_empty());
                    entries.push(entry);
                }
                documents.push(document);
            }
            Err(err) => entries.push(Entry::Error(err)),
        }
    }
    CheckedFile {
        root: root.to_owned(),
        source: file.source,
        format: file.format,
        text: file.text,
        documents,
        patched,
    }
}

/// The policy file, or the built-in policy, with the mode as the server resolves it.
/// The entries for one document; with `fix`, the document is patched in place.
fn check_document(engine: &Engine, mode: Mode, fix: bool, document: &mut Document) -> Vec<Entry> {
    let items = match objects::items(document) {
        Ok(items) => items,
        Err(err) => return vec![Entry::Error(err)],
    };
    items
        .into_iter()
        .map(|item| match item {
            Item::Skipped(skipped) => Entry::Skipped(skipped),
            Item::Candidate(candidate) => {
                check_candidate(engine, mode, fix, candidate, &mut document.value)
            }
        })
        .collect()
}

fn check_candidate(
    engine: &Engine,
    mode: Mode,
    fix: bool,
    candidate: Candidate,
    document: &mut Value,
) -> Entry {
    let finding = review::review(engine, mode, &candidate, document).and_then(|finding| {
        if fix && !finding.patch.is_empty() {
            apply_patch(engine, mode, &candidate, document, finding)
        } else {
            Ok(finding)
        }
    });
    match finding {
        Ok(finding) => Entry::Checked { candidate, finding },
        Err(cause) => Entry::Error(cause.at(candidate.origin)),
    }
}

/// Applies the planned patch, then judges the result as the `--fix` output will be
/// judged; the finding keeps the patch that was applied.
fn apply_patch(
    engine: &Engine,
    mode: Mode,
    candidate: &Candidate,
    document: &mut Value,
    planned: Finding,
) -> Result<Finding, Cause> {
    // `review` read the object at this pointer, so it is there.
    if let Some(object) = document.pointer_mut(candidate.origin.pointer.as_str()) {
        json_patch::patch(object, &planned.patch).map_err(Cause::Patch)?;
    }
    let fixed = review::review(engine, mode, candidate, document)?;
    Ok(Finding {
        patch: planned.patch,
        ..fixed
    })
}

fn write_report(
    out: &mut impl Write,
    report: &Report,
    args: &CheckArgs,
    locator: &locate::Locator<'_>,
) -> io::Result<()> {
    match args.output {
        CheckOutput::Text => report.write_text(out, args.quiet),
        CheckOutput::Json => report.write_json(out),
        CheckOutput::Sarif => sarif::write(out, report, locator),
    }
}

fn write_stdout(
    write: impl FnOnce(&mut io::BufWriter<io::StdoutLock<'static>>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    write(&mut out)?;
    out.flush()
        .map_err(|err| anyhow!("cannot write to standard output: {err}"))
}
