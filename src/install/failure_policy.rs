//! Arming: giving the webhook entries the failure policy their manifests intend, and
//! `Fail` only once a replica can answer.
//!
//! The manifests ship every entry with `failurePolicy: Ignore` and declare the intended
//! policy in the annotation [`ANNOTATION`] of each configuration (`mutate.dhi.io=Fail`):
//! the overlay or the chart decides, this module only carries it out. `certs arm` runs as a
//! sidecar of every replica and, every few seconds:
//!
//! - switches an entry to `Fail` only when every entry of its configuration carries a
//!   `caBundle` **and** an EndpointSlice of the Service lists a ready endpoint, so an
//!   install never fails closed before something can answer;
//! - switches an entry to `Ignore` at once, whatever the readiness (failing open needs no
//!   one to answer);
//! - never goes back to `Ignore` by itself when replicas go away: that would make
//!   enforcement end whenever someone can make the webhook unready.
//!
//! Each change is a JSON Patch that tests the entry's name at its index, sent through
//! [`patch_with_retry`], so a concurrent edit of the list is re-read, never overwritten.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use tracing::{error, info};

use super::configurations::{WebhookConfiguration, patch_with_retry};
use crate::certs::{CertError, IntentError, ParseProblem};

/// The annotation of a webhook configuration that declares its entries' intended policy:
/// `<entry name>=<Fail|Ignore>`, comma-separated.
pub const ANNOTATION: &str = "dhi.io/failure-policy";

/// The label the EndpointSlice controller puts on a Service's slices.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A webhook entry's `failurePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The API server admits the request when the webhook cannot be called.
    Ignore,
    /// The API server refuses the request when the webhook cannot be called.
    Fail,
}

impl FailurePolicy {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "Ignore",
            Self::Fail => "Fail",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailurePolicy {
    type Err = IntentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Ignore" => Ok(Self::Ignore),
            "Fail" => Ok(Self::Fail),
            other => Err(IntentError::NotAPolicy(other.to_owned())),
        }
    }
}

/// The intended policy of each named entry: the parsed [`ANNOTATION`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intended(BTreeMap<String, FailurePolicy>);

impl Intended {
    /// The entries and their intended policies, by name.
    pub fn entries(&self) -> impl Iterator<Item = (&str, FailurePolicy)> {
        self.0.iter().map(|(name, policy)| (name.as_str(), *policy))
    }
}

impl FromStr for Intended {
    type Err = IntentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, policy) = pair
                .split_once('=')
                .ok_or_else(|| IntentError::NotAPair(pair.to_owned()))?;
            let (name, policy) = (name.trim(), policy.trim().parse()?);
            if name.is_empty() {
                return Err(IntentError::NoName(pair.to_owned()));
            }
            if entries.insert(name.to_owned(), policy).is_some() {
                return Err(IntentError::Twice(name.to_owned()));
            }
        }
        Ok(Self(entries))
    }
}

/// What [`arm_once`] works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmOptions {
    /// Namespace of the Service.
    pub namespace: String,
    /// The Service the API server calls; one of its endpoints must be ready before `Fail`.
    pub service: String,
    /// Name shared by the Mutating- and the ValidatingWebhookConfiguration.
    pub webhook_config: String,
}

/// Why an entry is still short of its intended `Fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// No EndpointSlice of the Service lists a ready endpoint.
    NoReadyEndpoint {
        /// `<namespace>/<service>`.
        service: String,
    },
    /// An entry of the configuration has no `caBundle` yet.
    NoCaBundle {
        /// The configuration's kind.
        kind: &'static str,
        /// The entry without one.
        webhook: String,
    },
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::NoReadyEndpoint { service } => {
                write!(f, "Service {service} has no ready endpoint")
            }
            Waiting::NoCaBundle { kind, webhook } => {
                write!(f, "{kind} entry {webhook} has no caBundle")
            }
        }
    }
}

/// The result of one [`arm_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmReport {
    /// Entries whose `failurePolicy` this round changed.
    pub patched: usize,
    /// Why some entry is still short of its intended `Fail` (first reason found).
    pub waiting: Option<Waiting>,
}

