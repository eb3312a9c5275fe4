//! Installing into a cluster: the serving Secret and the webhook configurations' CA bundles
//! (`certs bootstrap`), their matchConditions, and their failure policies (`certs arm`).
//! The certificates themselves are [`crate::certs`]'s.
//!
//! # `certs bootstrap`
//!
//! Run as an init container, [`bootstrap_with`] reads the TLS Secret (`ca.crt`,
//! `tls.crt`, `tls.key`) and keeps it when it parses, its key matches, its chain
//! verifies against `ca.crt` for `<service>.<namespace>.svc`, and it is not past two
//! thirds of its validity. Otherwise it generates a new CA and serving certificate
//! (covering `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`)
//! and writes them: a create when the Secret is absent, an update conditional on the
//! `resourceVersion` read when renewing. When two replicas race, the loser gets a 409,
//! re-reads and uses the winner's certificate. On renewal `ca.crt` becomes a bundle of
//! the new CA followed by the previous, still unexpired, CAs (at most four in all), so
//! the API server keeps trusting replicas that still serve the previous certificate
//! during the rollout. The CA key is not stored: every renewal makes a new CA.
//!
//! The bundle is then set as `caBundle` of every webhook of the
//! MutatingWebhookConfiguration and the ValidatingWebhookConfiguration named by
//! `--webhook-config` (both must exist), with a JSON Patch that tests each entry's
//! name; entries already current are not touched. Finally `tls.crt` and `tls.key` are
//! written to `--out`, if given. A run that finds everything valid writes nothing.
//!
//! ## RBAC
//!
//! The service account of the pod running the bootstrap needs (names are examples):
//!
//! ```yaml
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata: {name: dhi-admission-certs, namespace: dhi-admission}
//! rules:
//!   - apiGroups: [""]
//!     resources: [secrets]
//!     resourceNames: [dhi-admission-tls]     # --secret
//!     verbs: [get, update]
//!   - apiGroups: [""]
//!     resources: [secrets]
//!     verbs: [create]                        # create cannot be restricted by resourceNames
//! ---
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: ClusterRole
//! metadata: {name: dhi-admission-certs}
//! rules:
//!   - apiGroups: [admissionregistration.k8s.io]
//!     resources: [mutatingwebhookconfigurations, validatingwebhookconfigurations]
//!     resourceNames: [dhi-admission]         # --webhook-config
//!     verbs: [get, patch]
//! ```
//!
//! bound with a RoleBinding in the namespace and a ClusterRoleBinding.
//!
//! # `certs arm`
//!
//! Runs beside the server in every replica ([`arm_loop`], or one round with `--once`):
//! gives each webhook entry the failure policy its configuration's
//! [`FAILURE_POLICY_ANNOTATION`] intends, `Fail` only once every entry has a `caBundle` and
//! an EndpointSlice of the Service lists a ready endpoint (see the `failure_policy` module). It needs
//! `list` on `endpointslices` (`discovery.k8s.io`) in the Service's namespace and the same
//! `get`/`patch` on the two configurations as above (deploy/base/rbac-arm.yaml).

mod configurations;
mod failure_policy;
mod match_conditions;
mod serving_secret;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::certs::days;
use crate::kube_client::{Fallback, connect};

pub use failure_policy::{
    ANNOTATION as FAILURE_POLICY_ANNOTATION, ArmOptions, ArmReport, FailurePolicy, Intended,
    Waiting, arm_loop, arm_once,
};
pub use serving_secret::{
    BootstrapOptions, BootstrapOutcome, BootstrapReport, bootstrap_with, service_dns_names,
};

/// Arguments of `dhi-admission certs bootstrap`.
#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Kubeconfig file to use instead of the in-cluster service account.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Secret and the Service [default: the service account's, or the
    /// kubeconfig context's, namespace].
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the TLS Secret to create or renew.
    #[arg(long, value_name = "NAME")]
    pub secret: String,
    /// Name of the Service the API server calls.
    #[arg(long, value_name = "NAME")]
    pub service: String,
    /// Name of both the Mutating- and the ValidatingWebhookConfiguration to patch.
    #[arg(long = "webhook-config", value_name = "NAME")]
    pub webhook_config: String,
    /// Directory to also write tls.crt and tls.key into (e.g. an emptyDir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Validity of newly generated certificates, in days.
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3_650))]
    pub days: u32,
    /// Policy file: also set the validating configuration's matchConditions to the ones
    /// generated from it (`dhi-admission webhooks`), where they differ.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Arguments of `dhi-admission certs arm`.
