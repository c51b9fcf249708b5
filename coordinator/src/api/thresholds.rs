//! A tenant's alert thresholds: the defaults, or its own overrides.

use axum::Json;
use axum::extract::{Extension, Path, State};
use knowton_common::thresholds::{Level, Thresholds};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{AppState, json};

/// The thresholds a tenant's checks are evaluated against.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdsView {
    pub tenant: String,
    pub thresholds: Thresholds,
    /// Whether these are the tenant's own (else the defaults).
    pub overridden: bool,
    pub defaults: Thresholds,
}

/// Levels to change; absent ones keep their current value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdsRequest {
    pub users_percent: Option<Level>,
    pub storage_percent: Option<Level>,
    pub api_rate_percent: Option<Level>,
    pub error_rate_percent: Option<Level>,
    pub response_time_ms: Option<Level>,
    pub database_backup_age_hours: Option<Level>,
    pub storage_backup_age_hours: Option<Level>,
}

/// A year: a backup older than that is not late but forgotten.
const MAX_BACKUP_AGE_HOURS: f64 = 24.0 * 366.0;

fn check_level(field: &str, level: Level, max: f64) -> Result<Level, ApiError> {
    let ok = |v: f64| v.is_finite() && v > 0.0 && v <= max;
    if !ok(level.warning) || !ok(level.critical) {
        return Err(ApiError::invalid(
            field,
            format!("warning and critical must be above 0 and at most {max}"),
        ));
    }
    if level.warning > level.critical {
        return Err(ApiError::invalid(
            format!("{field}.warning"),
            "must not be above critical",
        ));
    }
    Ok(level)
}

impl ThresholdsRequest {
    fn apply(self, mut t: Thresholds) -> Result<Thresholds, ApiError> {
        let fields = [
            (
                "usersPercent",
                self.users_percent,
                &mut t.users_percent,
                1000.0,
            ),
            (
                "storagePercent",
                self.storage_percent,
                &mut t.storage_percent,
                1000.0,
            ),
            (
                "apiRatePercent",
                self.api_rate_percent,
                &mut t.api_rate_percent,
                1000.0,
            ),
            (
                "errorRatePercent",
                self.error_rate_percent,
                &mut t.error_rate_percent,
                100.0,
            ),
            (
                "responseTimeMs",
                self.response_time_ms,
                &mut t.response_time_ms,
                600_000.0,
            ),
            (
                "databaseBackupAgeHours",
                self.database_backup_age_hours,
                &mut t.database_backup_age_hours,
                MAX_BACKUP_AGE_HOURS,
            ),
            (
                "storageBackupAgeHours",
                self.storage_backup_age_hours,
                &mut t.storage_backup_age_hours,
                MAX_BACKUP_AGE_HOURS,
            ),
        ];
        for (field, given, current, max) in fields {
            if let Some(level) = given {
                *current = check_level(field, level, max)?;
            }
        }
        Ok(t)
    }
}

async fn view(state: &AppState, id: Uuid) -> Result<ThresholdsView, ApiError> {
    let tenant = state.service.get(id).await?;
    let own = state
        .store
        .thresholds(id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(ThresholdsView {
        tenant: tenant.slug,
        overridden: own.is_some(),
        thresholds: own.unwrap_or_default(),
        defaults: Thresholds::default(),
    })
}

/// The tenant's thresholds.
#[utoipa::path(get, path = "/api/v1/tenants/{idOrSlug}/thresholds", tag = "alerts",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = ThresholdsView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
) -> Result<Json<ThresholdsView>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    Ok(Json(view(&state, id).await?))
}

/// Override some of the tenant's thresholds (admin only); the tenant is
/// evaluated against them at once.
#[utoipa::path(put, path = "/api/v1/tenants/{idOrSlug}/thresholds", tag = "alerts",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    request_body = ThresholdsRequest,
    responses((status = 200, body = ThresholdsView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    json::ApiJson(request): json::ApiJson<ThresholdsRequest>,
) -> Result<Json<ThresholdsView>, ApiError> {
    caller.require_admin()?;
    let id = state.service.resolve(&id_or_slug).await?;
    let current = view(&state, id).await?;
    let updated = request.apply(current.thresholds)?;
    state
        .engine
        .set_thresholds(id, Some(updated), &caller.actor())
        .await?;
    Ok(Json(view(&state, id).await?))
}

/// Back to the default thresholds (admin only).
#[utoipa::path(delete, path = "/api/v1/tenants/{idOrSlug}/thresholds", tag = "alerts",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = ThresholdsView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reset(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
) -> Result<Json<ThresholdsView>, ApiError> {
    caller.require_admin()?;
    let id = state.service.resolve(&id_or_slug).await?;
    state
        .engine
        .set_thresholds(id, None, &caller.actor())
        .await?;
    Ok(Json(view(&state, id).await?))
}
