//! The coordinator replicas: who leads in which epoch, where each answers,
//! its last heartbeat and its agents.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{Caller, TENANT_SLUG_HEADER};
use super::error::{ApiError, NOT_LEADER};
use crate::replicas::ClusterView;

/// Every coordinator replica: its id, HTTP and gRPC addresses, whether it
/// leads, the lease's epoch, its last heartbeat and its connected agents
/// (admin only).
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, body = ClusterView), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cluster(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ClusterView>, ApiError> {
    caller.require_admin()?;
    let leadership = state.deployer.leadership();
    let view = ClusterView::read(
        state.store.as_ref(),
        leadership.renew_every(),
        leadership.holder(),
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(view))
}

/// Set on a request one replica forwards to the leader, naming the
/// replica: a forwarded request is never forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-knowton-forwarded-by";

/// How long the leader has to answer a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of the leader's answer that is passed on.
const MAX_FORWARDED_ANSWER: usize = 1 << 20;

/// Whether `err` says that only the leader could do it.
pub fn needs_leader(err: &ApiError) -> bool {
    err.detail.code == NOT_LEADER
}

/// A request as received, kept whole so that it can be passed on to the
/// leader.
#[derive(Debug)]
pub struct Forwardable {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Forwardable {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let body = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(super::json::body_rejection)?;
        // Under `/api/v1`, the router sees the path without its prefix.
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |original| original.0.clone());
        Ok(Forwardable {
            method: parts.method,
            uri,
            headers: parts.headers,
            body,
        })
    }
}

impl Forwardable {
    /// See [`forward_to_leader`].
    pub async fn forward(self, state: &AppState, refused: ApiError) -> Response {
        forward_to_leader(state, self, refused).await
    }
}

/// A request that only the leader can serve, received by a replica that
/// does not lead: sent on to the leader with the caller's credentials,
/// and its answer returned as it is. Without a live leader, or for a
/// request that was already forwarded once, `refused` stands.
async fn forward_to_leader(state: &AppState, request: Forwardable, refused: ApiError) -> Response {
    let Forwardable {
        method,
        uri,
        headers,
        body,
    } = request;
    if headers.contains_key(FORWARDED_BY_HEADER) {
        return refused.into_response();
    }
    let leadership = state.deployer.leadership();
    let view = match ClusterView::read(
        state.store.as_ref(),
        leadership.renew_every(),
        leadership.holder(),
    )
    .await
    {
        Ok(view) => view,
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    let Some(leader) = view.leader_url() else {
        return refused.into_response();
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut request = state
        .peers
        .request(method, format!("{leader}{path}"))
        .header(FORWARDED_BY_HEADER, leadership.holder())
        .timeout(FORWARD_TIMEOUT)
        .body(body);
    for name in [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        HeaderName::from_static(TENANT_SLUG_HEADER),
    ] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => {
            tracing::warn!(leader, error = %knowton_common::error_chain(&err), "failed to forward a request to the leader");
            return refused.into_response();
        }
    };
    let mut answer = answer;
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let bytes =
        crate::notify::http::read_capped(&mut answer, MAX_FORWARDED_ANSWER, FORWARD_TIMEOUT).await;
    let mut response = (status, bytes).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}
