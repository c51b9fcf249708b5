//! The REST API: routes, authentication, rate limiting and error mapping.
//!
//! Handlers stay thin: they check the request, call a service and shape
//! the answer. Shared by every route: [`auth`] (who is calling),
//! [`ratelimit`], [`error`] (the one mapping of failures to a status and a
//! `code`), [`json`] (request bodies), `page` (cursor pagination) and
//! [`views`] (response types). Routes by subject: `tenants`, `deployments`,
//! `thresholds`, `notifications`, `alerts` (and silences), `monitoring`
//! (health now, agents), `backups`, `history`, `dashboard`, `check_all`, `reports`,
//! `cleanup`, `cluster` (the coordinator replicas); `openapi` documents
//! them.

mod alerts;
pub mod auth;
mod backups;
mod check_all;
mod cleanup;
mod cluster;
mod dashboard;
mod deployments;
pub mod error;
mod history;
pub mod json;
pub mod metrics;
mod monitoring;
mod notifications;
mod openapi;
mod page;
pub mod ratelimit;
mod reports;
mod tenants;
mod thresholds;
pub mod views;

/// Entry points for the cargo-fuzz targets in `coordinator/fuzz`: the
/// parsers of query strings and bodies, with the invariants they keep.
#[doc(hidden)]
pub mod fuzzing {
    /// History parameters from arbitrary strings: panics if an invariant of
    /// [`history`](super::history) breaks.
    pub fn history_range(start: Option<String>, end: Option<String>) {
        let params = super::history::HistoryParams {
            start_date: start,
            end_date: end,
        };
        if let Err(broken) = super::history::check_range(&params) {
            panic!("{broken}");
        }
    }

