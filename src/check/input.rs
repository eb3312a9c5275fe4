//! Reading manifests: paths to sources, sources to numbered documents.
//!
//! Documents are numbered from 1 as a reader counts them in the file, empty ones
//! included, so "document 3" in a report is the third `---` section of the file. Each
//! YAML document is parsed on its own, so a mistake in one is reported against it and
//! the others are still checked.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use json_patch::jsonptr::PointerBuf;
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, ScanError};
use serde_saphyr::{SnippetMode, UserMessageFormatter};

use dhi_policy::{DecodeError, WorkloadKind};

/// Inputs larger than this are refused rather than parsed.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Documents per input beyond this are refused (a `---` storm, not a manifest).
pub const MAX_DOCUMENTS: usize = 10_000;

/// Alias expansions per document beyond this are refused: manifests barely use aliases,
/// and a "billion laughs" document would otherwise expand until a budget stops it.
const MAX_ALIAS_REPLAYS: usize = 100_000;

/// File extensions picked up when walking a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Where manifests are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-` on the command line).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdin => f.write_str("<stdin>"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Where something was found: a source, a document in it, an object in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, or standard input.
    pub source: Source,
    /// The document, counted from 1; `None` for the source as a whole.
    pub document: Option<usize>,
    /// JSON Pointer to the object inside the document; empty for the document itself.
    pub pointer: PointerBuf,
}

impl Origin {
    fn source(source: &Source) -> Self {
        Self {
            source: source.clone(),
            document: None,
            pointer: PointerBuf::new(),
        }
    }

    fn document(source: &Source, number: usize) -> Self {
        Self {
            document: Some(number),
            ..Self::source(source)
        }
    }

    /// The origin of a value nested under this one.
    pub fn child(&self, tokens: &[&str]) -> Self {
        let mut pointer = self.pointer.clone();
        for token in tokens {
            pointer.push_back(*token);
        }
        Self {
            pointer,
            ..self.clone()
        }
    }

    /// The pointer written as a field path: `/items/2/request/object` is `items[2].request.object`.
    pub fn field_path(&self) -> String {
        let mut path = String::new();
        for token in self.pointer.tokens() {
            let token = token.decoded();
            if token.bytes().all(|b| b.is_ascii_digit()) {
                path.push_str(&format!("[{token}]"));
            } else {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&token);
            }
        }
        path
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(number) = self.document {
            write!(f, ", document {number}")?;
        }
        if !self.pointer.is_empty() {
            write!(f, ", {}", self.field_path())?;
        }
        Ok(())
    }
}

/// Input that cannot be checked: it names the file, the document and the object.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {cause}")]
pub struct InputError {
    /// Where.
    pub origin: Origin,
    /// What is wrong there.
    pub cause: Cause,
}

/// What is wrong with an input. Each message is whole (it names the underlying error),
/// so none is chained as a `source`.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The file or directory cannot be read.
    #[error("cannot read: {0}")]
    Read(io::Error),
    /// The input is over [`MAX_INPUT_BYTES`].
    #[error("larger than {} MiB; check smaller files", MAX_INPUT_BYTES / 1024 / 1024)]
    TooLarge,
    /// The input has more than [`MAX_DOCUMENTS`] documents.
    #[error("more than {MAX_DOCUMENTS} documents")]
    TooManyDocuments,
    /// The input is not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// The document is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The document is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// An AdmissionReview or List lacks what the check needs.
    #[error("{0}")]
    Shape(String),
    /// A pod-carrying object has a field of the wrong type.
    #[error("cannot read {kind}: {error}")]
    Decode {
        /// The object's kind.
        kind: WorkloadKind,
        /// The field and what is wrong with it.
        error: DecodeError,
    },
    /// The planned patch does not apply to the object (a bug in the engine).
    #[error("the planned patch does not apply: {0}")]
    Patch(json_patch::PatchError),
}

impl From<io::Error> for Cause {
    fn from(err: io::Error) -> Self {
        Self::Read(err)
    }
}

impl Cause {
    /// This cause, at `origin`.
    pub fn at(self, origin: Origin) -> InputError {
        InputError {
            origin,
            cause: self,
        }
    }
}

/// One non-empty document of an input.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Its source and number.
    pub origin: Origin,
    /// Its content.
    pub value: Value,
}

