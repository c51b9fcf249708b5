//! Scheduled backups, run by the leader alone: a tenant's backup of a kind
//! is due when its last successful one started before the schedule's
//! latest occurrence (so a leader that takes over after a missed 02:00,
//! or a tenant provisioned at noon, is backed up at once, and a backup
//! taken on demand since counts). A failed run is tried again after 1,
//! then 4, then 16 minutes; after the last try it waits for the next
//! occurrence. After a round, the tenants backed up are pruned to the
//! retention policy. A deep verification of each tenant's latest backups
//! is due, on its own schedule, when the tenant's latest verification was
//! not deep or predates the schedule's latest occurrence.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use knowton_common::TenantStatus;
use uuid::Uuid;

use super::retention::RetentionPolicy;
use super::service::BackupService;
use super::{BackupKind, TenantRef};
use crate::leader::Leadership;
use crate::store::{RunStatus, RunTrigger};

/// Tries of a due backup before it waits for the next occurrence.
pub const TRIES: u32 = 4;
/// The first retry's delay; each next one is four times longer.
const FIRST_RETRY: Duration = Duration::from_secs(60);
/// How long after a prune marks a chunk it may be deleted: longer than
/// any backup runs.
pub const PRUNE_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The longest the loop sleeps, so that a new leader starts soon.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Tenants listed per page.
const PAGE: u32 = 200;

/// A cron schedule (five fields, or six with seconds first), in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    text: String,
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // croner takes an optional seconds field first by default.
        let cron = croner::Cron::from_str(text.trim())
            .map_err(|e| format!("{text:?} is not a cron schedule: {e}"))?;
        Ok(Schedule {
            cron,
            text: text.trim().to_owned(),
        })
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Schedule {
    /// The latest occurrence at or before `now`.
    pub fn previous(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&now, true).ok()
    }

    /// The first occurrence after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&now, false).ok()
    }
}

