//! Reading the cluster: paginated lists whose items are read one page at a time and
//! only as far as the engine and the owner graph need them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use http_body_util::{BodyExt, Limited};
use kube::Client;
use kube::api::ListParams;
use serde::Deserialize;
use serde_json::value::RawValue;

use dhi_policy::WorkloadKind;

/// The largest list page read: a page of 500 pods with their managedFields is a few
/// MiB; anything past this is refused rather than held.
pub(super) const MAX_PAGE_BYTES: usize = 64 << 20;

/// Where to list: one namespace or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Where {
    /// `-n NAME`
    Namespace(String),
    /// `-A`
    All,
}

/// The collection URL of a kind's objects (`/apis/apps/v1/namespaces/NS/deployments`).
pub(super) fn collection(kind: WorkloadKind, at: &Where) -> String {
    let group = match kind.group() {
        "" => "/api/v1".to_owned(),
        group => format!("/apis/{group}/v1"),
    };
    let plural = kind.plural();
    match at {
        Where::Namespace(ns) => format!("{group}/namespaces/{ns}/{plural}"),
        Where::All => format!("{group}/{plural}"),
    }
}

/// One page of a list: the items left raw, borrowed from the response.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    items: Vec<&'a RawValue>,
    #[serde(default)]
    metadata: ListMeta,
}

#[derive(Default, Deserialize)]
struct ListMeta {
    #[serde(rename = "continue", default)]
    next: Option<String>,
}

/// The metadata the scan reads from an item; everything else (managedFields,
/// annotations, status) is skipped by the parser without being kept.
#[derive(Debug, Deserialize)]
pub(super) struct Item<'a> {
    /// Its metadata.
    #[serde(borrow)]
    pub metadata: ItemMeta<'a>,
}

/// `metadata`, the fields the scan reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ItemMeta<'a> {
    /// Name.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// Namespace (empty for namespaces).
    #[serde(borrow, default)]
    pub namespace: Cow<'a, str>,
    /// Uid.
    #[serde(borrow, default)]
    pub uid: Cow<'a, str>,
    /// Labels (read for namespaces).
    #[serde(borrow, default)]
    pub labels: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    /// Owners; the one with `controller: true` is the workload's controller.
    #[serde(borrow, default)]
    pub owner_references: Vec<OwnerReference<'a>>,
}

/// `metadata.ownerReferences[]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OwnerReference<'a> {
    /// `apps/v1`, ...
    #[serde(borrow, default)]
    pub api_version: Cow<'a, str>,
    /// `ReplicaSet`, ...
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
    /// The owner's uid.
    #[serde(borrow, default)]
    pub uid: Cow<'a, str>,
    /// Whether it is the managing controller.
    #[serde(default)]
    pub controller: bool,
}

impl ItemMeta<'_> {
    /// The managing controller's reference, if any.
    pub(super) fn controller(&self) -> Option<&OwnerReference<'_>> {
        self.owner_references.iter().find(|o| o.controller)
    }
}

/// Lists `path` page by page (`limit`, `continue`), handing each item to `each` with
/// the page still borrowed; returns the number of items.
pub(super) async fn list_each(
    client: &Client,
    path: &str,
    page_size: u32,
    mut each: impl FnMut(&RawValue),
) -> anyhow::Result<usize> {
    let mut next: Option<String> = None;
    let mut count = 0;
    loop {
        let mut params = ListParams::default().limit(page_size);
        if let Some(token) = &next {
            params = params.continue_token(token);
        }
        let request = kube::core::Request::new(path)
            .list(&params)
            .map_err(|err| anyhow!("{path}: {err}"))?;
        let body = get(client, request, path).await?;
        let page: Page<'_> =
            serde_json::from_slice(&body).with_context(|| format!("{path}: not a list"))?;
        for item in page.items {
            each(item);
            count += 1;
        }
        match page.metadata.next.filter(|t| !t.is_empty()) {
            Some(token) => next = Some(token),
            None => return Ok(count),
        }
    }
}

/// GETs one object's metadata (a namespace for `-n`).
pub(super) async fn get_labels(
    client: &Client,
    path: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|err| anyhow!("{path}: {err}"))?;
    let body = get(client, request, path).await?;
    let item: Item<'_> =
        serde_json::from_slice(&body).with_context(|| format!("{path}: not an object"))?;
    Ok(item
        .metadata
        .labels
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// Sends a GET and reads its body, at most [`MAX_PAGE_BYTES`]; a non-success status is
/// an error carrying the API server's message.
async fn get(
    client: &Client,
    request: http::Request<Vec<u8>>,
    path: &str,
) -> anyhow::Result<bytes::Bytes> {
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_PAGE_BYTES)
        .collect()
        .await
        .map_err(|err| anyhow!("GET {path}: {err}"))?
        .to_bytes();
    if !status.is_success() {
        #[derive(Deserialize)]
        struct Status {
            #[serde(default)]
            message: String,
        }
        let message = serde_json::from_slice::<Status>(&body)
            .map(|s| s.message)
            .unwrap_or_default();
        return Err(Refused {
            path: path.to_owned(),
            status,
            message,
        }
        .into());
    }
    Ok(body)
}

/// The API server answered with an error status.
#[derive(Debug, thiserror::Error)]
#[error("GET {path}: {status}: {message}")]
pub(super) struct Refused {
    /// The path asked for.
    pub path: String,
    /// The status.
    pub status: http::StatusCode,
    /// The Status object's message.
    pub message: String,
}

/// Whether `name` is a valid namespace name (an RFC 1123 label), so it can go into a path.
pub(super) fn valid_namespace(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_by_kind_and_scope() {
        let ns = Where::Namespace("team".to_owned());
        assert_eq!(
            collection(WorkloadKind::Pod, &ns),
            "/api/v1/namespaces/team/pods"
        );
        assert_eq!(
            collection(WorkloadKind::CronJob, &Where::All),
            "/apis/batch/v1/cronjobs"
        );
        assert_eq!(
            collection(WorkloadKind::Deployment, &ns),
            "/apis/apps/v1/namespaces/team/deployments"
        );
    }

    #[test]
    fn namespace_names_are_labels() {
        assert!(valid_namespace("team-a"));
        assert!(valid_namespace("a"));
        for bad in ["", "-a", "a-", "Team", "a/b", "a.b", &"a".repeat(64)] {
            assert!(!valid_namespace(bad), "{bad}");
        }
    }

    #[test]
    fn items_keep_only_the_metadata_the_scan_reads() {
        let json = r#"{"metadata": {"name": "web-1", "namespace": "team", "uid": "u1",
            "managedFields": [{"manager": "kubectl"}],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                 "uid": "u0", "controller": true}]},
            "spec": {}}"#;
        let item: Item<'_> = serde_json::from_str(json).unwrap();
        let owner = item.metadata.controller().unwrap();
        assert_eq!(
            (owner.kind.as_ref(), owner.uid.as_ref()),
            ("ReplicaSet", "u0")
        );
        assert_eq!(item.metadata.name, "web-1");
    }
}
