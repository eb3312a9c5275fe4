//! The engine's vocabulary: what is asked (webhook, operation, mode), what rules exist
//! and what they can do, and what an evaluation finds. A leaf: it imports nothing else
//! from the crate, so every other module can use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which webhook is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Webhook {
    /// Return the patch.
    Mutate,
    /// Return the verdict.
    Validate,
}

impl Webhook {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// Which containers a request may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The whole pod spec.
    #[default]
    All,
    /// Only ephemeral containers (the `pods/ephemeralcontainers` subresource, `kubectl debug`).
    EphemeralOnly,
}

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
}

impl Operation {
    /// As in the AdmissionReview; also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// Enforce (deny and patch), warn (patch, never deny) or audit (allow unchanged, report
/// what would happen): Pod Security Admission's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny violations, apply patches.
    #[default]
    Enforce,
    /// Allow everything unchanged; findings become warnings and audit annotations.
    Audit,
    /// Apply patches (the injected UID is what lets hardened images start under
    /// `runAsNonRoot`), never deny: violations become warnings.
    Warn,
}

impl Mode {
    /// This mode, but never stricter than `ceiling`: a namespace's `dhi.io/mode` label
    /// (the webhooks' `/…/audit` and `/…/warn` paths) only relaxes the server's mode, so in
    /// a cluster-wide audit install a namespace labelled warn is audited, not patched.
    pub fn at_most(self, ceiling: Mode) -> Mode {
        let strictness = |m: Mode| match m {
            Mode::Audit => 0,
            Mode::Warn => 1,
            Mode::Enforce => 2,
        };
        if strictness(self) <= strictness(ceiling) {
            self
        } else {
            ceiling
        }
    }

    /// The mode's name, also its metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
            Self::Warn => "warn",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Self::Enforce),
            "audit" => Ok(Self::Audit),
            "warn" => Ok(Self::Warn),
            other => Err(format!(
                "unknown mode {other:?}: expected enforce, warn or audit"
            )),
        }
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Reject the object (in enforce mode).
    Deny,
    /// Admit it with a warning.
    Warn,
    /// Do not evaluate the rule.
    Off,
}

/// The rules that can deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleId {
    /// A hardened container would run as UID 0.
    RunAsRoot,
    /// A hardened nonroot container declares a port below 1024.
    PrivilegedPort,
    /// An image field is not a valid reference (the kubelet could not pull it).
    InvalidImage,
}

impl RuleId {
    /// Every rule.
    pub const ALL: [Self; 3] = [Self::RunAsRoot, Self::PrivilegedPort, Self::InvalidImage];

    /// The rule id as written in policies, reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunAsRoot => "run-as-root",
            Self::PrivilegedPort => "privileged-port",
            Self::InvalidImage => "invalid-image",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that matched a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which rule.
    pub rule: RuleId,
    /// The container's name.
    pub container: String,
    /// The image as it will run.
    pub image: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

/// Why an upstream image was left alone although the catalog maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The digest names upstream content; a rewritten tag would name other content.
    Digest,
    /// The container runs as root (Istio's `istio-init` needs root and NET_ADMIN).
    RunsAsRoot,
    /// The container declares a port the nonroot image could not bind.
    PrivilegedPort,
    /// The command starts a shell, which hardened images do not have.
    ShellCommand,
    /// The catalog does not list the rewritten tag: the pod could not pull it.
    UnknownTag,
}

impl SkipReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Digest,
        Self::RunsAsRoot,
        Self::PrivilegedPort,
        Self::ShellCommand,
        Self::UnknownTag,
    ];

    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Digest => "digest",
            Self::RunsAsRoot => "runs_as_root",
            Self::PrivilegedPort => "privileged_port",
            Self::ShellCommand => "shell_command",
            Self::UnknownTag => "unknown_tag",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::Digest => "it is pinned by digest, which names the upstream content",
            Self::RunsAsRoot => "it runs as root and the hardened image is nonroot",
            Self::PrivilegedPort => {
                "it declares a port below 1024 that a nonroot image cannot bind"
            }
            Self::ShellCommand => "its command starts a shell and the hardened image has none",
            Self::UnknownTag => "the catalog does not list that tag",
        }
    }
}

/// What a patch changes, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MutationKind {
    /// An upstream image replaced by its hardened equivalent.
    ImageRewrite,
    /// `runAsUser` injected.
    RunAsUser,
    /// `runAsGroup` injected.
    RunAsGroup,
    /// `runAsNonRoot: true` injected.
    RunAsNonRoot,
    /// Pod `fsGroup` injected.
    FsGroup,
    /// `imagePullSecrets` added for the rewrite target.
    ImagePullSecret,
}

impl MutationKind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::ImageRewrite,
        Self::RunAsUser,
        Self::RunAsGroup,
        Self::RunAsNonRoot,
        Self::FsGroup,
        Self::ImagePullSecret,
    ];

    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImageRewrite => "image_rewrite",
            Self::RunAsUser => "run_as_user",
            Self::RunAsGroup => "run_as_group",
            Self::RunAsNonRoot => "run_as_non_root",
            Self::FsGroup => "fs_group",
            Self::ImagePullSecret => "image_pull_secret",
        }
    }
}

