//! The health engine: evaluates a tenant as soon as its agents' results
//! arrive, drives its alerts through the state machine, records every
//! transition with its notifications in one transaction, and keeps the
//! per-minute rollups.
//!
//! One task owns all alert state, so automatic transitions and operators'
//! actions (resolve, acknowledge, thresholds, silences) never race: the
//! API sends [`Command`]s and waits for the answer. Readers (health API,
//! dashboard, metrics) see the latest evaluation of each tenant through
//! [`Engine::tenant`] and [`Engine::tenants`] without waiting on the task.

mod alerting;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use knowton_common::health::{AUTOMATIC_ACTOR, Severity, TransitionKind};
use knowton_common::thresholds::Thresholds;
use knowton_proto::agent::v1::Failure;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use utoipa::ToSchema;
use uuid::Uuid;

pub use alerting::describe;

use super::alerts::{AlertPolicy, Tracker};
use super::evaluate::{Check, Evaluation, Inputs, evaluate};
use super::rollup::{Minute, minute_of};
use crate::ingest::Registry;
use crate::notify::NotifyService;
use crate::notify::render::AlertStatus;
use crate::provision::TenantDirectory;
use crate::store::{AlertRow, AlertState, AlertWrite, Rollup, Silence, Store, StoreError, Tenant};

/// Tuning of the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    pub policy: AlertPolicy,
    /// Results older than this do not count: a tenant whose pods all
    /// stopped reporting is down.
    pub result_max_age: TimeDelta,
    /// Open, unacknowledged alerts are notified again this often.
    pub reminder_every: Option<TimeDelta>,
    /// Send the resolution of an alert that fired while silenced.
    pub notify_silenced_resolved: bool,
    /// How often tenants without new results are re-evaluated (so a tenant
    /// whose results stop turns down), minutes are stored and reminders sent.
    pub sweep_every: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            policy: AlertPolicy::default(),
            result_max_age: TimeDelta::seconds(60),
            reminder_every: Some(TimeDelta::hours(4)),
            notify_silenced_resolved: false,
            sweep_every: Duration::from_secs(5),
        }
    }
}

/// An open alert as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAlert {
    pub id: Uuid,
    pub check: Check,
    pub severity: Severity,
    pub state: AlertState,
    pub summary: String,
    pub opened_at: DateTime<Utc>,
    pub acknowledged: bool,
    pub silenced: bool,
}

/// A tenant's latest evaluation.
#[derive(Debug, Clone)]
pub struct TenantHealth {
    pub tenant: Tenant,
    pub thresholds: Thresholds,
    pub evaluation: Evaluation,
    pub evaluated_at: DateTime<Utc>,
    /// When the newest result the evaluation saw was received.
    pub results_up_to: Option<DateTime<Utc>>,
    pub open_alerts: Vec<OpenAlert>,
    /// The minute in progress, not stored yet.
    pub current_minute: Option<Rollup>,
}

/// Whose channels a transition is sent to, once silences are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Everyone,
    /// A tenant's silence covers it: the operator still hears.
    Operator,
    Nobody,
}

/// Most silences one tenant may have in force or to come: each is kept in
/// memory and checked on every transition.
pub const MAX_ACTIVE_SILENCES: usize = 50;

/// Errors of operators' actions.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("alert {0} not found")]
    AlertNotFound(Uuid),
    #[error("alert {0} is already resolved")]
    AlreadyResolved(Uuid),
    #[error("silence {0} not found")]
    SilenceNotFound(Uuid),
    #[error("the tenant already has {limit} active silences, the most it may have")]
    SilenceLimit { limit: usize },
    #[error("the health engine is not running")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to prepare notifications")]
    Notify(#[from] crate::notify::NotifyError),
}

