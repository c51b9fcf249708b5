//! Where each tenant pod runs, as the API server says. With a cluster the
//! coordinator stores a pod's result only when it comes from the agent of
//! the node that pod runs on, and only for a pod in the namespace of the
//! tenant the result names: an agent's certificate binds it to its node
//! (hello checked in `service.rs`), and this table binds pods to nodes.
//!
//! Kept current by one cluster-wide watch of the pods labelled
//! `knowton.io/tenant` (RBAC: `list` and `watch` on `pods`); pods outside
//! the tenant namespaces are not kept, whatever their labels say.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use k8s_openapi::api::core::v1::Pod;
use knowton_common::namespace::{TENANT_LABEL, tenant_of_namespace};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::registry::Registry;
use super::rejected::RejectedResult;

/// Node of each pod, by pod name, by tenant slug.
type Nodes = HashMap<String, HashMap<String, String>>;

/// The tenant pods and their nodes.
#[derive(Debug)]
pub struct Placement {
    namespace_prefix: String,
    pods: RwLock<Nodes>,
    /// The first complete list is in: before it, no pod is known.
    listed: AtomicBool,
}

/// A read of the table, for checking a whole batch under one lock.
#[derive(Debug)]
pub struct PlacementView<'a> {
    pods: RwLockReadGuard<'a, Nodes>,
    listed: bool,
}

impl PlacementView<'_> {
    /// Whether the agent of `node` may report `pod` of `tenant`.
    pub fn check(&self, tenant: &str, pod: &str, node: &str) -> Result<(), RejectedResult> {
        if !self.listed {
            return Err(RejectedResult::PodsNotListed);
        }
        match self.pods.get(tenant).and_then(|pods| pods.get(pod)) {
            None => Err(RejectedResult::NotInTenantNamespace),
            Some(on) if on != node => Err(RejectedResult::WrongNode),
            Some(_) => Ok(()),
        }
    }
}

impl Placement {
    /// An empty table of the pods in namespaces named `<namespace_prefix><slug>`.
    pub fn new(namespace_prefix: &str) -> Self {
        Placement {
            namespace_prefix: namespace_prefix.to_owned(),
            pods: RwLock::default(),
            listed: AtomicBool::new(false),
        }
    }

    pub fn view(&self) -> PlacementView<'_> {
        PlacementView {
            pods: self.pods.read().unwrap_or_else(|e| e.into_inner()),
            listed: self.listed.load(Ordering::Acquire),
        }
    }

    /// Pods known, and whether the first list is complete.
    pub fn size(&self) -> (usize, bool) {
        let view = self.view();
        (view.pods.values().map(HashMap::len).sum(), view.listed)
    }

    /// The tenant, name and node of `pod`, when it is a scheduled pod in a
    /// tenant namespace.
    fn entry<'p>(&self, pod: &'p Pod) -> Option<(&'p str, &'p str, &'p str)> {
        let namespace = pod.metadata.namespace.as_deref()?;
        let tenant = tenant_of_namespace(&self.namespace_prefix, namespace)?;
        let name = pod.metadata.name.as_deref()?;
        let node = pod.spec.as_ref()?.node_name.as_deref()?;
        Some((tenant, name, node))
    }

    /// Applies one event of the watch; `relisting` holds a relist's pods
    /// until it is complete, so a relist never empties the table meanwhile.
    pub fn apply(&self, event: Event<Pod>, relisting: &mut Option<Nodes>) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Init => *relisting = Some(Nodes::new()),
            Event::InitApply(pod) => {
                if let (Some(listed), Some((tenant, name, node))) =
                    (relisting.as_mut(), self.entry(&pod))
                {
                    insert(listed, tenant, name, node);
                }
            }
            Event::InitDone => {
                if let Some(listed) = relisting.take() {
                    *pods = listed;
                    self.listed.store(true, Ordering::Release);
                }
            }
            Event::Apply(pod) => match self.entry(&pod) {
                Some((tenant, name, node)) => insert(&mut pods, tenant, name, node),
                None => remove(&mut pods, &self.namespace_prefix, &pod),
            },
            Event::Delete(pod) => remove(&mut pods, &self.namespace_prefix, &pod),
        }
    }
}

fn insert(pods: &mut Nodes, tenant: &str, name: &str, node: &str) {
    pods.entry(tenant.to_owned())
        .or_default()
        .insert(name.to_owned(), node.to_owned());
}

fn remove(pods: &mut Nodes, prefix: &str, pod: &Pod) {
    let tenant = pod
        .metadata
        .namespace
        .as_deref()
        .and_then(|ns| tenant_of_namespace(prefix, ns));
    let (Some(tenant), Some(name)) = (tenant, pod.metadata.name.as_deref()) else {
        return;
    };
    if let Some(of_tenant) = pods.get_mut(tenant) {
        of_tenant.remove(name);
        if of_tenant.is_empty() {
            pods.remove(tenant);
        }
    }
}

/// Binds `registry` to the placement of the tenant pods in namespaces
/// named `<namespace_prefix><slug>` and watches them (unless it is bound
/// already): from now on results are checked against it.
pub fn bind(
    client: kube::Client,
    registry: &Registry,
    namespace_prefix: &str,
    shutdown: watch::Receiver<bool>,
) {
    let placement = Arc::new(Placement::new(namespace_prefix));
    if registry.bind_placement(placement.clone()).is_ok() {
        spawn(client, placement, shutdown);
    }
}

/// Watches the tenant pods into `placement` until `shutdown` turns true.
/// Errors are retried with kube's default backoff, the table kept meanwhile.
fn spawn(client: kube::Client, placement: Arc<Placement>, shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().labels(TENANT_LABEL);
    let mut shutdown = shutdown;
    tokio::spawn(async move {
        let mut events = pin!(watcher::watcher(api, config).default_backoff());
        let mut relisting = None;
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match event {
                Some(Ok(event)) => {
                    let done = matches!(event, Event::InitDone);
                    placement.apply(event, &mut relisting);
                    if done {
                        let (pods, _) = placement.size();
                        tracing::info!(
                            pods,
                            "tenant pods listed: results are checked against their nodes"
                        );
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "tenant pod watch failed: retrying with backoff, keeping the known pods");
                }
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests;
