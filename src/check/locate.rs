//! Lines in the files objects were read from, for reports that point into files
//! (`--output sarif`): the line of an object, or of a container's `image` in it.
//!
//! Documents are parsed once more, with the event parser (which expands no aliases),
//! only when lines are asked for, and once for all the places asked for in them: a
//! `List` of thousands of pods is one document, walked once, not once per finding.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};

use super::input::{Document, Text};
use super::origin::{Origin, Source};
use dhi_policy::WorkloadKind;

/// The pod spec fields that hold containers, in the order the engine reports them.
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// A document by its source and number.
type DocumentKey<'d> = (&'d Source, usize);

/// Finds lines in the documents a check read.
pub(super) struct Locator<'d> {
    documents: HashMap<DocumentKey<'d>, &'d Document>,
}

impl<'d> Locator<'d> {
    /// A locator over `documents`.
    pub(super) fn new(documents: impl IntoIterator<Item = &'d Document>) -> Self {
        let documents = documents
            .into_iter()
            .filter_map(|document| {
                let number = document.origin.document?;
                Some(((&document.origin.source, number), document))
            })
            .collect();
        Self { documents }
    }

    /// The line (from 1) of each place: the object at `origin`, or the `image` of its
    /// container named `container` when there is one. `None` for standard input's
    /// documents and others not read from a file.
    pub(super) fn lines(&self, places: &[Place<'_>]) -> Vec<Option<usize>> {
        let mut lines = vec![None; places.len()];
        // The places of each document, with their paths in it.
        let mut wanted: HashMap<DocumentKey<'_>, Vec<(usize, Vec<String>)>> = HashMap::new();
        for (index, place) in places.iter().enumerate() {
            let Some(number) = place.origin.document else {
                continue;
            };
            let key = (&place.origin.source, number);
            let Some(document) = self.documents.get(&key) else {
                continue;
            };
            let mut tokens: Vec<String> = place
                .origin
                .pointer
                .tokens()
                .map(|token| token.decoded().into_owned())
                .collect();
            if let Some(name) = place.container {
                let object = document.value.pointer(place.origin.pointer.as_str());
                if let Some(path) =
                    object.and_then(|object| container_path(object, place.kind, name))
                {
                    tokens.extend(path);
                }
            }
            wanted.entry(key).or_default().push((index, tokens));
        }
        for (key, targets) in wanted {
            let paths: Vec<&[String]> = targets.iter().map(|(_, path)| path.as_slice()).collect();
            let found = lines_of(&self.documents[&key].text, &paths);
            for ((index, _), line) in targets.iter().zip(found) {
                lines[*index] = Some(line);
            }
        }
        lines
    }
}

/// A place to find the line of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place<'a> {
    /// The object.
    pub origin: &'a Origin,
    /// Its kind, which says where its containers are.
    pub kind: WorkloadKind,
    /// The container, when the finding is about one.
    pub container: Option<&'a str>,
}

/// The path from an object to its container `name`'s image.
fn container_path(object: &Value, kind: WorkloadKind, name: &str) -> Option<Vec<String>> {
    let spec = kind
        .spec_path()
        .iter()
        .try_fold(object, |value, field| value.get(field))?;
    CONTAINER_LISTS.iter().find_map(|list| {
        let index = spec
            .get(list)?
            .as_array()?
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(name))?;
        let mut path: Vec<String> = kind.spec_path().iter().map(|f| (*f).to_owned()).collect();
        path.extend([(*list).to_owned(), index.to_string(), "image".to_owned()]);
        Some(path)
    })
}

/// The line of the node at each of `targets` (JSON Pointer tokens) in a document, or of
/// the deepest ancestor of it that is there (the document's first line at worst), in one
/// pass. A node that is a mapping's value is on the line of its key.
pub(super) fn lines_of(text: &Text, targets: &[&[String]]) -> Vec<usize> {
    let mut walk = Walk::new(targets);
    for event in Parser::new_from_str(text.as_str()) {
        let Ok((event, span)) = event else { break };
        walk.event(&event, span.start.line());
    }
    targets
        .iter()
        .map(|target| {
            let deepest = (0..=target.len())
                .rev()
                .find_map(|n| walk.found.get(&target[..n]));
            text.lines_before + deepest.copied().unwrap_or(1)
        })
        .collect()
}