    /// A request body from arbitrary bytes, as every JSON route parses it:
    /// a value, or a 4xx naming what is wrong; never a panic.
    pub fn json_bodies(bytes: &[u8]) {
        use crate::api::json::{parse, parse_with_lists};
        let check = |err: super::error::ApiError| {
            assert!(err.status.is_client_error(), "{}", err.detail.message);
        };
        match parse::<crate::provision::ProvisionRequest>(bytes) {
            Ok(request) => drop(request.validate()),
            Err(err) => check(err),
        }
        if let Err(err) = parse::<crate::provision::UpdateRequest>(bytes) {
            check(err);
        }
        if let Err(err) = parse::<knowton_common::Usage>(bytes) {
            check(err);
        }
        if let Err(err) =
            parse_with_lists::<crate::notify::channels::ChannelsRequest>(bytes, &["emails"])
        {
            check(err);
        }
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use self::error::ApiError;
use self::ratelimit::TenantRateLimiter;
use self::views::Status;
use crate::notify::NotifyService;
use crate::provision::TenantLifecycle;
use crate::store::Store;

pub use openapi::ApiDoc;

/// What every handler can reach; built once, from running parts.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tenant lifecycle: every change to a tenant goes through it.
    pub service: Arc<TenantLifecycle>,
    /// The store, for what handlers only read (and settings outside the
    /// tenant lifecycle).
    pub store: Arc<dyn Store>,
    pub limiter: Arc<TenantRateLimiter>,
    pub admin_token: Arc<str>,
    /// Set when shutdown starts: `/readyz` turns 503 at once.
    pub draining: Arc<AtomicBool>,
    /// Agents and their latest results.
    pub ingest: Arc<crate::ingest::Registry>,
    /// Notification channels and the outbox.
    pub notify: Arc<NotifyService>,
    /// Tenant health and alerts.
    pub engine: crate::health::Engine,
    /// Requests and latencies of this API.
    pub http_metrics: Arc<crate::metrics::HttpMetrics>,
    /// Each tenant's rendered metric lines, kept between scrapes.
    pub tenant_metrics: Arc<crate::metrics::TenantLineCache>,
    /// Tenant deployments (rendered and recorded only without a cluster).
    pub deployer: crate::deploy::Deployer,
    /// The bearer token `/metrics` requires (none: not served on the API port).
    pub metrics_token: Option<crate::listen::MetricsToken>,
    /// How long a request may take, except the [`LONG_ROUTES`].
    pub request_timeout: Duration,
    /// Reaches the other replicas (requests only the leader can serve).
    pub peers: reqwest::Client,
    /// Tenants' backups (`None`: off).
    pub backups: Option<crate::backup::service::BackupService>,
}

/// The running parts the application state is made of.
#[derive(Debug)]
pub struct Services {
    pub lifecycle: Arc<TenantLifecycle>,
    pub store: Arc<dyn Store>,
    pub ingest: Arc<crate::ingest::Registry>,
    pub notify: Arc<NotifyService>,
    pub engine: crate::health::Engine,
    pub deployer: crate::deploy::Deployer,
    /// Tenants' backups (`None`: off).
    pub backups: Option<crate::backup::service::BackupService>,
}

/// How the API authenticates and times requests.
#[derive(Debug)]
pub struct ApiSettings {
    pub admin_token: String,
    pub metrics_token: Option<crate::listen::MetricsToken>,
    pub request_timeout: Duration,
    /// Tenants' rate budgets are shared with the other replicas through
    /// the store (PostgreSQL), not held in memory (SQLite: one
    /// coordinator).
    pub shared_rate_limits: bool,
}

impl AppState {
    pub fn new(services: Services, settings: ApiSettings) -> Self {
        let http_metrics = Arc::new(crate::metrics::HttpMetrics::default());
        let limiter = if settings.shared_rate_limits {
            TenantRateLimiter::shared(services.store.clone(), http_metrics.clone())
        } else {
            TenantRateLimiter::local(http_metrics.clone())
        };
        AppState {
            service: services.lifecycle,
            store: services.store,
            limiter: Arc::new(limiter),
            admin_token: settings.admin_token.into(),
            draining: Arc::new(AtomicBool::new(false)),
            ingest: services.ingest,
            notify: services.notify,
            engine: services.engine,
            http_metrics,
            deployer: services.deployer,
            backups: services.backups,
            tenant_metrics: Arc::default(),
            metrics_token: settings.metrics_token,
            request_timeout: settings.request_timeout,
            peers: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// Query-string extractor whose errors use our shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/tenants", post(tenants::create).get(tenants::list))
        .route(
            "/tenants/{id}",
            get(tenants::get)
                .put(tenants::update)
                .delete(tenants::delete),
        )
        .route(
            "/tenants/{id}/api-keys/{kind}/rotate",
            post(tenants::rotate_key),
        )
        .route(
            "/tenants/{id}/usage",
            axum::routing::put(tenants::set_usage),
        )
        .route("/tenants/{id}/config-history", get(tenants::history))
        .route(
            "/tenants/{id}/backups",
            get(backups::list).post(backups::start),
        )
        .route("/tenants/{id}/backups/verify", post(backups::verify))
        .route("/tenants/{id}/restore", post(backups::restore))
        .route("/tenants/{id}/restores/{job}", get(backups::restore_job))
        .route("/plans", get(tenants::plans))
        .route("/monitoring/health", get(monitoring::health))
        .route("/monitoring/health/history", get(history::history))
        .route("/monitoring/dashboard", get(dashboard::dashboard))
        .route("/monitoring/check-all", post(check_all::check_all))
        .route("/monitoring/report", get(reports::report))
        .route("/monitoring/report/send", post(reports::send_report))
        .route("/monitoring/cleanup", post(cleanup::cleanup))
        .route("/monitoring/alerts", get(alerts::list))
        .route("/monitoring/alerts/{id}", get(alerts::get))
        .route("/monitoring/alerts/{id}/resolve", post(alerts::resolve))
        .route(
            "/monitoring/alerts/{id}/acknowledge",
            post(alerts::acknowledge),
        )
        .route(
            "/monitoring/silences",
            post(alerts::create_silence).get(alerts::list_silences),
        )
        .route(
            "/monitoring/silences/{id}",
            axum::routing::delete(alerts::end_silence),
        )
        .route(
            "/tenants/{id}/deployment",
            get(deployments::get).put(deployments::put),
        )
        .route("/tenants/{id}/deploy", post(deployments::deploy))
        .route(
            "/tenants/{id}/thresholds",
            get(thresholds::get)
                .put(thresholds::put)
                .delete(thresholds::reset),
        )
        .route("/agents", get(monitoring::agents))
        .route("/cluster", get(cluster::cluster))
        .route(
            "/tenants/{id}/notifications",
            get(notifications::get_channels).put(notifications::set_channels),
        )
        .route(
            "/monitoring/notifications",
            get(notifications::list_notifications),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));

    Router::new()
        .nest("/api/v1", api)
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics::serve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_deadline,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// Routes that wait by design, with their own bound instead of
/// `--http-request-timeout-seconds` (when that is shorter): check-all waits
/// up to 120 s for the agents (its `timeoutSeconds`) and then evaluates
/// every tenant; cleanup deletes old rows, a long piece of store work on a
/// large database that a timeout would cut short.
pub const LONG_ROUTES: [(&str, Duration); 4] = [
    ("/api/v1/tenants/{id}/restore", Duration::from_secs(3600)),
    (
        "/api/v1/tenants/{id}/backups/verify",
        Duration::from_secs(3600),
    ),
    ("/api/v1/monitoring/check-all", Duration::from_secs(150)),
    ("/api/v1/monitoring/cleanup", Duration::from_secs(900)),
];

/// Answers 503 `request_timeout` to a request (body included) that takes
/// longer than its route's bound.
async fn request_deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let bound = LONG_ROUTES
        .iter()
        .find(|(path, _)| Some(*path) == route)
        .map_or(state.request_timeout, |(_, own)| {
            (*own).max(state.request_timeout)
        });
    match tokio::time::timeout(bound, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("the request took longer than {} s", bound.as_secs()),
        )
        .into_response(),
    }
}

/// One span per request: method, route (not the raw path) and request id,
/// which the client gets back in `x-request-id`.
fn request_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("http", method = %req.method(), route = %route, request_id = %request_id)
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Ready to serve: the database answers (migrations were applied before the
/// listener was bound) and shutdown has not started.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Status), (status = 503, body = Status)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status { status: "draining" }),
        );
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(Status { status: "ready" })),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Status {
                    status: "database unreachable",
                }),
            )
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
