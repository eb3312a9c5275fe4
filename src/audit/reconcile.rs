//! The audit's one loop: it owns the store and the engine, judges what the watchers send,
//! and (on the leader) renders and writes the reports that changed.
//!
//! - **Judging** happens on arrival; only the judged entry is kept ([`super::store`]).
//! - **Debounce**: the first change after a write schedules the next write one debounce
//!   later; everything that changes meanwhile goes out with it.
//! - **No write when nothing changed**: a namespace is rendered only when one of its
//!   entries changed, and a rendered report is sent only when its digest differs from
//!   the one last written. Writes are server-side applies with the audit's field
//!   manager, so a new leader's first write of an unchanged report changes nothing.
//! - **Re-judging everything** (the resync interval, a new policy or catalog, a new
//!   runtime detection) is a relist: the watchers list again and every workload comes
//!   back through the same path, with the new engine.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::inputs::{self, Fingerprint, Loaded, Sources};
use super::lease::{Leadership, leads};
use super::metrics::{AuditMetrics, PortStartSource, ReportKind, WorkloadSeries};
use super::reports;
use super::runtime::{Detection, NodeRuntime, Tally};
use super::store::Store;
use super::watch::{Change, WATCHED, watch_kind, watch_namespaces};
use crate::report::{NamespaceMode, WorkloadReport};
use dhi_policy::Engine;

/// The field manager of every report write.
pub const FIELD_MANAGER: &str = "dhi-admission-audit";

/// How the loop is paced.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The reports' name.
    pub report_name: String,
    /// Wait after a change before writing.
    pub debounce: Duration,
    /// Relist everything this often.
    pub resync: Duration,
    /// Check the policy and catalog files this often.
    pub reload_interval: Duration,
    /// Read the nodes' runtimes (`--detect-runtime-ports`).
    pub detect_runtime_ports: bool,
}

/// After a failed write, wait at least this long before the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Changes buffered between the watchers and the loop: a bound on memory, and
/// backpressure on the watch streams while the loop writes.
const CHANGE_BUFFER: usize = 256;

/// The loop's state.
pub struct Reconciler {
    client: Client,
    settings: Settings,
    sources: Sources,
    loaded: Loaded,
    fingerprint: Fingerprint,
    refused: Option<Fingerprint>,
    detection: Option<Detection>,
    engine: Arc<Engine>,
    /// The note privileged-port results carry about the runtime's port start.
    port_note: Option<String>,
    /// Each namespace's `dhi.io/mode` label, as last seen.
    mode_labels: HashMap<String, Option<String>>,
    /// Workload watchers start once every namespace's label is known, so that no
    /// workload is judged in the wrong mode and judged again.
    watching: bool,
    store: Store<WorkloadReport>,
    written: LastWritten,
    cluster_dirty: bool,
    metrics: AuditMetrics,
    leadership: Leadership,
    leading: bool,
    /// Kinds listed at least once: no report is written before every kind is.
    synced: BTreeSet<&'static str>,
    /// Kinds being listed again (a resync, or a watch that expired).
    relisting: BTreeSet<&'static str>,
    resync_tx: watch::Sender<u64>,
}

impl Reconciler {
    /// The loop for a loaded policy; nothing runs before [`Reconciler::run`].
    pub fn new(
        client: Client,
        settings: Settings,
        sources: Sources,
        loaded: Loaded,
        fingerprint: Fingerprint,
        metrics: AuditMetrics,
        leadership: Leadership,
    ) -> Self {
        let (resync_tx, _) = watch::channel(0);
        let mut this = Self {
            client,
            settings,
            sources,
            loaded,
            fingerprint,
            refused: None,
            detection: None,
            engine: Arc::new(Engine::default()),
            port_note: None,
            mode_labels: HashMap::new(),
            watching: false,
            store: Store::default(),
            written: LastWritten::default(),
            cluster_dirty: true,
            metrics,
            leadership,
            leading: false,
            synced: BTreeSet::new(),
            relisting: BTreeSet::new(),
            resync_tx,
        };
        this.rebuild_engine();
        this
    }

