//! Unit tests of certificate generation: names, key types, extensions, chain, validity.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::inspect::{assess, merge_bundle, parse_certs};
use super::*;

const DAY: u64 = 24 * 60 * 60;

fn names() -> Vec<String> {
    vec!["webhook.dhi.svc".into(), "webhook.example".into()]
}

fn pair(days: u64) -> GeneratedCerts {
    generate_pair(
        &names(),
        &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))],
        Duration::from_secs(days * DAY),
    )
    .expect("generate")
}

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    parse_certs(pem, "test").expect("parse")
}

fn with_cert<T>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, cert) = X509Certificate::from_der(der).expect("x509");
    f(&cert)
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let ext = cert
        .subject_alternative_name()
        .expect("san ext")
        .expect("san present");
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => (*dns).to_owned(),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("v4")).to_string(),
                _ => IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("v6")).to_string(),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

fn assert_p256(cert: &X509Certificate<'_>) {
    let spki = cert.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .expect("curve parameter");
    assert_eq!(curve, OID_EC_P256);
}

#[test]
fn serving_certificate_covers_requested_and_local_names() {
    let certs = pair(30);
    let chain = ders(&certs.cert_pem);
    let got = with_cert(&chain[0], sans);
    assert_eq!(
        got,
        [
            "webhook.dhi.svc",
            "webhook.example",
            "localhost",
            "10.0.0.7",
            "127.0.0.1",
            "::1"
        ]
    );
    assert_eq!(certs.names, got);
}

#[test]
fn names_are_deduplicated_and_ips_in_dns_list_become_ips() {
    let dns = vec![
        "LocalHost".into(),
        "a.example".into(),
        "a.example".into(),
        "::1".into(),
        "192.0.2.1".into(),
    ];
    let certs = generate_pair(&dns, &[], Duration::from_secs(DAY)).unwrap();
    assert_eq!(
        certs.names,
        ["localhost", "a.example", "::1", "192.0.2.1", "127.0.0.1"]
    );
}

