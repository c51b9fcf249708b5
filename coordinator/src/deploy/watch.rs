//! Watches every object the coordinator manages and tells the deployer
//! when one no longer holds what was applied, so drift is repaired as it
//! happens rather than at the next periodic reconcile; the watched objects
//! are cached so that the periodic drift check reads memory, not the API
//! server.

use std::collections::HashMap;

use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::controller::Deployer;
use super::kinds::MANAGED;
use super::render::MANAGED_BY;

/// One watch per managed kind, across all namespaces, on the managed-by
/// label; they stop when `shutdown` turns true.
pub fn spawn(deployer: Deployer, shutdown: watch::Receiver<bool>) {
    let Some(cluster) = deployer.cluster().cloned() else {
        return;
    };
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let mut caches = HashMap::new();
    for kind in MANAGED {
        let api = cluster.api_of(kind);
        let config = watcher::Config::default().labels(&selector);
        let writer = reflector::store::Writer::new(kind.api_resource());
        caches.insert(kind.kind, writer.as_reader());
        let deployer = deployer.clone();
        let mut shutdown = shutdown.clone();
        let kind = kind.kind;
        tokio::spawn(async move {
            let mut events = std::pin::pin!(
                watcher::watcher(api, config)
                    .default_backoff()
                    .reflect(writer)
            );
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                match event {
                    Some(Ok(Event::Apply(object) | Event::InitApply(object))) => {
                        deployer.observed(&serde_json::to_value(object).unwrap_or_default(), false);
                    }
                    Some(Ok(Event::Delete(object))) => {
                        deployer.observed(&serde_json::to_value(object).unwrap_or_default(), true);
                    }
                    Some(Ok(Event::Init | Event::InitDone)) => {}
                    Some(Err(err)) => {
                        tracing::debug!(kind, error = %err, "drift watch interrupted; retrying");
                    }
                    None => return,
                }
            }
        });
    }
    deployer.set_cache(caches);
}
