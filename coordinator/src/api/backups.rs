//! A tenant's backups: the complete ones in the repository, the recent
//! runs, and a backup on demand. The admin, or the tenant's production key
//! for its own tenant.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::page::{Page, parse_cursor};
use super::{ApiQuery, AppState, json};
use crate::backup::restore_job::JobStartError;
use crate::backup::service::{
    BackupService, RestoreError, RestorePart, StartError, Unchanged, VerifiedBackup,
};
use crate::backup::{BackupError, BackupInfo, BackupKind, TenantRef};
use crate::store::{BackupRun, RestoreJob, RunTrigger, Verification};

/// Runs shown with the backups.
const RUNS_SHOWN: i64 = 20;
/// Verifications shown with the backups.
const VERIFICATIONS_SHOWN: i64 = 5;
/// How often a tenant's own key may start a backup of a kind: each one is
/// work for the coordinator and a backup kept until pruned.
const TENANT_BACKUP_EVERY: chrono::Duration = chrono::Duration::minutes(10);

/// `GET /api/v1/tenants/{id}/backups`
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupsView {
    pub tenant: String,
    /// Complete backups, newest first.
    pub backups: Vec<BackupInfo>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<Uuid>,
    /// The latest runs, newest first, finished or not.
    pub runs: Vec<BackupRun>,
    /// The latest verifications, newest first.
    pub verifications: Vec<Verification>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupsParams {
    /// Backups per page (1 to 200, default 50).
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Only backups of this kind.
    pub kind: Option<BackupKind>,
}

/// `POST /api/v1/tenants/{id}/backups`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRequest {
    pub kind: BackupKind,
}

fn service(state: &AppState) -> Result<&BackupService, ApiError> {
    state.backups.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "backups_off",
            "backups are off: start the coordinator with --backup-url",
        )
    })
}

fn repository_error(err: &BackupError) -> ApiError {
    tracing::error!(error = %knowton_common::error_chain(err), "backup repository request failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "backup_repository_error",
        knowton_common::error_chain(err),
    )
}

/// The tenant's complete backups (paged, newest first) and latest runs.
#[utoipa::path(get, path = "/api/v1/tenants/{idOrSlug}/backups", tag = "backups",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug"), BackupsParams),
    responses((status = 200, body = BackupsView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "backups_off", body = ErrorBody),
        (status = 502, description = "The backup repository failed", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    ApiQuery(params): ApiQuery<BackupsParams>,
) -> Result<Json<BackupsView>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    caller.require_production()?;
    let page = Page::new(params.limit)?;
    let cursor = parse_cursor(params.cursor.as_deref())?;
    let tenant = state.service.get(id).await?;
    let service = service(&state)?;
    // Runs first: a run shown as succeeded has its backup listed (its
    // manifest was written before it was recorded as finished).
    let runs = state
        .store
        .backup_runs(id, RUNS_SHOWN)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let verifications = state
        .store
        .verifications(id, VERIFICATIONS_SHOWN)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut backups: Vec<BackupInfo> = service
        .backups()
        .list(id)
        .await
        .map_err(|e| repository_error(&e))?
        .into_iter()
        .filter(|b| params.kind.is_none_or(|k| b.kind == k))
        .collect();
    backups.sort_by_key(|b| std::cmp::Reverse(b.id));
    if let Some(cursor) = cursor {
        backups.retain(|b| b.id < cursor);
    }
    backups.truncate(page.rows_to_read() as usize);
    let next_cursor = page.cut(&mut backups, |b| b.id);
    Ok(Json(BackupsView {
        tenant: tenant.slug,
        backups,
        next_cursor,
        runs,
        verifications,
    }))
}

