//! What the runs measured, as text and JSON: one run in full, or a series
//! of runs with one and with several coordinator replicas, summed up per
//! replica count and set against each other (what the extra streams cost
//! the agent).

use std::fmt::Write as _;

use knowton_bench::mib;
use knowton_bench::spread::Spread;
use knowton_bench::system::Spent;
use serde::Serialize;

use crate::pods::Served;

/// Prometheus + blackbox_exporter + Alertmanager probing the same pods.
const REFERENCE: &str = "Prometheus + blackbox_exporter + Alertmanager: 15.2 CPU-s/min, 253 MiB";

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct AgentReport {
    pub pods: usize,
    pub tenants: usize,
    pub interval_seconds: f64,
    pub warmup_seconds: u64,
    /// Coordinator replicas the agent streamed to.
    pub replicas: usize,
    /// `sqlite` (one coordinator) or `postgres` (replicas of one schema).
    pub store: &'static str,
    pub agent_cpu_seconds_per_minute: f64,
    pub agent_user_cpu_seconds_per_minute: f64,
    pub agent_system_cpu_seconds_per_minute: f64,
    pub agent_cores: f64,
    /// VmHWM over the agent's whole life, warm-up included.
    pub agent_peak_rss_bytes: Option<u64>,
    pub agent_rss_bytes: Option<u64>,
    /// What the agent sent to all its coordinators in the window, per
    /// minute, counted by a relay on each stream: TLS records as on the
    /// wire (TCP/IP headers excluded; its probes and log not included).
    pub agent_bytes_sent_per_minute: f64,
    /// What the coordinators sent the agent (acknowledgements, heartbeats).
    pub agent_bytes_received_per_minute: f64,
    /// Each replica's part, in order.
    pub per_replica: Vec<ReplicaFigures>,
    /// All coordinator processes together.
    pub coordinator_cores: Option<f64>,
    /// The simulated pods and the relays (and an in-process coordinator).
    pub bench_process_cores: f64,
    /// Measured seconds / interval.
    pub expected_rounds: f64,
    /// Requests the pods answered in the window.
    pub served: Served,
    /// All replicas together.
    pub unknown_tenant_results: u64,
    pub cpu: Spent,
    pub target_cpu_seconds_per_minute: f64,
    pub target_rss_mib: f64,
    pub cpu_pass: bool,
    pub rss_pass: bool,
}

/// One replica's part of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaFigures {
    /// Batches and results this replica received from the agent in the window.
    pub batches_received: u64,
    pub results_received: u64,
    /// Bytes the agent sent this replica in the window.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Connections of the agent to this replica over the agent's life (1:
    /// it never reconnected).
    pub connections: u64,
}

