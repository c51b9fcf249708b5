//! One attempt at deploying one tenant: apply, wait for the rollout,
//! verify health, and record every phase in the store.

use std::sync::atomic::Ordering;
use std::time::Duration;

use knowton_common::TenantStatus;
use uuid::Uuid;

use super::{
    DeployError, Deployer, Queued, RETRY_FAILED_AFTER, Trigger, Verification, lock, objects_hash,
    spec_of,
};
use crate::deploy::kinds::DEPLOYMENT;
use crate::deploy::render::namespace;
use crate::deploy::rollout;
use crate::store::{DeploymentEvent, DeploymentRow, Fence, Phase, StoreError, Tenant, now};

/// What is left of a request the latest attempt already served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AlreadyServed {
    /// Ready: only make sure nobody changed it since.
    CheckDrift,
    Nothing,
}

impl Deployer {
    /// One deployment (or drift check) of one tenant.
    pub(super) async fn deploy(&self, id: Uuid, queued: Queued) -> Result<(), DeployError> {
        let trigger = queued.trigger;
        if lock(&self.inner.purging).contains(&id) {
            return Ok(());
        }
        let store = &self.inner.store;
        // Purged meanwhile: nothing to deploy.
        let Some(tenant) = store
            .get_tenant(id)
            .await
            .map_err(DeployError::ReadTenant)?
        else {
            return Ok(());
        };
        let mut row = store
            .deployment(id)
            .await
            .map_err(DeployError::ReadTenant)?
            .unwrap_or_else(|| DeploymentRow::new(id, trigger));
        let (objects, held) = match self.rendering(&tenant).await {
            Ok(rendered) => rendered,
            Err(err @ (DeployError::ReadTenant(_) | DeployError::ReadSecrets(_))) => {
                return Err(err);
            }
            Err(err) => {
                // The tenant's secrets cannot be opened, say: record it
                // rather than retrying it every few seconds.
                row.attempt += 1;
                let reason = format!("failed to render: {}", knowton_common::error_chain(&err));
                return self.fail(&mut row, &tenant, reason).await;
            }
        };
        let hash = objects_hash(&objects);
        self.remember(id, &objects);
        if let Some(done) = already_done(&row, queued, &hash, self.inner.cluster.is_some()) {
            return match done {
                AlreadyServed::CheckDrift => self.repair_drift(&tenant, &row, &objects).await,
                AlreadyServed::Nothing => Ok(()),
            };
        }
        row.attempt += 1;
        if row.phase != Phase::Pending {
            row.trigger = trigger;
        }
        row.objects_hash = Some(hash);
        row.started_at = Some(now());
        row.finished_at = None;
        row.reason = None;
        let Some(cluster) = self.inner.cluster.clone() else {
            return self
                .finish(
                    &mut row,
                    Phase::Skipped,
                    Some("no cluster configured: rendered and recorded only".to_owned()),
                )
                .await;
        };
        self.set_phase(
            &mut row,
            Phase::Applying,
            format!("applying {} objects", objects.len()),
        )
        .await?;
        let pruned = match cluster.apply(&tenant.slug, &objects).await {
            Ok(pruned) => pruned,
            Err(err) => return self.fail(&mut row, &tenant, err.to_string()).await,
        };
        self.inner
            .counters
            .pruned
            .fetch_add(pruned.len() as u64, Ordering::Relaxed);
        for object in &pruned {
            self.event(
                &row,
                "prune",
                format!("deleted {object}: no longer part of the tenant"),
            )
            .await?;
        }
        self.set_phase(
            &mut row,
            Phase::Waiting,
            "waiting for the rollout".to_owned(),
        )
        .await?;
        let ns = namespace(&spec_of(&tenant, Some(&row)), &self.inner.settings.cluster);
        let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
            cluster.client().clone(),
            &ns,
            &DEPLOYMENT.api_resource(),
        );
        for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
            let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
            if let Err(err) =
                rollout::wait(api.clone(), name, self.inner.settings.rollout_timeout).await
            {
                return self.fail(&mut row, &tenant, err.to_string()).await;
            }
        }
        if tenant.status == TenantStatus::Deprovisioned {
            return self
                .finish(
                    &mut row,
                    Phase::Ready,
                    Some("deprovisioned: scaled to zero, namespace and data kept".to_owned()),
                )
                .await;
        }
        if let Some(job) = held {
            return self
                .finish(
                    &mut row,
                    Phase::Ready,
                    Some(format!(
                        "held at zero by restore {job}: redeployed when its data is back"
                    )),
                )
                .await;
        }
        // Until an agent reports (or the time is up), the reason says what
        // the deployment waits for.
        let waiting = "waiting for the agents to see /health answer";
        row.reason = Some(waiting.to_owned());
        self.set_phase(&mut row, Phase::Verifying, waiting.to_owned())
            .await?;
        match self.verify(&tenant.slug).await {
            Ok(note) => self.finish(&mut row, Phase::Ready, note).await,
            Err(reason) => self.fail(&mut row, &tenant, reason).await,
        }
    }

    /// Waits for an agent's result of the tenant, newer than now, whose
    /// `/health` answered; an error saying what was missing when none came
    /// within `verify_timeout` (no agent connected, or none saw it healthy).
    /// Without agent ingest nothing can report: ready, with a note saying so.
    async fn verify(&self, slug: &str) -> Result<Option<String>, String> {
        let registry = &self.inner.registry;
        if self.inner.verification == Verification::Unavailable {
            return Ok(Some(
                "health not verified: no agent is connected".to_owned(),
            ));
        }
        let since = now();
        let deadline = tokio::time::Instant::now() + self.inner.settings.verify_timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let healthy = registry.latest(slug).iter().any(|(_, latest)| {
                latest.received_at >= since && latest.result.liveness.as_ref().is_some_and(|p| p.ok)
            });
            if healthy {
                return Ok(None);
            }
            if tokio::time::Instant::now() >= deadline {
                let timeout = self.inner.settings.verify_timeout;
                return Err(if registry.agents().is_empty() {
                    format!("health not verified: no agent connected within {timeout:?}")
                } else {
                    format!("health not verified: no agent saw /health answer within {timeout:?}")
                });
            }
            tick.tick().await;
        }
    }

    async fn set_phase(
        &self,
        row: &mut DeploymentRow,
        phase: Phase,
        detail: String,
    ) -> Result<(), DeployError> {
        row.phase = phase;
        row.updated_at = now();
        let event = DeploymentEvent {
            at: row.updated_at,
            attempt: row.attempt,
            kind: "phase".to_owned(),
            detail: format!("{}: {detail}", phase.as_str()),
        };
        let fence = self.fence()?;
        let saved = self
            .inner
            .store
            .save_deployment(row, Some(&event), fence)
            .await;
        self.after_write(fence, saved)
    }

    async fn finish(
        &self,
        row: &mut DeploymentRow,
        phase: Phase,
        reason: Option<String>,
    ) -> Result<(), DeployError> {
        row.reason.clone_from(&reason);
        row.finished_at = Some(now());
        let detail = reason.unwrap_or_else(|| format!("attempt {} done", row.attempt));
        self.set_phase(row, phase, detail).await
    }

    async fn fail(
        &self,
        row: &mut DeploymentRow,
        tenant: &Tenant,
        reason: String,
    ) -> Result<(), DeployError> {
        tracing::warn!(tenant = %tenant.slug, attempt = row.attempt, %reason, "deployment failed");
        self.finish(row, Phase::Failed, Some(reason)).await
    }

    pub(super) async fn event(
        &self,
        row: &DeploymentRow,
        kind: &str,
        detail: String,
    ) -> Result<(), DeployError> {
        let event = DeploymentEvent {
            at: now(),
            attempt: row.attempt,
            kind: kind.to_owned(),
            detail,
        };
        let fence = self.fence()?;
        let recorded = self
            .inner
            .store
            .record_deployment_event(row.tenant_id, &event, fence)
            .await;
        self.after_write(fence, recorded)
    }

    /// The term the deployer writes in; an error on a replica that does
    /// not lead (the attempt ends there: the leader deploys).
    pub(super) fn fence(&self) -> Result<Fence, DeployError> {
        self.inner.leadership.fence().ok_or(DeployError::NotLeader)
    }

    /// A leader-only write's outcome: a fenced one steps this replica down.
    pub(super) fn after_write(
        &self,
        fence: Fence,
        written: Result<(), StoreError>,
    ) -> Result<(), DeployError> {
        written.map_err(|err| {
            if matches!(err, StoreError::Fenced { .. }) {
                self.inner.leadership.fenced(fence);
            }
            DeployError::RecordDeployment(err)
        })
    }
}

