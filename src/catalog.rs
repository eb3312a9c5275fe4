//! `dhi-admission catalog`: what the catalog of hardened images in force says.
//!
//! ```console
//! $ dhi-admission catalog info
//! $ dhi-admission catalog show hubble-relay:1.20.1
//! ```
//!
//! `show` asks the engine, not the data: the injection it prints is the webhook's own
//! answer for a pod that sets no user.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use dhi_policy::catalog::{Resolution, Variant};
use dhi_policy::{Catalog, Engine, GroupKind, Mode, Request, WorkloadKind};
use serde_json::json;

use crate::policy_source::PolicyArgs;

/// `catalog` subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// The snapshot in force: its source, date and counts.
    Info(InfoArgs),
    /// A repository's variants, tags, users and entry points; with a tag, what the
    /// webhook injects for it.
    Show(ShowArgs),
}

/// `catalog info`
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The policy (its `catalog:` additions) and the catalog file.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// `catalog show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// `REPO` or `REPO:TAG` (`dhi.io/` in front is accepted).
    #[arg(value_name = "REPO[:TAG]")]
    pub reference: String,
    /// The policy (its `catalog:` additions and rewrite settings) and the catalog file.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// Runs a `catalog` subcommand, printing to standard output.
pub fn run(command: CatalogCommand) -> anyhow::Result<()> {
    let text = match command {
        CatalogCommand::Info(InfoArgs { policy }) => info(&policy.load()?.engine),
        CatalogCommand::Show(ShowArgs { reference, policy }) => {
            show(&policy.load()?.engine, &reference)?
        }
    };
    print!("{text}");
    Ok(())
}

/// The snapshot's source, date and counts.
pub fn info(engine: &Engine) -> String {
    let catalog = engine.catalog();
    let counts = catalog.counts();
    format!(
        "catalog: {}\nsource: {}\ndate: {}\nrepositories: {}\ntags: {}\n",
        catalog.snapshot_origin(),
        catalog.snapshot_source(),
        catalog.snapshot_date(),
        counts.repositories,
        counts.tags
    )
}

/// A repository, and for a tag what the webhook does with it.
pub fn show(engine: &Engine, reference: &str) -> anyhow::Result<String> {
    let reference = reference.strip_prefix("dhi.io/").unwrap_or(reference);
    let (repo, tag) = match reference.split_once(':') {
        Some((repo, tag)) => (repo, Some(tag)),
        None => (reference, None),
    };
    let mut out = String::new();
    write_repository(&mut out, engine.catalog(), repo)?;
    if let Some(tag) = tag {
        write_tag(&mut out, engine.catalog(), repo, tag)?;
        write_injection(&mut out, engine, repo, tag)?;
    }
    Ok(out)
}

/// The repository's variants, users, entry points and tags.
fn write_repository(out: &mut String, catalog: &Catalog, repo: &str) -> anyhow::Result<()> {
    match catalog.repository(repo) {
        Some(facts) => {
            writeln!(out, "repository: dhi.io/{}", facts.name)?;
            for v in &facts.variants {
                let kind = match v.variant {
                    Variant::Runtime => "runtime",
                    Variant::Dev => "dev",
                };
                writeln!(out, "variant: {kind}, uid {}, gid {}", v.ids.uid, v.ids.gid)?;
                if !v.entrypoint.is_empty() {
                    writeln!(out, "  entrypoint: {}", v.entrypoint.join(" "))?;
                }
                if !v.cmd.is_empty() {
                    writeln!(out, "  cmd: {}", v.cmd.join(" "))?;
                }
                writeln!(out, "  tags: {}", v.tags.join(", "))?;
            }
        }
        None => writeln!(
            out,
            "repository: dhi.io/{repo} is not in the catalog snapshot of {}",
            catalog.snapshot_date()
        )?,
    }
    Ok(())
}

