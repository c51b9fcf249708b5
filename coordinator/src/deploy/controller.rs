//! The deployer: turns requests (provisioning, configuration changes, an
//! operator, the periodic and watch-driven reconcile) into deployments of
//! one tenant at a time, records every phase in the store, and repairs
//! drift.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use knowton_common::TenantStatus;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::cluster::Cluster;
use super::kinds::DEPLOYMENT;
use super::render::{ClusterSettings, TenantSecrets, TenantSpec, namespace, render, to_yaml};
use super::rollout;
use super::watch::LiveCache;
use crate::ingest::Registry;
use crate::provision::{ServiceError, TenantService};
use crate::store::{DeploymentEvent, DeploymentRow, Phase, StoreError, Tenant, now};

mod drift;
mod purge;

/// How long after a failure a reconcile retries the deployment.
const RETRY_FAILED_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// How often the leader looks for deployments other replicas recorded.
const PENDING_SCAN_EVERY: Duration = Duration::from_secs(5);

/// How deployments run.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub cluster: ClusterSettings,
    /// How long a rollout may take before the deployment fails.
    pub rollout_timeout: Duration,
    /// How long to wait for the agents to see the tenant healthy.
    pub verify_timeout: Duration,
    /// How often every tenant is checked for drift (besides the watch).
    pub reconcile_every: Duration,
    /// Tenants deployed at once.
    pub concurrency: usize,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            cluster: ClusterSettings::default(),
            rollout_timeout: Duration::from_secs(600),
            verify_timeout: Duration::from_secs(180),
            reconcile_every: Duration::from_secs(600),
            concurrency: 4,
        }
    }
}

/// What asked for a deployment (the vocabulary's name for it).
pub use knowton_common::health::DeploymentTrigger as Trigger;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("failed to record the deployment")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] super::ClusterError),
}

/// The deployer's handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Deployer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: Arc<TenantService>,
    registry: Arc<Registry>,
    cluster: Option<Cluster>,
    settings: DeploySettings,
    /// Tenants waiting for the worker, with what asked (a full deployment
    /// wins over a reconcile).
    queue: Mutex<BTreeMap<Uuid, Queued>>,
    wake: Notify,
    /// Each deployed tenant's objects, for the watch to compare against.
    desired: Mutex<drift::Desired>,
    /// The managed objects as the watch last saw them.
    live: Arc<LiveCache>,
    /// Tenants being purged: never deployed again.
    purging: Mutex<HashSet<Uuid>>,
    /// Whether this replica holds the Lease (and so deploys).
    leader: watch::Receiver<bool>,
    counters: DeployCounters,
}

/// What the deployer did, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeployCounters {
    pub ready: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
    pub drift_checks: AtomicU64,
    pub drift_repairs: AtomicU64,
    pub pruned: AtomicU64,
    pub scaled_up: AtomicU64,
    pub scaled_down: AtomicU64,
}

/// What is left of a request the latest attempt already served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Ready: only make sure nobody changed it since.
    CheckDrift,
    Nothing,
}

