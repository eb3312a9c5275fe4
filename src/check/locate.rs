//! Lines in the files objects were read from, for reports that point into files
//! (`--output sarif`): the line of an object, or of a container's `image` in it.
//!
//! Documents are parsed once more, with the event parser (which expands no aliases),
//! only when a line is asked for; a document is one object as a rule, so that is cheap.

use std::collections::HashMap;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};

use super::input::{Document, Origin, Source, Text};
use dhi_policy::WorkloadKind;

/// The pod spec fields that hold containers, in the order the engine reports them.
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Finds lines in the documents a check read.
pub struct Locator<'d> {
    documents: HashMap<(&'d Source, usize), &'d Document>,
}

impl<'d> Locator<'d> {
    /// A locator over `documents`.
    pub fn new(documents: impl IntoIterator<Item = &'d Document>) -> Self {
        let documents = documents
            .into_iter()
            .filter_map(|document| {
                let number = document.origin.document?;
                Some(((&document.origin.source, number), document))
            })
            .collect();
        Self { documents }
    }

    /// The line (from 1) of the object at `origin`; of the `image` of its container
    /// named `container` when there is one.
    pub fn line(
        &self,
        origin: &Origin,
        kind: WorkloadKind,
        container: Option<&str>,
    ) -> Option<usize> {
        let document = self
            .documents
            .get(&(&origin.source, origin.document?))
            .copied()?;
        let mut tokens: Vec<String> = origin
            .pointer
            .tokens()
            .map(|token| token.decoded().into_owned())
            .collect();
        if let Some(name) = container {
            let object = document.value.pointer(origin.pointer.as_str());
            if let Some(path) = object.and_then(|object| container_path(object, kind, name)) {
                tokens.extend(path);
            }
        }
        Some(line(&document.text, &tokens))
    }
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

/// The line of the node at `tokens` in a document, or of the deepest ancestor of it that
/// is there (the document's first line at worst). A node that is a mapping's value is on
/// the line of its key.
pub fn line(text: &Text, tokens: &[String]) -> usize {
    let mut best = 1;
    // The collections the parser is in, and the tokens of all but the outermost: the
    // path to the current node's parent. `None` is a token no pointer names.
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<Option<String>> = Vec::new();
    for event in Parser::new_from_str(text.as_str()) {
        let Ok((event, span)) = event else { break };
        let event_line = span.start.line();
        match event {
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {}
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                if !stack.is_empty() {
                    path.pop();
                }
                end_value(&mut stack);
                continue;
            }
            _ => continue,
        }
        // A scalar key of a mapping is remembered for its value; a complex key gets no
        // name and is walked through like a value.
        if let Some(Frame::Mapping { key, key_line }) = stack.last_mut()
            && key.is_none()
        {
            *key_line = event_line;
            if let Event::Scalar(value, ..) = &event {
                *key = Some(Some(value.to_string()));
                continue;
            }
            *key = Some(None);
        }
        let (token, line) = match stack.last_mut() {
            None => (None, event_line),
            Some(Frame::Sequence { next }) => {
                *next += 1;
                (Some((*next - 1).to_string()), event_line)
            }
            Some(Frame::Mapping { key, key_line }) => (key.clone().flatten(), *key_line),
        };
        let depth = path.len() + usize::from(!stack.is_empty());
        let on_the_way = depth <= tokens.len()
            && path
                .iter()
                .chain(std::iter::once(&token).filter(|_| !stack.is_empty()))
                .zip(tokens)
                .all(|(step, wanted)| step.as_deref() == Some(wanted.as_str()));
        if on_the_way {
            best = line;
            if depth == tokens.len() {
                break;
            }
        }
        if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
            if !stack.is_empty() {
                path.push(token);
            }
            stack.push(match event {
                Event::MappingStart(..) => Frame::Mapping {
                    key: None,
                    key_line: event_line,
                },
                _ => Frame::Sequence { next: 0 },
            });
        } else {
            end_value(&mut stack);
        }
    }
    text.lines_before + best
}

/// The state of a collection the parser is in.
enum Frame {
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
    if let Some(Frame::Mapping { key, .. }) = stack.last_mut() {
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
