//! Server configuration: command-line arguments to a plain [`Config`] that tests write
//! literally, and the policy file with the mode it implies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::{Engine, Mode, Settings};
use crate::tls::KeyPairPaths;

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

/// The policy in force: the engine and the server-wide mode.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The engine built from the policy file.
    pub engine: Engine,
    /// The server-wide mode (`/mutate`, `/validate`).
    pub mode: Mode,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Unreadable.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid.
    #[error("policy {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: crate::policy::settings::SettingsError,
    },
}

impl Policy {
    /// The policy from its file contents; `mode` (the command line) wins over the file.
    pub fn from_text(path: &Path, text: &str, mode: Option<Mode>) -> Result<Self, PolicyError> {
        let settings = Settings::from_yaml(text).map_err(|source| PolicyError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(settings, mode))
    }

    /// Reads a policy file.
    pub fn load(path: &Path, mode: Option<Mode>) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_text(path, &text, mode)
    }

    /// A policy from settings.
    pub fn new(settings: Settings, mode: Option<Mode>) -> Self {
        let mode = mode.or(settings.mode).unwrap_or_default();
        Self {
            engine: Engine::new(settings),
            mode,
        }
    }
}