/// How a tag resolves, and to which user.
fn write_tag(out: &mut String, catalog: &Catalog, repo: &str, tag: &str) -> anyhow::Result<()> {
    let user = catalog.lookup(repo, tag);
    let how = match user.resolution {
        Resolution::Listed => "listed",
        Resolution::UnknownTag => "not listed; resolved within its variant family",
        Resolution::UnknownRepository => "repository not listed; the default user",
    };
    let kind = match user.variant {
        Variant::Runtime => "runtime",
        Variant::Dev => "dev",
    };
    writeln!(
        out,
        "tag {tag}: {how}: {kind}, uid {}, gid {}{}",
        user.ids.uid,
        user.ids.gid,
        if user.root_allowed {
            ", root by design"
        } else {
            ""
        }
    )?;
    Ok(())
}

/// The webhook's own answer for a pod that sets no user.
fn write_injection(out: &mut String, engine: &Engine, repo: &str, tag: &str) -> anyhow::Result<()> {
    let image = format!("dhi.io/{repo}:{tag}");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "app", "image": image}]}});
    let request = Request::create(GroupKind::from(WorkloadKind::Pod), None, &pod);
    let finding = engine.find(Mode::Enforce, request)?;
    writeln!(out, "webhook, for a pod that sets no user:")?;
    if finding.patch.is_empty() {
        writeln!(out, "  nothing injected")?;
    }
    for op in &finding.patch {
        let op = serde_json::to_value(op)?;
        writeln!(
            out,
            "  {} {} {}",
            op["op"].as_str().unwrap_or(""),
            op["path"].as_str().unwrap_or(""),
            op["value"]
        )?;
    }
    for v in &finding.violations {
        writeln!(out, "  denied: {v}")?;
    }
    for w in &finding.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_snapshot() {
        let text = info(&Engine::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "catalog: compiled in");
        assert!(lines[1].starts_with("source: github.com/docker-hardened-images/catalog"));
        assert_eq!(
            &lines[2..],
            ["date: 2026-08-22", "repositories: 554", "tags: 18095"]
        );
    }

    #[test]
    fn show_prints_the_variants_and_the_injection() {
        let text = show(&Engine::default(), "dhi.io/istio-proxyv2:1.30.3").unwrap();
        assert_eq!(
            text,
            "repository: dhi.io/istio-proxyv2\n\
             variant: dev, uid 0, gid 0\n  \
             entrypoint: /usr/local/bin/pilot-agent\n  \
             tags: 1-debian-dev, 1-debian13-dev, 1-dev, 1.30-debian-dev, 1.30-debian13-dev, \
             1.30-dev, 1.30.3-debian-dev, 1.30.3-debian13-dev, 1.30.3-dev\n\
             variant: runtime, uid 1337, gid 1337\n  \
             entrypoint: /usr/local/bin/pilot-agent\n  \
             tags: 1, 1-debian, 1-debian13, 1.30, 1.30-debian, 1.30-debian13, 1.30.3, \
             1.30.3-debian, 1.30.3-debian13\n\
             tag 1.30.3: listed: runtime, uid 1337, gid 1337\n\
             webhook, for a pod that sets no user:\n  \
             add /spec/containers/0/securityContext {\"runAsGroup\":1337,\"runAsNonRoot\":true,\"runAsUser\":1337}\n  \
             add /spec/securityContext {\"fsGroup\":1337}\n"
        );
        let text = show(&Engine::default(), "k8s-device-plugin:0.20.1-compat").unwrap();
        let tail: Vec<&str> = text.lines().rev().take(4).collect();
        assert_eq!(
            tail,
            [
                "  warning: container \"app\": dhi.io/k8s-device-plugin:0.20.1-compat is not in \
                 the catalog snapshot of 2026-08-22; UID 0 assumed",
                "  nothing injected",
                "webhook, for a pod that sets no user:",
                "tag 0.20.1-compat: not listed; resolved within its variant family: runtime, \
                 uid 0, gid 0, root by design",
            ]
        );
        let text = show(&Engine::default(), "no-such-repo").unwrap();
        assert_eq!(
            text,
            "repository: dhi.io/no-such-repo is not in the catalog snapshot of 2026-08-22\n"
        );
    }
}
