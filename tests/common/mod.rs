//! Test harness: certificates and policy in a temporary directory, the server in
//! process (on its own runtime, stopped by a oneshot) or as the real binary, TLS
//! clients over HTTP/1.1 and HTTP/2, raw sockets for hostile input, and a reader for
//! the Prometheus exposition.
//!
//! Every network operation is bounded by [`IO_TIMEOUT`]; every wait for a condition
//! polls it with [`eventually`] instead of sleeping a guessed time.

#![allow(dead_code)]

pub mod app;
pub mod expect;
pub mod fixtures;

pub use fixtures::*;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use dhi_admission::certs::GeneratedCerts;
use dhi_admission::config::{Config, Limits};
use dhi_admission::server::Server;
use dhi_admission::tls::KeyPairPaths;
use dhi_policy::Mode;
use http::{HeaderMap, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

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

// ===== trust: the CAs a client accepts =====

/// The CA certificates clients trust. Every generated pair has its own CA, so a
/// rotation adds the new CA here *before* the server can serve the new certificate.
///
/// Verification looks the set up when the server's certificate arrives (not when the
/// connection starts), so a connection racing a rotation verifies against every CA
/// trusted by then. It is full WebPKI verification against these CAs, nothing less.
#[derive(Clone, Default)]
pub struct Trust {
    inner: Arc<Mutex<TrustInner>>,
}

#[derive(Default)]
struct TrustInner {
    cas: Vec<CertificateDer<'static>>,
    verifier: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    configs: HashMap<Vec<Vec<u8>>, Arc<ClientConfig>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Trust {
    /// Trusts the CA in `pem` from now on.
    pub fn add_ca_pem(&self, pem: &str) {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("CA PEM");
        let mut inner = self.inner.lock().unwrap();
        inner.cas.push(der);
        inner.verifier = None;
    }

    /// A WebPKI verifier for the CAs trusted right now.
    fn current_verifier(&self) -> Arc<rustls::client::WebPkiServerVerifier> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(verifier) = &inner.verifier {
            return verifier.clone();
        }
        let mut roots = rustls::RootCertStore::empty();
        for ca in &inner.cas {
            roots.add(ca.clone()).expect("add CA");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .expect("verifier");
        inner.verifier = Some(verifier.clone());
        verifier
    }

    /// A client configuration (TLS 1.3 and 1.2, no session resumption so that every
    /// new connection sees the certificate served at that moment) offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let key: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        if let Some(config) = self.inner.lock().unwrap().configs.get(&key) {
            return config.clone();
        }
        let config =
            self.client_config_versions(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12]);
        self.inner
            .lock()
            .unwrap()
            .configs
            .insert(key, config.clone());
        config
    }

    /// Like [`Trust::client_config`], presenting a client certificate.
    pub fn client_config_with_cert(
        &self,
        alpn: &[&[u8]],
        cert_pem: &str,
        key_pem: &str,
    ) -> Arc<ClientConfig> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("client certificate PEM");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .expect("client key PEM");
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LiveVerifier {
                trust: self.clone(),
            }))
            .with_client_auth_cert(chain, key)
            .expect("client certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// Like [`Trust::client_config`] with explicit protocol versions.
    pub fn client_config_versions(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LiveVerifier {
                trust: self.clone(),
            }))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// Verifies against the CAs trusted when the certificate arrives.
#[derive(Debug)]
struct LiveVerifier {
    trust: Trust,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trust({} CAs)", self.inner.lock().unwrap().cas.len())
    }
}

impl rustls::client::danger::ServerCertVerifier for LiveVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.trust.current_verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ===== certificates and policy on disk =====

/// How the serving certificate is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertLayout {
    /// `tls.crt` and `tls.key`, replaced by writing a temporary file and renaming it.
    Files,
    /// Like a kubelet Secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<gen>`,
    /// rotated by building a new `..<gen>` directory and renaming a symlink over `..data`.
    Kubelet,
}

/// Certificates and policy in a temporary directory, and the clients' trust.
pub struct Material {
    /// The directory (removed on drop).
    pub dir: TempDir,
    /// How certificates are written.
    pub layout: CertLayout,
    /// The path the server reads the certificate from.
    pub cert_path: PathBuf,
    /// The path the server reads the key from.
    pub key_path: PathBuf,
    /// The policy file.
    pub policy_path: PathBuf,
    /// CAs the clients accept.
    pub trust: Trust,
    current: Mutex<GeneratedCerts>,
    generation: AtomicU64,
}

