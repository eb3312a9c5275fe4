//! The load-test baseline: the webhook's server stack with no engine behind it.
//!
//! Same TLS configuration (`dhi_admission::tls::server_config`, the same ECDSA key
//! pair), same Tokio runtime, same hyper-util auto builder settings, same accept loop
//! (connection semaphore, `TCP_NODELAY`, handshake timeout, idle-timeout wrapper,
//! graceful watcher) and the same allocator (mimalloc) as `dhi-admission serve`. The
//! handler only reads `request.uid` and echoes it in an allowing AdmissionReview, so
//! `bench/load.sh` can tell what the engine and the webhook handler cost on top of
//! TLS and HTTP.
//!
//! ```text
//! cargo run --release --example baseline -- \
//!     --listen 127.0.0.1:8444 --metrics-listen 127.0.0.1:9091 \
//!     --tls-cert certs/tls.crt --tls-key certs/tls.key
//! ```
//!
//! `/readyz` on the metrics listener answers 200 once the TLS listener accepts, like
//! the real server's.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use dhi_admission::config::Limits;
use dhi_admission::tls::{KeyPairPaths, SwappableCert};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Arguments: the subset of `dhi-admission serve` the load test passes.
#[derive(Parser)]
#[command(about = "Echo-uid AdmissionReview server on the webhook's stack (load-test baseline)")]
struct Args {
    /// TLS listener.
    #[arg(long, default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    /// Plain HTTP listener for /readyz and /healthz.
    #[arg(long, default_value = "127.0.0.1:9091")]
    metrics_listen: SocketAddr,
    /// Serving certificate (PEM chain).
    #[arg(long, default_value = "certs/tls.crt")]
    tls_cert: PathBuf,
    /// Serving key (PEM).
    #[arg(long, default_value = "certs/tls.key")]
    tls_key: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // As `dhi-admission serve`: the multi-threaded runtime, one worker per allowed CPU.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

#[derive(Deserialize)]
struct ReviewUid<'a> {
    #[serde(borrow)]
    request: RequestUid<'a>,
}

#[derive(Deserialize)]
struct RequestUid<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
}

/// Reads the uid (skipping the rest of the body, as serde does) and allows.
async fn echo(body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<ReviewUid<'_>>(&body) else {
        return (StatusCode::BAD_REQUEST, "not an AdmissionReview\n").into_response();
    };
    let out = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &review.request.uid,
            allowed: true,
        },
    };
    let json = serde_json::to_vec(&out).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(json),
    )
        .into_response()
}

fn router() -> Router {
    Router::new()
        .route("/mutate", post(echo))
        .route("/validate", post(echo))
        .route("/mutate/audit", post(echo))
        .route("/validate/audit", post(echo))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let limits = Limits::default();
    let paths = KeyPairPaths {
        cert: args.tls_cert,
        key: args.tls_key,
    };
    let pair = paths.load().context("loading the serving certificate")?;
    let certs = Arc::new(SwappableCert::new(pair.certified));
    let tls = dhi_admission::tls::server_config(certs, None)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding {}", args.metrics_listen))?;
    let health = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }));
    let metrics = tokio::spawn(async move { axum::serve(metrics_listener, health).await });

    // The builder exactly as `Server::serve` configures it.
    let service = TowerToHyperService::new(router());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    eprintln!(
        "baseline serving on {} (readyz on {})",
        listener.local_addr()?,
        args.metrics_listen
    );

    let shutdown = dhi_admission::server::shutdown_signal();
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
                Err(_) => {
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
                    _ => return,
                };
            let io = TokioIo::new(TimedIo::new(
                tls,
                limits.handshake_timeout,
                limits.idle_timeout,
            ));
            let conn = conn_builder.serve_connection(io, service).into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
    metrics.abort();
    Ok(())
}

/// The server's idle-timeout wrapper (`src/server/timed_io.rs`, private to the library),
/// repeated here so the baseline pays the same timer reset per read.
struct TimedIo<S> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
}

impl<S> TimedIo<S> {
    fn new(inner: S, first: Duration, idle: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(first)),
            idle,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle too long",
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
