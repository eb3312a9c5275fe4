//! Prometheus metrics: typed families registered into a registry passed in (no globals).
//!
//! Label values are bounded by construction: they come from enums (webhook, kind,
//! operation, mode, decision, rule, mutation, skip reason), never from request data.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use dhi_policy::answer::{Answer, Outcome};
use dhi_policy::{Mode, MutationKind, RuleId, SkipReason, Webhook};
use tokio::net::TcpListener;

const WEBHOOKS: [Webhook; 2] = [Webhook::Mutate, Webhook::Validate];
const MODES: [Mode; 3] = [Mode::Enforce, Mode::Audit, Mode::Warn];

const OUTCOMES: [Outcome; 3] = [Outcome::Allowed, Outcome::Denied, Outcome::Error];
const RELOADED: [Reloaded; 4] = [
    Reloaded::Certificate,
    Reloaded::ClientCa,
    Reloaded::Config,
    Reloaded::Catalog,
];

/// Latency buckets in seconds. Answers take tens of microseconds, so the low end is
/// fine-grained enough to see sub-millisecond shifts; from 0.25 s up the buckets step
/// through the webhooks' `timeoutSeconds` (2 s), and 10 s is the API server's ceiling,
/// so a slow body or a stall shows where it stands against the timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0,
];

/// Every metric the server exports.
///
/// The series whose labels are all enums are resolved once, here: a label look-up
/// hashes the values and takes a lock, several times per request otherwise. They are
/// also exported from the start at zero, which `rate()` and alerts need.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    answers: AnswerFamilies,
    loads: LoadFamilies,
    conns: ConnFamilies,
}

/// Why the server closed a connection (connections closed by the client, or after an
/// error, are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClosed {
    /// No request in flight for the idle timeout.
    Idle,
    /// Past the maximum connection age.
    MaxAge,
    /// The longest-idle connection, closed at the cap to admit a new one.
    Evicted,
    /// No request started within the handshake timeout of connecting.
    NoRequest,
    /// An HTTP/1.1 request head not received within the header timeout.
    HeaderTimeout,
}

impl ConnClosed {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Idle,
        Self::MaxAge,
        Self::Evicted,
        Self::NoRequest,
        Self::HeaderTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::MaxAge => "max_age",
            Self::Evicted => "evicted",
            Self::NoRequest => "no_request",
            Self::HeaderTimeout => "header_timeout",
        }
    }
}

/// Why a request was refused (503) before its body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// No room in the budget of request body bytes held at once.
    BodyMemory,
}

impl ShedReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 1] = [Self::BodyMemory];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BodyMemory => "body_memory",
        }
    }
}

/// What was reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The serving certificate and key.
    Certificate,
    /// The client CA bundle (`--client-ca`).
    ClientCa,
    /// The policy file.
    Config,
    /// The catalog file (`--catalog`).
    Catalog,
}

impl Reloaded {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::ClientCa => "client_ca",
            Self::Config => "config",
            Self::Catalog => "catalog",
        }
    }
}

/// Creates metric families in a registry, each registered as it is made.
#[derive(Clone, Copy)]
pub(crate) struct Families<'r>(pub(crate) &'r Registry);

/// A family of series by labels (`IntCounterVec`, `IntGaugeVec`, `GaugeVec`).
pub(crate) trait ByLabels: Collector + Clone + Sized + 'static {
    /// The family, unregistered.
    fn make(opts: Opts, labels: &[&str]) -> prometheus::Result<Self>;
}

/// A family of one series (`IntGauge`, `Gauge`).
pub(crate) trait Single: Collector + Clone + Sized + 'static {
    /// The series, unregistered.
    fn make(name: &str, help: &str) -> prometheus::Result<Self>;
}

/// Implements a family trait with the same constructor for each of `$family`.
macro_rules! families {
    ($trait:ident, $make:item, $($family:ty),*) => {
        $(impl $trait for $family { $make })*
    };
}
families!(
    ByLabels,
    fn make(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        Self::new(opts, labels)
    },
    IntCounterVec,
    IntGaugeVec,
    GaugeVec
);
families!(
    Single,
    fn make(name: &str, help: &str) -> prometheus::Result<Self> {
        Self::new(name, help)
    },
    IntGauge,
    Gauge
);

