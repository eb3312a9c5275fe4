//! Which requests can be affected by a policy: the webhooks' `matchConditions` (CEL).
//!
//! kube-apiserver evaluates a webhook's match conditions before calling it and skips the
//! call when one is false. [`match_conditions`] derives them from the policy, so that a
//! pod with no hardened, mapped or unreadable image never waits for the webhook, and never
//! depends on it being up.
//!
//! # What is matched, and why it is a superset
//!
//! The conditions are ANDed by the API server; each is true unless it can prove the
//! engine would leave the request alone:
//!
//! - `exempt-namespaces` (only when the policy has some): the request's namespace is not
//!   exempt. Exact: the engine admits exempt namespaces untouched.
//! - `pod-spec-changed`: not an UPDATE, or the pod spec at the kind's path differs between
//!   `oldObject` and `object` (CEL equality is deep, over the whole spec; the engine compares
//!   a view of a few of its fields, so "equal in CEL" implies "unchanged for the engine").
//! - one `images-…` condition per place a pod spec sits ([`WorkloadKind::spec_path`]):
//!   for requests of those kinds, some init, regular or ephemeral container has an image
//!   that is *not clearly upstream and unmapped*. Kinds the engine does not know fall
//!   through every condition and are sent (the engine answers them).
//!
//! "Clearly upstream and unmapped" ([`upstream_and_unmapped`]) is deliberately narrow, so
//! that every doubt is sent to the webhook:
//!
//! - the string matches a strict subset of the reference grammar (lower-case host with a
//!   dot, optional port; lower-case path components; the first path component without a
//!   dot when no host is written, so it cannot be read as a host; tag as in the grammar;
//!   only `sha256` digests of 64 lower-case hex digits) and is at most 200 bytes. Every
//!   such string parses, so `invalid-image` never applies to it: unparsable images
//!   (upper case, bad digests, odd hosts) are always sent;
//! - it does not start with `dhi.io:` or `dhi.io/` (the engine's `dhi.io`, `dhi.io:443`),
//!   and the segment after its last `/` does not start with `dhi-` (mirrors);
//! - when rewriting is on: that segment's repository name is not the last component of any
//!   mapping's `from` (so `docker.io/istio/proxyv2` sends every `…/proxyv2`), and, when
//!   `officialImages` is on, it is not a Docker Hub name that could be `library/<name>`
//!   (`nginx`, `library/nginx`, `docker.io/nginx`, `index.docker.io/library/nginx`);
//! - Istio's `auto` placeholder is left alone, as the engine does (the reinvocation after
//!   the injector sees the real image).
//!
//! Image exemptions and Windows pods are not used to narrow the conditions: sending those
//! costs a call, never a wrong answer.
//!
//! # Where they apply
//!
//! The shipped manifests put them on the validating configuration only. Validating
//! webhooks see the object after every mutating one, so the conditions judge the pod as
//! it will be stored. A mutating webhook skipped by its conditions in the first round is
//! not reinvoked (`reinvocationPolicy: IfNeeded` reinvokes only webhooks that were
//! called), so on the mutating configuration they would miss the hardened or mapped
//! containers a later sidecar injector adds to a pod whose own images are upstream
//! (found by tests/e2e/reinvocation.rs). They are still a superset for each single call.
//!
//! # Cost
//!
//! Each expression is linear in the object: one pass over each container list, one
//! anchored RE2 match per image (bounded by its length), one deep comparison of the old
//! and new pod spec on UPDATE. The regular expressions use `[.]` rather than `\.`, so the
//! expressions need no escaping in CEL or YAML. A policy yields at most
//! `3 + distinct spec paths` (7) conditions, far below the API server's limit of 64.

use std::collections::BTreeSet;

use crate::policy_file::PolicyFile;
use crate::workload::WorkloadKind;

/// One `matchConditions` entry of a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchCondition {
    /// Unique within the webhook; a qualified name (`pod-spec-changed`).
    pub name: String,
    /// The CEL expression; the webhook is called only if every one is true.
    pub expression: String,
}

