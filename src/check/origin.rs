//! Where a finding is: a source, a document in it, an object in the document. Every
//! part of `check` names places this way, so it is read, reported and located alike.

use std::fmt;
use std::path::{Path, PathBuf};

use json_patch::jsonptr::PointerBuf;

/// Where manifests are read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// Standard input (`-` on the command line).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl Source {
    /// The source a command-line path names: `-` is standard input.
    pub(super) fn of_arg(path: &Path) -> Self {
        if path.as_os_str() == "-" {
            Self::Stdin
        } else {
            Self::File(path.to_owned())
        }
    }
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
pub(super) struct Origin {
    /// The file, or standard input.
    pub source: Source,
    /// The document, counted from 1; `None` for the source as a whole.
    pub document: Option<usize>,
    /// JSON Pointer to the object inside the document; empty for the document itself.
    pub pointer: PointerBuf,
}

impl Origin {
    /// The source as a whole.
    pub(super) fn source(source: &Source) -> Self {
        Self {
            source: source.clone(),
            document: None,
            pointer: PointerBuf::new(),
        }
    }

    pub(super) fn document(source: &Source, number: usize) -> Self {
        Self {
            document: Some(number),
            ..Self::source(source)
        }
    }

    /// The origin of a value nested under this one.
    pub(super) fn child(&self, tokens: &[&str]) -> Self {
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
    pub(super) fn field_path(&self) -> String {
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
