//! The end of a tenant: deprovisioning (stopped, data kept) and purging
//! (namespace and rows deleted), also of tenants whose retention ended.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::TenantLifecycle;
use super::error::{LifecycleError, Result, failed};
use crate::deploy::Trigger;
use crate::store::{Tenant, now};

impl TenantLifecycle {
    /// Deprovisions the tenant keeping its data (its deployment scaled to
    /// zero, its database role unable to log in); returns it. Idempotent.
    pub async fn deprovision(&self, id: Uuid) -> Result<Tenant> {
        let retain_until = now() + self.retention;
        self.store
            .deprovision(id, retain_until)
            .await
            .map_err(failed(LifecycleError::Deprovision, id))?;
        let tenant = self.get(id).await?;
        self.changed(id, &tenant.slug).await;
        tracing::info!(tenant = %tenant.slug, retain_until = %tenant.retain_until.unwrap_or(retain_until), "tenant deprovisioned, data kept");
        self.deployer.after_change(id, Trigger::Deprovisioned).await;
        // Last: when the database server refuses, the tenant is stopped
        // all the same, and deprovisioning again disables the role.
        self.data
            .disable(&tenant.slug)
            .await
            .map_err(|e| LifecycleError::DisableData(Box::new(e)))?;
        Ok(tenant)
    }

    /// Deletes the tenant's namespace (with everything in it, its volume
    /// too), its database, role and files, its backups, and then every row
    /// of the tenant. When the cluster, the database server or the backup
    /// repository refuses, the rows stay (a purge may be tried again) and
    /// the error says why. (A deprovisioned tenant's data and backups are
    /// kept through its retention: purging is the end of both.)
    pub async fn purge(&self, id: Uuid) -> Result<()> {
        let tenant = self.get(id).await?;
        // No deployment, drift repair or reconcile may bring it back meanwhile.
        let _hold = self.deployer.hold_for_purge(id);
        self.deployer
            .delete_namespace(&tenant)
            .await
            .map_err(LifecycleError::DeleteNamespace)?;
        self.data
            .remove(id, &tenant.slug)
            .await
            .map_err(|e| LifecycleError::DeleteData(Box::new(e)))?;
        if let Some(backups) = &self.backups {
            let deleted = backups
                .delete_tenant(id)
                .await
                .map_err(|e| LifecycleError::DeleteBackups(Box::new(e)))?;
            tracing::info!(tenant = %tenant.slug, objects = deleted, "the tenant's backups were deleted");
        }
        self.store
            .purge(id)
            .await
            .map_err(failed(LifecycleError::DeleteRows, id))?;
        self.changed(id, &tenant.slug).await;
        tracing::warn!(tenant = %tenant.slug, tenant_id = %id, "tenant purged: all of its data was deleted");
        Ok(())
    }

    /// Purges deprovisioned tenants whose retention ended before `at`.
    pub async fn purge_expired(&self, at: DateTime<Utc>) -> Result<usize> {
        let expired = self
            .store
            .expired_tenants(at)
            .await
            .map_err(LifecycleError::ListExpired)?;
        for id in &expired {
            self.purge(*id).await?;
        }
        Ok(expired.len())
    }

    /// Drops the databases made for tenants that were never recorded (a
    /// provisioning interrupted between its database and its record, the
    /// process killed), once made at least `min_age` ago: a provisioning
    /// still under way on another replica is younger. Returns how many.
    pub async fn drop_unrecorded_databases(&self, min_age: std::time::Duration) -> Result<usize> {
        let Some(databases) = &self.data.databases else {
            return Ok(0);
        };
        let made = databases
            .made_before(min_age)
            .await
            .map_err(|e| LifecycleError::DeleteData(Box::new(e)))?;
        let mut dropped = 0;
        for (tenant, name) in made {
            let recorded = self
                .store
                .get_tenant(tenant)
                .await
                .map_err(LifecycleError::ReadTenant)?;
            if recorded.is_none() {
                databases
                    .drop_named(tenant, &name)
                    .await
                    .map_err(|e| LifecycleError::DeleteData(Box::new(e)))?;
                tracing::warn!(database = %name, tenant_id = %tenant, "dropped the database of a provisioning that never recorded its tenant");
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// A tenant no longer active: out of the directory (its agents' results
    /// are dropped) and out of the health engine.
    pub(super) async fn forget(&self, slug: &str) {
        self.directory.remove(slug);
        if let Err(err) = self.engine.forget(slug).await {
            // Only when the engine stopped (shutting down): nothing to forget.
            tracing::debug!(tenant = slug, error = %err, "the health engine did not forget the tenant");
        }
    }
}
