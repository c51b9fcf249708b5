//! Health over time and operations on all tenants: history, dashboard,
//! check-all, the daily report and cleanup.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use knowton_common::thresholds::Thresholds;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::alerts::{Scope, scope};
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::monitoring::TenantHealthView;
use super::{ApiQuery, AppState};
use crate::health::engine::OpenAlert;
use crate::health::rollup::{downsample, percentile};
use crate::health::{CheckResult, HealthStatus as Status};
use crate::store::{AlertFilter, CleanupCounts, HealthSummary, Rollup};

/// Most points a history returns; longer ranges are downsampled.
const MAX_POINTS: i64 = 1440;

fn internal(err: impl std::error::Error + 'static) -> ApiError {
    ApiError::internal(&err)
}

/// `2026-11-29` (midnight UTC; as an end, the end of that day),
/// `2026-11-29T12:00:00Z` (RFC 3339) or seconds since the epoch.
/// Between 1970 and the year 9999: anything else is a mistake, and
/// arithmetic on it (a day later, 24 hours earlier) stays in range.
fn parse_instant(field: &str, text: &str, end: bool) -> Result<DateTime<Utc>, ApiError> {
    let at = parse_any_instant(field, text, end)?;
    let earliest = DateTime::UNIX_EPOCH;
    let latest = NaiveDate::from_ymd_opt(10_000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .expect("a valid date");
    if at < earliest || at > latest {
        return Err(ApiError::invalid(
            field,
            format!("{at} is out of range: dates run from 1970-01-01 to 9999-12-31"),
        ));
    }
    Ok(at)
}

fn parse_any_instant(field: &str, text: &str, end: bool) -> Result<DateTime<Utc>, ApiError> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let day = if end {
            day.succ_opt().unwrap_or(day)
        } else {
            day
        };
        if let Some(t) = day.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(secs) = text.parse::<i64>()
        && let Some(t) = DateTime::from_timestamp(secs, 0)
    {
        return Ok(t);
    }
    Err(ApiError::invalid(
        field,
        format!(
            "{text:?} is not a date (2026-11-29), an RFC 3339 timestamp (2026-11-29T12:00:00Z) or seconds since the epoch"
        ),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Start (inclusive): a date, an RFC 3339 timestamp or epoch seconds.
    /// Default: 24 hours before the end.
    pub start_date: Option<String>,
    /// End (exclusive; a date means the end of that day). Default: now.
    pub end_date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthHistoryView {
    pub tenant: String,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    /// Seconds each point covers (60, or more when downsampled).
    pub resolution_seconds: i64,
    pub points: Vec<Rollup>,
}

/// The range asked for, checked.
fn range(params: &HistoryParams) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let end = match &params.end_date {
        Some(t) => parse_instant("endDate", t, true)?,
        None => Utc::now(),
    };
    let start = match &params.start_date {
        Some(t) => parse_instant("startDate", t, false)?,
        None => end
            .checked_sub_signed(TimeDelta::hours(24))
            .map_or(DateTime::UNIX_EPOCH, |t| t.max(DateTime::UNIX_EPOCH)),
    };
    if start >= end {
        return Err(ApiError::invalid(
            "startDate",
            format!("must be before endDate ({start} is not before {end})"),
        ));
    }
    Ok((start, end))
}

/// A bucket of whole minutes so that the range has at most [`MAX_POINTS`].
fn bucket_for(start: DateTime<Utc>, end: DateTime<Utc>) -> TimeDelta {
    let minutes = (end - start).num_minutes().max(1);
    let per = (minutes + MAX_POINTS - 1) / MAX_POINTS;
    let nice = [1, 5, 15, 30, 60, 180, 360, 720, 1440, 10_080]
        .into_iter()
        .find(|n| *n >= per)
        .unwrap_or(per);
    TimeDelta::minutes(nice)
}

/// What holds for any query strings: a range in bounds with start before
/// end and at most [`MAX_POINTS`] buckets, or an error naming one of the two
/// parameters. For the property test and the fuzz target.
pub(crate) fn check_range(params: &HistoryParams) -> Result<(), String> {
    match range(params) {
        Ok((start, end)) => {
            let bucket = bucket_for(start, end);
            if start >= end || start < DateTime::UNIX_EPOCH {
                return Err(format!("bad range {start} .. {end}"));
            }
            if (end - start).num_minutes() / bucket.num_minutes() > MAX_POINTS {
                return Err(format!("too many points for {start} .. {end}"));
            }
            Ok(())
        }
        Err(err) => match err.detail.field.as_deref() {
            Some("startDate" | "endDate") => Ok(()),
            other => Err(format!("error names {other:?}")),
        },
    }
}

/// The tenant's rollups in range, with the minute in progress.
async fn rollups_in(
    state: &AppState,
    slug: &str,
    tenant: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<Rollup>, ApiError> {
    let mut points = state
        .service
        .store()
        .rollups(tenant, start, end)
        .await
        .map_err(internal)?;
    if let Some(current) = state
        .engine
        .as_ref()
        .and_then(|e| e.tenant(slug))
        .and_then(|h| h.current_minute.clone())
        && current.minute >= start
        && current.minute < end
        && points.last().is_none_or(|p| p.minute < current.minute)
    {
        points.push(current);
    }
    Ok(points)
}

/// The tenant's health per minute (status, availability, latency
/// percentiles, error and request rates, storage, users). Ranges longer
/// than 1,440 minutes are downsampled to at most 1,440 points.
#[utoipa::path(get, path = "/api/v1/monitoring/health/history", tag = "monitoring",
    params(HistoryParams, ("X-Tenant-Slug" = String, Header, description = "The tenant's slug")),
    responses((status = 200, body = HealthHistoryView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<HealthHistoryView>, ApiError> {
    let Scope { id: tenant, slug } = required_scope(&state, &caller, &headers).await?;
    let (start, end) = range(&params)?;
    let bucket = bucket_for(start, end);
    let points = rollups_in(&state, &slug, tenant, start, end).await?;
    Ok(Json(HealthHistoryView {
        tenant: slug,
        start_date: start,
        end_date: end,
        resolution_seconds: bucket.num_seconds(),
        points: downsample(&points, bucket),
    }))
}

async fn required_scope(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Scope, ApiError> {
    scope(state, caller, headers).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_tenant_slug",
            "X-Tenant-Slug: this route needs the tenant's slug",
        )
        .field("X-Tenant-Slug")
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageLine {
    pub used: f64,
    pub limit: f64,
    pub percent: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardUsage {
    pub users: UsageLine,
    pub storage_bytes: UsageLine,
    /// Requests per minute now against the plan's rate limit.
    pub api_requests_per_minute: Option<UsageLine>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Last24Hours {
    /// Share of evaluated minutes' evaluations with a backend answering (0 to 1); none without data.
    pub availability: Option<f64>,
    pub minutes_with_data: i64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub alerts_opened: usize,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardView {
    pub tenant: String,
    pub name: String,
    pub plan: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
    pub checks: Vec<CheckResult>,
    pub thresholds: Thresholds,
    pub usage: DashboardUsage,
    pub last_24_hours: Last24Hours,
    pub open_alerts: Vec<OpenAlert>,
    /// The tenant's deployment: phase, and the backend's minimum replicas
    /// as scaling left it.
    pub deployment: DashboardDeployment,
    /// What the deployer did lately (phases, drift repairs, scaling),
    /// newest first.
    pub recent_deployments: Vec<crate::store::DeploymentEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardDeployment {
    pub phase: crate::store::Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The backend autoscaler's minimum now (the plan's unless scaled).
    pub min_replicas: i32,
    pub scaled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled_at: Option<DateTime<Utc>>,
}

fn line(used: f64, limit: f64) -> UsageLine {
    UsageLine {
        used,
        limit,
        percent: if limit > 0.0 {
            used * 100.0 / limit
        } else {
            0.0
        },
    }
}

/// Everything about one tenant's health on one page: status, each check
/// against its threshold, usage against the plan, the last 24 hours
/// (availability, latency percentiles, alerts) and open alerts.
#[utoipa::path(get, path = "/api/v1/monitoring/dashboard", tag = "monitoring",
    params(("X-Tenant-Slug" = String, Header, description = "The tenant's slug")),
    responses((status = 200, body = DashboardView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn dashboard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<DashboardView>, ApiError> {
    let Scope { id, slug } = required_scope(&state, &caller, &headers).await?;
    let tenant = state.service.get(id).await?;
    let health = TenantHealthView::of(&state, slug.clone());
    let limits = tenant.plan.limits();
    let evaluation = state.engine.as_ref().and_then(|e| e.tenant(&slug));
    let now = Utc::now();
    let day = rollups_in(&state, &slug, id, now - TimeDelta::hours(24), now).await?;
    let samples: i64 = day.iter().map(|r| r.samples).sum();
    let availability = (samples > 0).then(|| {
        day.iter()
            .map(|r| r.availability * r.samples as f64)
            .sum::<f64>()
            / samples as f64
    });
    let sorted = |pick: fn(&Rollup) -> Option<f64>| {
        let mut v: Vec<f64> = day.iter().filter_map(pick).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let p50s = sorted(|r| r.latency_p50_ms);
    let p95s = sorted(|r| r.latency_p95_ms);
    let alerts_opened = state
        .service
        .store()
        .list_alerts(&AlertFilter {
            tenant: Some(id),
            resolved: None,
            limit: 1000,
            before: None,
        })
        .await
        .map_err(internal)?
        .iter()
        .filter(|a| a.opened_at >= now - TimeDelta::hours(24))
        .count();
    let storage_used = evaluation
        .as_ref()
        .and_then(|h| h.current_minute.as_ref().and_then(|m| m.storage_bytes))
        .map_or(tenant.usage.storage_bytes as f64, |b| b as f64);
    let deployment = state
        .service
        .store()
        .deployment(id)
        .await
        .map_err(internal)?;
    let recent_deployments = state
        .service
        .store()
        .deployment_events(id, 10)
        .await
        .map_err(internal)?;
    let tenant_record = tenant.clone();
    let users_used = evaluation
        .as_ref()
        .and_then(|h| h.evaluation.users)
        .unwrap_or(tenant.usage.users as f64);
    Ok(Json(DashboardView {
        tenant: slug,
        name: tenant.name,
        plan: tenant.plan.as_str().to_owned(),
        status: health.status,
        evaluated_at: health.evaluated_at,
        checks: health.checks,
        thresholds: evaluation
            .as_ref()
            .map(|h| h.thresholds)
            .unwrap_or_default(),
        usage: DashboardUsage {
            users: line(users_used, limits.max_users as f64),
            storage_bytes: line(storage_used, limits.storage_bytes as f64),
            api_requests_per_minute: evaluation
                .as_ref()
                .and_then(|h| h.evaluation.requests_per_minute)
                .map(|rpm| line(rpm, f64::from(limits.api_requests_per_minute))),
        },
        last_24_hours: Last24Hours {
            availability,
            minutes_with_data: day.len() as i64,
            latency_p50_ms: percentile(&p50s, 0.5),
            latency_p95_ms: percentile(&p95s, 0.95),
            latency_max_ms: day.iter().filter_map(|r| r.latency_max_ms).reduce(f64::max),
            alerts_opened,
        },
        open_alerts: health.open_alerts,
        deployment: DashboardDeployment {
            phase: deployment
                .as_ref()
                .map_or(crate::store::Phase::Pending, |d| d.phase),
            reason: deployment.as_ref().and_then(|d| d.reason.clone()),
            min_replicas: crate::deploy::render::replicas_of(
                &crate::deploy::controller::spec_of(&tenant_record, deployment.as_ref()),
                &state.deployer.settings().cluster,
            )
            .min,
            scaled: deployment
                .as_ref()
                .is_some_and(|d| d.min_replicas.is_some()),
            scaled_at: deployment.as_ref().and_then(|d| d.scaled_at),
        },
        recent_deployments,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckAllParams {
    /// Seconds to wait for every connected agent's fresh results, 1 to 120 (default 15).
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatusLine {
    pub tenant: String,
    pub plan: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
    pub pods: usize,
    pub pods_up: usize,
    /// The checks not ok, one line each.
    pub problems: Vec<String>,
    pub open_alerts: usize,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckAllView {
    /// Agents connected when the check started.
    pub agents: usize,
    /// Agents that sent fresh results within the timeout.
    pub agents_answered: usize,
    pub timed_out: bool,
    pub tenants: Vec<TenantStatusLine>,
}

/// Every active tenant's status line (for check-all and the CLI).
pub(super) async fn status_lines(state: &AppState) -> Vec<TenantStatusLine> {
    let mut slugs: Vec<String> = state
        .service
        .directory()
        .with(|active| active.iter().cloned().collect());
    slugs.sort();
    slugs
        .into_iter()
        .map(
            |slug| match state.engine.as_ref().and_then(|e| e.tenant(&slug)) {
                Some(h) => TenantStatusLine {
                    tenant: slug,
                    plan: h.tenant.plan.as_str().to_owned(),
                    status: h.evaluation.status,
                    evaluated_at: Some(h.evaluated_at),
                    pods: h.evaluation.pods,
                    pods_up: h.evaluation.pods_up,
                    problems: h
                        .evaluation
                        .checks
                        .iter()
                        .filter(|c| {
                            matches!(
                                c.state,
                                crate::health::CheckState::Warning
                                    | crate::health::CheckState::Critical
                            )
                        })
                        .map(|c| c.summary.clone())
                        .collect(),
                    open_alerts: h.open_alerts.len(),
                },
                None => TenantStatusLine {
                    tenant: slug,
                    plan: String::new(),
                    status: Status::Unknown,
                    evaluated_at: None,
                    pods: 0,
                    pods_up: 0,
                    problems: Vec::new(),
                    open_alerts: 0,
                },
            },
        )
        .collect()
}

/// Ask every connected agent to probe all its pods now, wait for their
/// results (up to the timeout), and return every tenant's fresh status.
/// Admin only.
#[utoipa::path(post, path = "/api/v1/monitoring/check-all", tag = "monitoring",
    params(CheckAllParams),
    responses((status = 200, body = CheckAllView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn check_all(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<CheckAllParams>,
) -> Result<Json<CheckAllView>, ApiError> {
    caller.require_admin()?;
    let timeout = params.timeout_seconds.unwrap_or(15);
    if !(1..=120).contains(&timeout) {
        return Err(ApiError::invalid(
            "timeoutSeconds",
            "must be between 1 and 120",
        ));
    }
    let engine = state.engine()?.clone();
    let before = state.ingest.request_probe_now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let answered = |now: &[crate::ingest::AgentState]| {
        before
            .iter()
            .filter(|(node, batches)| {
                now.iter()
                    .any(|a| &a.node == node && a.batches_received > *batches)
            })
            .count()
    };
    state
        .ingest
        .wait_for_agents(deadline, |agents| answered(agents) == before.len())
        .await;
    let done = answered(&state.ingest.agents());
    engine.evaluate_all().await?;
    Ok(Json(CheckAllView {
        agents: before.len(),
        agents_answered: done,
        timed_out: done < before.len(),
        tenants: status_lines(&state).await,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Hours covered, 1 to 744 (default 24).
    pub hours: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportLine {
    pub tenant: String,
    pub plan: String,
    pub status: Status,
    /// 0 to 1; none when no minute was recorded.
    pub availability: Option<f64>,
    pub minutes_with_data: i64,
    /// Minutes whose worst status was critical or down.
    pub bad_minutes: i64,
    pub latency_p95_ms: Option<f64>,
    pub error_rate_percent: Option<f64>,
    pub alerts_opened: usize,
    pub alerts_open: usize,
    pub users: Option<f64>,
    pub storage_bytes: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportView {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tenants: Vec<ReportLine>,
}

/// A summary of every active tenant over the last hours (default 24):
/// availability, alerts, usage. Admin only.
#[utoipa::path(get, path = "/api/v1/monitoring/report", tag = "monitoring",
    params(ReportParams),
    responses((status = 200, body = ReportView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<ReportParams>,
) -> Result<Json<ReportView>, ApiError> {
    caller.require_admin()?;
    let hours = params.hours.unwrap_or(24);
    if !(1..=744).contains(&hours) {
        return Err(ApiError::invalid("hours", "must be between 1 and 744"));
    }
    Ok(Json(build_report(&state, hours).await?))
}

pub(super) async fn build_report(state: &AppState, hours: i64) -> Result<ReportView, ApiError> {
    let to = Utc::now();
    let from = to - TimeDelta::hours(hours);
    let store = state.service.store();
    let summaries: Vec<HealthSummary> = store.health_summaries(from, to).await.map_err(internal)?;
    let alerts = store
        .list_alerts(&AlertFilter {
            tenant: None,
            resolved: None,
            limit: 10_000,
            before: None,
        })
        .await
        .map_err(internal)?;
    let mut tenants = Vec::new();
    for line in status_lines(state).await {
        let Ok(id) = state.service.resolve(&line.tenant).await else {
            continue;
        };
        let summary = summaries.iter().find(|s| s.tenant_id == id);
        let mine = alerts.iter().filter(|a| a.tenant_id == id);
        tenants.push(ReportLine {
            plan: line.plan.clone(),
            status: line.status,
            availability: summary.filter(|s| s.minutes > 0).map(|s| s.availability),
            minutes_with_data: summary.map_or(0, |s| s.minutes),
            bad_minutes: summary.map_or(0, |s| s.bad_minutes),
            latency_p95_ms: summary.and_then(|s| s.latency_p95_ms),
            error_rate_percent: summary.and_then(|s| s.error_rate_percent),
            alerts_opened: mine.clone().filter(|a| a.opened_at >= from).count(),
            alerts_open: mine.filter(|a| a.resolved_at.is_none()).count(),
            users: summary.and_then(|s| s.users),
            storage_bytes: summary.and_then(|s| s.storage_bytes),
            tenant: line.tenant,
        });
    }
    Ok(ReportView { from, to, tenants })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportSent {
    pub report: ReportView,
    /// E-mails enqueued (one per operator address; 0 when none is
    /// configured or this day's report was already sent).
    pub emailed: usize,
}

/// The daily report as an e-mail: a text table and the same in HTML.
fn report_email(report: &ReportView) -> (String, crate::provision::welcome::EmailBody) {
    use crate::provision::welcome::escape;
    let subject = format!(
        "KnowTon tenant health {} to {}",
        report.from.format("%Y-%m-%d %H:%M"),
        report.to.format("%Y-%m-%d %H:%M UTC")
    );
    let rows: Vec<[String; 6]> = report
        .tenants
        .iter()
        .map(|t| {
            [
                t.tenant.clone(),
                t.status.as_str().to_owned(),
                t.availability
                    .map_or_else(|| "-".to_owned(), |a| format!("{:.3}%", a * 100.0)),
                t.latency_p95_ms
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms")),
                t.alerts_opened.to_string(),
                t.alerts_open.to_string(),
            ]
        })
        .collect();
    let head = [
        "tenant",
        "status",
        "availability",
        "p95",
        "alerts opened",
        "open",
    ];
    let mut text = format!("{subject}\n\n");
    let line = |cells: &[String]| {
        format!(
            "{:<24} {:<9} {:>12} {:>9} {:>13} {:>5}\n",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
        )
    };
    text.push_str(&line(&head.map(str::to_owned)));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body>\n<h2>{}</h2>\n<table>\n<tr>{}</tr>\n",
        escape(&subject),
        head.iter()
            .map(|h| format!("<th align=\"left\">{h}</th>"))
            .collect::<String>()
    );
    for row in &rows {
        text.push_str(&line(row));
        html.push_str(&format!(
            "<tr>{}</tr>\n",
            row.iter()
                .map(|c| format!("<td>{}</td>", escape(c)))
                .collect::<String>()
        ));
    }
    html.push_str("</table>\n</body></html>\n");
    (subject, crate::provision::welcome::EmailBody { text, html })
}

/// Build the report and e-mail it to the operators (`--notify-email`)
/// through the outbox. The 24-hour report is sent once per day (its
/// idempotency key is the day), so a repeated cron run sends nothing
/// twice. Admin only.
#[utoipa::path(post, path = "/api/v1/monitoring/report/send", tag = "monitoring",
    params(ReportParams),
    responses((status = 200, body = ReportSent), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send_report(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<ReportParams>,
) -> Result<Json<ReportSent>, ApiError> {
    caller.require_admin()?;
    let hours = params.hours.unwrap_or(24);
    if !(1..=744).contains(&hours) {
        return Err(ApiError::invalid("hours", "must be between 1 and 744"));
    }
    let report = build_report(&state, hours).await?;
    let key = if hours == 24 {
        format!("report:daily:{}", report.to.format("%Y-%m-%d"))
    } else {
        format!("report:{hours}h:{}", report.to.format("%Y-%m-%dT%H:%M"))
    };
    let (subject, body) = report_email(&report);
    let emailed = state.notify.email_operators(&key, &subject, &body).await?;
    Ok(Json(ReportSent { report, emailed }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CleanupParams {
    /// Retention: `30d`, `12h` or `90m` (at least 1 hour).
    pub older_than: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupView {
    pub before: DateTime<Utc>,
    pub deleted: CleanupCounts,
}

/// `30d`, `12h`, `90m`.
pub fn parse_age(text: &str) -> Option<TimeDelta> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number = &text[..text.len() - unit.len_utf8()];
    let n: i64 = number.parse().ok().filter(|n| *n > 0 && *n <= 100_000)?;
    match unit {
        'd' => TimeDelta::try_days(n),
        'h' => TimeDelta::try_hours(n),
        'm' => TimeDelta::try_minutes(n),
        _ => None,
    }
}

/// Delete health history, resolved alerts, delivered notifications and
/// ended silences older than the retention. Admin only.
#[utoipa::path(post, path = "/api/v1/monitoring/cleanup", tag = "monitoring",
    params(CleanupParams),
    responses((status = 200, body = CleanupView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cleanup(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<CleanupParams>,
) -> Result<Json<CleanupView>, ApiError> {
    caller.require_admin()?;
    let age = parse_age(&params.older_than)
        .filter(|age| *age >= TimeDelta::hours(1))
        .ok_or_else(|| {
            ApiError::invalid(
                "olderThan",
                format!(
                    "{:?} is not a retention like 30d, 12h or 90m (at least 1 hour)",
                    params.older_than
                ),
            )
        })?;
    let before = Utc::now() - age;
    let deleted = state
        .service
        .store()
        .cleanup(before)
        .await
        .map_err(internal)?;
    tracing::info!(before = %before, ?deleted, actor = %caller.actor(), "monitoring data cleaned up");
    Ok(Json(CleanupView { before, deleted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_nonsense_is_refused_without_panicking() {
        assert_eq!(parse_age("30d"), Some(TimeDelta::days(30)));
        assert_eq!(parse_age(" 12h "), Some(TimeDelta::hours(12)));
        assert_eq!(parse_age("90m"), Some(TimeDelta::minutes(90)));
        for bad in ["", "d", "30", "30y", "-1d", "0h", "\u{80}", "3\u{80}", "1é"] {
            assert_eq!(parse_age(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn instants_parse_as_dates_timestamps_or_epoch_seconds() {
        let day: DateTime<Utc> = "2026-11-29T00:00:00Z".parse().unwrap();
        assert_eq!(parse_instant("f", "2026-11-29", false).unwrap(), day);
        assert_eq!(
            parse_instant("f", "2026-11-29", true).unwrap(),
            day + TimeDelta::days(1),
            "an end date covers its whole day"
        );
        assert_eq!(parse_instant("f", "1795910400", false).unwrap(), day);
        assert!(parse_instant("f", "2026-02-30", false).is_err());
    }

    /// Hardening review, finding 12: `endDate` at the edge of chrono's
    /// range made `end - 24 h` overflow and panic the handler.
    #[test]
    fn instants_out_of_range_are_refused_without_panicking() {
        for text in [
            "-8334601228800",
            "8210266876799",
            "262143-12-31",
            "1969-12-30",
        ] {
            let params = HistoryParams {
                start_date: None,
                end_date: Some(text.to_owned()),
            };
            let err = range(&params).unwrap_err();
            assert_eq!(err.detail.field.as_deref(), Some("endDate"), "{text}");
        }
        let params = HistoryParams {
            start_date: None,
            end_date: Some("1970-01-01T12:00:00Z".to_owned()),
        };
        assert_eq!(
            range(&params).unwrap().0,
            DateTime::UNIX_EPOCH,
            "the default start is 24 hours earlier, but not before 1970"
        );
    }

    proptest::proptest! {
        /// Any query strings: a range in bounds, start before end, or an
        /// error naming one of the two parameters; never a panic.
        #[test]
        fn any_history_parameters_give_a_range_or_a_named_error(
            start in proptest::option::of(instant_text()),
            end in proptest::option::of(instant_text()),
        ) {
            let params = HistoryParams { start_date: start, end_date: end };
            if let Err(broken) = check_range(&params) {
                proptest::prop_assert!(false, "{broken}");
            }
        }
    }

    /// Epoch seconds of any size, dates and timestamps of any year, and noise.
    fn instant_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (-300_000i32..300_000, 1u32..13, 1u32..32)
                .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            (-300_000i32..300_000, 0u32..24)
                .prop_map(|(y, h)| format!("{y:04}-06-15T{h:02}:00:00Z")),
            "\\PC{0,40}",
        ]
    }
}
