//! One tenant's health on one page: status, checks, usage against the
//! plan, the last 24 hours, open alerts and its deployment.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use chrono::{DateTime, TimeDelta, Utc};
use knowton_common::thresholds::Thresholds;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::alerts::Scope;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::history::{required_scope, rollups_in};
use super::monitoring::TenantHealthView;
use crate::health::engine::OpenAlert;
use crate::health::rollup::percentile;
use crate::health::{CheckResult, HealthStatus};
use crate::store::{AlertFilter, Rollup};

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
    pub status: HealthStatus,
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
    let evaluation = state.engine.tenant(&slug);
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
        .store
        .list_alerts(&AlertFilter {
            tenant: Some(id),
            resolved: None,
            limit: 1000,
            before: None,
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .iter()
        .filter(|a| a.opened_at >= now - TimeDelta::hours(24))
        .count();
    let storage_used = evaluation
        .as_ref()
        .and_then(|h| h.current_minute.as_ref().and_then(|m| m.storage_bytes))
        .map_or(tenant.usage.storage_bytes as f64, |b| b as f64);
    let deployment = state
        .store
        .deployment(id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let recent_deployments = state
        .store
        .deployment_events(id, 10)
        .await
        .map_err(|e| ApiError::internal(&e))?;
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
