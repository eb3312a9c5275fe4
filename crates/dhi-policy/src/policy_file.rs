//! The policy file: what the engine enforces and how it rewrites.
//!
//! Every field has a default, so an empty file (or none) is the built-in policy. Unknown
//! keys are errors: a typo in a policy must not silently weaken it.

use std::collections::HashMap;

use serde::Deserialize;

use crate::catalog::RepoOverride;
use crate::image_ref::{ImageRef, ImageRefError};
use crate::model::{Action, Mode, RuleId};

/// The whole policy file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    /// Server-wide mode; `--mode` on the command line wins over it.
    pub mode: Option<Mode>,
    /// Per-rule action (`run-as-root: warn`); unlisted rules deny.
    pub rules: HashMap<RuleId, Action>,
    /// Image rewriting to hardened equivalents.
    pub rewrite: RewriteSettings,
    /// Workload templates.
    pub templates: TemplateSettings,
    /// What the policy never touches.
    pub exempt: Exemptions,
    /// Repositories to add to the built-in catalog or override in it.
    pub catalog: HashMap<String, RepoOverride>,
    /// What the cluster's container runtime does for pods.
    pub runtime: RuntimeSettings,
    /// What DHI's own image guides prescribe.
    pub guides: GuideSettings,
}

/// `guides:`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GuideSettings {
    /// `runAsUser: 0` on an image whose own guide sets it (multus-cni, clamav,
    /// node-problem-detector...) is root by design, admitted with a warning citing the
    /// guide. `false` judges it as any other root container (`run-as-root`).
    pub root_by_design: bool,
}

impl Default for GuideSettings {
    fn default() -> Self {
        Self {
            root_by_design: true,
        }
    }
}

/// `runtime:`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimeSettings {
    /// The `net.ipv4.ip_unprivileged_port_start` the runtime gives pods that are not on
    /// the host network: 0 for containerd 2.x, Docker 20.10+ and k3s, the kernel's 1024
    /// for CRI-O. Unset means 1024. A pod's own sysctl wins; hostNetwork pods get 1024.
    pub unprivileged_port_start: Option<u16>,
}

/// `rewrite:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RewriteSettings {
    /// Rewrite upstream images at all.
    pub enabled: bool,
    /// Where hardened images are pulled from: `{repo}` is the DHI repository name.
    pub target: TargetTemplate,
    /// Also rewrite Docker Official Images (`docker.io/library/<name>`) the catalog has.
    pub official_images: bool,
    /// `imagePullSecrets` to add to pods whose images were rewritten.
    pub image_pull_secrets: Vec<String>,
    /// Keep the built-in upstream mappings (Istio, Cilium).
    pub default_mappings: bool,
    /// More mappings; one with the same `from` replaces a built-in one.
    pub mappings: Vec<Mapping>,
    /// Which rewritten tags are allowed: only those the catalog lists (default), or any.
    pub tags: TagCheck,
}

/// `rewrite.tags`: whether a rewrite target must be a tag the catalog lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagCheck {
    /// Rewrite only to tags the catalog lists, so the pod can pull its image.
    #[default]
    Catalog,
    /// Rewrite whatever the tag: for mirrors that carry tags newer than the catalog.
    Any,
}

impl Default for RewriteSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            target: TargetTemplate::default(),
            official_images: false,
            image_pull_secrets: Vec::new(),
            default_mappings: true,
            mappings: Vec::new(),
            tags: TagCheck::Catalog,
        }
    }
}

/// A rewrite target template such as `dhi.io/{repo}` or
/// `registry.example.com/platform/dhi-{repo}`; validated when the policy is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTemplate {
    /// The template split at each `{repo}` (`dhi.io/{repo}` is `["dhi.io/", ""]`), so
    /// rendering is concatenation.
    pieces: Vec<String>,
}

impl TargetTemplate {
    /// Placeholder for the DHI repository name.
    pub const REPO: &'static str = "{repo}";

    fn split(template: &str) -> Self {
        Self {
            pieces: template.split(Self::REPO).map(str::to_owned).collect(),
        }
    }

