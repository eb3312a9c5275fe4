//! Which hardened image an upstream image becomes.
//!
//! Looked up for every container that is not already hardened, so the table is a
//! sorted slice searched by `(registry, repository)` borrowed from the parsed
//! reference: no key is built per request.

use super::Engine;
use super::image_ref::{DOCKER_HUB, ImageRef};
use super::settings::{Mapping, Settings};

/// The effective upstream mappings, sorted by `(registry, repository)`.
#[derive(Debug, Clone, Default)]
pub(super) struct MappingTable(Vec<(String, String, Mapping)>);

impl MappingTable {
    pub(super) fn new(settings: &Settings) -> Self {
        let mut entries: Vec<_> = settings
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

    fn get(&self, registry: &str, repository: &str) -> Option<&Mapping> {
        self.0
            .binary_search_by(|(r, p, _)| (r.as_str(), p.as_str()).cmp(&(registry, repository)))
            .ok()
            .map(|i| &self.0[i].2)
    }
}

/// The hardened image an upstream reference maps to.
#[derive(Debug)]
pub(super) struct Target<'a> {
    /// The reference to write into the pod (`dhi.io/istio-proxyv2:1.30.3`).
    pub image: String,
    /// The DHI repository, for the catalog (`istio-proxyv2`).
    pub repo: &'a str,
    /// The hardened tag, for the catalog (`latest` when none was written).
    pub tag: &'a str,
}

impl Engine {
    /// The hardened reference an upstream image maps to, if rewriting is on and the
    /// image is mapped (or is a Docker Official Image the catalog has, when enabled).
    pub(super) fn rewrite_target<'a>(&'a self, image: &'a ImageRef<'_>) -> Option<Target<'a>> {
        let rewrite = &self.settings.rewrite;
        if !rewrite.enabled {
            return None;
        }
        let (repo, tag): (&str, Option<&str>) =
            match self.mappings.get(&image.registry, &image.repository) {
                Some(m) => (m.to.as_str(), image.tag.map(|t| m.transform_tag(t))),
                None => {
                    let name = image
                        .repository
                        .strip_prefix("library/")
                        .filter(|_| image.registry == DOCKER_HUB)?;
                    if !rewrite.official_images || !self.catalog.contains(name) {
                        return None;
                    }
                    (name, image.tag)
                }
            };
        let target = rewrite.target.render_tagged(repo, tag);
        // A stripped tag can be no tag at all (`v` → ``, `v.1` → `.1`), and a long name
        // can overflow the path limit: never rewrite to an image the kubelet could not
        // pull (found by fuzz/engine_pod).
        ImageRef::parse(&target).ok()?;
        Some(Target {
            image: target,
            repo,
            tag: tag.unwrap_or("latest"),
        })
    }
}
