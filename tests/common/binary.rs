//! The real `dhi-admission` binary as a child process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

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