impl AgentReport {
    fn peak_rss_mib(&self) -> f64 {
        self.agent_peak_rss_bytes
            .map_or(f64::NAN, |b| b as f64 / 1_048_576.0)
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
        let rounds = self.expected_rounds.max(f64::EPSILON);
        let _ = writeln!(out, "== one agent probing simulated pods ==");
        let _ = writeln!(
            out,
            "setup        {} pods (127.0.x.y), {} tenants, --interval {} s, {} coordinator replica(s) on {}; {:.1} s measured after {} s warm-up",
            self.pods,
            self.tenants,
            self.interval_seconds,
            self.replicas,
            self.store,
            self.cpu.seconds,
            self.warmup_seconds
        );
        let _ = writeln!(
            out,
            "agent CPU    {:.3} CPU-s/min ({:.4} cores): user {:.3}, system {:.3}",
            self.agent_cpu_seconds_per_minute,
            self.agent_cores,
            self.agent_user_cpu_seconds_per_minute,
            self.agent_system_cpu_seconds_per_minute
        );
        let _ = writeln!(
            out,
            "agent RSS    peak {} (VmHWM, whole run), now {}",
            mib(self.agent_peak_rss_bytes),
            mib(self.agent_rss_bytes)
        );
        let _ = writeln!(
            out,
            "agent sent   {} per minute to the coordinators, {} per minute back (counted by a relay on each stream: TLS records, no TCP/IP headers, no probes)",
            per_minute(self.agent_bytes_sent_per_minute),
            per_minute(self.agent_bytes_received_per_minute)
        );
        let coordinator = self
            .coordinator_cores
            .map_or(String::new(), |c| format!("coordinators {:.3}, ", c * 60.0));
        let _ = writeln!(
            out,
            "others       CPU-s/min: {coordinator}simulated pods and relays {:.3}; machine {:.2} of {} cores busy",
            self.bench_process_cores * 60.0,
            self.cpu.machine_cores,
            self.cpu.cpus
        );
        for (i, r) in self.per_replica.iter().enumerate() {
            let _ = writeln!(
                out,
                "replica r{i}   received {} results in {} batches ({:.1} rounds of {} s fit the window; a round of up to 5,000 results is one batch): {:.0} results per batch; {} sent to it; {} connection(s)",
                r.results_received,
                r.batches_received,
                self.expected_rounds,
                self.interval_seconds,
                r.results_received as f64 / r.batches_received.max(1) as f64,
                mib(Some(r.bytes_sent)),
                r.connections
            );
        }
        let _ = writeln!(
            out,
            "rejected     unknown-tenant results {}",
            self.unknown_tenant_results
        );
        let s = &self.served;
        let _ = writeln!(
            out,
            "pods served  per round: {:.0} /health, {:.0} /api/health, {:.0} /metrics on {:.0} connections",
            s.liveness as f64 / rounds,
            s.api_health as f64 / rounds,
            s.metrics as f64 / rounds,
            s.connections as f64 / rounds
        );
        let _ = writeln!(out, "reference    {REFERENCE}");
        let _ = writeln!(
            out,
            "target       CPU < {} CPU-s/min: {}; peak RSS < {} MiB: {}",
            self.target_cpu_seconds_per_minute,
            verdict(self.cpu_pass),
            self.target_rss_mib,
            verdict(self.rss_pass)
        );
        out
    }

    /// One line for a table of runs.
    fn row(&self, run: usize) -> String {
        let batches: Vec<String> = self
            .per_replica
            .iter()
            .map(|r| r.batches_received.to_string())
            .collect();
        let connections: u64 = self.per_replica.iter().map(|r| r.connections).sum();
        format!(
            "{run:>3} {:>8} {:>9.3} {:>6.3} {:>6.3} {:>9.1} {:>9.1} {:>11} {:>11} {:>13} {:>5}",
            self.replicas,
            self.agent_cpu_seconds_per_minute,
            self.agent_user_cpu_seconds_per_minute,
            self.agent_system_cpu_seconds_per_minute,
            self.peak_rss_mib(),
            self.agent_rss_bytes
                .map_or(f64::NAN, |b| b as f64 / 1_048_576.0),
            per_minute(self.agent_bytes_sent_per_minute),
            per_minute(self.agent_bytes_received_per_minute),
            batches.join("/"),
            connections
        )
    }
}

