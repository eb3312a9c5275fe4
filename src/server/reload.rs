//! Hot reload of the serving certificate, the client CA, the policy file and the
//! catalog file.
//!
//! Files are polled, not watched: kubelet and cert-manager rotate Secret and ConfigMap
//! volumes by swapping a `..data` symlink, which per-file inotify watches miss, and a
//! read of a few small files every couple of seconds costs nothing. The reads run on
//! the blocking pool, never on a runtime worker (a slow or hung volume must not stall
//! requests). A change is applied only once it parses; a broken version is logged and
//! counted once, and the last good one stays in use.
//!
//! The engine in force is the policy and the catalog together: a new policy is built on
//! the catalog snapshot in force, and a new catalog under the policy in force. One task
//! applies both, so neither change can undo the other.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::state::AppState;
use crate::config::Config;
use crate::metrics::Reloaded;
use crate::policy_source::{
    ActivePolicy, Fingerprint, Input, SourceError, Versions, parse_catalog, parse_policy, read,
};
use crate::tls::{KeyPairPaths, SwappableCert};

/// The versions last applied and last refused, to act once per change (the policy
/// source's [`Versions`], kept for the certificate and client CA too), and counted.
struct Seen(Versions);

impl Seen {
    /// Starts from the contents in force, if any.
    fn new(applied: Option<&[u8]>) -> Self {
        Self(applied.map_or_else(Versions::default, |bytes| Versions::applied(version(bytes))))
    }

    /// True if `current` is new: neither in use nor already refused.
    fn is_new(&self, current: &[u8]) -> bool {
        self.0.is_new(version(current))
    }

    /// Records a version as applied or refused, and counts it.
    fn settle(&mut self, state: &AppState, what: Reloaded, contents: &[u8], applied: bool) {
        state.metrics.reload(what, applied);
        self.0.settle(version(contents), applied);
    }
}

fn version(contents: &[u8]) -> Fingerprint {
    Fingerprint::of([Some(contents)])
}

/// The file contents the server started with, as loaded by `Server::bind`.
///
/// Re-reading the files when the watcher starts would be a race: a rotation landing
/// between the load and the first poll would be taken as already applied, and the old
/// certificate or policy would stay in force until the files changed again.
pub(super) struct Baseline {
    cert: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    policy: Option<Vec<u8>>,
    catalog: Option<Vec<u8>>,
}

impl Baseline {
    /// The certificate and key PEM in use, the client CA's, the policy file's and the
    /// catalog file's bytes (if any).
    pub(super) fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca: Option<Vec<u8>>,
        policy: Option<Vec<u8>>,
        catalog: Option<Vec<u8>>,
    ) -> Self {
        Self {
            cert: concat(cert_pem, key_pem),
            client_ca,
            policy,
            catalog,
        }
    }
}

/// What the TLS listener is configured with, swapped as a whole when the client CA
/// changes (a fresh configuration also drops the sessions resumable under the old CA).
pub(super) struct Tls {
    pub(super) certs: Arc<SwappableCert>,
    pub(super) config: Arc<ArcSwap<rustls::ServerConfig>>,
}

/// One poll's reads; `None` where a file could not be read (mid-rotation, missing).
struct Files {
    pair: Option<(Vec<u8>, Vec<u8>)>,
    client_ca: Option<Vec<u8>>,
    policy: Option<Vec<u8>>,
    /// A file over the size cap is read as `Err`: refused and counted like one that
    /// does not parse, not skipped like a missing one.
    catalog: Option<Result<Vec<u8>, String>>,
}

/// Reads the watched files on the blocking pool.
async fn read_files(config: &Config) -> Files {
    let tls = config.tls.clone();
    let client_ca = config.client_ca.clone();
    let policy = config.policy.clone();
    let catalog = config.catalog.clone();
    tokio::task::spawn_blocking(move || Files {
        pair: tls.read().ok(),
        client_ca: client_ca.and_then(|path| std::fs::read(path).ok()),
        policy: policy.and_then(|path| read(Input::Policy, &path).ok()),
        catalog: catalog.and_then(|path| match read(Input::Catalog, &path) {
            Ok(bytes) => Some(Ok(bytes)),
            Err(err @ SourceError::TooLarge { .. }) => Some(Err(err.to_string())),
            Err(_) => None,
        }),
    })
    .await
    .unwrap_or(Files {
        pair: None,
        client_ca: None,
        policy: None,
        catalog: None,
    })
}

/// Reads the certificate and key on the blocking pool.
async fn read_pair(paths: &KeyPairPaths) -> Option<(Vec<u8>, Vec<u8>)> {
    let paths = paths.clone();
    tokio::task::spawn_blocking(move || paths.read().ok())
        .await
        .ok()
        .flatten()
}

/// Polls the files every `config.reload_interval` until `stop` turns true.
pub(super) async fn watch_files(
    config: Config,
    state: Arc<AppState>,
    tls: Tls,
    baseline: Baseline,
    mut stop: watch::Receiver<bool>,
) {
    let mut cert_seen = Seen::new(Some(&baseline.cert));
    let mut ca_seen = Seen::new(baseline.client_ca.as_deref());
    let mut policy_seen = Seen::new(baseline.policy.as_deref());
    let mut catalog_seen = Seen::new(baseline.catalog.as_deref());
    let mut tick = tokio::time::interval(config.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let files = read_files(&config).await;
        if let Some(pair) = files.pair {
            reload_certificate(&config, &state, &tls.certs, pair, &mut cert_seen).await;
        }
        if let Some(pem) = files.client_ca {
            reload_client_ca(&config, &state, &tls, pem, &mut ca_seen);
        }
        if let Some(text) = files.policy {
            reload_policy(&config, &state, text, &mut policy_seen);
        }
        if let Some(read) = files.catalog {
            reload_catalog(&config, &state, read, &mut catalog_seen).await;
        }
    }
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + b.len() + 1);
    out.extend_from_slice(a);
    out.push(0);
    out.extend_from_slice(b);
    out
}

