//! Targets from the Kubernetes API: the tenant pods scheduled on this node,
//! kept current by kube's watcher (a list, then a watch from its
//! resourceVersion), so pods appear and disappear within seconds without
//! polling.
//!
//! RBAC: `get`, `list` and `watch` on `pods`, cluster-wide (tenants live in
//! namespaces of their own; the field selector keeps it to this node).
//!
//! A pod is a tenant's only in that tenant's namespace
//! (`<--namespace-prefix><slug>`): anyone who may create a pod somewhere
//! else can label it `knowton.io/tenant`, and its results must not pass
//! for the tenant's. Kubernetes selects namespaces by name only one at a
//! time, so the watch selects on the label and the namespace is checked
//! here.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Pod;
use knowton_common::namespace::tenant_of_namespace;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::Target;

/// The label naming a pod's tenant (its slug); pods without it are not probed.
pub use knowton_common::namespace::TENANT_LABEL;
/// A container port of this name is the backend's port.
pub const HTTP_PORT_NAME: &str = "http";

/// The namespace of each discovered pod, by (tenant, pod name).
pub type PodNamespaces = HashMap<(String, String), String>;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("--kube-api-url {url:?} is not an http:// or https:// URL")]
    ApiUrl { url: String },
    #[error(
        "failed to find Kubernetes credentials: run in a cluster with a service account, \
         set KUBECONFIG, give --kube-api-url, or probe a --targets file instead"
    )]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("failed to build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client for the API server at `api_url` (no credentials), or from the
/// in-cluster service account or the kubeconfig (`Config::infer`).
pub async fn client(api_url: Option<&str>) -> Result<kube::Client, KubeError> {
    let config = match api_url {
        Some(url) => kube::Config::new(parse_api_url(url)?),
        None => kube::Config::infer()
            .await
            .map_err(KubeError::InferConfig)?,
    };
    kube::Client::try_from(config).map_err(KubeError::Client)
}

fn parse_api_url(url: &str) -> Result<hyper::Uri, KubeError> {
    let err = || KubeError::ApiUrl {
        url: url.to_owned(),
    };
    let uri: hyper::Uri = url.parse().map_err(|_| err())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(err()),
    }
}

/// Which pods are targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFilter {
    /// This node's name.
    pub node: String,
    /// The backend's port when no container has a port named `http`.
    pub default_port: u16,
    /// Prefix of the tenant namespaces.
    pub namespace_prefix: String,
}

/// A discovered pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    pub namespace: String,
    pub target: Target,
}

/// The target `pod` is, if any: a pod on this node in a tenant's namespace
/// and labelled with that tenant, Running, with an IP, and not being deleted.
pub fn pod_target(pod: &Pod, filter: &PodFilter) -> Option<PodTarget> {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    if spec.node_name.as_deref() != Some(filter.node.as_str()) {
        return None;
    }
    let namespace = meta.namespace.as_deref()?;
    let tenant = tenant_of_namespace(&filter.namespace_prefix, namespace)?;
    if meta.labels.as_ref()?.get(TENANT_LABEL)? != tenant {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let port = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(HTTP_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(filter.default_port);
    let url = match ip {
        IpAddr::V4(ip) => format!("http://{ip}:{port}"),
        IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
    };
    Some(PodTarget {
        namespace: namespace.to_owned(),
        target: Target {
            tenant: tenant.to_owned(),
            pod: meta.name.clone()?,
            url,
            storage_path: None,
        },
    })
}

/// What [`watch_pods`] publishes.
#[derive(Debug)]
pub struct Pods {
    /// The targets, in (namespace, name) order; empty until the first sync.
    pub targets: watch::Receiver<Vec<Target>>,
    /// The namespace of each target.
    pub namespaces: watch::Receiver<PodNamespaces>,
}

/// Watches the tenant pods on `filter.node` until the receivers are
/// dropped; `synced` is set once the first list is complete. Errors are
/// logged and the watch retried with kube's default backoff, keeping the
/// previous targets meanwhile; a relist (after 410 Gone) replaces them
/// only once complete.
pub fn watch_pods(client: kube::Client, filter: PodFilter, synced: Arc<AtomicBool>) -> Pods {
    let (targets_tx, targets) = watch::channel(Vec::new());
    let (namespaces_tx, namespaces) = watch::channel(PodNamespaces::new());
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={}", filter.node))
        .labels(TENANT_LABEL);
    tokio::spawn(async move {
        let mut events = pin!(watcher::watcher(api, config).default_backoff());
        let mut pods = PodSet::default();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = targets_tx.closed() => return,
            };
            let Some(event) = event else { return };
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(
                        node = %filter.node,
                        error = %err,
                        "kubernetes pod watch failed: retrying with backoff, keeping the previous targets"
                    );
                    continue;
                }
            };
            let init_done = matches!(event, Event::InitDone);
            if let Some(changes) = pods.apply(event, &filter) {
                changes.log();
                namespaces_tx.send_replace(pods.namespaces());
                targets_tx.send_replace(pods.targets());
            }
            if init_done && !synced.swap(true, Ordering::Relaxed) {
                tracing::info!(node = %filter.node, targets = pods.current.len(), "pods discovered");
            }
        }
    });
    Pods {
        targets,
        namespaces,
    }
}