/// What the API asks of the engine.
#[derive(Debug)]
enum Command {
    Resolve {
        id: Uuid,
        actor: String,
        note: Option<String>,
        reply: oneshot::Sender<Result<AlertRow, EngineError>>,
    },
    Acknowledge {
        id: Uuid,
        actor: String,
        note: Option<String>,
        reply: oneshot::Sender<Result<AlertRow, EngineError>>,
    },
    SetThresholds {
        tenant: Uuid,
        thresholds: Option<Thresholds>,
        actor: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    CreateSilence {
        silence: Silence,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    EndSilence {
        id: Uuid,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Evaluates every active tenant now.
    EvaluateAll { reply: oneshot::Sender<()> },
}

/// Counters for the metrics endpoint.
#[derive(Debug)]
pub struct EngineCounters {
    pub evaluations: AtomicU64,
    /// Alert transitions recorded, by kind (indexed by the kind's place
    /// in [`TransitionKind::ALL`]); resolutions by hand are counted apart.
    pub transitions: [AtomicU64; TransitionKind::ALL.len()],
    /// Alerts resolved by hand (their kind is `resolved`).
    pub manual_resolves: AtomicU64,
    pub store_errors: AtomicU64,
    /// From a breaching result's arrival to its transition's commit.
    pub commit_latency: prometheus::Histogram,
}

impl Default for EngineCounters {
    fn default() -> Self {
        EngineCounters {
            evaluations: AtomicU64::default(),
            transitions: Default::default(),
            manual_resolves: AtomicU64::default(),
            store_errors: AtomicU64::default(),
            commit_latency: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "knowton_alert_commit_latency_seconds",
                    "From a breaching result's arrival to its alert transition's commit (with its notifications).",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5,
                    1.0,
                ]),
            )
            .expect("valid metric"),
        }
    }
}

#[derive(Debug)]
struct Shared {
    health: RwLock<HashMap<String, Arc<TenantHealth>>>,
    commands: mpsc::Sender<Command>,
    counters: EngineCounters,
}

/// A handle on the running engine.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// One (tenant, check): its state machine and its open alert.
#[derive(Debug, Default)]
struct Slot {
    tracker: Tracker,
    alert: Option<AlertRow>,
}

struct CachedTenant {
    tenant: Tenant,
    loaded_at: DateTime<Utc>,
}

/// How long a tenant's record is trusted before it is read again (a plan change shows within this).
const TENANT_CACHE: TimeDelta = TimeDelta::seconds(30);

struct Task {
    store: Arc<dyn Store>,
    notify: Arc<NotifyService>,
    registry: Arc<Registry>,
    directory: Arc<TenantDirectory>,
    settings: EngineSettings,
    shared: Arc<Shared>,
    tenants: HashMap<String, CachedTenant>,
    thresholds: HashMap<Uuid, Thresholds>,
    slots: HashMap<(Uuid, Check), Slot>,
    silences: Vec<Silence>,
    minutes: HashMap<Uuid, Minute>,
    /// When each tenant was last evaluated (for new-result latencies and the sweep).
    evaluated_at: HashMap<String, DateTime<Utc>>,
    silences_loaded_at: DateTime<Utc>,
}

impl Engine {
    /// Loads thresholds, open alerts and silences, and starts the engine's
    /// task; it stops when `stop` turns true, storing the minute in progress.
    pub async fn start(
        store: Arc<dyn Store>,
        notify: Arc<NotifyService>,
        registry: Arc<Registry>,
        directory: Arc<TenantDirectory>,
        settings: EngineSettings,
        stop: watch::Receiver<bool>,
    ) -> Result<(Engine, tokio::task::JoinHandle<()>), StoreError> {
        let (tx, rx) = mpsc::channel(256);
        let shared = Arc::new(Shared {
            health: RwLock::new(HashMap::new()),
            commands: tx,
            counters: EngineCounters::default(),
        });
        let thresholds = store.all_thresholds().await?.into_iter().collect();
        let now = Utc::now();
        let silences = store.active_silences(now).await?;
        let mut slots = HashMap::new();
        for alert in store.open_alerts().await? {
            slots.insert(
                (alert.tenant_id, alert.check),
                Slot {
                    tracker: Tracker::reopened(alert.severity, alert.state == AlertState::Flapping),
                    alert: Some(alert),
                },
            );
        }
        if !slots.is_empty() {
            tracing::info!(
                open_alerts = slots.len(),
                "alert state restored from the store"
            );
        }
        let task = Task {
            store,
            notify,
            registry,
            directory,
            settings,
            shared: shared.clone(),
            tenants: HashMap::new(),
            thresholds,
            slots,
            silences,
            minutes: HashMap::new(),
            evaluated_at: HashMap::new(),
            silences_loaded_at: now,
        };
        let handle = tokio::spawn(task.run(rx, stop));
        Ok((Engine { shared }, handle))
    }

