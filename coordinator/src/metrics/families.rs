//! Every metric family in the text exposition format, rendered from the
//! coordinator's counters and the engine's published snapshots.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use knowton_common::health::TransitionKind;
use prometheus::core::Collector;
use prometheus::{Encoder, TextEncoder};

use super::HttpMetrics;
use super::tenants::{self, TenantLineCache};
use crate::deploy::Deployer;
use crate::health::Engine;
use crate::ingest::{Counters, Registry};
use crate::notify::NotifyMetrics;

/// What a scrape reads.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The health engine, once running.
    pub engine: Option<&'a Engine>,
    pub ingest: &'a Registry,
    pub deployer: &'a Deployer,
    pub notify: &'a NotifyMetrics,
    pub http: &'a HttpMetrics,
    /// Tenants' backups (`None`: off).
    pub backups: Option<&'a crate::backup::service::BackupService>,
}

/// A family header.
pub(super) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped for the text format.
pub(super) fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every family in the text exposition format.
pub fn render(s: &Sources<'_>, cache: &TenantLineCache) -> String {
    let mut out = String::with_capacity(64 * 1024);
    if let Some(engine) = s.engine {
        tenants::render(&engine.tenants(), cache, &mut out);
    }
    ingest(s, &mut out);
    engine(s, &mut out);
    deployments(s, &mut out);
    backups(s, &mut out);
    let mut families = s.notify.outcomes.collect();
    families.extend(s.notify.delay.collect());
    families.extend(s.notify.first_attempt.collect());
    if let Some(engine) = s.engine {
        families.extend(engine.counters().commit_latency.collect());
        families.extend(engine.counters().evaluation_delay.collect());
    }
    families.extend(s.http.requests.collect());
    families.extend(s.http.duration.collect());
    families.extend(s.http.connections_open.collect());
    families.extend(s.http.connections_closed.collect());
    families.extend(s.http.rate_limit_leases.collect());
    families.extend(s.http.rate_limit_fallbacks.collect());
    // The encoder refuses a family without series (nothing counted yet).
    families.retain(|f| !f.get_metric().is_empty());
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&families, &mut buf).is_ok() {
        out.push_str(&String::from_utf8_lossy(&buf));
    }
    out
}

fn backups(s: &Sources<'_>, out: &mut String) {
    let Some(backups) = s.backups else {
        return;
    };
    family(
        out,
        "knowton_backup_last_success_timestamp_seconds",
        "gauge",
        "When the moment each active tenant's latest successful backup of a kind shows was (Unix seconds)",
    );
    for last in backups.last_successes() {
        let _ = writeln!(
            out,
            "knowton_backup_last_success_timestamp_seconds{{tenant=\"{}\",kind=\"{}\"}} {}",
            esc(&last.slug),
            last.kind,
            last.started_at.timestamp()
        );
    }
    family(
        out,
        "knowton_backup_configuration_pending_versions",
        "gauge",
        "Configuration versions committed and not written to the backup repository yet, all active tenants together",
    );
    let _ = writeln!(
        out,
        "knowton_backup_configuration_pending_versions {}",
        backups.status().config_pending()
    );
}

fn deployments(s: &Sources<'_>, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let deployer = s.deployer;
    let leadership = deployer.leadership();
    let fence = leadership.fence();
    family(
        out,
        "knowton_coordinator_leader",
        "gauge",
        "1 while this replica leads (records alerts, deploys, scales, notifies)",
    );
    let _ = writeln!(
        out,
        "knowton_coordinator_leader {}",
        u8::from(fence.is_some())
    );
    family(
        out,
        "knowton_coordinator_epoch",
        "gauge",
        "The lease's epoch as this replica last read it; it grows at every change of leader",
    );
    let _ = writeln!(out, "knowton_coordinator_epoch {}", leadership.epoch());
    family(
        out,
        "knowton_fenced_writes_total",
        "counter",
        "Leader-only writes the store refused because this replica's term had ended",
    );
    let _ = writeln!(
        out,
        "knowton_fenced_writes_total {}",
        leadership.fenced_writes()
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

fn ingest(s: &Sources<'_>, out: &mut String) {
    let agents = s.ingest.agents();
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
    super::nodes::render(&agents, out);
    let c = &s.ingest.counters;
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

fn engine(s: &Sources<'_>, out: &mut String) {
    let Some(engine) = s.engine else { return };
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
