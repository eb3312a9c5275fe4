//! The rules, applied to each container of a pod spec as it will run after mutation.
//!
//! One pass over the containers both plans the patch and judges the result, so the
//! verdict on a template is the verdict on the pods it will create, and validating
//! an already-mutated pod gives the same answer as validating the original.
//! A denial is data (a [`Violation`]), never an `Err`.

use std::fmt;

use crate::by_name::ByName;
use crate::catalog::{ImageUser, Resolution, Variant};
use crate::context::Context;
use crate::image_ref::{ImageField, ImageRef};
use crate::model::{Action, MutationKind, RuleId, Scope, SkipReason, Violation, Warning};
use crate::patch::{ContainerList, InjectedUser, SpecPatch};
use crate::policy_file::TagCheck;
use crate::spec::{ContainerView, PodSecurityContextView, SecurityContextView, SpecView};

/// The engine's findings for one pod spec.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Operations that make the object run on hardened images.
    pub patch: Vec<json_patch::PatchOperation>,
    /// What the patch changes.
    pub mutations: Vec<MutationKind>,
    /// Rules with action `deny` that the mutated object breaks.
    pub violations: Vec<Violation>,
    /// Everything else worth telling.
    pub warnings: Vec<Warning>,
}

/// The capability that lets a process bind ports below 1024.
const NET_BIND_SERVICE: &str = "NET_BIND_SERVICE";

/// Shell binaries: a command starting with one needs an image that has a shell.
const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"];

/// Facts about one container as it will run.
struct Judged<'c> {
    name: &'c str,
    image: Shown<'c>,
    user: ImageUser,
    uid: i64,
}

/// The image a container will run, printed only if a message needs it.
enum Shown<'c> {
    /// A hardened image, as written (normalised).
    Hardened(ImageRef<'c>),
    /// The hardened image an upstream one is rewritten to, and its DHI repository.
    Rewritten { image: String, repo: String },
}

impl Shown<'_> {
    /// The DHI repository, for the catalog and the guides.
    fn repo(&self) -> Option<&str> {
        match self {
            Self::Hardened(image) => image.hardened_repo(),
            Self::Rewritten { repo, .. } => Some(repo),
        }
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hardened(image) => image.fmt(f),
            Self::Rewritten { image, .. } => f.write_str(image),
        }
    }
}

/// What an evaluation is for: the validating webhook needs the verdict only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The patch, the verdict and every finding.
    Patch,
    /// The verdict and the findings it reports; no patch, no skipped-rewrite notes.
    Verdict,
}

/// Plans the patch for a pod spec and judges the result.
pub(crate) fn evaluate(
    context: &Context,
    spec: &SpecView<'_>,
    old: Option<&SpecView<'_>>,
    prefix: &'static [&'static str],
    scope: Scope,
    purpose: Purpose,
) -> Evaluation {
    if spec.is_windows() {
        // Hardened images are Linux images; UID fields are invalid on Windows pods.
        return Evaluation::default();
    }
    let mut pass = Pass {
        context,
        spec,
        patch: (purpose == Purpose::Patch).then(|| SpecPatch::new(prefix)),
        eval: Evaluation::default(),
        rewrote: false,
        // A `kubectl debug` image is chosen by hand for the moment: it is given a user,
        // never swapped for another image.
        rewrite: scope == Scope::All,
        fs_group: None,
        // Only ephemeral containers are judged in that scope, and they keep no image
        // from before.
        by_name: ByName::new(spec, old),
    };
    let lists = [
        (ContainerList::Init, &spec.init_containers),
        (ContainerList::Regular, &spec.containers),
        (ContainerList::Ephemeral, &spec.ephemeral_containers),
    ];
    for (list, containers) in lists {
        if scope == Scope::EphemeralOnly && list != ContainerList::Ephemeral {
            continue;
        }
        for (index, c) in containers.iter().flatten().enumerate() {
            if scope == Scope::EphemeralOnly && pass.by_name.existed(c) {
                continue;
            }
            if let Some(judged) = pass.plan(c, list, index) {
                if list != ContainerList::Ephemeral
                    && pass.fs_group.is_none()
                    && judged.user.ids.gid != 0
                {
                    pass.fs_group = Some(judged.user.ids.gid);
                }
                pass.judge(c, &judged);
            }
        }
    }
    pass.finish()
}