/// A fresh CA and serving certificate for `localhost`/`127.0.0.1`, valid `days` days.
pub fn generate_certs(days: u64) -> GeneratedCerts {
    dhi_admission::certs::generate_pair(
        &["localhost".to_owned()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Duration::from_secs(days * 24 * 3600),
    )
    .expect("generate_pair")
}

/// Writes `contents` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, contents).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

impl Material {
    /// A directory with a fresh certificate (valid 30 days) and `policy`.
    pub fn new(layout: CertLayout, policy: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dhi-admission-test-")
            .tempdir()
            .expect("tempdir");
        let certs = generate_certs(30);
        let material = Self {
            cert_path: dir.path().join("tls.crt"),
            key_path: dir.path().join("tls.key"),
            policy_path: dir.path().join("policy.yaml"),
            layout,
            trust: Trust::default(),
            current: Mutex::new(certs.clone()),
            generation: AtomicU64::new(0),
            dir,
        };
        material.install(&certs);
        if layout == CertLayout::Kubelet {
            for name in ["tls.crt", "tls.key"] {
                std::os::unix::fs::symlink(
                    format!("..data/{name}"),
                    material.dir.path().join(name),
                )
                .expect("symlink");
            }
        }
        material.write_policy(policy);
        material
    }

    /// The pair being served (last installed).
    pub fn current(&self) -> GeneratedCerts {
        self.current.lock().unwrap().clone()
    }

    /// Trusts the pair's CA, then writes the pair where the server reads it.
    pub fn install(&self, certs: &GeneratedCerts) {
        self.trust.add_ca_pem(&certs.ca_cert_pem);
        self.write_pems(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes());
        *self.current.lock().unwrap() = certs.clone();
    }

    /// Writes certificate and key PEM as they are (a mismatched pair, garbage...).
    pub fn write_pems(&self, cert_pem: &[u8], key_pem: &[u8]) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        match self.layout {
            CertLayout::Files => {
                // Key first, then certificate: the order cert-manager and `certs` use.
                write_atomic(&self.key_path, key_pem);
                write_atomic(&self.cert_path, cert_pem);
            }
            CertLayout::Kubelet => {
                let root = self.dir.path();
                let data = root.join(format!("..gen_{generation:05}"));
                std::fs::create_dir(&data).expect("create data dir");
                std::fs::write(data.join("tls.crt"), cert_pem).expect("write cert");
                std::fs::write(data.join("tls.key"), key_pem).expect("write key");
                let link = root.join("..data");
                let old = std::fs::read_link(&link).ok();
                let tmp = root.join("..data_tmp");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).expect("symlink");
                std::fs::rename(&tmp, &link).expect("swap ..data");
                if let Some(old) = old {
                    let _ = std::fs::remove_dir_all(root.join(old));
                }
            }
        }
    }

    /// Generates a new pair (valid 30 + n days, so each has its own notAfter), trusts
    /// its CA and installs it.
    pub fn rotate(&self) -> GeneratedCerts {
        let days = 30 + self.generation.load(Ordering::SeqCst) % 300;
        let certs = generate_certs(days);
        self.install(&certs);
        certs
    }

    /// Where `--client-ca` is written.
    pub fn client_ca_path(&self) -> PathBuf {
        self.dir.path().join("client-ca.pem")
    }

    /// Replaces the policy file atomically.
    pub fn write_policy(&self, yaml: &str) {
        write_atomic(&self.policy_path, yaml.as_bytes());
    }
}

/// A client CA and a client certificate it signed (`clientAuth`): CA PEM, chain PEM
/// (leaf first), key PEM.
pub fn generate_client_ca_and_cert(name: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} client CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{name} kube-apiserver"));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    )
}

// ===== certificate facts =====

/// Serial number (big-endian bytes) of a DER certificate.
pub fn serial_of_der(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    cert.raw_serial().to_vec()
}

/// Serial of the first certificate of a PEM chain.
pub fn serial_of_pem(pem: &str) -> Vec<u8> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM");
    serial_of_der(&der)
}

/// notAfter (Unix seconds) of the first certificate of a PEM chain, read with
/// x509-parser (independently of the server's own code).
pub fn not_after_of_pem(pem: &str) -> i64 {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse certificate");
    cert.validity().not_after.timestamp()
}

// ===== the server in process =====

