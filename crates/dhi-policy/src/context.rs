//! What the rules ask, and the data they ask it of: the policy file, the catalog it
//! extends, and the rewrite table derived from them. The [`crate::Engine`] wraps one and
//! hands it to the rules, so the rules never see the engine's entry points.

use std::sync::Arc;

use crate::catalog::{Catalog, Snapshot};
use crate::glob::glob_match;
use crate::image_ref::{DOCKER_HUB, ImageField, ImageRef};
use crate::policy_file::{PolicyFile, TagCheck};
use crate::rewrite::{Equivalent, HardenedImage, MappingTable};

/// The engine's data and the questions asked of it.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) policy: PolicyFile,
    pub(crate) catalog: Catalog,
    mappings: MappingTable,
}

impl Context {
    pub(crate) fn new(policy: PolicyFile, snapshot: Arc<Snapshot>) -> Self {
        let catalog = Catalog::with_snapshot(policy.catalog.clone(), snapshot);
        let mappings = MappingTable::new(&policy);
        Self {
            policy,
            catalog,
            mappings,
        }
    }

    /// The policy in force.
    pub(crate) fn policy_file(&self) -> &PolicyFile {
        &self.policy
    }

    /// The catalog in force.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The guide that prescribes root for this hardened repository, when the policy
    /// takes the guides' word (`guides.rootByDesign`).
    pub(crate) fn guide_prescribing_root(&self, repo: &str) -> Option<&str> {
        if !self.policy.guides.root_by_design {
            return None;
        }
        self.catalog.root_by_guide(repo)
    }

    /// Requests in these namespaces are allowed untouched.
    pub(crate) fn is_exempt_namespace(&self, namespace: &str) -> bool {
        self.policy
            .exempt
            .namespaces
            .iter()
            .any(|ns| ns == namespace)
    }

    /// Exemption patterns match the normalised reference; printed only if there are any.
    pub(crate) fn is_exempt_image(&self, image: &ImageRef<'_>) -> bool {
        let patterns = &self.policy.exempt.images;
        if patterns.is_empty() {
            return false;
        }
        let written = image.to_string();
        patterns.iter().any(|pattern| glob_match(pattern, &written))
    }

    /// The hardened reference an upstream image maps to, if rewriting is on and the
    /// image is mapped (or is a Docker Official Image the catalog has, when enabled).
    pub(crate) fn rewrite_target<'a>(
        &'a self,
        image: &'a ImageRef<'_>,
    ) -> Option<HardenedImage<'a>> {
        let rewrite = &self.policy.rewrite;
        if !rewrite.enabled {
            return None;
        }
        self.hardened_target(image, rewrite.official_images)
    }

    /// What the catalog offers in place of an image, whether or not the webhook
    /// rewrites it: the migration fact `scan` and the audit report. The target is the
    /// one a rewrite would write (mappings, the policy's target template and tag
    /// transforms), and Docker Official Images count when the catalog has their name.
    pub(crate) fn equivalent(&self, image: &str) -> Equivalent {
        let Ok(ImageField::Ref(image)) = ImageField::parse(image) else {
            // Placeholders and invalid references: `invalid-image` reports the latter.
            return Equivalent::NotAnImage;
        };
        if image.hardened_repo().is_some() {
            return Equivalent::Hardened;
        }
        let Some(target) = self.hardened_target(&image, true) else {
            return Equivalent::None;
        };
        let catalog = &self.catalog;
        if self.policy.rewrite.tags == TagCheck::Any || catalog.has_tag(target.repo, target.tag) {
            Equivalent::Exact {
                target: target.image,
            }
        } else {
            Equivalent::OtherTags {
                repository: self.policy.rewrite.target.render(target.repo),
                tag: target.tag.to_owned(),
                nearest: catalog.nearest_lines(target.repo, target.tag),
            }
        }
    }

    fn hardened_target<'a>(
        &'a self,
        image: &'a ImageRef<'_>,
        official_images: bool,
    ) -> Option<HardenedImage<'a>> {
        let rewrite = &self.policy.rewrite;
        let (repo, tag): (&str, Option<&str>) =
            match self.mappings.get(&image.registry, &image.repository) {
                Some(m) => (m.to.as_str(), image.tag.map(|t| m.transform_tag(t))),
                None => {
                    let name = image
                        .repository
                        .strip_prefix("library/")
                        .filter(|_| image.registry == DOCKER_HUB)?;
                    if !official_images || !self.catalog.contains(name) {
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
        Some(HardenedImage {
            image: target,
            repo,
            tag: tag.unwrap_or("latest"),
        })
    }
}
