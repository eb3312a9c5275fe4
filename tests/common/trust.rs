//! Trust: the CAs a test client accepts, live-reloadable.

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