/// Bytes per minute, in KiB or MiB.
fn per_minute(bytes: f64) -> String {
    if bytes >= 1_048_576.0 {
        format!("{:.2} MiB", bytes / 1_048_576.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

/// The runs with one replica count, summed up.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub replicas: usize,
    pub runs: usize,
    pub agent_cpu_seconds_per_minute: Spread,
    pub agent_peak_rss_mib: Spread,
    pub agent_bytes_sent_per_minute: Spread,
}

/// Several replicas against one: each pair of runs (the k-th with one
/// replica and the k-th with several, run one after the other) gives a
/// ratio.
#[derive(Debug, Serialize)]
pub struct Ratios {
    pub replicas: usize,
    pub pairs: usize,
    pub cpu: Spread,
    pub bytes_sent: Spread,
    pub peak_rss: Spread,
    pub target_cpu: f64,
    pub cpu_pass: bool,
}

/// Several runs, in the order they ran.
#[derive(Debug, Serialize)]
pub struct Series {
    pub runs: Vec<AgentReport>,
    pub summaries: Vec<Summary>,
    /// With `--compare`.
    pub ratios: Option<Ratios>,
}

impl Series {
    /// Sums up `runs`; with `compare`, runs alternate one replica and
    /// `replicas`, and the ratios are taken pair by pair.
    pub fn new(runs: Vec<AgentReport>, compare: bool, target_cpu: f64) -> Series {
        let mut counts: Vec<usize> = runs.iter().map(|r| r.replicas).collect();
        counts.sort_unstable();
        counts.dedup();
        let summaries = counts
            .iter()
            .filter_map(|&replicas| summary(&runs, replicas))
            .collect();
        let ratios = compare.then(|| ratios(&runs, target_cpu)).flatten();
        Series {
            runs,
            summaries,
            ratios,
        }
    }

    pub fn pass(&self) -> bool {
        self.ratios.as_ref().is_none_or(|r| r.cpu_pass)
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let Some(first) = self.runs.first() else {
            return out;
        };
        let _ = writeln!(
            out,
            "== one agent probing simulated pods, {} runs ==",
            self.runs.len()
        );
        let _ = writeln!(
            out,
            "setup        {} pods, {} tenants, --interval {} s, coordinators on {}; {:.0} s measured after {} s warm-up per run",
            first.pods,
            first.tenants,
            first.interval_seconds,
            first.store,
            first.cpu.seconds,
            first.warmup_seconds
        );
        let _ = writeln!(
            out,
            "bytes        sent to the coordinators, counted by a relay on each stream (TLS records; no TCP/IP headers, no probes, no log)"
        );
        let _ = writeln!(
            out,
            "run replicas CPU-s/min   user    sys  peak MiB   now MiB   sent/min   recv/min  batches each conns"
        );
        for (i, run) in self.runs.iter().enumerate() {
            let _ = writeln!(out, "{}", run.row(i + 1));
        }
        for s in &self.summaries {
            let _ = writeln!(
                out,
                "{} replica(s), median (min-max) of {} runs: CPU {} CPU-s/min, peak RSS {} MiB, sent {} KiB/min",
                s.replicas,
                s.runs,
                s.agent_cpu_seconds_per_minute,
                s.agent_peak_rss_mib,
                Spread {
                    median: s.agent_bytes_sent_per_minute.median / 1024.0,
                    min: s.agent_bytes_sent_per_minute.min / 1024.0,
                    max: s.agent_bytes_sent_per_minute.max / 1024.0,
                }
            );
        }
        if let Some(r) = &self.ratios {
            let _ = writeln!(
                out,
                "ratio        {} replicas / 1, median (min-max) of {} pairs: CPU {}, bytes sent {}, peak RSS {}",
                r.replicas, r.pairs, r.cpu, r.bytes_sent, r.peak_rss
            );
            let _ = writeln!(
                out,
                "target       CPU ratio < {}: {}",
                r.target_cpu,
                if r.cpu_pass { "PASS" } else { "FAIL" }
            );
        }
        out
    }
}

fn summary(runs: &[AgentReport], replicas: usize) -> Option<Summary> {
    let these: Vec<&AgentReport> = runs.iter().filter(|r| r.replicas == replicas).collect();
    let figures = |f: fn(&AgentReport) -> f64| these.iter().map(|r| f(r)).collect::<Vec<_>>();
    Some(Summary {
        replicas,
        runs: these.len(),
        agent_cpu_seconds_per_minute: Spread::of(&figures(|r| r.agent_cpu_seconds_per_minute))?,
        agent_peak_rss_mib: Spread::of(&figures(AgentReport::peak_rss_mib))?,
        agent_bytes_sent_per_minute: Spread::of(&figures(|r| r.agent_bytes_sent_per_minute))?,
    })
}

/// The k-th run with several replicas over the k-th with one.
fn ratios(runs: &[AgentReport], target_cpu: f64) -> Option<Ratios> {
    let one: Vec<&AgentReport> = runs.iter().filter(|r| r.replicas == 1).collect();
    let many: Vec<&AgentReport> = runs.iter().filter(|r| r.replicas > 1).collect();
    let replicas = many.first()?.replicas;
    let pairs: Vec<(&AgentReport, &AgentReport)> = one.into_iter().zip(many).collect();
    let ratio = |f: fn(&AgentReport) -> f64| {
        let each: Vec<f64> = pairs.iter().map(|(one, many)| f(many) / f(one)).collect();
        Spread::of(&each)
    };
    let cpu = ratio(|r| r.agent_cpu_seconds_per_minute)?;
    Some(Ratios {
        replicas,
        pairs: pairs.len(),
        cpu_pass: cpu.median < target_cpu,
        cpu,
        bytes_sent: ratio(|r| r.agent_bytes_sent_per_minute)?,
        peak_rss: ratio(AgentReport::peak_rss_mib)?,
        target_cpu,
    })
}
