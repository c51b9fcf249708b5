//! A tenant's checks against its plan and thresholds, from its pods' latest
//! results. Pure: no clock, no store, no I/O; the caller picks the fresh
//! results and the thresholds.

use knowton_common::Plan;
pub use knowton_common::health::{Check, CheckState, HealthStatus};
use knowton_common::thresholds::{Level, Thresholds};
use knowton_common::units::format_bytes;
use knowton_proto::agent::v1::PodResult;
use serde::Serialize;
use utoipa::ToSchema;

/// One check's value against its thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub check: Check,
    pub state: CheckState,
    /// The measured value in `unit`; none when unknown.
    pub value: Option<f64>,
    /// `percent`, `ms` or `pods_percent`.
    pub unit: &'static str,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// One line for people: "storage at 96% of 1 TiB".
    pub summary: String,
}

/// A tenant's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    pub status: HealthStatus,
    pub pods: usize,
    /// Pods whose liveness probe succeeded.
    pub pods_up: usize,
    pub checks: Vec<CheckResult>,
    /// The pods' request rates added up, per minute, when reported.
    pub requests_per_minute: Option<f64>,
    /// The users gauge (the largest any pod reports).
    pub users: Option<f64>,
}

/// What a tenant is evaluated on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub plan: Plan,
    pub thresholds: &'a Thresholds,
    /// The latest fresh result of each of the tenant's pods.
    pub pods: &'a [&'a PodResult],
    /// Whether the tenant had results before (now too old to count): with
    /// no fresh result, a tenant that had pods is down, one that never had
    /// any is unknown.
    pub seen_before: bool,
}

/// Evaluates every check and the status they add up to.
pub fn evaluate(inputs: Inputs<'_>) -> Evaluation {
    let pods = inputs.pods;
    let limits = inputs.plan.limits();
    let t = inputs.thresholds;
    let pods_up = pods
        .iter()
        .filter(|p| p.liveness.as_ref().is_some_and(|o| o.ok))
        .count();
    let checks = vec![
        database(pods),
        if pods.is_empty() && inputs.seen_before {
            no_pod_answers()
        } else {
            api_health(pods)
        },
        storage(pods, limits.storage_bytes, t.storage_percent),
        users(pods, limits.max_users, t.users_percent),
        api_rate(pods, limits.api_requests_per_minute, t.api_rate_percent),
        error_rate(pods, t.error_rate_percent),
        response_time(pods, t.response_time_ms),
    ];
    let status = if pods.is_empty() {
        if inputs.seen_before {
            HealthStatus::Down
        } else {
            HealthStatus::Unknown
        }
    } else if pods_up == 0 {
        HealthStatus::Down
    } else {
        match checks.iter().map(|c| c.state).max() {
            Some(CheckState::Critical) => HealthStatus::Critical,
            Some(CheckState::Warning) => HealthStatus::Warning,
            _ => HealthStatus::Healthy,
        }
    };
    let rates: Vec<f64> = pods
        .iter()
        .filter_map(|p| p.metrics.and_then(|m| m.request_rate_per_second))
        .collect();
    Evaluation {
        status,
        pods: pods.len(),
        pods_up,
        checks,
        requests_per_minute: (!rates.is_empty()).then(|| rates.iter().sum::<f64>() * 60.0),
        users: pods
            .iter()
            .filter_map(|p| p.metrics.and_then(|m| m.users))
            .reduce(f64::max),
    }
}

/// The tenant had pods and none has reported lately: its API is down.
fn no_pod_answers() -> CheckResult {
    CheckResult {
        check: Check::ApiHealth,
        state: CheckState::Critical,
        value: Some(0.0),
        unit: "pods_percent",
        warning: None,
        critical: None,
        summary: "no backend pod has answered lately".to_owned(),
    }
}

pub(crate) fn against(value: f64, level: Level) -> CheckState {
    if value >= level.critical {
        CheckState::Critical
    } else if value >= level.warning {
        CheckState::Warning
    } else {
        CheckState::Ok
    }
}

fn unknown(check: Check, unit: &'static str, level: Option<Level>, why: &str) -> CheckResult {
    CheckResult {
        check,
        state: CheckState::Unknown,
        value: None,
        unit,
        warning: level.map(|l| l.warning),
        critical: level.map(|l| l.critical),
        summary: format!("{}: {why}", check.as_str().replace('_', " ")),
    }
}

fn measured(
    check: Check,
    value: f64,
    unit: &'static str,
    level: Level,
    summary: String,
) -> CheckResult {
    CheckResult {
        check,
        state: against(value, level),
        value: Some(value),
        unit,
        warning: Some(level.warning),
        critical: Some(level.critical),
        summary,
    }
}

/// Share of the pods that answered `/api/health` whose database is reachable.
fn database(pods: &[&PodResult]) -> CheckResult {
    let reports: Vec<bool> = pods
        .iter()
        .filter_map(|p| p.api_health.as_ref().filter(|o| o.ok)?.database_ok)
        .collect();
    if reports.is_empty() {
        return unknown(
            Check::Database,
            "pods_percent",
            None,
            "no pod reports its database",
        );
    }
    let up = reports.iter().filter(|ok| **ok).count();
    let percent = percent_of(up as f64, reports.len() as f64);
    let state = if up == reports.len() {
        CheckState::Ok
    } else {
        CheckState::Critical
    };
    CheckResult {
        check: Check::Database,
        state,
        value: Some(percent),
        unit: "pods_percent",
        warning: None,
        critical: None,
        summary: if state == CheckState::Ok {
            "database reachable".to_owned()
        } else {
            format!(
                "database unreachable from {} of {} pods",
                reports.len() - up,
                reports.len()
            )
        },
    }
}

