//! Which hardened image an upstream image becomes.
//!
//! Looked up for every container that is not already hardened, so the table is a
//! sorted slice searched by `(registry, repository)` borrowed from the parsed
//! reference: no key is built per request.

use serde::Serialize;

use crate::policy_file::{Mapping, PolicyFile};

/// The effective upstream mappings, sorted by `(registry, repository)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct MappingTable(Vec<(String, String, Mapping)>);

impl MappingTable {
    pub(crate) fn new(policy: &PolicyFile) -> Self {
        let mut entries: Vec<_> = policy
            .mappings()
            .into_values()
            .filter_map(|m| {
                // `from` is validated as a normalised `registry/repository` when the
                // policy is loaded; the host never contains '/'.
                let (registry, repository) = m.from.split_once('/')?;
                Some((registry.to_owned(), repository.to_owned(), m))
            })
            .collect();
        entries.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Self(entries)
    }

    pub(crate) fn get(&self, registry: &str, repository: &str) -> Option<&Mapping> {
        self.0
            .binary_search_by(|(r, p, _)| (r.as_str(), p.as_str()).cmp(&(registry, repository)))
            .ok()
            .map(|i| &self.0[i].2)
    }
}

/// The hardened image an upstream reference maps to.
#[derive(Debug)]
pub(crate) struct HardenedImage<'a> {
    /// The reference to write into the pod (`dhi.io/istio-proxyv2:1.30.3`).
    pub image: String,
    /// The DHI repository, for the catalog (`istio-proxyv2`).
    pub repo: &'a str,
    /// The hardened tag, for the catalog (`latest` when none was written).
    pub tag: &'a str,
}

/// What the catalog offers in place of an image ([`Engine::equivalent`]).
///
/// [`Engine::equivalent`]: crate::Engine::equivalent
///
/// Serialised as reports show it: `{"equivalent": "exact", "target": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "equivalent", rename_all = "kebab-case")]
pub enum Equivalent {
    /// Already a Docker Hardened Image (or a mirror of one).
    Hardened,
    /// The catalog lists this exact reference.
    Exact {
        /// The reference to run (`dhi.io/nginx:1.29`), through the policy's target template.
        target: String,
    },
    /// The catalog has the repository but not the tag.
    OtherTags {
        /// The repository (`dhi.io/nginx`), through the policy's target template.
        repository: String,
        /// The tag asked for (`latest` when none was written).
        tag: String,
        /// The nearest version lines it lists (at most three).
        nearest: Vec<String>,
    },
    /// No hardened equivalent is known.
    None,
    /// A placeholder or an invalid reference.
    NotAnImage,
}

impl Equivalent {
    /// Whether a migration report lists it: an upstream image, with or without an offer.
    pub fn is_upstream(&self) -> bool {
        !matches!(self, Self::Hardened | Self::NotAnImage)
    }

    /// For tables and PolicyReport properties: the target, `REPO (no TAG; LINES)`, or `none`.
    pub fn describe(&self) -> String {
        match self {
            Self::Exact { target } => target.clone(),
            Self::OtherTags {
                repository,
                tag,
                nearest,
            } if nearest.is_empty() => format!("{repository} (no tag {tag})"),
            Self::OtherTags {
                repository,
                tag,
                nearest,
            } => format!("{repository} (no tag {tag}; lines {})", nearest.join(", ")),
            Self::None => "none".to_owned(),
            Self::Hardened => "hardened".to_owned(),
            Self::NotAnImage => "not an image".to_owned(),
        }
    }
}
