//! Borrowed, typed views of the few pod-spec fields the rules read.
//!
//! Decoding into these skips everything else without building a `serde_json::Value`
//! tree (which costs more than the rest of a request; see bench/README.md). Strings borrow from the request
//! body unless they contain escapes. `null` reads as absent, as the API server does.
//! The views derive `PartialEq` so an UPDATE that leaves them unchanged is recognised.

use std::borrow::Cow;

use serde::Deserialize;

/// Any object that may carry a pod spec: the union of the shapes we read, so one pass
/// over the JSON finds the spec whatever the kind.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView<'a> {
    /// `v1`, `apps/v1`, ... (absent in admission objects of some clients).
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub api_version: Option<Cow<'a, str>>,
    /// `Pod`, `Deployment`, ...
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub kind: Option<Cow<'a, str>>,
    /// Name and namespace, for reports.
    #[serde(borrow, default)]
    pub metadata: Option<MetaView<'a>>,
    /// A pod spec (Pod), a workload spec (Deployment, Job, ...) or a CronJob spec.
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
    /// PodTemplate's template.
    #[serde(borrow, default)]
    pub template: Option<Box<TemplateView<'a>>>,
    /// On an UPDATE's old object: whether its pod spec equals the new object's in every
    /// field, not just those the views read (`None` when the source kept no JSON to
    /// compare, and then the views are compared).
    #[serde(skip)]
    pub same_pod_spec_as_new: Option<bool>,
}

/// Object metadata we report on.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct MetaView<'a> {
    /// `metadata.name`
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub name: Option<Cow<'a, str>>,
    /// `metadata.generateName`, for pods created by controllers.
    #[serde(
        borrow,
        default,
        rename = "generateName",
        deserialize_with = "borrowed::option"
    )]
    pub generate_name: Option<Cow<'a, str>>,
    /// `metadata.namespace`
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub namespace: Option<Cow<'a, str>>,
}

/// A pod template (`spec.template` of workloads, `template` of PodTemplate).
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct TemplateView<'a> {
    /// The pod spec.
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
}

/// CronJob's `spec.jobTemplate`.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct JobTemplateView<'a> {
    /// The Job spec, whose `template.spec` is the pod spec.
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
}

/// The fields of PodSpec that the rules read, plus `template`/`jobTemplate` so the same
/// type walks down from a workload spec to its pod spec.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    /// Regular containers.
    #[serde(borrow, default)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    /// Init containers (including native sidecars).
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    /// Ephemeral (debug) containers.
    #[serde(borrow, default)]
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
    /// Pod-level security context.
    #[serde(borrow, default)]
    pub security_context: Option<PodSecurityContextView<'a>>,
    /// Containers bind their ports on the node.
    #[serde(default)]
    pub host_network: Option<bool>,
    /// The pod shares the node's process namespace.
    #[serde(default, rename = "hostPID")]
    pub host_pid: Option<bool>,
    /// Volumes, for which of them are host paths.
    #[serde(borrow, default)]
    pub volumes: Option<Vec<VolumeView<'a>>>,
    /// `linux` or `windows`.
    #[serde(borrow, default)]
    pub os: Option<OsView<'a>>,
    /// `kubernetes.io/os: windows` schedules the pod on Windows nodes.
    #[serde(borrow, default)]
    pub node_selector: Option<NodeSelectorView<'a>>,
    /// Registry credentials.
    #[serde(borrow, default)]
    pub image_pull_secrets: Option<Vec<NameRef<'a>>>,
    /// Workload kinds: the pod template.
    #[serde(borrow, default)]
    pub template: Option<Box<TemplateView<'a>>>,
    /// CronJob: the job template.
    #[serde(borrow, default)]
    pub job_template: Option<Box<JobTemplateView<'a>>>,
}

