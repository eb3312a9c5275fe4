//! The Docker image reference grammar (distribution/reference), parsed by hand.
//!
//! `oci-spec` implements the same grammar as one large regex, whose compilation costs
//! start-up time and resident memory (its `\w` is Unicode-aware) and whose matching
//! dominated the engine's per-request CPU (figures in bench/README.md). This parser
//! walks the string once and allocates nothing; `tests/policy/reference_oracle.rs`
//! checks it against `oci-spec` on generated references, so the grammar stays the same.
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ domain "/" ] path
//! domain           := host [ ":" port ]          host := label ( "." label )* | "[" ipv6 "]"
//! ipv6             := [0-9A-Fa-f:]+ ( containing a ":" )
//! label            := [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
//! path             := component ( "/" component )*
//! component        := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag              := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest           := algorithm ":" [0-9a-f]{32,}   (upper case: the kubelet refuses it)
//! algorithm        := [A-Za-z][A-Za-z0-9]* ( [-_+.] [A-Za-z][A-Za-z0-9]* )*
//! ```
//!
//! The first path segment is a domain when it contains `.` or `:` or is `localhost`,
//! as in Docker. Docker also reads a segment with upper case as a domain (`Foo/bar`);
//! that reading cannot be told from a mistyped repository, so it is refused.

/// The longest repository path (after `library/` is added for Docker Hub).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A reference split into its parts, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    /// The registry host and port, as written, if the reference names one.
    pub domain: Option<&'a str>,
    /// The repository path, as written (`nginx`, `istio/proxyv2`).
    pub path: &'a str,
    /// The tag, if written.
    pub tag: Option<&'a str>,
    /// `algorithm:hex`, if written.
    pub digest: Option<&'a str>,
}

/// Why a string is not a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    /// The name, domain or overall shape is malformed.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The tag is malformed or longer than 128 characters.
    #[error("invalid tag format")]
    TagInvalidFormat,
    /// The digest is not `algorithm:hex` with at least 32 hex digits.
    #[error("invalid checksum digest format")]
    DigestInvalidFormat,
    /// A sha256/sha384/sha512 digest of the wrong length.
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    /// A digest algorithm other than sha256, sha384 or sha512.
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
    /// The repository path is longer than 255 characters.
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    /// The repository path contains upper-case letters.
    #[error("repository name must be lowercase")]
    Uppercase,
}

/// Splits and validates a reference.
pub fn split(raw: &str) -> Result<Parts<'_>, GrammarError> {
    let (name_tag, digest) = match memchr(raw.as_bytes(), b'@') {
        Some(at) => (&raw[..at], Some(validate_digest(&raw[at + 1..])?)),
        None => (raw, None),
    };
    // One pass for the separators: a ':' after the last '/' starts the tag; one before
    // it belongs to a port.
    let (mut first_slash, mut last_slash, mut last_colon) = (None, None, None);
    for (i, b) in name_tag.bytes().enumerate() {
        match b {
            b'/' => {
                first_slash.get_or_insert(i);
                last_slash = Some(i);
            }
            b':' => last_colon = Some(i),
            _ => {}
        }
    }
    let (name, tag) = match last_colon {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            let tag = &name_tag[colon + 1..];
            if !is_tag(tag) {
                return Err(GrammarError::TagInvalidFormat);
            }
            (&name_tag[..colon], Some(tag))
        }
        _ => (name_tag, None),
    };
    // With a tag, every '/' is before its ':', so the first '/' of `name_tag` is `name`'s.
    let (domain, path) = match first_slash {
        Some(slash) => {
            let first = &name[..slash];
            if first.bytes().any(|b| b == b'.' || b == b':') || first == "localhost" {
                if !is_domain(first) {
                    return Err(GrammarError::InvalidFormat);
                }
                (Some(first), &name[slash + 1..])
            } else {
                (None, name)
            }
        }
        None => (None, name),
    };
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(GrammarError::Uppercase);
    }
    if path.is_empty() || !path.split('/').all(is_path_component) {
        return Err(GrammarError::InvalidFormat);
    }
    Ok(Parts {
        domain,
        path,
        tag,
        digest,
    })
}