/// One pass over a document's parser events, noting the line of every node on the way
/// to a target.
struct Walk<'t> {
    /// Every path on the way to a target: only their nodes are looked at.
    on_the_way: HashSet<&'t [String]>,
    found: HashMap<Vec<String>, usize>,
    /// The collections the parser is in, and the path to the innermost one while it is
    /// on the way to a target (the outermost, the document's root, has no token).
    stack: Vec<Frame>,
    path: Vec<String>,
}

impl<'t> Walk<'t> {
    fn new(targets: &[&'t [String]]) -> Self {
        Self {
            on_the_way: targets
                .iter()
                .flat_map(|target| (0..=target.len()).map(|n| &target[..n]))
                .collect(),
            found: HashMap::new(),
            stack: Vec::new(),
            path: Vec::new(),
        }
    }

    fn event(&mut self, event: &Event<'_>, event_line: usize) {
        match event {
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {}
            Event::MappingEnd | Event::SequenceEnd => return self.close(),
            _ => return,
        }
        if self.takes_key(event, event_line) {
            return;
        }
        let (token, line, parent_on_the_way) = self.position(event_line);
        let on_the_way = parent_on_the_way && self.leads_on(token.as_deref());
        if on_the_way {
            let mut here = self.path.clone();
            here.extend(token.clone());
            self.found.entry(here).or_insert(line);
        }
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if on_the_way && let Some(token) = token {
                    self.path.push(token);
                }
                let entries = match event {
                    Event::MappingStart(..) => Entries::Mapping {
                        key: None,
                        key_line: event_line,
                    },
                    _ => Entries::Sequence { next: 0 },
                };
                self.stack.push(Frame {
                    on_the_way,
                    entries,
                });
            }
            _ => end_value(&mut self.stack),
        }
    }

    /// A collection ends.
    fn close(&mut self) {
        if let Some(frame) = self.stack.pop()
            && frame.on_the_way
            && !self.stack.is_empty()
        {
            self.path.pop();
        }
        end_value(&mut self.stack);
    }

    /// A scalar key of a mapping is remembered for its value (true: nothing more to do);
    /// a complex key gets no name and is walked through like a value that no pointer
    /// names.
    fn takes_key(&mut self, event: &Event<'_>, event_line: usize) -> bool {
        let Some(Frame {
            entries: Entries::Mapping { key, key_line },
            ..
        }) = self.stack.last_mut()
        else {
            return false;
        };
        if key.is_some() {
            return false;
        }
        *key_line = event_line;
        if let Event::Scalar(value, ..) = event {
            *key = Some(Some(value.to_string()));
            return true;
        }
        *key = Some(None);
        false
    }

    /// The node's token in its parent, its line, and whether its parent is on the way.
    fn position(&mut self, event_line: usize) -> (Option<String>, usize, bool) {
        match self.stack.last_mut() {
            None => (None, event_line, true),
            Some(frame) => {
                let on_the_way = frame.on_the_way;
                match &mut frame.entries {
                    Entries::Sequence { next } => {
                        *next += 1;
                        (Some((*next - 1).to_string()), event_line, on_the_way)
                    }
                    Entries::Mapping { key, key_line } => {
                        (key.clone().flatten(), *key_line, on_the_way)
                    }
                }
            }
        }
    }

    /// Whether the node at `token` below the current path leads to a target.
    fn leads_on(&mut self, token: Option<&str>) -> bool {
        match token {
            None => self.stack.is_empty(),
            Some(token) => {
                self.path.push(token.to_owned());
                let on = self.on_the_way.contains(self.path.as_slice());
                self.path.pop();
                on
            }
        }
    }
}

/// The line of the node at `tokens`, or of its deepest ancestor that is there.
#[cfg(test)]
fn line(text: &Text, tokens: &[String]) -> usize {
    lines_of(text, &[tokens])[0]
}

/// A collection the parser is in.
struct Frame {
    /// Its path leads to a target.
    on_the_way: bool,
    /// Where it is in its entries.
    entries: Entries,
}

/// The state of a collection's entries.
enum Entries {
    /// A mapping: `key` is `None` while a key is awaited, then `Some` of the key's text
    /// (`Some(None)` for a key that is not a scalar), on `key_line`.
    Mapping {
        key: Option<Option<String>>,
        key_line: usize,
    },
    /// A sequence and the index of its next item.
    Sequence { next: usize },
}

