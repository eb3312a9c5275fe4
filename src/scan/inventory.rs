//! The workloads found, each owner judged once: pods and the ReplicaSets and Jobs in
//! between are reported through the workload at the top of their owner chain, and a
//! pod on its own only when it says more than that workload's template.

use std::collections::HashMap;

use serde_json::value::RawValue;

use super::cluster::Item;
use crate::report::{self, NamespaceMode, OwnerRef, Workload, WorkloadReport};
use dhi_policy::{Engine, Mode, WorkloadKind, decode_object};

/// The order kinds are listed in: every kind the engine judges ([`WorkloadKind::ALL`]),
/// owners before what they own.
pub(super) const LIST_ORDER: [WorkloadKind; WorkloadKind::ALL.len()] = list_order();

/// How many owners stand above a kind's objects at most: the lists are sorted by it.
/// The match has no catch-all, so a new kind must be placed here to compile.
const fn depth(kind: WorkloadKind) -> u8 {
    match kind {
        WorkloadKind::CronJob
        | WorkloadKind::Deployment
        | WorkloadKind::StatefulSet
        | WorkloadKind::DaemonSet
        | WorkloadKind::ReplicationController
        | WorkloadKind::PodTemplate => 0,
        WorkloadKind::Job | WorkloadKind::ReplicaSet => 1,
        WorkloadKind::Pod => 2,
    }
}

/// [`WorkloadKind::ALL`], stably sorted by [`depth`].
const fn list_order() -> [WorkloadKind; WorkloadKind::ALL.len()] {
    let mut order = WorkloadKind::ALL;
    let mut i = 1;
    while i < order.len() {
        let mut j = i;
        while j > 0 && depth(order[j - 1]) > depth(order[j]) {
            let swap = order[j - 1];
            order[j - 1] = order[j];
            order[j] = swap;
            j -= 1;
        }
        i += 1;
    }
    order
}

/// What a uid stands for.
enum Node {
    /// A workload reported at this index.
    Reported(usize),
    /// A ReplicaSet or Job reported through its owner (this uid).
    Through(String),
}

/// The reports so far, and how to find a pod's top owner.
pub(super) struct Inventory<'e> {
    engine: &'e Engine,
    server_mode: Mode,
    namespaces: HashMap<String, NamespaceMode>,
    nodes: HashMap<String, Node>,
    reports: Vec<WorkloadReport>,
    errors: Vec<String>,
}

impl<'e> Inventory<'e> {
    /// An empty inventory for a policy and its server-wide mode.
    pub(super) fn new(engine: &'e Engine, server_mode: Mode) -> Self {
        Self {
            engine,
            server_mode,
            namespaces: HashMap::new(),
            nodes: HashMap::new(),
            reports: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Records a namespace's `dhi.io/mode` label.
    pub(super) fn namespace(&mut self, name: &str, label: Option<&str>) {
        let mode = NamespaceMode::resolve(label, self.server_mode);
        self.namespaces.insert(name.to_owned(), mode);
    }

    /// A namespace object from a list.
    pub(super) fn add_namespace(&mut self, raw: &RawValue) {
        match serde_json::from_str::<Item<'_>>(raw.get()) {
            Ok(item) => {
                let label = item.metadata.labels.get(report::MODE_LABEL);
                self.namespace(&item.metadata.name, label.map(|l| l.as_ref()));
            }
            Err(err) => self.errors.push(format!("Namespace: {err}")),
        }
    }

    /// One listed object of `kind`. Lists must come in [`LIST_ORDER`].
    pub(super) fn add(&mut self, kind: WorkloadKind, raw: &RawValue) {
        let item = match serde_json::from_str::<Item<'_>>(raw.get()) {
            Ok(item) => item.metadata,
            Err(err) => return self.errors.push(format!("{kind}: {err}")),
        };
        let controller = item.controller();
        let owner = controller.and_then(|c| self.top_owner(&c.uid));
        if let (Some(c), Some(_)) = (controller, owner)
            && is_intermediate(kind, &c.api_version, &c.kind)
        {
            self.nodes
                .insert(item.uid.to_string(), Node::Through(c.uid.to_string()));
            return;
        }
        let object = match decode_object(raw.get()) {
            Ok(object) => object,
            Err(err) => {
                return self
                    .errors
                    .push(format!("{kind} {}/{}: {err}", item.namespace, item.name));
            }
        };
        let mode = self.mode(&item.namespace);
        let workload = Workload {
            kind,
            namespace: &item.namespace,
            name: &item.name,
            uid: Some(&item.uid),
            mode,
            object,
        };
        let mut report = match report::judge(self.engine, workload) {
            Ok(report) => report,
            Err(err) => {
                return self
                    .errors
                    .push(format!("{kind} {}/{}: {err}", item.namespace, item.name));
            }
        };
        if kind == WorkloadKind::Pod
            && let Some(index) = owner
        {
            let top = &mut self.reports[index];
            if !report.says_more_than(top) {
                top.pods += 1;
                return;
            }
            report.owner = Some(OwnerRef {
                kind: top.kind,
                name: top.name.clone(),
            });
        }
        self.nodes
            .insert(item.uid.to_string(), Node::Reported(self.reports.len()));
        self.reports.push(report);
    }