/// The longest image string [`upstream_and_unmapped`] accepts: with Docker Hub's
/// `library/` added it stays under the grammar's 255-byte repository limit.
pub const MAX_CLASSIFIED_LEN: usize = 200;

/// A host with a dot (so it is read as one), lower case, optional port.
const HOST: &str = "[a-z0-9]+(-+[a-z0-9]+)*([.][a-z0-9]+(-+[a-z0-9]+)*)+(:[0-9]+)?";
/// A path component, exactly as in the grammar.
const COMPONENT: &str = "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*";
/// A first path component that cannot be read as a host: no dot.
const FIRST_COMPONENT: &str = "[a-z0-9]+((_|__|-+)[a-z0-9]+)*";
const TAG: &str = "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?";
const DIGEST: &str = "(@sha256:[0-9a-f]{64})?";

/// The strict, always-valid subset of the reference grammar, anchored.
pub fn strict_reference_regex() -> String {
    format!("^({HOST}/{COMPONENT}|{FIRST_COMPONENT})(/{COMPONENT})*{TAG}{DIGEST}$")
}

/// Images of a strict reference that the engine may act on: hardened, mapped, official.
pub fn affected_regex(policy: &PolicyFile) -> String {
    let mut alternatives = vec![
        // dhi.io, dhi.io:443 (and any other port: cheaper than exact, and still a superset).
        "^dhi[.]io[:/]".to_owned(),
        // A mirror: the last path component starts with `dhi-`.
        "(^|/)dhi-[^/]*$".to_owned(),
    ];
    if policy.rewrite.enabled {
        let names: BTreeSet<String> = policy
            .mappings()
            .keys()
            .map(|from| from.rsplit('/').next().unwrap_or(from).replace('.', "[.]"))
            .collect();
        if !names.is_empty() {
            let names: Vec<String> = names.into_iter().collect();
            alternatives.push(format!("(^|/)({})([:@][^/]*)?$", names.join("|")));
        }
        if policy.rewrite.official_images {
            alternatives.push("^((index[.])?docker[.]io/)?(library/)?[^/]+$".to_owned());
        }
    }
    alternatives.join("|")
}

/// A CEL expression, over the string expression `image`, that is true when the engine
/// can leave a container with that image alone whatever else the pod says.
pub fn upstream_and_unmapped(policy: &PolicyFile, image: &str) -> String {
    format!(
        "{image} == 'auto' || size({image}) <= {MAX_CLASSIFIED_LEN} && {image}.matches('{}') && !{image}.matches('{}')",
        strict_reference_regex(),
        affected_regex(policy),
    )
}

/// The webhooks' `matchConditions` for a policy. The same list serves both webhooks: it
/// is a superset of what either acts on.
pub fn match_conditions(policy: &PolicyFile) -> Vec<MatchCondition> {
    let mut out = Vec::new();
    if !policy.exempt.namespaces.is_empty() {
        let list: Vec<String> = policy
            .exempt
            .namespaces
            .iter()
            .map(|ns| cel_string(ns))
            .collect();
        out.push(MatchCondition {
            name: "exempt-namespaces".to_owned(),
            expression: format!("!(request.namespace in [{}])", list.join(", ")),
        });
    }
    let groups = path_groups();
    // A ternary binds loosest in CEL: the chain is parenthesised.
    let mut changed = String::from("request.operation != 'UPDATE' || oldObject == null || (");
    for (path, kinds) in &groups {
        changed.push_str(&format!("{} ? {} : ", kind_in(kinds), spec_changed(path)));
    }
    changed.push_str("true)");
    out.push(MatchCondition {
        name: "pod-spec-changed".to_owned(),
        expression: changed,
    });
    let affected = format!("!({})", upstream_and_unmapped(policy, "c.image"));
    for (path, kinds) in &groups {
        let spec = format!("object.{}", path.join("."));
        let lists: Vec<String> = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .map(|list| {
                format!("has({spec}.{list}) && {spec}.{list}.exists(c, has(c.image) && {affected})")
            })
            .collect();
        out.push(MatchCondition {
            name: format!("images-{}", group_name(path)),
            expression: format!(
                "!({}) || object != null && {} && ({})",
                kind_in(kinds),
                present("object", path),
                lists.join(" || ")
            ),
        });
    }
    out
}