impl Families<'_> {
    fn register<C: Collector + Clone + 'static>(self, collector: C) -> prometheus::Result<C> {
        self.0.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    /// A family of series by `labels`.
    pub(crate) fn by<F: ByLabels>(
        self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<F> {
        self.register(F::make(Opts::new(name, help), labels)?)
    }

    /// A family of one series.
    pub(crate) fn one<S: Single>(self, name: &str, help: &str) -> prometheus::Result<S> {
        self.register(S::make(name, help)?)
    }

    /// Histograms over `buckets`, by `labels`.
    fn histograms(
        self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels)?)
    }
}

/// The families of answered requests: counts, latency, violations, mutations, skips.
#[derive(Clone)]
struct AnswerFamilies {
    requests: IntCounterVec,
    /// By `Webhook as usize`, then `Outcome as usize`.
    duration: [[Histogram; 3]; 2],
    /// By `RuleId as usize`, then `Mode as usize`.
    violations: [[IntCounter; 3]; 3],
    /// By `MutationKind as usize`.
    mutations: [IntCounter; 6],
    /// By `SkipReason as usize`.
    skipped: [IntCounter; SkipReason::ALL.len()],
}

impl AnswerFamilies {
    fn register(families: Families<'_>) -> prometheus::Result<Self> {
        let requests: IntCounterVec = families.by(
            "dhi_admission_requests_total",
            "Admission requests answered.",
            &["webhook", "kind", "operation", "mode", "decision"],
        )?;
        let duration = families.histograms(
            "dhi_admission_request_duration_seconds",
            "Time from request head to response, body read included.",
            LATENCY_BUCKETS,
            &["webhook", "decision"],
        )?;
        let violations: IntCounterVec = families.by(
            "dhi_admission_violations_total",
            "Policy violations found.",
            &["rule", "mode"],
        )?;
        let mutations: IntCounterVec = families.by(
            "dhi_admission_mutations_total",
            "Changes made by patches returned.",
            &["type"],
        )?;
        let skipped: IntCounterVec = families.by(
            "dhi_admission_rewrites_skipped_total",
            "Upstream images left alone because the rewrite would not be admitted.",
            &["reason"],
        )?;
        Ok(Self {
            requests,
            duration: WEBHOOKS
                .map(|w| OUTCOMES.map(|o| duration.with_label_values(&[w.as_str(), o.as_str()]))),
            violations: RuleId::ALL.map(|rule| {
                MODES.map(|mode| violations.with_label_values(&[rule.as_str(), mode.as_str()]))
            }),
            mutations: MutationKind::ALL.map(|m| mutations.with_label_values(&[m.as_str()])),
            skipped: SkipReason::ALL.map(|r| skipped.with_label_values(&[r.as_str()])),
        })
    }
}

/// The families of what the server loaded: reloads, the certificate, the build, the catalog.
#[derive(Clone)]
struct LoadFamilies {
    /// By `Reloaded as usize`, then failure (0) or success (1).
    reloads: [[IntCounter; 2]; 4],
    /// By `Reloaded as usize`.
    reloaded_at: [Gauge; 4],
    /// One series: the catalog snapshot in force.
    catalog_info: IntGaugeVec,
    cert_expiry: Gauge,
}

