//! Test harness: certificates and policy in a temporary directory, the server in
//! process (on its own runtime, stopped by a oneshot) or as the real binary, TLS
//! clients over HTTP/1.1 and HTTP/2, raw sockets for hostile input, and a reader for
//! the Prometheus exposition.
//!
//! Every network operation is bounded by [`IO_TIMEOUT`]; every wait for a condition
//! polls it with [`eventually`] instead of sleeping a guessed time.

// Each test binary uses its own part of the harness: what one leaves unused is another's.
#![allow(dead_code)]

mod answers;
pub mod app;
mod binary;
pub mod cli;
mod client;
pub mod engine;
pub mod expect;
pub mod fixtures;
mod material;
mod prom;
mod raw;
mod server;
mod trust;

#[allow(unused_imports)]
pub use answers::*;
#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use cli::binary_path;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use fixtures::*;
#[allow(unused_imports)]
pub use material::*;
#[allow(unused_imports)]
pub use prom::*;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use server::*;
#[allow(unused_imports)]
pub use trust::*;

use std::time::{Duration, Instant};

/// Upper bound for any single network operation in the tests (a noisy 2-core machine
/// running debug builds can be slow; a hang must still fail, not block forever).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Content type of every webhook request.
pub const JSON: &str = "application/json";

/// The policy the in-process server starts with unless a test says otherwise.
pub const DEFAULT_POLICY: &str = "exempt:\n  namespaces: [kube-system]\n";

// ===== polling =====

/// Polls `check` every `every` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `fut` within [`IO_TIMEOUT`], panicking with `what` otherwise.
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {IO_TIMEOUT:?}"),
    }
}

/// Server logs on stderr when `DHI_TEST_LOG` is set (an EnvFilter, e.g. `debug`).
pub fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("DHI_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