/// Share of pods whose `/api/health` succeeds: some failing is a warning, all critical.
fn api_health(pods: &[&PodResult]) -> CheckResult {
    let probed: Vec<bool> = pods
        .iter()
        .filter_map(|p| p.api_health.as_ref().map(|o| o.ok))
        .collect();
    if probed.is_empty() {
        return unknown(Check::ApiHealth, "pods_percent", None, "not probed");
    }
    let ok = probed.iter().filter(|ok| **ok).count();
    let state = if ok == probed.len() {
        CheckState::Ok
    } else if ok == 0 {
        CheckState::Critical
    } else {
        CheckState::Warning
    };
    let failure = pods
        .iter()
        .filter_map(|p| p.api_health.as_ref().filter(|o| !o.ok))
        .map(|o| o.detail.as_str())
        .find(|d| !d.is_empty());
    CheckResult {
        check: Check::ApiHealth,
        state,
        value: Some(percent_of(ok as f64, probed.len() as f64)),
        unit: "pods_percent",
        warning: None,
        critical: None,
        summary: match (state, failure) {
            (CheckState::Ok, _) => "API healthy".to_owned(),
            (_, Some(detail)) => format!(
                "API failing on {} of {} pods ({detail})",
                probed.len() - ok,
                probed.len()
            ),
            _ => format!(
                "API failing on {} of {} pods",
                probed.len() - ok,
                probed.len()
            ),
        },
    }
}

/// Volume usage of the fullest pod against the plan's storage: replicas
/// usually share one volume, so adding them up would count it twice.
fn storage(pods: &[&PodResult], plan_bytes: u64, level: Level) -> CheckResult {
    let Some(used) = pods
        .iter()
        .filter_map(|p| p.storage.map(|s| s.used_bytes))
        .max()
    else {
        return unknown(
            Check::Storage,
            "percent",
            Some(level),
            "no volume usage reported",
        );
    };
    let percent = percent_of(used as f64, plan_bytes as f64);
    measured(
        Check::Storage,
        percent,
        "percent",
        level,
        format!(
            "storage at {} of {}",
            whole_percent(percent),
            format_bytes(plan_bytes)
        ),
    )
}

/// Users (the largest gauge any pod reports) against the plan's users.
fn users(pods: &[&PodResult], max_users: u64, level: Level) -> CheckResult {
    let Some(users) = pods
        .iter()
        .filter_map(|p| p.metrics.and_then(|m| m.users))
        .reduce(f64::max)
    else {
        return unknown(
            Check::Users,
            "percent",
            Some(level),
            "knowton_tenant_users not exposed",
        );
    };
    let percent = percent_of(users, max_users as f64);
    measured(
        Check::Users,
        percent,
        "percent",
        level,
        format!(
            "{users:.0} of {max_users} users ({})",
            whole_percent(percent)
        ),
    )
}

/// The pods' request rates added up, per minute, against the plan's limit.
fn api_rate(pods: &[&PodResult], per_minute: u32, level: Level) -> CheckResult {
    let rates: Vec<f64> = pods
        .iter()
        .filter_map(|p| p.metrics.and_then(|m| m.request_rate_per_second))
        .collect();
    if rates.is_empty() {
        return unknown(
            Check::ApiRate,
            "percent",
            Some(level),
            "no request rate yet",
        );
    }
    let rpm = rates.iter().sum::<f64>() * 60.0;
    let percent = percent_of(rpm, f64::from(per_minute));
    measured(
        Check::ApiRate,
        percent,
        "percent",
        level,
        format!(
            "API at {rpm:.0} of {per_minute} requests/min ({})",
            whole_percent(percent)
        ),
    )
}

/// 5xx responses over all responses, weighted by each pod's traffic.
fn error_rate(pods: &[&PodResult], level: Level) -> CheckResult {
    let (mut errors, mut total) = (0.0, 0.0);
    let mut any = false;
    for m in pods.iter().filter_map(|p| p.metrics) {
        if let (Some(rate), Some(ratio)) = (m.request_rate_per_second, m.error_ratio) {
            any = true;
            total += rate;
            errors += rate * ratio;
        }
    }
    if !any {
        return unknown(
            Check::ErrorRate,
            "percent",
            Some(level),
            "no request rate yet",
        );
    }
    let percent = if total > 0.0 {
        percent_of(errors, total)
    } else {
        0.0
    };
    measured(
        Check::ErrorRate,
        percent,
        "percent",
        level,
        format!("{percent:.1}% of responses are 5xx"),
    )
}

/// `/api/health` latency of the slowest pod that answered, or of one that
/// timed out or has not answered yet (a pending slow verdict): their
/// latency is how long it was waited for, a lower bound.
fn response_time(pods: &[&PodResult], level: Level) -> CheckResult {
    let Some(us) = pods
        .iter()
        .filter_map(|p| p.api_health.as_ref())
        .filter(|o| o.ok || o.failure() == knowton_proto::agent::v1::Failure::Timeout)
        .map(|o| o.connect_us.saturating_add(o.latency_us))
        .max()
    else {
        return unknown(Check::ResponseTime, "ms", Some(level), "no API response");
    };
    let ms = us as f64 / 1000.0;
    measured(
        Check::ResponseTime,
        ms,
        "ms",
        level,
        format!("API response time {ms:.0} ms"),
    )
}

fn percent_of(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part * 100.0 / whole
    } else {
        0.0
    }
}

fn whole_percent(percent: f64) -> String {
    format!("{percent:.0}%")
}

#[cfg(test)]
mod tests;
