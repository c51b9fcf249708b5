//! From one transition of the alert state machine to the store write that
//! records it: the alert row after it, its history entry, and whether and
//! how operators are told.

use chrono::{DateTime, Utc};
use knowton_common::health::{AUTOMATIC_ACTOR, TransitionKind};
use uuid::Uuid;

use crate::health::evaluate::CheckResult;
use crate::health::{Severity, Transition};
use crate::notify::render::{AlertEvent, AlertStatus};
use crate::store::{AlertEventRow, AlertRow, AlertState, Tenant};

/// What a transition does to the stored alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub alert: AlertRow,
    pub event: AlertEventRow,
    /// The notification to send, if any (before silences are applied).
    pub notify: Option<AlertStatus>,
}

/// The value and the crossed threshold of a check, as people read them.
pub fn describe(check: &CheckResult, severity: Severity) -> (String, String) {
    let fmt = |v: f64| match check.unit {
        "ms" => format!("{v:.0} ms"),
        "pods_percent" => format!("{v:.0}% of pods"),
        _ => format!("{v:.0}%"),
    };
    let value = check.value.map_or_else(|| "unknown".to_owned(), fmt);
    let level = match severity {
        Severity::Critical => check.critical,
        Severity::Warning => check.warning,
    };
    let threshold = match (level, check.unit) {
        (Some(level), _) => fmt(level),
        (None, "pods_percent") if severity == Severity::Critical => "any pod failing".to_owned(),
        (None, _) => "all pods healthy".to_owned(),
    };
    (value, threshold)
}

/// The stored alert and history entry after `transition` of `current`
/// (`None`: no alert open for the check). `None` when the transition
/// needs no write (a resolution of an alert that was never stored).
pub fn plan(
    tenant: &Tenant,
    check: &CheckResult,
    current: Option<&AlertRow>,
    transition: Transition,
    now: DateTime<Utc>,
) -> Option<Planned> {
    let fresh = |severity: Severity, state: AlertState| {
        let (value, threshold) = describe(check, severity);
        AlertRow {
            id: Uuid::now_v7(),
            tenant_id: tenant.id,
            tenant_slug: tenant.slug.clone(),
            check: check.check,
            severity,
            state,
            sequence: 0,
            summary: check.summary.clone(),
            value,
            threshold,
            opened_at: now,
            updated_at: now,
            resolved_at: None,
            resolved_by: None,
            resolve_note: None,
            acknowledged_at: None,
            acknowledged_by: None,
            notified: false,
            last_notified_at: None,
        }
    };
    let next = |a: &AlertRow| {
        let mut a = a.clone();
        a.sequence += 1;
        a.updated_at = now;
        a
    };
    // The measurement now, for the alert's summary and value.
    let measured = |a: &mut AlertRow, severity: Severity| {
        let (value, threshold) = describe(check, severity);
        if check.value.is_some() {
            a.value = value;
            a.summary = check.summary.clone();
        }
        a.threshold = threshold;
        a.severity = severity;
    };
    let (alert, kind, notify) = match (transition, current) {
        (Transition::Opened { severity }, _) => {
            let mut a = fresh(severity, AlertState::Firing);
            a.sequence = 1;
            (a, TransitionKind::Opened, Some(AlertStatus::Firing))
        }
        (Transition::Escalated { to, .. }, Some(cur)) => {
            let mut a = next(cur);
            measured(&mut a, to);
            (a, TransitionKind::Escalated, Some(AlertStatus::Firing))
        }
        (Transition::Deescalated { to, .. }, Some(cur)) => {
            let mut a = next(cur);
            measured(&mut a, to);
            (a, TransitionKind::Deescalated, None)
        }
        (Transition::Resolved, Some(cur)) => {
            let mut a = next(cur);
            a.state = AlertState::Resolved;
            a.resolved_at = Some(now);
            a.resolved_by = Some(AUTOMATIC_ACTOR.to_owned());
            // The measurement that resolved it, consistent in summary and value.
            if check.value.is_some() {
                a.value = describe(check, Severity::Warning).0;
                a.summary = check.summary.clone();
            }
            (a, TransitionKind::Resolved, Some(AlertStatus::Resolved))
        }
        (Transition::FlappingStarted { severity }, cur) => {
            let severity = severity
                .or_else(|| cur.map(|c| c.severity))
                .unwrap_or(Severity::Warning);
            let mut a = match cur {
                Some(cur) => next(cur),
                None => {
                    let mut a = fresh(severity, AlertState::Flapping);
                    a.sequence = 1;
                    a
                }
            };
            a.state = AlertState::Flapping;
            a.summary = format!("{} is flapping: {}", check.check.as_str(), check.summary);
            (
                a,
                TransitionKind::FlappingStarted,
                Some(AlertStatus::Firing),
            )
        }
        (Transition::FlappingEnded { severity: None }, Some(cur)) => {
            let mut a = next(cur);
            a.state = AlertState::Resolved;
            a.resolved_at = Some(now);
            a.resolved_by = Some(AUTOMATIC_ACTOR.to_owned());
            a.summary = format!(
                "{} is stable again: {}",
                check.check.as_str(),
                check.summary
            );
            (
                a,
                TransitionKind::FlappingEnded,
                Some(AlertStatus::Resolved),
            )
        }
        (Transition::FlappingEnded { severity: Some(s) }, Some(cur)) => {
            let mut a = next(cur);
            a.state = AlertState::Firing;
            measured(&mut a, s);
            (a, TransitionKind::FlappingEnded, Some(AlertStatus::Firing))
        }
        // A transition of an alert that is not stored: nothing to write.
        (_, None) => return None,
    };
    let event = AlertEventRow {
        sequence: alert.sequence,
        at: now,
        kind,
        severity: alert.severity,
        summary: alert.summary.clone(),
        actor: AUTOMATIC_ACTOR.to_owned(),
        note: None,
        notifications: 0,
    };
    Some(Planned {
        alert,
        event,
        notify,
    })
}

/// Who makes a transition of a stored alert, and why.
pub struct Step<'a> {
    pub kind: TransitionKind,
    pub summary: String,
    pub actor: &'a str,
    pub note: Option<String>,
    pub notify: Option<AlertStatus>,
}

/// The next transition of the stored alert `current` (a reminder, or an
/// operator's resolve or acknowledge): the next sequence, changed by `change`.
pub fn step(
    current: &AlertRow,
    now: DateTime<Utc>,
    step: Step<'_>,
    change: impl FnOnce(&mut AlertRow),
) -> Planned {
    let mut alert = current.clone();
    alert.sequence += 1;
    alert.updated_at = now;
    change(&mut alert);
    let event = AlertEventRow {
        sequence: alert.sequence,
        at: now,
        kind: step.kind,
        severity: alert.severity,
        summary: step.summary,
        actor: step.actor.to_owned(),
        note: step.note,
        notifications: 0,
    };
    Planned {
        alert,
        event,
        notify: step.notify,
    }
}

/// What the notification of `alert` says.
pub fn event_of(tenant: &Tenant, alert: &AlertRow, status: AlertStatus) -> AlertEvent {
    AlertEvent {
        alert_id: alert.id,
        sequence: alert.sequence,
        tenant_id: tenant.id,
        tenant_slug: tenant.slug.clone(),
        tenant_name: tenant.name.clone(),
        plan: tenant.plan,
        check: alert.check,
        severity: alert.severity,
        status,
        summary: alert.summary.clone(),
        value: alert.value.clone(),
        threshold: alert.threshold.clone(),
        starts_at: alert.opened_at,
        ends_at: alert.resolved_at,
    }
}