impl LoadFamilies {
    fn register(families: Families<'_>) -> prometheus::Result<Self> {
        let reloads: IntCounterVec = families.by(
            "dhi_admission_reloads_total",
            "Certificate, client CA, policy and catalog reloads.",
            &["what", "result"],
        )?;
        let reloaded_at: GaugeVec = families.by(
            "dhi_admission_reload_last_success_timestamp_seconds",
            "When each file was last loaded successfully (at start or on reload), as a Unix \
                 timestamp; 0 until then.",
            &["what"],
        )?;
        let cert_expiry: Gauge = families.one(
            "dhi_admission_tls_cert_expiry_timestamp_seconds",
            "Expiry (notAfter) of the serving certificate, as a Unix timestamp.",
        )?;
        let build_info: IntGaugeVec = families.by(
            "dhi_admission_build_info",
            "Build information; always 1.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let catalog_info: IntGaugeVec = families.by(
            "dhi_admission_catalog_info",
            "The catalog snapshot the decisions come from; always 1.",
            &["snapshot", "source"],
        )?;
        Ok(Self {
            reloads: RELOADED.map(|what| {
                ["failure", "success"]
                    .map(|result| reloads.with_label_values(&[what.as_str(), result]))
            }),
            reloaded_at: RELOADED.map(|what| reloaded_at.with_label_values(&[what.as_str()])),
            catalog_info,
            cert_expiry,
        })
    }
}

/// The families of connections: closed, open, shed.
#[derive(Clone)]
struct ConnFamilies {
    /// By `ConnClosed as usize`.
    closed: [IntCounter; 5],
    open: IntGauge,
    /// By `ShedReason as usize`.
    shed: [IntCounter; 1],
}

impl ConnFamilies {
    fn register(families: Families<'_>) -> prometheus::Result<Self> {
        let closed: IntCounterVec = families.by(
            "dhi_admission_connections_closed_total",
            "Connections closed by the server, by reason.",
            &["reason"],
        )?;
        let open: IntGauge = families.one(
            "dhi_admission_connections",
            "TLS connections open (handshaking, serving or closing).",
        )?;
        let shed: IntCounterVec = families.by(
            "dhi_admission_requests_shed_total",
            "Requests refused with 503 before their body was read, by reason.",
            &["reason"],
        )?;
        Ok(Self {
            closed: ConnClosed::ALL.map(|r| closed.with_label_values(&[r.as_str()])),
            open,
            shed: ShedReason::ALL.map(|r| shed.with_label_values(&[r.as_str()])),
        })
    }
}