    /// Validates a template: it must contain `{repo}` and render to references that
    /// are recognised as hardened (host `dhi.io`, or a last component starting `dhi-`).
    pub fn new(template: &str) -> Result<Self, TemplateError> {
        let template_owned = || template.to_owned();
        if !template.contains(Self::REPO) {
            return Err(TemplateError::NoRepo(template_owned()));
        }
        let target = Self::split(template);
        let probe = target.render("nginx");
        match ImageRef::parse(&probe) {
            Ok(r) if r.hardened_repo() == Some("nginx") => Ok(target),
            Ok(_) => Err(TemplateError::NotHardened(template_owned())),
            Err(error) => Err(TemplateError::Invalid {
                template: template_owned(),
                error,
            }),
        }
    }

    /// The image repository (without tag) for a DHI repository name.
    pub fn render(&self, repo: &str) -> String {
        self.render_tagged(repo, None)
    }

    /// The image for a DHI repository name and tag, in one allocation.
    pub fn render_tagged(&self, repo: &str, tag: Option<&str>) -> String {
        let fixed: usize = self.pieces.iter().map(String::len).sum();
        let len = fixed + (self.pieces.len() - 1) * repo.len() + tag.map_or(0, |t| t.len() + 1);
        let mut out = String::with_capacity(len);
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                out.push_str(repo);
            }
            out.push_str(piece);
        }
        if let Some(tag) = tag {
            out.push(':');
            out.push_str(tag);
        }
        out
    }
}

impl Default for TargetTemplate {
    fn default() -> Self {
        Self::split("dhi.io/{repo}")
    }
}

impl<'de> Deserialize<'de> for TargetTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One upstream repository and its hardened equivalent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mapping {
    /// Upstream `registry/repository`, normalised (`docker.io/istio/proxyv2`).
    pub from: String,
    /// DHI repository name (`istio-proxyv2`).
    pub to: String,
    /// Removed from the start of the tag (Cilium's `v`).
    #[serde(default)]
    pub strip_tag_prefix: Option<String>,
    /// Removed from the end of the tag (Istio's `-distroless`).
    #[serde(default)]
    pub strip_tag_suffix: Option<String>,
}

impl Mapping {
    fn new(from: &str, to: &str, prefix: Option<&str>, suffix: Option<&str>) -> Self {
        Self {
            from: from.to_owned(),
            to: to.to_owned(),
            strip_tag_prefix: prefix.map(str::to_owned),
            strip_tag_suffix: suffix.map(str::to_owned),
        }
    }

    /// The hardened tag for an upstream tag.
    pub fn transform_tag<'t>(&self, tag: &'t str) -> &'t str {
        let tag = match &self.strip_tag_prefix {
            Some(p) => tag.strip_prefix(p.as_str()).unwrap_or(tag),
            None => tag,
        };
        match &self.strip_tag_suffix {
            Some(s) => tag.strip_suffix(s.as_str()).unwrap_or(tag),
            None => tag,
        }
    }
}

/// The upstream images DHI publishes hardened equivalents of, rewritten by default.
pub fn default_mappings() -> Vec<Mapping> {
    let mut out = Vec::new();
    for registry in ["docker.io/istio", "gcr.io/istio-release"] {
        for (name, repo) in [
            ("proxyv2", "istio-proxyv2"),
            ("pilot", "istio-pilot"),
            ("install-cni", "istio-install-cni"),
        ] {
            out.push(Mapping::new(
                &format!("{registry}/{name}"),
                repo,
                None,
                Some("-distroless"),
            ));
        }
    }
    out.push(Mapping::new(
        "quay.io/cilium/hubble-relay",
        "hubble-relay",
        Some("v"),
        None,
    ));
    out.push(Mapping::new(
        "quay.io/cilium/startup-script",
        "cilium-startup-script",
        Some("v"),
        None,
    ));
    out
}

/// `templates:`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateSettings {
    /// Patch workload templates too (off by default: GitOps drift and ReplicaSet churn).
    pub mutate: bool,
}