#[derive(Debug, clap::Args)]
pub struct ArmArgs {
    /// Kubeconfig file to use instead of the in-cluster service account.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Service [default: the service account's, or the kubeconfig
    /// context's, namespace].
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the Service the API server calls: `Fail` waits for one of its endpoints
    /// to be ready.
    #[arg(long, value_name = "NAME")]
    pub service: String,
    /// Name of both the Mutating- and the ValidatingWebhookConfiguration to arm.
    #[arg(long = "webhook-config", value_name = "NAME")]
    pub webhook_config: String,
    /// Seconds between two rounds.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub interval_seconds: u64,
    /// One round, then exit (0 whether armed or still waiting; the log says which).
    #[arg(long)]
    pub once: bool,
}

/// Gives the webhook entries their intended failure policy: `dhi-admission certs arm`.
pub async fn arm(args: ArmArgs) -> anyhow::Result<()> {
    let interval = Duration::from_secs(args.interval_seconds);
    let (client, default_namespace) = loop {
        match connect(args.kubeconfig.as_deref(), Fallback::InCluster).await {
            Ok(found) => break found,
            Err(e) if args.once => return Err(e.into()),
            // As a container of the webhook's pods, exiting would make the pod unready:
            // keep trying (a token volume can appear late), and say why.
            Err(e) => {
                tracing::error!(error = %anyhow::Error::from(e), "no API client yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = crate::shutdown::signal() => return Ok(()),
                }
            }
        }
    };
    let opts = ArmOptions {
        namespace: args.namespace.unwrap_or(default_namespace),
        service: args.service,
        webhook_config: args.webhook_config,
    };
    if !args.once {
        arm_loop(client, opts, interval).await;
        return Ok(());
    }
    let report = arm_once(&client, &opts)
        .await
        .with_context(|| format!("arming the webhook configurations {}", opts.webhook_config))?;
    match &report.waiting {
        Some(why) => {
            tracing::info!(patched = report.patched, reason = %why, "waiting before failing closed")
        }
        None => tracing::info!(
            patched = report.patched,
            "armed: every entry has its intended failure policy"
        ),
    }
    Ok(())
}

/// Bootstraps the in-cluster certificate: `dhi-admission certs bootstrap`.
pub async fn bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    // Read before anything is written: a bad policy fails the bootstrap, not half of it.
    let conditions = match &args.config {
        Some(path) => {
            let policy = crate::policy_source::load_policy(path)?;
            Some(crate::webhooks::conditions_value(
                &dhi_policy::scope::match_conditions(&policy),
            ))
        }
        None => None,
    };
    let (client, default_namespace) =
        connect(args.kubeconfig.as_deref(), Fallback::InCluster).await?;
    let namespace = args.namespace.unwrap_or(default_namespace);
    let opts = BootstrapOptions {
        namespace,
        secret_name: args.secret,
        service: args.service,
        webhook_config: args.webhook_config,
        validity: days(args.days),
        out_dir: args.out,
    };
    let report = bootstrap_with(client.clone(), &opts)
        .await
        .with_context(|| {
            format!(
                "bootstrapping Secret {}/{} for Service {}",
                opts.namespace, opts.secret_name, opts.service
            )
        })?;
    if let Some(conditions) = &conditions {
        match_conditions::publish_match_conditions(&client, &opts.webhook_config, conditions)
            .await
            .context("publishing matchConditions")?;
    }
    tracing::info!(
        outcome = %report.outcome,
        patched_webhooks = report.patched_webhooks,
        not_after = report.not_after,
        "certificate bootstrap done"
    );
    Ok(())
}
