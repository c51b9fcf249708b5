//! `knowton-bench-agent`: what one real `knowton-agent` process costs while
//! it probes many simulated pods and streams the results to one or more
//! coordinator replicas: CPU seconds per minute and peak resident memory,
//! read from /proc, and the bytes it sends its coordinators, counted by a
//! relay on each stream. `--compare` runs it with one replica and with
//! `--replicas`, in turn, and prints what the extra streams cost:
//!
//! ```sh
//! target/release/knowton-bench-agent --replicas 3 --compare --runs 3 \
//!     --database-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! # Layout
//! - [`pods`]: the simulated pods, their targets file and request counts.
//! - [`relay`]: the counting relays between the agent and the replicas.
//! - [`report`]: a run's figures, and a series of runs side by side.

mod pods;
mod relay;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use knowton_bench::coordinator::{self, AgentLaunch, AgentRow, BenchCoordinator, Launch};
use knowton_bench::mib;
use knowton_bench::system::{self, Meter, Proc};
use serde::Serialize;
use tokio::time::Instant;

use crate::pods::Pods;
use crate::relay::{Relay, Traffic};
use crate::report::{AgentReport, ReplicaFigures, Series};

const NODE: &str = "bench-node";

/// Runs the real agent binary against simulated pods and one or more
/// coordinator replicas and measures the agent process.
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

    /// Unmeasured seconds after every replica received the agent's first batch.
    #[arg(long, env = "KNOWTON_BENCH_WARMUP_SECONDS", default_value_t = 20)]
    warmup_seconds: u64,

    /// Measured seconds (of each run).
    #[arg(long, env = "KNOWTON_BENCH_SECONDS", default_value_t = 120)]
    seconds: u64,

    /// Coordinator replicas, all in the agent's --coordinator. More than
    /// one needs --database-url (a second coordinator on one SQLite file
    /// refuses to start).
    #[arg(long, env = "KNOWTON_BENCH_REPLICAS", default_value_t = 1)]
    replicas: usize,

    /// A PostgreSQL database for the coordinators, used in a scratch schema
    /// of each run that is dropped at its end, e.g.
    /// postgres://postgres@127.0.0.1:5432/test. Without it the one
    /// coordinator runs on SQLite.
    #[arg(
        long,
        env = "KNOWTON_BENCH_DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "in_process"
    )]
    database_url: Option<String>,

    /// Run with one replica and with --replicas in turn, --runs times
    /// each, and print the ratios: what the extra streams cost the agent.
    #[arg(long, env = "KNOWTON_BENCH_COMPARE")]
    compare: bool,

    /// Runs of each configuration (a new agent and new coordinators each
    /// time; the simulated pods stay).
    #[arg(long, env = "KNOWTON_BENCH_RUNS", default_value_t = 1)]
    runs: usize,

    /// The agent binary. Default: knowton-agent beside this one.
    #[arg(long, env = "KNOWTON_BENCH_AGENT_BIN")]
    agent_bin: Option<PathBuf>,

    /// The coordinator binary. Default: knowton-coordinator beside this one.
    #[arg(long, env = "KNOWTON_BENCH_COORDINATOR_BIN")]
    coordinator_bin: Option<PathBuf>,

    /// Run the coordinator in this process instead of as its own.
    #[arg(long, env = "KNOWTON_BENCH_IN_PROCESS")]
    in_process: bool,

    /// Worker threads of this process's runtime (simulated pods, relays,
    /// and an in-process coordinator's load).
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

    /// With --compare: the most --replicas may cost the agent in CPU, as a
    /// multiple of what one replica costs (the median over the pairs of runs).
    #[arg(long, env = "KNOWTON_BENCH_TARGET_CPU_RATIO", default_value_t = 1.5)]
    target_cpu_ratio: f64,

    /// Print JSON instead of text.
    #[arg(long, env = "KNOWTON_BENCH_JSON")]
    json: bool,
}

/// One run in full, or several side by side.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Outcome {
    One(Box<AgentReport>),
    Series(Series),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result =
        knowton_bench::runtime(args.threads, "pods").and_then(|rt| rt.block_on(run(&args)));
    knowton_bench::conclude(
        result,
        args.json,
        |outcome| match outcome {
            Outcome::One(report) => print!("{}", report.to_text()),
            Outcome::Series(series) => print!("{}", series.to_text()),
        },
        |outcome| match outcome {
            Outcome::One(_) => true,
            Outcome::Series(series) => series.pass(),
        },
    )
}

