//! The deployer's drift repair: what the watch saw against what was
//! applied, confirmed with the API server, re-applied and recorded.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use serde_json::Value;
use uuid::Uuid;

use super::{DeployError, Deployer, Trigger, lock};
use crate::deploy::diff::drift;
use crate::deploy::kinds::{Kind, ObjectRef};
use crate::store::{DeploymentRow, Tenant};

impl Deployer {
    /// Re-applies what someone changed or deleted by hand, and records it.
    pub(super) async fn repair_drift(
        &self,
        tenant: &Tenant,
        row: &DeploymentRow,
        objects: &[Value],
    ) -> Result<(), DeployError> {
        let Some(cluster) = &self.inner.cluster else {
            return Ok(());
        };
        self.inner
            .counters
            .drift_checks
            .fetch_add(1, Ordering::Relaxed);
        // The watch cache points at what may have drifted; the API server
        // confirms (the cache may not have seen our own latest apply yet).
        let suspects = match self.cached_suspects(objects).await {
            Some(suspects) => suspects,
            None => objects.to_vec(),
        };
        if suspects.is_empty() {
            return Ok(());
        }
        let drifted = match cluster.drifted(&suspects).await {
            Ok(drifted) => drifted,
            Err(err) => {
                tracing::warn!(tenant = %tenant.slug, error = %err, "drift check failed");
                return Ok(());
            }
        };
        if drifted.is_empty() {
            return Ok(());
        }
        let fixes: Vec<String> = drifted
            .iter()
            .map(|(object, paths)| match paths {
                None => format!("re-created {}", ObjectRef::of(object)),
                Some(paths) => format!("restored {} ({})", ObjectRef::of(object), paths.join(", ")),
            })
            .collect();
        let to_apply: Vec<&Value> = drifted.iter().map(|(o, _)| *o).collect();
        let detail = match cluster.apply_objects(&to_apply).await {
            Ok(()) => fixes.join("; "),
            Err(err) => format!(
                "found drift ({}) but could not repair it: {err}",
                fixes.join("; ")
            ),
        };
        self.inner
            .counters
            .drift_repairs
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(tenant = %tenant.slug, drift = %detail, "drift repaired");
        self.event(row, "drift", detail).await
    }

    /// The objects the watch cache holds differently from `objects` (or
    /// not at all); `None` while the cache is not filled yet.
    async fn cached_suspects(&self, objects: &[Value]) -> Option<Vec<Value>> {
        let cache = self.inner.cache.get()?;
        let mut suspects = Vec::new();
        for object in objects {
            let kind = Kind::of(object)?;
            let store = cache.get(kind.kind)?;
            let ready = tokio::time::timeout(Duration::ZERO, store.wait_until_ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                return None;
            }
            let reference = ObjectRef::of(object);
            let mut key =
                kube::runtime::reflector::ObjectRef::new_with(&reference.name, kind.api_resource());
            if let Some(ns) = &reference.namespace {
                key = key.within(ns);
            }
            let held = store
                .get(&key)
                .map(|live| serde_json::to_value(live.as_ref()).unwrap_or_default());
            if held.is_none_or(|live| !drift(&live, object).is_empty()) {
                suspects.push(object.clone());
            }
        }
        Some(suspects)
    }

    /// Gives the deployer the watch's caches, one per managed kind.
    pub fn set_cache(&self, cache: HashMap<&'static str, Store<DynamicObject>>) {
        let _ = self.inner.cache.set(cache);
    }

    pub(super) fn remember(&self, id: Uuid, objects: &[Value]) {
        let mut desired = lock(&self.inner.desired);
        desired.retain(|_, (tenant, _)| *tenant != id);
        for object in objects {
            desired.insert(ObjectRef::of(object), (id, object.clone()));
        }
    }

    /// The watch saw `object` change (or go, when `deleted`): queues a
    /// reconcile of its tenant if it no longer holds what was applied.
    pub fn observed(&self, object: &Value, deleted: bool) {
        let reference = ObjectRef::of(object);
        let found = lock(&self.inner.desired).get(&reference).cloned();
        if let Some((tenant, desired)) = found
            && !lock(&self.inner.purging).contains(&tenant)
            && (deleted || !drift(object, &desired).is_empty())
        {
            self.enqueue(tenant, Trigger::Reconcile);
        }
    }
}