/// Every document of every path, in order: directories are walked in sorted order,
/// `-` reads standard input. Errors take the place of what could not be read.
pub fn read_paths(paths: &[PathBuf]) -> Vec<Result<Document, InputError>> {
    let mut out = Vec::new();
    for path in paths {
        for source in sources(path) {
            match source {
                Ok(source) => out.extend(read_source(&source)),
                Err(err) => out.push(Err(err)),
            }
        }
    }
    out
}

/// The sources a command-line path names. A file named explicitly is read whatever its
/// extension; a directory contributes its `*.yaml`, `*.yml` and `*.json` files.
fn sources(path: &Path) -> Vec<Result<Source, InputError>> {
    if path.as_os_str() == "-" {
        return vec![Ok(Source::Stdin)];
    }
    if !path.is_dir() {
        return vec![Ok(Source::File(path.to_owned()))];
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    walk(path, &mut files, &mut errors);
    files.sort();
    errors
        .into_iter()
        .map(Err)
        .chain(files.into_iter().map(|f| Ok(Source::File(f))))
        .collect()
}

/// Collects manifest files under `dir`. Hidden entries (`.git`) are not entered, nor are
/// symbolic links to directories (they may loop); symbolic links to files are read.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(Cause::Read(err).at(Origin::source(&Source::File(dir.to_owned()))));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                errors.push(Cause::Read(err).at(Origin::source(&Source::File(dir.to_owned()))));
                continue;
            }
        };
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&path, files, errors),
            Ok(_) if path.is_file() && has_manifest_extension(&path) => files.push(path),
            Ok(_) => {}
            Err(err) => errors.push(Cause::Read(err).at(Origin::source(&Source::File(path)))),
        }
    }
}

fn has_manifest_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| {
            EXTENSIONS
                .iter()
                .any(|known| ext.eq_ignore_ascii_case(known))
        })
}

/// Reads one source and splits it into documents.
pub fn read_source(source: &Source) -> Vec<Result<Document, InputError>> {
    match read_text(source) {
        Ok(text) => split_documents(source, &text),
        Err(cause) => vec![Err(cause.at(Origin::source(source)))],
    }
}

/// The whole text of a source, refusing more than [`MAX_INPUT_BYTES`].
pub fn read_text(source: &Source) -> Result<String, Cause> {
    let reader: Box<dyn Read> = match source {
        Source::Stdin => Box::new(io::stdin().lock()),
        Source::File(path) => Box::new(fs::File::open(path)?),
    };
    let mut bytes = Vec::new();
    reader.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(Cause::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| Cause::NotUtf8)
}

/// How a source is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By extension; otherwise (standard input, other names) JSON if the text starts
    /// with `{`, as `kubectl get -o json` output and AdmissionReview captures do.
    fn of(source: &Source, text: &str) -> Self {
        let extension = match source {
            Source::File(path) => path.extension().and_then(|e| e.to_str()),
            Source::Stdin => None,
        };
        match extension.map(str::to_ascii_lowercase).as_deref() {
            Some("yaml" | "yml") => Self::Yaml,
            Some("json") => Self::Json,
            _ if text.trim_start().starts_with('{') => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// Splits a source's text into its non-empty documents.
pub fn split_documents(source: &Source, text: &str) -> Vec<Result<Document, InputError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match Format::of(source, text) {
        Format::Yaml => yaml_documents(source, text),
        Format::Json => json_documents(source, text),
    }
}

/// A JSON stream: one or more values, each a document.
fn json_documents(source: &Source, text: &str) -> Vec<Result<Document, InputError>> {
    let mut out = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    for (index, value) in stream.enumerate() {
        let origin = Origin::document(source, index + 1);
        if index == MAX_DOCUMENTS {
            out.push(Err(Cause::TooManyDocuments.at(origin)));
            break;
        }
        match value {
            Ok(Value::Null) => {}
            Ok(value) => out.push(Ok(Document { origin, value })),
            Err(err) => {
                out.push(Err(Cause::Json(err).at(origin)));
                break;
            }
        }
    }
    out
}

/// A YAML stream, each document parsed on its own so errors are attributed to it.
fn yaml_documents(source: &Source, text: &str) -> Vec<Result<Document, InputError>> {
    let (spans, failure) = document_spans(text);
    let mut out: Vec<_> = spans
        .iter()
        .enumerate()
        .filter_map(|(index, span)| {
            let origin = Origin::document(source, index + 1);
            match parse_yaml_document(source, text, span) {
                Ok(Value::Null) => None,
                Ok(value) => Some(Ok(Document { origin, value })),
                Err(cause) => Some(Err(cause.at(origin))),
            }
        })
        .collect();
    if let Some((number, cause)) = failure {
        out.push(Err(cause.at(Origin::document(source, number))));
    }
    out
}

/// The text of one YAML document: whole lines, so parser positions map back to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Byte offset of the start of the document's first line.
    start: usize,
    /// Byte offset just past the document.
    end: usize,
    /// Lines of the file before `start`.
    lines_before: usize,
}