    /// Runs until `stop`; returns early only on a fatal error.
    pub async fn run(mut self, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::channel(CHANGE_BUFFER);
        tokio::spawn(watch_namespaces(
            self.client.clone(),
            tx.clone(),
            stop.clone(),
        ));
        // Handed to the workload watchers once the namespaces are listed.
        let mut workload_tx = Some(tx);
        if self.settings.detect_runtime_ports {
            self.detect().await;
        }
        let mut resync = tokio::time::interval(self.settings.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        let mut reload = tokio::time::interval(self.settings.reload_interval);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut stopped = stop.clone();
        loop {
            let flush = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return Ok(()),
                change = rx.recv() => match change {
                    Some(Change::NamespacesListed) => {
                        if let Some(tx) = workload_tx.take() {
                            self.start_watchers(tx, &stop);
                        }
                    }
                    Some(change) => self.apply(change),
                    None => anyhow::bail!("every watcher stopped"),
                },
                _ = resync.tick() => {
                    if self.settings.detect_runtime_ports {
                        self.detect().await;
                    }
                    self.resync("interval");
                }
                _ = reload.tick() => self.reload().await,
                changed = self.leadership.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the lease election stopped");
                    }
                    self.follow_leadership();
                }
                () = flush => {
                    flush_at = None;
                    if !self.flush().await {
                        flush_at = Some(tokio::time::Instant::now() + RETRY_AFTER_FAILURE);
                    }
                }
            }
            if flush_at.is_none() && self.ready_to_write() {
                flush_at = Some(tokio::time::Instant::now() + self.settings.debounce);
            }
        }
    }

    fn start_watchers(&mut self, tx: mpsc::Sender<Change>, stop: &watch::Receiver<bool>) {
        tracing::info!(
            namespaces = self.mode_labels.len(),
            "namespaces listed; watching workloads"
        );
        self.watching = true;
        for kind in WATCHED {
            tokio::spawn(watch_kind(
                self.client.clone(),
                kind,
                tx.clone(),
                self.resync_tx.subscribe(),
                stop.clone(),
            ));
        }
    }

    /// Whether a write is due: leading, every kind listed, something changed.
    fn ready_to_write(&self) -> bool {
        self.leading
            && self.synced.len() == WATCHED.len()
            && (self.store.has_dirty() || self.cluster_dirty)
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Listing(kind) => {
                self.store.listing(kind);
                if self.synced.contains(kind.as_str()) {
                    self.relisting.insert(kind.as_str());
                }
            }
            Change::Listed(kind) => {
                self.store.listed(kind);
                self.relisting.remove(kind.as_str());
                if self.synced.insert(kind.as_str()) && self.synced.len() == WATCHED.len() {
                    tracing::info!(workloads = self.store.len(), "every workload kind listed");
                }
            }
            Change::Applied(kind, workload) => {
                let namespace = workload.metadata.namespace.clone().unwrap_or_default();
                let name = workload.metadata.name.clone().unwrap_or_default();
                if workload.watched_owner().is_some() {
                    // Reported through its owner (a Deployment's ReplicaSets and pods).
                    self.store.remove(&namespace, kind, &name);
                    return;
                }
                let label = self.mode_labels.get(&namespace).and_then(Option::as_deref);
                let mode = NamespaceMode::resolve(label, self.loaded.mode);
                let uid = workload.metadata.uid.clone();
                let judged = reports::judge(
                    &self.engine,
                    kind,
                    &namespace,
                    &name,
                    uid.as_deref(),
                    mode,
                    &workload.object_json(),
                );
                self.metrics
                    .judged(self.relisting.contains(kind.as_str()), 1);
                match judged {
                    Some(report) => self.store.put(&namespace, kind, &name, report),
                    None => self.store.remove(&namespace, kind, &name),
                }
            }
            Change::Namespace { name, mode_label } => {
                let changed = self
                    .mode_labels
                    .insert(name.clone(), mode_label.clone())
                    .is_some_and(|old| old != mode_label);
                if changed && self.watching {
                    tracing::info!(namespace = %name, mode = mode_label.as_deref().unwrap_or(""), "a namespace's mode label changed");
                    self.resync("a namespace's dhi.io/mode label changed");
                }
            }
            Change::NamespaceDeleted(name) => {
                self.mode_labels.remove(&name);
            }
            Change::NamespacesListed => {}
            Change::Deleted(kind, workload) => {
                let namespace = workload.metadata.namespace.as_deref().unwrap_or_default();
                let name = workload.metadata.name.as_deref().unwrap_or_default();
                self.store.remove(namespace, kind, name);
            }
        }
        if self.store.has_dirty() {
            self.cluster_dirty = true;
        }
    }

    /// Every watcher lists again: every workload is judged anew.
    fn resync(&mut self, why: &str) {
        tracing::info!(
            why,
            workloads = self.store.len(),
            "re-judging every workload"
        );
        self.resync_tx.send_modify(|generation| *generation += 1);
    }

    fn follow_leadership(&mut self) {
        let now = leads(&self.leadership.borrow_and_update());
        if now == self.leading {
            return;
        }
        self.leading = now;
        self.metrics.set_leader(now);
        if now {
            // What the previous leader wrote is unknown: render everything once (applies
            // of unchanged reports change nothing in the cluster).
            self.written = LastWritten::default();
            self.store.mark_all();
            self.cluster_dirty = true;
            self.update_gauges();
        } else {
            // A standby's gauges would double the leader's in any sum.
            self.metrics.set_workloads(&Default::default());
        }
    }

    /// Polls the policy and catalog files; a new valid version re-judges everything.
    async fn reload(&mut self) {
        let sources = self.sources.clone();
        let read = tokio::task::spawn_blocking(move || sources.read()).await;
        let Ok(Ok(files)) = read else {
            // Mid-rotation or missing: the next poll will see it.
            return;
        };
        let fingerprint = files.fingerprint();
        if fingerprint == self.fingerprint || Some(&fingerprint) == self.refused.as_ref() {
            return;
        }
        match self.sources.parse(&files) {
            Ok(loaded) => {
                tracing::info!(mode = %loaded.mode, "policy or catalog changed");
                self.loaded = loaded;
                self.fingerprint = fingerprint;
                self.refused = None;
                self.rebuild_engine();
                self.resync("policy or catalog changed");
            }
            Err(err) => {
                tracing::error!(error = %format_args!("{err:#}"), "new policy or catalog refused; the previous one stays in force");
                self.refused = Some(fingerprint);
            }
        }
    }

    /// Reads the nodes a page at a time; a changed result re-judges everything.
    async fn detect(&mut self) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut tally = Tally::default();
        let mut params = ListParams::default().limit(100);
        loop {
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot list nodes; keeping the last runtime detection");
                    return;
                }
            };
            page.items
                .iter()
                .filter_map(NodeRuntime::from_node)
                .for_each(|node| tally.add(node));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let detection = tally.finish();
        if self.detection.as_ref() == Some(&detection) {
            return;
        }
        tracing::info!(runtime = %detection, "container runtimes read from the nodes");
        let first = self.detection.is_none();
        self.detection = Some(detection);
        self.rebuild_engine();
        if !first {
            self.resync("the nodes' runtimes changed");
        }
    }

    fn rebuild_engine(&mut self) {
        let (engine, source, start) = inputs::build_engine(&self.loaded, self.detection.as_ref());
        self.metrics.set_port_start(source, start);
        self.engine = Arc::new(engine);
        let note = port_note(source, self.detection.as_ref());
        if note != self.port_note {
            // Every privileged-port result carries it.
            self.port_note = note;
            self.store.mark_all();
        }
    }

    /// Renders and writes what changed; false when a write failed (retried later).
    async fn flush(&mut self) -> bool {
        if !self.leading_now() {
            return true;
        }
        let mut ok = true;
        for namespace in self.store.take_dirty() {
            let report = reports::namespace_report(
                &self.settings.report_name,
                &namespace,
                self.store.namespace(&namespace).map(|(_, _, r)| r),
                self.port_note.as_deref(),
            );
            let Some(digest) = self.written.due(Target::Namespace(&namespace), &report) else {
                self.metrics.unchanged(ReportKind::Namespaced);
                continue;
            };
            if !self.leading_now() {
                self.store.mark(&namespace);
                continue;
            }
            match self.write(Some(&namespace), &report).await {
                Written::Applied => {
                    self.written.wrote(Target::Namespace(&namespace), digest);
                    self.metrics.wrote(ReportKind::Namespaced, true);
                }
                Written::NamespaceGone => self.written.forget(&namespace),
                Written::Failed => {
                    self.metrics.wrote(ReportKind::Namespaced, false);
                    self.store.mark(&namespace);
                    ok = false;
                }
            }
        }
        if self.cluster_dirty {
            let report = reports::cluster_report(
                &self.settings.report_name,
                self.store.all().map(|(_, (_, _, r))| r),
            );
            match self.written.due(Target::Cluster, &report) {
                None => {
                    self.metrics.unchanged(ReportKind::Cluster);
                    self.cluster_dirty = false;
                }
                Some(_) if !self.leading_now() => {}
                Some(digest) => match self.write(None, &report).await {
                    Written::Applied | Written::NamespaceGone => {
                        self.written.wrote(Target::Cluster, digest);
                        self.cluster_dirty = false;
                        self.metrics.wrote(ReportKind::Cluster, true);
                    }
                    Written::Failed => {
                        self.metrics.wrote(ReportKind::Cluster, false);
                        ok = false;
                    }
                },
            }
        }
        self.update_gauges();
        ok
    }

    fn leading_now(&mut self) -> bool {
        self.follow_leadership();
        self.leading
    }

    async fn write(&self, namespace: Option<&str>, report: &Value) -> Written {
        let (api, kind): (Api<DynamicObject>, _) = match namespace {
            Some(ns) => (
                Api::namespaced_with(self.client.clone(), ns, &report_resource("PolicyReport")),
                "PolicyReport",
            ),
            None => (
                Api::all_with(self.client.clone(), &report_resource("ClusterPolicyReport")),
                "ClusterPolicyReport",
            ),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch(&self.settings.report_name, &params, &Patch::Apply(report))
            .await
        {
            Ok(_) => {
                tracing::debug!(kind, namespace, "report written");
                Written::Applied
            }
            // The namespace is gone (or going): its report goes with it. (A 404 about
            // anything else, such as missing CRDs, is a failure and retried.)
            Err(kube::Error::Api(status))
                if namespace.is_some()
                    && (status.code == 404 && status.message.starts_with("namespaces \"")
                        || status.is_forbidden()
                            && status.message.contains("being terminated")) =>
            {
                Written::NamespaceGone
            }
            Err(err) => {
                tracing::warn!(kind, namespace, error = %err, "report write failed; retrying");
                Written::Failed
            }
        }
    }

    fn update_gauges(&self) {
        if !self.leading {
            return;
        }
        let labelled = self.metrics.namespace_label();
        let mut counts: std::collections::BTreeMap<WorkloadSeries, i64> = Default::default();
        for (namespace, (_, _, entry)) in self.store.all() {
            for (rule, result) in reports::rule_results(entry) {
                let ns = labelled.then(|| namespace.to_owned());
                *counts.entry((ns, rule, result)).or_default() += 1;
            }
        }
        self.metrics.set_workloads(&counts);
    }
}