/// `exempt:`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Exemptions {
    /// Namespaces whose requests are allowed untouched.
    pub namespaces: Vec<String>,
    /// Image patterns (`*` matches any run of characters) matched against the
    /// normalised reference (`docker.io/library/busybox:1.37`); matching containers are
    /// neither judged nor patched.
    pub images: Vec<String>,
}

/// Why a rewrite target template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No `{repo}` placeholder.
    #[error("rewrite target {0:?} must contain {{repo}}")]
    NoRepo(String),
    /// It renders images that would not be recognised as hardened.
    #[error(
        "rewrite target {0:?} must be dhi.io/{{repo}} or end in /dhi-{{repo}}, \
         or rewritten images would not be recognised as hardened"
    )]
    NotHardened(String),
    /// It renders something that is not an image reference.
    #[error("rewrite target {template:?} is not a valid image: {error}")]
    Invalid {
        /// The template.
        template: String,
        /// Why its rendering is not a reference.
        error: ImageRefError,
    },
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The YAML does not describe a policy.
    #[error("invalid policy: {0}")]
    Yaml(#[source] Box<serde_saphyr::Error>),
    /// A mapping names something that is not a repository.
    #[error("invalid rewrite mapping from {from:?}: {problem}")]
    Mapping {
        /// The offending `from`.
        from: String,
        /// What is wrong with it.
        problem: MappingProblem,
    },
}

/// What is wrong with a rewrite mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingProblem {
    /// `from` is not an image reference.
    #[error("{0}")]
    Invalid(ImageRefError),
    /// `from` carries a tag or digest.
    #[error("name a repository, without tag or digest")]
    Pinned,
    /// `from` is not written as the location it normalises to.
    #[error("write it normalised, as {0}")]
    NotNormalised(String),
    /// `to` does not render to an image of the hardened repository it names.
    #[error(
        "to: {to:?} rewrites to {target:?}, which is not an image of the hardened \
         repository {to:?}: name a DHI repository in lower case"
    )]
    NotHardened {
        /// The hardened repository named.
        to: String,
        /// What the target template renders for it.
        target: String,
    },
}

