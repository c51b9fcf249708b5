//! A restore of a tenant's database or files, in a cluster, holds the
//! tenant at zero replicas while its data is replaced: nothing writes
//! rows or files the restore is about to overwrite, and the safety backup
//! taken once the pods are gone holds the tenant's last write. The hold is
//! the job's (`restore_jobs.holds_tenant`), so whichever replica leads
//! deploys it; it counts only while the job is alive, so a coordinator
//! that died mid-restore does not keep the tenant down past the next
//! reconcile. Once the data is back, the tenant is redeployed and the
//! restore waits for that deployment, health verified, as its last step.

use std::sync::Arc;

use uuid::Uuid;

use super::TenantRef;
use super::service::BackupService;

/// What a restore needs of the deployer to hold a tenant at zero. The
/// deployer implements it (`deploy` is the layer above this one).
#[async_trait::async_trait]
pub trait TenantDeployments: Send + Sync + std::fmt::Debug {
    /// Whether tenants run on a cluster: without one there is nothing to
    /// hold.
    fn on_cluster(&self) -> bool;
    /// Asks for a deployment of `tenant` (rendered at zero while a live
    /// restore job holds it) and waits for the attempt that serves the
    /// request to end: its note when it is ready (or skipped), an error
    /// naming why when it failed or did not end in time.
    async fn deploy_and_wait(&self, tenant: Uuid) -> Result<Option<String>, String>;
    /// Waits until none of the tenant's backend and frontend pods is left
    /// (terminating ones included: a pod shutting down may still write).
    async fn pods_gone(&self, slug: &str) -> Result<(), String>;
}

impl BackupService {
    /// Restores into tenants deployed by `deployments` hold them at zero
    /// while their data is replaced (when they run on a cluster).
    pub fn with_deployments(mut self, deployments: Arc<dyn TenantDeployments>) -> Self {
        self.deployments = Some(deployments);
        self
    }

    /// The deployments to hold tenants through, when there is a cluster
    /// to hold them in.
    pub(super) fn holding(&self) -> Option<Arc<dyn TenantDeployments>> {
        self.deployments.clone().filter(|d| d.on_cluster())
    }

    /// Holds `into` at zero for the job `job`: records the hold, has the
    /// tenant deployed stopped and waits until none of its pods is left.
    /// An error says what did not happen; the caller releases the hold.
    pub(super) async fn scale_to_zero(
        &self,
        deployments: &dyn TenantDeployments,
        job: Uuid,
        into: &TenantRef,
    ) -> Result<(), String> {
        self.store()
            .set_restore_hold(job, true)
            .await
            .map_err(|err| format!("failed to record the hold: {err}"))?;
        deployments
            .deploy_and_wait(into.id)
            .await
            .map_err(|reason| format!("the deployment at zero failed: {reason}"))?;
        deployments.pods_gone(&into.slug).await
    }

    /// Releases the hold of `job` on `into` and redeploys it; `Ok` once the
    /// deployment is ready (its health verified, or a note saying why it
    /// could not be), an error naming why it is not.
    pub(super) async fn redeploy(
        &self,
        deployments: &dyn TenantDeployments,
        job: Uuid,
        into: &TenantRef,
    ) -> Result<Option<String>, String> {
        self.store()
            .set_restore_hold(job, false)
            .await
            .map_err(|err| format!("failed to release the hold: {err}"))?;
        deployments.deploy_and_wait(into.id).await
    }
}
