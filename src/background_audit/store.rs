//! What the audit remembers: one compact entry per workload (its judged report, not the
//! object), grouped by namespace, and which namespaces changed since their report was
//! last rendered.
//!
//! Entries are stamped with the list they were last seen in, per kind, so that after a
//! relist (a resync, or the watch expiring) the workloads deleted meanwhile are swept.
//! Putting an entry equal to the one held changes nothing, which is what keeps a resync
//! of an unchanged cluster from rendering, let alone writing, any report.

use std::collections::{BTreeMap, BTreeSet};

use dhi_policy::WorkloadKind;

/// A workload's identity within its namespace: its kind (by `WorkloadKind::ALL` index,
/// which orders kinds) and name.
type Key = (usize, String);

/// The audit's memory, with `E` the per-workload entry.
#[derive(Debug)]
pub(crate) struct Store<E> {
    namespaces: BTreeMap<String, BTreeMap<Key, Slot<E>>>,
    /// The current list of each kind, by `WorkloadKind::ALL` index.
    epochs: [u32; WorkloadKind::ALL.len()],
    dirty: BTreeSet<String>,
}

/// A workload as the store lists it: kind, name, entry.
pub(crate) type Workload<'s, E> = (WorkloadKind, &'s str, &'s E);

#[derive(Debug)]
struct Slot<E> {
    epoch: u32,
    entry: E,
}

impl<E> Default for Store<E> {
    fn default() -> Self {
        Self {
            namespaces: BTreeMap::new(),
            epochs: [0; WorkloadKind::ALL.len()],
            dirty: BTreeSet::new(),
        }
    }
}

fn index(kind: WorkloadKind) -> usize {
    WorkloadKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

impl<E: PartialEq> Store<E> {
    /// A list of `kind` starts.
    pub(crate) fn listing(&mut self, kind: WorkloadKind) {
        let epoch = &mut self.epochs[index(kind)];
        *epoch = epoch.wrapping_add(1);
    }

    /// The list of `kind` is complete: entries of that kind it did not contain are removed.
    pub(crate) fn listed(&mut self, kind: WorkloadKind) {
        let epoch = self.epochs[index(kind)];
        for (namespace, workloads) in &mut self.namespaces {
            let before = workloads.len();
            workloads.retain(|(k, _), slot| *k != index(kind) || slot.epoch == epoch);
            if workloads.len() != before {
                self.dirty.insert(namespace.clone());
            }
        }
        self.namespaces.retain(|_, w| !w.is_empty());
    }

    /// Records a workload's entry; its namespace becomes dirty only if the entry changed.
    pub(crate) fn put(&mut self, namespace: &str, kind: WorkloadKind, name: &str, entry: E) {
        let epoch = self.epochs[index(kind)];
        let workloads = match self.namespaces.get_mut(namespace) {
            Some(w) => w,
            None => self.namespaces.entry(namespace.to_owned()).or_default(),
        };
        let key = (index(kind), name.to_owned());
        match workloads.get_mut(&key) {
            Some(slot) => {
                slot.epoch = epoch;
                if slot.entry == entry {
                    return;
                }
                slot.entry = entry;
            }
            None => {
                workloads.insert(key, Slot { epoch, entry });
            }
        }
        self.mark(namespace);
    }

    /// Forgets a workload (deleted, or now reported through its owner).
    pub(crate) fn remove(&mut self, namespace: &str, kind: WorkloadKind, name: &str) {
        let Some(workloads) = self.namespaces.get_mut(namespace) else {
            return;
        };
        if workloads.remove(&(index(kind), name.to_owned())).is_some() {
            if workloads.is_empty() {
                self.namespaces.remove(namespace);
            }
            self.mark(namespace);
        }
    }

    /// Marks a namespace for rendering again (its last write failed).
    pub(crate) fn mark(&mut self, namespace: &str) {
        if !self.dirty.contains(namespace) {
            self.dirty.insert(namespace.to_owned());
        }
    }

    /// Marks every namespace for rendering (a new leader does not know what was written).
    pub(crate) fn mark_all(&mut self) {
        self.dirty.extend(self.namespaces.keys().cloned());
    }

    /// Whether any namespace waits to be rendered.
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The namespaces to render, and forgets that they were dirty.
    pub(crate) fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// A namespace's workloads in a stable order (kind, then name); none when it has none.
    pub(crate) fn namespace(&self, namespace: &str) -> impl Iterator<Item = Workload<'_, E>> {
        self.namespaces.get(namespace).into_iter().flat_map(|w| {
            w.iter()
                .map(|((k, name), s)| (WorkloadKind::ALL[*k], name.as_str(), &s.entry))
        })
    }

    /// Every workload, with its namespace.
    pub(crate) fn all(&self) -> impl Iterator<Item = (&str, Workload<'_, E>)> {
        self.namespaces.iter().flat_map(|(ns, w)| {
            w.iter().map(move |((k, name), s)| {
                (
                    ns.as_str(),
                    (WorkloadKind::ALL[*k], name.as_str(), &s.entry),
                )
            })
        })
    }

    /// How many workloads.
    pub(crate) fn len(&self) -> usize {
        self.namespaces.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkloadKind::{Deployment, Pod};

    fn dirty(store: &mut Store<&'static str>) -> Vec<String> {
        store.take_dirty().into_iter().collect()
    }

    #[test]
    fn only_changed_entries_make_a_namespace_dirty() {
        let mut store = Store::default();
        store.put("a", Deployment, "web", "fail");
        store.put("b", Pod, "job", "pass");
        assert_eq!(dirty(&mut store), ["a", "b"]);
        store.put("a", Deployment, "web", "fail");
        assert!(!store.has_dirty());
        store.put("a", Deployment, "web", "pass");
        assert_eq!(dirty(&mut store), ["a"]);
        store.remove("b", Pod, "job");
        store.remove("b", Pod, "never-there");
        assert_eq!(dirty(&mut store), ["b"]);
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.namespace("a").collect::<Vec<_>>(),
            [(Deployment, "web", &"pass")]
        );
        assert_eq!(store.namespace("b").count(), 0);
    }

    #[test]
    fn a_relist_sweeps_what_it_did_not_see_of_its_kind_only() {
        let mut store = Store::default();
        store.listing(Deployment);
        store.put("a", Deployment, "kept", "pass");
        store.put("a", Deployment, "gone", "pass");
        store.listed(Deployment);
        store.listing(Pod);
        store.put("b", Pod, "p", "fail");
        store.listed(Pod);
        store.take_dirty();
        // The next list of Deployments misses `gone`; pods are untouched.
        store.listing(Deployment);
        store.put("a", Deployment, "kept", "pass");
        assert!(!store.has_dirty());
        store.listed(Deployment);
        assert_eq!(dirty(&mut store), ["a"]);
        let left: Vec<_> = store.all().map(|(ns, (k, n, e))| (ns, k, n, *e)).collect();
        assert_eq!(
            left,
            [("a", Deployment, "kept", "pass"), ("b", Pod, "p", "fail")]
        );
        // An unchanged relist of everything renders nothing.
        store.listing(Pod);
        store.put("b", Pod, "p", "fail");
        store.listed(Pod);
        assert!(!store.has_dirty());
    }

    #[test]
    fn a_new_leader_renders_every_namespace() {
        let mut store = Store::default();
        store.put("a", Pod, "x", "pass");
        store.put("b", Pod, "y", "pass");
        store.take_dirty();
        store.mark_all();
        assert_eq!(dirty(&mut store), ["a", "b"]);
    }
}
