//! `GET /metrics`: the scrape on the API port (with the metrics token) and
//! on the metrics listener, and the middleware counting every request.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::Instant;

use super::AppState;
use super::error::ApiError;
use crate::metrics::{MetricsToken, Sources, method_label};

/// Counts and times every request by its route template. No label value
/// comes from the request: the route is the matched template (`unmatched`
/// otherwise, never the path) and the method one of [`method_label`]'s.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.http_metrics;
    m.requests
        .with_label_values(&[&route, method, response.status().as_str()])
        .inc();
    m.duration
        .with_label_values(&[&route, method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The scrape on the API port: only with the metrics token (`--metrics-token`);
/// without one configured, metrics are not served there at all (the API port
/// is open to tenants, and the metrics name every tenant).
pub async fn serve(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.metrics_token {
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not served on the API port without --metrics-token (see --metrics-addr)",
        )
        .into_response(),
        Some(token) => scrape(&state, token, &headers),
    }
}

/// The scrape on the metrics listener (`--metrics-addr`): with the token
/// when one is configured.
pub async fn serve_listener(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.metrics_token {
        None => text(render(&state)),
        Some(token) => scrape(&state, token, &headers),
    }
}

/// The metrics listener's routes: `GET /metrics` and nothing else.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(serve_listener))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

fn scrape(state: &AppState, token: &MetricsToken, headers: &HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(presented) if token.matches(presented) => text(render(state)),
        Some(_) => ApiError::unauthorized("invalid metrics token").into_response(),
        None => ApiError::unauthorized("the metrics need Authorization: Bearer <metrics token>")
            .into_response(),
    }
}

fn text(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Renders every family from the application's state.
pub fn render(state: &AppState) -> String {
    let sources = Sources {
        engine: Some(&state.engine),
        ingest: &state.ingest,
        deployer: &state.deployer,
        notify: state.notify.metrics(),
        http: &state.http_metrics,
        backups: state.backups.as_ref(),
    };
    crate::metrics::render(&sources, &state.tenant_metrics)
}
