//! `GET /metrics` for Prometheus: per-tenant health (status, checks against
//! thresholds, usage against plan limits, open alerts), agents and ingest,
//! the health engine, notifications by channel and outcome, and the REST
//! API's requests and latencies.
//!
//! Labels are bounded: tenant, plan, check, severity, channel, route, method,
//! code; never a pod, a URL, a request path or any other value a request
//! carries (the method is one of a fixed set, the route the matched
//! template). Per-tenant families are written straight
//! from the engine's latest evaluations (10,000 tenants render in a few
//! milliseconds); the counters and histograms use the `prometheus` crate.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, TextEncoder,
};
use tokio::time::Instant;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::health::TenantHealth;
use crate::ingest::Counters;
use crate::listen::MetricsToken;
use knowton_common::health::{Check, Severity, TransitionKind};
use knowton_common::thresholds::Thresholds;

/// Delivery outcomes of notifications, by channel.
#[derive(Debug, Clone)]
pub struct NotifyMetrics {
    pub outcomes: IntCounterVec,
    /// From enqueue (the commit of what caused it) to delivery.
    pub delay: HistogramVec,
    /// From what caused an alert notification (its breaching result's
    /// arrival) to the first delivery attempt starting.
    pub first_attempt: HistogramVec,
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        NotifyMetrics {
            outcomes: IntCounterVec::new(
                Opts::new(
                    "knowton_notifications_total",
                    "Notification delivery attempts by channel and outcome (delivered, retried, failed).",
                ),
                &["channel", "outcome"],
            )
            .expect("valid metric"),
            delay: HistogramVec::new(
                HistogramOpts::new(
                    "knowton_notification_delivery_delay_seconds",
                    "Time from a notification's enqueue to its delivery.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ]),
                &["channel"],
            )
            .expect("valid metric"),
            first_attempt: HistogramVec::new(
                HistogramOpts::new(
                    "knowton_alert_notification_latency_seconds",
                    "From a breaching result's arrival to its alert notification's first delivery attempt.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0,
                ]),
                &["channel"],
            )
            .expect("valid metric"),
        }
    }
}

/// REST API requests by route and status code, and their latencies; the
/// HTTP listeners' connections.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// Connections open on the HTTP listeners.
    pub connections_open: IntGauge,
    /// Connections the server closed, by reason: `over_limit`,
    /// `header_timeout`, `idle_timeout` ([`crate::listen`]).
    pub connections_closed: IntCounterVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let metrics = HttpMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "knowton_http_requests_total",
                    "REST API requests by route, method and status code.",
                ),
                &["route", "method", "code"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "knowton_http_request_duration_seconds",
                    "REST API request latency by route and method.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["route", "method"],
            )
            .expect("valid metric"),
            connections_open: IntGauge::new(
                "knowton_http_connections_open",
                "Connections open on the HTTP listeners (API and metrics).",
            )
            .expect("valid metric"),
            connections_closed: IntCounterVec::new(
                Opts::new(
                    "knowton_http_connections_closed_total",
                    "Connections the server cut, by reason: over_limit (--http-max-connections), header_timeout, idle_timeout.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        };
        for reason in ["over_limit", "header_timeout", "idle_timeout"] {
            metrics.connections_closed.with_label_values(&[reason]);
        }
        metrics
    }
}

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

/// The method as a label: the standard methods the API could serve, and
/// `other` for any other token a client invents (HTTP lets it send any).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
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

/// A family header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped for the text format.
fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every family in the text exposition format.
pub fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(64 * 1024);
    tenants(state, &mut out);
    ingest(state, &mut out);
    engine(state, &mut out);
    deployments(state, &mut out);
    let mut families = state.notify.metrics().outcomes.collect();
    families.extend(state.notify.metrics().delay.collect());
    families.extend(state.notify.metrics().first_attempt.collect());
    if let Some(engine) = &state.engine {
        families.extend(engine.counters().commit_latency.collect());
    }
    families.extend(state.http_metrics.requests.collect());
    families.extend(state.http_metrics.duration.collect());
    families.extend(state.http_metrics.connections_open.collect());
    families.extend(state.http_metrics.connections_closed.collect());
    // The encoder refuses a family without series (nothing counted yet).
    families.retain(|f| !f.get_metric().is_empty());
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&families, &mut buf).is_ok() {
        out.push_str(&String::from_utf8_lossy(&buf));
    }
    out
}

use prometheus::core::Collector;

