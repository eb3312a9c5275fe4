//! Container image references: parsing, normalisation, and what makes one "hardened".
//!
//! Parsing follows the Docker reference grammar ([`crate::reference`], checked against
//! `oci-spec`'s distribution reference), so that what we judge is what the kubelet would
//! pull. On top of it we normalise as Docker does (`nginx` is `docker.io/library/nginx`),
//! keep whether the tag was written or implied, and lower-case the registry host, which
//! DNS treats case-insensitively (`DHI.IO/python` pulls from `dhi.io`).

use std::borrow::Cow;
use std::fmt;

use crate::reference::{self, GrammarError};

/// Docker Hub, the registry of references that name none.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The registry that serves Docker Hardened Images.
pub const DHI_REGISTRY: &str = "dhi.io";
/// Mirrored hardened repositories keep their name behind this prefix.
pub const MIRROR_PREFIX: &str = "dhi-";
/// No valid reference is longer (host, repository, tag and sha512 digest at their limits).
pub const MAX_REFERENCE_LEN: usize = 1024;
/// Istio's sidecar injector fills `image: auto` in later; it is not a reference.
pub const ISTIO_AUTO: &str = "auto";

/// A parsed, normalised image reference, borrowed from the string it was read from:
/// only a lower-cased host or Docker Hub's implied `library/` needs an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Registry host (and port), lower-cased: `docker.io`, `dhi.io`, `localhost:5000`.
    pub registry: Cow<'a, str>,
    /// Repository path inside the registry: `library/nginx`, `istio/proxyv2`.
    pub repository: Cow<'a, str>,
    /// The tag as written; `None` when the reference relied on the implicit `latest`.
    pub tag: Option<&'a str>,
    /// `algorithm:hex` when the reference is pinned by digest.
    pub digest: Option<&'a str>,
}

/// The outcome of reading an `image` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageField<'a> {
    /// A placeholder a later mutating webhook replaces (Istio's `auto`).
    Placeholder,
    /// A well-formed reference.
    Ref(ImageRef<'a>),
}

/// Why an image string is not a valid reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// The string is empty or only whitespace.
    #[error("image reference is empty")]
    Empty,
    /// A repository path component contains upper-case letters.
    #[error("repository name must be lowercase")]
    Uppercase,
    /// Longer than any valid reference can be.
    #[error("reference is {0} bytes long; the longest valid one is {MAX_REFERENCE_LEN}")]
    TooLong(usize),
    /// The reference does not follow the Docker grammar.
    #[error(transparent)]
    Grammar(GrammarError),
}

impl<'a> ImageField<'a> {
    /// Parses the `image` field of a container.
    pub fn parse(raw: &'a str) -> Result<Self, ImageRefError> {
        if raw == ISTIO_AUTO {
            return Ok(Self::Placeholder);
        }
        ImageRef::parse(raw).map(Self::Ref)
    }
}

