//! The health report of every active tenant over the last hours, shown or
//! e-mailed to the operators (rendered by [`email`]).

mod email;

use axum::Json;
use axum::extract::{Extension, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::check_all::status_lines;
use super::error::{ApiError, ErrorBody};
use super::{ApiQuery, AppState};
use crate::health::HealthStatus;
use crate::store::{AlertFilter, HealthSummary};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Hours covered, 1 to 744 (default 24).
    pub hours: Option<i64>,
}

impl ReportParams {
    /// The hours covered, checked.
    fn hours(&self) -> Result<i64, ApiError> {
        let hours = self.hours.unwrap_or(24);
        if !(1..=744).contains(&hours) {
            return Err(ApiError::invalid("hours", "must be between 1 and 744"));
        }
        Ok(hours)
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportLine {
    pub tenant: String,
    pub plan: String,
    pub status: HealthStatus,
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
    let hours = params.hours()?;
    Ok(Json(build_report(&state, hours).await?))
}

async fn build_report(state: &AppState, hours: i64) -> Result<ReportView, ApiError> {
    let to = Utc::now();
    let from = to - TimeDelta::hours(hours);
    let store = &state.store;
    let summaries: Vec<HealthSummary> = store
        .health_summaries(from, to)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let alerts = store
        .list_alerts(&AlertFilter {
            tenant: None,
            resolved: None,
            limit: 10_000,
            before: None,
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
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
    let hours = params.hours()?;
    let report = build_report(&state, hours).await?;
    let key = if hours == 24 {
        format!("report:daily:{}", report.to.format("%Y-%m-%d"))
    } else {
        format!("report:{hours}h:{}", report.to.format("%Y-%m-%dT%H:%M"))
    };
    let (subject, body) = email::report_email(&report);
    let emailed = state.notify.email_operators(&key, &subject, &body).await?;
    Ok(Json(ReportSent { report, emailed }))
}
