//! Reading certificates back: PEM blocks, expiry, and whether serving material is
//! still good enough to keep.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, RootCertStore};

use super::error::ParseProblem;
use super::error::{CertError, RenewReason};

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Returns the `notAfter` of the first certificate in `pem`, in Unix seconds.
pub fn cert_not_after(pem: &str) -> Result<i64, CertError> {
    Ok(Window::of_first(pem, "certificate")?.not_after)
}

/// Parses every `CERTIFICATE` block of `pem`; fails when there is none.
pub(crate) fn parse_certs(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::parse(what, e))?;
    if certs.is_empty() {
        return Err(CertError::parse(what, ParseProblem::NoCertificate));
    }
    Ok(certs)
}

/// The validity window of a certificate, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl Window {
    fn of_der(der: &[u8], what: &str) -> Result<Self, CertError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| CertError::parse(what, e))?;
        let validity = cert.validity();
        Ok(Window {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    fn of_first(pem: &str, what: &str) -> Result<Self, CertError> {
        let certs = parse_certs(pem, what)?;
        let first = certs
            .first()
            .ok_or_else(|| CertError::parse(what, ParseProblem::NoCertificate))?;
        Self::of_der(first, what)
    }

    /// Two thirds into the validity: from then on the certificate is renewed.
    pub(crate) fn renew_at(&self) -> i64 {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

/// The three PEM texts of a TLS Secret.
///
/// `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The CA bundle clients trust (`ca.crt`): the current CA first, then any CA
    /// still kept from before the last renewal.
    pub ca_bundle_pem: String,
    /// The serving chain (`tls.crt`): leaf first.
    pub cert_pem: String,
    /// The serving key (`tls.key`).
    pub key_pem: String,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_bundle_pem", &self.ca_bundle_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Checks that `material` can keep serving `server_name` at `now` (Unix seconds):
/// everything parses, the key matches, the chain verifies against the bundle for that
/// name, and the leaf is not past two thirds of its validity.
pub(crate) fn assess(
    material: &TlsMaterial,
    server_name: &str,
    now: i64,
) -> Result<Window, RenewReason> {
    let unparseable = |e: CertError| RenewReason::Unparseable(format!("{e}"));
    let chain = parse_certs(&material.cert_pem, "tls.crt").map_err(unparseable)?;
    let roots = parse_certs(&material.ca_bundle_pem, "ca.crt").map_err(unparseable)?;
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes())
        .map_err(|e| RenewReason::Unparseable(format!("tls.key: {e}")))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| RenewReason::Unparseable("tls.crt: empty".into()))?;
    let window = Window::of_der(leaf, "tls.crt").map_err(unparseable)?;

    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(chain.clone(), key, &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err(RenewReason::KeyMismatch),
        Err(e) => return Err(RenewReason::Unparseable(format!("tls.key: {e}"))),
    }

    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .map_err(|e| RenewReason::Unparseable(format!("ca.crt: {e}")))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::new(provider))
        .build()
        .map_err(|e| RenewReason::Untrusted(e.to_string()))?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| RenewReason::NameNotCovered(server_name.to_owned()))?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    match verifier.verify_server_cert(leaf, intermediates, &name, &[], at) {
        Ok(_) => {}
        Err(rustls::Error::InvalidCertificate(err)) => {
            return Err(match err {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    RenewReason::NameNotCovered(server_name.to_owned())
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => RenewReason::Expired,
                other => RenewReason::Untrusted(format!("{other:?}")),
            });
        }
        Err(e) => return Err(RenewReason::Untrusted(e.to_string())),
    }

    if now >= window.renew_at() {
        return Err(RenewReason::DueForRenewal {
            renew_at: window.renew_at(),
            not_after: window.not_after,
        });
    }
    Ok(window)
}

/// Most CA certificates a bundle holds: the new one and up to three kept from before.
const MAX_BUNDLE: usize = 4;

/// Builds the CA bundle after a renewal: `new_ca_pem` first, then the certificates of
/// `previous` that still parse and have not expired at `now`, without duplicates and
/// at most [`MAX_BUNDLE`] in all. Keeping the previous CA lets the API server verify
/// replicas that still serve the old certificate while the rollout proceeds; expired
/// ones are dropped so the bundle does not grow renewal after renewal.
pub(crate) fn merge_bundle(new_ca_pem: &str, previous: Option<&str>, now: i64) -> String {
    let mut kept: Vec<(&str, Vec<u8>)> = Vec::new();
    let candidates = pem_blocks(new_ca_pem)
        .into_iter()
        .chain(previous.map(pem_blocks).unwrap_or_default());
    for (index, block) in candidates.enumerate() {
        let Ok(der) = CertificateDer::from_pem_slice(block.as_bytes()) else {
            continue;
        };
        let still_valid = Window::of_der(&der, "ca.crt").is_ok_and(|w| w.not_after > now);
        // The first block is the new CA: always kept.
        if index > 0 && !still_valid {
            continue;
        }
        if kept.iter().all(|(_, seen)| seen.as_slice() != der.as_ref()) {
            kept.push((block, der.to_vec()));
        }
        if kept.len() == MAX_BUNDLE {
            break;
        }
    }
    kept.iter().map(|(block, _)| format!("{block}\n")).collect()
}

/// The `CERTIFICATE` blocks of a PEM text, each from its BEGIN line to its END line.
fn pem_blocks(pem: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let Some(len) = rest[start..].find(PEM_END) else {
            break;
        };
        let end = start + len + PEM_END.len();
        blocks.push(&rest[start..end]);
        rest = &rest[end..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_splits_and_ignores_noise() {
        let text = format!(
            "junk\n{PEM_BEGIN}\nAAAA\n{PEM_END}\n\n{PEM_BEGIN}\nBBBB\n{PEM_END}\ntrailing {PEM_BEGIN}"
        );
        let blocks = pem_blocks(&text);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].contains("AAAA") && blocks[1].contains("BBBB"));
        assert!(
            blocks
                .iter()
                .all(|b| b.starts_with(PEM_BEGIN) && b.ends_with(PEM_END))
        );
    }

    #[test]
    fn renew_at_is_two_thirds() {
        let w = Window {
            not_before: 0,
            not_after: 300,
        };
        assert_eq!(w.renew_at(), 200);
    }

    #[test]
    fn parse_certs_rejects_garbage() {
        assert!(matches!(
            parse_certs("garbage", "tls.crt"),
            Err(CertError::Parse { .. })
        ));
        assert!(cert_not_after("").is_err());
    }
}
