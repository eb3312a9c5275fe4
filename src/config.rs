//! Server configuration: `serve`'s arguments to a plain [`Config`] (a pure conversion;
//! tests write configs literally), and the policy file with the mode it implies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dhi_policy::Mode;

use crate::policy_source::PolicyArgs;
use crate::tls::KeyPairPaths;

/// The development certificate `serve` uses when given none.
pub const DEV_CERT: &str = "certs/tls.crt";
/// Its key.
pub const DEV_KEY: &str = "certs/tls.key";

/// Arguments of `dhi-admission serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TLS listener for the webhook endpoints: `ADDR:PORT`, `HOST:PORT` or `:PORT`
    /// (all interfaces).
    #[arg(long, default_value = "0.0.0.0:8443", env = "DHI_LISTEN", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Plain HTTP listener for /metrics, /healthz and /readyz (same forms as --listen).
    #[arg(long, default_value = "0.0.0.0:9090", env = "DHI_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: SocketAddr,
    /// Serving certificate (PEM chain, leaf first). Default: certs/tls.crt.
    #[arg(long, requires = "tls_key", env = "DHI_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM). Default: certs/tls.key.
    #[arg(long, requires = "tls_cert", env = "DHI_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (kube-apiserver's).
    #[arg(long, env = "DHI_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// The policy file, the mode and the catalog.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "DHI_MAX_BODY_BYTES", default_value_t = Limits::default().max_body)]
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, all requests together; past it a request
    /// waits briefly, then gets 503 [default: an eighth of the container's memory
    /// limit (cgroup), 32 MiB when unlimited].
    #[arg(long, env = "DHI_MAX_BUFFERED_BODY_BYTES")]
    pub max_buffered_body_bytes: Option<usize>,
    /// Close connections with no request in flight for this long, in seconds.
    #[arg(long, env = "DHI_IDLE_TIMEOUT_SECONDS", default_value_t = Limits::default().idle_timeout.as_secs())]
    pub idle_timeout_seconds: u64,
    /// Time to receive an HTTP/1.1 request's headers once they started, in seconds.
    #[arg(long, env = "DHI_HEADER_TIMEOUT_SECONDS", default_value_t = Limits::default().header_timeout.as_secs())]
    pub header_timeout_seconds: u64,
    /// Close connections gracefully past this age, in seconds (each one between 90%
    /// and 100% of it).
    #[arg(long, env = "DHI_MAX_CONNECTION_AGE_SECONDS", default_value_t = Limits::default().max_connection_age.as_secs())]
    pub max_connection_age_seconds: u64,
    /// Connections served at once; at the cap the longest-idle one is closed.
    #[arg(long, env = "DHI_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Grace period for in-flight requests after SIGTERM, in seconds.
    #[arg(long, env = "DHI_SHUTDOWN_GRACE_SECONDS", default_value_t = Limits::default().shutdown_grace.as_secs())]
    pub shutdown_grace_seconds: u64,
    /// How often certificate and policy files are checked for changes, in milliseconds.
    #[arg(long, env = "DHI_RELOAD_INTERVAL_MS", default_value_t = 2000)]
    pub reload_interval_ms: u64,
}

impl ServeArgs {
    /// No certificate given: `serve` uses the development one, generating it first if
    /// there is none yet. An action of `serve`, not of parsing the arguments.
    pub fn uses_development_certificate(&self) -> bool {
        self.tls_cert.is_none()
    }

    /// The configuration these arguments describe, for a container with this memory
    /// limit (it sizes the default body budget). Pure: reads and writes nothing.
    pub fn into_config(self, container_memory_limit: Option<u64>) -> anyhow::Result<Config> {
        let Self {
            listen,
            metrics_listen,
            tls_cert,
            tls_key,
            client_ca,
            policy:
                PolicyArgs {
                    config,
                    mode,
                    catalog,
                },
            max_body_bytes,
            max_buffered_body_bytes,
            idle_timeout_seconds,
            header_timeout_seconds,
            max_connection_age_seconds,
            max_connections,
            shutdown_grace_seconds,
            reload_interval_ms,
        } = self;
        let body_budget = max_buffered_body_bytes
            .unwrap_or_else(|| body_budget_for(container_memory_limit, max_body_bytes));
        let limits = Limits {
            max_body: max_body_bytes,
            body_budget,
            idle_timeout: Duration::from_secs(idle_timeout_seconds.max(1)),
            header_timeout: Duration::from_secs(header_timeout_seconds.max(1)),
            max_connection_age: Duration::from_secs(max_connection_age_seconds.max(1)),
            max_connections: max_connections.max(1),
            shutdown_grace: Duration::from_secs(shutdown_grace_seconds),
            ..Limits::default()
        };
        limits.check()?;
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => KeyPairPaths { cert, key },
            _ => KeyPairPaths {
                cert: PathBuf::from(DEV_CERT),
                key: PathBuf::from(DEV_KEY),
            },
        };
        Ok(Config {
            listen,
            metrics_listen,
            tls,
            client_ca,
            policy: config,
            catalog,
            mode,
            limits,
            reload_interval: Duration::from_millis(reload_interval_ms.max(50)),
        })
    }
}

