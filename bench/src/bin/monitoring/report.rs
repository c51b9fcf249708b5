//! What was measured, and how it is printed.

use std::fmt::Write as _;

use knowton_bench::latency::Latency;
use knowton_bench::mib;
use knowton_bench::system::CpuUsage;
use serde::Serialize;

use crate::feed::FeedTotals;
use crate::load::Family;

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub backend: &'static str,
    pub tenants: usize,
    pub pods_per_tenant: usize,
    pub feed_interval_seconds: u64,
    pub server_threads: usize,
    pub client_threads: usize,
    pub cpus: usize,
    pub seed_seconds: f64,
    /// From the first batch to every tenant evaluated.
    pub evaluate_seconds: f64,
    pub healthy_tenants_at_end: usize,
    pub feed: FeedTotals,
    pub unknown_tenant_results: u64,
    pub alerts_opened: u64,
    pub metrics: MetricsReport,
    pub health: HealthReport,
    /// VmHWM of the whole process (coordinator and load generator).
    pub peak_rss_bytes: Option<u64>,
}

/// `GET /metrics`.
#[derive(Debug, Serialize)]
pub struct MetricsReport {
    pub scrapes: usize,
    pub failures: usize,
    pub body_bytes: usize,
    /// `knowton_tenant_status` series in the body: one per evaluated tenant.
    pub tenant_series: usize,
    pub largest_families: Vec<Family>,
    /// Client side: request sent to whole body read.
    pub latency: Latency,
    /// `metrics::render` called in-process: the server's share.
    pub render: Latency,
    pub target_ms: f64,
    pub pass: bool,
}

/// `GET /api/v1/monitoring/health`, open loop.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub target_rps: u32,
    pub connections: usize,
    pub seconds: f64,
    pub requests: usize,
    pub ok: usize,
    pub other_status: usize,
    pub transport_errors: usize,
    /// 200 responses per second over the measured window.
    pub achieved_rps: f64,
    pub latency: Latency,
    /// How late requests were sent after they were due (the load
    /// generator's own delay, part of the latency).
    pub send_lag: Latency,
    /// Measured seconds in which some request took the target p99 or longer.
    pub seconds_over_target: usize,
    /// `(second, its slowest request in ms)`, the slowest first.
    pub worst_seconds: Vec<(usize, f64)>,
    pub body_bytes: usize,
    pub sample_status: String,
    pub engine_evaluations_per_second: f64,
    pub cpu: Option<CpuUsage>,
    pub target_p99_ms: f64,
    pub pass: bool,
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
        let (m, h) = (&self.metrics, &self.health);
        let _ = writeln!(out, "== monitoring reads with many evaluated tenants ==");
        let _ = writeln!(out, "command      {}", self.command);
        let _ = writeln!(
            out,
            "setup        {} tenants ({}, seeded in {:.1} s), {} pods each; coordinator in-process, {} threads; load generator {} thread(s); {} CPUs",
            self.tenants,
            self.backend,
            self.seed_seconds,
            self.pods_per_tenant,
            self.server_threads,
            self.client_threads,
            self.cpus
        );
        let f = &self.feed;
        let _ = writeln!(
            out,
            "feed         every pod's result every {} s: {} results in {} batches sent, {} accepted, {} for unknown tenants; all tenants evaluated {:.1} s after the first batch; {} healthy at the end, {} alerts opened",
            self.feed_interval_seconds,
            f.results,
            f.batches,
            f.accepted,
            self.unknown_tenant_results,
            self.evaluate_seconds,
            self.healthy_tenants_at_end,
            self.alerts_opened
        );
        let _ = writeln!(
            out,
            "metrics      GET /metrics x{} ({} failed): {:.2} MiB body, {} tenant status series\n             latency {}\n             render in-process {}",
            m.scrapes,
            m.failures,
            m.body_bytes as f64 / 1_048_576.0,
            m.tenant_series,
            m.latency.line(),
            m.render.line()
        );
        let families: Vec<String> = m
            .largest_families
            .iter()
            .map(|f| {
                format!(
                    "{} {:.1} MiB ({} series)",
                    f.name,
                    f.bytes as f64 / 1_048_576.0,
                    f.series
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "             {:.0} bytes per tenant; largest: {}",
            m.body_bytes as f64 / self.tenants as f64,
            families.join(", ")
        );
        let _ = writeln!(
            out,
            "health       GET /api/v1/monitoring/health (admin token, X-Tenant-Slug random of {}), open loop at {} req/s, {} connections, {:.1} s\n             {} requests: {} ok, {} other status, {} transport errors; body {} bytes ({})\n             achieved {:.0} req/s; latency {}\n             sent after due time (load generator delay): ms p50 {:.2}  p99 {:.2}  max {:.2}",
            self.tenants,
            h.target_rps,
            h.connections,
            h.seconds,
            h.requests,
            h.ok,
            h.other_status,
            h.transport_errors,
            h.body_bytes,
            h.sample_status,
            h.achieved_rps,
            h.latency.line(),
            h.send_lag.p50_ms,
            h.send_lag.p99_ms,
            h.send_lag.max_ms
        );
        let worst: Vec<String> = h
            .worst_seconds
            .iter()
            .map(|(second, ms)| format!("+{second} s {ms:.1} ms"))
            .collect();
        let _ = writeln!(
            out,
            "             seconds with a request >= {} ms: {} of {}; slowest seconds: {}",
            h.target_p99_ms,
            h.seconds_over_target,
            h.seconds.round(),
            worst.join(", ")
        );
        if let Some(cpu) = &h.cpu {
            let _ = writeln!(
                out,
                "             CPU busy: {:.2} of {} cores on the machine, {:.2} in this process; engine {:.0} evaluations/s meanwhile",
                cpu.machine_cores, cpu.cpus, cpu.process_cores, h.engine_evaluations_per_second
            );
        }
        let _ = writeln!(
            out,
            "peak RSS     {} (VmHWM, coordinator and load generator in one process)",
            mib(self.peak_rss_bytes)
        );
        let _ = writeln!(
            out,
            "target       GET /metrics p99 < {} ms with {} tenants: {} (p99 {:.2} ms{})",
            m.target_ms,
            self.tenants,
            verdict(m.pass),
            m.latency.p99_ms,
            if m.tenant_series == self.tenants {
                String::new()
            } else {
                format!("; only {} tenants in the body", m.tenant_series)
            }
        );
        let _ = writeln!(
            out,
            "target       health p99 < {} ms at {} req/s: {} (p99 {:.2} ms, {:.0} req/s, {} errors)",
            h.target_p99_ms,
            h.target_rps,
            verdict(h.pass),
            h.latency.p99_ms,
            h.achieved_rps,
            h.requests - h.ok
        );
        out
    }
}
