//! The deployer's side of a restore's hold on a tenant (see
//! `backup::hold`): deploying a tenant and waiting for the attempt, and
//! waiting for its pods to be gone.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use uuid::Uuid;

use super::render::{COMPONENT_LABEL, TENANT_LABEL};
use super::{Deployer, Trigger};
use crate::backup::hold::TenantDeployments;
use crate::store::{DeploymentRow, Phase};

/// How often the deployment and the tenant's pods are read while waiting.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Beyond the deployer's own rollout and verification timeouts: the time
/// for the leader to pick the request up (it scans every few seconds).
const PICK_UP: Duration = Duration::from_secs(60);

#[async_trait::async_trait]
impl TenantDeployments for Deployer {
    fn on_cluster(&self) -> bool {
        self.cluster().is_some()
    }

    async fn deploy_and_wait(&self, tenant: Uuid) -> Result<Option<String>, String> {
        let row = deployed(self, tenant).await?;
        match row.phase {
            Phase::Failed => Err(row.reason.unwrap_or_default()),
            _ => Ok(row.reason),
        }
    }

    async fn pods_gone(&self, slug: &str) -> Result<(), String> {
        pods_gone(self, slug).await
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
