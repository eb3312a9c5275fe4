//! Server configuration: command-line arguments to a plain [`Config`] that tests write
//! literally, and the policy file with the mode it implies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::io::Read as _;

use crate::tls::KeyPairPaths;
use dhi_policy::policy_file::PolicyFileError;
use dhi_policy::{Engine, Mode, PolicyFile};

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