/// One round: reads the Service's readiness and both configurations, and patches the
/// entries whose policy differs from the intended one where that is allowed now.
pub async fn arm_once(client: &Client, opts: &ArmOptions) -> Result<ArmReport, CertError> {
    let ready = has_ready_endpoint(client, &opts.namespace, &opts.service).await?;
    let mut report = ArmReport {
        patched: 0,
        waiting: None,
    };
    let mutating =
        arm_config::<MutatingWebhookConfiguration>(client, opts, ready, &mut report).await?;
    let validating =
        arm_config::<ValidatingWebhookConfiguration>(client, opts, ready, &mut report).await?;
    report.patched = mutating + validating;
    Ok(report)
}

/// Runs [`arm_once`] every `interval` until SIGTERM or Ctrl-C. Errors are logged and
/// retried, never fatal: as a container of the webhook's pod, an exit would make the pod
/// unready and take a replica away. Logs only when the state changes.
pub async fn arm_loop(client: Client, opts: ArmOptions, interval: Duration) {
    let mut last: Option<Result<Option<Waiting>, String>> = None;
    let rounds = async {
        loop {
            let state = match arm_once(&client, &opts).await {
                Ok(report) => {
                    if report.patched > 0 {
                        info!(patched = report.patched, "failure policies set as intended");
                    }
                    Ok(report.waiting)
                }
                Err(e) => Err(chain(&e)),
            };
            if last.as_ref() != Some(&state) {
                match &state {
                    Ok(None) => {
                        info!(config = %opts.webhook_config, "armed: every entry has its intended failure policy")
                    }
                    Ok(Some(why)) => {
                        info!(config = %opts.webhook_config, reason = %why, "waiting before failing closed")
                    }
                    Err(e) => {
                        error!(config = %opts.webhook_config, error = %e, "arming failed; retrying")
                    }
                }
                last = Some(state);
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        () = rounds => {}
        () = crate::shutdown::signal() => info!("stopping"),
    }
}

/// The error and its causes, for one log line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Whether an EndpointSlice of `namespace/service` lists an endpoint that is ready (an
/// unset `ready` counts as ready, as the API documents).
async fn has_ready_endpoint(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<bool, CertError> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let slices = api.list(&params).await.map_err(|e| {
        CertError::kube(
            "listing",
            format!("EndpointSlices of Service {namespace}/{service}"),
            e,
        )
    })?;
    Ok(slices.items.iter().any(slice_has_ready_endpoint))
}

fn slice_has_ready_endpoint(slice: &EndpointSlice) -> bool {
    slice.endpoints.iter().any(|e| {
        !e.addresses.is_empty() && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
    })
}

async fn arm_config<K: WebhookConfiguration + serde::Serialize>(
    client: &Client,
    opts: &ArmOptions,
    ready: bool,
    report: &mut ArmReport,
) -> Result<usize, CertError> {
    let service = format!("{}/{}", opts.namespace, opts.service);
    let mut waiting = None;
    let changed = patch_with_retry::<K>(client, &opts.webhook_config, "failurePolicy", |config| {
        let config = serde_json::to_value(config).map_err(|e| CertError::parse(K::KIND, e))?;
        let (ops, changed, why) = failure_policy_patch::<K>(&config, ready, &service)?;
        waiting = why;
        Ok((ops, changed))
    })
    .await?;
    if report.waiting.is_none() {
        report.waiting = waiting;
    }
    Ok(changed)
}

/// The JSON Patch giving each entry named in the configuration's [`ANNOTATION`] its
/// intended policy, where allowed: `Ignore` always, `Fail` only when `ready` and every
/// entry has a `caBundle`. Also returns how many entries change and, if an intended
/// `Fail` is held back, why.
fn failure_policy_patch<K: WebhookConfiguration>(
    config: &Value,
    ready: bool,
    service: &str,
) -> Result<(Value, usize, Option<Waiting>), CertError> {
    let what = || format!("annotation {ANNOTATION} of {} {}", K::KIND, name_of(config));
    let intended: Intended = match config["metadata"]["annotations"][ANNOTATION].as_str() {
        Some(text) => text.parse().map_err(|e| CertError::parse(what(), e))?,
        None => Intended::default(),
    };
    let webhooks = config["webhooks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let without_bundle = webhooks.iter().find(|w| {
        w["clientConfig"]["caBundle"]
            .as_str()
            .is_none_or(str::is_empty)
    });
    let held_back = match (ready, without_bundle) {
        (false, _) => Some(Waiting::NoReadyEndpoint {
            service: service.to_owned(),
        }),
        (true, Some(w)) => Some(Waiting::NoCaBundle {
            kind: K::KIND,
            webhook: w["name"].as_str().unwrap_or_default().to_owned(),
        }),
        (true, None) => None,
    };
    let mut ops = Vec::new();
    let mut waiting = None;
    for (name, policy) in intended.entries() {
        let index = webhooks
            .iter()
            .position(|w| w["name"] == name)
            .ok_or_else(|| CertError::parse(what(), ParseProblem::UnknownEntry(name.to_owned())))?;
        let current = &webhooks[index]["failurePolicy"];
        if current == policy.as_str() {
            continue;
        }
        if policy == FailurePolicy::Fail
            && let Some(why) = &held_back
        {
            waiting.get_or_insert_with(|| why.clone());
            continue;
        }
        ops.push(json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}));
        ops.push(json!({
            // `add` replaces a member that exists, and sets one the API server left unset.
            "op": "add",
            "path": format!("/webhooks/{index}/failurePolicy"),
            "value": policy.as_str(),
        }));
    }
    let changed = ops.len() / 2;
    Ok((Value::Array(ops), changed, waiting))
}

