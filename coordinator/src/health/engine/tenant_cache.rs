//! The tenants' records as the engine judges them: read from the store, trusted for a while, forgotten when a tenant goes.

use super::*;

pub(super) struct CachedTenant {
    /// Shared with the snapshots published of it: evaluations do not copy it.
    pub(super) tenant: Arc<Tenant>,
    pub(super) loaded_at: DateTime<Utc>,
    /// Changed elsewhere since it was read: read again before it is used,
    /// and still used when the store cannot be read.
    pub(super) stale: bool,
}

/// How long a tenant's record is trusted before it is read again (a plan change shows within this).
const TENANT_CACHE: TimeDelta = TimeDelta::seconds(30);

/// Whether a record loaded at `loaded_at` may still be trusted at `now`.
pub(super) fn still_fresh(loaded_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - loaded_at < TENANT_CACHE
}

impl Runner {
    /// Marks the cached record of `slug` (every record with `None`) to be
    /// read again before its next use; it stays the fallback while the
    /// store cannot be read.
    pub(super) fn mark_stale(&mut self, slug: Option<&str>) {
        match slug {
            Some(slug) => {
                if let Some(cached) = self.tenants.get_mut(slug) {
                    cached.stale = true;
                }
            }
            None => self.tenants.values_mut().for_each(|c| c.stale = true),
        }
    }

    /// The tenant's record, read again when older than [`TENANT_CACHE`];
    /// `None` for a tenant no longer active.
    pub(super) async fn tenant(&mut self, slug: &str, now: DateTime<Utc>) -> Option<Arc<Tenant>> {
        if !self.directory.contains(slug) {
            self.forget(slug);
            return None;
        }
        if let Some(cached) = self.tenants.get(slug)
            && !cached.stale
            && still_fresh(cached.loaded_at, now)
        {
            return Some(cached.tenant.clone());
        }
        let loaded = match self.store.find_tenant_id(slug).await {
            Ok(Some(id)) => self.store.get_tenant(id).await,
            Ok(None) => Ok(None),
            Err(err) => Err(err),
        };
        match loaded {
            Ok(Some(tenant)) => {
                let tenant = Arc::new(tenant);
                self.tenants.insert(
                    slug.to_owned(),
                    CachedTenant {
                        tenant: tenant.clone(),
                        loaded_at: now,
                        stale: false,
                    },
                );
                Some(tenant)
            }
            Ok(None) => None,
            Err(err) => {
                count(&self.published.counters.store_errors);
                tracing::warn!(tenant = slug, error = %err, "failed to read the tenant for its health evaluation");
                // Keep judging it by the last known record.
                self.tenants.get(slug).map(|c| c.tenant.clone())
            }
        }
    }

    /// Drops what is kept of a tenant that is no longer active.
    pub(super) fn forget(&mut self, slug: &str) {
        if let Some(cached) = self.tenants.remove(slug) {
            let id = cached.tenant.id;
            self.check_alerts.retain(|(tenant, _), _| *tenant != id);
            self.minutes.remove(&id);
        }
        self.evaluated_at.remove(slug);
        self.registry.forget(slug);
        self.published
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(slug);
    }
}