/// Workload kinds grouped by where their pod spec sits, in [`WorkloadKind::ALL`] order.
fn path_groups() -> Vec<(&'static [&'static str], Vec<WorkloadKind>)> {
    let mut groups: Vec<(&'static [&'static str], Vec<WorkloadKind>)> = Vec::new();
    for kind in WorkloadKind::ALL {
        match groups
            .iter_mut()
            .find(|(path, _)| *path == kind.spec_path())
        {
            Some((_, kinds)) => kinds.push(kind),
            None => groups.push((kind.spec_path(), vec![kind])),
        }
    }
    groups
}

/// `pod`, `podtemplate`, `template` (every `spec.template.spec` kind), `cronjob`.
fn group_name(path: &[&str]) -> &'static str {
    match path {
        ["spec"] => "pod",
        ["template", "spec"] => "podtemplate",
        ["spec", "template", "spec"] => "template",
        _ => "cronjob",
    }
}

fn kind_in(kinds: &[WorkloadKind]) -> String {
    match kinds {
        [one] => format!("request.kind.kind == '{}'", one.as_str()),
        many => {
            let names: Vec<String> = many.iter().map(|k| format!("'{}'", k.as_str())).collect();
            format!("request.kind.kind in [{}]", names.join(", "))
        }
    }
}

/// `has(x.a) && has(x.a.b)`: the path is there (no error on absent fields).
fn present(root: &str, path: &[&str]) -> String {
    (1..=path.len())
        .map(|n| format!("has({root}.{})", path[..n].join(".")))
        .collect::<Vec<_>>()
        .join(" && ")
}

fn spec_changed(path: &[&str]) -> String {
    let (new, old) = (present("object", path), present("oldObject", path));
    let dotted = path.join(".");
    format!("(({new}) != ({old}) || ({new}) && object.{dotted} != oldObject.{dotted})")
}

/// A CEL string literal.
fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_conditions() {
        let conditions = match_conditions(&PolicyFile::default());
        let names: Vec<&str> = conditions.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pod-spec-changed",
                "images-pod",
                "images-podtemplate",
                "images-template",
                "images-cronjob"
            ]
        );
        assert_eq!(
            conditions[1].expression.matches(".matches(").count(),
            6,
            "two regular expressions per container list"
        );
        assert!(conditions.iter().all(|c| !c.expression.contains('\\')));
    }

    #[test]
    fn mapped_names_and_official_images() {
        let policy = PolicyFile::default();
        assert_eq!(
            affected_regex(&policy),
            "^dhi[.]io[:/]|(^|/)dhi-[^/]*$|(^|/)(hubble-relay|install-cni|pilot|proxyv2|startup-script)([:@][^/]*)?$"
        );
        let official = PolicyFile::from_yaml("rewrite: {officialImages: true}").unwrap();
        assert!(
            affected_regex(&official).ends_with("|^((index[.])?docker[.]io/)?(library/)?[^/]+$")
        );
        let off = PolicyFile::from_yaml("rewrite: {enabled: false, officialImages: true}").unwrap();
        assert_eq!(affected_regex(&off), "^dhi[.]io[:/]|(^|/)dhi-[^/]*$");
    }

    #[test]
    fn exempt_namespaces_are_quoted() {
        let policy = PolicyFile::from_yaml("exempt: {namespaces: [legacy, \"it's\"]}").unwrap();
        let first = &match_conditions(&policy)[0];
        assert_eq!(first.name, "exempt-namespaces");
        assert_eq!(
            first.expression,
            r"!(request.namespace in ['legacy', 'it\'s'])"
        );
    }
}
