//! `knowton-bench-agent`: what one real `knowton-agent` process costs while
//! it probes many simulated pods and streams the results to a coordinator:
//! CPU seconds per minute and peak resident memory, read from /proc.
//!
//! # Layout
//! - [`pods`]: the simulated pods, their targets file and request counts.

mod pods;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use knowton_bench::coordinator::{self, AgentRow, BenchCoordinator, Launch};
use knowton_bench::mib;
use knowton_bench::system::{self, Meter, Proc, Spent};
use serde::Serialize;
use tokio::time::Instant;

use crate::pods::{Pods, Served};

const NODE: &str = "bench-node";
/// Prometheus + blackbox_exporter + Alertmanager probing the same pods.
const REFERENCE: &str = "Prometheus + blackbox_exporter + Alertmanager: 15.2 CPU-s/min, 253 MiB";

/// Runs the real agent binary against simulated pods and a coordinator and
/// measures the agent process.
#[derive(Debug, Parser)]
#[command(name = "knowton-bench-agent", version)]
struct Args {
    /// Simulated pods, each on its own loopback address 127.0.x.y.
    #[arg(long, env = "KNOWTON_BENCH_PODS", default_value_t = 1_000)]
    pods: usize,

    /// Tenants provisioned through the API, over which the pods are spread.
    #[arg(long, env = "KNOWTON_BENCH_TENANTS", default_value_t = 50)]
    tenants: usize,

    /// The agent's --interval.
    #[arg(long, env = "KNOWTON_BENCH_INTERVAL", default_value = "5s", value_parser = knowton_agent::config::parse_duration)]
    interval: Duration,

    /// Unmeasured seconds after the agent's first batch arrived.
    #[arg(long, env = "KNOWTON_BENCH_WARMUP_SECONDS", default_value_t = 20)]
    warmup_seconds: u64,

    /// Measured seconds.
    #[arg(long, env = "KNOWTON_BENCH_SECONDS", default_value_t = 120)]
    seconds: u64,

    /// The agent binary. Default: knowton-agent beside this one.
    #[arg(long, env = "KNOWTON_BENCH_AGENT_BIN")]
    agent_bin: Option<PathBuf>,

    /// The coordinator binary. Default: knowton-coordinator beside this one.
    #[arg(long, env = "KNOWTON_BENCH_COORDINATOR_BIN")]
    coordinator_bin: Option<PathBuf>,

    /// Run the coordinator in this process instead of as its own.
    #[arg(long, env = "KNOWTON_BENCH_IN_PROCESS")]
    in_process: bool,

    /// Worker threads of this process's runtime (simulated pods, and an
    /// in-process coordinator's load).
    #[arg(long, env = "KNOWTON_BENCH_THREADS", default_value_t = 1)]
    threads: usize,

    /// The agent's CPU budget, in CPU seconds per minute.
    #[arg(
        long,
        env = "KNOWTON_BENCH_TARGET_CPU_SECONDS_PER_MINUTE",
        default_value_t = 1.5
    )]
    target_cpu_seconds_per_minute: f64,

    /// The agent's peak RSS budget, in MiB.
    #[arg(long, env = "KNOWTON_BENCH_TARGET_RSS_MIB", default_value_t = 32.0)]
    target_rss_mib: f64,

    /// Print JSON instead of text.
    #[arg(long, env = "KNOWTON_BENCH_JSON")]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result =
        knowton_bench::runtime(args.threads, "pods").and_then(|rt| rt.block_on(run(&args)));
    knowton_bench::conclude(result, args.json, |r| print!("{}", r.to_text()), |_| true)
}

async fn run(args: &Args) -> anyhow::Result<AgentReport> {
    anyhow::ensure!(
        args.pods > 0 && args.tenants > 0 && args.seconds > 0,
        "--pods, --tenants and --seconds must be at least 1"
    );
    let agent_bin = match &args.agent_bin {
        Some(path) => path.clone(),
        None => coordinator::sibling_binary("knowton-agent")?,
    };
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let launch = Launch::choose(args.in_process, cpus, args.coordinator_bin.clone())?;
    let kt = BenchCoordinator::start(&launch).await?;
    eprintln!(
        "coordinator up: http {} grpc {} (scratch {})",
        kt.http_addr,
        kt.grpc_addr,
        kt.dir().display()
    );
    let result = bench(args, &kt, &agent_bin).await;
    kt.stop_after(result, 10).await
}

