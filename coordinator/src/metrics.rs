//! `GET /metrics` for Prometheus: per-tenant health (status, checks against
//! thresholds, usage against plan limits, open alerts), agents and ingest,
//! the health engine, notifications by channel and outcome, and the REST
//! API's requests and latencies.
//!
//! Labels are bounded: tenant, plan, check, severity, channel, route; never
//! a pod, a URL or a request path. Per-tenant families are written straight
//! from the engine's latest evaluations (10,000 tenants render in a few
//! milliseconds); the counters and histograms use the `prometheus` crate.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, TextEncoder};
use tokio::time::Instant;

use crate::api::AppState;
use crate::health::engine::{TRANSITION_KINDS, state_value};
use crate::health::{Check, CheckState, Status};
use crate::ingest::Counters;

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
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["channel"],
            )
            .expect("valid metric"),
        }
    }
}

/// REST API requests by route and status code, and their latencies.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
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
        }
    }
}

/// Counts and times every request by its route template.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.http_metrics;
    m.requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    m.duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The scrape.
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    let body = render(&state);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
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
    let mut families = state.notify.metrics().outcomes.collect();
    families.extend(state.notify.metrics().delay.collect());
    families.extend(state.notify.metrics().first_attempt.collect());
    families.extend(state.http_metrics.requests.collect());
    families.extend(state.http_metrics.duration.collect());
    // The encoder refuses a family without series (nothing counted yet).
    families.retain(|f| !f.get_metric().is_empty());
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&families, &mut buf).is_ok() {
        out.push_str(&String::from_utf8_lossy(&buf));
    }
    out
}

use prometheus::core::Collector;

