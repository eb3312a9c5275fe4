//! The hand-written reference parser against `oci-spec`'s regex implementation of the
//! same grammar, on generated reference-like strings: both accept the same strings and
//! split them the same way. Differences that are deliberate are filtered out below.

use dhi_policy::image_ref::ImageRef;
use oci_spec::distribution::Reference;
use proptest::prelude::*;

/// Strings matching a regex.
fn re(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern)
        .expect("valid regex")
        .boxed()
}

fn just(s: &str) -> BoxedStrategy<String> {
    Just(s.to_owned()).boxed()
}

/// Reference-shaped strings: mostly valid pieces, with the characters that break them.
fn reference_like() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,3}[a-zA-Z0-9])?";
    let domain = prop_oneof![
        just(""),
        re(&format!("{label}(\\.{label}){{0,2}}(:[0-9]{{1,5}})?/")),
        just("localhost/"),
        just("localhost:5000/"),
        just("dhi.io/"),
        just("index.docker.io/"),
    ];
    let component = "[a-z0-9]{1,4}(([._]|__|-{1,2})[a-z0-9]{1,3}){0,2}";
    let path = prop_oneof![
        re(&format!("{component}(/{component}){{0,2}}")),
        re("[a-zA-Z0-9._/-]{1,12}"),
    ];
    let tag = prop_oneof![
        just(""),
        re(":[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,8}"),
        re(":[a-zA-Z0-9_.:-]{0,4}"),
    ];
    let digest = prop_oneof![
        4 => just(""),
        1 => Just(format!("@sha256:{}", "ab".repeat(32))).boxed(),
        1 => Just(format!("@sha512:{}", "0f".repeat(64))).boxed(),
        1 => re("@sha256:[0-9a-f]{60,66}"),
        1 => re("@[a-z0-9+._-]{2,8}:[0-9a-fA-F]{30,34}"),
    ];
    (domain, path, tag, digest).prop_map(|(d, p, t, g)| format!("{d}{p}{t}{g}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn same_verdict_and_parts_as_oci_spec(raw in reference_like()) {
        let ours = ImageRef::parse(&raw);
        let theirs = Reference::try_from(raw.as_str());
        // Deliberate: a first segment with upper case and no '.' or ':' is a registry
        // host to Docker and a path to oci-spec; we refuse it rather than pick one.
        let first = raw.split('/').next().unwrap_or("");
        let ambiguous = raw.contains('/') && !first.contains(['.', ':'])
            && first.bytes().any(|b| b.is_ascii_uppercase());
        // Deliberate: oci-spec takes `0.a_0/a` as registry `0.a_0` (the whole name matched
        // its path pattern, then the first segment became the host); no such host can
        // exist, so we refuse the reference.
        let bad_host = raw.contains('/') && first.contains(['.', ':'])
            && !first.split(':').next().unwrap_or("").split('.').all(|label| {
                !label.is_empty() && !label.starts_with('-') && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ambiguous || bad_host {
            prop_assert!(ours.is_err(), "{raw}");
            return Ok(());
        }
        match (&ours, &theirs) {
            (Ok(ours), Ok(theirs)) => {
                prop_assert_eq!(&ours.registry, &theirs.registry().to_ascii_lowercase(), "{}", raw);
                prop_assert_eq!(&ours.repository, theirs.repository(), "{}", raw);
                prop_assert_eq!(ours.digest, theirs.digest(), "{}", raw);
                // oci-spec fills in `latest`; we keep only what was written.
                if ours.tag.is_some() || theirs.digest().is_some() {
                    prop_assert_eq!(ours.tag, theirs.tag(), "{}", raw);
                } else {
                    prop_assert_eq!(theirs.tag(), Some("latest"), "{}", raw);
                }
            }
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{raw}: ours {ours:?}, oci-spec {theirs:?}"),
        }
    }
}

#[test]
fn known_forms_agree() {
    for raw in [
        "nginx",
        "nginx:1.27",
        "library/nginx",
        "docker.io/library/nginx:latest",
        "index.docker.io/nginx",
        "localhost:5000/istio/proxyv2:1.30.3",
        "dhi.io/python:3.13-dev",
        "registry.example.com/platform/dhi-istio-proxyv2:1.30.3",
        "quay.io/cilium/hubble-relay:v1.20.1",
        "gcr.io/istio-release/pilot:1.30.3-distroless",
    ] {
        let ours = ImageRef::parse(raw).unwrap();
        let theirs = Reference::try_from(raw).unwrap();
        assert_eq!(ours.registry, theirs.registry(), "{raw}");
        assert_eq!(ours.repository, theirs.repository(), "{raw}");
    }
}