/// How to start the in-process server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Policy file contents (the file always exists, so policy reloads can be tested).
    pub policy: String,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// Limits.
    pub limits: Limits,
    /// Reload polling interval.
    pub reload_interval: Duration,
    /// Certificate layout.
    pub layout: CertLayout,
    /// Bind, then wait for [`TestServer::release`] before calling `serve`.
    pub hold_serve: bool,
    /// `--client-ca`: PEM written to `client-ca.pem` in the material directory.
    pub client_ca: Option<String>,
}

/// The default limits with a short shutdown grace, so tests end quickly.
pub fn test_limits() -> Limits {
    Limits {
        shutdown_grace: Duration::from_secs(5),
        ..Limits::default()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            policy: DEFAULT_POLICY.to_owned(),
            mode: None,
            limits: test_limits(),
            reload_interval: Duration::from_millis(100),
            layout: CertLayout::Files,
            hold_serve: false,
            client_ca: None,
        }
    }
}

/// The server running in this process, on its own runtime thread.
pub struct TestServer {
    /// TLS webhook address.
    pub addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// Certificates, policy and trust.
    pub material: Material,
    /// The configuration it was started with.
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    go: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Lets a server started with `hold_serve` call `serve`.
    pub fn release(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    /// Starts with [`ServerOptions::default`].
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    /// Writes certificates and policy, builds a literal [`Config`] on 127.0.0.1:0 and
    /// starts `Server::bind` + `serve` on a dedicated two-thread runtime.
    pub async fn start_with(opts: ServerOptions) -> Self {
        init_test_logging();
        let material = Material::new(opts.layout, &opts.policy);
        let client_ca = opts.client_ca.as_ref().map(|pem| {
            let path = material.client_ca_path();
            write_atomic(&path, pem.as_bytes());
            path
        });
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            tls: KeyPairPaths {
                cert: material.cert_path.clone(),
                key: material.key_path.clone(),
            },
            client_ca,
            policy: Some(material.policy_path.clone()),
            mode: opts.mode,
            limits: opts.limits,
            reload_interval: opts.reload_interval,
        };
        let (addr_tx, addr_rx) = oneshot::channel::<Result<(SocketAddr, SocketAddr), String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let hold = opts.hold_serve;
        let server_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("dhi-test-server".to_owned())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("dhi-test-server-worker")
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let server = match Server::bind(server_config).await {
                        Ok(server) => server,
                        Err(err) => {
                            let _ = addr_tx.send(Err(format!("{err:#}")));
                            return Err(err);
                        }
                    };
                    let addrs = (server.local_addr()?, server.metrics_addr()?);
                    let _ = addr_tx.send(Ok(addrs));
                    if hold {
                        let _ = go_rx.await;
                    }
                    // Stops when told to, or when the TestServer is dropped.
                    server
                        .serve(async move {
                            let _ = stop_rx.await;
                        })
                        .await
                })
            })
            .expect("spawn server thread");
        let (addr, metrics_addr) = bounded("server bind", addr_rx)
            .await
            .expect("server thread ended before binding")
            .unwrap_or_else(|err| panic!("Server::bind failed: {err}"));
        let server = Self {
            addr,
            metrics_addr,
            material,
            config,
            stop: Some(stop_tx),
            go: Some(go_tx),
            thread: Some(thread),
        };
        if !hold {
            // `serve` turns ready after `bind` returned the addresses: wait for it, as
            // kube-apiserver's endpoints would, so no test races the start.
            let deadline = Instant::now() + Duration::from_secs(10);
            while http_get(metrics_addr, "/readyz")
                .await
                .ok()
                .map(|(status, _)| status)
                != Some(200)
            {
                assert!(Instant::now() < deadline, "the server never became ready");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        server
    }

    /// A cheap handle for clients (cloneable into tasks).
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            metrics_addr: self.metrics_addr,
            trust: self.material.trust.clone(),
        }
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.trigger_shutdown();
        self.shutdown_inner().await
    }

    /// Triggers shutdown without waiting.
    pub fn trigger_shutdown(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits (bounded) for the server thread to finish after [`Self::trigger_shutdown`].
    pub async fn join(mut self) -> anyhow::Result<()> {
        self.shutdown_inner().await
    }

    async fn shutdown_inner(&mut self) -> anyhow::Result<()> {
        let thread = self.thread.take().expect("thread");
        let joined = tokio::time::timeout(
            IO_TIMEOUT,
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .expect("server did not stop within the timeout")
        .expect("join task");
        match joined {
            Ok(result) => result,
            Err(_) => anyhow::bail!("server thread panicked"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::ops::Deref for TestServer {
    type Target = Material;
    fn deref(&self) -> &Material {
        &self.material
    }
}

// ===== the real binary =====

/// How to start the real binary.
#[derive(Debug, Clone)]
pub struct BinaryOptions {
    /// Policy file contents.
    pub policy: String,
    /// Certificate layout.
    pub layout: CertLayout,
    /// `--reload-interval-ms`.
    pub reload_interval_ms: u64,
    /// `--shutdown-grace-seconds`.
    pub shutdown_grace_seconds: u64,
    /// `--max-body-bytes`.
    pub max_body_bytes: Option<usize>,
    /// `--log-level`.
    pub log_level: String,
    /// More `serve` flags (`--idle-timeout-seconds 3`, ...).
    pub extra_args: Vec<String>,
}

impl Default for BinaryOptions {
    fn default() -> Self {
        Self {
            policy: DEFAULT_POLICY.to_owned(),
            layout: CertLayout::Files,
            reload_interval_ms: 100,
            shutdown_grace_seconds: 10,
            max_body_bytes: None,
            log_level: "warn".to_owned(),
            extra_args: Vec::new(),
        }
    }
}

/// `dhi-admission serve` as a child process.
pub struct BinaryServer {
    /// TLS webhook address.
    pub addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// Certificates, policy and trust.
    pub material: Material,
    child: Child,
    log_path: PathBuf,
}

/// The binary under test: the one Cargo built for this test run, or the one named by
/// `DHI_ADMISSION_BIN` (to soak a release build: `cargo build --release`, then
/// `DHI_ADMISSION_BIN=target/release/dhi-admission DHI_SOAK_SECONDS=600 cargo test --test soak`).
pub fn binary_path() -> PathBuf {
    match std::env::var_os("DHI_ADMISSION_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_dhi-admission")),
    }
}

/// A port free right now on 127.0.0.1 (the binary binds it a moment later; a clash
/// makes it exit, and [`BinaryServer::spawn`] tries again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl BinaryServer {
    /// Spawns the binary on free ports and waits until `/readyz` answers 200.
    pub async fn spawn(opts: BinaryOptions) -> Self {
        let material = Material::new(opts.layout, &opts.policy);
        let mut last_log = String::new();
        for attempt in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log_path = material.dir.path().join(format!("server-{attempt}.log"));
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut cmd = Command::new(binary_path());
            cmd.arg("--log-level")
                .arg(&opts.log_level)
                .arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--metrics-listen")
                .arg(metrics_addr.to_string())
                .arg("--tls-cert")
                .arg(&material.cert_path)
                .arg("--tls-key")
                .arg(&material.key_path)
                .arg("--config")
                .arg(&material.policy_path)
                .arg("--reload-interval-ms")
                .arg(opts.reload_interval_ms.to_string())
                .arg("--shutdown-grace-seconds")
                .arg(opts.shutdown_grace_seconds.to_string());
            if let Some(max) = opts.max_body_bytes {
                cmd.arg("--max-body-bytes").arg(max.to_string());
            }
            cmd.args(&opts.extra_args);
            // The DHI_* environment of whoever runs the tests must not leak in.
            for (key, _) in std::env::vars() {
                if key.starts_with("DHI_") {
                    cmd.env_remove(key);
                }
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn dhi-admission");
            let deadline = Instant::now() + Duration::from_secs(60);
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false; // exited: a port clash or a real failure; see the log
                }
                if let Ok((200, _)) = http_get(metrics_addr, "/readyz").await {
                    break true;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the binary did not become ready in 60 s; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if ready {
                return Self {
                    addr,
                    metrics_addr,
                    material,
                    child,
                    log_path,
                };
            }
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("the binary never started; last log:\n{last_log}");
    }

    /// A cheap handle for clients.
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            metrics_addr: self.metrics_addr,
            trust: self.material.trust.clone(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as the kubelet does.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Polls until the process exits, for at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Current resident set of the process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(Some(self.pid()), "VmRSS")
    }

    /// Peak resident set of the process, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(Some(self.pid()), "VmHWM")
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        // Only our own child, by its handle.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl std::ops::Deref for BinaryServer {
    type Target = Material;
    fn deref(&self) -> &Material {
        &self.material
    }
}

/// A field of `/proc/<pid>/status` (or `/proc/self/status`) in KiB.
pub fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

// ===== clients =====

/// Addresses and trust: everything a client needs, cheap to clone into tasks.
#[derive(Clone)]
pub struct Target {
    /// TLS webhook address.
    pub addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// CAs to accept.
    pub trust: Trust,
}

/// HTTP version of a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 with keep-alive.
    H1,
    /// HTTP/2.
    H2,
}

impl Proto {
    /// The ALPN protocol id.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Self::H1 => b"http/1.1",
            Self::H2 => b"h2",
        }
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// Aborts the connection driver when the last handle goes.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One client connection (TLS, then HTTP/1.1 or HTTP/2), kept until dropped.
pub struct Conn {
    sender: Sender,
    driver: Arc<Driver>,
    /// The negotiated protocol.
    pub proto: Proto,
    /// Serial of the certificate the server presented on this connection.
    pub peer_serial: Vec<u8>,
    /// The negotiated TLS version.
    pub tls_version: Option<rustls::ProtocolVersion>,
    authority: String,
    /// Requests answered on this connection.
    pub answered: u64,
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Target {
    /// A TLS connection to the webhook port offering `alpn`.
    pub async fn tls(&self, alpn: &[&[u8]]) -> io::Result<TlsStream<TcpStream>> {
        self.tls_with(self.trust.client_config(alpn)).await
    }

    /// A TLS connection with an explicit client configuration.
    pub async fn tls_with(&self, config: Arc<ClientConfig>) -> io::Result<TlsStream<TcpStream>> {
        let connect = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost").unwrap();
            TlsConnector::from(config).connect(name, tcp).await
        };
        tokio::time::timeout(IO_TIMEOUT, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS connect timed out"))?
    }

    /// A new connection speaking `proto`; errors are returned (for load tests).
    pub async fn try_connect(&self, proto: Proto) -> io::Result<Conn> {
        self.try_connect_with(proto, self.trust.client_config(&[proto.alpn()]), None)
            .await
    }

    /// An HTTP/2 connection whose client pings the server every `every`, idle or not,
    /// and answers the server's pings (hyper always does): the traffic that must not
    /// keep an idle connection open.
    pub async fn h2_pinging(&self, every: Duration) -> Conn {
        self.try_connect_with(
            Proto::H2,
            self.trust.client_config(&[Proto::H2.alpn()]),
            Some(every),
        )
        .await
        .unwrap_or_else(|err| panic!("connect pinging HTTP/2 to {}: {err}", self.addr))
    }

    /// A new connection with an explicit TLS client configuration (client
    /// certificates); `ping_every` makes an HTTP/2 client ping even when idle.
    pub async fn try_connect_with(
        &self,
        proto: Proto,
        config: Arc<ClientConfig>,
        ping_every: Option<Duration>,
    ) -> io::Result<Conn> {
        let tls = self.tls_with(config).await?;
        let (_, session) = tls.get_ref();
        let negotiated = session.alpn_protocol().map(<[u8]>::to_vec);
        if negotiated.as_deref() != Some(proto.alpn()) {
            return Err(io::Error::other(format!(
                "ALPN: asked {:?}, got {:?}",
                String::from_utf8_lossy(proto.alpn()),
                negotiated.map(|p| String::from_utf8_lossy(&p).into_owned())
            )));
        }
        let peer_serial = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|der| serial_of_der(der))
            .ok_or_else(|| io::Error::other("no peer certificate"))?;
        let tls_version = session.protocol_version();
        let io = TokioIo::new(tls);
        let (sender, driver) = match proto {
            Proto::H1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(io::Error::other)?;
                (
                    Sender::H1(sender),
                    Driver(tokio::spawn(async move {
                        let _ = conn.await;
                    })),
                )
            }
            Proto::H2 => {
                let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
                if let Some(every) = ping_every {
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(every)
                        .keep_alive_timeout(IO_TIMEOUT)
                        .keep_alive_while_idle(true);
                }
                let (sender, conn) = builder.handshake(io).await.map_err(io::Error::other)?;
                (
                    Sender::H2(sender),
                    Driver(tokio::spawn(async move {
                        let _ = conn.await;
                    })),
                )
            }
        };
        Ok(Conn {
            sender,
            driver: Arc::new(driver),
            proto,
            peer_serial,
            tls_version,
            authority: format!("localhost:{}", self.addr.port()),
            answered: 0,
        })
    }

    /// A new connection speaking `proto`.
    pub async fn connect(&self, proto: Proto) -> Conn {
        self.try_connect(proto)
            .await
            .unwrap_or_else(|err| panic!("connect {proto:?} to {}: {err}", self.addr))
    }

    /// A new HTTP/1.1 connection.
    pub async fn h1(&self) -> Conn {
        self.connect(Proto::H1).await
    }

    /// A new HTTP/2 connection.
    pub async fn h2(&self) -> Conn {
        self.connect(Proto::H2).await
    }

    /// POSTs `body` as JSON on a new HTTP/1.1 connection.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.h1().await.post(path, body).await
    }

    /// POSTs a review on a new HTTP/1.1 connection.
    pub async fn post_json(&self, path: &str, review: &Value) -> Reply {
        self.post(path, serde_json::to_vec(review).unwrap()).await
    }

    /// GET on the metrics port.
    pub async fn get_metrics_port(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr, path)
            .await
            .unwrap_or_else(|err| panic!("GET {path} on {}: {err}", self.metrics_addr))
    }

    /// The Prometheus exposition.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.get_metrics_port("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }
}

