//! Volume usage of the discovered pods, from the kubelet's stats summary of
//! this node read through the API server's node proxy, once per round.
//!
//! RBAC: `get` on `nodes/proxy` (the API server authorises
//! `GET /api/v1/nodes/{node}/proxy/stats/summary` as that subresource).

use std::collections::HashMap;
use std::time::Duration;

use knowton_proto::agent::v1::{PodResult, StorageSample};
use serde::Deserialize;
use tokio::sync::watch;

use crate::discover::kubernetes::PodNamespaces;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("failed to read the stats summary of node {node}")]
    Fetch {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read the stats summary of node {node}: no answer within {after:?}")]
    Timeout { node: String, after: Duration },
}

/// The parts of the kubelet's `/stats/summary` used here.
#[derive(Debug, Default, Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    #[serde(default)]
    pub volume: Vec<VolumeStats>,
}

#[derive(Debug, Deserialize)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    #[serde(default)]
    pub used_bytes: Option<u64>,
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// Set for volumes backed by a PersistentVolumeClaim.
    #[serde(default)]
    pub pvc_ref: Option<serde_json::Value>,
}

impl Summary {
    /// Each pod's PersistentVolumeClaim-backed volumes added up, by
    /// (namespace, name). ConfigMap, Secret, projected and emptyDir volumes
    /// (no `pvcRef`) are not the tenant's storage; a pod without a PVC, or
    /// whose PVC volumes report no figures yet, has none.
    pub fn pvc_usage(&self) -> HashMap<(String, String), StorageSample> {
        let mut usage = HashMap::new();
        for pod in &self.pods {
            let mut sample: Option<StorageSample> = None;
            for volume in pod.volume.iter().filter(|v| v.pvc_ref.is_some()) {
                if volume.used_bytes.is_none() && volume.capacity_bytes.is_none() {
                    continue;
                }
                let sum = sample.get_or_insert_default();
                sum.used_bytes = sum
                    .used_bytes
                    .saturating_add(volume.used_bytes.unwrap_or(0));
                sum.capacity_bytes = sum
                    .capacity_bytes
                    .saturating_add(volume.capacity_bytes.unwrap_or(0));
            }
            if let Some(sample) = sample {
                usage.insert(
                    (pod.pod_ref.namespace.clone(), pod.pod_ref.name.clone()),
                    sample,
                );
            }
        }
        usage
    }
}

/// Reads this node's stats summary for the pods Kubernetes discovery found.
#[derive(Clone)]
pub struct PodStorage {
    client: kube::Client,
    node: String,
    namespaces: watch::Receiver<PodNamespaces>,
}

impl std::fmt::Debug for PodStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodStorage")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The storage of the discovered pods at one moment, by (tenant, pod).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Volumes(HashMap<(String, String), StorageSample>);

impl PodStorage {
    pub fn new(
        client: kube::Client,
        node: &str,
        namespaces: watch::Receiver<PodNamespaces>,
    ) -> Self {
        PodStorage {
            client,
            node: node.to_owned(),
            namespaces,
        }
    }

    /// Fetches the summary once, within `timeout`.
    pub async fn fetch(&self, timeout: Duration) -> Result<Volumes, KubeletError> {
        let path = format!("/api/v1/nodes/{}/proxy/stats/summary", self.node);
        let request = hyper::Request::get(path)
            .body(Vec::new())
            .expect("a GET with a path is a valid request");
        let summary: Summary = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| KubeletError::Timeout {
                node: self.node.clone(),
                after: timeout,
            })?
            .map_err(|source| KubeletError::Fetch {
                node: self.node.clone(),
                source,
            })?;
        Ok(Volumes::join(&summary, &self.namespaces.borrow()))
    }
}

impl Volumes {
    /// The summary's PVC usage of each discovered pod.
    pub fn join(summary: &Summary, namespaces: &PodNamespaces) -> Self {
        let usage = summary.pvc_usage();
        Volumes(
            namespaces
                .iter()
                .filter_map(|((tenant, pod), namespace)| {
                    let sample = usage.get(&(namespace.clone(), pod.clone()))?;
                    Some(((tenant.clone(), pod.clone()), *sample))
                })
                .collect(),
        )
    }

    /// Sets the storage of the results that have none.
    pub fn fill(&self, results: &mut [PodResult]) {
        for result in results.iter_mut().filter(|r| r.storage.is_none()) {
            result.storage = self
                .0
                .get(&(result.tenant.clone(), result.pod.clone()))
                .copied();
        }
    }
}

#[cfg(test)]
mod tests;
