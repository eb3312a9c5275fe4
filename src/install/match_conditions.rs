//! Publishing the policy's `matchConditions` into the validating webhook configuration,
//! so the API server's filter and the policy the server enforces never drift apart.
//!
//! Run by `certs bootstrap --config POLICY` after the CA bundle. Like the CA bundle, each
//! entry whose conditions differ gets a JSON Patch `test` of its name at that index and
//! an `add` (which replaces an existing member) of the list; current entries are left
//! alone, so a run with nothing to change writes nothing. Only the validating
//! configuration: see deploy/README.md ("Scope") for why the mutating one is not scoped.

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Client;
use serde_json::{Value, json};

use super::configurations::patch_with_retry;
use crate::certs::CertError;

const KIND: &str = "ValidatingWebhookConfiguration";

/// Sets `matchConditions` to `conditions` (the API's list of `{name, expression}`) in
/// every entry of the validating configuration `name`. Returns how many entries changed.
pub(crate) async fn publish_match_conditions(
    client: &Client,
    name: &str,
    conditions: &Value,
) -> Result<usize, CertError> {
    patch_with_retry::<ValidatingWebhookConfiguration>(client, name, "matchConditions", |config| {
        let config = serde_json::to_value(config).map_err(|e| CertError::parse(KIND, e))?;
        Ok(conditions_patch(&config, conditions))
    })
    .await
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