async fn reload_certificate(
    config: &Config,
    state: &AppState,
    certs: &SwappableCert,
    (mut cert, key): (Vec<u8>, Vec<u8>),
    seen: &mut Seen,
) {
    if !seen.is_new(&concat(&cert, &key)) {
        return;
    }
    let mut attempt = config.tls.build(&cert, &key);
    let mut contents = concat(&cert, &key);
    if attempt.is_err() {
        // A rotation writes two files; give a half-written pair a moment before judging.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some((cert2, key2)) = read_pair(&config.tls).await {
            contents = concat(&cert2, &key2);
            attempt = config.tls.build(&cert2, &key2);
            // The expiry below must be read from the certificate actually installed.
            cert = cert2;
        }
    }
    match attempt {
        Ok(pair) => {
            certs.store(Arc::new(pair));
            let expiry = crate::certs::cert_not_after(&String::from_utf8_lossy(&cert)).ok();
            if let Some(expiry) = expiry {
                state.metrics.set_cert_expiry(expiry);
            }
            tracing::info!(cert = %config.tls.cert.display(), expiry = ?expiry, "serving certificate reloaded");
            seen.settle(state, Reloaded::Certificate, &contents, true);
        }
        Err(err) => {
            tracing::error!(error = %err, "new certificate refused; still serving the previous one");
            seen.settle(state, Reloaded::Certificate, &contents, false);
        }
    }
}

fn reload_client_ca(config: &Config, state: &AppState, tls: &Tls, pem: Vec<u8>, seen: &mut Seen) {
    let Some(path) = &config.client_ca else {
        return;
    };
    if !seen.is_new(&pem) {
        return;
    }
    match crate::tls::server_config_with_ca(tls.certs.clone(), Some((path, &pem))) {
        Ok(server_config) => {
            tls.config.store(Arc::new(server_config));
            tracing::info!(client_ca = %path.display(), "client CA reloaded; new connections are verified against it");
            seen.settle(state, Reloaded::ClientCa, &pem, true);
        }
        Err(err) => {
            tracing::error!(error = %err, "new client CA refused; the previous one stays in force");
            seen.settle(state, Reloaded::ClientCa, &pem, false);
        }
    }
}

fn reload_policy(config: &Config, state: &AppState, text: Vec<u8>, seen: &mut Seen) {
    let Some(path) = &config.policy else {
        return;
    };
    if !seen.is_new(&text) {
        return;
    }
    let parsed = parse_policy(path, &text).map(|file| {
        // On the catalog in force, which a catalog reload may have replaced.
        let snapshot = state.policy.load().engine.catalog().snapshot().clone();
        ActivePolicy::with_snapshot(file, config.mode, snapshot)
    });
    match parsed {
        Ok(policy) => {
            tracing::info!(policy = %path.display(), mode = %policy.mode, "policy reloaded");
            state.policy.store(Arc::new(policy));
            seen.settle(state, Reloaded::Config, &text, true);
        }
        Err(err) => {
            tracing::error!(error = %format_args!("{:#}", anyhow::Error::new(err)), "new policy refused; the previous one stays in force");
            seen.settle(state, Reloaded::Config, &text, false);
        }
    }
}

async fn reload_catalog(
    config: &Config,
    state: &AppState,
    read: Result<Vec<u8>, String>,
    seen: &mut Seen,
) {
    let Some(path) = &config.catalog else {
        return;
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(too_large) => {
            // Remembered by its error message rather than its bytes: refused and
            // counted once, not every tick, and never held in memory.
            let marker = too_large.as_bytes().to_vec();
            if seen.is_new(&marker) {
                tracing::error!(error = %too_large, "new catalog refused; the previous one stays in force");
                seen.settle(state, Reloaded::Catalog, &marker, false);
            }
            return;
        }
    };
    if !seen.is_new(&bytes) {
        return;
    }
    // A 1 MiB export parses in milliseconds: on the blocking pool, not a runtime worker.
    let parsed = {
        let (path, bytes) = (path.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || parse_catalog(&path, &bytes)).await
    };
    match parsed {
        Ok(Ok(snapshot)) => {
            // Under the policy in force, which a policy reload may have replaced.
            let policy = state.policy.load().on_catalog(snapshot);
            let catalog = policy.engine.catalog();
            tracing::info!(
                catalog = %path.display(),
                snapshot = catalog.snapshot_date(),
                repositories = catalog.counts().repositories,
                "catalog reloaded"
            );
            state.metrics.set_catalog(catalog);
            state.policy.store(Arc::new(policy));
            seen.settle(state, Reloaded::Catalog, &bytes, true);
        }
        Ok(Err(err)) => {
            tracing::error!(error = %format_args!("{:#}", anyhow::Error::new(err)), "new catalog refused; the previous one stays in force");
            seen.settle(state, Reloaded::Catalog, &bytes, false);
        }
        Err(join) => {
            // The parse panicked or was cancelled: not judged, tried again next tick.
            tracing::error!(error = %join, "catalog reload failed; the previous one stays in force");
        }
    }
}