    /// The report index at the top of `uid`'s owner chain, if it was listed.
    fn top_owner(&self, uid: &str) -> Option<usize> {
        let mut uid = uid;
        // Chains are two deep (Deployment → ReplicaSet → Pod); the bound guards a cycle
        // a hostile API server could invent.
        for _ in 0..4 {
            match self.nodes.get(uid)? {
                Node::Reported(index) => return Some(*index),
                Node::Through(owner) => uid = owner,
            }
        }
        None
    }

    fn mode(&self, namespace: &str) -> NamespaceMode {
        self.namespaces
            .get(namespace)
            .copied()
            .unwrap_or(NamespaceMode::resolve(None, self.server_mode))
    }

    /// The reports sorted by namespace, kind and name, and the objects that could not
    /// be read.
    pub(super) fn finish(mut self) -> (Vec<WorkloadReport>, Vec<String>) {
        self.reports.sort_by(|a, b| {
            (&a.namespace, a.kind.as_str(), &a.name).cmp(&(&b.namespace, b.kind.as_str(), &b.name))
        });
        (self.reports, self.errors)
    }
}

/// ReplicaSets of Deployments and Jobs of CronJobs run the owner's template: they are
/// reported through it.
fn is_intermediate(kind: WorkloadKind, owner_api_version: &str, owner_kind: &str) -> bool {
    matches!(
        (
            kind,
            WorkloadKind::from_api_version_kind(owner_api_version, owner_kind)
        ),
        (WorkloadKind::ReplicaSet, Some(WorkloadKind::Deployment))
            | (WorkloadKind::Job, Some(WorkloadKind::CronJob))
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::report::Verdict;

    /// `scan` and the background audit list every kind the webhook judges, so that a new
    /// kind cannot be missed by one of them; owners come before what they own.
    #[test]
    fn scan_and_audit_list_every_kind_the_engine_judges() {
        let engine: std::collections::BTreeSet<&str> =
            WorkloadKind::ALL.iter().map(|k| k.as_str()).collect();
        let set = |kinds: &[WorkloadKind]| {
            assert_eq!(kinds.len(), engine.len());
            kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(set(&LIST_ORDER), engine);
        assert_eq!(set(&crate::background_audit::WATCHED), engine);
        let at = |kind| LIST_ORDER.iter().position(|k| *k == kind).unwrap();
        for (owner, owned) in [
            (WorkloadKind::CronJob, WorkloadKind::Job),
            (WorkloadKind::Deployment, WorkloadKind::ReplicaSet),
            (WorkloadKind::ReplicaSet, WorkloadKind::Pod),
            (WorkloadKind::Job, WorkloadKind::Pod),
            (WorkloadKind::StatefulSet, WorkloadKind::Pod),
            (WorkloadKind::DaemonSet, WorkloadKind::Pod),
            (WorkloadKind::ReplicationController, WorkloadKind::Pod),
        ] {
            assert!(
                at(owner) < at(owned),
                "{owner} before {owned}: {LIST_ORDER:?}"
            );
        }
    }

    fn raw(value: Value) -> Box<RawValue> {
        RawValue::from_string(value.to_string()).unwrap()
    }

    fn meta(name: &str, uid: &str, owner: Option<(&str, &str, &str)>) -> Value {
        let mut meta = json!({"name": name, "namespace": "team", "uid": uid});
        if let Some((api_version, kind, owner_uid)) = owner {
            meta["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind,
                "name": "x", "uid": owner_uid, "controller": true}]);
        }
        meta
    }

    fn template(image: &str) -> Value {
        json!({"template": {"spec": {"containers": [{"name": "app", "image": image}]}}})
    }

    fn pod(name: &str, uid: &str, owner: Option<(&str, &str, &str)>, image: &str) -> Box<RawValue> {
        raw(json!({"metadata": meta(name, uid, owner),
                   "spec": {"containers": [{"name": "app", "image": image}]}}))
    }

    #[test]
    fn pods_are_reported_through_their_top_owner_unless_they_say_more() {
        let engine = Engine::default();
        let mut inventory = Inventory::new(&engine, Mode::Enforce);
        inventory.namespace("team", None);
        let deployment =
            raw(json!({"metadata": meta("web", "d1", None), "spec": template("nginx:1.31")}));
        inventory.add(WorkloadKind::Deployment, &deployment);
        let rs = raw(
            json!({"metadata": meta("web-1", "r1", Some(("apps/v1", "Deployment", "d1"))),
                            "spec": template("nginx:1.31")}),
        );
        inventory.add(WorkloadKind::ReplicaSet, &rs);
        let rs_owner = Some(("apps/v1", "ReplicaSet", "r1"));
        inventory.add(
            WorkloadKind::Pod,
            &pod("web-1-a", "p1", rs_owner, "nginx:1.31"),
        );
        inventory.add(
            WorkloadKind::Pod,
            &pod("web-1-b", "p2", rs_owner, "nginx:1.31"),
        );
        // A pod left from an older template.
        inventory.add(
            WorkloadKind::Pod,
            &pod("web-1-c", "p3", rs_owner, "dhi.io/python:3.13-dev"),
        );
        // A pod whose owner is not a kind the scan lists.
        let foreign = Some(("example.com/v1", "Thing", "t1"));
        inventory.add(
            WorkloadKind::Pod,
            &pod("thing-a", "p4", foreign, "nginx:1.31"),
        );
        inventory.add(WorkloadKind::Pod, &pod("bare", "p5", None, "nginx:1.31"));
        let (reports, errors) = inventory.finish();
        assert!(errors.is_empty(), "{errors:?}");
        let rows: Vec<_> = reports
            .iter()
            .map(|r| {
                (
                    r.kind.as_str(),
                    r.name.as_str(),
                    r.pods,
                    r.verdict,
                    r.owner.as_ref().map(|o| o.name.as_str()),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("Deployment", "web", 2, Verdict::Ready, None),
                ("Pod", "bare", 1, Verdict::Ready, None),
                ("Pod", "thing-a", 1, Verdict::Ready, None),
                ("Pod", "web-1-c", 1, Verdict::Denied, Some("web")),
            ]
        );
    }

    #[test]
    fn a_replicaset_without_a_listed_owner_is_its_own_workload() {
        let engine = Engine::default();
        let mut inventory = Inventory::new(&engine, Mode::Enforce);
        inventory.namespace("team", Some("audit"));
        let rs = raw(
            json!({"metadata": meta("orphan", "r1", Some(("apps/v1", "Deployment", "gone"))),
                            "spec": template("dhi.io/python:3.13-dev")}),
        );
        inventory.add(WorkloadKind::ReplicaSet, &rs);
        let bad = raw(json!({"metadata": meta("bad", "p9", None),
                             "spec": {"containers": [{"name": "app", "securityContext": {"runAsUser": "zero"}}]}}));
        inventory.add(WorkloadKind::Pod, &bad);
        let (reports, errors) = inventory.finish();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (reports[0].kind, reports[0].verdict),
            (WorkloadKind::ReplicaSet, Verdict::NeedsFix)
        );
        assert_eq!(
            errors,
            [
                "Pod team/bad: spec.containers[0].securityContext.runAsUser: invalid type: string \"zero\", expected i64"
            ]
        );
    }
}
