//! The audit's pure core: the judged store, the debounce and what is due to be written,
//! as one state machine without a cluster, a runtime or a clock of its own (the tests
//! drive it with made-up instants, as [`super::lease::Elector`]'s do).
//!
//! [`super::reconcile`] feeds it events (a change from a watcher, leadership, the timer)
//! and carries out the writes it hands out ([`AuditState::next_write`]), reporting each
//! result back ([`AuditState::wrote`]).
//!
//! - **Debounce**: the first change after a write schedules the next write one debounce
//!   later; everything that changes meanwhile goes out with it.
//! - **Retry**: after a failed write, the next attempt waits [`RETRY_AFTER_FAILURE`].
//! - **No write when nothing changed**: a namespace is rendered only when one of its
//!   entries changed, and a rendered report is handed out only when its digest differs
//!   from the one last written.
//! - **A new leader** does not know what was written: it renders every namespace once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::time::{Duration, Instant};

use dhi_policy::{Engine, Mode};
use serde_json::Value;

use super::metrics::{AuditMetrics, ReportKind, WorkloadSeries};
use super::reports;
use super::store::Store;
use super::watch::{Change, WATCHED};
use crate::report::{NamespaceMode, WorkloadReport};

/// After a failed write, wait at least this long before the next attempt.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// What the shell is asked to do after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Todo {
    /// Every namespace's label is known: start the workload watchers.
    StartWatchers,
    /// Every watcher lists again, for this reason.
    Resync(&'static str),
}

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'n> {
    /// A namespace's PolicyReport.
    Namespace(&'n str),
    /// The ClusterPolicyReport.
    Cluster,
}

/// A report to write, as handed out by [`AuditState::next_write`].
#[derive(Debug)]
pub(crate) struct Write {
    /// The namespace of a PolicyReport; `None` for the ClusterPolicyReport.
    pub(crate) namespace: Option<String>,
    /// The rendered object.
    pub(crate) report: Value,
    digest: u64,
}

impl Write {
    fn target(&self) -> Target<'_> {
        self.namespace
            .as_deref()
            .map_or(Target::Cluster, Target::Namespace)
    }
}

/// What a write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Applied.
    Applied,
    /// The namespace is gone (or going): its report goes with it.
    NamespaceGone,
    /// Failed; retried later.
    Failed,
}

/// The writes of one timer firing, handed out one at a time so that each is rendered
/// only when its turn comes (and leadership is checked before each).
#[derive(Debug, Default)]
struct Flush {
    namespaces: BTreeSet<String>,
    /// The cluster report's turn (after every namespace's) has come.
    cluster_done: bool,
    failed: bool,
}

/// The audit's state; see the module documentation.
pub(crate) struct AuditState {
    report_name: String,
    debounce: Duration,
    engine: Engine,
    /// The mode a namespace without a `dhi.io/mode` label is judged in.
    mode: Mode,
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
    /// The leadership last fed in: until when this replica leads.
    leading_until: Option<Instant>,
    leading: bool,
    /// Kinds listed at least once: no report is written before every kind is.
    synced: BTreeSet<&'static str>,
    /// Kinds being listed again (a resync, or a watch that expired).
    relisting: BTreeSet<&'static str>,
    /// When the next write is due.
    flush_at: Option<Instant>,
    flush: Option<Flush>,
}

impl AuditState {
    /// The state before anything is listed, judging with the default engine until
    /// [`AuditState::set_engine`].
    pub(crate) fn new(report_name: String, debounce: Duration, metrics: AuditMetrics) -> Self {
        Self {
            report_name,
            debounce,
            engine: Engine::default(),
            mode: Mode::Enforce,
            port_note: None,
            mode_labels: HashMap::new(),
            watching: false,
            store: Store::default(),
            written: LastWritten::default(),
            cluster_dirty: true,
            metrics,
            leading_until: None,
            leading: false,
            synced: BTreeSet::new(),
            relisting: BTreeSet::new(),
            flush_at: None,
            flush: None,
        }
    }

    /// Judges with `engine` from now on, `mode` for unlabelled namespaces; a new port note
    /// renders every namespace again (every privileged-port result carries it).
    pub(crate) fn set_engine(
        &mut self,
        engine: Engine,
        mode: Mode,
        port_note: Option<String>,
        now: Instant,
    ) {
        self.engine = engine;
        self.mode = mode;
        if port_note != self.port_note {
            self.port_note = port_note;
            self.store.mark_all();
        }
        self.schedule(now);
    }