async fn bench(
    args: &Args,
    kt: &BenchCoordinator,
    agent_bin: &Path,
) -> anyhow::Result<AgentReport> {
    let slugs = coordinator::slugs("bench", args.tenants);
    kt.provision(&slugs, 4).await?;
    knowton_coordinator::certs::agent(&kt.tls_dir, NODE)
        .context("failed to issue the agent's certificate")?;
    let pods = Pods::start(args.pods, &slugs)?;
    let targets = kt.dir().join("targets.yaml");
    pods.write_targets(&targets)?;
    eprintln!(
        "{} pods on 127.0.1.1 and up, {} tenants; starting {}",
        pods.len(),
        slugs.len(),
        agent_bin.display()
    );

    let log = kt.dir().join("agent.log");
    let mut agent = Agent::spawn(agent_bin, args, kt, &targets, &log)?;
    let result = measure(args, kt, &pods, &mut agent).await;
    if result.is_err() {
        eprintln!("agent log (last lines):\n{}", coordinator::tail(&log, 10));
    }
    agent.stop().await?;
    result
}

async fn measure(
    args: &Args,
    kt: &BenchCoordinator,
    pods: &Pods,
    agent: &mut Agent,
) -> anyhow::Result<AgentReport> {
    // The first batch, then the warm-up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node(kt).await?.is_none_or(|a| a.batches_received == 0) {
        agent.check_alive()?;
        if Instant::now() > deadline {
            bail!("no batch from the agent within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "first batch received; warming up for {} s, then measuring for {} s",
        args.warmup_seconds, args.seconds
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;

    let procs = if kt.is_separate_process() {
        vec![agent.proc(), kt.proc(), Proc::Own]
    } else {
        vec![agent.proc(), Proc::Own]
    };
    let before = node(kt).await?.unwrap_or_default();
    let served_before = pods.served();
    let meter = Meter::take(&procs).context("failed to read CPU counters from /proc")?;
    let split_before = system::cpu_ticks_split(agent.proc()).unwrap_or_default();
    let started = Instant::now();
    let mut progress =
        tokio::time::interval_at(started + Duration::from_secs(30), Duration::from_secs(30));
    let end = started + Duration::from_secs(args.seconds);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            now = progress.tick() => {
                agent.check_alive()?;
                if let Some(partial) = Meter::take(&procs) {
                    let spent = meter.until(&partial);
                    eprintln!(
                        "  {:>4.0} s: agent {:.2} CPU-s/min, RSS {}",
                        (now - started).as_secs_f64(),
                        spent.process_cpu_seconds[0] * 60.0 / spent.seconds,
                        mib(system::rss_bytes_of(agent.proc()))
                    );
                }
            }
        }
    }
    let spent = meter.until(&Meter::take(&procs).context("the agent is gone")?);
    let split_after = system::cpu_ticks_split(agent.proc()).unwrap_or_default();
    let served = pods.served().since(served_before);
    let after = node(kt).await?.unwrap_or_default();
    let counters = kt.agents().await?.counters;
    let peak_rss = system::peak_rss_bytes_of(agent.proc());
    let rss = system::rss_bytes_of(agent.proc());

    let cpu_per_minute = spent.process_cpu_seconds[0] * 60.0 / spent.seconds;
    let per_minute =
        |before: u64, after: u64| system::ticks_to_seconds(after - before) * 60.0 / spent.seconds;
    let batches = after.batches_received - before.batches_received;
    let results = after.results_received - before.results_received;
    let rounds = spent.seconds / args.interval.as_secs_f64();
    let peak_mib = peak_rss.map_or(f64::INFINITY, |b| b as f64 / 1_048_576.0);
    Ok(AgentReport {
        pods: pods.len(),
        tenants: args.tenants,
        interval_seconds: args.interval.as_secs_f64(),
        warmup_seconds: args.warmup_seconds,
        agent_cpu_seconds_per_minute: cpu_per_minute,
        agent_user_cpu_seconds_per_minute: per_minute(split_before.0, split_after.0),
        agent_system_cpu_seconds_per_minute: per_minute(split_before.1, split_after.1),
        agent_cores: spent.cores(0),
        agent_peak_rss_bytes: peak_rss,
        agent_rss_bytes: rss,
        coordinator_cores: kt.is_separate_process().then(|| spent.cores(1)),
        bench_process_cores: spent.cores(procs.len() - 1),
        batches_received: batches,
        results_received: results,
        expected_rounds: rounds,
        results_per_batch: results as f64 / batches.max(1) as f64,
        served,
        unknown_tenant_results: counters.unknown_tenant_results,
        cpu: spent,
        target_cpu_seconds_per_minute: args.target_cpu_seconds_per_minute,
        target_rss_mib: args.target_rss_mib,
        cpu_pass: cpu_per_minute < args.target_cpu_seconds_per_minute,
        rss_pass: peak_mib < args.target_rss_mib,
    })
}

