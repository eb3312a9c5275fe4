//! Publishing the CA bundle into the webhook configurations.
//!
//! `webhooks` is a list, so a merge patch would replace it whole and could undo a
//! concurrent edit. Instead each entry whose `clientConfig.caBundle` differs gets a JSON
//! Patch `test` of its name at that index followed by a `replace` (or `add`) of the
//! bundle; if the list changed meanwhile the test fails, and the configuration is
//! re-read and patched again.

use std::fmt::Debug;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::certs::CertError;

/// Read-patch rounds tried before giving up on a configuration that keeps changing.
const MAX_ATTEMPTS: u32 = 5;

/// The field manager recorded for writes.
pub(crate) const FIELD_MANAGER: &str = "dhi-admission";

/// A webhook configuration kind whose entries carry a `clientConfig.caBundle`.
pub(super) trait WebhookConfiguration:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned
{
    /// The kind, for messages.
    const KIND: &'static str;
    /// Each webhook's name and current CA bundle, in list order.
    fn entries(&self) -> Vec<(&str, Option<&[u8]>)>;
}

/// Both kinds have the same `webhooks[].name` and `webhooks[].clientConfig` shape.
macro_rules! webhook_configuration {
    ($ty:ty, $kind:literal) => {
        impl WebhookConfiguration for $ty {
            const KIND: &'static str = $kind;
            fn entries(&self) -> Vec<(&str, Option<&[u8]>)> {
                let webhooks = self.webhooks.as_deref().unwrap_or_default();
                webhooks
                    .iter()
                    .map(|w| {
                        let bundle = w.client_config.ca_bundle.as_ref();
                        (w.name.as_str(), bundle.map(|b| b.0.as_slice()))
                    })
                    .collect()
            }
        }
    };
}

webhook_configuration!(MutatingWebhookConfiguration, "MutatingWebhookConfiguration");
webhook_configuration!(
    ValidatingWebhookConfiguration,
    "ValidatingWebhookConfiguration"
);

/// Sets `caBundle` to `bundle_pem` in every entry of the mutating and the validating
/// configuration named `name`. Both must exist. Returns how many entries were
/// changed (0 when everything was already current: nothing is written then).
pub(crate) async fn publish_ca_bundle(
    client: &Client,
    name: &str,
    bundle_pem: &str,
) -> Result<usize, CertError> {
    let mutating = patch_config::<MutatingWebhookConfiguration>(client, name, bundle_pem).await?;
    let validating =
        patch_config::<ValidatingWebhookConfiguration>(client, name, bundle_pem).await?;
    Ok(mutating + validating)
}

async fn patch_config<K: WebhookConfiguration>(
    client: &Client,
    name: &str,
    bundle_pem: &str,
) -> Result<usize, CertError> {
    let encoded = serde_json::to_value(ByteString(bundle_pem.as_bytes().to_vec()))
        .map_err(|e| CertError::parse("CA bundle", e))?;
    patch_with_retry::<K>(client, name, "caBundle", |config| {
        let entries = config.entries();
        if entries.is_empty() {
            warn!(config = %name, "has no webhooks: nothing to patch");
        }
        Ok(ca_bundle_patch(&entries, bundle_pem.as_bytes(), &encoded))
    })
    .await
}

/// Reads configuration `name`, asks `plan` for a JSON Patch and the number of entries
/// it changes, and sends it; on a concurrent change (409, or 422 when a `test` failed)
/// it re-reads and plans again. Nothing is written when nothing changes.
pub(super) async fn patch_with_retry<K: WebhookConfiguration>(
    client: &Client,
    name: &str,
    what: &str,
    mut plan: impl FnMut(&K) -> Result<(Value, usize), CertError>,
) -> Result<usize, CertError> {
    let resource = format!("{} {name}", K::KIND);
    let api: Api<K> = Api::all(client.clone());
    for attempt in 1..=MAX_ATTEMPTS {
        let config = api
            .get_opt(name)
            .await
            .map_err(|e| CertError::kube("reading", resource.as_str(), e))?
            .ok_or_else(|| CertError::WebhookConfigNotFound {
                kind: K::KIND,
                name: name.to_owned(),
            })?;
        let (ops, changed) = plan(&config)?;
        if changed == 0 {
            debug!(config = %resource, "{what} already current in every webhook");
            return Ok(0);
        }
        match send_json_patch::<K>(client, name, &ops).await {
            Ok(()) => {
                info!(config = %resource, webhooks = changed, "patched {what}");
                return Ok(changed);
            }
            // 409: conflicting write; 422: our `test` failed because the list changed.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => {
                warn!(config = %resource, attempt, reason = %status.message, "changed concurrently; re-reading");
            }
            Err(e) => return Err(CertError::kube("patching", resource, e)),
        }
    }
    Err(CertError::TooManyConflicts {
        resource,
        attempts: MAX_ATTEMPTS,
    })
}

/// The JSON Patch operations setting `encoded` (the base64 of `bundle`) in every entry
/// whose bundle differs, and how many entries that is.
fn ca_bundle_patch(
    entries: &[(&str, Option<&[u8]>)],
    bundle: &[u8],
    encoded: &Value,
) -> (Value, usize) {
    let mut ops = Vec::new();
    let mut changed = 0;
    for (index, (name, current)) in entries.iter().enumerate() {
        if *current == Some(bundle) {
            continue;
        }
        changed += 1;
        ops.push(json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}));
        ops.push(json!({
            "op": if current.is_some() { "replace" } else { "add" },
            "path": format!("/webhooks/{index}/clientConfig/caBundle"),
            "value": encoded,
        }));
    }
    (Value::Array(ops), changed)
}

/// Sends a JSON Patch. Built by hand: `kube::api::Patch::Json` needs kube's
/// `jsonpatch` feature, which this crate does not enable.
async fn send_json_patch<K: WebhookConfiguration>(
    client: &Client,
    name: &str,
    ops: &Value,
) -> Result<(), kube::Error> {
    let url = format!(
        "{}/{name}?fieldManager={FIELD_MANAGER}",
        K::url_path(&(), None)
    );
    let body = serde_json::to_vec(ops).map_err(kube::Error::SerdeError)?;
    let request = http::Request::patch(url)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .header(http::header::ACCEPT, "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    client.request::<K>(request).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_skips_current_entries_and_tests_names() {
        let bundle = b"PEM".as_slice();
        let encoded = json!("UEVN");
        let entries = [
            ("a", Some(bundle)),
            ("b", None),
            ("c", Some(b"old".as_slice())),
        ];
        let (ops, changed) = ca_bundle_patch(&entries, bundle, &encoded);
        assert_eq!(changed, 2);
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/webhooks/1/name", "value": "b"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "UEVN"},
                {"op": "test", "path": "/webhooks/2/name", "value": "c"},
                {"op": "replace", "path": "/webhooks/2/clientConfig/caBundle", "value": "UEVN"},
            ])
        );
        let (ops, changed) = ca_bundle_patch(&entries[..1], bundle, &encoded);
        assert_eq!((ops, changed), (json!([]), 0));
    }
}