/// One evaluation of one pod spec: the patch and findings gathered container by container.
struct Pass<'e, 's, 'a> {
    context: &'e Context,
    spec: &'s SpecView<'a>,
    /// `None` when only the verdict is wanted.
    patch: Option<SpecPatch>,
    eval: Evaluation,
    /// An image was rewritten: the rewrite target's pull secrets are needed.
    rewrote: bool,
    /// Rewrites are planned (not for `kubectl debug`).
    rewrite: bool,
    /// The group of the first hardened container, for the pod's `fsGroup`.
    fs_group: Option<i64>,
    /// Host-path volumes, and the pod before an UPDATE (its security contexts are fixed).
    by_name: ByName<'s>,
}

impl Pass<'_, '_, '_> {
    /// Rewrites and injects for one container; returns its facts if it is hardened.
    fn plan<'c>(
        &mut self,
        c: &'c ContainerView<'_>,
        list: ContainerList,
        index: usize,
    ) -> Option<Judged<'c>> {
        let image = self.image_of(c)?;
        if self.context.is_exempt_image(&image) {
            return None;
        }
        let spec = self.spec;
        let explicit_uid = effective(c, spec, |s| s.run_as_user, |p| p.run_as_user);
        let (mut user, shown) = match image.hardened_repo() {
            Some(repo) => {
                let user = self.hardened_user(c, &image, repo, explicit_uid);
                (user, Shown::Hardened(image))
            }
            None if !self.rewrite => return None,
            None => self.plan_rewrite(c, list, index, &image, explicit_uid)?,
        };
        if explicit_uid == Some(0) && !user.root_allowed {
            user.root_allowed = self.root_by_guide(&c.name, &shown);
        }
        if explicit_uid.is_none() && user.ids.uid != 0 && self.by_name.switched_image(c, list) {
            // A running pod's security context cannot change: the mutating webhook cannot
            // give the new image its numeric user, and the kubelet refuses an image that
            // names its user (`nonroot`) under runAsNonRoot.
            if effective(c, spec, |s| s.run_as_non_root, |p| p.run_as_non_root) == Some(true) {
                self.eval.warnings.push(Warning::ImageSwitchWithoutUser {
                    container: c.name.to_string(),
                    image: shown.to_string(),
                    uid: user.ids.uid,
                });
            }
        }
        if explicit_uid.is_none() && user.ids.uid != 0 && !self.leaves_node_agent(c, &shown, &user)
        {
            self.inject_user(c, list, index, &user);
        }
        Some(Judged {
            name: &c.name,
            image: shown,
            user,
            uid: explicit_uid.unwrap_or(user.ids.uid),
        })
    }

    /// The container's image, if it names one; an unparsable one is an `invalid-image`.
    fn image_of<'c>(&mut self, c: &'c ContainerView<'_>) -> Option<ImageRef<'c>> {
        let raw = c.image.as_deref()?;
        match ImageField::parse(raw) {
            Ok(ImageField::Ref(image)) => Some(image),
            Ok(ImageField::Placeholder) => None,
            Err(err) => {
                let message = format!(
                    "container {:?}: image {raw:?} is not a valid reference ({err}), so the kubelet \
                     cannot pull it. Fix: write it as [registry/]repository[:tag][@digest], \
                     repository in lower case",
                    c.name
                );
                self.report(RuleId::InvalidImage, &c.name, &raw, message);
                None
            }
        }
    }

    /// The catalog's user for a hardened image, with a warning if the catalog does not
    /// list it (a digest alone names content, whatever tags the catalog lists).
    fn hardened_user(
        &mut self,
        c: &ContainerView<'_>,
        image: &ImageRef<'_>,
        repo: &str,
        explicit_uid: Option<i64>,
    ) -> ImageUser {
        let catalog = self.context.catalog();
        let user = catalog.lookup(repo, image.tag_or_latest());
        let unknown = image.tag.is_some() || image.digest.is_none();
        let what = match user.resolution {
            Resolution::Listed => None,
            _ if !unknown => None,
            Resolution::UnknownTag => Some(image.to_string()),
            Resolution::UnknownRepository => Some(image.location()),
        };
        if let Some(what) = what {
            self.eval.warnings.push(Warning::NotInCatalog {
                container: c.name.to_string(),
                what,
                snapshot: catalog.snapshot_date().to_owned(),
                uid: explicit_uid.unwrap_or(user.ids.uid),
            });
        }
        user
    }

    /// Rewrites an upstream image to its hardened equivalent, unless that would not be
    /// admitted (then a warning says why); returns the target's user and name.
    fn plan_rewrite<'c>(
        &mut self,
        c: &ContainerView<'_>,
        list: ContainerList,
        index: usize,
        image: &ImageRef<'_>,
        explicit_uid: Option<i64>,
    ) -> Option<(ImageUser, Shown<'c>)> {
        let context = self.context;
        let target = context.rewrite_target(image)?;
        let catalog = context.catalog();
        let user = catalog.lookup(target.repo, target.tag);
        let listed = context.policy_file().rewrite.tags == TagCheck::Any
            || catalog.has_tag(target.repo, target.tag);
        if let Some(reason) = self.skip_reason(c, image, &user, explicit_uid, listed) {
            if self.patch.is_some() {
                let available = if reason == SkipReason::UnknownTag {
                    catalog.nearest_lines(target.repo, target.tag)
                } else {
                    Vec::new()
                };
                self.eval.warnings.push(Warning::RewriteSkipped {
                    container: c.name.to_string(),
                    image: image.to_string(),
                    target: target.image,
                    reason,
                    available,
                });
            }
            return None;
        }
        if let Some(patch) = &mut self.patch {
            patch.set_image(list, index, target.image.clone());
        }
        self.eval.mutations.push(MutationKind::ImageRewrite);
        self.rewrote = true;
        let shown = Shown::Rewritten {
            image: target.image,
            repo: target.repo.to_owned(),
        };
        Some((user, shown))
    }

    /// Gives a container without a user of its own the image's numeric user (and group
    /// and `runAsNonRoot` where it sets none).
    fn inject_user(
        &mut self,
        c: &ContainerView<'_>,
        list: ContainerList,
        index: usize,
        user: &ImageUser,
    ) {
        let spec = self.spec;
        let inject = InjectedUser {
            uid: user.ids.uid,
            gid: effective(c, spec, |s| s.run_as_group, |p| p.run_as_group)
                .is_none()
                .then_some(user.ids.gid),
            non_root: effective(c, spec, |s| s.run_as_non_root, |p| p.run_as_non_root).is_none(),
        };
        self.eval.mutations.push(MutationKind::RunAsUser);
        if inject.gid.is_some() {
            self.eval.mutations.push(MutationKind::RunAsGroup);
        }
        if inject.non_root {
            self.eval.mutations.push(MutationKind::RunAsNonRoot);
        }
        if let Some(patch) = &mut self.patch {
            patch.add_container_security(list, index, c.security_context.is_some(), inject);
        }
    }

    /// Applies run-as-root and privileged-port to a hardened container.
    fn judge(&mut self, c: &ContainerView<'_>, j: &Judged<'_>) {
        let spec = self.spec;
        if j.uid == 0 && !j.user.root_allowed {
            let why = if c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0) {
                "its securityContext sets runAsUser: 0".to_owned()
            } else if explicit_pod_uid(spec) == Some(0) {
                "the pod securityContext sets runAsUser: 0".to_owned()
            } else {
                "it is a dev variant, which runs as root".to_owned()
            };
            let explicit = c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0)
                || explicit_pod_uid(spec) == Some(0);
            let fix = match (j.user.variant, explicit) {
                (Variant::Dev, true) => {
                    "remove runAsUser: 0 and use the runtime variant (tag without -dev), which runs as nonroot"
                        .to_owned()
                }
                (Variant::Dev, false) => "use the runtime variant (tag without -dev), which runs as \
                     nonroot, or set a non-zero runAsUser"
                    .to_owned(),
                (Variant::Runtime, _) => format!(
                    "remove runAsUser: 0, or set the container's runAsUser to {}",
                    j.user.ids.uid
                ),
            };
            let message = format!(
                "container {:?} ({}) would run as root because {why}; hardened images are \
                 built to run as nonroot. Fix: {fix}",
                j.name, j.image
            );
            self.report(RuleId::RunAsRoot, j.name, &j.image, message);
        }
        self.judge_ports(c, j);
        if j.user.variant == Variant::Dev {
            self.eval.warnings.push(Warning::DevVariant {
                container: j.name.to_owned(),
                image: j.image.to_string(),
                uid: j.uid,
            });
        }
    }

    /// Applies privileged-port. A nonroot process binds below 1024 only through a file
    /// capability on its binary: Kubernetes sets no ambient capabilities, so
    /// `capabilities.add: [NET_BIND_SERVICE]` alone does nothing for it, and the file
    /// capability works only while the bounding set keeps NET_BIND_SERVICE.
    fn judge_ports(&mut self, c: &ContainerView<'_>, j: &Judged<'_>) {
        if self.may_bind_low_ports(&j.user, j.uid) {
            return;
        }
        let ports = self.blocked_ports(c);
        let Some(&port) = ports.first() else {
            return;
        };
        let caps = c
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref());
        let file_cap = match &j.image {
            Shown::Hardened(image) => image
                .hardened_repo()
                .and_then(|repo| self.context.catalog().bind_by_file_cap(repo)),
            Shown::Rewritten { .. } => None,
        };
        let bounded = caps.is_some_and(|caps| caps.removes(NET_BIND_SERVICE));
        if file_cap.is_some() && !bounded {
            return;
        }
        let list = ports
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let high = port + 8000;
        let alternative = if self.spec.host_network == Some(true) {
            String::new()
        } else {
            format!(
                ", or set the pod sysctl net.ipv4.ip_unprivileged_port_start={port} (if \
                 the container runtime already sets it for pods, as containerd 2.x, \
                 Docker and k3s do, set runtime.unprivilegedPortStart: 0 in the \
                 dhi-admission policy)"
            )
        };
        let runs_as = if j.uid == 0 {
            "must run as nonroot".to_owned()
        } else {
            format!("runs as UID {}", j.uid)
        };
        let (why, first_fix) = match file_cap {
            Some(definition) => (
                format!(
                    ", and its capabilities drop NET_BIND_SERVICE, which the file capability \
                     of the image's binary needs ({definition})"
                ),
                "add NET_BIND_SERVICE to capabilities.add, or ",
            ),
            None if caps.is_some_and(|caps| caps.adds(NET_BIND_SERVICE)) => (
                "; capabilities.add: [NET_BIND_SERVICE] does not help, since Kubernetes gives \
                 a nonroot process no ambient capabilities and no binary of this image has \
                 the file capability"
                    .to_owned(),
                "",
            ),
            None => (String::new(), ""),
        };
        let message = format!(
            "container {:?} ({}) declares port {list} but {runs_as} and cannot bind ports \
             below 1024{why}. Fix: {first_fix}listen on {high} and map Service port {port} to \
             it (targetPort: {high}){alternative}",
            j.name, j.image
        );
        self.report(RuleId::PrivilegedPort, j.name, &j.image, message);
    }

    fn report(&mut self, rule: RuleId, container: &str, image: &dyn fmt::Display, message: String) {
        let violation = Violation {
            rule,
            container: container.to_owned(),
            image: image.to_string(),
            message,
        };
        match self.context.policy_file().action(rule) {
            Action::Deny => self.eval.violations.push(violation),
            Action::Warn => self.eval.warnings.push(Warning::Rule(violation)),
            Action::Off => {}
        }
    }

    /// Pod-level additions, once every container is planned.
    fn finish(mut self) -> Evaluation {
        let spec = self.spec;
        let pod_ctx = spec.security_context.as_ref();
        if let Some(gid) = self
            .fs_group
            .filter(|_| pod_ctx.and_then(|s| s.fs_group).is_none())
        {
            if let Some(patch) = &mut self.patch {
                patch.add_fs_group(pod_ctx.is_some(), gid);
            }
            self.eval.mutations.push(MutationKind::FsGroup);
        }
        if self.rewrote {
            let have = spec.image_pull_secrets.as_deref().unwrap_or_default();
            let missing: Vec<&str> = self
                .context
                .policy_file()
                .rewrite
                .image_pull_secrets
                .iter()
                .map(String::as_str)
                .filter(|name| !have.iter().any(|s| s.name == *name))
                .collect();
            if !missing.is_empty() {
                if let Some(patch) = &mut self.patch {
                    patch.add_pull_secrets(spec.image_pull_secrets.is_some(), missing);
                }
                self.eval.mutations.push(MutationKind::ImagePullSecret);
            }
        }
        self.eval.patch = self.patch.map(SpecPatch::into_ops).unwrap_or_default();
        self.eval
    }
}

