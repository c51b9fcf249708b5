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
            Caller::Admin => "admin".to_owned(),
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

    /// Checks, before anything is looked up, that a tenant key only names
    /// its own tenant (by id or slug), so other tenants' existence does not leak.
    pub fn require_access(&self, id_or_slug: &str) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(owner)
                if owner.tenant.slug == id_or_slug
                    || Uuid::parse_str(id_or_slug).is_ok_and(|id| id == owner.tenant.id) =>
            {
                Ok(())
            }
            Caller::Tenant(_) => Err(ApiError::forbidden(
                "forbidden",
                "this API key belongs to another tenant",
            )),
        }
    }
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
        match state.limiter.check(owner.tenant.id, owner.tenant.plan) {
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
            .service
            .store()
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