/// The targets known from the watch, by (namespace, name).
#[derive(Debug, Default)]
pub(crate) struct PodSet {
    current: BTreeMap<(String, String), PodTarget>,
    /// Pods listed since the last `Init`, until `InitDone` replaces `current`.
    relisting: Option<BTreeMap<(String, String), PodTarget>>,
}

/// Targets that came and went with one event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub added: Vec<PodTarget>,
    pub removed: Vec<PodTarget>,
}

impl Changes {
    fn log(&self) {
        for p in &self.added {
            tracing::info!(tenant = %p.target.tenant, namespace = %p.namespace, pod = %p.target.pod, url = %p.target.url, "probing pod");
        }
        for p in &self.removed {
            tracing::info!(tenant = %p.target.tenant, namespace = %p.namespace, pod = %p.target.pod, "no longer probing pod");
        }
    }
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl PodSet {
    /// Applies one watcher event; `Some` when the targets changed.
    pub(crate) fn apply(&mut self, event: Event<Pod>, filter: &PodFilter) -> Option<Changes> {
        let (key, target) = match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                return None;
            }
            Event::InitApply(pod) => {
                if let (Some(listed), Some(target)) =
                    (self.relisting.as_mut(), pod_target(&pod, filter))
                {
                    listed.insert(key(&pod), target);
                }
                return None;
            }
            Event::InitDone => {
                // kube sends Init first; without it there is no list to trust.
                let listed = self.relisting.take()?;
                return self.replace(listed);
            }
            Event::Apply(pod) => (key(&pod), pod_target(&pod, filter)),
            Event::Delete(pod) => (key(&pod), None),
        };
        if self.current.get(&key) == target.as_ref() {
            return None;
        }
        let added: Vec<PodTarget> = target.iter().cloned().collect();
        let removed = match target {
            Some(target) => self.current.insert(key, target),
            None => self.current.remove(&key),
        };
        Some(Changes {
            added,
            removed: removed.into_iter().collect(),
        })
    }

    /// Replaces every target with `listed`.
    fn replace(&mut self, listed: BTreeMap<(String, String), PodTarget>) -> Option<Changes> {
        let mut changes = Changes::default();
        for (k, target) in &listed {
            if self.current.get(k) != Some(target) {
                changes.added.push(target.clone());
            }
        }
        for (k, target) in &self.current {
            if listed.get(k) != Some(target) {
                changes.removed.push(target.clone());
            }
        }
        self.current = listed;
        (!changes.added.is_empty() || !changes.removed.is_empty()).then_some(changes)
    }

    pub(crate) fn targets(&self) -> Vec<Target> {
        self.current.values().map(|p| p.target.clone()).collect()
    }

    pub(crate) fn namespaces(&self) -> PodNamespaces {
        self.current
            .values()
            .map(|p| {
                (
                    (p.target.tenant.clone(), p.target.pod.clone()),
                    p.namespace.clone(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
