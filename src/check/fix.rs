//! Where `--fix` puts the patched manifests, file by file.
//!
//! - Standard output (the default): one YAML stream for `kubectl apply -f -`, each
//!   document after a `# Source: FILE` comment, as `helm template` marks its output.
//! - `--out-dir DIR`: one file per input file under DIR, mirroring the input tree (a
//!   directory argument's files keep their path below it; a file argument goes to the
//!   top), as `helm template --output-dir` keeps each template's path.
//!   Files with nothing to patch are copied byte for byte.
//! - `--in-place`: the files with something to patch are rewritten, as linters with a
//!   fix mode do (`eslint --fix`, `polaris fix`); the others are left untouched.
//!
//! A patched file is written from its parsed documents: YAML with keys sorted and
//! comments dropped, JSON pretty-printed. AdmissionReview documents are never written:
//! they are captures of requests, which `kubectl apply` refuses; a file holding one is
//! left out of `--out-dir` and `--in-place`, with a note naming it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};

use super::input::{Document, Format};
use super::objects::holds_review;
use super::origin::Source;

/// Where the fixed manifests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Output {
    /// One stream on standard output.
    Stdout,
    /// A file per input file under this directory.
    OutDir(PathBuf),
    /// Back into the input files.
    InPlace,
}

/// One input file after the check: its documents, patched when `--fix` is given.
#[derive(Debug)]
pub(super) struct CheckedFile {
    /// The command-line path it was found under.
    pub root: PathBuf,
    /// The file.
    pub source: Source,
    /// How it is written.
    pub format: Format,
    /// Its text as read.
    pub text: Arc<str>,
    /// Its documents (patched with `--fix`).
    pub documents: Vec<Document>,
    /// A patch was applied to one of its objects.
    pub patched: bool,
}

impl CheckedFile {
    fn holds_review(&self) -> bool {
        self.documents.iter().any(|d| holds_review(&d.value))
    }

    /// The file's new content: as read if nothing was patched.
    fn content(&self) -> anyhow::Result<String> {
        if !self.patched {
            return Ok(self.text.to_string());
        }
        let mut out = Vec::new();
        for document in &self.documents {
            match self.format {
                Format::Yaml => write_yaml(&mut out, document, None)?,
                Format::Json => {
                    serde_json::to_writer_pretty(&mut out, &document.value)?;
                    writeln!(out)?;
                }
            }
        }
        Ok(String::from_utf8(out)?)
    }
}

/// Writes the fixed manifests of `files` to `output`.
pub(super) fn write(output: &Output, files: &[CheckedFile]) -> anyhow::Result<()> {
    match output {
        Output::Stdout => write_stream(files),
        Output::OutDir(dir) => write_files(&mirrored(dir, files)?),
        Output::InPlace => {
            let targets = files
                .iter()
                .filter(|file| file.patched)
                .filter_map(|file| match &file.source {
                    Source::File(path) => Some((path.clone(), file)),
                    Source::Stdin => None,
                })
                .collect();
            write_files(&targets)
        }
    }
}

/// Every document as one YAML stream on standard output.
fn write_stream(files: &[CheckedFile]) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    for document in files.iter().flat_map(|file| &file.documents) {
        if holds_review(&document.value) {
            eprintln!(
                "note: {}: an AdmissionReview, left out of the fixed manifests (kubectl apply \
                 refuses it); the report has its verdict",
                document.origin
            );
            continue;
        }
        write_yaml(&mut out, document, Some(&document.origin.source))?;
    }
    out.flush()
        .map_err(|err| anyhow!("cannot write to standard output: {err}"))
}

/// `---`, `# Source: FILE` when `marker` is given, and the document as YAML. Keys come
/// out sorted and comments are not kept: the document went through `serde_json::Value`.
fn write_yaml(
    out: &mut impl Write,
    document: &Document,
    marker: Option<&Source>,
) -> anyhow::Result<()> {
    let yaml = serde_saphyr::to_string(&document.value)
        .map_err(|err| anyhow!("{}: cannot write as YAML: {err}", document.origin))?;
    writeln!(out, "---")?;
    if let Some(source) = marker {
        // One line whatever the file name: a newline would end the comment.
        writeln!(
            out,
            "# Source: {}",
            source.to_string().replace(['\n', '\r'], " ")
        )?;
    }
    out.write_all(yaml.as_bytes())?;
    if !yaml.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

/// Where each file goes under `dir`; refuses two files for one place before anything is
/// written.
fn mirrored<'f>(
    dir: &Path,
    files: &'f [CheckedFile],
) -> anyhow::Result<BTreeMap<PathBuf, &'f CheckedFile>> {
    let mut targets: BTreeMap<PathBuf, &CheckedFile> = BTreeMap::new();
    for file in files {
        let Source::File(path) = &file.source else {
            continue;
        };
        let relative = match path.strip_prefix(&file.root) {
            Ok(relative) if !relative.as_os_str().is_empty() => relative,
            _ => Path::new(path.file_name().unwrap_or(path.as_os_str())),
        };
        let target = dir.join(relative);
        if let Some(other) = targets.insert(target.clone(), file) {
            return Err(anyhow!(
                "{} and {} would both be written to {}: check them with separate --out-dir",
                other.source,
                file.source,
                target.display()
            ));
        }
    }
    Ok(targets)
}

/// Writes each file to its target, except those holding an AdmissionReview.
fn write_files(targets: &BTreeMap<PathBuf, &CheckedFile>) -> anyhow::Result<()> {
    for (target, file) in targets {
        if file.holds_review() {
            eprintln!(
                "note: {}: not written: it holds an AdmissionReview, which kubectl apply refuses",
                file.source
            );
            continue;
        }
        let content = file.content()?;
        replace_file(target, content.as_bytes())
            .with_context(|| format!("cannot write {}", target.display()))?;
        eprintln!("wrote {}", target.display());
    }
    Ok(())
}

/// Writes `path` whole or not at all: a sibling temporary file, renamed over it. An
/// existing file keeps its permissions.
fn replace_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(".{name}.dhi-admission-fix"));
    fs::write(&temporary, content)?;
    let renamed = fs::metadata(path)
        .map(|existing| fs::set_permissions(&temporary, existing.permissions()))
        .unwrap_or(Ok(()))
        .and_then(|()| fs::rename(&temporary, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    renamed
}
