//! Publishing the policy's `matchConditions` into the validating webhook configuration,
//! so the API server's filter and the policy the server enforces never drift apart.
//!
//! Run by `certs bootstrap --config POLICY` after the CA bundle. Like the CA bundle, each
//! entry whose conditions differ gets a JSON Patch `test` of its name at that index and
//! an `add` (which replaces an existing member) of the list; current entries are left
//! alone, so a run with nothing to change writes nothing. Only the validating
//! configuration: see deploy/README.md ("Scope") for why the mutating one is not scoped.

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::{Api, Client, Resource};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::CertError;
use super::webhooks::FIELD_MANAGER;

const KIND: &str = "ValidatingWebhookConfiguration";
const MAX_ATTEMPTS: u32 = 5;

/// Sets `matchConditions` to `conditions` (the API's list of `{name, expression}`) in
/// every entry of the validating configuration `name`. Returns how many entries changed.
pub(crate) async fn publish_match_conditions(
    client: &Client,
    name: &str,
    conditions: &Value,
) -> Result<usize, CertError> {
    let resource = format!("{KIND} {name}");
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for attempt in 1..=MAX_ATTEMPTS {
        let config = api
            .get_opt(name)
            .await
            .map_err(|e| CertError::kube("reading", resource.as_str(), e))?
            .ok_or_else(|| CertError::WebhookConfigNotFound {
                kind: KIND,
                name: name.to_owned(),
            })?;
        let config = serde_json::to_value(&config).map_err(|e| CertError::parse(KIND, e))?;
        let (ops, changed) = conditions_patch(&config, conditions);
        if changed == 0 {
            return Ok(0);
        }
        match send_json_patch(client, name, &ops).await {
            Ok(_) => {
                info!(config = %resource, webhooks = changed, "patched matchConditions");
                return Ok(changed);
            }
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

/// A JSON Patch built by hand, as in `webhooks.rs` (kube's `jsonpatch` feature is off).
async fn send_json_patch(client: &Client, name: &str, ops: &Value) -> Result<(), kube::Error> {
    let url = format!(
        "{}/{name}?fieldManager={FIELD_MANAGER}",
        ValidatingWebhookConfiguration::url_path(&(), None)
    );
    let body = serde_json::to_vec(ops).map_err(kube::Error::SerdeError)?;
    let request = http::Request::patch(url)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .header(http::header::ACCEPT, "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    client
        .request::<ValidatingWebhookConfiguration>(request)
        .await
        .map(|_| ())
}

/// The JSON Patch setting `conditions` in every entry whose conditions differ.
fn conditions_patch(config: &Value, conditions: &Value) -> (Value, usize) {
    let mut ops = Vec::new();
    let entries = config["webhooks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (index, webhook) in entries.iter().enumerate() {
        if webhook["matchConditions"] == *conditions {
            continue;
        }
        ops.push(json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": webhook["name"]}));
        ops.push(json!({"op": "add", "path": format!("/webhooks/{index}/matchConditions"), "value": conditions}));
    }
    let changed = ops.len() / 2;
    (Value::Array(ops), changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_differing_entries_are_patched_with_a_name_test() {
        let conditions = json!([{"name": "a", "expression": "true"}]);
        let config = json!({"webhooks": [
            {"name": "validate.dhi.io", "matchConditions": conditions},
            {"name": "validate-audit.dhi.io"},
        ]});
        let (ops, changed) = conditions_patch(&config, &conditions);
        assert_eq!(changed, 1);
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/webhooks/1/name", "value": "validate-audit.dhi.io"},
                {"op": "add", "path": "/webhooks/1/matchConditions", "value": conditions},
            ])
        );
        let current = json!({"webhooks": [{"name": "x", "matchConditions": conditions}]});
        assert_eq!(conditions_patch(&current, &conditions), (json!([]), 0));
    }
}
