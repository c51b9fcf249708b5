//! Check every tenant now: ask the agents for fresh results, evaluate, and
//! every active tenant's status line.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{ApiQuery, AppState};
use crate::health::HealthStatus;

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
    pub status: HealthStatus,
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
        .map(|slug| match state.engine.tenant(&slug) {
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
                status: HealthStatus::Unknown,
                evaluated_at: None,
                pods: 0,
                pods_up: 0,
                problems: Vec::new(),
                open_alerts: 0,
            },
        })
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
    let engine = state.engine.clone();
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