/// The benchmark's node as the coordinator lists it.
async fn node(kt: &BenchCoordinator) -> anyhow::Result<Option<AgentRow>> {
    Ok(kt
        .agents()
        .await?
        .agents
        .into_iter()
        .find(|a| a.node == NODE))
}

/// The agent child process.
#[derive(Debug)]
struct Agent {
    child: Child,
}

impl Agent {
    fn spawn(
        binary: &Path,
        args: &Args,
        kt: &BenchCoordinator,
        targets: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = std::process::Command::new(binary)
            .args(["--node-name", NODE])
            .arg("--tls-dir")
            .arg(&kt.tls_dir)
            .arg("--targets")
            .arg(targets)
            .args(["--interval", &format!("{}ms", args.interval.as_millis())])
            .args([
                "--coordinator",
                &format!("https://127.0.0.1:{}", kt.grpc_addr.port()),
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("KNOWTON_BENCH_AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        Ok(Agent { child })
    }

    fn proc(&self) -> Proc {
        Proc::Pid(self.child.id())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("the agent exited: {status}"),
            None => Ok(()),
        }
    }

    /// SIGTERM, then up to 15 s to flush and exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        knowton_bench::system::terminate(&mut self.child, Duration::from_secs(15), "the agent")
            .await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything measured.
#[derive(Debug, Serialize)]
struct AgentReport {
    pods: usize,
    tenants: usize,
    interval_seconds: f64,
    warmup_seconds: u64,
    agent_cpu_seconds_per_minute: f64,
    agent_user_cpu_seconds_per_minute: f64,
    agent_system_cpu_seconds_per_minute: f64,
    agent_cores: f64,
    /// VmHWM over the agent's whole life, warm-up included.
    agent_peak_rss_bytes: Option<u64>,
    agent_rss_bytes: Option<u64>,
    coordinator_cores: Option<f64>,
    /// The simulated pods (and an in-process coordinator).
    bench_process_cores: f64,
    /// Batches and results the coordinator received from the agent.
    batches_received: u64,
    results_received: u64,
    /// Measured seconds / interval.
    expected_rounds: f64,
    results_per_batch: f64,
    /// Requests the pods answered in the window.
    served: Served,
    unknown_tenant_results: u64,
    cpu: Spent,
    target_cpu_seconds_per_minute: f64,
    target_rss_mib: f64,
    cpu_pass: bool,
    rss_pass: bool,
}

impl AgentReport {
    fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
        let rounds = self.expected_rounds.max(f64::EPSILON);
        let _ = writeln!(out, "== one agent probing simulated pods ==");
        let _ = writeln!(
            out,
            "setup        {} pods (127.0.x.y), {} tenants, --interval {} s; {:.1} s measured after {} s warm-up",
            self.pods, self.tenants, self.interval_seconds, self.cpu.seconds, self.warmup_seconds
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
        let coordinator = self
            .coordinator_cores
            .map_or(String::new(), |c| format!("coordinator {:.3}, ", c * 60.0));
        let _ = writeln!(
            out,
            "others       CPU-s/min: {coordinator}simulated pods {:.3}; machine {:.2} of {} cores busy",
            self.bench_process_cores * 60.0,
            self.cpu.machine_cores,
            self.cpu.cpus
        );
        let _ = writeln!(
            out,
            "coordinator  received {} results in {} batches ({:.1} rounds of {} s fit the window; a round of up to 5,000 results is one batch): {:.0} results per batch; unknown-tenant results {}",
            self.results_received,
            self.batches_received,
            self.expected_rounds,
            self.interval_seconds,
            self.results_per_batch,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
