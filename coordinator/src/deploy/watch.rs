//! Watches every object the coordinator manages and tells the deployer
//! when one no longer holds what was applied, so drift is repaired as it
//! happens rather than at the next periodic reconcile; the watched objects
//! are cached so that the periodic drift check reads memory, not the API
//! server. Secrets are the exception ([`Kind::is_watched`]): a cluster-wide
//! watch of them would need the right to read every Secret in the cluster,
//! so the periodic drift check reads each tenant's Secret in its namespace.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};

use super::controller::Deployer;
use super::kinds::{Kind, MANAGED, ObjectRef};
use super::render::MANAGED_BY;

/// A JSON value kept as its compact text: a parsed object costs about ten
/// times its text in memory (a map node per nested object), and a cache of
/// every tenant's objects is read far less often than it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactJson(Box<str>);

impl CompactJson {
    pub fn new(value: &impl serde::Serialize) -> CompactJson {
        CompactJson(serde_json::to_string(value).unwrap_or_default().into())
    }

    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

/// Every managed object as the watches last saw it (without managedFields
/// and status, which drift is never judged on).
#[derive(Debug)]
pub struct LiveCache {
    objects: RwLock<HashMap<ObjectRef, CompactJson>>,
    /// The kinds whose first complete list is in.
    listed: watch::Sender<HashSet<&'static str>>,
}

impl Default for LiveCache {
    fn default() -> Self {
        LiveCache {
            objects: RwLock::default(),
            listed: watch::Sender::new(HashSet::new()),
        }
    }
}

impl LiveCache {
    /// Whether every watched kind has been listed: before that, an object
    /// missing from the cache may still exist.
    pub fn is_ready(&self) -> bool {
        self.listed.borrow().len() == watched().count()
    }

    /// Waits until [`LiveCache::is_ready`].
    pub async fn wait_until_ready(&self) {
        let mut listed = self.listed.subscribe();
        let _ = listed
            .wait_for(|kinds| kinds.len() == watched().count())
            .await;
    }

    /// The object as last seen; `None` when it does not exist (or the
    /// cache is not ready).
    pub fn get(&self, reference: &ObjectRef) -> Option<Value> {
        self.read().get(reference).map(CompactJson::value)
    }

    /// Objects held, and their size as JSON text.
    pub fn size(&self) -> (usize, usize) {
        let objects = self.read();
        (objects.len(), objects.values().map(|o| o.0.len()).sum())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectRef, CompactJson>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectRef, CompactJson>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watch of one managed kind across all namespaces, on the managed-by
/// label, keeping `cache` up to date as it is polled (a relist drops what
/// is gone). Objects leave it without managedFields and status.
pub fn watch_kind(
    api: Api<DynamicObject>,
    kind: &'static Kind,
    cache: Arc<LiveCache>,
) -> impl Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send + use<> {
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let config = watcher::Config::default().labels(&selector);
    // What a relist has seen so far, to drop the rest when it is done.
    let mut relisted: Option<HashSet<ObjectRef>> = None;
    watcher::watcher(api, config)
        .default_backoff()
        .modify(|object: &mut DynamicObject| {
            object.metadata.managed_fields = None;
            if let Some(fields) = object.data.as_object_mut() {
                fields.remove("status");
            }
        })
        .map(move |event| {
            match &event {
                Ok(Event::Init) => relisted = Some(HashSet::new()),
                Ok(Event::InitApply(object)) => {
                    let key = ObjectRef::of_watched(kind, object);
                    cache.write().insert(key.clone(), CompactJson::new(object));
                    if let Some(seen) = &mut relisted {
                        seen.insert(key);
                    }
                }
                Ok(Event::InitDone) => {
                    let seen = relisted.take().unwrap_or_default();
                    cache
                        .write()
                        .retain(|key, _| key.kind != kind.kind || seen.contains(key));
                    cache.listed.send_modify(|kinds| {
                        kinds.insert(kind.kind);
                    });
                }
                Ok(Event::Apply(object)) => {
                    cache.write().insert(
                        ObjectRef::of_watched(kind, object),
                        CompactJson::new(object),
                    );
                }
                Ok(Event::Delete(object)) => {
                    cache.write().remove(&ObjectRef::of_watched(kind, object));
                }
                Err(_) => {}
            }
            event
        })
}

/// The managed kinds the drift watch follows.
pub fn watched() -> impl Iterator<Item = &'static Kind> {
    MANAGED.iter().filter(|kind| kind.is_watched())
}

/// One watch per watched kind, filling the deployer's cache, and the watch
/// of the tenant pods the agents' results are checked against; they stop
/// when `shutdown` turns true.
pub fn spawn(deployer: Deployer, shutdown: watch::Receiver<bool>) {
    let Some(cluster) = deployer.cluster().cloned() else {
        return;
    };
    crate::ingest::placement::bind(
        cluster.client().clone(),
        deployer.registry(),
        &deployer.settings().cluster.namespace_prefix,
        shutdown.clone(),
    );
    for kind in watched() {
        let events = watch_kind(cluster.api_of(kind), kind, deployer.live().clone());
        let deployer = deployer.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                match event {
                    Some(Ok(Event::Apply(object) | Event::InitApply(object))) => {
                        deployer.observed(kind, &object, false);
                    }
                    Some(Ok(Event::Delete(object))) => {
                        deployer.observed(kind, &object, true);
                    }
                    Some(Ok(Event::Init | Event::InitDone)) => {}
                    Some(Err(err)) => {
                        tracing::debug!(kind = kind.kind, error = %err, "drift watch interrupted; retrying");
                    }
                    None => return,
                }
            }
        });
    }
}
