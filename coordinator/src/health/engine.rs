//! The health engine: evaluates a tenant as soon as its agents' results
//! arrive, drives its alerts through the state machine, records every
//! transition with its notifications in one transaction, and keeps the
//! per-minute rollups.
//!
//! One task owns all alert state, so automatic transitions and operators'
//! actions (resolve, acknowledge, thresholds, silences) never race: the
//! API sends commands and waits for the answer. Readers (health API,
//! dashboard, metrics) see the latest evaluation of each tenant through
//! [`Engine::tenant`] and [`Engine::tenants`] without waiting on the task.

mod alerting;
mod clock;
mod commands;
mod counters;
mod notifications;
mod publish;
mod reminders;
mod rollups;
mod silences;
mod standby;
mod tenant_cache;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use knowton_common::health::{AUTOMATIC_ACTOR, CheckState, Severity, TransitionKind};
use knowton_common::thresholds::Thresholds;
use knowton_proto::agent::v1::Failure;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use utoipa::ToSchema;
use uuid::Uuid;

pub use alerting::describe;
pub use commands::{OperatorAction, Reload};
pub use counters::EngineCounters;
pub use silences::MAX_ACTIVE_SILENCES;

use clock::EngineClock;
use commands::Command;
use counters::count;
use rollups::RollupWrites;
use silences::Audience;
use tenant_cache::{CachedTenant, TenantReload};

