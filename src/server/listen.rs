//! The connection stack: TLS, HTTP/1.1 and HTTP/2, timeouts, connection age and cap, and
//! the drain at shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;

use super::conns;
use super::timed_io::TimedIo;
use crate::config::Limits;
use crate::metrics::Metrics;

/// Binds a listener, saying which one could not be (`what`: "webhooks", "/metrics"):
/// before anything else starts, so a taken port fails fast.
pub async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {addr} for {what}: {err}"))
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
    let stack = Stack {
        builder: http_builder(&limits),
        service: TowerToHyperService::new(app),
        handshakes: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )),
        limits,
    };
    let registry = conns::Registry::new(limits.max_connections);
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
        let connection = stack
            .clone()
            .serve(tcp, tls.load_full(), member, drain_rx.clone());
        tokio::spawn(connection);
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

/// HTTP/1.1 and HTTP/2 as the connection stack serves them.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
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
    builder
}

/// What every connection is served with.
#[derive(Clone)]
struct Stack {
    builder: auto::Builder<TokioExecutor>,
    service: TowerToHyperService<Router>,
    /// One per core: see [`handshake`].
    handshakes: Arc<tokio::sync::Semaphore>,
    limits: Limits,
}

impl Stack {
    /// One accepted connection: the TLS handshake within its deadline, then HTTP until the
    /// connection closes, goes idle too long, is evicted or is drained.
    async fn serve(
        self,
        tcp: tokio::net::TcpStream,
        tls_config: Arc<rustls::ServerConfig>,
        member: conns::Member,
        mut drain: watch::Receiver<bool>,
    ) {
        let Self {
            builder: conn_builder,
            service,
            handshakes,
            limits,
        } = self;
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
    }
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