fn status_code(status: Status) -> i32 {
    match status {
        Status::Unknown => -1,
        Status::Healthy => 0,
        Status::Warning => 1,
        Status::Critical => 2,
        Status::Down => 3,
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

fn tenants(state: &AppState, out: &mut String) {
    let Some(engine) = &state.engine else { return };
    let all = engine.tenants();
    let labels: Vec<(String, &crate::health::TenantHealth)> = all
        .iter()
        .map(|h| {
            (
                format!(
                    "tenant=\"{}\",plan=\"{}\"",
                    esc(&h.tenant.slug),
                    h.tenant.plan.as_str()
                ),
                h.as_ref(),
            )
        })
        .collect();

    family(
        out,
        "knowton_tenant_status",
        "gauge",
        "Tenant status: -1 unknown, 0 healthy, 1 warning, 2 critical, 3 down.",
    );
    for (l, h) in &labels {
        let _ = writeln!(
            out,
            "knowton_tenant_status{{{l}}} {}",
            status_code(h.evaluation.status)
        );
    }
    family(
        out,
        "knowton_tenant_pods",
        "gauge",
        "Tenant pods with a fresh result.",
    );
    for (l, h) in &labels {
        let _ = writeln!(out, "knowton_tenant_pods{{{l}}} {}", h.evaluation.pods);
    }
    family(
        out,
        "knowton_tenant_pods_up",
        "gauge",
        "Tenant pods whose liveness probe succeeds.",
    );
    for (l, h) in &labels {
        let _ = writeln!(
            out,
            "knowton_tenant_pods_up{{{l}}} {}",
            h.evaluation.pods_up
        );
    }
    family(
        out,
        "knowton_tenant_check_state",
        "gauge",
        "Each check's state: -1 unknown, 0 ok, 1 warning, 2 critical.",
    );
    for (l, h) in &labels {
        for c in &h.evaluation.checks {
            let _ = writeln!(
                out,
                "knowton_tenant_check_state{{{l},check=\"{}\"}} {}",
                c.check.as_str(),
                state_value(c.state)
            );
        }
    }
    family(
        out,
        "knowton_tenant_check_ratio",
        "gauge",
        "Measured value of share checks (0-1): of the plan's limit (storage, users, api_rate), of responses (error_rate), of pods (database, api_health).",
    );
    for (l, h) in &labels {
        for c in &h.evaluation.checks {
            if let (true, Some(v)) = (RATIO_CHECKS.contains(&c.check), c.value) {
                let _ = writeln!(
                    out,
                    "knowton_tenant_check_ratio{{{l},check=\"{}\"}} {}",
                    c.check.as_str(),
                    v / 100.0
                );
            }
        }
    }
    family(
        out,
        "knowton_tenant_check_threshold_ratio",
        "gauge",
        "Warning and critical thresholds of share checks (0-1).",
    );
    for (l, h) in &labels {
        for c in &h.evaluation.checks {
            if !RATIO_CHECKS.contains(&c.check) {
                continue;
            }
            for (severity, level) in [("warning", c.warning), ("critical", c.critical)] {
                if let Some(level) = level {
                    let _ = writeln!(
                        out,
                        "knowton_tenant_check_threshold_ratio{{{l},check=\"{}\",severity=\"{severity}\"}} {}",
                        c.check.as_str(),
                        level / 100.0
                    );
                }
            }
        }
    }
    family(
        out,
        "knowton_tenant_response_time_seconds",
        "gauge",
        "API response time of the tenant's slowest pod.",
    );
    for (l, h) in &labels {
        if let Some(v) = response_time(h).and_then(|c| c.value) {
            let _ = writeln!(
                out,
                "knowton_tenant_response_time_seconds{{{l}}} {}",
                v / 1000.0
            );
        }
    }
    family(
        out,
        "knowton_tenant_response_time_threshold_seconds",
        "gauge",
        "Warning and critical thresholds of the response time.",
    );
    for (l, h) in &labels {
        let t = h.thresholds.response_time_ms;
        for (severity, ms) in [("warning", t.warning), ("critical", t.critical)] {
            let _ = writeln!(
                out,
                "knowton_tenant_response_time_threshold_seconds{{{l},severity=\"{severity}\"}} {}",
                ms / 1000.0
            );
        }
    }
    usage(out, &labels);
    family(
        out,
        "knowton_tenant_open_alerts",
        "gauge",
        "Open alerts by severity.",
    );
    for (l, h) in &labels {
        for severity in ["warning", "critical"] {
            let n = h
                .open_alerts
                .iter()
                .filter(|a| a.severity == severity)
                .count();
            let _ = writeln!(
                out,
                "knowton_tenant_open_alerts{{{l},severity=\"{severity}\"}} {n}"
            );
        }
    }
}

fn response_time(h: &crate::health::TenantHealth) -> Option<&crate::health::CheckResult> {
    h.evaluation
        .checks
        .iter()
        .find(|c| c.check == Check::ResponseTime && c.state != CheckState::Unknown)
}

fn usage(out: &mut String, labels: &[(String, &crate::health::TenantHealth)]) {
    family(
        out,
        "knowton_tenant_users",
        "gauge",
        "Users the tenant's pods report.",
    );
    for (l, h) in labels {
        if let Some(users) = h.evaluation.users {
            let _ = writeln!(out, "knowton_tenant_users{{{l}}} {users}");
        }
    }
    family(
        out,
        "knowton_tenant_users_limit",
        "gauge",
        "Users the tenant's plan allows.",
    );
    for (l, h) in labels {
        let _ = writeln!(
            out,
            "knowton_tenant_users_limit{{{l}}} {}",
            h.tenant.plan.limits().max_users
        );
    }
    family(
        out,
        "knowton_tenant_storage_used_bytes",
        "gauge",
        "Volume usage of the tenant's fullest pod.",
    );
    for (l, h) in labels {
        if let Some(bytes) = h.current_minute.as_ref().and_then(|m| m.storage_bytes) {
            let _ = writeln!(out, "knowton_tenant_storage_used_bytes{{{l}}} {bytes}");
        }
    }
    family(
        out,
        "knowton_tenant_storage_limit_bytes",
        "gauge",
        "Storage the tenant's plan allows.",
    );
    for (l, h) in labels {
        let _ = writeln!(
            out,
            "knowton_tenant_storage_limit_bytes{{{l}}} {}",
            h.tenant.plan.limits().storage_bytes
        );
    }
    family(
        out,
        "knowton_tenant_api_requests_per_second",
        "gauge",
        "Request rate of the tenant's pods added up.",
    );
    for (l, h) in labels {
        if let Some(rpm) = h.evaluation.requests_per_minute {
            let _ = writeln!(
                out,
                "knowton_tenant_api_requests_per_second{{{l}}} {}",
                rpm / 60.0
            );
        }
    }
    family(
        out,
        "knowton_tenant_api_rate_limit_requests_per_second",
        "gauge",
        "Request rate the tenant's plan allows.",
    );
    for (l, h) in labels {
        let _ = writeln!(
            out,
            "knowton_tenant_api_rate_limit_requests_per_second{{{l}}} {}",
            f64::from(h.tenant.plan.limits().api_requests_per_minute) / 60.0
        );
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
    for (reason, n) in [
        ("unknown_tenant", &c.unknown_tenant_results),
        ("pods_over_limit", &c.pods_over_limit),
    ] {
        let _ = writeln!(
            out,
            "knowton_ingest_dropped_results_total{{reason=\"{reason}\"}} {}",
            Counters::get(n)
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
    for (kind, n) in TRANSITION_KINDS.iter().zip(&c.transitions) {
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