#[test]
fn keys_are_ecdsa_p256() {
    let certs = pair(30);
    let chain = ders(&certs.cert_pem);
    with_cert(&chain[0], assert_p256);
    with_cert(&ders(&certs.ca_cert_pem)[0], assert_p256);
    for key in [&certs.key_pem, &certs.ca_key_pem] {
        let pair = rcgen::KeyPair::from_pem(key).expect("key");
        assert_eq!(pair.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(matches!(
            PrivateKeyDer::from_pem_slice(key.as_bytes()),
            Ok(PrivateKeyDer::Pkcs8(_))
        ));
    }
}

#[test]
fn ca_and_leaf_extensions() {
    let certs = pair(30);
    let chain = ders(&certs.cert_pem);
    assert_eq!(chain.len(), 2, "tls.crt is leaf then CA");
    assert_eq!(chain[1], ders(&certs.ca_cert_pem)[0]);
    with_cert(&chain[1], |ca| {
        assert!(ca.basic_constraints().unwrap().unwrap().value.ca);
        assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
    });
    with_cert(&chain[0], |leaf| {
        assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
        assert!(
            leaf.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert!(leaf.key_usage().unwrap().unwrap().value.digital_signature());
        assert_ne!(leaf.issuer(), leaf.subject());
    });
}

#[test]
fn chain_verifies_against_its_ca_only() {
    let certs = pair(30);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let material = TlsMaterial {
        ca_bundle_pem: certs.ca_cert_pem.clone(),
        cert_pem: certs.cert_pem.clone(),
        key_pem: certs.key_pem.clone(),
    };
    assert!(assess(&material, "webhook.dhi.svc", now).is_ok());
    assert_eq!(
        assess(&material, "other.dhi.svc", now),
        Err(RenewReason::NameNotCovered("other.dhi.svc".into()))
    );
    // A leaf-only chain verifies too.
    let leaf_only = TlsMaterial {
        cert_pem: certs
            .cert_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap()
            .to_owned(),
        ..material.clone()
    };
    assert!(assess(&leaf_only, "webhook.dhi.svc", now).is_ok());

    let stranger = pair(30);
    let wrong_ca = TlsMaterial {
        ca_bundle_pem: stranger.ca_cert_pem.clone(),
        cert_pem: leaf_only.cert_pem.clone(),
        ..material.clone()
    };
    assert!(matches!(
        assess(&wrong_ca, "webhook.dhi.svc", now),
        Err(RenewReason::Untrusted(_))
    ));
    let wrong_key = TlsMaterial {
        key_pem: stranger.key_pem.clone(),
        ..material.clone()
    };
    assert_eq!(
        assess(&wrong_key, "webhook.dhi.svc", now),
        Err(RenewReason::KeyMismatch)
    );
    // A bundle holding the stranger's CA and ours still verifies ours.
    let bundle = TlsMaterial {
        ca_bundle_pem: format!("{}{}", stranger.ca_cert_pem, certs.ca_cert_pem),
        ..material
    };
    assert!(assess(&bundle, "webhook.dhi.svc", now).is_ok());
}

#[test]
fn not_after_is_the_requested_days_from_now() {
    for days in [1, 90, 365] {
        let certs = pair(days);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expected = now + i64::try_from(days * DAY).unwrap();
        for pem in [&certs.cert_pem, &certs.ca_cert_pem] {
            let not_after = cert_not_after(pem).unwrap();
            assert!(
                (expected - 60..=expected).contains(&not_after),
                "{days} days: {not_after} vs {expected}"
            );
        }
    }
}

#[test]
fn renewal_point_and_expiry_are_detected() {
    let now = time::OffsetDateTime::now_utc();
    let material = |before_days: i64, after_days: i64| {
        let certs = generate_pair_with_validity(
            &names(),
            &[],
            Validity {
                not_before: now - time::Duration::days(before_days),
                not_after: now + time::Duration::days(after_days),
            },
        )
        .unwrap();
        TlsMaterial {
            ca_bundle_pem: certs.ca_cert_pem,
            cert_pem: certs.cert_pem,
            key_pem: certs.key_pem,
        }
    };
    let ts = now.unix_timestamp();
    assert!(assess(&material(10, 30), "webhook.dhi.svc", ts).is_ok());
    assert!(matches!(
        assess(&material(30, 5), "webhook.dhi.svc", ts),
        Err(RenewReason::DueForRenewal { .. })
    ));
    assert_eq!(
        assess(&material(30, -1), "webhook.dhi.svc", ts),
        Err(RenewReason::Expired)
    );
}

#[test]
fn invalid_inputs_are_rejected() {
    let err = generate_pair(&["not a name".into()], &[], Duration::from_secs(DAY)).unwrap_err();
    assert!(
        matches!(err, CertError::InvalidName { ref name } if name == "not a name"),
        "{err}"
    );
    assert!(generate_pair(&["*.svc.example".into()], &[], Duration::from_secs(DAY)).is_ok());
    assert!(matches!(
        generate_pair(&names(), &[], Duration::ZERO),
        Err(CertError::InvalidValidity { .. })
    ));
}

#[test]
fn merge_bundle_keeps_unexpired_previous_cas_without_duplicates() {
    let now = time::OffsetDateTime::now_utc();
    let ts = now.unix_timestamp();
    let old = pair(30).ca_cert_pem;
    let new = pair(30).ca_cert_pem;
    let expired = generate_pair_with_validity(
        &names(),
        &[],
        Validity {
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
        },
    )
    .unwrap()
    .ca_cert_pem;
    let previous = format!("{old}{expired}{old}garbage");
    let bundle = merge_bundle(&new, Some(&previous), ts);
    assert_eq!(
        ders(&bundle),
        [ders(&new)[0].clone(), ders(&old)[0].clone()]
    );
    assert_eq!(merge_bundle(&new, None, ts), new);
    // Capped: the new CA and three previous.
    let many: String = (0..6).map(|_| pair(30).ca_cert_pem).collect();
    assert_eq!(ders(&merge_bundle(&new, Some(&many), ts)).len(), 4);
}

#[test]
fn tls_handshake_succeeds_with_generated_pair() {
    use rustls::{
        ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
    };

    let certs = pair(30);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = ders(&certs.cert_pem);
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ders(&certs.ca_cert_pem)[0].clone()).unwrap();
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    for name in ["webhook.dhi.svc", "localhost", "127.0.0.1", "::1"] {
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client: Connection =
            ClientConnection::new(Arc::new(client_config.clone()), server_name)
                .unwrap()
                .into();
        let mut server: Connection = ServerConnection::new(Arc::new(server_config.clone()))
            .unwrap()
            .into();
        for _ in 0..10 {
            pump(&mut client, &mut server);
            pump(&mut server, &mut client);
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(
            !client.is_handshaking() && !server.is_handshaking(),
            "{name}"
        );
    }

    fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rest = buf.as_slice();
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets().unwrap();
        }
    }
}