/// A value is complete: its mapping awaits the next key.
fn end_value(stack: &mut [Frame]) {
    if let Some(Frame {
        entries: Entries::Mapping { key, .. },
        ..
    }) = stack.last_mut()
    {
        *key = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn text(yaml: &str, lines_before: usize) -> Text {
        Text {
            source: Arc::from(yaml),
            span: 0..yaml.len(),
            lines_before,
        }
    }

    fn at(yaml: &str, pointer: &[&str]) -> usize {
        let tokens: Vec<String> = pointer.iter().map(|t| (*t).to_owned()).collect();
        line(&text(yaml, 0), &tokens)
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: busybox
      containers:
        - name: web
          ports: [{containerPort: 80}]
          image: dhi.io/nginx:1.31
        -
          name: sidecar
          image:
            dhi.io/python:3.13
";

    #[test]
    fn nodes_are_found_on_their_keys_lines() {
        assert_eq!(at(DEPLOYMENT, &[]), 1);
        assert_eq!(at(DEPLOYMENT, &["kind"]), 2);
        assert_eq!(at(DEPLOYMENT, &["metadata", "name"]), 3);
        assert_eq!(at(DEPLOYMENT, &["spec", "template", "spec"]), 6);
        let containers = ["spec", "template", "spec", "containers"];
        assert_eq!(
            at(DEPLOYMENT, &[&containers[..], &["0", "image"]].concat()),
            13
        );
        assert_eq!(at(DEPLOYMENT, &[&containers[..], &["1"]].concat()), 15);
        assert_eq!(
            at(DEPLOYMENT, &[&containers[..], &["1", "image"]].concat()),
            16
        );
        let init = ["spec", "template", "spec", "initContainers", "0", "image"];
        assert_eq!(at(DEPLOYMENT, &init), 9);
    }

    #[test]
    fn a_missing_node_falls_back_to_its_deepest_ancestor() {
        let containers = ["spec", "template", "spec", "containers"];
        assert_eq!(
            at(DEPLOYMENT, &[&containers[..], &["5", "image"]].concat()),
            10
        );
        assert_eq!(at(DEPLOYMENT, &["status"]), 1);
        assert_eq!(at("", &["spec"]), 1);
        assert_eq!(at("kind: [unclosed", &["kind", "0"]), 1);
    }

    #[test]
    fn many_places_are_found_in_one_pass() {
        let containers = ["spec", "template", "spec", "containers"].map(String::from);
        let targets: Vec<Vec<String>> = [
            vec!["kind"],
            vec!["spec", "template", "spec", "containers", "1", "image"],
            vec!["spec", "template", "spec", "containers", "0", "image"],
            vec!["spec", "template", "spec", "containers", "9"],
            vec![],
        ]
        .into_iter()
        .map(|t| t.into_iter().map(String::from).collect())
        .collect();
        let paths: Vec<&[String]> = targets.iter().map(Vec::as_slice).collect();
        assert_eq!(lines_of(&text(DEPLOYMENT, 4), &paths), [6, 20, 17, 14, 5]);
        assert_eq!(line(&text(DEPLOYMENT, 0), &containers), 10);
    }

    #[test]
    fn lines_count_from_the_file_and_json_is_read_too() {
        let json = "{\n  \"spec\": {\n    \"containers\": [\n      {\"name\": \"a\"},\n      {\"name\": \"b\", \"image\": \"x\"}\n    ]\n  }\n}";
        let tokens = ["spec", "containers", "1", "image"].map(String::from);
        assert_eq!(line(&text(json, 10), &tokens), 15);
    }

    #[test]
    fn containers_are_found_by_name_in_every_list() {
        let object: Value = serde_saphyr::from_str(DEPLOYMENT).unwrap();
        let path = |name| container_path(&object, WorkloadKind::Deployment, name);
        let image = |list: &str, index: &str| {
            Some(
                ["spec", "template", "spec", list, index, "image"]
                    .map(String::from)
                    .to_vec(),
            )
        };
        assert_eq!(path("init"), image("initContainers", "0"));
        assert_eq!(path("sidecar"), image("containers", "1"));
        assert_eq!(path("missing"), None);
        assert_eq!(container_path(&object, WorkloadKind::Pod, "web"), None);
    }
}
