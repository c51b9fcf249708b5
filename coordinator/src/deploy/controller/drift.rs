//! The deployer's drift repair: what the watch saw against what was
//! applied, confirmed with the API server, re-applied and recorded.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use kube::api::DynamicObject;
use serde_json::Value;
use uuid::Uuid;

use super::{DeployError, Deployer, Trigger, lock};
use crate::deploy::diff::drift;
use crate::deploy::kinds::{Kind, ObjectRef};
use crate::deploy::watch::CompactJson;
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
        let suspects = match self.cached_suspects(objects) {
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
    /// not at all), and those of kinds it does not watch (Secrets, read
    /// from the API server in the tenant's namespace); `None` while the
    /// cache is not filled yet.
    fn cached_suspects(&self, objects: &[Value]) -> Option<Vec<Value>> {
        let live = &self.inner.live;
        if !live.is_ready() {
            return None;
        }
        let suspects = objects
            .iter()
            .filter(|object| {
                !Kind::of(object).is_some_and(|kind| kind.is_watched())
                    || live
                        .get(&ObjectRef::of(object))
                        .is_none_or(|held| !drift(&held, object).is_empty())
            })
            .cloned()
            .collect();
        Some(suspects)
    }

    /// Keeps `objects` as what the watch compares against. Without a
    /// cluster there is no watch: nothing is kept (at 1,000 tenants the
    /// objects held 15 MiB).
    pub(super) fn remember(&self, id: Uuid, objects: &[Value]) {
        if self.inner.cluster.is_some() {
            lock(&self.inner.desired).set(id, objects);
        }
    }

    /// The watch saw `object` of `kind` change (or go, when `deleted`):
    /// queues a reconcile of its tenant if it no longer holds what was
    /// applied.
    pub fn observed(&self, kind: &Kind, object: &DynamicObject, deleted: bool) {
        let found = lock(&self.inner.desired).get(&ObjectRef::of_watched(kind, object));
        let Some((tenant, desired)) = found else {
            return;
        };
        if lock(&self.inner.purging).contains(&tenant) {
            return;
        }
        let drifted = deleted
            || serde_json::to_value(object).is_ok_and(|live| !drift(&live, &desired).is_empty());
        if drifted {
            self.enqueue(tenant, Trigger::Reconcile);
        }
    }
}

/// Each deployed tenant's objects, as last applied, for the watch to
/// compare against; kept compact, as the watch cache is.
#[derive(Debug, Default)]
pub(in crate::deploy) struct Desired {
    objects: HashMap<ObjectRef, (Uuid, CompactJson)>,
    by_tenant: HashMap<Uuid, Vec<ObjectRef>>,
}

impl Desired {
    /// `tenant`'s objects are now `objects` (and no others).
    fn set(&mut self, tenant: Uuid, objects: &[Value]) {
        self.forget(tenant);
        let references: Vec<ObjectRef> = objects.iter().map(ObjectRef::of).collect();
        for (reference, object) in references.iter().zip(objects) {
            self.objects
                .insert(reference.clone(), (tenant, CompactJson::new(object)));
        }
        self.by_tenant.insert(tenant, references);
    }

    pub(super) fn forget(&mut self, tenant: Uuid) {
        for reference in self.by_tenant.remove(&tenant).unwrap_or_default() {
            if self
                .objects
                .get(&reference)
                .is_some_and(|(t, _)| *t == tenant)
            {
                self.objects.remove(&reference);
            }
        }
    }

    fn get(&self, reference: &ObjectRef) -> Option<(Uuid, Value)> {
        self.objects
            .get(reference)
            .map(|(tenant, object)| (*tenant, object.value()))
    }
}