use super::alerts::{AlertPolicy, Tracker};
use super::backups::{BackupFacts, BackupWatch, backup_check};
use super::evaluate::{Check, Evaluation, Inputs, evaluate};
use super::rollup::{Minute, minute_of};
use crate::directory::TenantDirectory;
use crate::ingest::Registry;
use crate::leader::Leadership;
use crate::notify::NotifyService;
use crate::notify::render::AlertStatus;
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
    pub tenant: Arc<Tenant>,
    pub thresholds: Thresholds,
    pub evaluation: Evaluation,
    pub evaluated_at: DateTime<Utc>,
    /// When the newest result the evaluation saw was received.
    pub results_up_to: Option<DateTime<Utc>>,
    pub open_alerts: Vec<OpenAlert>,
    /// The minute in progress, not stored yet.
    pub current_minute: Option<Rollup>,
}

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
    #[error("this coordinator does not lead: alert changes are recorded by the leader")]
    NotLeader,
    #[error("failed to read or record the alert")]
    RecordAlert(#[from] StoreError),
    #[error("failed to prepare notifications")]
    PlanNotifications(#[from] crate::notify::NotifyError),
}

#[derive(Debug)]
struct Published {
    health: RwLock<HashMap<String, Arc<TenantHealth>>>,
    commands: mpsc::Sender<Command>,
    counters: EngineCounters,
}

/// A handle on the running engine.
#[derive(Debug, Clone)]
pub struct Engine {
    published: Arc<Published>,
}

/// One (tenant, check): its state machine and its open alert.
#[derive(Debug, Default)]
struct CheckAlert {
    tracker: Tracker,
    /// Boxed: every tenant has a slot for each check, few have an alert
    /// open, and the map holds its values inline (at 1,000 tenants an
    /// inline row made the table 6 MiB).
    alert: Option<Box<AlertRow>>,
}

impl CheckAlert {
    /// The slot of an alert read from the store (at start, or recorded by
    /// another leader).
    fn reopened(alert: AlertRow) -> CheckAlert {
        CheckAlert {
            tracker: Tracker::reopened(alert.severity, alert.state == AlertState::Flapping),
            alert: Some(Box::new(alert)),
        }
    }
}

/// The engine's task: owns every tenant's alert state and applies the
/// pure decisions (evaluation, alert state machine, plans) to it.
struct Runner {
    clock: EngineClock,
    store: Arc<dyn Store>,
    notify: Arc<NotifyService>,
    registry: Arc<Registry>,
    directory: Arc<TenantDirectory>,
    /// Only the leader records transitions and rollups; the others
    /// evaluate, ready to take over.
    leadership: Leadership,
    settings: EngineSettings,
    published: Arc<Published>,
    tenants: HashMap<String, CachedTenant>,
    thresholds: HashMap<Uuid, Thresholds>,
    check_alerts: HashMap<(Uuid, Check), CheckAlert>,
    silences: Vec<Silence>,
    minutes: HashMap<Uuid, Minute>,
    /// Minutes that ended at an evaluation, stored together at the next
    /// sweep: one transaction, not one per tenant (each a commit the
    /// engine waits for, a thousand of them at every minute's turn).
    ended_minutes: Vec<Rollup>,
    /// When each tenant was last evaluated (for new-result latencies and the sweep).
    evaluated_at: HashMap<String, DateTime<Utc>>,
    /// Tenants whose results the registry hands over first: not healthy,
    /// or with an alert open.
    attention: HashSet<String>,
    tenant_reload: TenantReload,
    rollup_writes: RollupWrites,
    silences_loaded_at: DateTime<Utc>,
    /// A take-over whose reading of the store failed: nothing is recorded
    /// until a sweep has read it.
    reload_pending: bool,
    /// Tenants' backups, when this installation backs them up.
    backups: Option<BackupWatch>,
}

/// Tenants with only healthy new results evaluated in one turn of the
/// engine: a probe round brings a thousand at once, and a failure arriving
/// meanwhile waits for the turn in progress (about 25 µs a tenant).
const ROUTINE_TURN: usize = 64;

/// How often every tenant is evaluated for its `backup` check, pods or
/// not (a tenant with pods is evaluated on each of their results anyway).
const BACKUP_SWEEP: Duration = Duration::from_secs(60);

impl Engine {
    /// Loads thresholds, open alerts and silences, and starts the engine's
    /// task; it stops when `stop` turns true, storing the minute in progress.
    /// With `backups`, every tenant also has a `backup` check.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: Arc<dyn Store>,
        notify: Arc<NotifyService>,
        registry: Arc<Registry>,
        directory: Arc<TenantDirectory>,
        leadership: Leadership,
        settings: EngineSettings,
        backups: Option<BackupWatch>,
        stop: watch::Receiver<bool>,
    ) -> Result<(Engine, tokio::task::JoinHandle<()>), StoreError> {
        let (tx, rx) = mpsc::channel(256);
        let published = Arc::new(Published {
            health: RwLock::new(HashMap::new()),
            commands: tx,
            counters: EngineCounters::default(),
        });
        let thresholds = store.all_thresholds().await?.into_iter().collect();
        let clock = EngineClock::start();
        let now = clock.now();
        let silences = store.active_silences(now).await?;
        let mut check_alerts = HashMap::new();
        for alert in store.open_alerts().await? {
            check_alerts.insert((alert.tenant_id, alert.check), CheckAlert::reopened(alert));
        }
        if !check_alerts.is_empty() {
            tracing::info!(
                open_alerts = check_alerts.len(),
                "alert state restored from the store"
            );
        }
        let (tenant_reload, reloads) = TenantReload::new(now);
        let (rollup_writes, written) = RollupWrites::new();
        let task = Runner {
            clock,
            store,
            notify,
            registry,
            directory,
            leadership,
            settings,
            published: published.clone(),
            tenants: HashMap::new(),
            thresholds,
            check_alerts,
            silences,
            minutes: HashMap::new(),
            ended_minutes: Vec::new(),
            evaluated_at: HashMap::new(),
            attention: HashSet::new(),
            tenant_reload,
            rollup_writes,
            silences_loaded_at: now,
            reload_pending: false,
            backups,
        };
        let handle = tokio::spawn(task.run(rx, reloads, written, stop));
        Ok((Engine { published }, handle))
    }

    /// The tenant's latest evaluation, if it has been evaluated.
    pub fn tenant(&self, slug: &str) -> Option<Arc<TenantHealth>> {
        self.published
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(slug)
            .cloned()
    }

    /// Every evaluated tenant, by slug.
    pub fn tenants(&self) -> Vec<Arc<TenantHealth>> {
        let mut all: Vec<_> = self
            .published
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
        &self.published.counters
    }
}

