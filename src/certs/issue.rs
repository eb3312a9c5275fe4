//! Creating a CA and a serving certificate signed by it (ECDSA P-256).
//!
//! P-256 rather than RSA because the webhook must sustain well over a thousand new TLS
//! connections a second on one core: an ECDSA P-256 signature costs a small fraction of
//! an RSA-2048 one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::DnsName;
use time::OffsetDateTime;

use super::error::{CertError, ValidityProblem};

/// Names always covered by a generated serving certificate, in addition to the ones
/// asked for: local probes and port-forwards then verify too.
pub const ALWAYS_DNS: &str = "localhost";

/// IP addresses always covered by a generated serving certificate.
pub const ALWAYS_IPS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// How far `not_before` is set in the past, to tolerate clock skew between nodes.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// A freshly generated CA and serving certificate, all as PEM text.
///
/// `Debug` never prints the private keys.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedCerts {
    /// The CA certificate (self-signed, `CA:TRUE`, pathlen 0, keyCertSign).
    pub ca_cert_pem: String,
    /// The CA private key (PKCS#8).
    pub ca_key_pem: String,
    /// The serving chain: the leaf certificate first, then the CA certificate.
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub key_pem: String,
    /// The subject alternative names of the serving certificate, DNS names then IPs.
    pub names: Vec<String>,
}

impl fmt::Debug for GeneratedCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("names", &self.names)
            .field("ca_key_pem", &"<redacted>")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// A validity that starts now (backdated a few minutes for clock skew) and lasts
    /// `lifetime` from now.
    pub fn starting_now(lifetime: Duration) -> Result<Self, CertError> {
        let too_long = || CertError::InvalidValidity(ValidityProblem::TooLong(lifetime));
        if lifetime.is_zero() {
            return Err(CertError::InvalidValidity(ValidityProblem::NotPositive(
                lifetime,
            )));
        }
        let span = time::Duration::try_from(lifetime).map_err(|_| too_long())?;
        let now = OffsetDateTime::now_utc();
        let not_after = now.checked_add(span).ok_or_else(too_long)?;
        Ok(Validity {
            not_before: now - BACKDATE,
            not_after,
        })
    }
}

/// Generates a CA and a serving certificate valid for `validity` from now.
///
/// The serving certificate covers `dns` (entries that parse as IP addresses count as
/// IPs) and `ips`, plus always `localhost`, `127.0.0.1` and `::1`.
pub fn generate_pair(
    dns: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> Result<GeneratedCerts, CertError> {
    generate_pair_with_validity(dns, ips, Validity::starting_now(validity)?)
}

/// Like [`generate_pair`], with an explicit validity window (both certificates share
/// it). Tests use it to make certificates that are already old.
pub fn generate_pair_with_validity(
    dns: &[String],
    ips: &[IpAddr],
    validity: Validity,
) -> Result<GeneratedCerts, CertError> {
    if validity.not_after <= validity.not_before {
        return Err(CertError::InvalidValidity(ValidityProblem::Inverted {
            not_before: validity.not_before,
            not_after: validity.not_after,
        }));
    }
    let sans = SubjectNames::collect(dns, ips)?;

    let ca_key = new_key("CA key")?;
    let ca_params = ca_params(validity);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| CertError::Generate {
            what: "CA certificate",
            source,
        })?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let leaf_key = new_key("serving key")?;
    let leaf_cert = sans
        .leaf_params(validity)?
        .signed_by(&leaf_key, &issuer)
        .map_err(|source| CertError::Generate {
            what: "serving certificate",
            source,
        })?;

    let ca_cert_pem = ca_cert.pem();
    Ok(GeneratedCerts {
        cert_pem: format!("{}{}", leaf_cert.pem(), ca_cert_pem),
        ca_cert_pem,
        ca_key_pem: ca_key.serialize_pem(),
        key_pem: leaf_key.serialize_pem(),
        names: sans.display_names(),
    })
}

fn new_key(what: &'static str) -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| CertError::Generate { what, source })
}

fn ca_params(validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A distinct subject per CA keeps old and new CAs of a bundle apart in diagnostics.
    dn.push(
        DnType::CommonName,
        format!("dhi-admission CA {}", validity.not_before.unix_timestamp()),
    );
    dn.push(DnType::OrganizationName, "dhi-admission");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

/// The subject alternative names of a serving certificate, deduplicated, in order.
struct SubjectNames {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl SubjectNames {
    fn collect(dns: &[String], ips: &[IpAddr]) -> Result<Self, CertError> {
        let mut names = SubjectNames {
            dns: Vec::new(),
            ips: Vec::new(),
        };
        for name in dns.iter().map(|n| n.trim()).chain([ALWAYS_DNS]) {
            if let Ok(ip) = name.parse::<IpAddr>() {
                names.add_ip(ip);
            } else {
                let name = name.to_ascii_lowercase();
                validate_dns_name(&name)?;
                if !names.dns.contains(&name) {
                    names.dns.push(name);
                }
            }
        }
        for ip in ips.iter().chain(ALWAYS_IPS.iter()) {
            names.add_ip(*ip);
        }
        Ok(names)
    }

    fn add_ip(&mut self, ip: IpAddr) {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }

    fn leaf_params(&self, validity: Validity) -> Result<CertificateParams, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // The subject CN is informational (clients match SANs); 64 characters at most.
        let cn = self
            .dns
            .first()
            .filter(|n| n.len() <= 64)
            .map_or("dhi-admission", String::as_str);
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        for name in &self.dns {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|_| CertError::InvalidName { name: name.clone() })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(self.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        Ok(params)
    }

    fn display_names(&self) -> Vec<String> {
        self.dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect()
    }
}

/// Accepts DNS names, optionally with a leading `*.` wildcard label.
fn validate_dns_name(name: &str) -> Result<(), CertError> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    match DnsName::try_from(bare) {
        Ok(_) => Ok(()),
        Err(_) => Err(CertError::InvalidName {
            name: name.to_owned(),
        }),
    }
}