impl Metrics {
    /// Registers the families into `registry`.
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let answers = AnswerFamilies::register(Families(&registry))?;
        let loads = LoadFamilies::register(Families(&registry))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let conns = ConnFamilies::register(Families(&registry))?;
        let metrics = Self {
            registry,
            answers,
            loads,
            conns,
        };
        metrics.set_catalog(&dhi_policy::Catalog::default());
        Ok(metrics)
    }

    /// Names the catalog snapshot in force: its date and source line (cut at 256
    /// bytes: a loaded file's source is whatever the file says).
    pub fn set_catalog(&self, catalog: &dhi_policy::Catalog) {
        let source = catalog.snapshot_source();
        let cut = (0..=source.len().min(256))
            .rev()
            .find(|&i| source.is_char_boundary(i))
            .unwrap_or(0);
        self.loads.catalog_info.reset();
        self.loads
            .catalog_info
            .with_label_values(&[catalog.snapshot_date(), &source[..cut]])
            .set(1);
    }

    /// Records one answered request.
    pub fn observe(&self, webhook: Webhook, mode: Mode, answer: &Answer, seconds: f64) {
        let kind = answer.kind.map_or("unknown", |k| k.as_str());
        let operation = answer.operation.map_or("unknown", |o| o.as_str());
        self.answers
            .requests
            .with_label_values(&[
                webhook.as_str(),
                kind,
                operation,
                mode.as_str(),
                answer.outcome.as_str(),
            ])
            .inc();
        self.answers.duration[webhook as usize][answer.outcome as usize].observe(seconds);
        for &rule in &answer.violations {
            self.answers.violations[rule as usize][mode as usize].inc();
        }
        for &m in &answer.mutations {
            self.answers.mutations[m as usize].inc();
        }
        for &reason in &answer.skipped {
            self.answers.skipped[reason as usize].inc();
        }
    }

    /// Records a reload attempt.
    pub fn reload(&self, what: Reloaded, ok: bool) {
        self.loads.reloads[what as usize][usize::from(ok)].inc();
        if ok {
            self.loaded(what);
        }
    }

    /// Records a file loaded successfully (at start, or on reload).
    pub fn loaded(&self, what: Reloaded) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.loads.reloaded_at[what as usize].set(now);
    }

    /// Counts a connection the server closed.
    pub fn connection_closed(&self, reason: ConnClosed) {
        self.conns.closed[reason as usize].inc();
    }

    /// Sets the number of open connections.
    pub fn connections_open(&self, n: usize) {
        self.conns.open.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a shed request.
    pub fn request_shed(&self, reason: ShedReason) {
        self.conns.shed[reason as usize].inc();
    }

    /// Sets the serving certificate's expiry.
    pub fn set_cert_expiry(&self, unix_seconds: i64) {
        self.loads.cert_expiry.set(unix_seconds as f64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// The registry the families are registered in, for [`serve`].
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The Prometheus text exposition of every family in `registry`.
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec only fails on invalid metric families, which we never build.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Answers `/readyz`: whether the process takes traffic now.
pub(crate) type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// The plain-HTTP routes of `serve` and `audit`: `/metrics` (the registry), `/healthz`,
/// and `/readyz` when the process has a readiness to report (the audit takes no traffic).
pub(crate) fn router(registry: Registry, ready: Option<Readiness>) -> Router {
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = render(&registry);
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    match ready {
        Some(ready) => router.route(
            "/readyz",
            get(move || {
                let answer = if ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                };
                async move { answer }
            }),
        ),
        None => router,
    }
}

/// Serves [`router`] on `listener` until `stop` completes: the one metrics listener of
/// `serve` and `audit`.
pub(crate) async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: Option<Readiness>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, ready))
        .with_graceful_shutdown(stop)
        .await
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_snapshot_is_exported() {
        let metrics = Metrics::new(Registry::new()).unwrap();
        let info = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("dhi_admission_catalog_info{"))
                .map(str::to_owned)
                .collect()
        };
        let builtin = dhi_policy::Catalog::default();
        assert_eq!(
            info(&metrics.render()),
            [format!(
                "dhi_admission_catalog_info{{snapshot=\"2026-08-22\",source=\"{}\"}} 1",
                builtin.snapshot_source()
            )]
        );
        let export = r#"{"source": "mirror export (2027-01-31)", "images": {
            "app": {"variants": [{"variant": "runtime", "tags": ["1"], "uid": 1, "gid": 1}]}}}"#;
        let snapshot = dhi_policy::catalog::Snapshot::from_export(export, "f").unwrap();
        let loaded = dhi_policy::Catalog::with_snapshot(Default::default(), snapshot.into());
        metrics.set_catalog(&loaded);
        assert_eq!(
            info(&metrics.render()),
            [
                "dhi_admission_catalog_info{snapshot=\"2027-01-31\",source=\"mirror export (2027-01-31)\"} 1"
            ],
            "one series: the snapshot in force"
        );
    }

    /// The arrays above are indexed by discriminant: the `ALL` lists must be in
    /// declaration order, or a count would land on another label.
    #[test]
    fn label_arrays_follow_declaration_order() {
        fn in_order<T: Copy>(all: &[T], index: fn(T) -> usize) -> bool {
            all.iter().enumerate().all(|(i, &x)| index(x) == i)
        }
        assert!(in_order(&WEBHOOKS, |x| x as usize));
        assert!(in_order(&MODES, |x| x as usize));
        assert!(in_order(&OUTCOMES, |x| x as usize));
        assert!(in_order(&RELOADED, |x| x as usize));
        assert!(in_order(&RuleId::ALL, |x| x as usize));
        assert!(in_order(&MutationKind::ALL, |x| x as usize));
        assert!(in_order(&SkipReason::ALL, |x| x as usize));
        assert!(in_order(&ConnClosed::ALL, |x| x as usize));
        assert!(in_order(&ShedReason::ALL, |x| x as usize));
    }
}