impl Conn {
    /// Sends one request; the error is returned (for load tests).
    pub async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Reply, String> {
        let uri = match self.proto {
            Proto::H1 => path.to_owned(),
            Proto::H2 => format!("https://{}{path}", self.authority),
        };
        let mut builder = Request::builder().method(method).uri(uri);
        if self.proto == Proto::H1 {
            builder = builder.header(header::HOST, &self.authority);
        }
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = match &mut self.sender {
                Sender::H1(sender) => {
                    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                    sender.send_request(request).await
                }
                Sender::H2(sender) => {
                    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                    sender.send_request(request).await
                }
            }
            .map_err(|e| format!("send: {e}"))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        let reply = tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {IO_TIMEOUT:?}"))??;
        self.answered += 1;
        Ok(reply)
    }

    /// Sends one request; panics on transport errors.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let proto = self.proto;
        self.try_send(method.clone(), path, content_type, body.into())
            .await
            .unwrap_or_else(|err| panic!("{method} {path} over {proto:?}: {err}"))
    }

    /// POSTs `body` as `application/json`.
    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Method::POST, path, Some(JSON), body).await
    }

    /// POSTs a review.
    pub async fn post_json(&mut self, path: &str, review: &Value) -> Reply {
        self.post(path, serde_json::to_vec(review).unwrap()).await
    }

    /// True once the connection is closed (its driver task ended).
    pub fn is_closed(&self) -> bool {
        self.driver.0.is_finished()
    }

    /// Another handle on the same HTTP/2 connection, for concurrent streams.
    pub fn stream(&self) -> Conn {
        let Sender::H2(sender) = &self.sender else {
            panic!("only HTTP/2 connections carry concurrent streams");
        };
        Conn {
            sender: Sender::H2(sender.clone()),
            driver: self.driver.clone(),
            proto: self.proto,
            peer_serial: self.peer_serial.clone(),
            tls_version: self.tls_version,
            authority: self.authority.clone(),
            answered: 0,
        }
    }

    /// Polls until the connection is closed; false if it is still open after `within`.
    pub async fn wait_closed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.is_closed() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