impl Pass<'_, '_, '_> {
    /// Whether the hardened image's own guide sets the `runAsUser: 0` this container has,
    /// and the policy takes the guide's word (`guides.rootByDesign`): then its root is
    /// by design (it binds low ports as root does), admitted with a warning citing the
    /// guide. A rewritten image is judged on the catalog alone: its guide describes the
    /// hardened image, not the upstream manifest.
    fn root_by_guide(&mut self, container: &str, shown: &Shown<'_>) -> bool {
        let Shown::Hardened(image) = shown else {
            return false;
        };
        let guide = image
            .hardened_repo()
            .and_then(|repo| self.context.guide_prescribing_root(repo));
        let Some(guide) = guide else {
            return false;
        };
        self.eval.warnings.push(Warning::RootByGuide {
            container: container.to_owned(),
            image: image.to_string(),
            guide: guide.to_owned(),
        });
        true
    }

    /// Whether `c` is a privileged node agent (privileged, on the host network or PID
    /// namespace, writing a host path) that the nonroot UID would break: then it is left
    /// without the injected user, with a warning giving the fix (root, which its guide
    /// prescribes or the policy must allow). Read-only host paths (node-exporter's /proc
    /// and /sys) and unprivileged agents keep the usual patch.
    fn leaves_node_agent(
        &mut self,
        c: &ContainerView<'_>,
        shown: &Shown<'_>,
        user: &ImageUser,
    ) -> bool {
        let spec = self.spec;
        let privileged = c.security_context.as_ref().and_then(|s| s.privileged) == Some(true);
        let host = spec.host_network == Some(true) || spec.host_pid == Some(true);
        if !privileged || !host || !self.by_name.writes_host_path(c) {
            return false;
        }
        let repo = shown.repo().unwrap_or_default();
        let fix = match self.context.guide_prescribing_root(repo) {
            Some(guide) => {
                format!("set runAsUser: 0, as the image's own guide prescribes ({guide})")
            }
            _ => format!(
                "set runAsUser: 0 and allow root for this image in the dhi-admission policy \
                 (catalog: {{{repo}: {{allowRoot: true}}}})"
            ),
        };
        self.eval.warnings.push(Warning::NodeAgentNeedsRoot {
            container: c.name.to_string(),
            image: shown.to_string(),
            uid: user.ids.uid,
            fix,
        });
        true
    }

    /// Rewrite only what would then be admitted.
    fn skip_reason(
        &self,
        c: &ContainerView<'_>,
        image: &ImageRef<'_>,
        target: &ImageUser,
        explicit_uid: Option<i64>,
        listed: bool,
    ) -> Option<SkipReason> {
        if image.digest.is_some() {
            return Some(SkipReason::Digest);
        }
        if !listed {
            return Some(SkipReason::UnknownTag);
        }
        let uid = explicit_uid.unwrap_or(target.ids.uid);
        if uid == 0 && !target.root_allowed {
            return Some(SkipReason::RunsAsRoot);
        }
        if !self.may_bind_low_ports(target, uid) && !self.blocked_ports(c).is_empty() {
            return Some(SkipReason::PrivilegedPort);
        }
        let shell = c
            .command
            .as_deref()
            .and_then(<[_]>::first)
            .is_some_and(|cmd| {
                let bin = cmd.rsplit('/').next().unwrap_or(cmd);
                SHELLS.contains(&bin)
            });
        shell.then_some(SkipReason::ShellCommand)
    }

    /// Root may bind anything. A container that runs as root by design does, and so
    /// does one whose root the policy tolerates (`run-as-root` at warn or off): denying
    /// its port would be a false positive. With `run-as-root: deny` the container must
    /// become nonroot, and then the port is in the way too.
    fn may_bind_low_ports(&self, user: &ImageUser, uid: i64) -> bool {
        uid == 0
            && (user.root_allowed
                || self.context.policy_file().action(RuleId::RunAsRoot) != Action::Deny)
    }

    /// Declared ports below the unprivileged port start the container could not bind as
    /// nonroot. The start is the pod's sysctl, else the runtime's (policy
    /// `runtime.unprivilegedPortStart`), else 1024. With hostNetwork the host port is
    /// bound on the node, so it counts too, and only 1024 applies.
    fn blocked_ports(&self, c: &ContainerView<'_>) -> Vec<i64> {
        let spec = self.spec;
        let host = spec.host_network == Some(true);
        let runtime = self
            .context
            .policy_file()
            .runtime
            .unprivileged_port_start
            .filter(|_| !host)
            .map(i64::from);
        let start = spec.unprivileged_port_start().or(runtime).unwrap_or(1024);
        let mut ports: Vec<i64> = c
            .ports
            .iter()
            .flatten()
            .flat_map(|p| [Some(p.container_port), p.host_port.filter(|_| host)])
            .flatten()
            .filter(|&p| (1..1024).contains(&p) && p < start)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

fn explicit_pod_uid(spec: &SpecView<'_>) -> Option<i64> {
    spec.security_context.as_ref().and_then(|s| s.run_as_user)
}

/// A container field, else the pod field it inherits.
fn effective<T>(
    c: &ContainerView<'_>,
    spec: &SpecView<'_>,
    container: impl Fn(&SecurityContextView) -> Option<T>,
    pod: impl Fn(&PodSecurityContextView<'_>) -> Option<T>,
) -> Option<T> {
    c.security_context
        .as_ref()
        .and_then(container)
        .or_else(|| spec.security_context.as_ref().and_then(pod))
}
