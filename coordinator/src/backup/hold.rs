//! A restore of a tenant's database or files, in a cluster, holds the
//! tenant at zero replicas while its data is replaced: nothing writes
//! rows or files the restore is about to overwrite, and the safety backup
//! taken once the pods are gone holds the tenant's last write. The hold is
//! the job's (`restore_jobs.holds_tenant`), so whichever replica leads
//! deploys it; it counts only while the job is alive, so a coordinator
//! that died mid-restore does not keep the tenant down past the next
//! reconcile. Once the data is back, the tenant is redeployed and the
//! restore waits for that deployment, health verified, as its last step.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use uuid::Uuid;

use super::TenantRef;
use super::service::BackupService;
use crate::deploy::render::{COMPONENT_LABEL, TENANT_LABEL};
use crate::deploy::{Deployer, Trigger};
use crate::store::{DeploymentRow, Phase};

/// How often the deployment and the tenant's pods are read while waiting.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Beyond the deployer's own rollout and verification timeouts: the time
/// for the leader to pick the request up (it scans every few seconds).
const PICK_UP: Duration = Duration::from_secs(60);

impl BackupService {
    /// Restores into tenants deployed by `deployer` hold them at zero
    /// while their data is replaced (when it deploys to a cluster).
    pub fn with_deployer(mut self, deployer: Deployer) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// The deployer to hold tenants through, when there is a cluster to
    /// hold them in.
    pub(super) fn holding_deployer(&self) -> Option<&Deployer> {
        self.deployer.as_ref().filter(|d| d.cluster().is_some())
    }

    /// Holds `into` at zero for the job `job`: records the hold, has the
    /// tenant deployed stopped and waits until none of its pods is left.
    /// An error says what did not happen; the caller releases the hold.
    pub(super) async fn scale_to_zero(
        &self,
        deployer: &Deployer,
        job: Uuid,
        into: &TenantRef,
    ) -> Result<(), String> {
        self.store()
            .set_restore_hold(job, true)
            .await
            .map_err(|err| format!("failed to record the hold: {err}"))?;
        let row = deployed(deployer, into.id).await?;
        if row.phase == Phase::Failed {
            return Err(format!(
                "the deployment at zero failed: {}",
                row.reason.unwrap_or_default()
            ));
        }
        pods_gone(deployer, &into.slug).await
    }

    /// Releases the hold of `job` on `into` and redeploys it; `Ok` once the
    /// deployment is ready (its health verified, or a note saying why it
    /// could not be), an error naming why it is not.
    pub(super) async fn redeploy(
        &self,
        deployer: &Deployer,
        job: Uuid,
        into: &TenantRef,
    ) -> Result<Option<String>, String> {
        self.store()
            .set_restore_hold(job, false)
            .await
            .map_err(|err| format!("failed to release the hold: {err}"))?;
        let row = deployed(deployer, into.id).await?;
        match row.phase {
            Phase::Failed => Err(row.reason.unwrap_or_default()),
            _ => Ok(row.reason),
        }
    }
}

/// Asks for a deployment of `tenant` and waits for the attempt that serves
/// the request to end.
async fn deployed(deployer: &Deployer, tenant: Uuid) -> Result<DeploymentRow, String> {
    let asked = deployer
        .request(tenant, Trigger::Restore)
        .await
        .map_err(|err| knowton_common::error_chain(&err))?;
    let settings = deployer.settings();
    let within = settings.rollout_timeout + settings.verify_timeout + PICK_UP;
    let deadline = tokio::time::Instant::now() + within;
    let mut poll = tokio::time::interval(POLL_EVERY);
    loop {
        poll.tick().await;
        let row = deployer
            .store()
            .deployment(tenant)
            .await
            .map_err(|err| format!("failed to read the deployment: {err}"))?;
        let Some(row) = row else {
            return Err("the tenant's deployment record is gone".to_owned());
        };
        let served = row.started_at.is_some_and(|at| at >= asked.requested_at);
        if served && matches!(row.phase, Phase::Ready | Phase::Failed | Phase::Skipped) {
            return Ok(row);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the deployment did not end within {}s (attempt {}, {})",
                within.as_secs(),
                row.attempt,
                row.phase.as_str()
            ));
        }
    }
}

/// Waits until none of the tenant's backend and frontend pods is left
/// (terminating ones included: a pod shutting down may still write).
async fn pods_gone(deployer: &Deployer, slug: &str) -> Result<(), String> {
    let cluster = deployer.cluster().expect("holding needs a cluster");
    let settings = deployer.settings();
    let namespace =
        knowton_common::namespace::tenant_namespace(&settings.cluster.namespace_prefix, slug);
    let pods: Api<Pod> = Api::namespaced(cluster.client().clone(), &namespace);
    let selector = format!("{TENANT_LABEL}={slug},{COMPONENT_LABEL} in (backend,frontend)");
    let within = settings.rollout_timeout;
    let deadline = tokio::time::Instant::now() + within;
    let mut poll = tokio::time::interval(POLL_EVERY);
    loop {
        poll.tick().await;
        let left = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|err| format!("failed to list the tenant's pods: {err}"))?;
        if left.items.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<_> = left
                .items
                .iter()
                .take(5)
                .filter_map(|p| p.metadata.name.as_deref())
                .collect();
            return Err(format!(
                "{} of the tenant's pods still there after {}s: {}",
                left.items.len(),
                within.as_secs(),
                names.join(", ")
            ));
        }
    }
}
