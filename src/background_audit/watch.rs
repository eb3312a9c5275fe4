//! Watching the workload kinds: one `kube-runtime` watcher per kind, decoded into a
//! compact [`Workload`] (names, owners and the spec; never `managedFields`, status or
//! annotations), sent to the reconciler over a bounded channel.
//!
//! A watcher lists, then watches; after a 410 Gone, or when the reconciler asks for a
//! full resync (the interval, a new policy or catalog, a new runtime detection), it lists
//! again. Each list is framed by [`Change::Listing`] and [`Change::Listed`], so entries
//! of objects that disappeared meanwhile are dropped then.

use std::borrow::Cow;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::PartialObjectMeta;
use kube::core::{ApiResource, GroupVersionKind, NamespaceResourceScope};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use crate::report::MODE_LABEL;
use dhi_policy::WorkloadKind;

/// The kinds the audit watches: every kind the engine judges, as the webhook and `scan`
/// judge them (a PodTemplate runs no pod itself, but the pods made from it will run it).
pub(crate) const WATCHED: [WorkloadKind; WorkloadKind::ALL.len()] = WorkloadKind::ALL;

/// A workload as the audit keeps it while judging it: what the engine reads, and who
/// owns it. Decoding skips every other field without allocating for it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Workload {
    /// Name, namespace, uid and controller, only.
    #[serde(deserialize_with = "compact_meta")]
    pub(crate) metadata: ObjectMeta,
    /// The spec, where every workload keeps its pod spec, as it came: only workloads not
    /// reported through an owner are read further, and JSON text takes a fraction of the
    /// memory of a decoded tree.
    #[serde(default)]
    pub(crate) spec: Option<Box<RawValue>>,
}