    /// How many workloads are held.
    pub(crate) fn workloads(&self) -> usize {
        self.store.len()
    }

    /// How many namespaces' labels are known.
    pub(crate) fn namespaces(&self) -> usize {
        self.mode_labels.len()
    }

    /// When the shell should call [`AuditState::start_flush`], if a write is scheduled.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.flush_at
    }

    /// A watcher's change, at `now`.
    pub(crate) fn change(&mut self, change: Change, now: Instant) -> Option<Todo> {
        let todo = self.apply(change);
        if self.store.has_dirty() {
            self.cluster_dirty = true;
        }
        self.schedule(now);
        todo
    }

    fn apply(&mut self, change: Change) -> Option<Todo> {
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
                    return None;
                }
                let label = self.mode_labels.get(&namespace).and_then(Option::as_deref);
                let mode = NamespaceMode::resolve(label, self.mode);
                let judged = reports::judge(
                    &self.engine,
                    kind,
                    &namespace,
                    &name,
                    workload.metadata.uid.as_deref(),
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
            Change::Deleted(kind, workload) => {
                let namespace = workload.metadata.namespace.as_deref().unwrap_or_default();
                let name = workload.metadata.name.as_deref().unwrap_or_default();
                self.store.remove(namespace, kind, name);
            }
            Change::Namespace { name, mode_label } => {
                let changed = self
                    .mode_labels
                    .insert(name.clone(), mode_label.clone())
                    .is_some_and(|old| old != mode_label);
                if changed && self.watching {
                    tracing::info!(namespace = %name, mode = mode_label.as_deref().unwrap_or(""), "a namespace's mode label changed");
                    return Some(Todo::Resync("a namespace's dhi.io/mode label changed"));
                }
            }
            Change::NamespaceDeleted(name) => {
                self.mode_labels.remove(&name);
            }
            Change::NamespacesListed if !self.watching => {
                self.watching = true;
                return Some(Todo::StartWatchers);
            }
            Change::NamespacesListed => {}
        }
        None
    }

    /// Leadership as the election publishes it (`Some(deadline)` while this replica
    /// holds the lease), at `now`.
    pub(crate) fn leadership(&mut self, until: Option<Instant>, now: Instant) {
        self.leading_until = until;
        self.follow_leadership(now);
        self.schedule(now);
    }

    /// Whether this replica leads at `now`; a change of mind takes effect here.
    fn follow_leadership(&mut self, now: Instant) -> bool {
        let leads = self.leading_until.is_some_and(|until| now < until);
        if leads == self.leading {
            return leads;
        }
        self.leading = leads;
        self.metrics.set_leader(leads);
        if leads {
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
        leads
    }

    /// Whether a write is due: leading, every kind listed, something changed.
    fn ready_to_write(&self) -> bool {
        self.leading
            && self.synced.len() == WATCHED.len()
            && (self.store.has_dirty() || self.cluster_dirty)
    }

    /// Schedules the next write one debounce after the first change since the last.
    fn schedule(&mut self, now: Instant) {
        if self.flush.is_none() && self.flush_at.is_none() && self.ready_to_write() {
            self.flush_at = Some(now + self.debounce);
        }
    }

    /// The timer fired at `now`: the writes that are due start; hand them out with
    /// [`AuditState::next_write`].
    pub(crate) fn start_flush(&mut self, now: Instant) {
        self.flush_at = None;
        if !self.follow_leadership(now) {
            self.schedule(now);
            return;
        }
        self.flush = Some(Flush {
            namespaces: self.store.take_dirty(),
            cluster_done: false,
            failed: false,
        });
    }

    /// The next report to write at `now`, rendered; `None` when the flush is over (then
    /// the gauges are current, and a failure has scheduled the retry).
    pub(crate) fn next_write(&mut self, now: Instant) -> Option<Write> {
        let mut flush = self.flush.take()?;
        while let Some(namespace) = flush.namespaces.pop_first() {
            let report = reports::namespace_report(
                &self.report_name,
                &namespace,
                self.store.namespace(&namespace).map(|(_, _, r)| r),
                self.port_note.as_deref(),
            );
            let Some(digest) = self.written.due(Target::Namespace(&namespace), &report) else {
                self.metrics.unchanged(ReportKind::Namespaced);
                continue;
            };
            if !self.follow_leadership(now) {
                self.store.mark(&namespace);
                continue;
            }
            self.flush = Some(flush);
            return Some(Write {
                namespace: Some(namespace),
                report,
                digest,
            });
        }
        if !std::mem::replace(&mut flush.cluster_done, true)
            && self.cluster_dirty
            && let Some(write) = self.cluster_write(now)
        {
            self.flush = Some(flush);
            return Some(write);
        }
        self.finish(flush.failed, now);
        None
    }

    fn cluster_write(&mut self, now: Instant) -> Option<Write> {
        let report =
            reports::cluster_report(&self.report_name, self.store.all().map(|(_, (_, _, r))| r));
        match self.written.due(Target::Cluster, &report) {
            None => {
                self.metrics.unchanged(ReportKind::Cluster);
                self.cluster_dirty = false;
                None
            }
            Some(_) if !self.follow_leadership(now) => None,
            Some(digest) => Some(Write {
                namespace: None,
                report,
                digest,
            }),
        }
    }

    /// The write handed out last came to `written`.
    pub(crate) fn wrote(&mut self, write: &Write, written: Written) {
        let target = write.target();
        let ok = match (target, written) {
            (_, Written::Applied) | (Target::Cluster, Written::NamespaceGone) => {
                self.written.wrote(target, write.digest);
                if target == Target::Cluster {
                    self.cluster_dirty = false;
                }
                true
            }
            (Target::Namespace(namespace), Written::NamespaceGone) => {
                self.written.forget(namespace);
                return;
            }
            (target, Written::Failed) => {
                if let Target::Namespace(namespace) = target {
                    self.store.mark(namespace);
                }
                if let Some(flush) = &mut self.flush {
                    flush.failed = true;
                }
                false
            }
        };
        let kind = match target {
            Target::Namespace(_) => ReportKind::Namespaced,
            Target::Cluster => ReportKind::Cluster,
        };
        self.metrics.wrote(kind, ok);
    }

    fn finish(&mut self, failed: bool, now: Instant) {
        self.update_gauges();
        if failed {
            self.flush_at = Some(now + RETRY_AFTER_FAILURE);
        }
        self.schedule(now);
    }

    fn update_gauges(&self) {
        if !self.leading {
            return;
        }
        let labelled = self.metrics.namespace_label();
        let mut counts: BTreeMap<WorkloadSeries, i64> = BTreeMap::new();
        for (namespace, (_, _, entry)) in self.store.all() {
            for (rule, result) in reports::rule_results(entry) {
                let ns = labelled.then(|| namespace.to_owned());
                *counts.entry((ns, rule, result)).or_default() += 1;
            }
        }
        self.metrics.set_workloads(&counts);
    }
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
    use crate::background_audit::watch::Workload;
    use dhi_policy::WorkloadKind::Pod;
    use prometheus::Registry;
    use serde_json::json;

    const MS: Duration = Duration::from_millis(1);
    const DEBOUNCE: Duration = Duration::from_millis(500);

    fn pod(namespace: &str, name: &str, uid: &str) -> Workload {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
        }))
        .unwrap()
    }

    fn applied(namespace: &str, name: &str, uid: &str) -> Change {
        Change::Applied(Pod, pod(namespace, name, uid))
    }

    /// A state whose namespaces and kinds are listed, before any leadership.
    fn listed(t0: Instant) -> (AuditState, AuditMetrics) {
        let metrics = AuditMetrics::new(Registry::new(), false).unwrap();
        let mut state = AuditState::new("dhi".into(), DEBOUNCE, metrics.clone());
        assert_eq!(
            state.change(Change::NamespacesListed, t0),
            Some(Todo::StartWatchers)
        );
        assert_eq!(state.change(Change::NamespacesListed, t0), None);
        for kind in WATCHED {
            state.change(Change::Listing(kind), t0);
            state.change(Change::Listed(kind), t0);
        }
        (state, metrics)
    }

    /// A leader until an hour after `t0`, its first (empty) cluster report written.
    fn leader(t0: Instant) -> (AuditState, AuditMetrics) {
        let (mut state, metrics) = listed(t0);
        state.leadership(Some(t0 + 3_600_000 * MS), t0);
        assert_eq!(state.wake_at(), Some(t0 + DEBOUNCE));
        assert_eq!(
            flush(&mut state, t0 + DEBOUNCE, |_| Written::Applied),
            [None]
        );
        (state, metrics)
    }

    /// A leader that wrote `shop`'s report (one workload) at the returned instant.
    fn shop_written(t0: Instant) -> (AuditState, AuditMetrics, Instant) {
        let (mut state, metrics) = leader(t0);
        let t1 = t0 + 1000 * MS;
        state.change(applied("shop", "cart", "u1"), t1);
        assert_eq!(
            flush(&mut state, t1 + DEBOUNCE, |_| Written::Applied),
            [Some("shop".to_owned()), None]
        );
        (state, metrics, t1 + DEBOUNCE)
    }

    /// Fires the timer at `now` and carries out every write it hands out, each coming to
    /// what `outcome` says; the targets, in order.
    fn flush(
        state: &mut AuditState,
        now: Instant,
        outcome: impl Fn(Option<&str>) -> Written,
    ) -> Vec<Option<String>> {
        let mut targets = Vec::new();
        state.start_flush(now);
        while let Some(write) = state.next_write(now) {
            state.wrote(&write, outcome(write.namespace.as_deref()));
            targets.push(write.namespace);
        }
        targets
    }

    fn line(metrics: &AuditMetrics, prefix: &str) -> String {
        let text = metrics.render();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn a_burst_of_changes_is_written_once_one_debounce_after_its_first() {
        let t0 = Instant::now();
        let (mut state, _) = leader(t0);
        assert_eq!(
            state.wake_at(),
            None,
            "nothing changed since the first write"
        );
        let t1 = t0 + 2000 * MS;
        state.change(applied("web", "front", "u1"), t1);
        assert_eq!(state.wake_at(), Some(t1 + DEBOUNCE));
        // Changes inside the debounce go out with the first; they do not push it back.
        state.change(applied("shop", "cart", "u2"), t1 + 100 * MS);
        state.change(applied("web", "back", "u3"), t1 + 400 * MS);
        assert_eq!(state.wake_at(), Some(t1 + DEBOUNCE));
        assert_eq!(
            flush(&mut state, t1 + DEBOUNCE, |_| Written::Applied),
            [Some("shop".to_owned()), Some("web".to_owned()), None]
        );
        assert_eq!(state.wake_at(), None);
        assert!(state.next_write(t1 + DEBOUNCE).is_none());
    }

    #[test]
    fn a_failed_write_is_retried_after_five_seconds() {
        let t0 = Instant::now();
        let (mut state, metrics) = leader(t0);
        let t1 = t0 + 1000 * MS;
        state.change(applied("shop", "cart", "u1"), t1);
        let fired = t1 + DEBOUNCE;
        let fail_shop = |ns: Option<&str>| match ns {
            Some(_) => Written::Failed,
            None => Written::Applied,
        };
        assert_eq!(
            flush(&mut state, fired, fail_shop),
            [Some("shop".to_owned()), None]
        );
        assert_eq!(state.wake_at(), Some(fired + RETRY_AFTER_FAILURE));
        // A change meanwhile does not bring the retry forward.
        state.change(applied("shop", "till", "u2"), fired + 100 * MS);
        assert_eq!(state.wake_at(), Some(fired + RETRY_AFTER_FAILURE));
        assert_eq!(
            line(
                &metrics,
                "dhi_admission_audit_report_writes_total{kind=\"PolicyReport\",result=\"failed\"}"
            ),
            "dhi_admission_audit_report_writes_total{kind=\"PolicyReport\",result=\"failed\"} 1"
        );
        let retried = fired + RETRY_AFTER_FAILURE;
        assert_eq!(
            flush(&mut state, retried, |_| Written::Applied),
            [Some("shop".to_owned()), None]
        );
        assert_eq!(state.wake_at(), None);
    }

    #[test]
    fn nothing_is_due_when_the_rendered_reports_equal_the_written_ones() {
        let (mut state, metrics, written_at) = shop_written(Instant::now());
        // A relist that finds the same workload changes nothing: no timer at all.
        let t2 = written_at + 2000 * MS;
        state.change(Change::Listing(Pod), t2);
        state.change(applied("shop", "cart", "u1"), t2);
        state.change(Change::Listed(Pod), t2);
        assert_eq!(state.wake_at(), None);
        // Deleted and back within one debounce: rendered, equal to what was written.
        state.change(Change::Deleted(Pod, pod("shop", "cart", "u1")), t2);
        state.change(applied("shop", "cart", "u1"), t2 + 10 * MS);
        assert_eq!(state.wake_at(), Some(t2 + DEBOUNCE));
        assert_eq!(
            flush(&mut state, t2 + DEBOUNCE, |_| Written::Applied),
            Vec::<Option<String>>::new()
        );
        assert_eq!(state.wake_at(), None);
        assert_eq!(
            line(
                &metrics,
                "dhi_admission_audit_report_writes_skipped_total{kind=\"PolicyReport\"}"
            ),
            "dhi_admission_audit_report_writes_skipped_total{kind=\"PolicyReport\"} 1"
        );
    }

    #[test]
    fn only_a_leader_that_has_listed_every_kind_writes() {
        let t0 = Instant::now();
        let metrics = AuditMetrics::new(Registry::new(), false).unwrap();
        let mut state = AuditState::new("dhi".into(), DEBOUNCE, metrics);
        state.leadership(Some(t0 + 60_000 * MS), t0);
        state.change(Change::NamespacesListed, t0);
        state.change(applied("shop", "cart", "u1"), t0);
        assert_eq!(state.wake_at(), None, "the kinds are not listed yet");
        let (mut standby, _) = listed(t0);
        standby.change(applied("shop", "cart", "u1"), t0);
        assert_eq!(standby.wake_at(), None, "a standby never writes");
        // A leader whose lease runs out before the timer fires writes nothing.
        standby.leadership(Some(t0 + 100 * MS), t0);
        assert_eq!(standby.wake_at(), Some(t0 + DEBOUNCE));
        assert_eq!(
            flush(&mut standby, t0 + DEBOUNCE, |_| Written::Applied),
            Vec::<Option<String>>::new()
        );
        assert_eq!(standby.wake_at(), None);
    }

    #[test]
    fn a_new_leader_writes_every_namespace_again() {
        let (mut state, metrics, written_at) = shop_written(Instant::now());
        let t1 = written_at + 1000 * MS;
        state.change(applied("web", "front", "u2"), t1);
        assert_eq!(
            flush(&mut state, t1 + DEBOUNCE, |_| Written::Applied),
            [Some("web".to_owned()), None]
        );
        assert_eq!(
            line(&metrics, "dhi_admission_audit_leader"),
            "dhi_admission_audit_leader 1"
        );
        let t2 = t1 + 2000 * MS;
        state.leadership(None, t2);
        assert_eq!(
            line(&metrics, "dhi_admission_audit_leader"),
            "dhi_admission_audit_leader 0"
        );
        assert_eq!(
            line(&metrics, "dhi_admission_audit_workloads{"),
            "",
            "a standby shows no gauges"
        );
        assert_eq!(state.wake_at(), None);
        // What the leader in between wrote is unknown: everything is written again.
        let t3 = t2 + 30_000 * MS;
        state.leadership(Some(t3 + 60_000 * MS), t3);
        assert_eq!(state.wake_at(), Some(t3 + DEBOUNCE));
        assert_eq!(
            flush(&mut state, t3 + DEBOUNCE, |_| Written::Applied),
            [Some("shop".to_owned()), Some("web".to_owned()), None]
        );
        assert!(!line(&metrics, "dhi_admission_audit_workloads{").is_empty());
    }

    #[test]
    fn a_namespace_gone_is_forgotten_and_a_relabelled_one_rejudges_everything() {
        let t0 = Instant::now();
        let (mut state, _) = leader(t0);
        state.change(
            Change::Namespace {
                name: "shop".into(),
                mode_label: None,
            },
            t0,
        );
        let relabelled = Change::Namespace {
            name: "shop".into(),
            mode_label: Some("warn".into()),
        };
        assert_eq!(
            state.change(relabelled, t0),
            Some(Todo::Resync("a namespace's dhi.io/mode label changed"))
        );
        let t1 = t0 + 1000 * MS;
        state.change(applied("shop", "cart", "u1"), t1);
        let gone = |ns: Option<&str>| match ns {
            Some(_) => Written::NamespaceGone,
            None => Written::Applied,
        };
        assert_eq!(
            flush(&mut state, t1 + DEBOUNCE, gone),
            [Some("shop".to_owned()), None]
        );
        assert_eq!(state.wake_at(), None, "a namespace gone is not retried");
    }

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
