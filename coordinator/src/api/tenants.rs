//! Tenant lifecycle routes.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use knowton_common::{Plan, Usage};

use super::ApiQuery;
use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::page::{Page, parse_cursor};
use super::views::*;
use crate::credentials::KeyKind;
use crate::provision::{ProvisionRequest, UpdateRequest};

/// Provision a tenant: record, admin user, API keys, branding, features,
/// usage, deployment secrets, welcome e-mail and configuration history,
/// in one transaction.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants",
    request_body = ProvisionRequest,
    responses(
        (status = 201, description = "Provisioned; the only time the secrets are shown", body = ProvisionResponse),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 409, description = "Slug or domain taken", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<ProvisionRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let done = state.service.provision(req, &caller.actor()).await?;
    let location = format!("/api/v1/tenants/{}", done.tenant.id);
    let body = ProvisionResponse {
        admin: AdminCredentials {
            email: done.tenant.admin_email.clone(),
            temporary_password: done.temporary_password,
            must_change_password: true,
        },
        api_keys: ApiKeys {
            production: done.production_key,
            development: done.development_key,
        },
        tenant: done.tenant.into(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    ))
}

/// List tenants, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(ListParams),
    responses((status = 200, body = TenantPage), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<TenantPage>, ApiError> {
    caller.require_admin()?;
    let page = Page::new(params.limit)?;
    let after = parse_cursor(params.cursor.as_deref())?;
    let mut tenants = state
        .store
        .list_tenants(page.rows_to_read(), after, params.status)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let next_cursor = page.cut(&mut tenants, |t| t.id.to_string());
    Ok(Json(TenantPage {
        tenants: tenants.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Get one tenant by id or slug. The `ETag` is its configuration version,
/// for `If-Match` on a later `PUT`.
#[utoipa::path(get, path = "/api/v1/tenants/{idOrSlug}", tag = "tenants",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = TenantView,
            headers(("ETag" = String, description = "The configuration version, quoted"))),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    let tenant = match &caller {
        // Loaded together with the key: no second round trip.
        Caller::Tenant(owner) => owner.tenant.clone(),
        Caller::Admin => state.service.get(id).await?,
    };
    Ok(with_etag(tenant))
}

/// The tenant with its configuration version as a strong `ETag`.
fn with_etag(tenant: crate::store::Tenant) -> impl IntoResponse {
    let etag = format!("\"{}\"", tenant.config_version);
    ([(header::ETAG, etag)], Json(TenantView::from(tenant)))
}

/// The version an `If-Match` header asks for: `None` when absent or `*`
/// (any current version); 400 when it is not one quoted version.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            "If-Match",
            "must be the ETag of a GET of this tenant (a quoted version such as \"3\") or *",
        )
    };
    let value = value.to_str().map_err(|_| invalid())?.trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(invalid)
}

/// Change plan, features, branding or domain. Tenant keys may change
/// features and branding; plan and domain need the admin token.
#[utoipa::path(put, path = "/api/v1/tenants/{idOrSlug}", tag = "tenants",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug"), UpdateParams,
        ("If-Match" = Option<String>, Header, description = "The ETag of a GET: refused with 412 if the tenant changed since")),
    request_body = UpdateRequest,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "plan_limits_exceeded, domain_taken, tenant_deprovisioned, or version_conflict (a concurrent change to the same field)", body = ErrorBody),
        (status = 412, description = "If-Match names another version", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<UpdateParams>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    caller.require_production()?;
    if req.plan.is_some() || req.domain.is_some() || params.force {
        caller.require_admin()?;
    }
    let expected = if_match(&headers)?;
    let tenant = state
        .service
        .update(id, req, params.force, expected, &caller.actor())
        .await?;
    Ok(with_etag(tenant))
}

/// Deprovision: keeps the data and backups (status `deprovisioned`, keys
/// revoked) unless `purge=true`, which deletes the tenant's namespace,
/// database, files, backups and rows. Idempotent.
#[utoipa::path(delete, path = "/api/v1/tenants/{idOrSlug}", tag = "tenants",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug"), DeleteParams),
    responses((status = 200, body = DeprovisionResponse), (status = 404, body = ErrorBody),
        (status = 502, description = "The cluster, the tenants' database server or the \
            backup repository refused (cluster_error, tenant_data_error, \
            backup_repository_error): nothing of the tenant's rows was deleted", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> Result<Json<DeprovisionResponse>, ApiError> {
    caller.require_admin()?;
    let id = state.service.resolve(&id_or_slug).await?;
    if params.purge {
        state.service.purge(id).await?;
        return Ok(Json(DeprovisionResponse {
            id,
            status: "purged".into(),
            tenant: None,
        }));
    }
    let tenant = state.service.deprovision(id).await?;
    Ok(Json(DeprovisionResponse {
        id,
        status: tenant.status.to_string(),
        tenant: Some(tenant.into()),
    }))
}

/// Replace an API key; the old one stops working at once.
#[utoipa::path(post, path = "/api/v1/tenants/{idOrSlug}/api-keys/{kind}/rotate", tag = "tenants",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug"),
        ("kind" = KeyKind, Path, description = "production or development")),
    responses((status = 200, description = "The new key, shown once", body = RotatedKey),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id_or_slug, kind)): Path<(String, String)>,
) -> Result<Json<RotatedKey>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    let kind: KeyKind = kind
        .parse()
        .map_err(|msg: String| ApiError::invalid("kind", msg))?;
    // A development key rotates itself only: it never receives a
    // production secret.
    if kind == KeyKind::Production {
        caller.require_production()?;
    }
    let (tenant, key) = state.service.rotate_key(id, kind).await?;
    let display_prefix = tenant
        .api_keys
        .iter()
        .find(|k| k.kind == kind)
        .map(|k| k.display_prefix.clone())
        .unwrap_or_default();
    Ok(Json(RotatedKey {
        kind,
        api_key: key,
        display_prefix,
    }))
}

/// Record the tenant's current usage (reported by its instance or agents).
#[utoipa::path(put, path = "/api/v1/tenants/{idOrSlug}/usage", tag = "tenants",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    request_body = Usage,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_usage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
    ApiJson(usage): ApiJson<Usage>,
) -> Result<Json<TenantView>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    caller.require_production()?;
    Ok(Json(state.service.set_usage(id, usage).await?.into()))
}

/// The tenant's configuration history, oldest first.
#[utoipa::path(get, path = "/api/v1/tenants/{idOrSlug}/config-history", tag = "tenants",
    params(("idOrSlug" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = HistoryView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_slug): Path<String>,
) -> Result<Json<HistoryView>, ApiError> {
    let id = caller.tenant_id(&state, &id_or_slug).await?;
    let versions = state.service.history(id).await?;
    Ok(Json(HistoryView {
        versions: versions.into_iter().map(Into::into).collect(),
    }))
}

/// The plan sheet.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans",
    responses((status = 200, body = [PlanView])), security(("bearer" = [])))]
pub async fn plans() -> Json<Vec<PlanView>> {
    Json(
        Plan::ALL
            .into_iter()
            .map(|plan| PlanView {
                plan,
                limits: plan.limits(),
                features: plan.features(),
            })
            .collect(),
    )
}