fn memchr(bytes: &[u8], needle: u8) -> Option<usize> {
    bytes.iter().position(|&b| b == needle)
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().copied().is_some_and(alnum) || !bytes.last().copied().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run, which the checks above put between two alphanumerics.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `label ( "." label )* [ ":" port ]`, or a bracketed IPv6 address with an optional port.
fn is_domain(domain: &str) -> bool {
    let port_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = domain.strip_prefix('[') {
        let Some(end) = memchr(rest.as_bytes(), b']') else {
            return false;
        };
        let (address, after) = (&rest[..end], &rest[end + 1..]);
        let address_ok =
            address.contains(':') && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        return address_ok && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (host, port) = match memchr(domain.as_bytes(), b':') {
        Some(colon) => (&domain[..colon], Some(&domain[colon + 1..])),
        None => (domain, None),
    };
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}`
fn is_tag(tag: &str) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(&b[0])
        && b[1..].iter().all(|c| word(c) || *c == b'.' || *c == b'-')
}

/// `algorithm ":" hex`, with the hex length fixed for the algorithms registries use.
fn validate_digest(digest: &str) -> Result<&str, GrammarError> {
    let colon = memchr(digest.as_bytes(), b':').ok_or(GrammarError::DigestInvalidFormat)?;
    let (algorithm, hex) = (&digest[..colon], &digest[colon + 1..]);
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    // Lower case only: the kubelet (go-digest) refuses `sha256:ABC...`, so a pod with
    // one would never start.
    let hex_ok = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(hex_ok) {
        return Err(GrammarError::DigestInvalidFormat);
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(GrammarError::DigestUnsupported),
    };
    if hex.len() != expected {
        return Err(GrammarError::DigestInvalidLength);
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_form() {
        let d = format!("sha256:{}", "a".repeat(64));
        let with_digest = format!("localhost:5000/a/b:1.0@{d}");
        assert_eq!(
            split(&with_digest),
            Ok(Parts {
                domain: Some("localhost:5000"),
                path: "a/b",
                tag: Some("1.0"),
                digest: Some(&d)
            })
        );
        assert_eq!(
            split("nginx"),
            Ok(Parts {
                domain: None,
                path: "nginx",
                tag: None,
                digest: None
            })
        );
        assert_eq!(
            split("istio/proxyv2:1"),
            Ok(Parts {
                domain: None,
                path: "istio/proxyv2",
                tag: Some("1"),
                digest: None
            })
        );
        assert_eq!(split("localhost/x").unwrap().domain, Some("localhost"));
        assert_eq!(split("a:5000/x").unwrap().domain, Some("a:5000"));
        assert_eq!(
            split("[fd00::10]:5000/team/app:1.4.2"),
            Ok(Parts {
                domain: Some("[fd00::10]:5000"),
                path: "team/app",
                tag: Some("1.4.2"),
                digest: None
            })
        );
        assert_eq!(split("[::1]/app").unwrap().domain, Some("[::1]"));
        for bad in [
            "[fd00::10/app",
            "[]/app",
            "[fd00::g]/app",
            "[fd00::1]:/app",
            "[fd00::1]x/app",
        ] {
            assert_eq!(split(bad), Err(GrammarError::InvalidFormat), "{bad}");
        }
    }

    #[test]
    fn separators() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a1.b2_c3__d4-e5"] {
            assert!(split(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a._b", "a___b", "a-_b", "-a", "a-", "a..b", "_a", "a/", "/a", "a//b", "",
        ] {
            assert_eq!(split(bad), Err(GrammarError::InvalidFormat), "{bad}");
        }
    }

    #[test]
    fn domains_tags_digests() {
        assert_eq!(split("-a.com/x"), Err(GrammarError::InvalidFormat));
        assert_eq!(split("a.com:/x"), Err(GrammarError::InvalidFormat));
        assert_eq!(split("a.com:x1/x"), Err(GrammarError::InvalidFormat));
        assert_eq!(split("x:"), Err(GrammarError::TagInvalidFormat));
        assert_eq!(split("x:.a"), Err(GrammarError::TagInvalidFormat));
        assert!(split(&format!("x:{}", "a".repeat(128))).is_ok());
        assert_eq!(
            split(&format!("x:{}", "a".repeat(129))),
            Err(GrammarError::TagInvalidFormat)
        );
        assert_eq!(
            split("x@sha256:abc"),
            Err(GrammarError::DigestInvalidFormat)
        );
        assert_eq!(
            split(&format!("x@sha256:{}", "a".repeat(63))),
            Err(GrammarError::DigestInvalidLength)
        );
        assert_eq!(
            split(&format!("x@md5:{}", "a".repeat(32))),
            Err(GrammarError::DigestUnsupported)
        );
        assert_eq!(
            split(&format!("x@sha256:{}", "A".repeat(64))),
            Err(GrammarError::DigestInvalidFormat)
        );
        assert_eq!(split("Foo/bar"), Err(GrammarError::Uppercase));
        assert_eq!(split("DHI.IO/python").unwrap().domain, Some("DHI.IO"));
    }
}
