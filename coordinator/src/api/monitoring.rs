//! Monitoring routes: each tenant's latest raw agent results, and the agents.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use knowton_proto::agent::v1::{Failure, MetricsSample, ProbeOutcome, StorageSample};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Caller, TENANT_SLUG_HEADER};
use super::error::{ApiError, ErrorBody};
use crate::health::engine::OpenAlert;
use crate::health::{CheckResult, HealthStatus};
use crate::ingest::{AgentState, Counters, LatestResult, NodeSample, RejectedResult};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantHealthView {
    pub tenant: String,
    /// healthy, warning, critical, down (no backend pod answers) or
    /// unknown (no agent has reported on it yet).
    pub status: HealthStatus,
    /// When the status was last evaluated (absent: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
    /// When the newest result that evaluation saw arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results_up_to: Option<DateTime<Utc>>,
    /// Each check against its thresholds.
    pub checks: Vec<CheckResult>,
    pub open_alerts: Vec<OpenAlert>,
    /// The latest fresh or stale result of each pod, as reported.
    pub pods: Vec<PodView>,
}

impl TenantHealthView {
    /// The tenant's evaluation (if any) and its pods' latest results.
    pub fn of(state: &AppState, slug: String) -> Self {
        let pods = state
            .ingest
            .latest(&slug)
            .into_iter()
            .map(Into::into)
            .collect();
        let health = state.engine.tenant(&slug);
        match health {
            Some(h) => TenantHealthView {
                tenant: slug,
                status: h.evaluation.status,
                evaluated_at: Some(h.evaluated_at),
                results_up_to: h.results_up_to,
                checks: h.evaluation.checks.clone(),
                open_alerts: h.open_alerts.clone(),
                pods,
            },
            None => TenantHealthView {
                tenant: slug,
                status: HealthStatus::Unknown,
                evaluated_at: None,
                results_up_to: None,
                checks: Vec::new(),
                open_alerts: Vec::new(),
                pods,
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub pod: String,
    pub node: String,
    pub pod_ip: String,
    pub observed_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub liveness: Option<ProbeView>,
    pub api_health: Option<ProbeView>,
    pub metrics: Option<MetricsView>,
    pub storage: Option<StorageView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeView {
    pub ok: bool,
    pub status_code: u32,
    pub latency_ms: f64,
    pub connect_ms: f64,
    pub first_byte_ms: f64,
    /// none, refused, timeout, tls, http_status, bad_body, dns, other
    pub failure: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_ok: Option<bool>,
    /// This outcome confirmed a failed or slow first probe.
    pub confirmed: bool,
    /// No answer yet: the agent's slow verdict, sent when the slow
    /// threshold passed; `latencyMs` is how long it had waited. The answer
    /// (or the timeout) follows in the pod's next result.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Absent values were missing from the scrape, not zero.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsView {
    pub scraped: bool,
    pub failure: &'static str,
    pub requests_total: Option<f64>,
    pub errors_5xx_total: Option<f64>,
    pub users: Option<f64>,
    pub request_rate_per_second: Option<f64>,
    pub error_ratio: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageView {
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentsView {
    pub agents: Vec<AgentView>,
    pub counters: CountersView,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub node: String,
    pub agent_version: String,
    pub protocol_version: u32,
    pub connected: bool,
    pub remote_addr: String,
    pub connected_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub last_sequence: u64,
    /// The first sequence received from this agent session since the coordinator started.
    pub first_sequence: u64,
    pub batches_received: u64,
    pub results_received: u64,
    /// The node's CPU, memory and root disk as the agent last sampled them
    /// (absent: it has sent none since the coordinator started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_metrics: Option<NodeMetricsView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetricsView {
    /// CPU busy across all cores, 0 to 100.
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Of the filesystem mounted at `/` (0 when the agent cannot see it).
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    /// When the batch carrying these figures arrived.
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountersView {
    pub results_accepted: u64,
    pub unknown_tenant_results: u64,
    pub duplicate_batches: u64,
    pub sequence_gaps: u64,
    pub hellos_rejected: u64,
    pub streams_rejected: u64,
    pub handshakes_failed: u64,
    pub batches_throttled: u64,
    pub pods_over_limit: u64,
    /// Results not stored, by reason: unknown_tenant, not_in_tenant_namespace,
    /// wrong_node, pods_not_listed, pods_over_limit (the first and the last
    /// are also above, as unknownTenantResults and podsOverLimit).
    pub rejected_results: BTreeMap<&'static str, u64>,
}

fn failure_name(code: i32) -> &'static str {
    Failure::label_of(code)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl From<ProbeOutcome> for ProbeView {
    fn from(p: ProbeOutcome) -> Self {
        ProbeView {
            ok: p.ok,
            status_code: p.status_code,
            latency_ms: ms(p.latency_us),
            connect_ms: ms(p.connect_us),
            first_byte_ms: ms(p.first_byte_us),
            failure: failure_name(p.failure),
            detail: p.detail,
            database_ok: p.database_ok,
            confirmed: p.confirmed,
            pending: p.pending,
        }
    }
}

impl From<MetricsSample> for MetricsView {
    fn from(m: MetricsSample) -> Self {
        MetricsView {
            scraped: m.scraped,
            failure: failure_name(m.failure),
            requests_total: m.requests_total,
            errors_5xx_total: m.errors_5xx_total,
            users: m.users,
            request_rate_per_second: m.request_rate_per_second,
            error_ratio: m.error_ratio,
        }
    }
}

impl From<StorageSample> for StorageView {
    fn from(s: StorageSample) -> Self {
        StorageView {
            used_bytes: s.used_bytes,
            capacity_bytes: s.capacity_bytes,
        }
    }
}

impl From<(String, LatestResult)> for PodView {
    fn from((pod, latest): (String, LatestResult)) -> Self {
        let r = latest.result;
        PodView {
            pod,
            node: latest.node,
            pod_ip: r.pod_ip,
            observed_at: DateTime::from_timestamp_millis(r.observed_at_unix_ms),
            received_at: latest.received_at,
            liveness: r.liveness.map(Into::into),
            api_health: r.api_health.map(Into::into),
            metrics: r.metrics.map(Into::into),
            storage: r.storage.map(Into::into),
        }
    }
}

impl From<NodeSample> for NodeMetricsView {
    fn from(n: NodeSample) -> Self {
        let m = n.metrics;
        NodeMetricsView {
            cpu_percent: m.cpu_percent,
            memory_used_bytes: m.memory_used_bytes,
            memory_total_bytes: m.memory_total_bytes,
            disk_used_bytes: m.disk_used_bytes,
            disk_total_bytes: m.disk_total_bytes,
            received_at: n.received_at,
        }
    }
}

impl From<AgentState> for AgentView {
    fn from(a: AgentState) -> Self {
        AgentView {
            node: a.node,
            agent_version: a.agent_version,
            protocol_version: a.protocol_version,
            connected: a.connected,
            remote_addr: a.remote.to_string(),
            connected_at: a.connected_at,
            last_seen_at: a.last_seen,
            last_sequence: a.acked_sequence,
            first_sequence: a.first_sequence,
            batches_received: a.batches_received,
            results_received: a.results_received,
            node_metrics: a.node_metrics.map(Into::into),
        }
    }
}

/// The tenant's status, each check against its thresholds, its open
/// alerts, and the latest raw result of each pod as the agents reported it.
/// The tenant is named by `X-Tenant-Slug` (which a tenant key must match).
#[utoipa::path(get, path = "/api/v1/monitoring/health", tag = "monitoring",
    params(("X-Tenant-Slug" = String, Header, description = "The tenant's slug")),
    responses((status = 200, body = TenantHealthView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn health(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<TenantHealthView>, ApiError> {
    let slug = headers
        .get(TENANT_SLUG_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_tenant_slug",
                "X-Tenant-Slug: this route needs the tenant's slug",
            )
            .field("X-Tenant-Slug")
        })?
        .to_owned();
    // The operator's reads are served from memory alone (the live
    // directory), so a replica cut off from the database still answers.
    if !caller.is_admin() {
        caller.tenant_id(&state, &slug).await?;
    }
    if !state.service.directory().contains(&slug) {
        return Err(ApiError::not_found(&slug));
    }
    Ok(Json(TenantHealthView::of(&state, slug)))
}

/// Node agents: connected or last seen, and what they sent.
#[utoipa::path(get, path = "/api/v1/agents", tag = "monitoring",
    responses((status = 200, body = AgentsView)), security(("bearer" = [])))]
pub async fn agents(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<AgentsView>, ApiError> {
    caller.require_admin()?;
    let c = &state.ingest.counters;
    Ok(Json(AgentsView {
        agents: state.ingest.agents().into_iter().map(Into::into).collect(),
        counters: CountersView {
            results_accepted: Counters::get(&c.results_accepted),
            unknown_tenant_results: c.results_rejected.get(RejectedResult::UnknownTenant),
            duplicate_batches: Counters::get(&c.duplicate_batches),
            sequence_gaps: Counters::get(&c.sequence_gaps),
            hellos_rejected: Counters::get(&c.hellos_rejected),
            streams_rejected: Counters::get(&c.streams_rejected),
            handshakes_failed: Counters::get(&c.handshakes_failed),
            batches_throttled: Counters::get(&c.batches_throttled),
            pods_over_limit: c.results_rejected.get(RejectedResult::PodsOverLimit),
            rejected_results: c
                .results_rejected
                .all()
                .map(|(reason, n)| (reason.as_str(), n))
                .collect(),
        },
    }))
}
