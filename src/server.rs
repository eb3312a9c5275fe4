//! `dhi-admission serve`: the TLS webhook listener, the plain-HTTP metrics and health
//! listener, hot reload of certificate and policy, and graceful shutdown.
//!
//! Run it with `cargo run --release -- serve`: without `--tls-cert`/`--tls-key` and
//! with no `certs/tls.crt`, it generates a development certificate first.

mod budget;
mod conns;
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
use axum::routing::post;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::{ActivePolicy, Config, Limits, ServeArgs, parse_policy, read_policy_bytes};
use crate::metrics::{Metrics, Reloaded, ShedReason};
use crate::tls::{KeyPairPaths, LoadedPair, SwappableCert};
use budget::{BodyBudget, Reservation};
use dhi_policy::answer::{self, Answer};
use dhi_policy::catalog::Snapshot;
use dhi_policy::{Mode, Webhook};
use timed_io::TimedIo;

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

/// Shared by every request.
pub struct AppState {
    policy: ArcSwap<ActivePolicy>,
    metrics: Metrics,
    ready: AtomicBool,
    limits: Limits,
    budget: BodyBudget,
    large_reviews: tokio::sync::Semaphore,
}

/// Reviews of bodies larger than this run one at a time.
const LARGE_REVIEW: usize = 1024 * 1024;

impl AppState {
    /// State for a policy, with metrics registered into a fresh registry.
    pub fn new(policy: ActivePolicy, limits: Limits) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            policy: ArcSwap::from_pointee(policy),
            metrics: Metrics::new(prometheus::Registry::new())?,
            ready: AtomicBool::new(false),
            limits,
            budget: BodyBudget::new(limits.body_budget, limits.body_budget_wait),
            large_reviews: tokio::sync::Semaphore::new(1),
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
        .route("/mutate", post(|s, r| admit(s, r, Webhook::Mutate, None)))
        .route("/validate", post(|s, r| admit(s, r, Webhook::Validate, None)))
        .route("/mutate/audit", post(|s, r| admit(s, r, Webhook::Mutate, Some(Mode::Audit))))
        .route("/validate/audit", post(|s, r| admit(s, r, Webhook::Validate, Some(Mode::Audit))))
        .route("/mutate/warn", post(|s, r| admit(s, r, Webhook::Mutate, Some(Mode::Warn))))
        .route("/validate/warn", post(|s, r| admit(s, r, Webhook::Validate, Some(Mode::Warn))))
        .fallback(|| async { reply(answer::http_error(404, "unknown path: the webhook serves /mutate, /validate, and both under /audit and /warn".to_owned())) })
        .method_not_allowed_fallback(|| async { reply(answer::http_error(405, "method not allowed: the webhook endpoints take POST".to_owned())) })
        .with_state(state)
}