/// The container fields the rules read.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    /// Container name, for messages.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// Image reference; optional in workload templates.
    #[serde(borrow, default, deserialize_with = "borrowed::option")]
    pub image: Option<Cow<'a, str>>,
    /// Entrypoint override: a shell here means the image needs one.
    #[serde(borrow, default, deserialize_with = "borrowed::option_vec")]
    pub command: Option<Vec<Cow<'a, str>>>,
    /// Declared ports.
    #[serde(default)]
    pub ports: Option<Vec<PortView>>,
    /// Container-level security context.
    #[serde(default)]
    pub security_context: Option<SecurityContextView>,
    /// Mounted volumes, for whether a host path is written.
    #[serde(borrow, default)]
    pub volume_mounts: Option<Vec<VolumeMountView<'a>>>,
}

/// A volume: its name, and whether it is a host path.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView<'a> {
    /// `name`
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// `hostPath`, whose fields do not matter here.
    #[serde(default)]
    pub host_path: Option<serde::de::IgnoredAny>,
}

/// A volume mount.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMountView<'a> {
    /// The volume's name.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// `readOnly`
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// A declared port.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortView {
    /// The port the process binds inside the pod's network namespace.
    #[serde(default)]
    pub container_port: i64,
    /// The node port it is exposed on.
    #[serde(default)]
    pub host_port: Option<i64>,
}

/// The container security-context fields that decide the user.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContextView {
    /// `runAsUser`
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `runAsGroup`
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// `windowsOptions`: only Windows containers have them.
    #[serde(default)]
    pub windows_options: Option<WindowsOptionsView>,
    /// `privileged`
    #[serde(default)]
    pub privileged: Option<bool>,
    /// `capabilities`: whether NET_BIND_SERVICE stays in the bounding set.
    #[serde(default)]
    pub capabilities: Option<CapabilitiesView>,
}

/// `capabilities`
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct CapabilitiesView {
    /// `add`
    #[serde(default)]
    pub add: Option<Vec<String>>,
    /// `drop`
    #[serde(default)]
    pub drop: Option<Vec<String>>,
}

impl CapabilitiesView {
    /// Whether `list` names `cap` (`NET_BIND_SERVICE`, `CAP_NET_BIND_SERVICE`, any case),
    /// or `ALL` when `all` counts.
    fn names(list: Option<&[String]>, cap: &str, all: bool) -> bool {
        list.into_iter().flatten().any(|c| {
            let c = c.strip_prefix("CAP_").unwrap_or(c);
            c.eq_ignore_ascii_case(cap) || all && c.eq_ignore_ascii_case("ALL")
        })
    }

    /// Whether `add` names the capability.
    pub fn adds(&self, cap: &str) -> bool {
        Self::names(self.add.as_deref(), cap, false)
    }

    /// Whether the container's bounding set lacks the capability. containerd starts from
    /// its default set (which has NET_BIND_SERVICE), empties it for `drop: [ALL]`, adds
    /// `add`, then removes each capability `drop` names.
    pub fn removes(&self, cap: &str) -> bool {
        Self::names(self.drop.as_deref(), cap, false)
            || Self::names(self.drop.as_deref(), "ALL", false) && !self.adds(cap)
    }
}

/// `windowsOptions`
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WindowsOptionsView {
    /// `hostProcess`: a Windows HostProcess container.
    #[serde(default)]
    pub host_process: Option<bool>,
}

/// `nodeSelector`, of which only the OS label matters here.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct NodeSelectorView<'a> {
    /// `kubernetes.io/os`
    #[serde(
        borrow,
        default,
        rename = "kubernetes.io/os",
        deserialize_with = "borrowed::option"
    )]
    pub os: Option<Cow<'a, str>>,
}

/// Pod-level security context.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContextView<'a> {
    /// `runAsUser`, inherited by containers that set none.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `runAsGroup`
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// `fsGroup`
    #[serde(default)]
    pub fs_group: Option<i64>,
    /// Namespaced sysctls (`net.ipv4.ip_unprivileged_port_start`).
    #[serde(borrow, default)]
    pub sysctls: Option<Vec<SysctlView<'a>>>,
    /// `windowsOptions`, inherited by containers.
    #[serde(default)]
    pub windows_options: Option<WindowsOptionsView>,
}