fn name_of(config: &Value) -> &str {
    config["metadata"]["name"].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    type M = MutatingWebhookConfiguration;

    fn config(annotation: Option<&str>, bundles: [bool; 2], policies: [&str; 2]) -> Value {
        let entry = |name: &str, bundle: bool, policy: &str| {
            let mut client_config = json!({"service": {"name": "svc", "namespace": "ns"}});
            if bundle {
                client_config["caBundle"] = json!("UEVN");
            }
            json!({"name": name, "failurePolicy": policy, "clientConfig": client_config})
        };
        let mut config = json!({
            "metadata": {"name": "dhi-admission"},
            "webhooks": [
                entry("mutate.dhi.io", bundles[0], policies[0]),
                entry("mutate-audit.dhi.io", bundles[1], policies[1]),
            ],
        });
        if let Some(a) = annotation {
            config["metadata"]["annotations"] = json!({ ANNOTATION: a });
        }
        config
    }

    fn set(index: usize, name: &str, policy: &str) -> Value {
        json!([
            {"op": "test", "path": format!("/webhooks/{index}/name"), "value": name},
            {"op": "add", "path": format!("/webhooks/{index}/failurePolicy"), "value": policy},
        ])
    }

    #[test]
    fn annotation_parses_pairs_and_refuses_anything_else() {
        let intended: Intended = " mutate.dhi.io=Fail, mutate-audit.dhi.io=Ignore ,"
            .parse()
            .unwrap();
        assert_eq!(
            intended.entries().collect::<Vec<_>>(),
            [
                ("mutate-audit.dhi.io", FailurePolicy::Ignore),
                ("mutate.dhi.io", FailurePolicy::Fail),
            ]
        );
        assert_eq!("".parse::<Intended>(), Ok(Intended::default()));
        for (bad, message) in [
            ("Fail", r#""Fail" is not <webhook name>=<Fail|Ignore>"#),
            (
                "a=fail",
                r#""fail" is not a failurePolicy (Fail or Ignore)"#,
            ),
            ("=Fail", r#""=Fail" names no webhook"#),
            ("a=Fail,a=Ignore", r#"webhook "a" is named twice"#),
        ] {
            let err = bad.parse::<Intended>().unwrap_err();
            assert_eq!(err.to_string(), message, "{bad}");
        }
    }

    #[test]
    fn fail_waits_for_a_ready_endpoint_and_every_ca_bundle() {
        let annotation = Some("mutate.dhi.io=Fail,mutate-audit.dhi.io=Ignore");
        let ignoring = ["Ignore", "Ignore"];
        let svc = "ns/svc";

        let (ops, n, why) =
            failure_policy_patch::<M>(&config(annotation, [true, true], ignoring), false, svc)
                .unwrap();
        assert_eq!((ops, n), (json!([]), 0));
        assert_eq!(
            why,
            Some(Waiting::NoReadyEndpoint {
                service: svc.into()
            })
        );

        let (ops, n, why) =
            failure_policy_patch::<M>(&config(annotation, [true, false], ignoring), true, svc)
                .unwrap();
        assert_eq!((ops, n), (json!([]), 0));
        assert_eq!(
            why,
            Some(Waiting::NoCaBundle {
                kind: "MutatingWebhookConfiguration",
                webhook: "mutate-audit.dhi.io".into()
            })
        );

        let (ops, n, why) =
            failure_policy_patch::<M>(&config(annotation, [true, true], ignoring), true, svc)
                .unwrap();
        assert_eq!((ops, n, why), (set(0, "mutate.dhi.io", "Fail"), 1, None));

        // Already as intended: nothing to write.
        let armed = config(annotation, [true, true], ["Fail", "Ignore"]);
        let (ops, n, why) = failure_policy_patch::<M>(&armed, true, svc).unwrap();
        assert_eq!((ops, n, why), (json!([]), 0, None));
    }

    #[test]
    fn ignore_needs_no_readiness_and_unready_never_disarms() {
        // The overlay now intends Ignore (enforce -> audit): applied even with nothing ready.
        let intended_ignore = config(
            Some("mutate.dhi.io=Ignore"),
            [false, false],
            ["Fail", "Fail"],
        );
        let (ops, n, why) = failure_policy_patch::<M>(&intended_ignore, false, "ns/svc").unwrap();
        assert_eq!((ops, n, why), (set(0, "mutate.dhi.io", "Ignore"), 1, None));

        // Intended Fail and already Fail: losing every endpoint changes nothing.
        let armed = config(Some("mutate.dhi.io=Fail"), [true, true], ["Fail", "Ignore"]);
        let (ops, n, why) = failure_policy_patch::<M>(&armed, false, "ns/svc").unwrap();
        assert_eq!((ops, n, why), (json!([]), 0, None));

        // No annotation: nothing is intended, nothing is touched.
        let bare = config(None, [true, true], ["Ignore", "Fail"]);
        let (ops, n, why) = failure_policy_patch::<M>(&bare, true, "ns/svc").unwrap();
        assert_eq!((ops, n, why), (json!([]), 0, None));
    }

    #[test]
    fn an_annotation_naming_no_entry_is_an_error() {
        let typo = config(
            Some("mutate.dhi.oi=Fail"),
            [true, true],
            ["Ignore", "Ignore"],
        );
        let err = failure_policy_patch::<M>(&typo, true, "ns/svc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parsing annotation dhi.io/failure-policy of MutatingWebhookConfiguration dhi-admission: \
             it names \"mutate.dhi.oi\", which is not an entry"
        );
    }

    #[test]
    fn endpoints_count_as_ready_unless_marked_otherwise() {
        use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
        let endpoint = |ready: Option<bool>, addresses: &[&str]| Endpoint {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        };
        let slice = |endpoints| EndpointSlice {
            endpoints,
            ..EndpointSlice::default()
        };
        assert!(!slice_has_ready_endpoint(&slice(vec![])));
        assert!(!slice_has_ready_endpoint(&slice(vec![endpoint(
            Some(false),
            &["10.0.0.1"]
        )])));
        assert!(slice_has_ready_endpoint(&slice(vec![
            endpoint(Some(false), &["10.0.0.1"]),
            endpoint(Some(true), &["10.0.0.2"]),
        ])));
        assert!(slice_has_ready_endpoint(&slice(vec![endpoint(
            None,
            &["10.0.0.3"]
        )])));
        assert!(!slice_has_ready_endpoint(&slice(vec![endpoint(
            Some(true),
            &[]
        )])));
    }
}
