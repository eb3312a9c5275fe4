//! `dhi-admission serve`: the TLS webhook listener, the plain-HTTP metrics and health
//! listener, hot reload of certificate and policy, and graceful shutdown.
//!
//! Run it with `cargo run --release -- serve`: without `--tls-cert`/`--tls-key` and
//! with no `certs/tls.crt`, it generates a development certificate first.

mod reload;
mod timed_io;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Answer};
use crate::config::{ActivePolicy, Config, Limits, ServeArgs};
use crate::metrics::Metrics;
use crate::tls::{KeyPairPaths, SwappableCert};
use dhi_policy::{Mode, Webhook};
use timed_io::TimedIo;

/// Runs the server until SIGTERM or SIGINT, then drains and returns. Without
/// `--tls-cert`/`--tls-key` it serves the development certificate, generating it first
/// when there is none.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let development = args.uses_development_certificate();
    let config = Config::from(args);
    if development {
        ensure_development_certificate(&config.tls)?;
    }
    let server = Server::bind(config).await?;
    server.serve(shutdown_signal()).await
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

/// Shared by every request.
pub struct AppState {
    policy: ArcSwap<ActivePolicy>,
    metrics: Metrics,
    ready: AtomicBool,
    limits: Limits,
}

impl AppState {
    /// State for a policy, with metrics registered into a fresh registry.
    pub fn new(policy: ActivePolicy, limits: Limits) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            policy: ArcSwap::from_pointee(policy),
            metrics: Metrics::new(prometheus::Registry::new())?,
            ready: AtomicBool::new(false),
            limits,
        }))
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Marks the server ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// The webhook routes; the unit tests drive it without a socket.
pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(|s, r| admit(s, r, Webhook::Mutate, false)))
        .route("/validate", post(|s, r| admit(s, r, Webhook::Validate, false)))
        .route("/mutate/audit", post(|s, r| admit(s, r, Webhook::Mutate, true)))
        .route("/validate/audit", post(|s, r| admit(s, r, Webhook::Validate, true)))
        .fallback(|| async { reply(admission::http_error(404, "unknown path: the webhook serves /mutate, /validate, /mutate/audit and /validate/audit".to_owned())) })
        .method_not_allowed_fallback(|| async { reply(admission::http_error(405, "method not allowed: the webhook endpoints take POST".to_owned())) })
        .with_state(state)
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    s.metrics.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<AppState>>| async move {
                if s.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .with_state(state)
}

async fn admit(
    State(state): State<Arc<AppState>>,
    request: Request,
    webhook: Webhook,
    audit: bool,
) -> Response {
    let started = Instant::now();
    let body = read_body(&state.limits, request).await;
    let policy = state.policy.load();
    let mode = if audit { Mode::Audit } else { policy.mode };
    let answer = match body {
        Ok(body) => {
            // The engine is synchronous: a panic is caught here and costs this request only.
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                admission::handle(&policy.engine, webhook, mode, &body)
            }))
            .unwrap_or_else(|_| {
                admission::http_error(
                    500,
                    "internal error while reviewing the request; see the webhook's log".to_owned(),
                )
            })
        }
        Err(answer) => answer,
    };
    state
        .metrics
        .observe(webhook, mode, &answer, started.elapsed().as_secs_f64());
    reply(answer)
}

/// Reads a JSON body within the size and time limits, or the error answer to send.
async fn read_body(limits: &Limits, request: Request) -> Result<bytes::Bytes, Answer> {
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers)?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body as u64) {
        return Err(too_large(limits));
    }
    let collect = Limited::new(body, limits.max_body).collect();
    match tokio::time::timeout(limits.request_timeout, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large(limits)),
        Ok(Err(err)) => Err(admission::http_error(
            400,
            format!("cannot read request body: {err}"),
        )),
        Err(_) => Err(admission::http_error(
            408,
            format!(
                "request body not received within {:?}",
                limits.request_timeout
            ),
        )),
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Answer> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let essence = value.map(|v| v.split(';').next().unwrap_or("").trim());
    match essence {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        other => Err(admission::http_error(
            415,
            format!(
                "content type must be application/json, got {}",
                other.unwrap_or("none")
            ),
        )),
    }
}

fn too_large(limits: &Limits) -> Answer {
    admission::http_error(
        413,
        format!("request body larger than {} bytes", limits.max_body),
    )
}

fn reply(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(answer.body),
    )
        .into_response()
}

/// A bound server: both listeners open, certificate and policy loaded.
pub struct Server {
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: Arc<AppState>,
    certs: Arc<SwappableCert>,
    acceptor: TlsAcceptor,
    baseline: reload::Baseline,
}

impl Server {
    /// Loads certificate and policy and binds both listeners (port 0 picks a free one).
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let pair = config
            .tls
            .load()
            .context("loading the serving certificate")?;
        // The policy file is read once: the reloader compares later versions with
        // these bytes, so a change made while the server starts is not missed.
        let (policy, policy_bytes) = match &config.policy {
            Some(path) => {
                let (policy, bytes) = ActivePolicy::load(path, config.mode)?;
                (policy, Some(bytes))
            }
            None => (ActivePolicy::new(Default::default(), config.mode), None),
        };
        let state = AppState::new(policy, config.limits)?;
        if let Ok(expiry) = crate::certs::cert_not_after(&String::from_utf8_lossy(&pair.cert_pem)) {
            state.metrics.set_cert_expiry(expiry);
        }
        let certs = Arc::new(SwappableCert::new(pair.certified));
        let tls = crate::tls::server_config(certs.clone(), config.client_ca.as_deref())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("binding {}", config.metrics_listen))?;
        Ok(Self {
            config,
            listener,
            metrics_listener,
            state,
            certs,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            baseline: reload::Baseline::new(&pair.cert_pem, &pair.key_pem, policy_bytes),
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
            acceptor,
            baseline,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let reloader = tokio::spawn(reload::watch_files(
            config.clone(),
            state.clone(),
            certs,
            baseline,
            stop_rx.clone(),
        ));
        let metrics_app = metrics_router(state.clone());
        let mut metrics_stop = stop_rx.clone();
        let metrics = tokio::spawn(async move {
            let stopped = async move {
                let _ = metrics_stop.wait_for(|stop| *stop).await;
            };
            axum::serve(metrics_listener, metrics_app)
                .with_graceful_shutdown(stopped)
                .await
        });

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
            acceptor,
            config.limits,
            webhook_router(state.clone()),
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

/// Serves `app` over TLS on `listener` until `shutdown` completes, then drains: the
/// listener closes, idle connections close, busy ones finish their request and answer
/// it with `Connection: close`, all within `limits.shutdown_grace`.
///
/// This is the whole connection stack (TLS, HTTP/1.1 and HTTP/2, timeouts, connection
/// limit); the benchmark's baseline serves its trivial router through it too.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = TowerToHyperService::new(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // hyper runs this timer while a keep-alive connection waits for its next
        // request too, so it doubles as the idle timeout.
        .header_read_timeout(limits.idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => permit?,
        };
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conn_builder = builder.clone();
        let service = service.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let io = TokioIo::new(TimedIo::new(
                tls,
                limits.handshake_timeout,
                limits.idle_timeout,
            ));
            let conn = conn_builder.serve_connection(io, service).into_owned();
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "grace period over; closing remaining connections");
    }
    Ok(())
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
