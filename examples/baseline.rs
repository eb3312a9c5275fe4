//! The load-test baseline: the webhook's server stack with no engine behind it.
//!
//! Same TLS configuration (`dhi_admission::tls::server_config`, the same ECDSA key
//! pair), same Tokio runtime, the same connection stack (`dhi_admission::server::serve_tls`:
//! accept loop, connection limit, `TCP_NODELAY`, handshake and idle timeouts, hyper-util
//! auto builder settings, connection age and cap, graceful drain) and the same allocator (mimalloc) as
//! `dhi-admission serve`. The handler only reads `request.uid` and echoes it in an
//! allowing AdmissionReview, so `bench/load.sh` can tell what the engine and the webhook
//! handler cost on top of TLS, HTTP and one JSON pass over the body.
//!
//! ```text
//! cargo run --release --example baseline -- \
//!     --listen 127.0.0.1:8444 --metrics-listen 127.0.0.1:9091 \
//!     --tls-cert certs/tls.crt --tls-key certs/tls.key
//! ```
//!
//! `/readyz` on the metrics listener answers 200 once the TLS listener is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use dhi_admission::config::Limits;
use dhi_admission::tls::{KeyPairPaths, SwappableCert};

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

// As `dhi-admission serve`: the multi-threaded runtime, one worker per allowed CPU.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    serve(args).await
}

/// Reads the uid (skipping the rest of the body, as serde does) and allows.
async fn echo(body: Bytes) -> Response {
    let answer = dhi_policy::answer::allow_unread(&body);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(answer.body),
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
    let tls = Arc::new(ArcSwap::from_pointee(tls));
    let listener = dhi_admission::server::bind(args.listen, "webhooks").await?;
    let metrics_listener = dhi_admission::server::bind(args.metrics_listen, "/metrics").await?;
    let health = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }));
    let metrics = tokio::spawn(async move { axum::serve(metrics_listener, health).await });

    eprintln!(
        "baseline serving on {} (readyz on {})",
        listener.local_addr()?,
        args.metrics_listen
    );
    // The server's own connection stack: TLS accept, hyper-util auto builder with the
    // same settings, timeouts, connection limit and graceful drain.
    let served = dhi_admission::server::serve_tls(
        listener,
        tls,
        limits,
        router(),
        None,
        dhi_admission::shutdown::signal(),
    )
    .await;
    metrics.abort();
    served
}