/// A tenant waiting for the worker.
#[derive(Debug, Clone, Copy)]
struct Queued {
    trigger: Trigger,
    /// When the latest request came: an attempt started after it serves
    /// every request queued so far.
    at: chrono::DateTime<chrono::Utc>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deployer {
    pub fn new(
        service: Arc<TenantService>,
        registry: Arc<Registry>,
        cluster: Option<Cluster>,
        settings: DeploySettings,
        leader: watch::Receiver<bool>,
    ) -> Self {
        Deployer {
            inner: Arc::new(Inner {
                leader,
                counters: DeployCounters::default(),
                service,
                registry,
                cluster,
                settings,
                queue: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
                desired: Mutex::default(),
                purging: Mutex::new(HashSet::new()),
                live: Arc::default(),
            }),
        }
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    pub fn is_leader(&self) -> bool {
        *self.inner.leader.borrow()
    }

    pub fn counters(&self) -> &DeployCounters {
        &self.inner.counters
    }

    /// The managed objects as the watch last saw them.
    pub fn live(&self) -> &Arc<LiveCache> {
        &self.inner.live
    }

    pub fn service(&self) -> &Arc<TenantService> {
        &self.inner.service
    }

    /// The agents' results.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub fn settings(&self) -> &DeploySettings {
        &self.inner.settings
    }

    /// Asks for a deployment of `tenant`: recorded as pending (unless one
    /// is under way, which the new one follows) and queued.
    pub async fn request(
        &self,
        tenant: Uuid,
        trigger: Trigger,
    ) -> Result<DeploymentRow, DeployError> {
        let row = self
            .inner
            .service
            .store()
            .request_deployment(tenant, trigger)
            .await?;
        self.enqueue_at(tenant, trigger, row.requested_at);
        Ok(row)
    }

    /// [`Self::request`] after a change that is already committed: a
    /// failure to record the request is logged, not returned (the change
    /// stands, and the next reconcile deploys it).
    pub async fn after_change(&self, tenant: Uuid, trigger: Trigger) {
        if let Err(err) = self.request(tenant, trigger).await {
            self.enqueue(tenant, trigger);
            tracing::warn!(tenant_id = %tenant, trigger = trigger.as_str(), error = %crate::notify::http::error_chain(&err), "failed to record a deployment request; deploying anyway");
        }
    }

    fn enqueue(&self, tenant: Uuid, trigger: Trigger) {
        self.enqueue_at(tenant, trigger, now());
    }

    /// Queues `tenant`, asked for at `at` (an attempt starting later
    /// serves the request).
    fn enqueue_at(&self, tenant: Uuid, trigger: Trigger, at: chrono::DateTime<chrono::Utc>) {
        let mut queue = lock(&self.inner.queue);
        let entry = queue.entry(tenant).or_insert(Queued { trigger, at });
        entry.trigger = entry.trigger.min(trigger);
        entry.at = entry.at.max(at);
        drop(queue);
        self.inner.wake.notify_one();
    }

    /// The tenant's objects as the deployer would apply them now.
    pub async fn render_tenant(&self, tenant: &Tenant) -> Result<Vec<Value>, DeployError> {
        let row = self.inner.service.store().deployment(tenant.id).await?;
        let secrets = self.inner.service.deployment_secrets(tenant.id).await?;
        Ok(render(
            &spec_of(tenant, row.as_ref()),
            &TenantSecrets {
                database_password: secrets.database_password,
                jwt_secret: secrets.jwt_secret,
            },
            &self.inner.settings.cluster,
        ))
    }

    /// Runs deployments until `shutdown` turns true: queued requests, a
    /// reconcile of every tenant at start and every `reconcile_every`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut leader = self.inner.leader.clone();
        let mut electing = true;
        let every = self.inner.settings.reconcile_every;
        let mut next_reconcile = tokio::time::Instant::now();
        // Requests recorded by other replicas (which do not deploy).
        let mut pending_scan = tokio::time::interval(PENDING_SCAN_EVERY);
        pending_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running: HashSet<Uuid> = HashSet::new();
        let mut tasks: JoinSet<Uuid> = JoinSet::new();
        loop {
            let leads = *leader.borrow_and_update();
            while leads && tasks.len() < self.inner.settings.concurrency.max(1) {
                let next = {
                    let mut queue = lock(&self.inner.queue);
                    let id = queue.keys().find(|id| !running.contains(id)).copied();
                    id.and_then(|id| queue.remove(&id).map(|t| (id, t)))
                };
                let Some((id, queued)) = next else { break };
                running.insert(id);
                let deployer = self.clone();
                tasks.spawn(async move {
                    match deployer.deploy(id, queued).await {
                        // Purged while it was deployed: nothing to record.
                        Ok(()) | Err(DeployError::Store(StoreError::NotFound)) => {}
                        Err(err) => {
                            tracing::error!(tenant_id = %id, error = %crate::notify::http::error_chain(&err), "deployment could not be recorded");
                        }
                    }
                    id
                });
            }
            tokio::select! {
                Some(done) = tasks.join_next() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                }
                () = self.inner.wake.notified() => {}
                changed = leader.changed(), if electing => {
                    // Closed: leadership no longer changes (a lone
                    // coordinator, or shutting down).
                    electing = changed.is_ok();
                    if electing && *leader.borrow() {
                        // A new leader checks everything at once.
                        next_reconcile = tokio::time::Instant::now();
                    }
                }
                () = tokio::time::sleep_until(next_reconcile), if leads => {
                    next_reconcile += every;
                    if let Err(err) = self.reconcile_all().await {
                        tracing::warn!(error = %crate::notify::http::error_chain(&err), "failed to list tenants to reconcile");
                    }
                }
                _ = pending_scan.tick(), if leads => {
                    match self.inner.service.store().deployments_in(Phase::Pending).await {
                        Ok(rows) => {
                            for row in rows.into_iter().filter(|r| !running.contains(&r.tenant_id)) {
                                self.enqueue_at(row.tenant_id, Trigger::Manual, row.requested_at);
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "failed to read pending deployments"),
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        tasks.shutdown().await;
    }

    /// Queues every tenant for a reconcile; a tenant never deployed (from
    /// before deployments existed, or whose request a crash lost) for its
    /// first deployment.
    async fn reconcile_all(&self) -> Result<(), StoreError> {
        let store = self.inner.service.store();
        let deployed: HashSet<Uuid> = store
            .deployments()
            .await?
            .into_iter()
            .map(|row| row.tenant_id)
            .collect();
        let mut after = None;
        loop {
            let page = store.list_tenants(500, after, None).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for tenant in &page {
                if deployed.contains(&tenant.id) {
                    self.enqueue(tenant.id, Trigger::Reconcile);
                } else {
                    // Any attempt since its creation serves it (the
                    // provisioning request may be recorded meanwhile).
                    self.enqueue_at(tenant.id, Trigger::Provisioned, tenant.created_at);
                }
            }
        }
        Ok(())
    }

    /// One deployment (or drift check) of one tenant.
    async fn deploy(&self, id: Uuid, queued: Queued) -> Result<(), DeployError> {
        let trigger = queued.trigger;
        if lock(&self.inner.purging).contains(&id) {
            return Ok(());
        }
        let service = &self.inner.service;
        let tenant = match service.get(id).await {
            Ok(tenant) => tenant,
            // Purged meanwhile: nothing to deploy.
            Err(ServiceError::NotFound(_)) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        let store = service.store();
        let mut row = store
            .deployment(id)
            .await?
            .unwrap_or_else(|| DeploymentRow::new(id, trigger));
        let objects = match self.render_tenant(&tenant).await {
            Ok(objects) => objects,
            Err(DeployError::Store(err)) => return Err(err.into()),
            Err(err) => {
                // The tenant's secrets cannot be opened, say: record it
                // rather than retrying it every few seconds.
                row.attempt += 1;
                let reason = format!(
                    "failed to render: {}",
                    crate::notify::http::error_chain(&err)
                );
                return self.fail(&mut row, &tenant, reason).await;
            }
        };
        let hash = objects_hash(&objects);
        self.remember(id, &objects);
        if let Some(done) = already_done(&row, queued, &hash, self.inner.cluster.is_some()) {
            return match done {
                Done::CheckDrift => self.repair_drift(&tenant, &row, &objects).await,
                Done::Nothing => Ok(()),
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
        self.set_phase(
            &mut row,
            Phase::Verifying,
            "waiting for the agents to see /health answer".to_owned(),
        )
        .await?;
        match self.verify(&tenant.slug).await {
            Ok(note) => self.finish(&mut row, Phase::Ready, note).await,
            Err(reason) => self.fail(&mut row, &tenant, reason).await,
        }
    }

    /// Waits for an agent's result of the tenant, newer than now, whose
    /// `/health` answered. With no agent connected there is nothing to ask:
    /// ready, with a note saying so.
    async fn verify(&self, slug: &str) -> Result<Option<String>, String> {
        let registry = &self.inner.registry;
        if registry.agents().is_empty() {
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
                return Err(format!(
                    "health not verified: no agent saw /health answer within {:?}",
                    self.inner.settings.verify_timeout
                ));
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
        self.inner
            .service
            .store()
            .save_deployment(row, Some(&event))
            .await?;
        Ok(())
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

    async fn event(
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
        self.inner
            .service
            .store()
            .record_deployment_event(row.tenant_id, &event)
            .await?;
        Ok(())
    }
}

/// Whether the latest attempt, rendered from the same objects, already
/// did what this request asks. Requests and reconciles race with
/// attempts (a tenant's first reconcile may start before its
/// provisioning request is recorded): the objects' hash, not the
/// order of events, says whether there is anything left to do. An
/// operator's explicit request always deploys; a reconcile retries a
/// failure a minute after it at the earliest.
fn already_done(row: &DeploymentRow, queued: Queued, hash: &str, cluster: bool) -> Option<Done> {
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
        Phase::Ready => Some(Done::CheckDrift),
        Phase::Failed if queued.trigger == Trigger::Reconcile && !failed_lately && !served => None,
        Phase::Failed => Some(Done::Nothing),
        // Deployed once a cluster is configured.
        Phase::Skipped if !cluster => Some(Done::Nothing),
        // Skipped with a cluster now, or an attempt a crash interrupted.
        _ => None,
    }
}

/// What the tenant is rendered from: its record and deployment settings.
pub fn spec_of(tenant: &Tenant, row: Option<&DeploymentRow>) -> TenantSpec {
    TenantSpec {
        id: tenant.id,
        slug: tenant.slug.clone(),
        plan: tenant.plan,
        domain: tenant.domain.clone(),
        features: tenant.features,
        branding: tenant.branding.clone(),
        allowlist: row.map(|r| r.allowlist.clone()).unwrap_or_default(),
        stopped: tenant.status == TenantStatus::Deprovisioned,
        min_replicas: row.and_then(|r| r.min_replicas),
    }
}

/// sha256 of the objects as a dry-run prints them (Secret values left out).
pub fn objects_hash(objects: &[Value]) -> String {
    let digest = Sha256::digest(to_yaml(objects).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