impl<'a> ImageRef<'a> {
    /// Parses and normalises a reference (`nginx` is `docker.io/library/nginx`, implicit tag).
    pub fn parse(raw: &'a str) -> Result<Self, ImageRefError> {
        if raw.trim().is_empty() {
            return Err(ImageRefError::Empty);
        }
        // Host (255) + repository (255) + tag (128) + the longest digest (sha512) fit well
        // inside this; anything longer is invalid, and is refused before it is parsed.
        if raw.len() > MAX_REFERENCE_LEN {
            return Err(ImageRefError::TooLong(raw.len()));
        }
        let parts = reference::split(raw).map_err(|err| match err {
            GrammarError::Uppercase => ImageRefError::Uppercase,
            other => ImageRefError::Grammar(other),
        })?;
        let registry = match parts.domain {
            None => Cow::Borrowed(DOCKER_HUB),
            Some(host) if host.bytes().any(|b| b.is_ascii_uppercase()) => {
                Cow::Owned(host.to_ascii_lowercase())
            }
            Some(host) => Cow::Borrowed(host),
        };
        let registry = match registry.as_ref() {
            DOCKER_HUB_LEGACY => Cow::Borrowed(DOCKER_HUB),
            // HTTPS is port 443: `dhi.io:443/python` pulls what `dhi.io/python` pulls, and
            // must be judged as it (tests/policy/no_bypass.rs: dhi_io_with_its_default_port_...).
            "dhi.io:443" => Cow::Borrowed(DHI_REGISTRY),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !parts.path.contains('/') {
            Cow::Owned(format!("library/{}", parts.path))
        } else {
            Cow::Borrowed(parts.path)
        };
        if repository.len() > reference::NAME_TOTAL_LENGTH_MAX {
            return Err(ImageRefError::Grammar(GrammarError::NameTooLong));
        }
        let (tag, digest) = (parts.tag, parts.digest);
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The last path component: `proxyv2` for `docker.io/istio/proxyv2`.
    pub fn name(&self) -> &str {
        self.repository
            .rsplit_once('/')
            .map_or(self.repository.as_ref(), |(_, name)| name)
    }

    /// `registry/repository`, without tag or digest: how upstream mappings name it.
    pub fn location(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The DHI repository this reference names, if it is a hardened image:
    /// `dhi.io/<repo>` or a mirror `<registry>/<path>/dhi-<repo>`.
    pub fn hardened_repo(&self) -> Option<&str> {
        if self.registry == DHI_REGISTRY {
            return Some(self.repository.as_ref());
        }
        self.name()
            .strip_prefix(MIRROR_PREFIX)
            .filter(|repo| !repo.is_empty())
    }

    /// The tag to look up in the catalog (`latest` when none was written).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> ImageRef<'_> {
        ImageRef::parse(raw).unwrap_or_else(|err| panic!("{raw}: {err}"))
    }

    #[test]
    fn bare_name_is_docker_hub_library_with_implicit_tag() {
        let r = parse("nginx");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_latest(), "latest");
        assert_eq!(r.to_string(), "docker.io/library/nginx");
    }

    #[test]
    fn explicit_latest_is_kept() {
        assert_eq!(parse("nginx:latest").tag, Some("latest"));
    }

    #[test]
    fn docker_hub_forms_are_equal() {
        let a = parse("nginx:1.27");
        assert_eq!(a, parse("docker.io/library/nginx:1.27"));
        assert_eq!(a, parse("index.docker.io/library/nginx:1.27"));
        assert_eq!(a, parse("library/nginx:1.27"));
    }

    #[test]
    fn localhost_with_port_is_a_registry() {
        let r = parse("localhost:5000/istio/proxyv2:1.30.3");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "istio/proxyv2");
        assert_eq!(r.tag, Some("1.30.3"));
    }

    #[test]
    fn tag_and_digest_both_kept() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = format!("dhi.io/python:3.13@{digest}");
        let r = parse(&pinned);
        assert_eq!(r.tag, Some("3.13"));
        assert_eq!(r.digest, Some(digest.as_str()));
        let digest_only = format!("dhi.io/python@{digest}");
        let r = parse(&digest_only);
        assert_eq!(r.tag, None);
    }

    #[test]
    fn registry_host_is_lowercased() {
        let r = parse("DHI.IO/python:3.13");
        assert_eq!(r.registry, "dhi.io");
        assert_eq!(r.hardened_repo(), Some("python"));
    }

    #[test]
    fn hardened_forms() {
        assert_eq!(
            parse("dhi.io/istio-proxyv2:1.30").hardened_repo(),
            Some("istio-proxyv2")
        );
        assert_eq!(
            parse("registry.example.com/platform/dhi-istio-proxyv2:1.30").hardened_repo(),
            Some("istio-proxyv2")
        );
        assert_eq!(parse("dhi-nginx").hardened_repo(), Some("nginx"));
        assert_eq!(parse("docker.io/istio/proxyv2:1.30").hardened_repo(), None);
        assert_eq!(parse("example.com/x/dhi").hardened_repo(), None);
        assert!(ImageRef::parse("example.com/dhi-").is_err());
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        assert_eq!(ImageRef::parse("  "), Err(ImageRefError::Empty));
        let long = format!("dhi.io/{}", "a".repeat(2000));
        assert_eq!(ImageRef::parse(&long), Err(ImageRefError::TooLong(2007)));
        assert_eq!(
            ImageRef::parse("dhi.io/Python:3"),
            Err(ImageRefError::Uppercase)
        );
        assert_eq!(ImageRef::parse("Nginx"), Err(ImageRefError::Uppercase));
        assert!(matches!(
            ImageRef::parse("nginx:"),
            Err(ImageRefError::Grammar(_))
        ));
        assert!(matches!(
            ImageRef::parse("a b"),
            Err(ImageRefError::Grammar(_))
        ));
        assert!(matches!(
            ImageRef::parse("dhi.io/python@sha256:abc"),
            Err(ImageRefError::Grammar(_))
        ));
        assert!(matches!(
            ImageRef::parse(&format!("dhi.io/python:3@sha256:{}", "a".repeat(63))),
            Err(ImageRefError::Grammar(_))
        ));
    }

    #[test]
    fn istio_auto_is_a_placeholder() {
        assert_eq!(ImageField::parse("auto"), Ok(ImageField::Placeholder));
        assert!(matches!(
            ImageField::parse("auto:1"),
            Ok(ImageField::Ref(_))
        ));
    }
}
