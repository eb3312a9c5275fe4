//! The compiled-in snapshot, `builtin.jsonl`: the DHI catalog export in a compact form
//! written by `tools/gen_catalog.py`, expanded into a [`Snapshot`] once, at first use.
//!
//! The export lists every tag (18,000, 1 MiB); the catalog generates them as products
//! of version aliases and suffixes, so that is what is stored, one line per repository:
//!
//! ```text
//! {"source": "...", "tails": [["", "-debian", "-debian13"], ...],      header
//!  "guides": "...", "root_by_guide": {"clamav": "image/clamav/guides.md:201", ...},
//!  "bind_by_file_cap": {"nginx-ingress": "image/nginx-ingress/... (/usr/sbin/nginx ...)"}}
//! ["adc", [["dev 0", ["node", "/opt/adc/main.cjs"]], ["run 65532"]],     name, variants,
//!  ["0.29.0"], [[1, 0, 0], [0, 0, 1]]]                                   versions, groups
//! ```
//!
//! * a variant is `"run|dev UID[:GID]"`, then its entrypoint and cmd; both are left out
//!   when they are the previous variant's, cmd alone when empty;
//! * a version set is a string of space-separated versions, each standing for itself
//!   and its prefixes (`0.29.0` is `0`, `0.29`, `0.29.0`), or a list of exactly those;
//! * a group `[variant, version set, suffixes]` lists every version followed by every
//!   suffix; suffixes are an index into the header's `tails`, `[heads, index]` (each
//!   head followed by each of those tails), or a list;
//! * `root_by_guide` names the repositories whose own guide's Kubernetes examples set
//!   `runAsUser: 0`, with where (from guides.json, whose source `guides` names);
//!   `bind_by_file_cap` those with a binary given the file capability
//!   cap_net_bind_service by their definitions.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Repo, Snapshot, SnapshotError, VariantInfo};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    source: String,
    tails: Vec<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    // Provenance for a reader of the file; the engine needs only the facts.
    guides: Option<String>,
    #[serde(default)]
    root_by_guide: BTreeMap<String, String>,
    #[serde(default)]
    bind_by_file_cap: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Line(
    String,
    Vec<CompactVariant>,
    Vec<Versions>,
    Vec<(usize, usize, Suffixes)>,
);

#[derive(Deserialize)]
struct CompactVariant(
    String,
    #[serde(default)] Option<Vec<String>>,
    #[serde(default)] Option<Vec<String>>,
);