/// A finding that admits the object but should be seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A rule whose action is `warn` matched.
    Rule(Violation),
    /// A dev variant (shell, package manager; mostly root) in a workload.
    DevVariant {
        /// Container name.
        container: String,
        /// The image.
        image: String,
        /// The UID it runs as (0 for almost every dev variant).
        uid: i64,
    },
    /// A running pod's image switched to a hardened one that needs a numeric user the
    /// pod cannot be given any more (security contexts are immutable), under runAsNonRoot.
    ImageSwitchWithoutUser {
        /// Container name.
        container: String,
        /// The new image.
        image: String,
        /// The UID it would need.
        uid: i64,
    },
    /// `runAsUser: 0` admitted because the image's own guide prescribes it.
    RootByGuide {
        /// Container name.
        container: String,
        /// The image.
        image: String,
        /// Where the guide says so (`image/clamav/guides.md:201`).
        guide: String,
    },
    /// A privileged node agent (host network or PID namespace, a writable host path) on a
    /// nonroot image: not given the nonroot UID, since it could not write the root-owned
    /// host paths it mounts; the fix is root, by its guide or by the policy.
    NodeAgentNeedsRoot {
        /// Container name.
        container: String,
        /// The image.
        image: String,
        /// The image's nonroot UID, not injected.
        uid: i64,
        /// How to give it root: where its guide prescribes it, else the policy's word.
        fix: String,
    },
    /// A hardened image the catalog does not know: its user is assumed.
    NotInCatalog {
        /// Container name.
        container: String,
        /// The repository (`dhi.io/no-such-repo`), or the image when only its tag is unknown.
        what: String,
        /// The catalog snapshot's date.
        snapshot: String,
        /// The UID assumed.
        uid: i64,
    },
    /// An upstream image the catalog maps was not rewritten.
    RewriteSkipped {
        /// Container name.
        container: String,
        /// The upstream image.
        image: String,
        /// The hardened image it would have become.
        target: String,
        /// Why not.
        reason: SkipReason,
        /// For [`SkipReason::UnknownTag`]: the nearest version lines the catalog lists.
        available: Vec<String>,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule(v) => write!(f, "{v}"),
            Self::DevVariant {
                container,
                image,
                uid: 0,
            } => write!(
                f,
                "container {container:?} uses dev variant {image} (root, shell, package manager): \
                 use the runtime variant (tag without -dev) in production"
            ),
            Self::DevVariant {
                container,
                image,
                uid,
            } => write!(
                f,
                "container {container:?} uses dev variant {image} (UID {uid}, shell, package \
                 manager): use a runtime variant in production where there is one"
            ),
            Self::ImageSwitchWithoutUser {
                container,
                image,
                uid,
            } => write!(
                f,
                "container {container:?}: switched to {image} in a running pod, whose \
                 securityContext cannot change: without runAsUser {uid} the kubelet refuses it \
                 under runAsNonRoot. Change the workload's template instead"
            ),
            Self::RootByGuide {
                container,
                image,
                guide,
            } => write!(
                f,
                "container {container:?}: runAsUser: 0 admitted as root by design, as the image's \
                 own guide prescribes ({guide} in DHI's catalog); to deny it, set \
                 guides.rootByDesign: false in the dhi-admission policy. Image: {image}"
            ),
            Self::NodeAgentNeedsRoot {
                container,
                image,
                uid,
                fix,
            } => write!(
                f,
                "container {container:?}: privileged node agent writing host paths, not given \
                 UID {uid}: as nonroot it cannot write the root-owned host paths it mounts. \
                 Fix: {fix}. Image: {image}"
            ),
            Self::NotInCatalog {
                container,
                what,
                snapshot,
                uid,
            } => write!(
                f,
                "container {container:?}: {what} is not in the catalog snapshot of {snapshot}; \
                 UID {uid} assumed"
            ),
            Self::RewriteSkipped {
                container,
                image,
                target,
                reason: SkipReason::UnknownTag,
                available,
            } => {
                let (location, tag) = target
                    .rsplit_once(':')
                    .filter(|(_, tag)| !tag.contains('/'))
                    .unwrap_or((target, "latest"));
                write!(
                    f,
                    "container {container:?}: {image} not rewritten: {location} has no tag {tag}"
                )?;
                match available.as_slice() {
                    [] => Ok(()),
                    lines => write!(f, "; available lines: {}", lines.join(", ")),
                }
            }
            // A digest makes the image the longest part: the reason comes before it.
            Self::RewriteSkipped {
                container,
                image,
                target,
                reason: reason @ SkipReason::Digest,
                ..
            } => write!(
                f,
                "container {container:?}: not rewritten to {target}: {}; image {image}",
                reason.explain()
            ),
            Self::RewriteSkipped {
                container,
                image,
                target,
                reason,
                ..
            } => write!(
                f,
                "container {container:?}: {image} not rewritten to {target}: {}",
                reason.explain()
            ),
        }
    }
}