// ===== answers =====

/// The `response` of an AdmissionReview answer, decoded.
#[derive(Debug, Clone)]
pub struct Review {
    /// `response.uid`
    pub uid: String,
    /// `response.allowed`
    pub allowed: bool,
    /// `response.status`, when present.
    pub status: Option<Value>,
    /// `response.patch`, base64-decoded and parsed.
    pub patch: Option<Value>,
    /// `response.patchType`
    pub patch_type: Option<String>,
    /// `response.warnings`
    pub warnings: Vec<String>,
    /// `response.auditAnnotations`
    pub audit_annotations: BTreeMap<String, String>,
    /// The whole answer.
    pub raw: Value,
}

impl Review {
    /// `status.code`
    pub fn code(&self) -> Option<u64> {
        self.status.as_ref()?.get("code")?.as_u64()
    }

    /// `status.message`
    pub fn message(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Checks an AdmissionReview answer: HTTP 200, JSON content type, `apiVersion`
    /// and `kind` echoed, accepted by kube's own types; returns the response decoded.
    pub fn review(&self) -> Review {
        assert_eq!(
            self.status,
            200,
            "expected an AdmissionReview (200), got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some(JSON));
        let raw = self.json();
        assert_eq!(raw["apiVersion"], "admission.k8s.io/v1", "{raw}");
        assert_eq!(raw["kind"], "AdmissionReview", "{raw}");
        assert!(
            raw.get("request").is_none(),
            "the answer must not echo the request: {raw}"
        );
        let response = &raw["response"];
        let keys: Vec<&str> = response
            .as_object()
            .expect("response object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in &keys {
            assert!(
                [
                    "uid",
                    "allowed",
                    "status",
                    "patch",
                    "patchType",
                    "warnings",
                    "auditAnnotations"
                ]
                .contains(key),
                "unexpected response field {key}: {raw}"
            );
        }
        let patch_type = response
            .get("patchType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let patch = response.get("patch").map(|p| {
            let b64 = p.as_str().expect("patch is a base64 string");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("patch is base64");
            serde_json::from_slice::<Value>(&bytes).expect("patch is JSON")
        });
        assert_eq!(
            patch.is_some(),
            patch_type.is_some(),
            "patch and patchType go together: {raw}"
        );
        if let Some(pt) = &patch_type {
            assert_eq!(pt, "JSONPatch");
        }
        let review = Review {
            uid: response["uid"].as_str().expect("uid").to_owned(),
            allowed: response["allowed"].as_bool().expect("allowed"),
            status: response.get("status").cloned(),
            patch,
            patch_type,
            warnings: response
                .get("warnings")
                .map(|w| {
                    w.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            audit_annotations: response
                .get("auditAnnotations")
                .map(|a| serde_json::from_value(a.clone()).expect("auditAnnotations map"))
                .unwrap_or_default(),
            raw: raw.clone(),
        };
        if !review.allowed {
            assert!(review.status.is_some(), "a refusal carries a status: {raw}");
        }
        assert_kube_compatible(&self.body, &review);
        review
    }

    /// Checks a plain HTTP error: `metav1.Status` with `code` equal to the HTTP status.
    pub fn status_doc(&self, code: u16) -> Value {
        assert_eq!(
            self.status,
            code,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some(JSON));
        let doc = self.json();
        assert_eq!(doc["apiVersion"], "v1", "{doc}");
        assert_eq!(doc["kind"], "Status", "{doc}");
        assert_eq!(doc["status"], "Failure", "{doc}");
        assert_eq!(doc["code"], code, "{doc}");
        assert!(
            doc["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{doc}"
        );
        assert!(
            doc["reason"].as_str().is_some_and(|m| !m.is_empty()),
            "{doc}"
        );
        let status: kube::core::Status = serde_json::from_value(doc.clone()).expect("kube Status");
        assert_eq!(status.code, code);
        doc
    }
}

/// Decodes the answer with kube's own `AdmissionReview<DynamicObject>`.
///
/// kube's `AdmissionResponse` is written for producing answers, and its `Deserialize`
/// is stricter than kube-apiserver in two ways that have nothing to do with our wire
/// format: `status` is required (the API server's `Status` is an optional pointer), and
/// `patch` is a `Vec<u8>` that serde_json reads only from an array of numbers, while
/// the API server's `[]byte` is base64 (which is what kube-apiserver documents and what
/// we send). Those two fields are normalised first — `status: {}` when absent and the
/// decoded patch bytes as an array — and everything else is decoded as sent.
pub fn assert_kube_compatible(body: &[u8], review: &Review) {
    use kube::core::DynamicObject;
    use kube::core::admission::AdmissionReview;
    let mut doc: Value = serde_json::from_slice(body).unwrap();
    let response = doc["response"].as_object_mut().unwrap();
    response
        .entry("status")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(patch) = response.get_mut("patch") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().unwrap())
            .unwrap();
        *patch = Value::from(bytes);
    }
    let kube_review: AdmissionReview<DynamicObject> =
        serde_json::from_value(doc).unwrap_or_else(|err| {
            panic!(
                "kube cannot read the answer ({err}): {}",
                String::from_utf8_lossy(body)
            )
        });
    assert_eq!(kube_review.types.api_version, "admission.k8s.io/v1");
    assert_eq!(kube_review.types.kind, "AdmissionReview");
    let response = kube_review.response.expect("kube: response");
    assert_eq!(response.uid, review.uid);
    assert_eq!(response.allowed, review.allowed);
    assert_eq!(
        response.warnings.clone().unwrap_or_default(),
        review.warnings
    );
    let annotations: BTreeMap<String, String> =
        response.audit_annotations.clone().into_iter().collect();
    assert_eq!(annotations, review.audit_annotations);
    if let Some(status) = &review.status {
        assert_eq!(
            u64::from(response.result.code),
            status["code"].as_u64().unwrap()
        );
        assert_eq!(response.result.message, status["message"].as_str().unwrap());
        assert_eq!(response.result.reason, status["reason"].as_str().unwrap());
    }
    if let Some(patch) = &review.patch {
        let bytes = response.patch.as_ref().expect("kube: patch");
        let ops: json_patch::Patch =
            serde_json::from_slice(bytes).expect("kube: patch is a JSON Patch");
        assert_eq!(serde_json::to_value(&ops).unwrap(), *patch);
    }
}

/// Applies a JSON Patch to an object, as kube-apiserver does.
pub fn apply_patch(object: &Value, patch: &Value) -> Value {
    let mut patched = object.clone();
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).expect("valid JSON Patch");
    json_patch::patch(&mut patched, &ops).expect("patch applies to the object");
    patched
}

// ===== raw sockets =====

/// A raw HTTP/1.x answer read off a socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value (first occurrence).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// As a [`Reply`] (for the same assertions as client answers).
    pub fn to_reply(&self) -> Reply {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        Reply {
            status: self.status,
            headers,
            body: Bytes::from(self.body.clone()),
        }
    }
}