/// Back the tenant's database or files up now (202: started; its run is
/// in `GET …/backups`).
#[utoipa::path(post, path = "/api/v1/tenants/{idOrSlug}/backups", tag = "backups",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    request_body = BackupRequest,
    responses((status = 202, description = "Started", body = BackupRun),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "backups_off, or backup_running (one of this kind is running)", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 429, description = "backup_too_soon: a tenant key may start one of each kind every 10 minutes", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<BackupRun>), ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    caller.require_production()?;
    let body = json::json_body(request, &()).await?;
    let request: BackupRequest = json::parse(&body)?;
    if request.kind == BackupKind::Configuration {
        return Err(ApiError::invalid(
            "kind",
            "configuration versions are backed up as they are committed: database or storage",
        ));
    }
    let tenant = state.service.get(id).await?;
    let service = service(&state)?;
    if !caller.is_admin() {
        let recent = state
            .store
            .backup_runs(id, RUNS_SHOWN)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let since = Utc::now() - TENANT_BACKUP_EVERY;
        if recent
            .iter()
            .any(|r| r.kind == request.kind && r.started_at > since)
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "backup_too_soon",
                format!(
                    "a {} backup of this tenant started less than {} minutes ago",
                    request.kind,
                    TENANT_BACKUP_EVERY.num_minutes()
                ),
            )
            .field("kind"));
        }
    }
    let run = service
        .start(
            TenantRef {
                id,
                slug: tenant.slug,
            },
            request.kind,
            RunTrigger::Manual,
            &caller.actor(),
        )
        .await
        .map_err(|err| match err {
            StartError::AlreadyRunning { kind } => ApiError::new(
                StatusCode::CONFLICT,
                "backup_running",
                format!("a {kind} backup of this tenant is running: wait for it to finish"),
            ),
            StartError::Restoring => {
                ApiError::new(StatusCode::CONFLICT, "restore_running", err.to_string())
            }
            StartError::Store(e) => ApiError::internal(&e),
        })?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// `POST /api/v1/tenants/{id}/restore`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    /// Restore the latest complete backups taken at or before this moment
    /// (RFC 3339).
    pub at: DateTime<Utc>,
    /// Only this kind (default: every kind backed up). The configuration
    /// is applied as a new configuration version.
    pub only: Option<BackupKind>,
    /// Another tenant (id or slug) to restore into, which must exist
    /// (default: the tenant itself).
    pub into: Option<String>,
    /// Say what would be restored, and restore nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a restore did or would do.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreView {
    pub from: String,
    pub into: String,
    pub dry_run: bool,
    pub parts: Vec<RestorePart>,
    /// The kinds it leaves as they are, and why (no backup of that kind
    /// at or before the moment, or a tenant not active).
    pub unchanged: Vec<Unchanged>,
}

/// Restore the tenant's data as it was at a moment (admin only). A dry
/// run answers what would be restored (200). Otherwise the restore starts
/// as a job (202) to poll at `…/restores/{job}`: first a safety backup of
/// what is replaced, then the database, then the files, then the
/// configuration (as a new configuration version).
#[utoipa::path(post, path = "/api/v1/tenants/{idOrSlug}/restore", tag = "backups",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    request_body = RestoreRequest,
    responses((status = 200, description = "dry run", body = RestoreView),
        (status = 202, description = "started", body = RestoreJob),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such tenant, or no_backup before that moment", body = ErrorBody),
        (status = 409, description = "backups_off, restore_running", body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 502, description = "backup_repository_error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require_admin()?;
    let body = json::json_body(request, &()).await?;
    let request: RestoreRequest = json::parse(&body)?;
    let service = service(&state)?.clone();
    let from = tenant_ref(&state, &id_or_slug).await?;
    let into = match &request.into {
        Some(other) => tenant_ref(&state, other)
            .await
            .map_err(|e| e.field("into"))?,
        None => from.clone(),
    };
    if request.dry_run {
        let plan = service
            .plan_restore(&from, &into, request.at, request.only)
            .await
            .map_err(|err| restore_error(&err))?;
        return Ok(Json(RestoreView {
            from: from.slug,
            into: into.slug,
            dry_run: true,
            parts: plan.parts,
            unchanged: plan.unchanged,
        })
        .into_response());
    }
    let job = service
        .start_restore(from, into, request.at, request.only, caller.actor())
        .await
        .map_err(|err| match err {
            JobStartError::Plan(err) => restore_error(&err),
            JobStartError::AlreadyRunning => ApiError::new(
                StatusCode::CONFLICT,
                "restore_running",
                "a restore into this tenant is running: wait for it to end",
            ),
            JobStartError::Store(e) => ApiError::internal(&e),
        })?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// A restore job: its phase, bytes restored of the total, and at the end
/// its outcome (admin only).
#[utoipa::path(get, path = "/api/v1/tenants/{idOrSlug}/restores/{job}", tag = "backups",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug restored into"),
        ("job" = Uuid, Path, description = "The job's id")),
    responses((status = 200, body = RestoreJob), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn restore_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id_or_slug, job)): Path<(String, String)>,
) -> Result<Json<RestoreJob>, ApiError> {
    caller.require_admin()?;
    let tenant = state.service.resolve(&id_or_slug).await?;
    let job_id: Uuid = job
        .parse()
        .map_err(|_| ApiError::invalid("job", "not a job id"))?;
    state
        .store
        .restore_job(tenant, job_id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("restore job {job_id}")))
}