/// The documents of a YAML stream, found with the event parser (which expands no
/// aliases), and the number and cause of the document where the stream stops being
/// valid YAML, if it does.
fn document_spans(text: &str) -> (Vec<Span>, Option<(usize, Cause)>) {
    let mut spans = Vec::new();
    let mut open: Option<(usize, usize)> = None;
    for event in Parser::new_from_str(text) {
        let number = spans.len() + 1;
        let (event, span) = match event {
            Ok(event) => event,
            Err(err) => {
                return (
                    spans,
                    Some((number, Cause::Yaml(describe_scan_error(&err)))),
                );
            }
        };
        match event {
            Event::DocumentStart(..) if number > MAX_DOCUMENTS => {
                return (spans, Some((number, Cause::TooManyDocuments)));
            }
            Event::DocumentStart(..) => {
                let offset = byte_offset(text, span.start.byte_offset(), span.start.index());
                let start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
                open = Some((start, span.start.line().saturating_sub(1)));
            }
            Event::DocumentEnd => {
                if let Some((start, lines_before)) = open.take() {
                    let end = byte_offset(text, span.end.byte_offset(), span.end.index());
                    spans.push(Span {
                        start,
                        end: end.max(start),
                        lines_before,
                    });
                }
            }
            _ => {}
        }
    }
    (spans, None)
}