fn deployments(state: &AppState, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let deployer = &state.deployer;
    family(
        out,
        "knowton_coordinator_leader",
        "gauge",
        "1 while this replica holds the Lease (deploys, scales, notifies)",
    );
    let _ = writeln!(
        out,
        "knowton_coordinator_leader {}",
        u8::from(deployer.is_leader())
    );
    family(
        out,
        "knowton_cluster_configured",
        "gauge",
        "1 when the coordinator deploys to a Kubernetes cluster",
    );
    let _ = writeln!(
        out,
        "knowton_cluster_configured {}",
        u8::from(deployer.cluster().is_some())
    );
    let c = deployer.counters();
    family(
        out,
        "knowton_deployments_total",
        "counter",
        "Tenant deployments finished, by outcome",
    );
    for (outcome, n) in [
        ("ready", &c.ready),
        ("failed", &c.failed),
        ("skipped", &c.skipped),
    ] {
        let _ = writeln!(
            out,
            "knowton_deployments_total{{outcome=\"{outcome}\"}} {}",
            n.load(Relaxed)
        );
    }
    family(
        out,
        "knowton_drift_checks_total",
        "counter",
        "Checks of a deployed tenant's objects against what was applied",
    );
    let _ = writeln!(
        out,
        "knowton_drift_checks_total {}",
        c.drift_checks.load(Relaxed)
    );
    family(
        out,
        "knowton_drift_repairs_total",
        "counter",
        "Times objects changed or deleted by hand were re-applied",
    );
    let _ = writeln!(
        out,
        "knowton_drift_repairs_total {}",
        c.drift_repairs.load(Relaxed)
    );
    family(
        out,
        "knowton_pruned_objects_total",
        "counter",
        "Objects deleted because a tenant's rendering no longer contains them",
    );
    let _ = writeln!(
        out,
        "knowton_pruned_objects_total {}",
        c.pruned.load(Relaxed)
    );
    family(
        out,
        "knowton_scaling_actions_total",
        "counter",
        "Changes of a tenant backend's minimum replicas, by direction",
    );
    for (direction, n) in [("up", &c.scaled_up), ("down", &c.scaled_down)] {
        let _ = writeln!(
            out,
            "knowton_scaling_actions_total{{direction=\"{direction}\"}} {}",
            n.load(Relaxed)
        );
    }
}

/// Checks measured as a share (of a plan limit, of pods, of requests).
const RATIO_CHECKS: [Check; 6] = [
    Check::Database,
    Check::ApiHealth,
    Check::Storage,
    Check::Users,
    Check::ApiRate,
    Check::ErrorRate,
];

/// The per-tenant families: name, type, help. A tenant's lines of each are
/// rendered once per evaluation ([`tenant_lines`]), so a scrape only
/// concatenates them.
const TENANT_FAMILIES: [(&str, &str, &str); 12] = [
    (
        "knowton_tenant_status",
        "gauge",
        "Tenant status: -1 unknown, 0 healthy, 1 warning, 2 critical, 3 down; the plan label is here only (join on tenant).",
    ),
    (
        "knowton_tenant_pods",
        "gauge",
        "Tenant pods with a fresh result.",
    ),
    (
        "knowton_tenant_pods_up",
        "gauge",
        "Tenant pods whose liveness probe succeeds.",
    ),
    (
        "knowton_tenant_check_state",
        "gauge",
        "Each check's state: -1 unknown, 0 ok, 1 warning, 2 critical.",
    ),
    (
        "knowton_tenant_check_ratio",
        "gauge",
        "Measured value of share checks (0-1): of the plan's limit (storage, users, api_rate), of responses (error_rate), of pods (database, api_health).",
    ),
    (
        "knowton_tenant_check_threshold_ratio",
        "gauge",
        "Thresholds of share checks (0-1) for tenants with their own; the others use knowton_check_threshold_default_ratio.",
    ),
    (
        "knowton_tenant_response_time_seconds",
        "gauge",
        "API response time of the tenant's slowest pod.",
    ),
    (
        "knowton_tenant_users",
        "gauge",
        "Users the tenant's pods report (limit: knowton_plan_users_limit).",
    ),
    (
        "knowton_tenant_storage_used_bytes",
        "gauge",
        "Volume usage of the tenant's fullest pod (limit: knowton_plan_storage_limit_bytes).",
    ),
    (
        "knowton_tenant_api_requests_per_second",
        "gauge",
        "Request rate of the tenant's pods added up (limit: knowton_plan_api_rate_limit_requests_per_second).",
    ),
    (
        "knowton_tenant_open_alerts",
        "gauge",
        "Open alerts by severity.",
    ),
    (
        "knowton_tenant_response_time_threshold_seconds",
        "gauge",
        "Response-time thresholds of tenants with their own; the others use knowton_response_time_threshold_default_seconds.",
    ),
];

