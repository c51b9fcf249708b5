//! Which pods to probe: the tenant pods on this node from the Kubernetes
//! API (the default in a cluster), or a targets file without Kubernetes.
//!
//! Either source publishes the complete list of targets on a watch channel
//! and sets a flag once the first complete list is known (readiness).
//!
//! RBAC in a cluster: `get`/`list`/`watch` on `pods` cluster-wide
//! ([`kubernetes`]; only pods in tenant namespaces are probed) and `get`
//! on `nodes/proxy` (storage, [`crate::kubelet`]).

pub(crate) mod file;
pub mod kubernetes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::config::DiscoverySource;
use crate::kubelet::PodStorage;

pub use file::{TargetsError, read_targets, watch_targets};

/// How often the targets file is checked for changes.
const TARGETS_FILE_EVERY: Duration = Duration::from_secs(2);

/// One pod to probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    /// The tenant's slug.
    pub tenant: String,
    /// The pod's name.
    pub pod: String,
    /// Base URL of the pod's backend, e.g. `http://10.0.3.7:3000`.
    pub url: String,
    /// Filesystem path of the pod's volume, for storage usage (targets file
    /// only: in Kubernetes it comes from the kubelet, see [`PodStorage`]).
    #[serde(default)]
    pub storage_path: Option<PathBuf>,
}

/// A running discovery.
#[derive(Debug)]
pub struct Discovery {
    /// The current targets; empty until the first sync.
    pub targets: watch::Receiver<Vec<Target>>,
    /// The volume usage of the discovered pods (Kubernetes only).
    pub storage: Option<PodStorage>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Targets(#[from] TargetsError),
    #[error(transparent)]
    Kube(#[from] kubernetes::KubeError),
}

/// Starts discovering from `source`; `synced` is set once the first
/// complete list of targets is published.
pub async fn start(
    source: DiscoverySource,
    node: &str,
    synced: Arc<AtomicBool>,
) -> Result<Discovery, DiscoveryError> {
    match source {
        DiscoverySource::File(path) => {
            let targets = watch_targets(path, TARGETS_FILE_EVERY)?;
            synced.store(true, Ordering::Relaxed);
            Ok(Discovery {
                targets,
                storage: None,
            })
        }
        DiscoverySource::Kubernetes {
            api_url,
            pod_port,
            namespace_prefix,
        } => {
            let client = kubernetes::client(api_url.as_deref()).await?;
            let pods = kubernetes::watch_pods(
                client.clone(),
                kubernetes::PodFilter {
                    node: node.to_owned(),
                    default_port: pod_port,
                    namespace_prefix,
                },
                synced,
            );
            Ok(Discovery {
                targets: pods.targets,
                storage: Some(PodStorage::new(client, node, pods.namespaces)),
            })
        }
    }
}
