//! `dhi-admission audit`: the background audit. Watches the cluster's workloads, judges
//! each with the same engine as the webhook, and keeps one `wgpolicyk8s.io/v1alpha2`
//! PolicyReport per namespace and a ClusterPolicyReport summary current.
//!
//! ```sh
//! dhi-admission audit --config policy.yaml --lease-namespace dhi-system --identity "$POD_NAME"
//! ```
//!
//! It runs as its own Deployment, not inside `serve`: its watches, its memory and its
//! permissions (list and watch every workload, write reports) stay out of the webhook's
//! fail-closed failure domain, and the webhook pod keeps no API credentials at all. Any
//! number of replicas may run; a Lease elects the one that writes ([`lease`]).
//!
//! - [`watch`]: one watcher per kind, decoding only what the engine reads.
//! - [`state`]: the pure core: judging into the [`store`] (the judged entry per workload,
//!   by namespace), the debounce, and which reports are due to be written.
//! - [`reconcile`]: the loop that feeds the state and carries out its writes.
//! - [`inputs`]: the policy and catalog files, polled; [`runtime`]: the nodes' runtimes.
//! - [`metrics`]: `/metrics` and `/healthz`.

mod inputs;
mod lease;
mod metrics;
mod reconcile;
mod reports;
mod runtime;
mod state;
mod store;
mod watch;

// scan's tests check that both list every kind.
#[cfg(test)]
pub(crate) use watch::WATCHED;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch as channel;

use crate::config::parse_listen;
use crate::kube_client::Fallback;
use crate::policy_source::PolicyArgs;

/// Arguments of `dhi-admission audit`.
#[derive(Debug, clap::Args)]
pub struct BackgroundAuditArgs {
    /// The policy file (a new version re-judges every workload), the mode the reports
    /// judge in, and the catalog.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Kubeconfig file to use instead of the in-cluster service account.
    #[arg(long, env = "DHI_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Plain HTTP listener for /metrics and /healthz (`ADDR:PORT`, `HOST:PORT`, `:PORT`).
    #[arg(long, default_value = "0.0.0.0:9090", env = "DHI_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: SocketAddr,
    /// Add a `namespace` label to the workloads gauge (one series per namespace, rule and
    /// result: mind the cardinality).
    #[arg(long, env = "DHI_METRICS_NAMESPACE_LABEL")]
    pub metrics_namespace_label: bool,
    /// Re-list and re-judge every workload this often, in seconds.
    #[arg(long, default_value_t = 600, env = "DHI_RESYNC_SECONDS")]
    pub resync_seconds: u64,
    /// Wait this long after a change before writing reports, so a burst (a rollout, a
    /// namespace applied at once) is written once, in milliseconds.
    #[arg(long, default_value_t = 500, env = "DHI_DEBOUNCE_MS")]
    pub debounce_ms: u64,
    /// How often the policy and catalog files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 2000, env = "DHI_RELOAD_INTERVAL_MS")]
    pub reload_interval_ms: u64,
    /// Read the nodes' container runtimes: when every Linux node runs containerd 2.x, pods
    /// off the host network can bind ports below 1024 and privileged-port applies to
    /// hostNetwork pods only (unless the policy sets runtime.unprivilegedPortStart).
    #[arg(long, env = "DHI_DETECT_RUNTIME_PORTS")]
    pub detect_runtime_ports: bool,
    /// Name of the reports: every namespace's PolicyReport and the ClusterPolicyReport.
    #[arg(long, default_value = "dhi-admission", env = "DHI_REPORT_NAME")]
    pub report_name: String,
    /// Name of the Lease that elects the replica that writes.
    #[arg(long, default_value = "dhi-admission-audit", env = "DHI_LEASE_NAME")]
    pub lease_name: String,
    /// Namespace of the Lease: the audit's own [default: the service account's namespace
    /// in a pod, the kubeconfig context's namespace outside].
    #[arg(long, env = "DHI_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's name in the Lease [default: $POD_NAME, else the hostname].
    #[arg(long, env = "DHI_IDENTITY")]
    pub identity: Option<String>,
    /// How long a lease holds without renewal, in seconds.
    #[arg(long, default_value_t = 15, env = "DHI_LEASE_DURATION_SECONDS")]
    pub lease_duration_seconds: u64,
    /// How long the holder keeps writing without a successful renewal, in seconds
    /// (shorter than the lease duration).
    #[arg(long, default_value_t = 10, env = "DHI_RENEW_DEADLINE_SECONDS")]
    pub renew_deadline_seconds: u64,
    /// How often the lease is read and renewed, in milliseconds.
    #[arg(long, default_value_t = 2000, env = "DHI_LEASE_RETRY_MS")]
    pub lease_retry_ms: u64,
}

impl BackgroundAuditArgs {
    fn identity(&self) -> anyhow::Result<String> {
        if let Some(identity) = self.identity.clone().filter(|i| !i.is_empty()) {
            return Ok(identity);
        }
        if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
            return Ok(pod);
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .context("no --identity, no $POD_NAME and no hostname: name this replica")
    }
}

/// Runs the audit until SIGTERM or SIGINT.
pub async fn run(args: BackgroundAuditArgs) -> anyhow::Result<()> {
    let timing = lease::Timing::new(
        Duration::from_secs(args.lease_duration_seconds),
        Duration::from_secs(args.renew_deadline_seconds),
        Duration::from_millis(args.lease_retry_ms),
    )?;
    let sources = inputs::Sources(args.policy.clone());
    // A broken policy or catalog at start is fatal, as for `serve`.
    let (loaded, fingerprint) = sources.load()?;
    let listener = crate::server::bind(args.metrics_listen, "/metrics").await?;
    let (client, own_namespace) =
        crate::kube_client::connect(args.kubeconfig.as_deref(), Fallback::InCluster).await?;
    let lease_config = lease::LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone().unwrap_or(own_namespace),
        identity: args.identity()?,
        timing,
    };
    let metrics =
        metrics::AuditMetrics::new(prometheus::Registry::new(), args.metrics_namespace_label)?;

    let (stop_tx, stop_rx) = channel::channel(false);
    let (leader_tx, leader_rx) = channel::channel(None);
    let election = tokio::spawn(lease::run(
        Api::<Lease>::namespaced(client.clone(), &lease_config.namespace),
        lease_config.clone(),
        leader_tx,
        stop_rx.clone(),
    ));
    let http = tokio::spawn(metrics::serve(listener, metrics.clone(), stop_rx.clone()));
    tracing::info!(
        identity = %lease_config.identity,
        lease = %format_args!("{}/{}", lease_config.namespace, lease_config.name),
        metrics = %args.metrics_listen,
        mode = %loaded.mode,
        "auditing"
    );
    let settings = reconcile::Settings {
        report_name: args.report_name.clone(),
        debounce: Duration::from_millis(args.debounce_ms),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        reload_interval: Duration::from_millis(args.reload_interval_ms.max(50)),
        detect_runtime_ports: args.detect_runtime_ports,
    };
    let reconciler = reconcile::Reconciler::new(
        client,
        settings,
        sources,
        loaded,
        fingerprint,
        metrics,
        leader_rx,
    );
    // The reconciler returns only on a fatal error; the signal ends it otherwise.
    let result = tokio::select! {
        result = reconciler.run(stop_rx) => result,
        () = crate::shutdown::signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    // The election releases the lease on its way out, so a standby takes over at once.
    let _ = election.await;
    let _ = http.await;
    tracing::info!("stopped");
    result
}
