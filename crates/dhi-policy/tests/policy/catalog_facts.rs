//! The compiled-in catalog agrees with the DHI catalog export it was generated from.
//!
//! The export lives outside the repository (`../shared/dhi-catalog/images.json`, or
//! `DHI_CATALOG_EXPORT`). Without it the test fails: a check that passes because it
//! had nothing to compare would hide stale data.

use std::collections::HashSet;
use std::path::PathBuf;

use dhi_policy::Catalog;
use dhi_policy::catalog::{Snapshot, Variant, builtin_facts};
use serde_json::Value;

use crate::support::repo_root;

fn export() -> Value {
    let path = std::env::var_os("DHI_CATALOG_EXPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/dhi-catalog/images.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "catalog export {} not readable ({err}): set DHI_CATALOG_EXPORT to the DHI \
             catalog's images.json",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("export is JSON")
}

#[test]
fn every_exported_tag_resolves_to_its_variant_user() {
    let export = export();
    let catalog = Catalog::default();
    let mut checked = 0;
    let mut exported = HashSet::new();
    for (repo, data) in export["images"].as_object().unwrap() {
        for variant in data["variants"].as_array().unwrap() {
            let uid = variant["uid"].as_i64().unwrap();
            let gid = variant["gid"].as_i64().unwrap();
            let dev = variant["variant"] == "dev";
            for tag in variant["tags"].as_array().unwrap() {
                let tag = tag.as_str().unwrap();
                let user = catalog.lookup(repo, tag);
                assert_eq!((user.ids.uid, user.ids.gid), (uid, gid), "{repo}:{tag}");
                assert_eq!(user.variant == Variant::Dev, dev, "{repo}:{tag}");
                exported.insert((repo.clone(), tag.to_owned()));
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "only {checked} tags in the export");
    // And nothing compiled in that the export does not have: the data is current.
    let builtin: HashSet<_> = builtin_facts()
        .map(|(r, t, ..)| (r.to_owned(), t.to_owned()))
        .collect();
    assert_eq!(builtin, exported, "regenerate with tools/gen_catalog.py");
}

#[test]
fn the_snapshot_is_named_by_the_export_it_came_from() {
    let export = export();
    let catalog = Catalog::default();
    assert_eq!(
        catalog.snapshot_source(),
        export["source"].as_str().unwrap()
    );
    let date = catalog.snapshot_date();
    assert_eq!(date.len(), "2026-08-22".len());
    assert!(
        catalog.snapshot_source().ends_with(&format!("({date})")),
        "{date}"
    );
}

/// A catalog loaded from the export answers exactly as the compiled-in one: for every
/// listed tag, and for unlisted ones (families and defaults).
#[test]
fn the_export_loaded_at_run_time_answers_as_the_compiled_in_data() {
    let text = serde_json::to_string(&export()).unwrap();
    let loaded = Catalog::with_snapshot(
        Default::default(),
        std::sync::Arc::new(Snapshot::from_export(&text, "images.json").expect("the export loads")),
    );
    let builtin = Catalog::default();
    assert_eq!(loaded.counts(), builtin.counts());
    assert_eq!(loaded.snapshot_date(), builtin.snapshot_date());
    // Every listed tag, and per repository an unlisted version in each of its families.
    let mut probes: HashSet<(&str, String)> = HashSet::new();
    for (repo, tag, ..) in builtin_facts() {
        probes.insert((repo, tag.to_owned()));
        let family = tag.split_once('-').map_or("", |(_, rest)| rest);
        probes.insert((repo, format!("999.1-{family}")));
        probes.insert((repo, "999.1".to_owned()));
    }
    assert!(probes.len() > 20_000, "{}", probes.len());
    for (repo, probe) in &probes {
        assert_eq!(
            loaded.lookup(repo, probe),
            builtin.lookup(repo, probe),
            "{repo}:{probe}"
        );
        assert_eq!(
            loaded.has_tag(repo, probe),
            builtin.has_tag(repo, probe),
            "{repo}:{probe}"
        );
    }
    // Every repository's variants: users, entry points, and the tags of each.
    let mut repositories = 0;
    for name in export()["images"].as_object().unwrap().keys() {
        let facts = builtin.repository(name);
        assert!(facts.is_some(), "{name} is not compiled in");
        assert_eq!(loaded.repository(name), facts, "{name}");
        repositories += 1;
    }
    assert_eq!(repositories, builtin.counts().repositories);
}