async fn admit(
    State(state): State<Arc<AppState>>,
    request: Request,
    webhook: Webhook,
    path_mode: Option<Mode>,
) -> Response {
    let started = Instant::now();
    // The reservation in the body budget is held until the answer is built: the body
    // and the engine's work on it are what it stands for.
    let body = read_body(&state, request).await;
    // The engine's working set grows with a review's structure (100,000 containers in
    // 3.6 MB take well over 100 MiB): large reviews are reviewed one at a time, so
    // that the peak is one of them, not one per runtime worker.
    let _one_at_a_time = match &body {
        Ok((bytes, _)) if bytes.len() > LARGE_REVIEW => state.large_reviews.acquire().await.ok(),
        _ => None,
    };
    let policy = state.policy.load();
    let mode = path_mode.map_or(policy.mode, |m| m.at_most(policy.mode));
    let answer = match body {
        Ok((body, _reservation)) => {
            // The engine is synchronous: a panic is caught here and costs this request only.
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                answer::handle(&policy.engine, webhook, mode, &body)
            }))
            .unwrap_or_else(|_| {
                answer::http_error(
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

/// Reads a JSON body within the size and time limits and the body budget, or the
/// error answer to send. The body's room in the budget comes with it.
async fn read_body(
    state: &AppState,
    request: Request,
) -> Result<(bytes::Bytes, Reservation<'_>), Answer> {
    let limits = &state.limits;
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
    let declared = declared.map(|len| len as usize);
    let mut reservation = state.budget.reservation();
    // Room for the announced length before a byte of the body is read.
    if let Some(len) = declared {
        reservation.grow_to(len).await.map_err(|_| shed(state))?;
    }
    let collect = async {
        let mut body = std::pin::pin!(body);
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                answer::http_error(400, format!("cannot read request body: {err}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let total = buf.len() + data.len();
            if total > limits.max_body {
                return Err(too_large(limits));
            }
            // Without a length, room is taken as the bytes arrive.
            if declared.is_none_or(|len| total > len) {
                reservation.grow_to(total).await.map_err(|_| shed(state))?;
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.request_timeout, collect).await {
        Ok(Ok(body)) => Ok((body, reservation)),
        Ok(Err(answer)) => Err(answer),
        Err(_) => Err(answer::http_error(
            408,
            format!(
                "request body not received within {:?}",
                limits.request_timeout
            ),
        )),
    }
}

/// The answer to a request shed for want of room in the body budget.
fn shed(state: &AppState) -> Answer {
    state.metrics.request_shed(ShedReason::BodyMemory);
    answer::http_error(
        503,
        format!(
            "server busy: no room within {:?} in the budget of {} bytes of request bodies \
             held at once (--max-buffered-body-bytes); the body was not read, retry shortly",
            state.limits.body_budget_wait, state.limits.body_budget
        ),
    )
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Answer> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let essence = value.map(|v| v.split(';').next().unwrap_or("").trim());
    match essence {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        other => Err(answer::http_error(
            415,
            format!(
                "content type must be application/json, got {}",
                other.unwrap_or("none")
            ),
        )),
    }
}

fn too_large(limits: &Limits) -> Answer {
    answer::http_error(
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
        Some(path) => Some(read_policy_bytes(path)?),
        None => None,
    };
    let catalog = match &config.catalog {
        Some(path) => {
            let bytes = crate::catalog::read_catalog_bytes(path)?;
            let snapshot = crate::catalog::parse_catalog(path, &bytes)?;
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

/// Serves `app` over TLS on `listener` until `shutdown` completes, then drains: the
/// listener closes, idle connections close, busy ones finish their request and answer
/// it with `Connection: close`, all within `limits.shutdown_grace`.
///
/// This is the whole connection stack (TLS, HTTP/1.1 and HTTP/2, timeouts, connection
/// age and cap); the benchmark's baseline serves its trivial router through it too.
/// `tls` is read for each new connection, so a swapped configuration (a new client CA)
/// applies to the next handshake. `metrics`, when given, counts connections.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    limits: Limits,
    app: Router,
    metrics: Option<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = TowerToHyperService::new(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper header timer: it would also run while a kept-alive connection waits for
    // its next request, tying the header timeout to the idle one. `TimedIo` times
    // request heads, `conns::drive` idle connections.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None);
    // Pings find dead peers; they never count as activity (see `conns`). Small flow
    // control windows bound what a client can push into the server's memory ahead of
    // the handler (a body waiting for room in the budget is not read).
    let ping_every = (limits.idle_timeout / 4).min(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(128 * 1024)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(ping_every))
        .keep_alive_timeout(ping_every.max(Duration::from_secs(1)));
    let registry = conns::Registry::new(limits.max_connections);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ));
    let (drain_tx, drain_rx) = watch::channel(false);

    tokio::pin!(shutdown);
    'accept: loop {
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
        // At the cap the longest-idle connection makes room; when every connection is
        // busy, wait for one to end or go idle (a request is bounded in time).
        let member = loop {
            if let Some(member) = registry.admit(metrics.as_ref()) {
                break member;
            }
            tokio::select! {
                () = &mut shutdown => break 'accept,
                () = registry.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls_config = tls.load_full();
        let handshakes = handshakes.clone();
        let conn_builder = builder.clone();
        let service = service.clone();
        let mut drain = drain_rx.clone();
        tokio::spawn(async move {
            let state = member.state().clone();
            // The handshake counts against the first-request deadline.
            let handshake = tokio::time::timeout(
                limits.handshake_timeout,
                handshake(tcp, tls_config, &handshakes),
            );
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                () = member.evicted() => return,
                _ = drain.wait_for(|d| *d) => return,
            };
            let http1 = tls.get_ref().1.alpn_protocol() != Some(b"h2");
            let io = TokioIo::new(TimedIo::new(
                tls,
                state.clone(),
                limits.header_timeout,
                http1,
            ));
            let service = conns::Tracked::new(service, state);
            let conn = conn_builder.serve_connection(io, service);
            conns::drive(conn, |c| c.graceful_shutdown(), &member, &limits, drain).await;
        });
    }

    drop(listener);
    let _ = drain_tx.send(true);
    if tokio::time::timeout(limits.shutdown_grace, registry.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "grace period over; closing remaining connections");
    }
    Ok(())
}

/// A TLS handshake whose signing step waits for one of `permits`.
///
/// A burst of new connections (a client reconnecting hundreds of times a second)
/// costs a few hundred microseconds of CPU each: with every handshake runnable at
/// once, a request on an established connection queued behind all of them (200 at
/// once took 60 ms on one core). With the CPU-heavy step (reading the ClientHello,
/// then key exchange and signature, up to the first wait for the client) limited to
/// one per core, such a request waits for a few of them at most. The permit is not
/// held while waiting for the client, so silent clients cannot hold it.
async fn handshake(
    tcp: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    permits: &tokio::sync::Semaphore,
) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let permit = permits.acquire().await.map_err(std::io::Error::other)?;
    let mut accept = std::pin::pin!(start.into_stream(config));
    let first = std::future::poll_fn(|cx| match accept.as_mut().poll(cx) {
        std::task::Poll::Ready(done) => std::task::Poll::Ready(Some(done)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    drop(permit);
    match first {
        Some(done) => done,
        None => accept.await,
    }
}