impl PolicyFile {
    /// Parses a policy file. An empty document is the default policy.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyFileError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let settings: Self =
            serde_saphyr::from_str(text).map_err(|err| PolicyFileError::Yaml(Box::new(err)))?;
        for m in &settings.rewrite.mappings {
            let problem = match ImageRef::parse(&m.from) {
                Err(err) => Some(MappingProblem::Invalid(err)),
                Ok(r) if r.tag.is_some() || r.digest.is_some() => Some(MappingProblem::Pinned),
                Ok(r) if r.location() != m.from => {
                    Some(MappingProblem::NotNormalised(r.location()))
                }
                Ok(_) => None,
            };
            // The rewritten image must be a valid reference to the hardened repository
            // named, or rewriting would break pods or escape the rules (found by
            // fuzz/policy_config: `to: "i!pio-proxyv2"` was accepted).
            let target = settings.rewrite.target.render(&m.to);
            let problem = problem.or_else(|| match ImageRef::parse(&target) {
                Ok(r) if r.hardened_repo() == Some(m.to.as_str()) => None,
                _ => Some(MappingProblem::NotHardened {
                    to: m.to.clone(),
                    target,
                }),
            });
            if let Some(problem) = problem {
                return Err(PolicyFileError::Mapping {
                    from: m.from.clone(),
                    problem,
                });
            }
        }
        Ok(settings)
    }

    /// The action configured for a rule (deny unless the file says otherwise).
    pub fn action(&self, rule: RuleId) -> Action {
        self.rules.get(&rule).copied().unwrap_or(Action::Deny)
    }

    /// The effective mappings keyed by upstream location, file entries winning.
    pub fn mappings(&self) -> HashMap<String, Mapping> {
        let mut out = HashMap::new();
        if self.rewrite.default_mappings {
            out.extend(default_mappings().into_iter().map(|m| (m.from.clone(), m)));
        }
        out.extend(
            self.rewrite
                .mappings
                .iter()
                .map(|m| (m.from.clone(), m.clone())),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_target_renders_every_placeholder() {
        assert_eq!(
            TargetTemplate::default(),
            TargetTemplate::new("dhi.io/{repo}").unwrap()
        );
        let mirror = TargetTemplate::new("registry.example.com/{repo}/dhi-{repo}").unwrap();
        assert_eq!(
            mirror.render_tagged("nginx", Some("1.29")),
            "registry.example.com/nginx/dhi-nginx:1.29"
        );
    }

    #[test]
    fn empty_file_is_the_default_policy() {
        let s = PolicyFile::from_yaml("").unwrap();
        assert_eq!(s, PolicyFile::default());
        assert!(s.rewrite.enabled);
        assert_eq!(s.rewrite.tags, TagCheck::Catalog);
        assert_eq!(s.action(RuleId::RunAsRoot), Action::Deny);
        assert_eq!(s.mappings().len(), 8);
    }

    #[test]
    fn full_file_parses() {
        let s = PolicyFile::from_yaml(
            r#"
mode: audit
rules:
  privileged-port: warn
  run-as-root: off
rewrite:
  target: registry.example.com/platform/dhi-{repo}
  officialImages: true
  imagePullSecrets: [dhi-pull]
  tags: any
  mappings:
    - from: docker.io/istio/proxyv2
      to: istio-proxyv2
      stripTagSuffix: -custom
templates:
  mutate: true
exempt:
  namespaces: [legacy]
  images: ["docker.io/library/busybox:*"]
catalog:
  my-app: {uid: 10001, gid: 10001}
runtime:
  unprivilegedPortStart: 0
"#,
        )
        .unwrap();
        assert_eq!(s.mode, Some(Mode::Audit));
        assert_eq!(s.action(RuleId::PrivilegedPort), Action::Warn);
        assert_eq!(s.action(RuleId::RunAsRoot), Action::Off);
        assert_eq!(s.rewrite.tags, TagCheck::Any);
        assert_eq!(
            s.rewrite.target.render("nginx"),
            "registry.example.com/platform/dhi-nginx"
        );
        let maps = s.mappings();
        assert_eq!(maps.len(), 8);
        assert_eq!(
            maps["docker.io/istio/proxyv2"].strip_tag_suffix.as_deref(),
            Some("-custom")
        );
        assert!(s.templates.mutate);
        assert_eq!(s.catalog["my-app"].uid, Some(10001));
        assert_eq!(s.runtime.unprivileged_port_start, Some(0));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let err = |yaml: &str| PolicyFile::from_yaml(yaml).unwrap_err().to_string();
        assert!(
            err("rules: {run-as-root: maybe}").contains("maybe"),
            "{}",
            err("rules: {run-as-root: maybe}")
        );
        assert!(err("rewirte: {}").contains("rewirte"));
        assert!(err("rules: {no-such-rule: deny}").contains("no-such-rule"));
        assert!(err("rewrite: {target: 'docker.io/{repo}'}").contains("dhi-{repo}"));
        assert!(err("rewrite: {target: dhi.io/nginx}").contains("{repo}"));
        assert!(
            err("rewrite: {mappings: [{from: 'istio/proxyv2', to: x}]}")
                .contains("docker.io/istio/proxyv2")
        );
        assert!(err("rewrite: {mappings: [{from: 'docker.io/a/b:1', to: x}]}").contains("tag"));
        assert!(err("[1, 2").contains("invalid policy"));
        assert!(err("rewrite: {tags: newest}").contains("newest"));
        assert!(err("runtime: {unprivilegedPortStart: 70000}").contains("70000"));
    }

    #[test]
    fn tags_transform() {
        let m = &default_mappings();
        let cilium = m.iter().find(|m| m.to == "hubble-relay").unwrap();
        assert_eq!(cilium.transform_tag("v1.20.1"), "1.20.1");
        let istio = m.iter().find(|m| m.to == "istio-proxyv2").unwrap();
        assert_eq!(istio.transform_tag("1.30.3-distroless"), "1.30.3");
        assert_eq!(istio.transform_tag("1.30.3"), "1.30.3");
    }
}
