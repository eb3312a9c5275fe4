//! The in-cluster bootstrap: keep the serving Secret valid and the webhook
//! configurations trusting its CA.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

use super::configurations::{FIELD_MANAGER, publish_ca_bundle};
use crate::certs::{
    CA_CRT, CertError, RenewReason, TLS_CRT, TLS_KEY, TlsMaterial, Window, assess, generate_pair,
    merge_bundle, write_serving_files,
};

/// Read-write rounds tried on the Secret before giving up.
const MAX_ATTEMPTS: u32 = 5;
/// The Secret type written on creation.
const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// What [`bootstrap_with`] works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Namespace of the Secret and of the Service.
    pub namespace: String,
    /// Name of the TLS Secret holding `ca.crt`, `tls.crt` and `tls.key`.
    pub secret_name: String,
    /// Name of the Service the API server calls; the certificate covers its DNS names.
    pub service: String,
    /// Name shared by the MutatingWebhookConfiguration and the
    /// ValidatingWebhookConfiguration whose `caBundle`s are kept current.
    pub webhook_config: String,
    /// Validity of newly generated certificates.
    pub validity: Duration,
    /// Where to also write `tls.crt` and `tls.key`, if anywhere.
    pub out_dir: Option<PathBuf>,
}

impl BootstrapOptions {
    /// The name the API server verifies: `<service>.<namespace>.svc`.
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }
}

/// What happened to the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// There was no Secret: this run created it.
    Created,
    /// The Secret was missing keys, unparseable, not covering the service, or past two
    /// thirds of its validity: this run replaced its certificate.
    Renewed,
    /// The Secret was valid and kept as is.
    Reused,
    /// Another replica created or renewed the Secret concurrently; its result is used.
    AdoptedFromPeer,
}

impl fmt::Display for BootstrapOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootstrapOutcome::Created => "created",
            BootstrapOutcome::Renewed => "renewed",
            BootstrapOutcome::Reused => "reused",
            BootstrapOutcome::AdoptedFromPeer => "adopted from peer",
        })
    }
}

/// The result of [`bootstrap_with`]. `Debug` never prints the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapReport {
    /// What happened to the Secret.
    pub outcome: BootstrapOutcome,
    /// The material now in the Secret.
    pub material: TlsMaterial,
    /// How many webhook entries had their `caBundle` patched (0: all were current).
    pub patched_webhooks: usize,
    /// Expiry of the serving certificate, Unix seconds.
    pub not_after: i64,
}

/// The DNS names of a Service: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and
/// `<svc>.<ns>.svc.cluster.local`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Makes sure the Secret holds a valid serving certificate for the Service, that both
/// webhook configurations trust its CA, and writes the pair to `out_dir` if set.
///
/// Safe to run from several replicas at once: creation is create-if-absent and
/// renewal an update guarded by the `resourceVersion` read; the loser of either race
/// re-reads and uses the winner's certificate. A run that finds everything valid
/// writes nothing to the API.
pub async fn bootstrap_with(
    client: Client,
    opts: &BootstrapOptions,
) -> Result<BootstrapReport, CertError> {
    let (outcome, material, window) = sync_secret(&client, opts).await?;
    info!(
        secret = %opts.secret_name,
        namespace = %opts.namespace,
        %outcome,
        not_after = window.not_after,
        "serving certificate ready"
    );
    let patched_webhooks =
        publish_ca_bundle(&client, &opts.webhook_config, &material.ca_bundle_pem).await?;
    if let Some(dir) = &opts.out_dir {
        write_serving_files(dir, &material.cert_pem, &material.key_pem)?;
        info!(dir = %dir.display(), "wrote {TLS_CRT} and {TLS_KEY}");
    }
    Ok(BootstrapReport {
        outcome,
        material,
        patched_webhooks,
        not_after: window.not_after,
    })
}