/// A tenant's lines of each of [`TENANT_FAMILIES`], in that order.
pub type TenantLines = Vec<String>;

/// Renders a tenant's lines of every per-tenant family.
pub fn tenant_lines(h: &TenantHealth) -> TenantLines {
    let mut f: Vec<String> = vec![String::new(); TENANT_FAMILIES.len()];
    let l = format!("tenant=\"{}\"", esc(&h.tenant.slug));
    let e = &h.evaluation;
    let _ = writeln!(
        f[0],
        "knowton_tenant_status{{{l},plan=\"{}\"}} {}",
        h.tenant.plan.as_str(),
        e.status.rank()
    );
    let _ = writeln!(f[1], "knowton_tenant_pods{{{l}}} {}", e.pods);
    let _ = writeln!(f[2], "knowton_tenant_pods_up{{{l}}} {}", e.pods_up);
    let own = h.thresholds != Thresholds::default();
    for c in &e.checks {
        let check = c.check.as_str();
        let _ = writeln!(
            f[3],
            "knowton_tenant_check_state{{{l},check=\"{check}\"}} {}",
            c.state.rank()
        );
        if RATIO_CHECKS.contains(&c.check) {
            if let Some(v) = c.value {
                let _ = writeln!(
                    f[4],
                    "knowton_tenant_check_ratio{{{l},check=\"{check}\"}} {}",
                    v / 100.0
                );
            }
            if own {
                for (severity, level) in [("warning", c.warning), ("critical", c.critical)] {
                    if let Some(level) = level {
                        let _ = writeln!(
                            f[5],
                            "knowton_tenant_check_threshold_ratio{{{l},check=\"{check}\",severity=\"{severity}\"}} {}",
                            level / 100.0
                        );
                    }
                }
            }
        } else if let (Check::ResponseTime, Some(ms)) = (c.check, c.value) {
            let _ = writeln!(
                f[6],
                "knowton_tenant_response_time_seconds{{{l}}} {}",
                ms / 1000.0
            );
        }
    }
    if let Some(users) = e.users {
        let _ = writeln!(f[7], "knowton_tenant_users{{{l}}} {users}");
    }
    if let Some(bytes) = h.current_minute.as_ref().and_then(|m| m.storage_bytes) {
        let _ = writeln!(f[8], "knowton_tenant_storage_used_bytes{{{l}}} {bytes}");
    }
    if let Some(rpm) = e.requests_per_minute {
        let _ = writeln!(
            f[9],
            "knowton_tenant_api_requests_per_second{{{l}}} {}",
            rpm / 60.0
        );
    }
    if own {
        let t = h.thresholds.response_time_ms;
        for (severity, ms) in [("warning", t.warning), ("critical", t.critical)] {
            let _ = writeln!(
                f[11],
                "knowton_tenant_response_time_threshold_seconds{{{l},severity=\"{severity}\"}} {}",
                ms / 1000.0
            );
        }
    }
    for &severity in Severity::ALL {
        let n = h
            .open_alerts
            .iter()
            .filter(|a| a.severity == severity)
            .count();
        let _ = writeln!(
            f[10],
            "knowton_tenant_open_alerts{{{l},severity=\"{severity}\"}} {n}"
        );
    }
    f
}

fn tenants(state: &AppState, out: &mut String) {
    let Some(engine) = &state.engine else { return };
    let all = engine.tenants();
    let size: usize = all
        .iter()
        .flat_map(|h| h.metrics_lines.iter().map(String::len))
        .sum();
    out.reserve(size + 16 * 1024);
    for (i, (name, kind, help)) in TENANT_FAMILIES.iter().enumerate() {
        family(out, name, kind, help);
        for h in &all {
            if let Some(lines) = h.metrics_lines.get(i) {
                out.push_str(lines);
            }
        }
    }
    defaults_and_plans(out);
}