/// Whether a backup whose last success started at `last` is due under
/// `schedule` at `now`.
pub fn is_due(schedule: &Schedule, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match (schedule.previous(now), last) {
        (Some(occurrence), Some(last)) => last < occurrence,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The schedules of each kind backed up in this installation.
#[derive(Debug, Clone)]
pub struct Schedules {
    pub kinds: Vec<(BackupKind, Schedule)>,
    pub retention: RetentionPolicy,
    /// Deep verifications, if on.
    pub verify: Option<Schedule>,
}

/// Whether a deep verification is due under `schedule` at `now`, after
/// the tenant's latest verification (deep or not, and when it started).
pub fn verify_due(
    schedule: &Schedule,
    latest: Option<(bool, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> bool {
    match latest {
        Some((true, started)) => is_due(schedule, Some(started), now),
        _ => schedule.previous(now).is_some(),
    }
}

/// Failed tries of a due backup, and when the next may start.
#[derive(Debug, Clone, Copy)]
struct Failing {
    tries: u32,
    next_try: DateTime<Utc>,
    /// The occurrence they were for: a later one starts afresh.
    occurrence: DateTime<Utc>,
}

/// Runs the schedules while this replica leads, until `stop`.
pub async fn run(
    service: BackupService,
    schedules: Schedules,
    leadership: Leadership,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failing: HashMap<(Uuid, BackupKind), Failing> = HashMap::new();
    loop {
        let now = Utc::now();
        let wake = schedules
            .kinds
            .iter()
            .filter_map(|(_, s)| s.next(now))
            .min()
            .and_then(|next| (next - now).to_std().ok())
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !leadership.is_leader() {
            failing.clear();
            continue;
        }
        if let Err(err) = round(&service, &schedules, &mut failing).await {
            tracing::error!(error = %err, "scheduled backups: failed to list what is due");
        }
    }
}

/// Backs up every tenant whose backup of a kind is due, then prunes them.
async fn round(
    service: &BackupService,
    schedules: &Schedules,
    failing: &mut HashMap<(Uuid, BackupKind), Failing>,
) -> Result<(), crate::store::StoreError> {
    let store = service.store();
    let last: HashMap<(Uuid, BackupKind), DateTime<Utc>> = store
        .last_backup_successes()
        .await?
        .into_iter()
        .map(|last| ((last.tenant_id, last.kind), last.started_at))
        .collect();
    let mut after = None;
    loop {
        let tenants = store
            .list_tenants(PAGE, after, Some(TenantStatus::Active))
            .await?;
        let Some(last_of_page) = tenants.last() else {
            break;
        };
        after = Some(last_of_page.id);
        for tenant in &tenants {
            let target = TenantRef {
                id: tenant.id,
                slug: tenant.slug.clone(),
            };
            let mut backed_up = false;
            for (kind, schedule) in &schedules.kinds {
                let now = Utc::now();
                let key = (tenant.id, *kind);
                let Some(occurrence) = schedule.previous(now) else {
                    continue;
                };
                if !is_due(schedule, last.get(&key).copied(), now) {
                    failing.remove(&key);
                    continue;
                }
                if let Some(f) = failing.get(&key)
                    && f.occurrence == occurrence
                    && (f.tries >= TRIES || now < f.next_try)
                {
                    continue;
                }
                match service
                    .run(&target, *kind, RunTrigger::Schedule, "schedule")
                    .await
                {
                    Ok(run) if run.status == RunStatus::Succeeded => {
                        failing.remove(&key);
                        backed_up = true;
                    }
                    Ok(run) => {
                        let f = failing.entry(key).or_insert(Failing {
                            tries: 0,
                            next_try: now,
                            occurrence,
                        });
                        if f.occurrence != occurrence {
                            f.tries = 0;
                            f.occurrence = occurrence;
                        }
                        f.tries += 1;
                        let delay = FIRST_RETRY * 4u32.pow(f.tries - 1);
                        f.next_try = Utc::now()
                            + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                        if f.tries >= TRIES {
                            tracing::error!(
                                tenant = %tenant.slug, %kind, tries = f.tries,
                                error = run.error.as_deref().unwrap_or(""),
                                "scheduled backup failed after its last try; next at the schedule's next occurrence"
                            );
                        }
                    }
                    // Running already (on demand, or elsewhere): not ours.
                    Err(_) => {}
                }
            }
            if backed_up {
                match service
                    .backups()
                    .prune(
                        tenant.id,
                        schedules.retention.for_plan(tenant.plan),
                        PRUNE_GRACE,
                    )
                    .await
                {
                    Ok(report) if report.deleted_backups + report.deleted_chunks > 0 => {
                        tracing::info!(tenant = %tenant.slug, ?report, "pruned backups");
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::error!(tenant = %tenant.slug, error = %knowton_common::error_chain(&err), "failed to prune backups");
                    }
                }
            }
            if let Some(verify) = &schedules.verify {
                let latest = service
                    .status()
                    .tenant(tenant.id)
                    .and_then(|b| b.verification.as_ref().map(|v| (v.deep, v.started_at)));
                if verify_due(verify, latest, Utc::now()) {
                    match service
                        .verify(&target, None, true, RunTrigger::Schedule, "schedule")
                        .await
                    {
                        Ok(verified) => {
                            tracing::info!(tenant = %tenant.slug, backups = verified.backups.len(), passed = verified.ok(), "verified backups")
                        }
                        Err(err) => {
                            tracing::error!(tenant = %tenant.slug, error = %knowton_common::error_chain(&err), "failed to verify backups")
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, h, m, 0).unwrap()
    }

    #[test]
    fn schedules_parse_and_bad_ones_are_named() {
        assert!("0 2 * * *".parse::<Schedule>().is_ok());
        assert!("*/5 * * * * *".parse::<Schedule>().is_ok(), "seconds first");
        let err = "at two".parse::<Schedule>().unwrap_err();
        assert!(err.contains("\"at two\" is not a cron schedule"), "{err}");
        assert!("61 * * * *".parse::<Schedule>().is_err());
    }

    #[test]
    fn a_backup_is_due_when_the_last_success_predates_the_latest_occurrence() {
        let daily: Schedule = "0 2 * * *".parse().unwrap();
        assert!(is_due(&daily, None, at(1, 0)), "never backed up");
        assert!(!is_due(&daily, Some(at(2, 0)), at(3, 0)));
        assert!(is_due(&daily, Some(at(1, 59)), at(3, 0)), "missed 02:00");
        assert!(
            !is_due(&daily, Some(at(1, 0)), at(1, 30)),
            "yesterday's 02:00 is before 01:00 today"
        );
        let six_hourly: Schedule = "0 */6 * * *".parse().unwrap();
        assert!(is_due(&six_hourly, Some(at(5, 0)), at(6, 1)));
        assert!(!is_due(&six_hourly, Some(at(6, 0)), at(11, 59)));
    }

    #[test]
    fn a_deep_verification_is_due_weekly_after_the_last_deep_one() {
        // 2026-12-06 is a Sunday.
        let weekly: Schedule = "0 4 * * 0".parse().unwrap();
        assert!(verify_due(&weekly, None, at(5, 0)), "never verified");
        assert!(!verify_due(&weekly, Some((true, at(4, 1))), at(5, 0)));
        assert!(
            verify_due(&weekly, Some((false, at(4, 30))), at(5, 0)),
            "a shallow one does not count"
        );
        assert!(
            verify_due(&weekly, Some((true, at(3, 0))), at(5, 0)),
            "missed 04:00"
        );
    }
}
