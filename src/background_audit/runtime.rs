//! Which unprivileged port start the cluster's container runtime gives pods, read from
//! the nodes (`--detect-runtime-ports`).
//!
//! containerd 2.x sets `net.ipv4.ip_unprivileged_port_start=0` in every pod sandbox that
//! is not on the host network, so a nonroot container there can bind port 80. CRI-O and
//! containerd 1.x leave the kernel's 1024. Only when *every* Linux node runs containerd
//! 2.x can a pod be assumed to get 0 wherever it is scheduled; one other node and the
//! `privileged-port` rule stays in force. Windows nodes have no such sysctl and do not
//! count. The result goes to the engine through the policy's
//! `runtime.unprivilegedPortStart`, the setting the rule already reads (it keeps applying
//! to hostNetwork pods, which get the host's 1024).

use std::fmt;

use k8s_openapi::api::core::v1::Node;

/// What the nodes say about the runtime's unprivileged port start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detection {
    /// Every Linux node runs containerd 2.x or later: pods off the host network get 0.
    Zero {
        /// How many Linux nodes.
        nodes: usize,
    },
    /// At least one Linux node keeps the kernel's 1024 (or none could be read).
    Kernel {
        /// Why, naming one node.
        reason: String,
    },
}

impl Detection {
    /// The value for `runtime.unprivilegedPortStart`: `Some(0)` or `None` (the policy's
    /// own setting, else 1024).
    pub(crate) fn port_start(&self) -> Option<u16> {
        match self {
            Self::Zero { .. } => Some(0),
            Self::Kernel { .. } => None,
        }
    }
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero { nodes } => write!(
                f,
                "every Linux node ({nodes}) runs containerd 2.x: pods off the host network may \
                 bind ports below 1024, privileged-port applies to hostNetwork pods only"
            ),
            Self::Kernel { reason } => write!(f, "privileged-port applies to every pod: {reason}"),
        }
    }
}

/// One node's `status.nodeInfo` fields that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRuntime<'a> {
    /// The node's name.
    pub(crate) name: &'a str,
    /// `operatingSystem`: `linux`, `windows`.
    pub(crate) os: &'a str,
    /// `containerRuntimeVersion`: `containerd://2.0.5`, `cri-o://1.31.0`.
    pub(crate) runtime: &'a str,
}

impl<'a> NodeRuntime<'a> {
    /// From a Node object; nodes without `status.nodeInfo` are not ready to judge by.
    pub(crate) fn from_node(node: &'a Node) -> Option<Self> {
        let info = node.status.as_ref()?.node_info.as_ref()?;
        Some(Self {
            name: node.metadata.name.as_deref().unwrap_or_default(),
            os: &info.operating_system,
            runtime: &info.container_runtime_version,
        })
    }
}

/// Decides from the nodes' runtimes.
#[cfg(test)]
fn detect<'a>(nodes: impl IntoIterator<Item = NodeRuntime<'a>>) -> Detection {
    let mut tally = Tally::default();
    nodes.into_iter().for_each(|node| tally.add(node));
    tally.finish()
}

/// The detection over nodes read a page at a time (a node's status lists its images:
/// a big cluster's nodes are not held at once).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    linux: usize,
    keeps: Option<String>,
}

impl Tally {
    /// Counts one node.
    pub(crate) fn add(&mut self, node: NodeRuntime<'_>) {
        if node.os.eq_ignore_ascii_case("windows") || self.keeps.is_some() {
            return;
        }
        self.linux += 1;
        if !lowers_port_start(node.runtime) {
            self.keeps = Some(format!("node {} runs {}", node.name, shown(node.runtime)));
        }
    }

    /// The result over every node counted.
    pub(crate) fn finish(self) -> Detection {
        match (self.keeps, self.linux) {
            (Some(reason), _) => Detection::Kernel { reason },
            (None, 0) => Detection::Kernel {
                reason: "no Linux node reports its container runtime".to_owned(),
            },
            (None, nodes) => Detection::Zero { nodes },
        }
    }
}

/// `containerd://MAJOR...` with MAJOR at least 2.
fn lowers_port_start(runtime: &str) -> bool {
    let Some(version) = runtime.strip_prefix("containerd://") else {
        return false;
    };
    let version = version.strip_prefix('v').unwrap_or(version);
    let major = version.split(['.', '-', '+']).next().unwrap_or_default();
    major.parse::<u32>().is_ok_and(|major| major >= 2)
}

/// The runtime as reported, bounded: it ends up in logs and reports.
fn shown(runtime: &str) -> String {
    if runtime.is_empty() {
        return "an unreported runtime".to_owned();
    }
    let mut out: String = runtime.chars().take(64).collect();
    if out.len() < runtime.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'a>(name: &'a str, os: &'a str, runtime: &'a str) -> NodeRuntime<'a> {
        NodeRuntime { name, os, runtime }
    }

    #[test]
    fn every_linux_node_on_containerd_2_lowers_the_port_start() {
        let nodes = [
            node("a", "linux", "containerd://2.0.5"),
            node("b", "linux", "containerd://v2.1.0-rc.1"),
            node("w", "windows", "containerd://1.7.20"),
        ];
        let detected = detect(nodes);
        assert_eq!(detected, Detection::Zero { nodes: 2 });
        assert_eq!(detected.port_start(), Some(0));
    }

    #[test]
    fn one_cri_o_or_containerd_1_node_keeps_the_rule() {
        let cri_o = detect([
            node("a", "linux", "containerd://2.0.5"),
            node("b", "linux", "cri-o://1.31.0"),
        ]);
        assert_eq!(
            cri_o,
            Detection::Kernel {
                reason: "node b runs cri-o://1.31.0".to_owned()
            }
        );
        assert_eq!(cri_o.port_start(), None);
        assert_eq!(
            detect([node("c", "linux", "containerd://1.7.22")]),
            Detection::Kernel {
                reason: "node c runs containerd://1.7.22".to_owned()
            }
        );
        // Docker's own default, unknown strings and missing versions are not assumed.
        for runtime in [
            "docker://27.3.1",
            "containerd://",
            "containerd://x.1",
            "",
            "containerd2",
        ] {
            assert_eq!(
                detect([node("d", "linux", runtime)]).port_start(),
                None,
                "{runtime}"
            );
        }
    }

    #[test]
    fn no_linux_node_keeps_the_rule() {
        assert_eq!(
            detect([node("w", "windows", "containerd://2.0.0")]),
            Detection::Kernel {
                reason: "no Linux node reports its container runtime".to_owned()
            }
        );
        assert_eq!(detect([]).port_start(), None);
    }

    #[test]
    fn hostile_runtime_strings_are_cut_in_messages() {
        let long = format!("cri-o://{}", "9".repeat(10_000));
        let Detection::Kernel { reason } = detect([node("n", "linux", &long)]) else {
            panic!("a CRI-O node keeps the rule");
        };
        assert_eq!(reason.chars().count(), "node n runs ".len() + 65);
    }
}