/// A listen address as people write it: `0.0.0.0:8443`, `[::]:8443`, `:8443` (every
/// IPv4 interface, as Go servers read it) or `localhost:8443` (the first address the
/// name resolves to).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?}: write ADDR:PORT, HOST:PORT or :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|err| format!("{text:?}: cannot resolve {host:?}: {err}"))?
        .next()
        .ok_or_else(|| format!("{text:?}: {host:?} resolves to no address"))
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS webhook listener.
    pub listen: SocketAddr,
    /// Plain HTTP metrics and health listener.
    pub metrics_listen: SocketAddr,
    /// Serving certificate and key.
    pub tls: KeyPairPaths,
    /// CA bundle to verify client certificates against (kube-apiserver's).
    pub client_ca: Option<PathBuf>,
    /// Policy file; the built-in policy when absent.
    pub policy: Option<PathBuf>,
    /// `--catalog`: a catalog export in place of the compiled-in snapshot.
    pub catalog: Option<PathBuf>,
    /// `--mode`: wins over the policy file's `mode`.
    pub mode: Option<Mode>,
    /// Connection and request limits.
    pub limits: Limits,
    /// How often the certificate, policy and catalog files are checked for changes.
    pub reload_interval: Duration,
}

/// Bounds that keep slow, idle or hostile clients from holding the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted (Kubernetes objects top out near 1.5 MiB).
    pub max_body: usize,
    /// Time from accepting a connection to the start of its first request (TLS
    /// handshake and request headers included).
    pub handshake_timeout: Duration,
    /// Time an HTTP/1.1 client gets to send a request's headers once their first byte
    /// arrived on a kept-alive connection.
    pub header_timeout: Duration,
    /// Time to send a whole request body.
    pub request_timeout: Duration,
    /// How long a connection with no request in flight is kept (kube-apiserver keeps
    /// its own idle connections for 90 s; closing earlier would waste its handshakes).
    /// Only requests count: pings, window updates and stray bytes do not.
    pub idle_timeout: Duration,
    /// Age past which a connection is closed gracefully (HTTP/2 GOAWAY, HTTP/1.1
    /// `Connection: close` on the current answer), so that kube-apiserver's long-lived
    /// connections spread over new replicas after a scale-out. Each connection's limit
    /// is drawn between 90% and 100% of this, so connections opened together do not
    /// all reconnect at once.
    pub max_connection_age: Duration,
    /// Time a connection being closed (idle, too old, evicted) gets to finish what it
    /// has in flight before it is dropped.
    pub close_grace: Duration,
    /// Connections served at once; at the cap the longest-idle one is closed to admit
    /// a new one.
    pub max_connections: usize,
    /// Bytes of request bodies held at once, all requests together.
    pub body_budget: usize,
    /// How long a request waits for room in the body budget before it is shed (503).
    pub body_budget_wait: Duration,
    /// Time in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connection_age: Duration::from_secs(300),
            close_grace: Duration::from_secs(10),
            max_connections: 1024,
            body_budget: FALLBACK_BODY_BUDGET,
            body_budget_wait: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl Limits {
    /// Refuses limits that cannot work together: the largest body must fit in the
    /// share of the body budget that large bodies may use (three quarters).
    pub fn check(&self) -> anyhow::Result<()> {
        let large_share = self.body_budget - self.body_budget / 4;
        anyhow::ensure!(
            large_share >= self.max_body,
            "--max-buffered-body-bytes {} leaves {} bytes (three quarters) for large bodies, \
             less than --max-body-bytes {}: raise it to at least {}",
            self.body_budget,
            large_share,
            self.max_body,
            self.max_body.div_ceil(3) * 4
        );
        Ok(())
    }
}