/// One turn of the engine's loop, logged when long: while it lasts, new
/// results wait for their evaluation.
struct Busy {
    what: &'static str,
    since: tokio::time::Instant,
}

impl Busy {
    /// A turn this long is worth a debug line; a second, a warning.
    const NOTABLE: Duration = Duration::from_millis(20);
    const STALL: Duration = Duration::from_secs(1);

    fn new(what: &'static str) -> Busy {
        Busy {
            what,
            since: tokio::time::Instant::now(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let took = self.since.elapsed();
        if took >= Self::STALL {
            tracing::warn!(
                turn = self.what,
                ms = took.as_millis() as u64,
                "health engine busy: new results waited"
            );
        } else if took >= Self::NOTABLE {
            tracing::debug!(
                turn = self.what,
                ms = took.as_millis() as u64,
                "health engine turn"
            );
        }
    }
}

impl Runner {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut reloads: mpsc::Receiver<tenant_cache::Reloaded>,
        mut written: mpsc::Receiver<rollups::RollupsWritten>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(self.settings.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let registry = self.registry.clone();
        let mut leader = self.leadership.subscribe();
        let mut leading = leader.borrow_and_update().is_some();
        let backup_status = self.backups.as_ref().map(|w| w.status.clone());
        let mut backup_sweep = tokio::time::interval(BACKUP_SWEEP);
        backup_sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                changed = leader.changed() => {
                    if changed.is_err() {
                        // The campaign ended (shutting down): nothing more
                        // is recorded.
                        leader = watch::channel(None).1;
                        continue;
                    }
                    let now_leading = leader.borrow_and_update().is_some();
                    if now_leading && !leading {
                        self.take_over().await;
                    }
                    leading = now_leading;
                }
                Some(command) = rx.recv() => {
                    let _busy = Busy::new("command");
                    self.command(command).await
                }
                _ = registry.changed.notified() => {
                    let _busy = Busy::new("new results");
                    let changed = registry.take_changed(ROUTINE_TURN);
                    for slug in changed.urgent.iter().chain(&changed.routine) {
                        self.evaluate(slug, false).await;
                    }
                    if changed.more {
                        // The rest at the next turn, after anything urgent.
                        registry.changed.notify_one();
                    }
                }
                Some(done) = written.recv() => {
                    let _busy = Busy::new("minutes written");
                    self.minutes_written(done);
                }
                Some(reloaded) = reloads.recv() => {
                    let _busy = Busy::new("tenant records");
                    self.reloaded(reloaded);
                }
                _ = sweep.tick() => {
                    let _busy = Busy::new("sweep");
                    self.sweep().await
                }
                _ = backup_sweep.tick(), if self.backups.is_some() => {
                    let _busy = Busy::new("backup sweep");
                    self.sweep_backups().await
                }
                _ = async {
                    match &backup_status {
                        Some(status) => status.wake.notified().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _busy = Busy::new("backup news");
                    let changed = backup_status.as_ref().map(|s| s.take_changed()).unwrap_or_default();
                    for slug in changed {
                        self.evaluate(&slug, false).await;
                    }
                }
            }
        }
        // A writing in flight ends first: what it could not store is
        // stored with the rest.
        if self.rollup_writes.in_flight()
            && let Some(written) = written.recv().await
        {
            self.minutes_written(written);
        }
        // The minute in progress is kept; the next start adds to it.
        self.flush_all_minutes().await;
    }

    /// Evaluates one tenant from its fresh results and applies what changed.
    async fn evaluate(&mut self, slug: &str, force: bool) {
        let now = self.clock.now();
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
        let mut evaluation = evaluate(Inputs {
            plan: tenant.plan,
            thresholds: &thresholds,
            pods: &fresh,
            seen_before: !latest.is_empty(),
        });
        // Judged apart from the pods: it does not change the status.
        if let Some(watch) = &self.backups {
            let backups = watch.status.tenant(tenant.id);
            // Read only for a tenant with versions waiting (it clones the
            // writer's error).
            let config_failing = backups
                .as_ref()
                .filter(|b| b.config_pending > 0)
                .and_then(|_| watch.status.config_failing());
            // Kept until the next evaluation: room for the one, not twice
            // as many as the pods' checks.
            evaluation.checks.reserve_exact(1);
            evaluation.checks.extend(backup_check(BackupFacts {
                backups: backups.as_deref(),
                kinds: &watch.kinds,
                thresholds: &thresholds,
                tenant_since: tenant.created_at,
                config_failing: config_failing.as_ref(),
                now,
            }));
        }
        count(&self.published.counters.evaluations);

        // New API latencies (ms) for the minute's percentiles. A slow
        // verdict sent before its answer is not one: the answer's time
        // follows in the pod's next result.
        let new_latencies: Vec<f64> = latest
            .iter()
            .filter(|(_, l)| since.is_none_or(|s| l.received_at > s))
            .filter_map(|(_, l)| l.result.api_health.as_ref())
            .filter(|o| !o.pending)
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
            self.ended_minutes.extend(done.rollup(tenant.id));
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
        // The backup check moves on every evaluation: its facts are not
        // the pods' results.
        let pods_moved = has_new || fresh.is_empty() || force;
        if has_new && let Some(newest) = results_up_to {
            self.published
                .counters
                .evaluation_delay
                .observe((now - newest).as_seconds_f64().max(0.0));
        }
        // Notifications remember the arrival of the results that caused them.
        let cause = if has_new { results_up_to } else { None };
        for check in &evaluation.checks {
            if pods_moved || check.check == Check::Backup {
                self.observe(&tenant, check, now, cause).await;
            }
        }
        self.attend(slug, tenant.id, &evaluation);
        self.publish(tenant, thresholds, evaluation, now, results_up_to);
    }

    /// Asks the registry to hand over the tenant's results first while a
    /// pod check is not OK or has an alert open (so that what resolves it
    /// is not held up either); the backup check does not move on results.
    fn attend(&mut self, slug: &str, tenant: Uuid, evaluation: &Evaluation) {
        let attention = evaluation
            .checks
            .iter()
            .filter(|c| c.check != Check::Backup)
            .any(|c| {
                matches!(c.state, CheckState::Warning | CheckState::Critical)
                    || self
                        .check_alerts
                        .get(&(tenant, c.check))
                        .is_some_and(|a| a.alert.is_some())
            });
        if attention == self.attention.contains(slug) {
            return;
        }
        if attention {
            self.attention.insert(slug.to_owned());
        } else {
            self.attention.remove(slug);
        }
        self.registry.set_attention(slug, attention);
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
        let tracked = self.check_alerts.entry(key).or_default();
        let before = tracked.tracker.clone();
        let transitions = tracked
            .tracker
            .observe(check.state, now, &self.settings.policy);
        let current = tracked.alert.clone();
        for transition in transitions {
            let Some(planned) = alerting::plan(tenant, check, current.as_deref(), transition, now)
            else {
                continue;
            };
            match self.record(tenant, planned, cause).await {
                Ok(alert) => {
                    if let Some(tracked) = self.check_alerts.get_mut(&key) {
                        tracked.alert =
                            (alert.state != AlertState::Resolved).then(|| Box::new(alert));
                    }
                }
                Err(err) => {
                    // Not recorded: the next evaluation tries again (as
                    // leader: a replica standing by leaves it to the
                    // leader and stays one result short of it).
                    if !matches!(
                        err,
                        EngineError::NotLeader
                            | EngineError::RecordAlert(StoreError::Fenced { .. })
                    ) {
                        count(&self.published.counters.store_errors);
                        tracing::error!(tenant = %tenant.slug, check = check.check.as_str(), error = %err, "failed to record an alert transition; will retry");
                    }
                    if let Some(tracked) = self.check_alerts.get_mut(&key) {
                        tracked.tracker = before;
                        if matches!(err, EngineError::RecordAlert(StoreError::Stale)) {
                            tracked.alert = None;
                            tracked.tracker.resolved_by_hand();
                        }
                    }
                    return;
                }
            }
        }
    }
}