impl Workload {
    /// The object the engine is asked about, as JSON: metadata and spec.
    pub(crate) fn object_json(&self) -> String {
        let meta = serde_json::json!({
            "name": self.metadata.name,
            "namespace": self.metadata.namespace,
        });
        let spec = self.spec.as_deref().map_or("null", RawValue::get);
        format!(r#"{{"metadata":{meta},"spec":{spec}}}"#)
    }

    /// The controller that owns this object, if it is a kind the audit watches: then that
    /// owner is judged and reported, not this object (a Deployment, not its ReplicaSets
    /// and pods).
    pub(crate) fn watched_owner(&self) -> Option<(WorkloadKind, &str)> {
        let owner = self
            .metadata
            .owner_references
            .as_deref()?
            .iter()
            .find(|o| o.controller == Some(true))?;
        let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let kind = WorkloadKind::from_group_kind(group, &owner.kind)?;
        WATCHED
            .contains(&kind)
            .then_some((kind, owner.name.as_str()))
    }
}

/// The metadata fields the audit reads, decoded into an `ObjectMeta` that holds nothing
/// else (managedFields, labels and annotations are skipped while parsing).
fn compact_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Compact {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        #[serde(default)]
        owner_references: Vec<Owner>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Owner {
        api_version: String,
        kind: String,
        name: String,
        controller: Option<bool>,
    }
    let c = Compact::deserialize(d)?;
    let owners: Vec<OwnerReference> = c
        .owner_references
        .into_iter()
        .filter(|o| o.controller == Some(true))
        .map(|o| OwnerReference {
            api_version: o.api_version,
            kind: o.kind,
            name: o.name,
            controller: o.controller,
            ..OwnerReference::default()
        })
        .collect();
    Ok(ObjectMeta {
        name: c.name,
        namespace: c.namespace,
        uid: c.uid,
        resource_version: c.resource_version,
        owner_references: (!owners.is_empty()).then_some(owners),
        ..ObjectMeta::default()
    })
}

impl Resource for Workload {
    type DynamicType = ApiResource;
    type Scope = NamespaceResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The API resource of a watched kind (all are served as `v1` of their group).
pub(crate) fn api_resource(kind: WorkloadKind) -> ApiResource {
    let gvk = GroupVersionKind::gvk(kind.group(), "v1", kind.as_str());
    ApiResource::from_gvk_with_plural(&gvk, kind.plural())
}

/// What a watcher tells the reconciler.
#[derive(Debug)]
pub(crate) enum Change {
    /// A list of this kind starts: entries not seen again by [`Change::Listed`] are gone.
    Listing(WorkloadKind),
    /// An object was listed, added or modified.
    Applied(WorkloadKind, Workload),
    /// An object was deleted.
    Deleted(WorkloadKind, Workload),
    /// The list is complete.
    Listed(WorkloadKind),
    /// A namespace and its `dhi.io/mode` label (listed, added or relabelled).
    Namespace {
        /// Its name.
        name: String,
        /// Its `dhi.io/mode` label.
        mode_label: Option<String>,
    },
    /// A namespace was deleted.
    NamespaceDeleted(String),
    /// Every namespace has been listed (once per list).
    NamespacesListed,
}

/// Watches one kind until `stop`, listing again whenever `resync` changes. Errors (a
/// lost connection, a 403) are logged and retried with kube-runtime's backoff.
pub(crate) async fn watch_kind(
    client: Client,
    kind: WorkloadKind,
    tx: mpsc::Sender<Change>,
    mut resync: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Workload> = Api::all_with(client, &api_resource(kind));
    loop {
        resync.mark_unchanged();
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let event = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = resync.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                event = stream.next() => event,
            };
            let change = match event {
                None => return,
                Some(Err(err)) => {
                    tracing::warn!(kind = kind.as_str(), error = %err, "watch failed; retrying");
                    continue;
                }
                Some(Ok(Event::Init)) => Change::Listing(kind),
                Some(Ok(Event::InitDone)) => Change::Listed(kind),
                Some(Ok(Event::Apply(w) | Event::InitApply(w))) => Change::Applied(kind, w),
                Some(Ok(Event::Delete(w))) => Change::Deleted(kind, w),
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

/// Watches the namespaces' metadata (their `dhi.io/mode` label routes them to a mode)
/// until `stop`.
pub(crate) async fn watch_namespaces(
    client: Client,
    tx: mpsc::Sender<Change>,
    mut stop: watch::Receiver<bool>,
) {
    // Metadata only: a namespace's spec and status are of no use here.
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            event = stream.next() => event,
        };
        let change = match event {
            None => return,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "namespace watch failed; retrying");
                continue;
            }
            Some(Ok(Event::Init)) => continue,
            Some(Ok(Event::InitDone)) => Change::NamespacesListed,
            Some(Ok(Event::Apply(ns) | Event::InitApply(ns))) => Change::Namespace {
                mode_label: ns
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MODE_LABEL))
                    .cloned(),
                name: ns.metadata.name.unwrap_or_default(),
            },
            Some(Ok(Event::Delete(ns))) => {
                Change::NamespaceDeleted(ns.metadata.name.unwrap_or_default())
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_engine_and_the_owner_check_read_is_kept() {
        let json = r#"{
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": "web-7d9", "namespace": "shop", "uid": "u1", "resourceVersion": "42",
                "labels": {"app": "web"}, "annotations": {"big": "xxxxxxxxxxxxxxxx"},
                "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {}}}],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u0", "controller": true},
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u2"}
                ]
            },
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}},
            "status": {"replicas": 3}
        }"#;
        let w: Workload = serde_json::from_str(json).unwrap();
        assert_eq!(w.metadata.name.as_deref(), Some("web-7d9"));
        assert_eq!(w.metadata.resource_version.as_deref(), Some("42"));
        assert!(w.metadata.labels.is_none() && w.metadata.annotations.is_none());
        assert!(w.metadata.managed_fields.is_none());
        assert_eq!(w.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(w.watched_owner(), Some((WorkloadKind::Deployment, "web")));
        let object: serde_json::Value = serde_json::from_str(&w.object_json()).unwrap();
        assert_eq!(
            object,
            serde_json::json!({
                "metadata": {"name": "web-7d9", "namespace": "shop"},
                "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}
            })
        );
    }

    #[test]
    fn owners_of_other_kinds_do_not_hide_a_workload() {
        let json = r#"{"metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "example.com/v1", "kind": "Deployment", "name": "x", "uid": "u", "controller": true}
        ]}}"#;
        let w: Workload = serde_json::from_str(json).unwrap();
        assert_eq!(w.watched_owner(), None);
        let standalone: Workload = serde_json::from_str(r#"{"metadata": {"name": "p"}}"#).unwrap();
        assert_eq!(standalone.watched_owner(), None);
    }

    #[test]
    fn every_watched_kind_has_its_resource() {
        let ar = api_resource(WorkloadKind::CronJob);
        assert_eq!(
            (
                ar.group.as_str(),
                ar.api_version.as_str(),
                ar.plural.as_str()
            ),
            ("batch", "batch/v1", "cronjobs")
        );
        let pods = api_resource(WorkloadKind::Pod);
        assert_eq!(
            (pods.api_version.as_str(), pods.plural.as_str()),
            ("v1", "pods")
        );
    }
}
