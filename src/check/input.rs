//! Reading manifests: paths to sources, sources to numbered documents.
//!
//! Documents are numbered from 1 as a reader counts them in the file, empty ones
//! included, so "document 3" in a report is the third `---` section of the file. Each
//! YAML document is parsed on its own, so a mistake in one is reported against it and
//! the others are still checked.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, ScanError};
use serde_saphyr::{SnippetMode, UserMessageFormatter};

use super::error::{Cause, InputError, MAX_DOCUMENTS, MAX_INPUT_BYTES};
use super::origin::{Origin, Source};

/// Alias expansions per document beyond this are refused: manifests barely use aliases,
/// and a "billion laughs" document would otherwise expand until a budget stops it.
const MAX_ALIAS_REPLAYS: usize = 100_000;

/// File extensions picked up when walking a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One non-empty document of an input.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Document {
    /// Its source and number.
    pub origin: Origin,
    /// Its content.
    pub value: Value,
    /// The text it was read from, to find lines in (`--output sarif`).
    pub text: Text,
}

/// A document's text: the whole source, shared, and where the document is in it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Text {
    /// The source's text.
    pub source: Arc<str>,
    /// Byte range of the document: whole lines for YAML, the value for JSON.
    pub span: Range<usize>,
    /// Lines of the source before the span's first line.
    pub lines_before: usize,
}

impl Text {
    /// The document's own text.
    pub(super) fn as_str(&self) -> &str {
        &self.source[self.span.clone()]
    }
}

/// One file (or standard input) and its documents.
#[derive(Debug)]
pub(super) struct SourceFile {
    /// Where it was read from.
    pub source: Source,
    /// Its text, as read.
    pub text: Arc<str>,
    /// Its non-empty documents, or what is wrong with them, in order.
    pub documents: Vec<Result<Document, InputError>>,
    /// How it is written.
    pub format: Format,
}

/// What a command-line path holds.
#[derive(Debug, Default)]
pub(super) struct PathInput {
    /// Each file read, or why it could not be.
    pub files: Vec<Result<SourceFile, InputError>>,
    /// Entries of a directory that were not read, and why.
    pub passed_over: Vec<PassedOver>,
}

/// A directory entry that is not read although it may look like a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PassedOver {
    /// The entry.
    pub path: PathBuf,
    /// Why it is not read.
    pub reason: PassOverReason,
}

/// Why a directory entry is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PassOverReason {
    /// Its name starts with `.` (`.git`, editor backups).
    Hidden,
    /// A symbolic link whose target does not exist (or that loops).
    DanglingLink,
    /// A symbolic link to a directory, which could lead back up the tree.
    LinkedDirectory,
}

impl fmt::Display for PassedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            PassOverReason::Hidden => "hidden (its name starts with a dot)",
            PassOverReason::DanglingLink => "a symbolic link to nothing",
            PassOverReason::LinkedDirectory => {
                "a symbolic link to a directory (not followed: it may loop); name it to check it"
            }
        };
        write!(f, "{}: not read: {why}", self.path.display())
    }
}

/// The files a command-line path names, read and split into documents, in order:
/// a directory is walked in sorted order, `-` reads standard input.
pub(super) fn read_path(path: &Path) -> PathInput {
    let mut input = PathInput::default();
    if path.as_os_str() == "-" {
        input.files.push(read_source(Source::Stdin));
        return input;
    }
    if !path.is_dir() {
        input.files.push(read_source(Source::File(path.to_owned())));
        return input;
    }
    let mut files = Vec::new();
    walk(path, &mut files, &mut input);
    files.sort();
    input.passed_over.sort_by(|a, b| a.path.cmp(&b.path));
    input
        .files
        .extend(files.into_iter().map(|f| read_source(Source::File(f))));
    input
}

