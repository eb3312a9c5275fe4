//! The one way this binary connects to a cluster: `certs`, `scan` and `audit` build their
//! client here, from `--kubeconfig` or from where the command looks without one.

use std::path::{Path, PathBuf};

use kube::config::{
    InClusterError, InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError,
};
use kube::{Client, Config};

/// Where to look when no `--kubeconfig` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Only the in-cluster service account: for what runs in the webhook's own pods
    /// (`certs bootstrap`, `certs arm`, `audit`), which must never pick up a stray
    /// kubeconfig.
    InCluster,
    /// As kubectl does: `KUBECONFIG`, `~/.kube/config`, then the in-cluster service
    /// account. For commands a person runs (`scan`).
    Infer,
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("cannot read kubeconfig {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// The kubeconfig was read but its current context is unusable.
    #[error("kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// No service account is mounted (the command runs outside a cluster).
    #[error(
        "loading the Kubernetes client configuration from the in-cluster service account \
         (use --kubeconfig outside a cluster)"
    )]
    InCluster(#[source] InClusterError),
    /// Neither a kubeconfig nor a service account was found.
    #[error("no cluster configuration (give --kubeconfig, or run in a cluster)")]
    Infer(#[source] InferConfigError),
    /// The configuration was found but the client could not be built from it.
    #[error("cannot build the Kubernetes client")]
    Build(#[source] kube::Error),
}

/// A client from the kubeconfig file `kubeconfig` (its current context), else from
/// `fallback`, with that configuration's default namespace (the service account's
/// namespace in a cluster).
pub async fn connect(
    kubeconfig: Option<&Path>,
    fallback: Fallback,
) -> Result<(Client, String), ClientError> {
    let config = match (kubeconfig, fallback) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|source| ClientError::Read {
                path: path.to_owned(),
                source,
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.to_owned(),
                    source,
                })?
        }
        (None, Fallback::InCluster) => Config::incluster().map_err(ClientError::InCluster)?,
        (None, Fallback::Infer) => Config::infer().await.map_err(ClientError::Infer)?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(ClientError::Build)?;
    Ok((client, namespace))
}
