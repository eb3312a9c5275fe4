//! The audit's one loop, a thin shell around [`AuditState`]: it feeds the state what the
//! watchers, the election and the timer say, and carries out the report writes it asks
//! for (on the leader). What is judged, kept, debounced and written is decided there.
//!
//! - **Writes** are server-side applies with the audit's field manager, so a new leader's
//!   first write of an unchanged report changes nothing.
//! - **Re-judging everything** (the resync interval, a new policy or catalog, a new
//!   runtime detection) is a relist: the watchers list again and every workload comes
//!   back through the same path, with the new engine.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};

use super::inputs::{self, Loaded, Sources};
use super::lease::Leadership;
use super::metrics::{AuditMetrics, PortStartSource};
use super::runtime::{Detection, NodeRuntime, Tally};
use super::state::{AuditState, Todo, Write, Written};
use super::watch::{Change, WATCHED, watch_kind, watch_namespaces};
use crate::policy_source::{Fingerprint, Versions};

/// The field manager of every report write.
pub(crate) const FIELD_MANAGER: &str = "dhi-admission-audit";

/// How the loop is paced.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The reports' name.
    pub(crate) report_name: String,
    /// Wait after a change before writing.
    pub(crate) debounce: Duration,
    /// Relist everything this often.
    pub(crate) resync: Duration,
    /// Check the policy and catalog files this often.
    pub(crate) reload_interval: Duration,
    /// Read the nodes' runtimes (`--detect-runtime-ports`).
    pub(crate) detect_runtime_ports: bool,
}

/// Changes buffered between the watchers and the loop: a bound on memory, and
/// backpressure on the watch streams while the loop writes.
const CHANGE_BUFFER: usize = 256;

/// The loop's state.
pub(crate) struct Reconciler {
    client: Client,
    settings: Settings,
    sources: Sources,
    loaded: Loaded,
    /// The policy and catalog versions applied and refused.
    versions: Versions,
    detection: Option<Detection>,
    state: AuditState,
    metrics: AuditMetrics,
    leadership: Leadership,
    resync_tx: watch::Sender<u64>,
}

impl Reconciler {
    /// The loop for a loaded policy; nothing runs before [`Reconciler::run`].
    pub(crate) fn new(
        client: Client,
        settings: Settings,
        sources: Sources,
        loaded: Loaded,
        fingerprint: Fingerprint,
        metrics: AuditMetrics,
        leadership: Leadership,
    ) -> Self {
        let (resync_tx, _) = watch::channel(0);
        let state = AuditState::new(
            settings.report_name.clone(),
            settings.debounce,
            metrics.clone(),
        );
        let mut this = Self {
            client,
            settings,
            sources,
            loaded,
            versions: Versions::applied(fingerprint),
            detection: None,
            state,
            metrics,
            leadership,
            resync_tx,
        };
        this.rebuild_engine();
        this
    }

    /// Runs until `stop`; returns early only on a fatal error.
    pub(crate) async fn run(mut self, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
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
        let mut stopped = stop.clone();
        loop {
            let wake_at = self.state.wake_at();
            let flush = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return Ok(()),
                change = rx.recv() => {
                    let change = change.ok_or_else(|| anyhow::anyhow!("every watcher stopped"))?;
                    match self.state.change(change, Instant::now()) {
                        Some(Todo::StartWatchers) => {
                            if let Some(tx) = workload_tx.take() {
                                self.start_watchers(tx, &stop);
                            }
                        }
                        Some(Todo::Resync(why)) => self.resync(why),
                        None => {}
                    }
                }
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
                () = flush => self.flush().await,
            }
        }
    }

    fn start_watchers(&mut self, tx: mpsc::Sender<Change>, stop: &watch::Receiver<bool>) {
        tracing::info!(
            namespaces = self.state.namespaces(),
            "namespaces listed; watching workloads"
        );
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

    /// Every watcher lists again: every workload is judged anew.
    fn resync(&mut self, why: &str) {
        tracing::info!(
            why,
            workloads = self.state.workloads(),
            "re-judging every workload"
        );
        self.resync_tx.send_modify(|generation| *generation += 1);
    }

    /// Hands the state the election's latest word.
    fn follow_leadership(&mut self) {
        let until = *self.leadership.borrow_and_update();
        self.state.leadership(until, Instant::now());
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
        if !self.versions.is_new(fingerprint) {
            return;
        }
        match self.sources.parse(&files) {
            Ok(loaded) => {
                tracing::info!(mode = %loaded.mode, "policy or catalog changed");
                self.loaded = loaded;
                self.versions.settle(fingerprint, true);
                self.rebuild_engine();
                self.resync("policy or catalog changed");
            }
            Err(err) => {
                tracing::error!(error = %format_args!("{err:#}"), "new policy or catalog refused; the previous one stays in force");
                self.versions.settle(fingerprint, false);
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
        let note = port_note(source, self.detection.as_ref());
        self.state
            .set_engine(engine, self.loaded.mode, note, Instant::now());
    }

    /// Carries out the writes that are due, one at a time: leadership is read again
    /// before each (a write may take a while, and the lease may be lost meanwhile).
    async fn flush(&mut self) {
        self.follow_leadership();
        self.state.start_flush(Instant::now());
        loop {
            self.follow_leadership();
            let Some(write) = self.state.next_write(Instant::now()) else {
                return;
            };
            let written = self.write(&write).await;
            self.state.wrote(&write, written);
        }
    }

    async fn write(&self, write: &Write) -> Written {
        let (namespace, report) = (write.namespace.as_deref(), &write.report);
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
pub(crate) fn report_resource(kind: &str) -> ApiResource {
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
