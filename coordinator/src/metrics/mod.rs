//! Prometheus metrics: the registries other modules count into, and the
//! text exposition rendered from them and from the health engine's
//! published tenant snapshots.
//!
//! Labels are bounded: tenant, plan, check, severity, channel, route, method,
//! code; never a pod, a URL, a request path or any other value a request
//! carries (the method is one of a fixed set, the route the matched
//! template). Per-tenant families are rendered from each tenant's published
//! snapshot, once per snapshot ([`TenantLineCache`]), so a scrape of 10,000
//! tenants mostly concatenates; the counters and histograms use the
//! `prometheus` crate.
//!
//! # Layout
//! - `families`: every family, from [`Sources`].
//! - `nodes`: the node figures connected agents report.
//! - `tenants`: the per-tenant families and their cache.
//! - `token`: the bearer token a scrape presents.
//!
//! The HTTP handlers live in [`crate::api::metrics`].

mod families;
mod nodes;
mod tenants;
mod token;

use axum::http::Method;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

pub use crate::notify::NotifyMetrics;
pub use families::{Sources, render};
pub use tenants::{TenantLineCache, TenantLines, tenant_lines};
pub use token::{MIN_TOKEN_LEN, MetricsToken, MetricsTokenError, MetricsTokenSource};

/// REST API requests by route and status code, and their latencies; the
/// HTTP listeners' connections; the tenants' rate limit.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// Connections open on the HTTP listeners.
    pub connections_open: IntGauge,
    /// Connections the server closed, by reason: `over_limit`,
    /// `header_timeout`, `idle_timeout` ([`crate::listen`]).
    pub connections_closed: IntCounterVec,
    /// Leases of tokens from the tenants' shared rate budgets, by
    /// outcome: `granted`, `limited` (none left), `failed` (the database
    /// did not answer) ([`crate::store::RateLimitStore`]).
    pub rate_limit_leases: IntCounterVec,
    /// Requests judged by the replica's own share of a plan's rate
    /// because the shared budget could not be reached.
    pub rate_limit_fallbacks: IntCounter,
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
            rate_limit_leases: IntCounterVec::new(
                Opts::new(
                    "knowton_rate_limit_leases_total",
                    "Leases of tokens from the tenants' rate budgets shared by the replicas (PostgreSQL), by outcome: granted, limited (none left), failed (the database did not answer).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            rate_limit_fallbacks: IntCounter::new(
                "knowton_rate_limit_fallback_requests_total",
                "Requests judged by this replica's own share of the plan's rate (the rate divided by the live replicas) because the shared rate budget could not be reached.",
            )
            .expect("valid metric"),
        };
        for reason in ["over_limit", "header_timeout", "idle_timeout"] {
            metrics.connections_closed.with_label_values(&[reason]);
        }
        for outcome in ["granted", "limited", "failed"] {
            metrics.rate_limit_leases.with_label_values(&[outcome]);
        }
        metrics
    }
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
