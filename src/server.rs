//! `dhi-admission serve`: the TLS webhook listener, the plain-HTTP metrics and health
//! listener, hot reload of certificate and policy, and graceful shutdown.
//!
//! Run it with `cargo run --release -- serve`: without `--tls-cert`/`--tls-key` and
//! with no `certs/tls.crt`, it generates a development certificate first.

mod admit;
mod budget;
mod conns;
mod listen;
mod reload;
mod state;
mod timed_io;

pub use admit::webhook_router;
pub use listen::{bind, serve_tls};
pub use state::AppState;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ServeArgs};
use crate::metrics::Reloaded;
use crate::policy_source::{ActivePolicy, Input, parse_catalog, parse_policy, read};
use crate::tls::{KeyPairPaths, LoadedPair, SwappableCert};
use dhi_policy::catalog::Snapshot;

/// Runs the server until SIGTERM or SIGINT, then drains and returns. Without
/// `--tls-cert`/`--tls-key` it serves the development certificate, generating it first
/// when there is none.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let development = args.uses_development_certificate();
    let config = args.into_config(crate::config::container_memory_limit())?;
    if development {
        ensure_development_certificate(&config.tls)?;
    }
    let server = Server::bind(config).await?;
    server.serve(crate::shutdown::signal()).await
}

fn ensure_development_certificate(paths: &KeyPairPaths) -> anyhow::Result<()> {
    let generated = crate::certs::ensure_dev_certificate(&paths.cert, &paths.key)
        .context("generating the development certificate")?;
    if let Some(names) = generated {
        tracing::warn!(
            cert = %paths.cert.display(),
            key = %paths.key.display(),
            names = %names.join(", "),
            "generated a development certificate signed by a new local CA (certs/ca.crt); use --tls-cert/--tls-key in clusters"
        );
    }
    Ok(())
}

/// A bound server: both listeners open, certificate and policy loaded.
pub struct Server {
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: Arc<AppState>,
    certs: Arc<SwappableCert>,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    baseline: reload::Baseline,
}

/// The files a server starts from, read once.
struct StartFiles {
    pair: LoadedPair,
    client_ca: Option<Vec<u8>>,
    policy: Option<Vec<u8>>,
    /// The catalog file's bytes and the snapshot they hold (parsed here, off the runtime).
    catalog: Option<(Vec<u8>, Arc<Snapshot>)>,
}

fn read_start_files(config: &Config) -> anyhow::Result<StartFiles> {
    let pair = config
        .tls
        .load()
        .context("loading the serving certificate")?;
    let client_ca = match &config.client_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read client CA {}", path.display()))?,
        ),
        None => None,
    };
    let policy = match &config.policy {
        Some(path) => Some(read(Input::Policy, path)?),
        None => None,
    };
    let catalog = match &config.catalog {
        Some(path) => {
            let bytes = read(Input::Catalog, path)?;
            let snapshot = parse_catalog(path, &bytes)?;
            Some((bytes, snapshot))
        }
        None => None,
    };
    Ok(StartFiles {
        pair,
        client_ca,
        policy,
        catalog,
    })
}

impl Server {
    /// Loads certificate and policy and binds both listeners (port 0 picks a free one).
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        config.limits.check()?;
        // The files are read once (on the blocking pool): the reloader compares later
        // versions with these bytes, so a change made while the server starts is not
        // missed.
        let StartFiles {
            pair,
            client_ca,
            policy: policy_bytes,
            catalog,
        } = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || read_start_files(&config)).await??
        };
        let file = match (&config.policy, &policy_bytes) {
            (Some(path), Some(bytes)) => parse_policy(path, bytes)?,
            _ => Default::default(),
        };
        let (catalog_bytes, snapshot) = match catalog {
            Some((bytes, snapshot)) => (Some(bytes), snapshot),
            None => (None, Snapshot::builtin()),
        };
        let policy = ActivePolicy::with_snapshot(file, config.mode, snapshot);
        let state = AppState::new(policy, config.limits)?;
        state
            .metrics
            .set_catalog(state.policy.load().engine.catalog());
        if let Ok(expiry) = crate::certs::cert_not_after(&String::from_utf8_lossy(&pair.cert_pem)) {
            state.metrics.set_cert_expiry(expiry);
        }
        state.metrics.loaded(Reloaded::Certificate);
        if config.policy.is_some() {
            state.metrics.loaded(Reloaded::Config);
        }
        if config.client_ca.is_some() {
            state.metrics.loaded(Reloaded::ClientCa);
        }
        if config.catalog.is_some() {
            state.metrics.loaded(Reloaded::Catalog);
        }
        let certs = Arc::new(SwappableCert::new(pair.certified.clone()));
        let ca = config.client_ca.as_deref().zip(client_ca.as_deref());
        let tls = crate::tls::server_config_with_ca(certs.clone(), ca)?;
        let listener = bind(config.listen, "webhooks").await?;
        let metrics_listener = bind(config.metrics_listen, "/metrics").await?;
        Ok(Self {
            config,
            listener,
            metrics_listener,
            state,
            certs,
            tls: Arc::new(ArcSwap::from_pointee(tls)),
            baseline: reload::Baseline::new(
                &pair.cert_pem,
                &pair.key_pem,
                client_ca,
                policy_bytes,
                catalog_bytes,
            ),
        })
    }

    /// The TLS listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains: readiness goes false, the
    /// listener closes, idle connections close, busy ones finish their request and
    /// answer it with `Connection: close`, all within the grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            config,
            listener,
            metrics_listener,
            state,
            certs,
            tls,
            baseline,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let reloader = tokio::spawn(reload::watch_files(
            config.clone(),
            state.clone(),
            reload::Tls {
                certs,
                config: tls.clone(),
            },
            baseline,
            stop_rx.clone(),
        ));
        let ready: crate::metrics::Readiness = {
            let state = state.clone();
            Arc::new(move || state.ready.load(Ordering::SeqCst))
        };
        let mut metrics_stop = stop_rx.clone();
        let metrics = tokio::spawn(crate::metrics::serve(
            metrics_listener,
            state.metrics.registry().clone(),
            Some(ready),
            async move {
                let _ = metrics_stop.wait_for(|stop| *stop).await;
            },
        ));

        tracing::info!(
            listen = %listener.local_addr()?,
            metrics = %config.metrics_listen,
            mode = %state.policy.load().mode,
            "serving"
        );
        state.set_ready(true);
        let draining = {
            let state = state.clone();
            async move {
                shutdown.await;
                // Readiness goes false first, so endpoints drop this replica.
                tracing::info!("shutting down: not ready, draining connections");
                state.set_ready(false);
            }
        };
        serve_tls(
            listener,
            tls,
            config.limits,
            webhook_router(state.clone()),
            Some(state.metrics.clone()),
            draining,
        )
        .await?;
        let _ = stop_tx.send(true);
        let _ = reloader.await;
        metrics.await??;
        tracing::info!("stopped");
        Ok(())
    }
}
