//! TLS for the webhook port: PEM loading, the rustls server configuration, and a
//! certificate resolver whose key pair can be swapped while connections stay open.
//!
//! A new pair is built and checked (key matches certificate) before it replaces the
//! old one; a broken pair leaves the old one in use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Why a certificate, key or CA could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds no certificate.
    #[error("{path}: no certificate found in PEM")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The PEM could not be parsed.
    #[error("{path}: invalid PEM: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (unsupported key, key does not match certificate, ...).
    #[error("{path}: {source}")]
    Rustls {
        /// The file.
        path: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The client CA bundle could not be turned into a verifier.
    #[error("client CA {path}: {message}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The certificate and key files the server serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// A loaded pair, with the PEM it came from (to detect changes and read the expiry).
pub struct LoadedPair {
    /// Ready for rustls.
    pub certified: Arc<CertifiedKey>,
    /// The certificate PEM as read.
    pub cert_pem: Vec<u8>,
    /// The key PEM as read.
    pub key_pem: Vec<u8>,
}

impl KeyPairPaths {
    /// Reads both files (the raw bytes, for change detection).
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// Reads and checks the pair.
    pub fn load(&self) -> Result<LoadedPair, TlsError> {
        let (cert_pem, key_pem) = self.read()?;
        let certified = Arc::new(self.build(&cert_pem, &key_pem)?);
        Ok(LoadedPair {
            certified,
            cert_pem,
            key_pem,
        })
    }

    /// Builds a rustls key pair from PEM bytes, checking the key matches the leaf.
    pub fn build(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: self.cert.clone(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
            path: self.key.clone(),
            source,
        })?;
        let provider = provider();
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|source| TlsError::Rustls {
                path: self.key.clone(),
                source,
            })?;
        // `from_der` lets "unknown" consistency through; we want a definite match.
        certified.keys_match().map_err(|source| TlsError::Rustls {
            path: self.key.clone(),
            source,
        })?;
        Ok(certified)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// ring, with the SHA-256 suites first: with [`ServerConfig::ignore_client_order`] a
/// handshake then skips SHA-384 key derivation, which ring does without acceleration on
/// some CPUs (see bench/README.md).
fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        suite
            .suite()
            .as_str()
            .is_some_and(|name| name.ends_with("SHA384"))
    });
    provider
}

/// Serves whichever key pair was stored last.
pub struct SwappableCert {
    current: ArcSwap<CertifiedKey>,
}

impl SwappableCert {
    /// Starts with `initial`.
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(initial),
        }
    }

    /// Replaces the pair; handshakes from now on use it, open connections are untouched.
    pub fn store(&self, pair: Arc<CertifiedKey>) {
        self.current.store(pair);
    }
}

impl fmt::Debug for SwappableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwappableCert")
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls configuration: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, session
/// resumption by tickets and by cache, and client certificates when a CA is given.
pub fn server_config(
    certs: Arc<SwappableCert>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let pem = client_ca
        .map(|path| read(path).map(|pem| (path, pem)))
        .transpose()?;
    server_config_with_ca(
        certs,
        pem.as_ref().map(|(path, pem)| (*path, pem.as_slice())),
    )
}

/// [`server_config`] with the client CA bundle already read: its path (for errors)
/// and its PEM. Each call makes a new session cache and ticket key, so sessions
/// resumed under one client CA cannot outlive a change of CA.
pub fn server_config_with_ca(
    certs: Arc<SwappableCert>,
    client_ca: Option<(&Path, &[u8])>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            path: PathBuf::from("(protocol versions)"),
            source,
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((path, pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|source| TlsError::Pem {
                    path: path.to_owned(),
                    source,
                })?;
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    path: path.to_owned(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| TlsError::ClientCa {
                    path: path.to_owned(),
                    message: err.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Resumption saves the signature on reconnects of clients that keep sessions.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Rustls {
        path: PathBuf::from("(session tickets)"),
        source,
    })?;
    Ok(config)
}