/// Bytes of an HTTP/1.1 request with `Host`, the given headers and the body.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A JSON POST as raw bytes, with `Content-Length`.
pub fn raw_post(path: &str, body: &[u8]) -> Vec<u8> {
    raw_request(
        "POST",
        path,
        &[
            ("content-type", JSON.to_owned()),
            ("content-length", body.len().to_string()),
        ],
        body,
    )
}

/// Reads one HTTP/1.x response (Content-Length, chunked, or until EOF).
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<RawResponse> {
    tokio::time::timeout(IO_TIMEOUT, read_response_inner(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response"))?
}

async fn read_response_inner<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before a full response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if status == 100 {
        // An interim answer: hand back what we have; the caller reads again.
        return Ok(RawResponse {
            version,
            status,
            headers,
            body: rest,
        });
    }
    let body = if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(io::Error::other)?;
        while rest.len() < len {
            let mut chunk = vec![0u8; (len - rest.len()).min(65536)];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body cut short",
                ));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            while find(&rest, b"\r\n").is_none() {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunked body cut short",
                    ));
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            let line_end = find(&rest, b"\r\n").unwrap();
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .map_err(io::Error::other)?;
            rest.drain(..line_end + 2);
            while rest.len() < size + 2 {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunk cut short",
                    ));
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
        body
    } else {
        stream.read_to_end(&mut rest).await?;
        rest
    };
    Ok(RawResponse {
        version,
        status,
        headers,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `request` and reads one response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> io::Result<RawResponse> {
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(request))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??;
    stream.flush().await?;
    read_response(stream).await
}

/// How a connection ended when read until it closed.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Clean EOF after these bytes.
    Eof(Vec<u8>),
    /// An error (reset, TLS error...) after these bytes.
    Error(Vec<u8>, String),
    /// Still open after the time allowed, with these bytes read.
    StillOpen(Vec<u8>),
}