/// A parser position as a byte offset on a char boundary (the parser counts characters
/// when it has no byte offset).
fn byte_offset(text: &str, bytes: Option<usize>, chars: usize) -> usize {
    let offset = bytes.unwrap_or_else(|| {
        text.char_indices()
            .nth(chars)
            .map_or(text.len(), |(i, _)| i)
    });
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn describe_scan_error(err: &ScanError) -> String {
    let marker = err.marker();
    format!(
        "{} at line {}, column {}",
        err.info(),
        marker.line(),
        marker.col() + 1
    )
}

/// Parses one document; `Null` means it is empty.
fn parse_yaml_document(source: &Source, text: &str, span: &Span) -> Result<Value, Cause> {
    serde_saphyr::from_str_with_options(&text[span.start..span.end], yaml_options()).map_err(
        |err| {
            let name = source.to_string();
            Cause::Yaml(err.render_with_options(serde_saphyr::render_options! {
                formatter: &UserMessageFormatter,
                snippets: SnippetMode::Off,
                line_offset: span.lines_before as u64,
                source_name: Some(name.as_str()),
            }))
        },
    )
}

/// The parser's default budget (depth 64, 250 000 nodes, 1 000 000 events, 64 MiB of
/// scalars, duplicate keys refused) with alias replays capped at [`MAX_ALIAS_REPLAYS`].
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAYS;
    options
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file(name: &str) -> Source {
        Source::File(PathBuf::from(name))
    }

    /// (document number, value) of each document, or the error text.
    fn split(name: &str, text: &str) -> Vec<Result<(usize, Value), String>> {
        split_documents(&file(name), text)
            .into_iter()
            .map(|doc| {
                doc.map(|d| (d.origin.document.unwrap_or(0), d.value))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn yaml_documents_are_numbered_as_written_empty_ones_included() {
        let text = "# header comment\n---\n# Source: chart/templates/empty.yaml\n---\nkind: Pod\n...\n---\nkind: Service\n---\n";
        assert_eq!(
            split("a.yaml", text),
            [
                Ok((2, json!({"kind": "Pod"}))),
                Ok((3, json!({"kind": "Service"})))
            ]
        );
        assert_eq!(
            split("a.yaml", "kind: Pod\n"),
            [Ok((1, json!({"kind": "Pod"})))]
        );
        assert_eq!(split("a.yaml", ""), []);
        assert_eq!(
            split("a.yaml", "\u{feff}kind: Pod\n"),
            [Ok((1, json!({"kind": "Pod"})))]
        );
    }

    #[test]
    fn a_bad_document_is_reported_with_its_number_and_file_line() {
        let text = "kind: A\n---\nkind: B\nmetadata:\n  name: x\n  name: y\n---\nkind: C\n";
        let docs = split("dup.yaml", text);
        assert_eq!(docs[0], Ok((1, json!({"kind": "A"}))));
        let err = docs[1].as_ref().unwrap_err();
        assert!(
            err.starts_with("dup.yaml, document 2: invalid YAML: "),
            "{err}"
        );
        assert!(err.contains("line 6, column 3"), "{err}");
        assert_eq!(docs[2], Ok((3, json!({"kind": "C"}))));
    }

    #[test]
    fn a_syntax_error_stops_the_stream_at_its_document() {
        let docs = split(
            "broken.yaml",
            "kind: A\n---\nkind: B\nspec: [a, b\n---\nkind: C\n",
        );
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[0], Ok((1, json!({"kind": "A"}))));
        let err = docs[1].as_ref().unwrap_err();
        assert!(
            err.starts_with("broken.yaml, document 2: invalid YAML: "),
            "{err}"
        );
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..9 {
            let prev = level - 1;
            let refs = vec![format!("*l{prev}"); 9].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
        }
        let err = split("bomb.yaml", &text).remove(0).unwrap_err();
        assert!(
            err.starts_with("bomb.yaml, document 1: invalid YAML: "),
            "{err}"
        );
    }

    #[test]
    fn json_streams_split_into_values() {
        let docs = split("a.json", r#"{"kind": "Pod"} {"kind": "Service"}"#);
        assert_eq!(
            docs,
            [
                Ok((1, json!({"kind": "Pod"}))),
                Ok((2, json!({"kind": "Service"})))
            ]
        );
        let docs = split("b.json", "{\"kind\": \"Pod\"}\n{\"kind\": }");
        assert_eq!(docs[0], Ok((1, json!({"kind": "Pod"}))));
        let err = docs[1].as_ref().unwrap_err();
        assert!(
            err.starts_with("b.json, document 2: invalid JSON: "),
            "{err}"
        );
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn format_is_sniffed_without_a_known_extension() {
        let docs = split_documents(&Source::Stdin, "  {\"kind\": \"Pod\"}");
        assert_eq!(docs[0].as_ref().unwrap().value, json!({"kind": "Pod"}));
        let docs = split_documents(&Source::Stdin, "kind: Pod");
        assert_eq!(docs[0].as_ref().unwrap().value, json!({"kind": "Pod"}));
    }

    #[test]
    fn origins_name_file_document_and_object() {
        let origin = Origin::document(&file("x.yaml"), 2)
            .child(&["items", "3"])
            .child(&["request", "object"]);
        assert_eq!(origin.pointer.as_str(), "/items/3/request/object");
        assert_eq!(
            origin.to_string(),
            "x.yaml, document 2, items[3].request.object"
        );
        assert_eq!(
            Origin::child(&Origin::source(&Source::Stdin), &["a/b"])
                .pointer
                .as_str(),
            "/a~1b"
        );
        assert_eq!(Origin::source(&Source::Stdin).to_string(), "<stdin>");
    }

    #[test]
    fn directories_are_walked_sorted_skipping_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("b/nested")).unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
        for name in [
            "z.yaml",
            "a.yml",
            "b/nested/c.json",
            "b/readme.md",
            ".git/x.yaml",
            ".hidden.yaml",
        ] {
            fs::write(root.join(name), "kind: X\n").unwrap();
        }
        let found: Vec<_> = sources(root)
            .into_iter()
            .map(|s| match s.unwrap() {
                Source::File(path) => path.strip_prefix(root).unwrap().to_owned(),
                Source::Stdin => unreachable!(),
            })
            .collect();
        assert_eq!(
            found,
            [
                PathBuf::from("a.yml"),
                PathBuf::from("b/nested/c.json"),
                PathBuf::from("z.yaml")
            ]
        );
    }

    #[test]
    fn oversized_and_missing_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        let file = fs::File::create(&big).unwrap();
        file.set_len(MAX_INPUT_BYTES + 1).unwrap();
        let err = read_source(&Source::File(big)).remove(0).unwrap_err();
        assert!(matches!(err.cause, Cause::TooLarge), "{err}");
        let err = read_source(&Source::File(dir.path().join("missing.yaml")))
            .remove(0)
            .unwrap_err();
        assert!(
            err.to_string().contains("missing.yaml: cannot read: "),
            "{err}"
        );
    }
}