/// What a write came to.
enum Written {
    Applied,
    NamespaceGone,
    Failed,
}

/// The note the privileged-port results carry about the port start they were judged with.
fn port_note(source: PortStartSource, detection: Option<&Detection>) -> Option<String> {
    match (source, detection) {
        (PortStartSource::Detected, Some(detection)) => Some(detection.to_string()),
        (PortStartSource::Policy, _) => {
            Some("runtime.unprivilegedPortStart set by the policy".to_owned())
        }
        (PortStartSource::Kernel, Some(detection)) => Some(detection.to_string()),
        _ => None,
    }
}

/// The `wgpolicyk8s.io/v1alpha2` resource of a report kind.
pub fn report_resource(kind: &str) -> ApiResource {
    let plural = if kind == "PolicyReport" {
        "policyreports"
    } else {
        "clusterpolicyreports"
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind),
        plural,
    )
}

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'n> {
    /// A namespace's PolicyReport.
    Namespace(&'n str),
    /// The ClusterPolicyReport.
    Cluster,
}

/// The digest of each report as last written by this leader: a rendered report equal to
/// it is not sent. Digests, not reports: 8 bytes per namespace.
#[derive(Debug, Default)]
struct LastWritten {
    namespaces: HashMap<String, u64>,
    cluster: Option<u64>,
}

