//! Where the pod spec lives in each kind the engine understands.
//!
//! One table answers both questions the rules ask: how to reach the spec in the
//! decoded view, and which JSON Pointer prefix patches must use to reach it.

use std::fmt;

use crate::spec::{ObjectView, SpecView};

/// A kind that carries a pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// `v1/Pod`: the spec is `spec`.
    Pod,
    /// `v1/PodTemplate`: `template.spec`.
    PodTemplate,
    /// `v1/ReplicationController`: `spec.template.spec`.
    ReplicationController,
    /// `apps/v1/Deployment`
    Deployment,
    /// `apps/v1/StatefulSet`
    StatefulSet,
    /// `apps/v1/DaemonSet`
    DaemonSet,
    /// `apps/v1/ReplicaSet`
    ReplicaSet,
    /// `batch/v1/Job`
    Job,
    /// `batch/v1/CronJob`: `spec.jobTemplate.spec.template.spec`.
    CronJob,
}

impl WorkloadKind {
    /// Every kind, for tests and for listing in messages.
    pub const ALL: [Self; 9] = [
        Self::Pod,
        Self::PodTemplate,
        Self::ReplicationController,
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicaSet,
        Self::Job,
        Self::CronJob,
    ];

    /// Recognises a kind by API group and kind name (a CRD called `Deployment` in
    /// another group is not ours to judge).
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        Some(match (group, kind) {
            ("", "Pod") => Self::Pod,
            ("", "PodTemplate") => Self::PodTemplate,
            ("", "ReplicationController") => Self::ReplicationController,
            ("apps", "Deployment") => Self::Deployment,
            ("apps", "StatefulSet") => Self::StatefulSet,
            ("apps", "DaemonSet") => Self::DaemonSet,
            ("apps", "ReplicaSet") => Self::ReplicaSet,
            ("batch", "Job") => Self::Job,
            ("batch", "CronJob") => Self::CronJob,
            _ => return None,
        })
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Self::Pod | Self::PodTemplate | Self::ReplicationController => "",
            Self::Deployment | Self::StatefulSet | Self::DaemonSet | Self::ReplicaSet => "apps",
            Self::Job | Self::CronJob => "batch",
        }
    }

    /// Recognises a manifest's `apiVersion` (`apps/v1`) and `kind`.
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<Self> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        Self::from_group_kind(group, kind)
    }

    /// The kind's name, as written in manifests and used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::PodTemplate => "PodTemplate",
            Self::ReplicationController => "ReplicationController",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
        }
    }

    /// The resource name the API serves the kind under (`deployments`), for URLs and
    /// watches: the scan and the background audit list exactly the kinds judged here.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Pod => "pods",
            Self::PodTemplate => "podtemplates",
            Self::ReplicationController => "replicationcontrollers",
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
            Self::ReplicaSet => "replicasets",
            Self::Job => "jobs",
            Self::CronJob => "cronjobs",
        }
    }

    /// Pods run; every other kind is a template for pods.
    pub fn is_template(self) -> bool {
        self != Self::Pod
    }

    /// JSON Pointer tokens from the object root to the pod spec.
    pub fn spec_path(self) -> &'static [&'static str] {
        match self {
            Self::Pod => &["spec"],
            Self::PodTemplate => &["template", "spec"],
            Self::CronJob => &["spec", "jobTemplate", "spec", "template", "spec"],
            _ => &["spec", "template", "spec"],
        }
    }

    /// The pod spec inside a decoded object, if the object has one.
    pub fn pod_spec<'o, 'a>(self, object: &'o ObjectView<'a>) -> Option<&'o SpecView<'a>> {
        match self {
            Self::Pod => object.spec.as_ref(),
            Self::PodTemplate => object.template.as_ref()?.spec.as_ref(),
            Self::CronJob => object
                .spec
                .as_ref()?
                .job_template
                .as_ref()?
                .spec
                .as_ref()?
                .template
                .as_ref()?
                .spec
                .as_ref(),
            _ => object.spec.as_ref()?.template.as_ref()?.spec.as_ref(),
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_matters() {
        assert_eq!(
            WorkloadKind::from_api_version_kind("apps/v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("v1", "Deployment"),
            None
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("example.com/v1", "Deployment"),
            None
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("v1", "Pod"),
            Some(WorkloadKind::Pod)
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("batch/v1", "CronJob"),
            Some(WorkloadKind::CronJob)
        );
    }

    #[test]
    fn every_kind_names_its_own_group() {
        for kind in WorkloadKind::ALL {
            assert_eq!(
                WorkloadKind::from_group_kind(kind.group(), kind.as_str()),
                Some(kind)
            );
        }
    }

    #[test]
    fn every_kind_finds_its_spec() {
        let pod = r#"{"containers":[{"name":"c","image":"dhi.io/nginx:1"}]}"#;
        for kind in WorkloadKind::ALL {
            // Build the object by nesting the pod spec along the kind's own path.
            let mut json = pod.to_owned();
            for token in kind.spec_path().iter().rev() {
                json = format!(r#"{{"{token}":{json}}}"#);
            }
            let object: ObjectView = serde_json::from_str(&json).unwrap();
            let spec = kind.pod_spec(&object).unwrap_or_else(|| panic!("{kind}"));
            assert_eq!(spec.containers.as_ref().unwrap()[0].name, "c");
        }
    }
}
