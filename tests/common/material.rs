//! Certificates and policy written to a temporary directory, and facts read back from certificates.

use dhi_admission::certs::GeneratedCerts;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;

use super::*;

/// How the serving certificate is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertLayout {
    /// `tls.crt` and `tls.key`, replaced by writing a temporary file and renaming it.
    Files,
    /// Like a kubelet Secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<gen>`,
    /// rotated by building a new `..<gen>` directory and renaming a symlink over `..data`.
    Kubelet,
}

/// Certificates and policy in a temporary directory, and the clients' trust.
pub struct Material {
    /// The directory (removed on drop).
    pub dir: TempDir,
    /// How certificates are written.
    pub layout: CertLayout,
    /// The path the server reads the certificate from.
    pub cert_path: PathBuf,
    /// The path the server reads the key from.
    pub key_path: PathBuf,
    /// The policy file.
    pub policy_path: PathBuf,
    /// CAs the clients accept.
    pub trust: Trust,
    current: Mutex<GeneratedCerts>,
    generation: AtomicU64,
}

/// A fresh CA and serving certificate for `localhost`/`127.0.0.1`, valid `days` days.
pub fn generate_certs(days: u64) -> GeneratedCerts {
    dhi_admission::certs::generate_pair(
        &["localhost".to_owned()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Duration::from_secs(days * 24 * 3600),
    )
    .expect("generate_pair")
}

/// Writes `contents` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, contents).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

impl Material {
    /// A directory with a fresh certificate (valid 30 days) and `policy`.
    pub fn new(layout: CertLayout, policy: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dhi-admission-test-")
            .tempdir()
            .expect("tempdir");
        let certs = generate_certs(30);
        let material = Self {
            cert_path: dir.path().join("tls.crt"),
            key_path: dir.path().join("tls.key"),
            policy_path: dir.path().join("policy.yaml"),
            layout,
            trust: Trust::default(),
            current: Mutex::new(certs.clone()),
            generation: AtomicU64::new(0),
            dir,
        };
        material.install(&certs);
        if layout == CertLayout::Kubelet {
            for name in ["tls.crt", "tls.key"] {
                std::os::unix::fs::symlink(
                    format!("..data/{name}"),
                    material.dir.path().join(name),
                )
                .expect("symlink");
            }
        }
        material.write_policy(policy);
        material
    }

    /// The pair being served (last installed).
    pub fn current(&self) -> GeneratedCerts {
        self.current.lock().unwrap().clone()
    }

    /// Trusts the pair's CA, then writes the pair where the server reads it.
    pub fn install(&self, certs: &GeneratedCerts) {
        self.trust.add_ca_pem(&certs.ca_cert_pem);
        self.write_pems(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes());
        *self.current.lock().unwrap() = certs.clone();
    }

    /// Writes certificate and key PEM as they are (a mismatched pair, garbage...).
    pub fn write_pems(&self, cert_pem: &[u8], key_pem: &[u8]) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        match self.layout {
            CertLayout::Files => {
                // Key first, then certificate: the order cert-manager and `certs` use.
                write_atomic(&self.key_path, key_pem);
                write_atomic(&self.cert_path, cert_pem);
            }
            CertLayout::Kubelet => {
                let root = self.dir.path();
                let data = root.join(format!("..gen_{generation:05}"));
                std::fs::create_dir(&data).expect("create data dir");
                std::fs::write(data.join("tls.crt"), cert_pem).expect("write cert");
                std::fs::write(data.join("tls.key"), key_pem).expect("write key");
                let link = root.join("..data");
                let old = std::fs::read_link(&link).ok();
                let tmp = root.join("..data_tmp");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).expect("symlink");
                std::fs::rename(&tmp, &link).expect("swap ..data");
                if let Some(old) = old {
                    let _ = std::fs::remove_dir_all(root.join(old));
                }
            }
        }
    }

    /// Generates a new pair (valid 30 + n days, so each has its own notAfter), trusts
    /// its CA and installs it.
    pub fn rotate(&self) -> GeneratedCerts {
        let days = 30 + self.generation.load(Ordering::SeqCst) % 300;
        let certs = generate_certs(days);
        self.install(&certs);
        certs
    }

    /// Where `--client-ca` is written.
    pub fn client_ca_path(&self) -> PathBuf {
        self.dir.path().join("client-ca.pem")
    }

    /// Where `--catalog` is written.
    pub fn catalog_path(&self) -> PathBuf {
        self.dir.path().join("catalog.json")
    }

    /// Replaces the catalog file (atomically, as kubelet updates a ConfigMap).
    pub fn write_catalog(&self, json: &str) {
        write_atomic(&self.catalog_path(), json.as_bytes());
    }

    /// Replaces the policy file atomically.
    pub fn write_policy(&self, yaml: &str) {
        write_atomic(&self.policy_path, yaml.as_bytes());
    }
}

/// A client CA and a client certificate it signed (`clientAuth`): CA PEM, chain PEM
/// (leaf first), key PEM.
pub fn generate_client_ca_and_cert(name: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} client CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{name} kube-apiserver"));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    )
}

// ===== certificate facts =====

/// Serial number (big-endian bytes) of a DER certificate.
pub fn serial_of_der(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    cert.raw_serial().to_vec()
}

/// Serial of the first certificate of a PEM chain.
pub fn serial_of_pem(pem: &str) -> Vec<u8> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM");
    serial_of_der(&der)
}

/// notAfter (Unix seconds) of the first certificate of a PEM chain, read with
/// x509-parser (independently of the server's own code).
pub fn not_after_of_pem(pem: &str) -> i64 {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse certificate");
    cert.validity().not_after.timestamp()
}