impl LastWritten {
    /// The report's digest if it differs from the one last written, `None` if it is the
    /// same (nothing to write).
    fn due(&self, target: Target<'_>, report: &Value) -> Option<u64> {
        let digest = digest(report);
        let last = match target {
            Target::Namespace(ns) => self.namespaces.get(ns).copied(),
            Target::Cluster => self.cluster,
        };
        (last != Some(digest)).then_some(digest)
    }

    fn wrote(&mut self, target: Target<'_>, digest: u64) {
        match target {
            Target::Namespace(ns) => {
                self.namespaces.insert(ns.to_owned(), digest);
            }
            Target::Cluster => self.cluster = Some(digest),
        }
    }

    fn forget(&mut self, namespace: &str) {
        self.namespaces.remove(namespace);
    }
}

/// A rendered report's digest. Value's serialisation is deterministic for a given build
/// (maps keep one order), so equal reports have equal digests.
fn digest(report: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    report.to_string().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_equal_to_the_last_written_is_not_written_again() {
        let mut written = LastWritten::default();
        let shop = || Target::Namespace("shop");
        let report = json!({"summary": {"fail": 1}, "results": [{"rule": "run-as-root"}]});
        let digest = written.due(shop(), &report).expect("never written: due");
        written.wrote(shop(), digest);
        assert_eq!(written.due(shop(), &report), None);
        // Rendered again from scratch, equal: still nothing to write.
        let again = json!({"results": [{"rule": "run-as-root"}], "summary": {"fail": 1}});
        assert_eq!(written.due(shop(), &again), None);
        // Another namespace and the cluster report are tracked apart.
        assert!(written.due(Target::Namespace("web"), &report).is_some());
        assert!(written.due(Target::Cluster, &report).is_some());
        let changed = json!({"summary": {"fail": 0}, "results": [{"rule": "run-as-root"}]});
        assert!(written.due(shop(), &changed).is_some());
        // A namespace deleted and created again is written again.
        written.forget("shop");
        assert_eq!(written.due(shop(), &report), Some(digest));
    }
}
