//! Purging a tenant: its namespace (with everything in it) first, then its
//! rows; nothing when the cluster refuses.

use uuid::Uuid;

use super::{DeployError, Deployer, lock, spec_of};
use crate::deploy::render::namespace;
use crate::store::Tenant;

impl Deployer {
    /// Deletes the tenant's namespace (and everything in it) and then
    /// every row of the tenant. When the cluster refuses, nothing is
    /// purged and the error says why.
    pub async fn purge(&self, id: Uuid) -> Result<(), DeployError> {
        let tenant = self.inner.service.get(id).await?;
        // No drift repair or reconcile may bring it back meanwhile.
        lock(&self.inner.purging).insert(id);
        lock(&self.inner.desired).forget(id);
        let purged = self.purge_now(&tenant).await;
        lock(&self.inner.purging).remove(&id);
        purged
    }

    async fn purge_now(&self, tenant: &Tenant) -> Result<(), DeployError> {
        if let Some(cluster) = &self.inner.cluster {
            let ns = namespace(&spec_of(tenant, None), &self.inner.settings.cluster);
            if cluster.delete_namespace(&ns).await? {
                tracing::warn!(tenant = %tenant.slug, namespace = %ns, "tenant namespace deleted with everything in it");
            }
        }
        self.inner.service.purge(tenant.id).await?;
        Ok(())
    }

    /// Purges deprovisioned tenants whose retention ended before `at`.
    pub async fn purge_expired(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, DeployError> {
        let expired = self.inner.service.store().expired_tenants(at).await?;
        for id in &expired {
            self.purge(*id).await?;
        }
        Ok(expired.len())
    }
}