/// Whether the latest attempt, rendered from the same objects, already
/// did what this request asks. Requests and reconciles race with
/// attempts (a tenant's first reconcile may start before its
/// provisioning request is recorded): the objects' hash, not the
/// order of events, says whether there is anything left to do. An
/// operator's explicit request always deploys; a reconcile retries a
/// failure a minute after it at the earliest.
pub(super) fn already_done(
    row: &DeploymentRow,
    queued: Queued,
    hash: &str,
    cluster: bool,
) -> Option<AlreadyServed> {
    if row.phase == Phase::Pending || row.objects_hash.as_deref() != Some(hash) {
        return None;
    }
    let served = row.started_at.is_some_and(|s| s >= queued.at);
    if queued.trigger == Trigger::Manual && !served {
        return None;
    }
    let failed_lately = row
        .finished_at
        .is_some_and(|at| now() - at < RETRY_FAILED_AFTER);
    match row.phase {
        Phase::Ready => Some(AlreadyServed::CheckDrift),
        Phase::Failed if queued.trigger == Trigger::Reconcile && !failed_lately && !served => None,
        Phase::Failed => Some(AlreadyServed::Nothing),
        // Deployed once a cluster is configured.
        Phase::Skipped if !cluster => Some(AlreadyServed::Nothing),
        // Skipped with a cluster now, or an attempt a crash interrupted.
        _ => None,
    }
}