impl Args {
    /// Every bad combination at once.
    fn check(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if self.pods == 0 || self.tenants == 0 || self.seconds == 0 || self.runs == 0 {
            errors.push("--pods, --tenants, --seconds and --runs must be at least 1".to_owned());
        }
        let max = knowton_agent::replicas::MAX_REPLICAS;
        if !(1..=max).contains(&self.replicas) {
            errors.push(format!(
                "--replicas must be 1 to {max} (the agent streams to {max} at most)"
            ));
        }
        if self.replicas > 1 && self.database_url.is_none() {
            errors.push(
                "--replicas above 1 needs --database-url: replicas share a PostgreSQL database"
                    .to_owned(),
            );
        }
        if self.compare && self.replicas < 2 {
            errors.push("--compare needs --replicas 2 or more (compared with 1)".to_owned());
        }
        if let Some(url) = &self.database_url
            && !url.starts_with("postgres")
        {
            errors.push("--database-url must be a postgres:// url (SQLite is the default)".into());
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(())
    }

    /// The replica count of each run, in order: with --compare one and
    /// --replicas in turn, so a disturbance of the machine falls on both.
    fn plan(&self) -> Vec<usize> {
        let each: &[usize] = if self.compare {
            &[1, self.replicas]
        } else {
            &[self.replicas]
        };
        (0..self.runs).flat_map(|_| each.iter().copied()).collect()
    }
}

async fn run(args: &Args) -> anyhow::Result<Outcome> {
    args.check()?;
    let agent_bin = match &args.agent_bin {
        Some(path) => path.clone(),
        None => coordinator::sibling_binary("knowton-agent")?,
    };
    let slugs = coordinator::slugs("bench", args.tenants);
    let pods = Pods::start(args.pods, &slugs)?;
    let plan = args.plan();
    let mut reports = Vec::new();
    for (i, &replicas) in plan.iter().enumerate() {
        eprintln!(
            "run {} of {}: {replicas} coordinator replica(s)",
            i + 1,
            plan.len()
        );
        let report = one_run(args, replicas, &pods, &slugs, &agent_bin).await?;
        eprintln!(
            "run {} of {}: {replicas} replica(s): agent {:.3} CPU-s/min, peak RSS {}, sent {:.1} KiB/min",
            i + 1,
            plan.len(),
            report.agent_cpu_seconds_per_minute,
            mib(report.agent_peak_rss_bytes),
            report.agent_bytes_sent_per_minute / 1024.0
        );
        reports.push(report);
    }
    if reports.len() == 1 {
        let report = reports.pop().expect("one run");
        return Ok(Outcome::One(Box::new(report)));
    }
    Ok(Outcome::Series(Series::new(
        reports,
        args.compare,
        args.target_cpu_ratio,
    )))
}

/// Starts the coordinators, the relays and the agent; measures; stops them.
async fn one_run(
    args: &Args,
    replicas: usize,
    pods: &Pods,
    slugs: &[String],
    agent_bin: &Path,
) -> anyhow::Result<AgentReport> {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let launch = match &args.database_url {
        Some(url) => Launch::Replicas {
            binary: match &args.coordinator_bin {
                Some(binary) => binary.clone(),
                None => coordinator::sibling_binary("knowton-coordinator")?,
            },
            count: replicas,
            database_url: url.clone(),
        },
        None => Launch::choose(args.in_process, cpus, args.coordinator_bin.clone())?,
    };
    let kt = BenchCoordinator::start(&launch).await?;
    let grpc: Vec<String> = kt.grpc_addrs().iter().map(|a| a.to_string()).collect();
    eprintln!(
        "coordinators up: grpc {} (scratch {})",
        grpc.join(", "),
        kt.dir().display()
    );
    let result = bench(args, &kt, pods, slugs, agent_bin).await;
    kt.stop_after(result, 10).await
}

async fn bench(
    args: &Args,
    kt: &BenchCoordinator,
    pods: &Pods,
    slugs: &[String],
    agent_bin: &Path,
) -> anyhow::Result<AgentReport> {
    kt.provision(slugs, 4).await?;
    knowton_coordinator::certs::agent(&kt.tls_dir, NODE)
        .context("failed to issue the agent's certificate")?;
    let targets = kt.dir().join("targets.yaml");
    pods.write_targets(&targets)?;
    let mut relays = Vec::new();
    for addr in kt.grpc_addrs() {
        relays.push(Relay::start(addr).await?);
    }
    let coordinators: Vec<String> = relays
        .iter()
        .map(|r| format!("https://{}", r.addr))
        .collect();
    eprintln!(
        "{} pods on 127.0.1.1 and up, {} tenants; starting {} with --coordinator {}",
        pods.len(),
        slugs.len(),
        agent_bin.display(),
        coordinators.join(",")
    );

    let log = kt.dir().join("agent.log");
    let launch = AgentLaunch {
        binary: agent_bin,
        node: NODE,
        targets: &targets,
        interval: args.interval,
        coordinators: coordinators.join(","),
        log: &log,
    };
    let mut agent = Agent {
        child: launch.spawn(kt)?,
    };
    let result = measure(args, kt, pods, &relays, &mut agent).await;
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
    relays: &[Relay],
    agent: &mut Agent,
) -> anyhow::Result<AgentReport> {
    // The first batch on every replica, then the warm-up.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..kt.replicas() {
        while node(kt, i).await?.is_none_or(|a| a.batches_received == 0) {
            agent.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "no batch from the agent on {} within 60 s",
                    kt.replica_name(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "first batch received on every replica; warming up for {} s, then measuring for {} s",
        args.warmup_seconds, args.seconds
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;

    // The agent first, this process last, the coordinators between.
    let mut procs = vec![agent.proc()];
    if kt.is_separate_process() {
        procs.extend(kt.procs());
    }
    procs.push(Proc::Own);
    let nodes_before = nodes(kt).await?;
    let traffic_before: Vec<Traffic> = relays.iter().map(Relay::traffic).collect();
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
    let traffic: Vec<Traffic> = relays
        .iter()
        .zip(&traffic_before)
        .map(|(relay, before)| relay.traffic().since(*before))
        .collect();
    let served = pods.served().since(served_before);
    let nodes_after = nodes(kt).await?;
    let mut unknown_tenant_results = 0;
    for i in 0..kt.replicas() {
        unknown_tenant_results += kt.agents_of(i).await?.counters.unknown_tenant_results;
    }
    let peak_rss = system::peak_rss_bytes_of(agent.proc());
    let rss = system::rss_bytes_of(agent.proc());

    let minute = 60.0 / spent.seconds;
    let cpu_per_minute = spent.process_cpu_seconds[0] * minute;
    let ticks_per_minute =
        |before: u64, after: u64| system::ticks_to_seconds(after - before) * minute;
    let total = Traffic::total(&traffic);
    let per_replica = (0..kt.replicas())
        .map(|i| ReplicaFigures {
            batches_received: nodes_after[i].batches_received - nodes_before[i].batches_received,
            results_received: nodes_after[i].results_received - nodes_before[i].results_received,
            bytes_sent: traffic[i].to_coordinator,
            bytes_received: traffic[i].from_coordinator,
            connections: relays[i].traffic().connections,
        })
        .collect();
    let coordinators = 1..procs.len() - 1;
    let peak_mib = peak_rss.map_or(f64::INFINITY, |b| b as f64 / 1_048_576.0);
    Ok(AgentReport {
        pods: pods.len(),
        tenants: args.tenants,
        interval_seconds: args.interval.as_secs_f64(),
        warmup_seconds: args.warmup_seconds,
        replicas: kt.replicas(),
        store: if args.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        agent_cpu_seconds_per_minute: cpu_per_minute,
        agent_user_cpu_seconds_per_minute: ticks_per_minute(split_before.0, split_after.0),
        agent_system_cpu_seconds_per_minute: ticks_per_minute(split_before.1, split_after.1),
        agent_cores: spent.cores(0),
        agent_peak_rss_bytes: peak_rss,
        agent_rss_bytes: rss,
        agent_bytes_sent_per_minute: total.to_coordinator as f64 * minute,
        agent_bytes_received_per_minute: total.from_coordinator as f64 * minute,
        per_replica,
        coordinator_cores: (!coordinators.is_empty())
            .then(|| coordinators.map(|i| spent.cores(i)).sum()),
        bench_process_cores: spent.cores(procs.len() - 1),
        expected_rounds: spent.seconds / args.interval.as_secs_f64(),
        served,
        unknown_tenant_results,
        cpu: spent,
        target_cpu_seconds_per_minute: args.target_cpu_seconds_per_minute,
        target_rss_mib: args.target_rss_mib,
        cpu_pass: cpu_per_minute < args.target_cpu_seconds_per_minute,
        rss_pass: peak_mib < args.target_rss_mib,
    })
}

/// The benchmark's node as replica `i` lists it.
async fn node(kt: &BenchCoordinator, i: usize) -> anyhow::Result<Option<AgentRow>> {
    Ok(kt
        .agents_of(i)
        .await?
        .agents
        .into_iter()
        .find(|a| a.node == NODE))
}

/// The benchmark's node on every replica, in order (zeros where absent).
async fn nodes(kt: &BenchCoordinator) -> anyhow::Result<Vec<AgentRow>> {
    let mut all = Vec::new();
    for i in 0..kt.replicas() {
        all.push(node(kt, i).await?.unwrap_or_default());
    }
    Ok(all)
}

/// The agent child process.
#[derive(Debug)]
struct Agent {
    child: Child,
}

impl Agent {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    fn args(line: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("knowton-bench-agent").chain(line.iter().copied()))
            .expect("valid flags")
    }

    #[test]
    fn compare_alternates_one_replica_and_several() {
        let url = "postgres://postgres@127.0.0.1:5432/test";
        let compare = args(&[
            "--replicas",
            "3",
            "--compare",
            "--runs",
            "2",
            "--database-url",
            url,
        ]);
        compare.check().expect("consistent");
        assert_eq!(compare.plan(), [1, 3, 1, 3]);
        assert_eq!(args(&[]).plan(), [1]);
    }

    #[test]
    fn several_replicas_need_postgresql() {
        let err = args(&["--replicas", "3"]).check().unwrap_err().to_string();
        assert!(err.contains("--database-url"), "{err}");
        let err = args(&["--compare"]).check().unwrap_err().to_string();
        assert!(err.contains("--replicas 2 or more"), "{err}");
    }
}
