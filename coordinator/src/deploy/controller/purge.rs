//! Removing a purged tenant from the cluster: its namespace (with
//! everything in it) is deleted while the deployer is kept away from the
//! tenant. The tenant lifecycle deletes the rows afterwards.

use uuid::Uuid;

use super::{DeployError, Deployer, lock, spec_of};
use crate::deploy::render::namespace;
use crate::store::Tenant;

/// While held, no deployment, drift repair or reconcile of the tenant
/// runs; released when dropped.
#[derive(Debug)]
#[must_use = "the tenant may be deployed again as soon as the hold is dropped"]
pub struct PurgeHold {
    deployer: Deployer,
    tenant: Uuid,
}

impl Drop for PurgeHold {
    fn drop(&mut self) {
        lock(&self.deployer.inner.purging).remove(&self.tenant);
    }
}

impl Deployer {
    /// Keeps the deployer away from `tenant` until the hold is dropped, and
    /// forgets its objects (no drift repair brings them back).
    pub fn hold_for_purge(&self, tenant: Uuid) -> PurgeHold {
        lock(&self.inner.purging).insert(tenant);
        lock(&self.inner.desired).forget(tenant);
        PurgeHold {
            deployer: self.clone(),
            tenant,
        }
    }

    /// Deletes the tenant's namespace and everything in it (nothing to do
    /// without a cluster). Call it under [`Self::hold_for_purge`].
    pub async fn delete_namespace(&self, tenant: &Tenant) -> Result<(), DeployError> {
        let Some(cluster) = &self.inner.cluster else {
            return Ok(());
        };
        let ns = namespace(&spec_of(tenant, None), &self.inner.settings.cluster);
        let deleted = cluster
            .delete_namespace(&ns)
            .await
            .map_err(DeployError::DeleteNamespace)?;
        if deleted {
            tracing::warn!(tenant = %tenant.slug, namespace = %ns, "tenant namespace deleted with everything in it");
        }
        Ok(())
    }
}
