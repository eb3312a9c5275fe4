//! Server configuration: `serve`'s arguments to a plain [`Config`] (a pure conversion;
//! tests write configs literally), and the policy file with the mode it implies.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dhi_policy::policy_file::PolicyFileError;
use dhi_policy::{Engine, Mode, PolicyFile};

use crate::tls::KeyPairPaths;

/// The development certificate `serve` uses when given none.
pub const DEV_CERT: &str = "certs/tls.crt";
/// Its key.
pub const DEV_KEY: &str = "certs/tls.key";

/// Arguments of `dhi-admission serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TLS listener for the webhook endpoints.
    #[arg(long, default_value = "0.0.0.0:8443", env = "DHI_LISTEN")]
    pub listen: SocketAddr,
    /// Plain HTTP listener for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090", env = "DHI_METRICS_LISTEN")]
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
    /// Policy file (YAML); the built-in policy when absent.
    #[arg(long, env = "DHI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server-wide mode; wins over the policy file's `mode` [default: enforce].
    #[arg(long, env = "DHI_MODE")]
    pub mode: Option<Mode>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body)]
    pub max_body_bytes: usize,
    /// Grace period for in-flight requests after SIGTERM, in seconds.
    #[arg(long, default_value_t = Limits::default().shutdown_grace.as_secs())]
    pub shutdown_grace_seconds: u64,
    /// How often certificate and policy files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub reload_interval_ms: u64,
}

impl ServeArgs {
    /// No certificate given: `serve` uses the development one, generating it first if
    /// there is none yet. An action of `serve`, not of parsing the arguments.
    pub fn uses_development_certificate(&self) -> bool {
        self.tls_cert.is_none()
    }
}

impl From<ServeArgs> for Config {
    fn from(args: ServeArgs) -> Self {
        let ServeArgs {
            listen,
            metrics_listen,
            tls_cert,
            tls_key,
            client_ca,
            config,
            mode,
            max_body_bytes,
            shutdown_grace_seconds,
            reload_interval_ms,
        } = args;
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => KeyPairPaths { cert, key },
            _ => KeyPairPaths {
                cert: PathBuf::from(DEV_CERT),
                key: PathBuf::from(DEV_KEY),
            },
        };
        Self {
            listen,
            metrics_listen,
            tls,
            client_ca,
            policy: config,
            mode,
            limits: Limits {
                max_body: max_body_bytes,
                shutdown_grace: Duration::from_secs(shutdown_grace_seconds),
                ..Limits::default()
            },
            reload_interval: Duration::from_millis(reload_interval_ms.max(50)),
        }
    }
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
    /// `--mode`: wins over the policy file's `mode`.
    pub mode: Option<Mode>,
    /// Connection and request limits.
    pub limits: Limits,
    /// How often the certificate and policy files are checked for changes.
    pub reload_interval: Duration,
}

/// Bounds that keep slow, idle or hostile clients from holding the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted (Kubernetes objects top out near 1.5 MiB).
    pub max_body: usize,
    /// Time to complete the TLS handshake and send the first bytes of a request.
    pub handshake_timeout: Duration,
    /// Time to send a whole request body.
    pub request_timeout: Duration,
    /// How long an idle keep-alive connection is kept (kube-apiserver keeps its own
    /// idle connections for 90 s; closing earlier would waste its handshakes). hyper
    /// runs one timer from the end of a response to the end of the next request's
    /// headers, so this also bounds how long a client may take to send headers.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The policy in force: the engine built from the policy file, and the server-wide mode.
#[derive(Debug, Clone)]
pub struct ActivePolicy {
    /// The engine built from the policy file.
    pub engine: Engine,
    /// The server-wide mode (`/mutate`, `/validate`).
    pub mode: Mode,
}

/// Policy files larger than this are refused: a policy is a few kilobytes.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Unreadable.
    #[error("cannot read policy {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Over [`MAX_POLICY_BYTES`].
    #[error("policy {path} is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not text.
    #[error("policy {path} is not UTF-8")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where the text breaks.
        #[source]
        source: std::str::Utf8Error,
    },
    /// Invalid.
    #[error("policy {path}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: PolicyFileError,
    },
}

/// Reads a policy file's bytes, bounded. The only place a policy file is read: the
/// server at start and on reload, and `check`.
pub fn read_policy_bytes(path: &Path) -> Result<Vec<u8>, PolicyError> {
    let read_error = |source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

impl ActivePolicy {
    /// Reads and parses a policy file; `mode` (the command line) wins over the file's.
    /// Also returns the bytes, which the reloader compares later versions with.
    pub fn load(path: &Path, mode: Option<Mode>) -> Result<(Self, Vec<u8>), PolicyError> {
        let bytes = read_policy_bytes(path)?;
        Ok((Self::from_bytes(path, &bytes, mode)?, bytes))
    }

    /// The policy from a policy file's contents; `mode` (the command line) wins over the file.
    pub fn from_bytes(path: &Path, bytes: &[u8], mode: Option<Mode>) -> Result<Self, PolicyError> {
        let text = std::str::from_utf8(bytes).map_err(|source| PolicyError::NotUtf8 {
            path: path.to_owned(),
            source,
        })?;
        let file = PolicyFile::from_yaml(text).map_err(|source| PolicyError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(file, mode))
    }

    /// The policy of a parsed policy file.
    pub fn new(file: PolicyFile, mode: Option<Mode>) -> Self {
        let mode = mode.or(file.mode).unwrap_or_default();
        Self {
            engine: Engine::new(file),
            mode,
        }
    }
}