/// Reads the Secret and keeps it, creates it or renews it, retrying lost races.
async fn sync_secret(
    client: &Client,
    opts: &BootstrapOptions,
) -> Result<(BootstrapOutcome, TlsMaterial, Window), CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &opts.namespace);
    let resource = format!("Secret {}/{}", opts.namespace, opts.secret_name);
    let server_name = opts.server_name();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let mut lost_race = false;
    for _ in 0..MAX_ATTEMPTS {
        let existing = api
            .get_opt(&opts.secret_name)
            .await
            .map_err(|e| CertError::kube("reading", resource.as_str(), e))?;
        let now = unix_now();
        let Some(secret) = existing else {
            info!(secret = %resource, reason = %RenewReason::Missing, "generating a certificate");
            let (material, window) = issue(opts, None, now)?;
            match api.create(&params, &new_secret(opts, &material)).await {
                Ok(_) => return Ok((BootstrapOutcome::Created, material, window)),
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    info!(secret = %resource, "another replica created it first; using theirs");
                    lost_race = true;
                    continue;
                }
                Err(e) => return Err(CertError::kube("creating", resource, e)),
            }
        };
        let reason = match usable(&secret, &server_name, now) {
            Ok((material, window)) => {
                let outcome = if lost_race {
                    BootstrapOutcome::AdoptedFromPeer
                } else {
                    BootstrapOutcome::Reused
                };
                return Ok((outcome, material, window));
            }
            Err(reason) => reason,
        };
        if secret.immutable == Some(true) {
            return Err(CertError::ImmutableSecret { resource, reason });
        }
        info!(secret = %resource, %reason, "renewing the certificate");
        let previous_bundle = secret_text(&secret, CA_CRT);
        let (material, window) = issue(opts, previous_bundle, now)?;
        match api
            .replace(
                &opts.secret_name,
                &params,
                &renewed_secret(secret.clone(), &material),
            )
            .await
        {
            Ok(_) => return Ok((BootstrapOutcome::Renewed, material, window)),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                info!(secret = %resource, "another replica renewed it first; using theirs");
                lost_race = true;
            }
            Err(e) => return Err(CertError::kube("updating", resource, e)),
        }
    }
    Err(CertError::TooManyConflicts {
        resource,
        attempts: MAX_ATTEMPTS,
    })
}

/// Generates a CA and serving certificate for the Service; the bundle keeps the
/// still-valid CAs of `previous_bundle`.
fn issue(
    opts: &BootstrapOptions,
    previous_bundle: Option<&str>,
    now: i64,
) -> Result<(TlsMaterial, Window), CertError> {
    let generated = generate_pair(
        &service_dns_names(&opts.service, &opts.namespace),
        &[],
        opts.validity,
    )?;
    let material = TlsMaterial {
        ca_bundle_pem: merge_bundle(&generated.ca_cert_pem, previous_bundle, now),
        cert_pem: generated.cert_pem,
        key_pem: generated.key_pem,
    };
    // Check what we made with the same rules as what we read.
    let window = assess(&material, &opts.server_name(), now).map_err(CertError::SelfCheck)?;
    Ok((material, window))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn secret_text<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    let bytes = secret.data.as_ref()?.get(key)?;
    std::str::from_utf8(&bytes.0).ok()
}

/// The Secret's material if it can keep serving `server_name`, or why not.
fn usable(
    secret: &Secret,
    server_name: &str,
    now: i64,
) -> Result<(TlsMaterial, Window), RenewReason> {
    let material = material_of(secret)?;
    let window = assess(&material, server_name, now)?;
    Ok((material, window))
}

/// The TLS material of a Secret, or why there is none.
fn material_of(secret: &Secret) -> Result<TlsMaterial, RenewReason> {
    let text = |key: &'static str| {
        secret_text(secret, key)
            .map(str::to_owned)
            .ok_or(RenewReason::MissingKey(key))
    };
    Ok(TlsMaterial {
        ca_bundle_pem: text(CA_CRT)?,
        cert_pem: text(TLS_CRT)?,
        key_pem: text(TLS_KEY)?,
    })
}

fn secret_data(material: &TlsMaterial) -> [(String, ByteString); 3] {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    [
        (CA_CRT.to_owned(), bytes(&material.ca_bundle_pem)),
        (TLS_CRT.to_owned(), bytes(&material.cert_pem)),
        (TLS_KEY.to_owned(), bytes(&material.key_pem)),
    ]
}

fn new_secret(opts: &BootstrapOptions, material: &TlsMaterial) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(opts.secret_name.clone()),
            namespace: Some(opts.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from(secret_data(material))),
        ..Secret::default()
    }
}

/// The Secret with the new material; its metadata (resourceVersion included, which
/// makes the update conditional), type and other keys are kept.
fn renewed_secret(mut secret: Secret, material: &TlsMaterial) -> Secret {
    if secret
        .type_
        .as_deref()
        .is_some_and(|t| t != TLS_SECRET_TYPE)
    {
        // The type is immutable; the keys work the same in any type.
        warn!(r#type = ?secret.type_, "Secret is not of type {TLS_SECRET_TYPE}; keeping its type");
    }
    secret
        .data
        .get_or_insert_default()
        .extend(secret_data(material));
    secret.string_data = None;
    secret
}