/// One sysctl.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct SysctlView<'a> {
    /// Sysctl name.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// Its value, always a string in the API.
    #[serde(borrow, default)]
    pub value: Cow<'a, str>,
}

/// `spec.os`
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct OsView<'a> {
    /// `linux` or `windows`.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
}

/// A `LocalObjectReference`.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct NameRef<'a> {
    /// The referenced name.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
}

/// Strings that borrow from the JSON unless it escapes them.
///
/// serde borrows a `Cow<str>` only when it is the field's whole type; inside `Option`
/// or `Vec` it always copies: an allocation per string on the request path.
pub mod borrowed {
    use std::borrow::Cow;
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Deserialize, Visitor};

    struct Str<'a>(Cow<'a, str>);

    impl<'de> Deserialize<'de> for Str<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct StrVisitor;
            impl<'de> Visitor<'de> for StrVisitor {
                type Value = Str<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                    Ok(Str(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(Str(Cow::Owned(v.to_owned())))
                }
                fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                    Ok(Str(Cow::Owned(v)))
                }
            }
            d.deserialize_str(StrVisitor)
        }
    }

    /// `Option<Cow<str>>`, borrowed where it can be.
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
        Ok(Option::<Str<'de>>::deserialize(d)?.map(|s| s.0))
    }

    /// `Option<Vec<Cow<str>>>`, borrowed where it can be.
    pub fn option_vec<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<Cow<'de, str>>>, D::Error> {
        Ok(Option::<Vec<Str<'de>>>::deserialize(d)?.map(|v| v.into_iter().map(|s| s.0).collect()))
    }
}

impl SpecView<'_> {
    /// Windows pods get no Linux-only fields and are not judged by Linux rules. A pod is
    /// Windows when `spec.os.name` says so, when any `windowsOptions.hostProcess` is set
    /// (pod or container), or when its nodeSelector requires `kubernetes.io/os: windows`.
    pub fn is_windows(&self) -> bool {
        let host_process =
            |w: &Option<WindowsOptionsView>| w.as_ref().is_some_and(|w| w.host_process.is_some());
        let containers = [
            &self.init_containers,
            &self.containers,
            &self.ephemeral_containers,
        ];
        self.os.as_ref().is_some_and(|os| os.name == "windows")
            || self
                .node_selector
                .as_ref()
                .is_some_and(|n| n.os.as_deref() == Some("windows"))
            || self
                .security_context
                .as_ref()
                .is_some_and(|s| host_process(&s.windows_options))
            || containers.into_iter().flatten().flatten().any(|c| {
                c.security_context
                    .as_ref()
                    .is_some_and(|s| host_process(&s.windows_options))
            })
    }

    /// The lowest port a nonroot process may bind, if the pod lowers it with the
    /// namespaced sysctl (meaningless with hostNetwork, where the node's value applies).
    pub fn unprivileged_port_start(&self) -> Option<i64> {
        if self.host_network == Some(true) {
            return None;
        }
        self.security_context
            .as_ref()?
            .sysctls
            .as_ref()?
            .iter()
            .rev() // the last entry wins, as in the kubelet
            .find(|s| {
                matches!(
                    s.name.as_ref(),
                    "net.ipv4.ip_unprivileged_port_start" | "net/ipv4/ip_unprivileged_port_start"
                )
            })
            .and_then(|s| s.value.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::ContainerView;

    #[test]
    fn strings_borrow_unless_escaped() {
        let json = r#"{"name":"app","image":"dhi.io/python:3.13","command":["python","a\u003cb"]}"#;
        let c: ContainerView<'_> = serde_json::from_str(json).unwrap();
        assert!(matches!(c.image, Some(Cow::Borrowed("dhi.io/python:3.13"))));
        let command = c.command.unwrap();
        assert!(matches!(command[0], Cow::Borrowed("python")));
        assert!(matches!(&command[1], Cow::Owned(s) if s == "a<b"));
        let null: ContainerView<'_> = serde_json::from_str(r#"{"image":null}"#).unwrap();
        assert_eq!(null.image, None);
        assert!(serde_json::from_str::<ContainerView<'_>>(r#"{"image":5}"#).is_err());
    }
}
