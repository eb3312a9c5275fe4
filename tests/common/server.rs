//! The server in process, on its own runtime, stopped by a oneshot.

use dhi_admission::config::{Config, Limits};
use dhi_admission::server::Server;
use dhi_admission::tls::KeyPairPaths;
use dhi_policy::Mode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use super::*;

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
    /// `--catalog`: a catalog export written to `catalog.json` in the material directory.
    pub catalog: Option<String>,
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
            catalog: None,
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

    /// A server on the default options but these limits.
    pub async fn start_with_limits(limits: Limits) -> Self {
        Self::start_with(ServerOptions {
            limits,
            ..Default::default()
        })
        .await
    }

    /// A server on the test limits, changed by `change`.
    pub async fn with_limits(change: impl FnOnce(&mut Limits)) -> Self {
        let mut limits = test_limits();
        change(&mut limits);
        Self::start_with_limits(limits).await
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
            catalog: opts.catalog.as_ref().map(|json| {
                let path = material.catalog_path();
                write_atomic(&path, json.as_bytes());
                path
            }),
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
