//! Who is calling: the operator (admin token) or a tenant (one of its API
//! keys). Authentication, the `X-Tenant-Slug` agreement check and the
//! per-tenant rate limit run here, before any handler.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::ratelimit::Decision;
use crate::credentials::KeyKind;
use crate::credentials::{hash_api_key, looks_like_api_key};
use crate::store::KeyOwner;

pub const TENANT_SLUG_HEADER: &str = "x-tenant-slug";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Tenant(Arc<KeyOwner>),
}

impl Caller {
    /// Who to record in the configuration history.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin => crate::store::ADMIN_ACTOR.to_owned(),
            Caller::Tenant(owner) => format!("tenant-key:{}", owner.display_prefix),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "admin_required",
                "this operation needs the admin token",
            ))
        }
    }

    /// The tenant `id_or_slug` names, if this caller may reach it. The path
    /// is resolved to an id first and a tenant key is compared with it by
    /// id, never by the string it was given (a slug shaped like another
    /// tenant's id must not pass). A tenant key gets 403 for a tenant it
    /// does not own, whether or not that tenant exists, so other tenants'
    /// existence does not leak.
    pub async fn tenant_id(&self, state: &AppState, id_or_slug: &str) -> Result<Uuid, ApiError> {
        match self {
            Caller::Admin => Ok(state.service.resolve(id_or_slug).await?),
            Caller::Tenant(owner) => {
                // What `resolve` would answer, without a round trip: an id
                // is read first; a slug is unique and immutable, so the
                // key's own slug names the key's tenant and any other slug
                // names another tenant or none.
                let id = match Uuid::parse_str(id_or_slug) {
                    Ok(id) => id,
                    Err(_) if id_or_slug == owner.tenant.slug => owner.tenant.id,
                    Err(_) => return Err(another_tenant()),
                };
                self.require_tenant(id)?;
                Ok(id)
            }
        }
    }

    /// Checks that this caller may reach the tenant with this id.
    pub fn require_tenant(&self, id: Uuid) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(owner) if owner.tenant.id == id => Ok(()),
            Caller::Tenant(_) => Err(another_tenant()),
        }
    }

    /// Checks that this caller is the admin or holds the tenant's
    /// production key: what changes the tenant's live configuration,
    /// notification channels or production secrets is not for a
    /// development key.
    pub fn require_production(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(owner) if owner.kind == KeyKind::Production => Ok(()),
            Caller::Tenant(_) => Err(ApiError::forbidden(
                "production_key_required",
                "a development key may read its tenant and rotate itself; this operation needs the production key",
            )),
        }
    }
}

fn another_tenant() -> ApiError {
    ApiError::forbidden("forbidden", "this API key belongs to another tenant")
}

/// Authenticates the request, applies the tenant's rate limit and sets the
/// rate limit headers on the response.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match identify(&state, req.headers()).await {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    let mut limit_headers = None;
    if let Caller::Tenant(owner) = &caller {
        match state
            .limiter
            .check(owner.tenant.id, owner.tenant.plan)
            .await
        {
            Decision::Allowed { limit, remaining } => limit_headers = Some((limit, remaining)),
            Decision::Limited { limit, retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let mut response = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "tenant {} exceeded its plan's {limit} requests per minute; retry in {secs} s",
                        owner.tenant.slug
                    ),
                )
                .into_response();
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                set_limit_headers(headers, limit, 0);
                return response;
            }
        }
    }
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    if let Some((limit, remaining)) = limit_headers {
        set_limit_headers(response.headers_mut(), limit, remaining);
    }
    response
}

fn set_limit_headers(headers: &mut HeaderMap, limit: u32, remaining: u32) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
}

async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;

    let caller = if looks_like_api_key(token) {
        let owner = state
            .store
            .authenticate_key(&hash_api_key(token))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
        Caller::Tenant(Arc::new(owner))
    } else if bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())) {
        Caller::Admin
    } else {
        return Err(ApiError::unauthorized("invalid token"));
    };

    if let (Caller::Tenant(owner), Some(slug)) = (&caller, headers.get(TENANT_SLUG_HEADER))
        && slug.as_bytes() != owner.tenant.slug.as_bytes()
    {
        return Err(ApiError::forbidden(
            "tenant_mismatch",
            "X-Tenant-Slug does not match the API key's tenant",
        ));
    }
    Ok(caller)
}