async fn tenant_ref(state: &AppState, id_or_slug: &str) -> Result<TenantRef, ApiError> {
    let id = state.service.resolve(id_or_slug).await?;
    let tenant = state.service.get(id).await?;
    Ok(TenantRef {
        id,
        slug: tenant.slug,
    })
}

fn restore_error(err: &RestoreError) -> ApiError {
    let message = knowton_common::error_chain(err);
    match err {
        RestoreError::NothingBefore { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "no_backup", message).field("at")
        }
        RestoreError::Safety { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "restore_safety_failed", message)
        }
        RestoreError::Part { .. }
        | RestoreError::ScaleDown { .. }
        | RestoreError::Redeploy { .. } => {
            tracing::error!(error = %message, "restore failed");
            ApiError::new(StatusCode::BAD_GATEWAY, err.code(), message)
        }
        RestoreError::Backup(e) => repository_error(e),
        RestoreError::Start(StartError::AlreadyRunning { .. } | StartError::Restoring) => {
            ApiError::new(StatusCode::CONFLICT, "backup_running", message)
        }
        RestoreError::Start(StartError::Store(e)) => ApiError::internal(e),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// Only this backup (default: every complete one).
    pub backup: Option<Uuid>,
    /// Also restore the latest backup of each kind (or `backup`) into a
    /// scratch database and directory and compare it with what the backup
    /// recorded.
    #[serde(default)]
    pub deep: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyView {
    pub tenant: String,
    pub ok: bool,
    /// Backups of a kind that could not even be listed (a manifest or its
    /// listing missing, damaged or sealed under another key), named.
    pub unreadable: Vec<String>,
    pub backups: Vec<VerifiedBackup>,
}

/// Check that every object of the tenant's backups is there, opens under
/// this coordinator's key and holds what its name says; `deep`, restore
/// the latest ones into a scratch place and compare (admin only: it reads
/// every object). The result is recorded: problems raise the tenant's
/// `backup` alert until a verification passes.
#[utoipa::path(post, path = "/api/v1/tenants/{idOrSlug}/backups/verify", tag = "backups",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug"), VerifyParams),
    responses((status = 200, body = VerifyView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "backups_off", body = ErrorBody),
        (status = 502, description = "backup_repository_error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    ApiQuery(params): ApiQuery<VerifyParams>,
) -> Result<Json<VerifyView>, ApiError> {
    caller.require_admin()?;
    let id = state.service.resolve(&id_or_slug).await?;
    let tenant = state.service.get(id).await?;
    let verified = service(&state)?
        .verify(
            &TenantRef {
                id,
                slug: tenant.slug.clone(),
            },
            params.backup,
            params.deep,
            RunTrigger::Manual,
            &caller.actor(),
        )
        .await
        .map_err(|e| repository_error(&e))?;
    if let Some(backup) = params.backup
        && verified.backups.is_empty()
        && verified.unreadable.is_empty()
    {
        return Err(ApiError::not_found(&format!("backup {backup}")).field("backup"));
    }
    Ok(Json(VerifyView {
        tenant: tenant.slug,
        ok: verified.ok(),
        unreadable: verified.unreadable,
        backups: verified.backups,
    }))
}