/// The default thresholds, and each plan's limits.
fn defaults_and_plans(out: &mut String) {
    let t = Thresholds::default();
    family(
        out,
        "knowton_check_threshold_default_ratio",
        "gauge",
        "Default thresholds of share checks (0-1), for tenants without their own.",
    );
    for (check, level) in [
        (Check::Storage, t.storage_percent),
        (Check::Users, t.users_percent),
        (Check::ApiRate, t.api_rate_percent),
        (Check::ErrorRate, t.error_rate_percent),
    ] {
        for (severity, v) in [("warning", level.warning), ("critical", level.critical)] {
            let _ = writeln!(
                out,
                "knowton_check_threshold_default_ratio{{check=\"{}\",severity=\"{severity}\"}} {}",
                check.as_str(),
                v / 100.0
            );
        }
    }
    family(
        out,
        "knowton_response_time_threshold_default_seconds",
        "gauge",
        "Default response-time thresholds, for tenants without their own.",
    );
    for (severity, ms) in [
        ("warning", t.response_time_ms.warning),
        ("critical", t.response_time_ms.critical),
    ] {
        let _ = writeln!(
            out,
            "knowton_response_time_threshold_default_seconds{{severity=\"{severity}\"}} {}",
            ms / 1000.0
        );
    }
    let limits = [
        ("knowton_plan_users_limit", "Users the plan allows."),
        (
            "knowton_plan_storage_limit_bytes",
            "Storage the plan allows.",
        ),
        (
            "knowton_plan_api_rate_limit_requests_per_second",
            "API request rate the plan allows.",
        ),
    ];
    for (i, (name, help)) in limits.iter().enumerate() {
        family(out, name, "gauge", help);
        for plan in knowton_common::Plan::ALL {
            let l = plan.limits();
            let value = match i {
                0 => l.max_users as f64,
                1 => l.storage_bytes as f64,
                _ => f64::from(l.api_requests_per_minute) / 60.0,
            };
            let _ = writeln!(out, "{name}{{plan=\"{}\"}} {value}", plan.as_str());
        }
    }
}

fn ingest(state: &AppState, out: &mut String) {
    let agents = state.ingest.agents();
    family(
        out,
        "knowton_agents_connected",
        "gauge",
        "Node agents with an open stream.",
    );
    let _ = writeln!(
        out,
        "knowton_agents_connected {}",
        agents.iter().filter(|a| a.connected).count()
    );
    family(
        out,
        "knowton_agents_known",
        "gauge",
        "Node agents seen since the coordinator started.",
    );
    let _ = writeln!(out, "knowton_agents_known {}", agents.len());
    let c = &state.ingest.counters;
    family(
        out,
        "knowton_ingest_results_total",
        "counter",
        "Probe results accepted from agents.",
    );
    let _ = writeln!(
        out,
        "knowton_ingest_results_total {}",
        Counters::get(&c.results_accepted)
    );
    family(
        out,
        "knowton_ingest_dropped_results_total",
        "counter",
        "Probe results dropped, by reason.",
    );
    for (reason, n) in c.results_rejected.all() {
        let _ = writeln!(
            out,
            "knowton_ingest_dropped_results_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    family(
        out,
        "knowton_ingest_rejections_total",
        "counter",
        "Agent connections, hellos and streams refused, duplicate batches and sequence gaps.",
    );
    for (what, n) in [
        ("handshake", &c.handshakes_failed),
        ("hello", &c.hellos_rejected),
        ("stream", &c.streams_rejected),
        ("duplicate_batch", &c.duplicate_batches),
        ("sequence_gap", &c.sequence_gaps),
        ("throttled_batch", &c.batches_throttled),
    ] {
        let _ = writeln!(
            out,
            "knowton_ingest_rejections_total{{kind=\"{what}\"}} {}",
            Counters::get(n)
        );
    }
}

fn engine(state: &AppState, out: &mut String) {
    let Some(engine) = &state.engine else { return };
    let c = engine.counters();
    family(
        out,
        "knowton_health_evaluations_total",
        "counter",
        "Tenant health evaluations.",
    );
    let _ = writeln!(
        out,
        "knowton_health_evaluations_total {}",
        c.evaluations.load(Ordering::Relaxed)
    );
    family(
        out,
        "knowton_alert_transitions_total",
        "counter",
        "Alert transitions recorded, by kind.",
    );
    let kinds = TransitionKind::ALL.iter().map(|k| k.as_str());
    let counts = c.transitions.iter().chain([&c.manual_resolves]);
    for (kind, n) in kinds.chain(["manual_resolve"]).zip(counts) {
        let _ = writeln!(
            out,
            "knowton_alert_transitions_total{{kind=\"{kind}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    family(
        out,
        "knowton_health_store_errors_total",
        "counter",
        "Store operations of the health engine that failed (retried).",
    );
    let _ = writeln!(
        out,
        "knowton_health_store_errors_total {}",
        c.store_errors.load(Ordering::Relaxed)
    );
}