/// Collects manifest files under `dir`. Hidden entries (`.git`) are not entered, nor are
/// symbolic links to directories (they may loop); symbolic links to files are read.
/// Hidden manifests and directories, and links that are not followed, are named in
/// `input.passed_over`; other files (`README.md`) are not manifests and pass silently.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, input: &mut PathInput) {
    let unreadable =
        |err, path: &Path| Err(Cause::Read(err).at(Origin::source(&Source::File(path.to_owned()))));
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            input.files.push(unreadable(err, dir));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                input.files.push(unreadable(err, dir));
                continue;
            }
        };
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(err) => {
                input.files.push(unreadable(err, &path));
                continue;
            }
        };
        let pass_over = |reason| PassedOver {
            path: path.clone(),
            reason,
        };
        if entry.file_name().to_string_lossy().starts_with('.') {
            let looks_relevant = file_type.is_dir() || has_manifest_extension(&path);
            if looks_relevant {
                input.passed_over.push(pass_over(PassOverReason::Hidden));
            }
        } else if file_type.is_dir() {
            walk(&path, files, input);
        } else if file_type.is_symlink() {
            // `fs::metadata` follows the link.
            match fs::metadata(&path) {
                Err(_) => input
                    .passed_over
                    .push(pass_over(PassOverReason::DanglingLink)),
                Ok(target) if target.is_dir() => {
                    input
                        .passed_over
                        .push(pass_over(PassOverReason::LinkedDirectory));
                }
                Ok(target) if target.is_file() && has_manifest_extension(&path) => files.push(path),
                Ok(_) => {}
            }
        } else if file_type.is_file() && has_manifest_extension(&path) {
            files.push(path);
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
pub(super) fn read_source(source: Source) -> Result<SourceFile, InputError> {
    let text: Arc<str> = read_text(&source)
        .map_err(|cause| cause.at(Origin::source(&source)))?
        .into();
    let documents = split_documents(&source, &text);
    Ok(SourceFile {
        format: Format::of(&source, text.trim_start_matches('\u{feff}')),
        source,
        text,
        documents,
    })
}

/// The whole text of a source, refusing more than [`MAX_INPUT_BYTES`].
pub(super) fn read_text(source: &Source) -> Result<String, Cause> {
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
pub(super) enum Format {
    /// YAML, one or more documents.
    Yaml,
    /// JSON, one or more values.
    Json,
}
impl Format {
    /// By extension; otherwise (standard input, other names) JSON if the text starts
    /// with `{`, as `kubectl get -o json` output and AdmissionReview captures do.
    pub(super) fn of(source: &Source, text: &str) -> Self {
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
pub(super) fn split_documents(
    source: &Source,
    text: &Arc<str>,
) -> Vec<Result<Document, InputError>> {
    // Offsets stay those of `text`, a byte-order mark included.
    let start = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let split = Split {
        source,
        text,
        start,
    };
    match Format::of(source, &text[start..]) {
        Format::Yaml => split.yaml_documents(),
        Format::Json => split.json_documents(),
    }
}

/// A source's text, being split into documents.
struct Split<'s> {
    source: &'s Source,
    text: &'s Arc<str>,
    /// Where the content starts (past a byte-order mark).
    start: usize,
}

impl Split<'_> {
    fn content(&self) -> &str {
        &self.text[self.start..]
    }

    /// The text of a document at `span` of the content.
    fn text(&self, span: Range<usize>, lines_before: usize) -> Text {
        Text {
            source: Arc::clone(self.text),
            span: span.start + self.start..span.end + self.start,
            lines_before,
        }
    }

    /// A JSON stream: one or more values, each a document.
    fn json_documents(&self) -> Vec<Result<Document, InputError>> {
        let content = self.content();
        let mut out = Vec::new();
        let mut stream = serde_json::Deserializer::from_str(content).into_iter::<Value>();
        for index in 0.. {
            let before = stream.byte_offset();
            let Some(value) = stream.next() else { break };
            let origin = Origin::document(self.source, index + 1);
            if index == MAX_DOCUMENTS {
                out.push(Err(Cause::TooManyDocuments.at(origin)));
                break;
            }
            match value {
                Ok(Value::Null) => {}
                Ok(value) => {
                    let skipped = content[before..].len() - content[before..].trim_start().len();
                    let start = before + skipped;
                    let lines_before = content[..start].matches('\n').count();
                    let text = self.text(start..stream.byte_offset(), lines_before);
                    out.push(Ok(Document {
                        origin,
                        value,
                        text,
                    }));
                }
                Err(err) => {
                    out.push(Err(Cause::Json(err).at(origin)));
                    break;
                }
            }
        }
        out
    }

    /// A YAML stream, each document parsed on its own so errors are attributed to it.
    fn yaml_documents(&self) -> Vec<Result<Document, InputError>> {
        let content = self.content();
        let (spans, failure) = document_spans(content);
        let mut out: Vec<_> = spans
            .iter()
            .enumerate()
            .filter_map(|(index, span)| {
                let origin = Origin::document(self.source, index + 1);
                match parse_yaml_document(self.source, content, span) {
                    Ok(Value::Null) => None,
                    Ok(value) => Some(Ok(Document {
                        origin,
                        value,
                        text: self.text(span.start..span.end, span.lines_before),
                    })),
                    Err(cause) => Some(Err(cause
                        .unrendered_hint(&content[span.start..span.end])
                        .at(origin))),
                }
            })
            .collect();
        if let Some((number, cause)) = failure {
            let rest = &content[spans.last().map_or(0, |span| span.end)..];
            let origin = Origin::document(self.source, number);
            out.push(Err(cause.unrendered_hint(rest).at(origin)));
        }
        out
    }
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
        split_documents(&file(name), &Arc::from(text))
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
        let docs = split_documents(&Source::Stdin, &Arc::from("  {\"kind\": \"Pod\"}"));
        assert_eq!(docs[0].as_ref().unwrap().value, json!({"kind": "Pod"}));
        let docs = split_documents(&Source::Stdin, &Arc::from("kind: Pod"));
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
    fn directories_are_walked_sorted_naming_what_they_pass_over() {
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
            ".gitignore",
        ] {
            fs::write(root.join(name), "kind: X\n").unwrap();
        }
        std::os::unix::fs::symlink(root.join("gone.yaml"), root.join("dangling.yaml")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root.join("self.yaml"), root.join("self.yaml")).unwrap();
        std::os::unix::fs::symlink(root.join("z.yaml"), root.join("b/link.yaml")).unwrap();
        let input = read_path(root);
        let found: Vec<_> = input
            .files
            .iter()
            .map(|file| match &file.as_ref().unwrap().source {
                Source::File(path) => path.strip_prefix(root).unwrap().to_owned(),
                Source::Stdin => unreachable!(),
            })
            .collect();
        assert_eq!(
            found,
            ["a.yml", "b/link.yaml", "b/nested/c.json", "z.yaml"].map(PathBuf::from)
        );
        let passed_over: Vec<_> = input
            .passed_over
            .iter()
            .map(|p| p.to_string().replace(&format!("{}/", root.display()), ""))
            .collect();
        assert_eq!(
            passed_over,
            [
                ".git: not read: hidden (its name starts with a dot)",
                ".hidden.yaml: not read: hidden (its name starts with a dot)",
                "dangling.yaml: not read: a symbolic link to nothing",
                "loop: not read: a symbolic link to a directory (not followed: it may loop); \
                 name it to check it",
                "self.yaml: not read: a symbolic link to nothing",
            ]
        );
    }

    #[test]
    fn documents_keep_their_place_in_the_text() {
        let text: Arc<str> = Arc::from("\u{feff}# c\nkind: A\n---\nkind: B\n");
        let docs = split_documents(&file("a.yaml"), &text);
        let b = docs[1].as_ref().unwrap();
        assert_eq!(b.text.as_str(), "---\nkind: B\n");
        assert_eq!(b.text.lines_before, 2);
        let json: Arc<str> = Arc::from("{\"kind\": \"A\"}\n\n  {\"kind\": \"B\"}");
        let docs = split_documents(&file("a.json"), &json);
        let b = docs[1].as_ref().unwrap();
        assert_eq!(b.text.as_str(), "{\"kind\": \"B\"}");
        assert_eq!(b.text.lines_before, 2);
    }

    #[test]
    fn unrendered_templates_get_a_hint() {
        let docs = split(
            "t.yaml",
            "kind: A\n---\nmetadata:\n  labels:\n    {{- include \"x\" . | nindent 4 }}\n",
        );
        let err = docs[1].as_ref().unwrap_err();
        assert!(
            err.starts_with("t.yaml, document 2: invalid YAML: "),
            "{err}"
        );
        assert!(
            err.ends_with(
                "; it looks like an unrendered Helm template: render it first \
                 (helm template RELEASE CHART | dhi-admission check -)"
            ),
            "{err}"
        );
        let plain = split("p.yaml", "kind: [a\n");
        assert!(
            !plain[0].as_ref().unwrap_err().contains("Helm"),
            "{plain:?}"
        );
    }

    #[test]
    fn oversized_and_missing_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        let file = fs::File::create(&big).unwrap();
        file.set_len(MAX_INPUT_BYTES + 1).unwrap();
        let err = read_source(Source::File(big)).unwrap_err();
        assert!(matches!(err.cause, Cause::TooLarge), "{err}");
        let err = read_source(Source::File(dir.path().join("missing.yaml"))).unwrap_err();
        assert!(
            err.to_string().contains("missing.yaml: cannot read: "),
            "{err}"
        );
    }
}