/// The body budget when the container has no memory limit: what the shipped limit
/// (256 MiB) gives.
pub const FALLBACK_BODY_BUDGET: usize = 32 * 1024 * 1024;

/// The body budget for a container memory limit (`None`: unlimited).
///
/// An eighth of the limit: bodies are buffered whole and the engine's working set is
/// about as large again, and 1,024 idle TLS connections take 30 to 50 MiB of their
/// own. At least twice `max_body`, so that one largest body always fits in the share
/// large bodies may use (three quarters, see `server::budget`).
pub fn body_budget_for(memory_limit: Option<u64>, max_body: usize) -> usize {
    let derived = match memory_limit {
        Some(limit) => usize::try_from(limit / 8).unwrap_or(usize::MAX),
        None => FALLBACK_BODY_BUDGET,
    };
    derived.min(1 << 30).max(max_body.saturating_mul(2))
}

/// The memory limit of this process's container, from cgroup v2 (`memory.max`) or
/// v1 (`memory.limit_in_bytes`); `None` when unlimited or unknown.
pub fn container_memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let own = read("/proc/self/cgroup")
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("0::").map(str::to_owned))
        })
        .filter(|path| path != "/");
    let mut v2 = own.and_then(|path| read(&format!("/sys/fs/cgroup{path}/memory.max")));
    if v2.is_none() {
        v2 = read("/sys/fs/cgroup/memory.max");
    }
    let v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    parse_memory_limit(v2.as_deref(), v1.as_deref())
}

/// The limit from the cgroup files' contents: v2 `max` or a number, v1 a number where
/// anything near `i64::MAX` (rounded to pages) means unlimited.
pub fn parse_memory_limit(v2: Option<&str>, v1: Option<&str>) -> Option<u64> {
    if let Some(text) = v2 {
        let text = text.trim();
        return if text == "max" {
            None
        } else {
            text.parse().ok()
        };
    }
    let limit: u64 = v1?.trim().parse().ok()?;
    (limit < 1 << 60).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_as_people_write_them() {
        let addr = |s: &str| parse_listen(s).map(|a| a.to_string());
        assert_eq!(addr(":8443").as_deref(), Ok("0.0.0.0:8443"));
        assert_eq!(addr("0.0.0.0:9090").as_deref(), Ok("0.0.0.0:9090"));
        assert_eq!(addr("[::]:8443").as_deref(), Ok("[::]:8443"));
        let local = parse_listen("localhost:8443").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8443, "{local}");
        assert_eq!(
            addr(":https").unwrap_err(),
            "\":https\": \"https\" is not a port number"
        );
        assert_eq!(
            addr("8443").unwrap_err(),
            "\"8443\": write ADDR:PORT, HOST:PORT or :PORT"
        );
        assert!(addr("no-such-host.invalid:8443").is_err());
    }

    #[test]
    fn memory_limits_from_cgroup_files() {
        assert_eq!(parse_memory_limit(Some("max\n"), None), None);
        assert_eq!(
            parse_memory_limit(Some("268435456\n"), Some("1024")),
            Some(256 << 20)
        );
        assert_eq!(
            parse_memory_limit(None, Some("268435456\n")),
            Some(256 << 20)
        );
        assert_eq!(parse_memory_limit(None, Some("9223372036854771712")), None);
        assert_eq!(parse_memory_limit(None, Some("garbage")), None);
        assert_eq!(parse_memory_limit(None, None), None);
    }

    #[test]
    fn body_budget_follows_the_memory_limit() {
        let max_body = 4 << 20;
        assert_eq!(body_budget_for(Some(256 << 20), max_body), 32 << 20);
        assert_eq!(body_budget_for(Some(2 << 30), max_body), 256 << 20);
        assert_eq!(body_budget_for(None, max_body), FALLBACK_BODY_BUDGET);
        // Never below two largest bodies, never above 1 GiB.
        assert_eq!(body_budget_for(Some(16 << 20), max_body), 8 << 20);
        assert_eq!(body_budget_for(Some(64 << 30), max_body), 1 << 30);
    }
}
