//! `dhi-admission check`: the webhook's verdicts on manifests, offline.
//!
//! Reads files, directories and standard input (multi-document YAML, JSON, `List`s and
//! AdmissionReviews), routes each object as the admission server does and asks the same
//! [`Engine`] for the verdict, so a manifest that passes here is admitted in the cluster
//! under the same policy and mode. Each object is reported with its violations, its
//! warnings and the patch that makes it run on Docker Hardened Images; `--fix` applies
//! that patch and prints the manifests.
//!
//! Exit status: 0 when everything is admitted, 1 when something is denied, 2 for bad
//! input or usage (the error names the file and the document).

mod input;
mod objects;
mod report;
mod review;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use clap::ValueEnum;
use serde_json::Value;

use crate::config::ActivePolicy;
use dhi_policy::{Engine, Finding, Mode};
use input::{Cause, Document};
use objects::{Candidate, Item};
use report::{Entry, Report};

/// Arguments of `dhi-admission check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Files or directories to check (directories recursively: *.yaml, *.yml, *.json);
    /// `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Policy file, as given to the webhook; the built-in policy without one.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Judge as the webhook in this mode [default: the policy file's mode, else enforce].
    #[arg(long, value_name = "enforce|warn|audit")]
    pub mode: Option<Mode>,
    /// A catalog file in the format of the DHI catalog export (`images.json`), in place
    /// of the compiled-in snapshot.
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print the manifests with the planned patches applied, as multi-document YAML
    /// (keys sorted, comments dropped); the report goes to standard error and the
    /// verdicts are those of the patched objects.
    #[arg(long)]
    pub fix: bool,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A paragraph per object and a summary line.
    Text,
    /// One JSON document: objects, skipped, errors, summary.
    Json,
}

/// Runs the command and returns its exit status.
pub fn run(args: CheckArgs) -> ExitCode {
    match check(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(report::EXIT_BAD_INPUT)
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let snapshot = args
        .catalog
        .as_deref()
        .map(crate::catalog::load_snapshot)
        .transpose()?;
    let policy =
        crate::catalog::with_snapshot(load_policy(args.config.as_deref(), args.mode)?, snapshot);
    let (engine, mode) = (&policy.engine, policy.mode);
    let mut entries = Vec::new();
    let mut documents = Vec::new();
    for document in input::read_paths(&args.paths) {
        match document {
            Ok(mut document) => {
                entries.extend(check_document(engine, mode, args.fix, &mut document));
                documents.push(document);
            }
            Err(err) => entries.push(Entry::Error(err)),
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
    if args.fix {
        // Half a manifest set piped into `kubectl apply` is worse than none.
        if report.summary().errors == 0 {
            write_stdout(|out| write_yaml_stream(out, &documents))?;
        }
        write_report(&mut io::stderr().lock(), &report, args.output)?;
    } else {
        write_stdout(|out| Ok(write_report(out, &report, args.output)?))?;
    }
    Ok(report.exit_code())
}

/// The policy file, or the built-in policy, with the mode as the server resolves it.
fn load_policy(path: Option<&Path>, mode: Option<Mode>) -> anyhow::Result<ActivePolicy> {
    Ok(match path {
        Some(path) => ActivePolicy::load(path, mode)?.0,
        None => ActivePolicy::new(Default::default(), mode),
    })
}

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

fn write_report(out: &mut impl Write, report: &Report, format: OutputFormat) -> io::Result<()> {
    match format {
        OutputFormat::Text => report.write_text(out),
        OutputFormat::Json => report.write_json(out),
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

/// The documents as one YAML stream, each after a `---` line. Keys come out sorted
/// and comments are not kept: the documents went through `serde_json::Value`.
fn write_yaml_stream(out: &mut impl Write, documents: &[Document]) -> anyhow::Result<()> {
    for document in documents {
        let yaml = serde_saphyr::to_string(&document.value)
            .map_err(|err| anyhow!("{}: cannot write as YAML: {err}", document.origin))?;
        writeln!(out, "---")?;
        out.write_all(yaml.as_bytes())?;
        if !yaml.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(())
}
