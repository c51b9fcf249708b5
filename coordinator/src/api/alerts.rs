//! Alert routes: list, show, resolve and acknowledge alerts; silences.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Caller, TENANT_SLUG_HEADER};
use super::cluster::{self, Forwardable};
use super::error::{ApiError, ErrorBody};
use super::page::Page;
use super::{ApiQuery, AppState, json};
use crate::health::engine::{EngineError, OperatorAction};
use crate::health::{Check, Severity};
use crate::store::{AlertEventRow, AlertFilter, AlertRow, AlertState, Silence};

const MAX_NOTE: usize = 2000;

/// An alert as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant: String,
    pub check: Check,
    pub severity: Severity,
    pub state: AlertState,
    pub summary: String,
    pub value: String,
    pub threshold: String,
    /// Number of its last transition.
    pub sequence: i64,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// `auto`, or who resolved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// A firing notification went out.
    pub notified: bool,
    /// Its transitions, oldest first (on single-alert responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<AlertEventRow>>,
}

impl From<AlertRow> for AlertView {
    fn from(a: AlertRow) -> Self {
        AlertView {
            id: a.id,
            tenant_id: a.tenant_id,
            tenant: a.tenant_slug,
            check: a.check,
            severity: a.severity,
            state: a.state,
            summary: a.summary,
            value: a.value,
            threshold: a.threshold,
            sequence: a.sequence,
            opened_at: a.opened_at,
            updated_at: a.updated_at,
            resolved_at: a.resolved_at,
            resolved_by: a.resolved_by,
            note: a.resolve_note,
            acknowledged_at: a.acknowledged_at,
            acknowledged_by: a.acknowledged_by,
            notified: a.notified,
            history: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertListParams {
    /// `false`: open alerts; `true`: resolved ones; absent: both.
    pub resolved: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<Uuid>,
}

/// The tenant a monitoring request is about: `X-Tenant-Slug` if given (a
/// tenant key must match it), else the key's own tenant; `None` for an
/// admin without the header (every tenant).
pub(super) async fn scope(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Option<Scope>, ApiError> {
    let slug = headers
        .get(TENANT_SLUG_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ApiError::invalid("X-Tenant-Slug", "must be a tenant's slug"))
        })
        .transpose()?;
    match (slug, caller) {
        (Some(slug), _) => {
            let id = caller.tenant_id(state, &slug).await?;
            if !state.service.directory().contains(&slug) {
                return Err(ApiError::not_found(&slug));
            }
            Ok(Some(Scope { id, slug }))
        }
        (None, Caller::Tenant(owner)) => Ok(Some(Scope {
            id: owner.tenant.id,
            slug: owner.tenant.slug.clone(),
        })),
        (None, Caller::Admin) => Ok(None),
    }
}

/// One tenant, resolved and authorised.
#[derive(Debug)]
pub(super) struct Scope {
    pub id: Uuid,
    pub slug: String,
}

/// Alerts, newest first: the tenant's (`X-Tenant-Slug`, or a tenant key's
/// own), or every tenant's for an admin without the header.
#[utoipa::path(get, path = "/api/v1/monitoring/alerts", tag = "alerts",
    params(AlertListParams, ("X-Tenant-Slug" = Option<String>, Header, description = "The tenant's slug")),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<AlertListParams>,
) -> Result<Json<AlertList>, ApiError> {
    let tenant = scope(&state, &caller, &headers).await?.map(|s| s.id);
    let page = Page::new(params.limit)?;
    let mut rows = state
        .store
        .list_alerts(&AlertFilter {
            tenant,
            resolved: params.resolved,
            limit: page.rows_to_read(),
            before: params.cursor,
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let next_cursor = page.cut(&mut rows, |a| a.id);
    Ok(Json(AlertList {
        alerts: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// The alert with its history, if the caller may see its tenant.
async fn visible_alert(state: &AppState, caller: &Caller, id: &str) -> Result<AlertRow, ApiError> {
    let not_found = || ApiError::alert_not_found(id);
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let alert = state
        .store
        .get_alert(id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(not_found)?;
    // Another tenant's alert does not exist for a tenant key.
    caller
        .require_tenant(alert.tenant_id)
        .map_err(|_| not_found())?;
    Ok(alert)
}

async fn with_history(state: &AppState, alert: AlertRow) -> Result<AlertView, ApiError> {
    let history = state
        .store
        .alert_events(alert.id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut view = AlertView::from(alert);
    view.history = Some(history);
    Ok(view)
}

/// One alert with its history (every transition, who made it and any note).
#[utoipa::path(get, path = "/api/v1/monitoring/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<AlertView>, ApiError> {
    let alert = visible_alert(&state, &caller, &id).await?;
    Ok(Json(with_history(&state, alert).await?))
}

/// Body of resolve and acknowledge (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertAction {
    /// Kept in the alert's history.
    pub note: Option<String>,
}

fn action_body(body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let action: AlertAction = json::parse(body)?;
    match action.note {
        Some(note) if note.chars().count() > MAX_NOTE => Err(ApiError::invalid(
            "note",
            format!("must be at most {MAX_NOTE} characters"),
        )),
        Some(note) if note.trim().is_empty() => Ok(None),
        note => Ok(note),
    }
}

/// Resolve an open alert by hand, with an optional note; who resolved it
/// and the note are kept. Its resolution is notified if it fired. A breach
/// that goes on opens a new alert.
#[utoipa::path(post, path = "/api/v1/monitoring/alerts/{id}/resolve", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    request_body(content = Option<AlertAction>, description = "Optional note"),
    responses((status = 200, body = AlertView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "alert_resolved", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    request: Forwardable,
) -> Response {
    act(&state, &caller, &id, request, OperatorAction::Resolve).await
}

/// An operator's action on an open alert the caller may see; only the
/// leader records it, so a replica that does not lead passes it on.
async fn act(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request: Forwardable,
    action: OperatorAction,
) -> Response {
    match act_here(state, caller, id, &request.body, action).await {
        Ok(done) => done.into_response(),
        Err(err) if cluster::needs_leader(&err) => request.forward(state, err).await,
        Err(err) => err.into_response(),
    }
}

async fn act_here(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: &Bytes,
    action: OperatorAction,
) -> Result<Json<AlertView>, ApiError> {
    let note = action_body(body)?;
    let alert = visible_alert(state, caller, id).await?;
    caller.require_production()?;
    if alert.resolved_at.is_some() {
        return Err(EngineError::AlreadyResolved(alert.id).into());
    }
    let done = state
        .engine
        .act(action, alert.id, &caller.actor(), note)
        .await?;
    Ok(Json(with_history(state, done).await?))
}

/// Acknowledge an open alert: reminders stop, it stays open until it
/// resolves. Acknowledging again changes nothing.
#[utoipa::path(post, path = "/api/v1/monitoring/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    request_body(content = Option<AlertAction>, description = "Optional note"),
    responses((status = 200, body = AlertView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "alert_resolved", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    request: Forwardable,
) -> Response {
    act(&state, &caller, &id, request, OperatorAction::Acknowledge).await
}

/// A new silence.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SilenceRequest {
    /// The tenant's id or slug.
    pub tenant: String,
    /// Only this check (default: every check of the tenant).
    pub check: Option<String>,
    /// When it ends (RFC 3339, in the future, within 90 days).
    pub ends_at: DateTime<Utc>,
    /// End it when an alert it covers resolves.
    #[serde(default)]
    pub end_on_resolve: bool,
    /// Why (kept).
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilenceList {
    pub silences: Vec<Silence>,
}

/// Silence a tenant's alerts (or one check's) until `endsAt`: alerts still
/// open and are recorded, but nobody is notified.
#[utoipa::path(post, path = "/api/v1/monitoring/silences", tag = "alerts",
    request_body = SilenceRequest,
    responses((status = 201, body = Silence), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    json::ApiJson(request): json::ApiJson<SilenceRequest>,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    let id = caller.tenant_id(&state, &request.tenant).await?;
    caller.require_production()?;
    let check = (request.check.as_deref())
        .map(str::parse::<Check>)
        .transpose()
        .map_err(|err| ApiError::invalid("check", err.to_string()))?;
    let now = crate::store::now();
    if request.ends_at <= now || request.ends_at > now + chrono::TimeDelta::days(90) {
        return Err(ApiError::invalid(
            "endsAt",
            "must be in the future and within 90 days",
        ));
    }
    if request.comment.chars().count() > MAX_NOTE {
        return Err(ApiError::invalid(
            "comment",
            format!("must be at most {MAX_NOTE} characters"),
        ));
    }
    let silence = Silence {
        id: Uuid::now_v7(),
        tenant_id: id,
        check,
        starts_at: now,
        ends_at: request.ends_at,
        end_on_resolve: request.end_on_resolve,
        comment: request.comment,
        created_by: caller.actor(),
        created_at: now,
    };
    state.engine.create_silence(silence.clone()).await?;
    Ok((StatusCode::CREATED, Json(silence)))
}

/// Silences in force or to come: the tenant's, or every tenant's for an admin.
#[utoipa::path(get, path = "/api/v1/monitoring/silences", tag = "alerts",
    params(("X-Tenant-Slug" = Option<String>, Header, description = "The tenant's slug")),
    responses((status = 200, body = SilenceList), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_silences(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<SilenceList>, ApiError> {
    let tenant = scope(&state, &caller, &headers).await?.map(|s| s.id);
    let silences = state
        .store
        .active_silences(crate::store::now())
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .filter(|s| tenant.is_none_or(|t| s.tenant_id == t))
        .collect();
    Ok(Json(SilenceList { silences }))
}

/// End a silence now.
#[utoipa::path(delete, path = "/api/v1/monitoring/silences/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Silence id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn end_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::silence_not_found(&id);
    let silence_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let silence = state
        .store
        .active_silences(crate::store::now())
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .find(|s| s.id == silence_id)
        .ok_or_else(not_found)?;
    caller
        .require_tenant(silence.tenant_id)
        .map_err(|_| not_found())?;
    caller.require_production()?;
    state.engine.end_silence(silence_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
