//! The tenants' records as the engine judges them: read from the store, read again all together in the background every little while, forgotten when a tenant goes.

use knowton_common::TenantStatus;

use super::*;

pub(super) struct CachedTenant {
    /// Shared with the snapshots published of it: evaluations do not copy it.
    pub(super) tenant: Arc<Tenant>,
    pub(super) loaded_at: DateTime<Utc>,
    /// Changed elsewhere since it was read: read again before it is used,
    /// and still used when the store cannot be read.
    pub(super) stale: bool,
}

/// How often every active tenant's record is read again, in the
/// background (a change made where no notice reaches this replica shows
/// within this).
const TENANT_CACHE: TimeDelta = TimeDelta::seconds(30);

/// Tenants read a query at a time by the background reading.
const RELOAD_PAGE: u32 = 500;

/// Whether records read at `loaded_at` may still be trusted at `now`.
pub(super) fn still_fresh(loaded_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - loaded_at < TENANT_CACHE
}

/// The background reading of every active tenant's record. Read one by one
/// on the engine's task, a thousand records cost it half a second every
/// 30 s, and every result arriving meanwhile waited.
pub(super) struct TenantReload {
    /// When the reading in flight, or the last one, started.
    started: DateTime<Utc>,
    in_flight: bool,
    tx: mpsc::Sender<Reloaded>,
}

/// A background reading's records, and when it started.
pub(super) struct Reloaded {
    started: DateTime<Utc>,
    tenants: Result<Vec<Tenant>, StoreError>,
}

impl TenantReload {
    /// The engine's side, and where the readings arrive.
    pub(super) fn new(now: DateTime<Utc>) -> (TenantReload, mpsc::Receiver<Reloaded>) {
        let (tx, rx) = mpsc::channel(1);
        let reload = TenantReload {
            started: now,
            in_flight: false,
            tx,
        };
        (reload, rx)
    }
}

/// Every active tenant's record, a page at a time.
async fn active_tenants(store: &dyn Store) -> Result<Vec<Tenant>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_tenants(RELOAD_PAGE, after, Some(TenantStatus::Active))
            .await?;
        let full = page.len() == RELOAD_PAGE as usize;
        after = page.last().map(|t| t.id);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
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

    /// Starts reading every active tenant's record in the background when
    /// the last reading is older than [`TENANT_CACHE`].
    pub(super) fn reload_tenants(&mut self, now: DateTime<Utc>) {
        let reload = &mut self.tenant_reload;
        if reload.in_flight || still_fresh(reload.started, now) {
            return;
        }
        reload.in_flight = true;
        reload.started = now;
        let (store, tx) = (self.store.clone(), reload.tx.clone());
        tokio::spawn(async move {
            let tenants = active_tenants(&*store).await;
            let _ = tx
                .send(Reloaded {
                    started: now,
                    tenants,
                })
                .await;
        });
    }

    /// Takes in a background reading's records. A record read again or
    /// marked stale since it started is newer than the reading's, and kept.
    pub(super) fn reloaded(&mut self, reloaded: Reloaded) {
        self.tenant_reload.in_flight = false;
        let tenants = match reloaded.tenants {
            Ok(tenants) => tenants,
            Err(err) => {
                count(&self.published.counters.store_errors);
                tracing::warn!(error = %err, "failed to read the tenants for their health evaluations; judging by the records held");
                return;
            }
        };
        // A tenant not held yet is read when first evaluated.
        for tenant in tenants {
            if let Some(cached) = self.tenants.get_mut(&tenant.slug)
                && !cached.stale
                && cached.loaded_at <= reloaded.started
            {
                cached.tenant = Arc::new(tenant);
                cached.loaded_at = reloaded.started;
            }
        }
    }

    /// The tenant's record: the one held (kept fresh by [`Self::reload_tenants`]),
    /// read now when none is held or it was marked stale; `None` for a
    /// tenant no longer active.
    pub(super) async fn tenant(&mut self, slug: &str, now: DateTime<Utc>) -> Option<Arc<Tenant>> {
        if !self.directory.contains(slug) {
            self.forget(slug);
            return None;
        }
        if let Some(cached) = self.tenants.get(slug)
            && !cached.stale
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
        self.attention.remove(slug);
        self.registry.forget(slug);
        self.published
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(slug);
    }
}
