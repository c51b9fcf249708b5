//! The `backup` check: a tenant's backups judged from what the coordinator
//! recorded of them. Late or missing backups (against the tenant's
//! backup-age thresholds, counted from the tenant's creation when it has
//! none yet) warn and then turn critical; a kind whose every try of a
//! round failed, or a verification that found problems, is critical at
//! once. Pure: the caller passes the clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use knowton_common::health::{Check, CheckState};
use knowton_common::thresholds::{Level, Thresholds};

use super::evaluate::{CheckResult, against};
use crate::backup::BackupKind;
use crate::backup::schedule::TRIES;
use crate::backup::status::{BackupStatus, QueueFailure, TenantBackups};

/// The longest part of a run's error or a verification problem that a
/// summary quotes.
const QUOTED: usize = 300;
/// How long writing configuration versions may fail before a tenant whose
/// versions wait is critical (the writer retries within 30 s).
const CONFIG_STUCK: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// What the engine needs to judge backups: the status it reads and the
/// kinds this installation backs up.
#[derive(Debug, Clone)]
pub struct BackupWatch {
    pub status: Arc<BackupStatus>,
    pub kinds: Vec<BackupKind>,
}

/// What one tenant's `backup` check is judged on.
#[derive(Debug, Clone, Copy)]
pub struct BackupFacts<'a> {
    pub backups: Option<&'a TenantBackups>,
    /// The kinds backed up here (none: no check).
    pub kinds: &'a [BackupKind],
    pub thresholds: &'a Thresholds,
    /// When the tenant was created: its backup age before its first one.
    pub tenant_since: DateTime<Utc>,
    /// Whether writing configuration versions to the repository fails.
    pub config_failing: Option<&'a QueueFailure>,
    pub now: DateTime<Utc>,
}

/// The age thresholds of `kind`, in hours (none: written on change, not
/// on a schedule).
fn age_level(thresholds: &Thresholds, kind: BackupKind) -> Option<Level> {
    match kind {
        BackupKind::Database => Some(thresholds.database_backup_age_hours),
        BackupKind::Storage => Some(thresholds.storage_backup_age_hours),
        BackupKind::Configuration => None,
    }
}

/// The `backup` check, or none when nothing is backed up here.
pub fn backup_check(facts: BackupFacts<'_>) -> Option<CheckResult> {
    let first = facts
        .kinds
        .iter()
        .find_map(|&k| age_level(facts.thresholds, k))?;
    let mut findings: Vec<(CheckState, String)> = Vec::new();
    // The kind nearest its critical age gives the value shown.
    let mut shown: Option<(f64, f64, Level)> = None;
    for &kind in facts.kinds {
        let Some(level) = age_level(facts.thresholds, kind) else {
            continue;
        };
        let last = facts.backups.and_then(|b| b.last_success(kind));
        let hours = hours_between(last.unwrap_or(facts.tenant_since), facts.now);
        let ratio = hours / level.critical;
        if shown.is_none_or(|(r, _, _)| ratio > r) {
            shown = Some((ratio, hours, level));
        }
        let state = against(hours, level);
        if state > CheckState::Ok {
            findings.push((
                state,
                match last {
                    Some(_) => format!(
                        "last good {kind} backup {} ago ({} at {})",
                        format_hours(hours),
                        if state == CheckState::Critical {
                            "critical"
                        } else {
                            "warning"
                        },
                        format_hours(match state {
                            CheckState::Critical => level.critical,
                            _ => level.warning,
                        }),
                    ),
                    None => format!(
                        "no {kind} backup in the {} since the tenant was created",
                        format_hours(hours)
                    ),
                },
            ));
        }
        if let Some(streak) = facts.backups.and_then(|b| b.failing(kind))
            && streak.failures >= i64::from(TRIES)
        {
            findings.push((
                CheckState::Critical,
                format!(
                    "{kind} backup failed {} times in a row: {}",
                    streak.failures,
                    quote(streak.last_error.as_deref().unwrap_or("no error recorded"))
                ),
            ));
        }
    }
    if let (Some(b), Some(failing)) = (facts.backups, facts.config_failing)
        && b.config_pending > 0
        && facts.now - failing.since >= CONFIG_STUCK
    {
        findings.push((
            CheckState::Critical,
            format!(
                "{} configuration version{} not backed up: writing them has failed for {}: {}",
                b.config_pending,
                if b.config_pending == 1 { "" } else { "s" },
                format_hours(hours_between(failing.since, facts.now)),
                quote(&failing.error)
            ),
        ));
    }
    if let Some(v) = facts.backups.and_then(|b| b.verification.as_ref())
        && !v.passed()
    {
        findings.push((
            CheckState::Critical,
            format!(
                "{}verification found {} problem{}: {}",
                if v.deep { "deep " } else { "" },
                v.problems_total,
                if v.problems_total == 1 { "" } else { "s" },
                quote(v.problems.first().map(String::as_str).unwrap_or("")),
            ),
        ));
    }
    let state = findings
        .iter()
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(CheckState::Ok);
    let summary = if findings.is_empty() {
        "backups are up to date".to_owned()
    } else {
        findings
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (_, hours, level) = shown.unwrap_or((0.0, 0.0, first));
    Some(CheckResult {
        check: Check::Backup,
        state,
        value: Some((hours * 10.0).round() / 10.0),
        unit: "hours",
        warning: Some(level.warning),
        critical: Some(level.critical),
        summary,
    })
}

fn hours_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_seconds().max(0) as f64) / 3600.0
}

/// "27 h", or "3.5 d" from two days on.
fn format_hours(hours: f64) -> String {
    if hours >= 48.0 {
        format!("{:.1} d", hours / 24.0)
    } else {
        format!("{hours:.0} h")
    }
}

/// `text` cut to [`QUOTED`] bytes at a character boundary.
fn quote(text: &str) -> String {
    if text.len() <= QUOTED {
        return text.to_owned();
    }
    let mut end = QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests;