    /// The tenant's latest evaluation, if it has been evaluated.
    pub fn tenant(&self, slug: &str) -> Option<Arc<TenantHealth>> {
        self.shared
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(slug)
            .cloned()
    }

    /// Every evaluated tenant, by slug.
    pub fn tenants(&self) -> Vec<Arc<TenantHealth>> {
        let mut all: Vec<_> = self
            .shared
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.tenant.slug.cmp(&b.tenant.slug));
        all
    }

    pub fn counters(&self) -> &EngineCounters {
        &self.shared.counters
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Resolves an open alert by hand; its resolution is notified if it fired.
    pub async fn resolve(
        &self,
        id: Uuid,
        actor: &str,
        note: Option<String>,
    ) -> Result<AlertRow, EngineError> {
        let actor = actor.to_owned();
        self.ask(|reply| Command::Resolve {
            id,
            actor,
            note,
            reply,
        })
        .await?
    }

    /// Acknowledges an open alert: no more reminders; it stays open.
    pub async fn acknowledge(
        &self,
        id: Uuid,
        actor: &str,
        note: Option<String>,
    ) -> Result<AlertRow, EngineError> {
        let actor = actor.to_owned();
        self.ask(|reply| Command::Acknowledge {
            id,
            actor,
            note,
            reply,
        })
        .await?
    }

    /// Sets (or with `None` resets) a tenant's thresholds and re-evaluates it.
    pub async fn set_thresholds(
        &self,
        tenant: Uuid,
        thresholds: Option<Thresholds>,
        actor: &str,
    ) -> Result<(), EngineError> {
        let actor = actor.to_owned();
        self.ask(|reply| Command::SetThresholds {
            tenant,
            thresholds,
            actor,
            reply,
        })
        .await?
    }

    pub async fn create_silence(&self, silence: Silence) -> Result<(), EngineError> {
        self.ask(|reply| Command::CreateSilence { silence, reply })
            .await?
    }

    pub async fn end_silence(&self, id: Uuid) -> Result<(), EngineError> {
        self.ask(|reply| Command::EndSilence { id, reply }).await?
    }

    /// Evaluates every active tenant now (after a check-all's fresh results).
    pub async fn evaluate_all(&self) -> Result<(), EngineError> {
        self.ask(|reply| Command::EvaluateAll { reply }).await
    }

    /// The thresholds a tenant is evaluated against.
    pub fn thresholds_of(&self, slug: &str) -> Option<Thresholds> {
        self.tenant(slug).map(|h| h.thresholds)
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(self.settings.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let registry = self.registry.clone();
        loop {
            tokio::select! {
                biased;
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                Some(command) = rx.recv() => self.command(command).await,
                _ = registry.changed.notified() => {
                    for slug in registry.take_changed() {
                        self.evaluate(&slug, false).await;
                    }
                }
                _ = sweep.tick() => self.sweep().await,
            }
        }
        // The minute in progress is kept; the next start adds to it.
        self.flush_minutes(true).await;
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Resolve {
                id,
                actor,
                note,
                reply,
            } => {
                let _ = reply.send(self.resolve_by_hand(id, &actor, note).await);
            }
            Command::Acknowledge {
                id,
                actor,
                note,
                reply,
            } => {
                let _ = reply.send(self.acknowledge(id, &actor, note).await);
            }
            Command::SetThresholds {
                tenant,
                thresholds,
                actor,
                reply,
            } => {
                let result = self
                    .store
                    .set_thresholds(tenant, thresholds.as_ref(), &actor)
                    .await
                    .map_err(EngineError::from);
                if result.is_ok() {
                    match thresholds {
                        Some(t) => self.thresholds.insert(tenant, t),
                        None => self.thresholds.remove(&tenant),
                    };
                    let slug = self
                        .tenants
                        .values()
                        .find(|c| c.tenant.id == tenant)
                        .map(|c| c.tenant.slug.clone());
                    if let Some(slug) = slug {
                        self.evaluate(&slug, true).await;
                    }
                }
                let _ = reply.send(result);
            }
            Command::CreateSilence { silence, reply } => {
                let _ = reply.send(self.create_silence(silence).await);
            }
            Command::EndSilence { id, reply } => {
                let now = crate::store::now();
                let result = match self.store.end_silence(id, now).await {
                    Ok(true) => {
                        self.silences.retain(|s| s.id != id);
                        Ok(())
                    }
                    Ok(false) => Err(EngineError::SilenceNotFound(id)),
                    Err(err) => Err(err.into()),
                };
                let _ = reply.send(result);
            }
            Command::EvaluateAll { reply } => {
                let slugs: Vec<String> = self.directory.with(|a| a.iter().cloned().collect());
                for slug in slugs {
                    self.evaluate(&slug, false).await;
                }
                let _ = reply.send(());
            }
        }
    }

    /// The tenant's record, read again when older than [`TENANT_CACHE`];
    /// `None` for a tenant no longer active.
    async fn tenant(&mut self, slug: &str, now: DateTime<Utc>) -> Option<Tenant> {
        if !self.directory.contains(slug) {
            self.forget(slug);
            return None;
        }
        if let Some(cached) = self.tenants.get(slug)
            && now - cached.loaded_at < TENANT_CACHE
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
                self.tenants.insert(
                    slug.to_owned(),
                    CachedTenant {
                        tenant: tenant.clone(),
                        loaded_at: now,
                    },
                );
                Some(tenant)
            }
            Ok(None) => None,
            Err(err) => {
                count(&self.shared.counters.store_errors);
                tracing::warn!(tenant = slug, error = %err, "failed to read the tenant for its health evaluation");
                // Keep judging it by the last known record.
                self.tenants.get(slug).map(|c| c.tenant.clone())
            }
        }
    }

    /// Drops what is kept of a tenant that is no longer active.
    fn forget(&mut self, slug: &str) {
        if let Some(cached) = self.tenants.remove(slug) {
            let id = cached.tenant.id;
            self.slots.retain(|(tenant, _), _| *tenant != id);
            self.minutes.remove(&id);
        }
        self.evaluated_at.remove(slug);
        self.registry.forget(slug);
        self.shared
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(slug);
    }

    /// Evaluates one tenant from its fresh results and applies what changed.
    async fn evaluate(&mut self, slug: &str, force: bool) {
        let now = crate::store::now();
        let Some(tenant) = self.tenant(slug, now).await else {
            return;
        };
        let thresholds = self.thresholds.get(&tenant.id).copied().unwrap_or_default();
        let latest = self.registry.latest(slug);
        let since = self.evaluated_at.insert(slug.to_owned(), now);
        let fresh: Vec<_> = latest
            .iter()
            .filter(|(_, l)| now - l.received_at <= self.settings.result_max_age)
            .map(|(_, l)| &l.result)
            .collect();
        let evaluation = evaluate(Inputs {
            plan: tenant.plan,
            thresholds: &thresholds,
            pods: &fresh,
            seen_before: !latest.is_empty(),
        });
        count(&self.shared.counters.evaluations);

        // New API latencies (ms) for the minute's percentiles.
        let new_latencies: Vec<f64> = latest
            .iter()
            .filter(|(_, l)| since.is_none_or(|s| l.received_at > s))
            .filter_map(|(_, l)| l.result.api_health.as_ref())
            .filter(|o| o.ok || o.failure() == Failure::Timeout)
            .map(|o| o.connect_us.saturating_add(o.latency_us) as f64 / 1000.0)
            .collect();
        let storage = fresh
            .iter()
            .filter_map(|p| p.storage.map(|s| s.used_bytes))
            .max();
        let minute = self
            .minutes
            .entry(tenant.id)
            .or_insert_with(|| Minute::new(now));
        if minute.start != minute_of(now) {
            let done = std::mem::replace(minute, Minute::new(now));
            if let Some(rollup) = done.rollup(tenant.id)
                && let Err(err) = self.store.write_rollups(&[rollup]).await
            {
                count(&self.shared.counters.store_errors);
                tracing::warn!(tenant = slug, error = %err, "failed to store a health rollup");
            }
        }
        if let Some(minute) = self.minutes.get_mut(&tenant.id) {
            minute.add(&evaluation, &new_latencies, storage);
        }

        // Alerts move on new results (or when none is fresh any more, or
        // the thresholds changed), not on every re-evaluation of the same
        // ones: hysteresis counts results, not sweeps.
        let has_new = latest
            .iter()
            .any(|(_, l)| since.is_none_or(|s| l.received_at > s));
        let results_up_to = latest.iter().map(|(_, l)| l.received_at).max();
        if has_new || fresh.is_empty() || force {
            // Notifications remember the arrival of the results that caused them.
            let cause = if has_new { results_up_to } else { None };
            for check in &evaluation.checks {
                self.observe(&tenant, check, now, cause).await;
            }
        }
        self.publish(tenant, thresholds, evaluation, now, results_up_to);
    }

    /// Feeds one check to its state machine and records the transition.
    async fn observe(
        &mut self,
        tenant: &Tenant,
        check: &super::evaluate::CheckResult,
        now: DateTime<Utc>,
        cause: Option<DateTime<Utc>>,
    ) {
        let key = (tenant.id, check.check);
        let slot = self.slots.entry(key).or_default();
        let before = slot.tracker.clone();
        let transitions = slot
            .tracker
            .observe(check.state, now, &self.settings.policy);
        let current = slot.alert.clone();
        for transition in transitions {
            let Some(planned) = alerting::plan(tenant, check, current.as_ref(), transition, now)
            else {
                continue;
            };
            match self.record(tenant, planned, cause).await {
                Ok(alert) => {
                    if let Some(slot) = self.slots.get_mut(&key) {
                        slot.alert = (alert.state != AlertState::Resolved).then_some(alert);
                    }
                }
                Err(err) => {
                    // Not recorded: the next evaluation tries again.
                    count(&self.shared.counters.store_errors);
                    tracing::error!(tenant = %tenant.slug, check = check.check.as_str(), error = %err, "failed to record an alert transition; will retry");
                    if let Some(slot) = self.slots.get_mut(&key) {
                        slot.tracker = before;
                        if matches!(err, EngineError::Store(StoreError::Stale)) {
                            slot.alert = None;
                            slot.tracker.resolved_by_hand();
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Records a silence unless its tenant already has the most it may
    /// have in force. Commands run one at a time, so the count read from
    /// the store cannot be raced by another creation.
    async fn create_silence(&mut self, silence: Silence) -> Result<(), EngineError> {
        let active = self
            .store
            .active_silences(silence.created_at)
            .await?
            .iter()
            .filter(|s| s.tenant_id == silence.tenant_id)
            .count();
        if active >= MAX_ACTIVE_SILENCES {
            return Err(EngineError::SilenceLimit {
                limit: MAX_ACTIVE_SILENCES,
            });
        }
        self.store.create_silence(&silence).await?;
        self.silences.push(silence);
        Ok(())
    }

    fn silenced(&self, tenant: Uuid, check: Check, at: DateTime<Utc>) -> bool {
        self.silences.iter().any(|s| s.covers(tenant, check, at))
    }

    /// Who hears of a transition: a silence the operator set quiets every
    /// channel; one the tenant set quiets only the tenant's own.
    fn audience(&self, tenant: Uuid, check: Check, at: DateTime<Utc>) -> Audience {
        let mut covering = self.silences.iter().filter(|s| s.covers(tenant, check, at));
        match covering.next() {
            None => Audience::Everyone,
            Some(first) if first.by_operator() => Audience::Nobody,
            Some(_) if covering.any(Silence::by_operator) => Audience::Nobody,
            Some(_) => Audience::Operator,
        }
    }

    /// Writes a planned transition with its notifications, in one transaction.
    async fn record(
        &mut self,
        tenant: &Tenant,
        planned: alerting::Planned,
        cause: Option<DateTime<Utc>>,
    ) -> Result<AlertRow, EngineError> {
        let alerting::Planned {
            mut alert,
            mut event,
            notify,
        } = planned;
        let audience = self.audience(tenant.id, alert.check, event.at);
        let silenced = audience != Audience::Everyone;
        let send = match notify {
            Some(AlertStatus::Firing) => audience != Audience::Nobody,
            Some(AlertStatus::Resolved) => alert.notified || self.settings.notify_silenced_resolved,
            None => false,
        };
        let mut messages = Vec::new();
        if let (true, Some(status)) = (send, notify) {
            if status == AlertStatus::Firing {
                alert.notified = true;
            }
            alert.last_notified_at = Some(event.at);
            let mut channels = self.notify.resolve_channels(tenant).await?;
            if audience == Audience::Operator {
                channels = channels.operator_only();
            }
            let rendered = alerting::event_of(tenant, &alert, status);
            messages = self.notify.plan_alert(&rendered, &channels);
            for m in &mut messages {
                m.caused_at = cause;
            }
        }
        event.notifications = messages.len() as i64;
        let write = AlertWrite {
            alert,
            event,
            messages,
        };
        self.store.record_alert(&write).await?;
        if !write.messages.is_empty() {
            self.notify.wakeup().poke();
        }
        if let Some(cause) = cause {
            self.shared
                .counters
                .commit_latency
                .observe((Utc::now() - cause).as_seconds_f64().max(0.0));
        }
        let by_hand = write.event.kind == TransitionKind::Resolved
            && write
                .alert
                .resolved_by
                .as_deref()
                .is_some_and(|by| by != AUTOMATIC_ACTOR);
        let counters = &self.shared.counters;
        count(if by_hand {
            &counters.manual_resolves
        } else {
            &counters.transitions[write.event.kind as usize]
        });
        tracing::info!(
            tenant = %tenant.slug,
            check = %write.alert.check,
            alert_id = %write.alert.id,
            kind = %write.event.kind,
            severity = %write.alert.severity,
            notifications = write.messages.len(),
            silenced,
            "alert {}", write.event.kind
        );
        if write.alert.resolved_at.is_some() {
            // Silences that end with the alert were ended in the store.
            let (id, check, at) = (tenant.id, write.alert.check, write.event.at);
            for s in &mut self.silences {
                if s.end_on_resolve && s.covers(id, check, at) {
                    s.ends_at = at;
                }
            }
        }
        Ok(write.alert)
    }

    /// The open alert with this id, wherever it is kept.
    fn slot_of(&self, id: Uuid) -> Option<(Uuid, Check)> {
        self.slots
            .iter()
            .find(|(_, slot)| slot.alert.as_ref().is_some_and(|a| a.id == id))
            .map(|(key, _)| *key)
    }

    async fn open_alert(&mut self, id: Uuid) -> Result<(AlertRow, Tenant), EngineError> {
        let alert = match self.slot_of(id).and_then(|k| self.slots[&k].alert.clone()) {
            Some(alert) => alert,
            None => {
                let stored = self
                    .store
                    .get_alert(id)
                    .await?
                    .ok_or(EngineError::AlertNotFound(id))?;
                if stored.resolved_at.is_some() {
                    return Err(EngineError::AlreadyResolved(id));
                }
                stored
            }
        };
        let now = crate::store::now();
        let tenant = match self.tenant(&alert.tenant_slug, now).await {
            Some(t) => t,
            None => self
                .store
                .get_tenant(alert.tenant_id)
                .await?
                .ok_or(EngineError::AlertNotFound(id))?,
        };
        Ok((alert, tenant))
    }

    async fn resolve_by_hand(
        &mut self,
        id: Uuid,
        actor: &str,
        note: Option<String>,
    ) -> Result<AlertRow, EngineError> {
        let (current, tenant) = self.open_alert(id).await?;
        let now = crate::store::now();
        let step = alerting::Step {
            kind: TransitionKind::Resolved,
            summary: format!("resolved by {actor}"),
            actor,
            note: note.clone(),
            notify: Some(AlertStatus::Resolved),
        };
        let planned = alerting::step(&current, now, step, |alert| {
            alert.state = AlertState::Resolved;
            alert.resolved_at = Some(now);
            alert.resolved_by = Some(actor.to_owned());
            alert.resolve_note = note;
        });
        let resolved = self.record(&tenant, planned, None).await?;
        if let Some(slot) = self.slots.get_mut(&(resolved.tenant_id, resolved.check)) {
            slot.alert = None;
            slot.tracker.resolved_by_hand();
        }
        self.republish(&tenant.slug);
        Ok(resolved)
    }

    async fn acknowledge(
        &mut self,
        id: Uuid,
        actor: &str,
        note: Option<String>,
    ) -> Result<AlertRow, EngineError> {
        let (current, tenant) = self.open_alert(id).await?;
        if current.acknowledged_at.is_some() {
            return Ok(current);
        }
        let now = crate::store::now();
        let step = alerting::Step {
            kind: TransitionKind::Acknowledged,
            summary: format!("acknowledged by {actor}"),
            actor,
            note,
            notify: None,
        };
        let planned = alerting::step(&current, now, step, |alert| {
            alert.acknowledged_at = Some(now);
            alert.acknowledged_by = Some(actor.to_owned());
        });
        let acked = self.record(&tenant, planned, None).await?;
        if let Some(slot) = self.slots.get_mut(&(acked.tenant_id, acked.check)) {
            slot.alert = Some(acked.clone());
        }
        self.republish(&tenant.slug);
        Ok(acked)
    }

    /// Re-evaluates tenants that had no new results for a sweep period,
    /// stores finished minutes, sends reminders.
    async fn sweep(&mut self) {
        let now = crate::store::now();
        let quiet =
            chrono::TimeDelta::from_std(self.settings.sweep_every).unwrap_or(TimeDelta::seconds(5));
        let stale: Vec<String> = self
            .evaluated_at
            .iter()
            .filter(|(_, at)| now - **at >= quiet)
            .map(|(slug, _)| slug.clone())
            .collect();
        for slug in stale {
            self.evaluate(&slug, false).await;
        }
        self.flush_minutes(false).await;
        if now - self.silences_loaded_at >= TimeDelta::minutes(1) {
            match self.store.active_silences(now).await {
                Ok(silences) => {
                    self.silences = silences;
                    self.silences_loaded_at = now;
                }
                Err(err) => tracing::warn!(error = %err, "failed to reload silences"),
            }
        }
        self.silences.retain(|s| s.ends_at > now);
        self.remind(now).await;
    }

    /// Notifies again the open, unacknowledged alerts last notified long ago.
    async fn remind(&mut self, now: DateTime<Utc>) {
        let Some(every) = self.settings.reminder_every else {
            return;
        };
        let due: Vec<(Uuid, Check)> = self
            .slots
            .iter()
            .filter_map(|(key, slot)| {
                let a = slot.alert.as_ref()?;
                let last = a.last_notified_at.unwrap_or(a.opened_at);
                (a.state == AlertState::Firing
                    && a.acknowledged_at.is_none()
                    && a.notified
                    && now - last >= every)
                    .then_some(*key)
            })
            .collect();
        for key in due {
            let Some(current) = self.slots.get(&key).and_then(|s| s.alert.clone()) else {
                continue;
            };
            let Some(tenant) = self.tenant(&current.tenant_slug, now).await else {
                continue;
            };
            let step = alerting::Step {
                kind: TransitionKind::Reminder,
                summary: current.summary.clone(),
                actor: AUTOMATIC_ACTOR,
                note: None,
                notify: Some(AlertStatus::Firing),
            };
            let planned = alerting::step(&current, now, step, |_| {});
            match self.record(&tenant, planned, None).await {
                Ok(alert) => {
                    if let Some(slot) = self.slots.get_mut(&key) {
                        slot.alert = Some(alert);
                    }
                }
                Err(err) => {
                    tracing::warn!(alert_id = %current.id, error = %err, "failed to send an alert reminder")
                }
            }
        }
    }

    /// Stores every finished minute (and with `all`, the ones in progress).
    async fn flush_minutes(&mut self, all: bool) {
        let now = crate::store::now();
        let current = minute_of(now);
        let mut rollups = Vec::new();
        let mut finished = Vec::new();
        for (tenant, minute) in &self.minutes {
            if all || minute.start < current {
                rollups.extend(minute.rollup(*tenant));
                finished.push(*tenant);
            }
        }
        if rollups.is_empty() && finished.is_empty() {
            return;
        }
        match self.store.write_rollups(&rollups).await {
            Ok(()) => {
                for tenant in finished {
                    if !all {
                        self.minutes.remove(&tenant);
                    }
                }
            }
            Err(err) => {
                count(&self.shared.counters.store_errors);
                tracing::warn!(error = %err, minutes = rollups.len(), "failed to store health rollups; will retry");
            }
        }
    }

    fn open_alerts_of(&self, tenant: Uuid, now: DateTime<Utc>) -> Vec<OpenAlert> {
        let mut open: Vec<OpenAlert> = self
            .slots
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .filter_map(|(_, slot)| slot.alert.as_ref())
            .map(|a| OpenAlert {
                id: a.id,
                check: a.check,
                severity: a.severity,
                state: a.state,
                summary: a.summary.clone(),
                opened_at: a.opened_at,
                acknowledged: a.acknowledged_at.is_some(),
                silenced: self.silenced(tenant, a.check, now),
            })
            .collect();
        open.sort_by_key(|a| a.id);
        open
    }

    fn publish(
        &mut self,
        tenant: Tenant,
        thresholds: Thresholds,
        evaluation: Evaluation,
        now: DateTime<Utc>,
        results_up_to: Option<DateTime<Utc>>,
    ) {
        let open_alerts = self.open_alerts_of(tenant.id, now);
        let current_minute = self
            .minutes
            .get(&tenant.id)
            .and_then(|m| m.rollup(tenant.id));
        let slug = tenant.slug.clone();
        let health = TenantHealth {
            tenant,
            thresholds,
            evaluation,
            evaluated_at: now,
            results_up_to,
            open_alerts,
            current_minute,
        };
        let health = Arc::new(health);
        self.shared
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slug, health);
    }

    /// Publishes a tenant again after an operator's action on its alerts.
    fn republish(&mut self, slug: &str) {
        let Some(previous) = self
            .shared
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(slug)
            .cloned()
        else {
            return;
        };
        let now = crate::store::now();
        let mut updated = (*previous).clone();
        updated.open_alerts = self.open_alerts_of(previous.tenant.id, now);
        self.shared
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slug.to_owned(), Arc::new(updated));
    }
}