#[derive(Deserialize)]
#[serde(untagged)]
enum Versions {
    WithPrefixes(String),
    Exact(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Suffixes {
    Shared(usize),
    Product(Vec<String>, usize),
    Listed(Vec<String>),
}

fn invalid(what: String) -> SnapshotError {
    SnapshotError::Invalid(what)
}

/// Expands the compact form into a snapshot.
pub(super) fn decode(text: &str, origin: &str) -> Result<Snapshot, SnapshotError> {
    let mut lines = text.lines();
    let header: Header =
        serde_json::from_str(lines.next().unwrap_or_default()).map_err(SnapshotError::Format)?;
    let mut repos = Vec::new();
    for line in lines {
        let Line(name, variants, version_sets, groups) =
            serde_json::from_str(line).map_err(SnapshotError::Format)?;
        let variants = decode_variants(&name, variants)?;
        let version_sets: Vec<Vec<String>> = version_sets.into_iter().map(expand).collect();
        let mut tags = BTreeMap::new();
        for (variant, versions, suffixes) in groups {
            let versions = version_sets
                .get(versions)
                .ok_or_else(|| invalid(format!("{name}: no version set {versions}")))?;
            if variant >= variants.len() {
                return Err(invalid(format!("{name}: no variant {variant}")));
            }
            let tail = |i: usize| {
                header
                    .tails
                    .get(i)
                    .ok_or_else(|| invalid(format!("{name}: no tails {i}")))
            };
            let suffixes: Vec<String> = match suffixes {
                Suffixes::Shared(i) => tail(i)?.clone(),
                Suffixes::Product(heads, i) => {
                    let tails = tail(i)?;
                    heads
                        .iter()
                        .flat_map(|h| tails.iter().map(move |t| format!("{h}{t}")))
                        .collect()
                }
                Suffixes::Listed(list) => list,
            };
            for version in versions {
                for suffix in &suffixes {
                    let mut tag = String::with_capacity(version.len() + suffix.len());
                    tag.push_str(version);
                    tag.push_str(suffix);
                    tags.insert(tag, variant);
                }
            }
        }
        repos.push(Repo::new(name, variants, tags));
    }
    let mut snapshot = Snapshot::new(header.source, origin, repos)?;
    snapshot.root_by_guide = header.root_by_guide;
    snapshot.bind_by_file_cap = header.bind_by_file_cap;
    Ok(snapshot)
}

fn decode_variants(
    name: &str,
    variants: Vec<CompactVariant>,
) -> Result<Vec<VariantInfo>, SnapshotError> {
    let mut out: Vec<VariantInfo> = Vec::with_capacity(variants.len());
    for CompactVariant(user, entrypoint, cmd) in variants {
        let bad = || {
            invalid(format!(
                "{name}: variant {user:?} is not \"run|dev UID[:GID]\""
            ))
        };
        let (kind, ids) = user.split_once(' ').ok_or_else(bad)?;
        let dev = match kind {
            "dev" => true,
            "run" => false,
            _ => return Err(bad()),
        };
        let (uid, gid) = ids.split_once(':').unwrap_or((ids, ids));
        let (uid, gid) = (
            uid.parse().map_err(|_| bad())?,
            gid.parse().map_err(|_| bad())?,
        );
        let (entrypoint, cmd) = match entrypoint {
            Some(entrypoint) => (entrypoint, cmd.unwrap_or_default()),
            None => out
                .last()
                .map(|v| (v.entrypoint.clone(), v.cmd.clone()))
                .unwrap_or_default(),
        };
        out.push(VariantInfo {
            dev,
            uid,
            gid,
            entrypoint,
            cmd,
        });
    }
    Ok(out)
}

/// `"1.30.3 1.29.6"` is 1, 1.29, 1.29.6, 1.30, 1.30.3; a list is itself.
fn expand(versions: Versions) -> Vec<String> {
    match versions {
        Versions::Exact(list) => list,
        Versions::WithPrefixes(maxima) => {
            let mut out: Vec<String> = maxima
                .split(' ')
                .flat_map(|v| {
                    v.match_indices('.')
                        .map(|(i, _)| &v[..i])
                        .chain([v])
                        .map(str::to_owned)
                })
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_stand_for_their_prefixes() {
        assert_eq!(
            expand(Versions::WithPrefixes("1.30.3 1.29.6".to_owned())),
            ["1", "1.29", "1.29.6", "1.30", "1.30.3"]
        );
        assert_eq!(expand(Versions::Exact(vec!["1.30".to_owned()])), ["1.30"]);
    }

    #[test]
    fn groups_expand_to_every_version_and_suffix() {
        let text = concat!(
            r#"{"source":"x (2027-01-31)","tails":[["","-debian13"],["-dev"]]}"#,
            "\n",
            r#"["app",[["dev 0",["/app"],["serve"]],["run 10001:10002"],["run 0",[]]],"#,
            r#"["2.1.0",["latest"]],[[1,0,0],[0,0,1],[2,1,[["","-compat"],0]],[1,1,["-x"]]]]"#,
        );
        let snapshot = decode(text, "compiled in").unwrap();
        let repo = snapshot.repo("app").unwrap();
        let tags: Vec<(&str, usize)> = repo.tags.iter().map(|(t, i)| (t.as_str(), *i)).collect();
        assert_eq!(
            tags,
            [
                ("2", 1),
                ("2-debian13", 1),
                ("2-dev", 0),
                ("2.1", 1),
                ("2.1-debian13", 1),
                ("2.1-dev", 0),
                ("2.1.0", 1),
                ("2.1.0-debian13", 1),
                ("2.1.0-dev", 0),
                ("latest", 2),
                ("latest-compat", 2),
                ("latest-compat-debian13", 2),
                ("latest-debian13", 2),
                ("latest-x", 1),
            ]
        );
        let ids: Vec<_> = repo
            .variants
            .iter()
            .map(|v| (v.dev, v.uid, v.gid, v.entrypoint.len(), v.cmd.len()))
            .collect();
        // The runtime variant inherits the dev variant's start; the last one has its own.
        assert_eq!(
            ids,
            [
                (true, 0, 0, 1, 1),
                (false, 10001, 10002, 1, 1),
                (false, 0, 0, 0, 0)
            ]
        );
    }

    #[test]
    fn malformed_lines_are_refused() {
        let err = |line: &str| {
            let text = format!("{{\"source\":\"x (2027-01-31)\",\"tails\":[[\"\"]]}}\n{line}");
            decode(&text, "t").unwrap_err().to_string()
        };
        assert_eq!(
            err(r#"["a",[["root 0"]],["1"],[[0,0,0]]]"#),
            "invalid catalog: a: variant \"root 0\" is not \"run|dev UID[:GID]\""
        );
        assert_eq!(
            err(r#"["a",[["run 1"]],["1"],[[1,0,0]]]"#),
            "invalid catalog: a: no variant 1"
        );
        assert_eq!(
            err(r#"["a",[["run 1"]],["1"],[[0,0,4]]]"#),
            "invalid catalog: a: no tails 4"
        );
        assert!(err("[").starts_with("not a DHI catalog export"));
    }
}