impl Ending {
    /// Bytes received before the end.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Eof(b) | Self::Error(b, _) | Self::StillOpen(b) => b,
        }
    }

    /// The connection was closed (cleanly or not).
    pub fn closed(&self) -> bool {
        !matches!(self, Self::StillOpen(_))
    }
}

/// Reads until EOF or error, for at most `within`.
pub async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Ending {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Ending::StillOpen(got),
            Ok(Ok(0)) => return Ending::Eof(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => return Ending::Error(got, err.to_string()),
        }
    }
}

/// GET over plain HTTP (the metrics port): status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let get = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        let response = exchange(&mut tcp, request.as_bytes()).await?;
        Ok((
            response.status,
            String::from_utf8_lossy(&response.body).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "GET timed out"))?
}

// ===== Prometheus text =====

/// The value of the sample `name{labels}` with exactly these labels (any order).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    samples(text)
        .into_iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| v)
}

/// Like [`metric`], 0 when the sample is absent (counters appear on first increment).
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

/// The sum of every sample of `name`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// One sample of the exposition: name, labels sorted by name, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Every sample: name, sorted labels, value.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').expect("closing brace");
                (
                    &line[..open],
                    parse_labels(&line[open + 1..close]),
                    &line[close + 1..],
                )
            }
            None => {
                let (name, rest) = line.split_once(' ').expect("sample value");
                (name, Vec::new(), rest)
            }
        };
        let value = rest.split_whitespace().next().expect("value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
        };
        out.push((name.to_owned(), labels, value));
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        chars.next(); // '='
        assert_eq!(
            chars.next(),
            Some('"'),
            "label value must be quoted in {s:?}"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_owned(), value));
    }
    out.sort();
    out
}
