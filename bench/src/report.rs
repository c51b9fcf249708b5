//! Counts of samples, the per-backend report and how it is printed.

use std::fmt::Write as _;
use std::time::Duration;

use knowton_bench::latency::Latency;
use knowton_bench::open_loop::{Outcome, Sample};
use serde::Serialize;

/// Requests by outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub requests: usize,
    pub ok: usize,
    pub rate_limited: usize,
    pub other_status: usize,
    pub transport_errors: usize,
}

impl Counts {
    pub fn of(samples: &[Sample]) -> Self {
        let mut counts = Counts {
            requests: samples.len(),
            ..Counts::default()
        };
        for sample in samples {
            match sample.outcome {
                Outcome::Ok => counts.ok += 1,
                Outcome::RateLimited => counts.rate_limited += 1,
                Outcome::Status(_) => counts.other_status += 1,
                Outcome::Transport => counts.transport_errors += 1,
            }
        }
        counts
    }

    pub fn errors(&self) -> usize {
        self.requests - self.ok
    }
}

/// Provisioning through the API.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionReport {
    pub concurrency: usize,
    pub counts: Counts,
    pub seconds: f64,
    pub tenants_per_second: f64,
    pub latency: Latency,
}

/// Seeding straight into the store.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub tenants: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub tenants_per_second: f64,
}

/// One read phase.
#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    /// `open` (fixed rate) or `closed` (fixed number of clients).
    pub mode: &'static str,
    /// Open loop: the requested rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rps: Option<u32>,
    /// Closed loop: the number of clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    pub seconds: f64,
    pub counts: Counts,
    /// 200 responses per second over the measured window.
    pub achieved_rps: f64,
    pub latency: Latency,
    /// Open loop: how late requests were sent after they were due (the
    /// load generator's own delay, part of the latency above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag: Option<Latency>,
    /// CPU used during the phase (warm-up included).
    pub cpu: Option<crate::system::CpuUsage>,
}

/// Whether the read target was met.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub target_p99_ms: f64,
    pub target_rps: u32,
    pub pass: bool,
    pub reason: String,
}

impl Verdict {
    pub fn judge(read: &ReadReport, target_p99_ms: f64, target_rps: u32) -> Self {
        let mut misses = Vec::new();
        if read.latency.p99_ms >= target_p99_ms {
            misses.push(format!(
                "p99 {:.2} ms is {:.2} ms over",
                read.latency.p99_ms,
                read.latency.p99_ms - target_p99_ms
            ));
        }
        if read.achieved_rps < 0.99 * f64::from(target_rps) {
            misses.push(format!("achieved only {:.0} req/s", read.achieved_rps));
        }
        if read.counts.errors() > 0 {
            misses.push(format!("{} requests failed", read.counts.errors()));
        }
        Verdict {
            target_p99_ms,
            target_rps,
            pass: misses.is_empty(),
            reason: if misses.is_empty() {
                format!("p99 {:.2} ms", read.latency.p99_ms)
            } else {
                misses.join("; ")
            },
        }
    }
}

/// Everything measured on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    pub backend: &'static str,
    pub provision: ProvisionReport,
    pub seed: SeedReport,
    pub tenants_in_store: usize,
    pub reads: Vec<ReadReport>,
    /// VmHWM of the whole process (coordinator and load generator) during
    /// this backend's run.
    pub peak_rss_bytes: Option<u64>,
    pub verdict: Verdict,
}

impl BackendReport {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let p = &self.provision;
        let _ = writeln!(out, "== {} ==", self.backend);
        if p.counts.requests > 0 {
            let _ = writeln!(
                out,
                "provision   {} tenants via POST /api/v1/tenants, {} clients: {} created, {} errors in {:.2} s\n            = {:.1} tenants/s; latency {}",
                p.counts.requests,
                p.concurrency,
                p.counts.ok,
                p.counts.errors(),
                p.seconds,
                p.tenants_per_second,
                p.latency.line(),
            );
        }
        let s = &self.seed;
        let _ = writeln!(
            out,
            "seed        {} tenants straight into the store, {} tasks: {:.2} s = {:.0} tenants/s",
            s.tenants, s.concurrency, s.seconds, s.tenants_per_second
        );
        for read in &self.reads {
            let mode = match (read.target_rps, read.concurrency) {
                (Some(rps), _) => format!("open loop at {rps} req/s"),
                (_, Some(clients)) => format!("closed loop, {clients} clients"),
                _ => read.mode.to_owned(),
            };
            let c = &read.counts;
            let _ = writeln!(
                out,
                "read        GET /api/v1/tenants/{{id}} as the tenant, {mode}, {:.1} s, {} tenants in store\n            {} requests: {} ok, {} rate-limited (429), {} other status, {} transport errors\n            achieved {:.0} req/s; latency {}",
                read.seconds,
                self.tenants_in_store,
                c.requests,
                c.ok,
                c.rate_limited,
                c.other_status,
                c.transport_errors,
                read.achieved_rps,
                read.latency.line(),
            );
            if let Some(lag) = &read.send_lag {
                let _ = writeln!(
                    out,
                    "            sent after due time (load generator delay): ms p50 {:.2}  p99 {:.2}  max {:.2}",
                    lag.p50_ms, lag.p99_ms, lag.max_ms
                );
            }
            if let Some(cpu) = &read.cpu {
                let _ = writeln!(
                    out,
                    "            CPU busy: {:.2} of {} cores on the machine, {:.2} in this process",
                    cpu.machine_cores, cpu.cpus, cpu.process_cores
                );
            }
        }
        let rss = self.peak_rss_bytes.map_or("unknown".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / 1_048_576.0)
        });
        let _ = writeln!(
            out,
            "peak RSS    {rss} (VmHWM, coordinator and load generator in one process)"
        );
        let v = &self.verdict;
        let _ = writeln!(
            out,
            "target      read p99 < {} ms at {} req/s: {} ({})",
            v.target_p99_ms,
            v.target_rps,
            if v.pass { "PASS" } else { "FAIL" },
            v.reason
        );
        out
    }
}

/// Per second over `window`.
pub fn per_second(n: usize, window: Duration) -> f64 {
    if window.is_zero() {
        0.0
    } else {
        n as f64 / window.as_secs_f64()
    }
}
