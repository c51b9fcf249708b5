//! `knowton-bench-alerts`: how fast a fault on a tenant's pods becomes a
//! webhook notification, end to end: simulated pods on loopback addresses,
//! the real `knowton-agent` probing them every 5 s over mutual-TLS gRPC,
//! the real `knowton-coordinator` evaluating and notifying, and a webhook
//! receiver here timing each arrival.
//!
//! Three kinds of fault, each on every pod of a tenant, each started at its
//! own random moment of the probe cycle: slow (1.5 s answers against the
//! 1 s threshold: a response-time warning), error (503 on every
//! endpoint: API health) and crash (the pod's listener closes and its
//! connections are reset: API health). Each round faults a few fresh
//! tenants of each kind and measures, per tenant, the time from the fault
//! to its firing notification; then the pods recover and the resolutions
//! are awaited. Firing notifications for tenants never faulted are counted
//! as false alerts. The coordinator's own histogram
//! `knowton_alert_notification_latency_seconds` gives the time from the
//! breaching result's arrival to the webhook request.
//!
//! The limits (issue 15), fault to webhook with T = 5 s and θ = 1 s: slow
//! median 3.8 s, worst 6.5 s (T/2 + θ and T + θ, plus margin); error median
//! 3.0 s, worst 5.5 s (T/2 and T); crash median 1.0 s, worst 2.0 s (seen
//! between rounds).
//!
//! Memory and CPU (issue 15): once every tenant, provisioned through the
//! API, is healthy and has the first backup of its files (taken at once
//! for a new tenant: a catch-up, not the steady state), and a few probe
//! cycles have passed, the resident memory (`VmRSS` from /proc) of the
//! coordinator process and of the agent processes is sampled every second
//! for a window, and their CPU time over it read; the largest reading of
//! each and of their sum is reported against the 60 MiB target of agent
//! plus coordinator, and their CPU per minute against 3.5 CPU-s (with
//! `--agents` above one, the coordinator's own reading is the figure to
//! watch).

mod pods;

use std::process::{Child, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use axum::extract::State;
use clap::Parser;
use knowton_bench::coordinator::{self, AgentLaunch, BenchCoordinator, Launch};
use knowton_bench::mib;
use knowton_bench::system::{self, Proc, RssParts};
use knowton_coordinator::sim::Behaviour;
use pods::{Command, Pods};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

/// Agent `k` runs as if on node `bench-node-{k}`.
const NODE: &str = "bench-node";
const REFERENCE: &str = "Prometheus + blackbox_exporter + Alertmanager (group_wait 0s, 5 s scrape and evaluation): 5-10 s";

#[derive(Debug, Parser)]
#[command(name = "knowton-bench-alerts", version)]
struct Args {
    /// Simulated pods, each on its own loopback address.
    #[arg(long, env = "KNOWTON_BENCH_PODS", default_value_t = 1_000)]
    pods: usize,
    /// Tenants the pods are spread over.
    #[arg(long, env = "KNOWTON_BENCH_TENANTS", default_value_t = 100)]
    tenants: usize,
    /// Agents the pods are spread over, each as if on a node of its own.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// The agent's probe interval.
    #[arg(long, default_value = "5s", value_parser = knowton_agent::config::parse_duration)]
    interval: Duration,
    /// Tenants faulted per round and kind (slow, error, crash).
    #[arg(long, default_value_t = 5)]
    faults_per_kind: usize,
    /// Rounds of faults: faults_per_kind x rounds of each kind in all.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Healthy pods answer after a random delay up to this (none: at
    /// once), drawn for each request; it must raise no alert.
    #[arg(long, value_parser = knowton_agent::config::parse_duration)]
    jitter: Option<Duration>,
    /// Before the faults, run this long with every pod healthy (a soak:
    /// any firing notification in it is a false alert).
    #[arg(long, value_parser = knowton_agent::config::parse_duration)]
    soak: Option<Duration>,
    /// Once every tenant is healthy, wait this long (probe cycles that
    /// settle memory) before sampling resident memory.
    #[arg(long, default_value = "30s", value_parser = knowton_agent::config::parse_duration)]
    settle: Duration,
    /// Sample the processes' resident memory every second for this long.
    #[arg(long, default_value = "15s", value_parser = knowton_agent::config::parse_duration)]
    rss_window: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Serve as pod host K of --agents for --pods pods (started by the
    /// bench itself; see `pods`).
    #[arg(long, hide = true)]
    pod_host: Option<usize>,
}

/// The memory target of agent plus coordinator (issue 15).
const TARGET_RSS_BYTES: u64 = 60 * 1024 * 1024;
/// Issue 15: agent plus coordinator CPU at steady state.
const TARGET_CPU_SECONDS_PER_MINUTE: f64 = 3.5;

/// One webhook request as it arrived.
#[derive(Debug, Clone)]
struct Arrival {
    at: Instant,
    tenant: String,
    check: String,
    status: String,
}

type Arrivals = Arc<Mutex<Vec<Arrival>>>;

async fn receive(State(arrivals): State<Arrivals>, body: axum::body::Bytes) -> &'static str {
    let at = Instant::now();
    if let Ok(payload) = serde_json::from_slice::<Value>(&body) {
        let labels = &payload["alerts"][0]["labels"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arrival {
                at,
                tenant: text(&labels["tenant"]),
                check: text(&labels["alertname"]),
                status: text(&payload["status"]),
            });
    }
    "ok"
}

/// A fault, the check it breaches, and its targets (median, worst) in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Fault {
    Slow,
    Error,
    Crash,
}

impl Fault {
    const ALL: [Fault; 3] = [Fault::Slow, Fault::Error, Fault::Crash];

    fn check(self) -> &'static str {
        match self {
            Fault::Slow => "response_time",
            Fault::Error | Fault::Crash => "api_health",
        }
    }

    fn targets_ms(self) -> (f64, f64) {
        match self {
            Fault::Slow => (3_800.0, 6_500.0),
            Fault::Error => (3_000.0, 5_500.0),
            Fault::Crash => (1_000.0, 2_000.0),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Fault::Slow => "slow (1.5 s answers, warning)",
            Fault::Error => "error (503 on every endpoint)",
            Fault::Crash => "crash (listener closed, connections reset)",
        }
    }

    fn command(self) -> Command {
        match self {
            Fault::Slow => Command::Set(Behaviour::Slow(Duration::from_millis(1500))),
            Fault::Error => Command::Set(Behaviour::Status(503)),
            Fault::Crash => Command::Crash,
        }
    }
}

/// One kind's fault-to-webhook times.
#[derive(Debug, Serialize)]
struct KindReport {
    fault: Fault,
    ms: Vec<f64>,
    median_ms: f64,
    worst_ms: f64,
    target_median_ms: f64,
    target_worst_ms: f64,
    pass: bool,
}

impl KindReport {
    fn new(fault: Fault, mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let (median, worst) = (percentile(&ms, 0.5), ms.last().copied().unwrap_or(f64::NAN));
        let (target_median, target_worst) = fault.targets_ms();
        KindReport {
            fault,
            median_ms: median,
            worst_ms: worst,
            target_median_ms: target_median,
            target_worst_ms: target_worst,
            pass: median <= target_median && worst <= target_worst,
            ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    pods: usize,
    tenants: usize,
    agents: usize,
    interval_seconds: f64,
    rounds: usize,
    jitter_ms: f64,
    soak_seconds: f64,
    kinds: Vec<KindReport>,
    /// Firing notifications for tenants that were never faulted.
    false_alerts: usize,
    /// From the coordinator's histogram: the bucket bound under which 99%
    /// of arrival-to-webhook latencies fall.
    arrival_to_webhook_p99_bound_seconds: Option<f64>,
    arrival_to_webhook_count: u64,
    /// The engine's part: arrival to the transition's commit.
    arrival_to_commit_p99_bound_seconds: Option<f64>,
    /// Its first part: arrival to the start of the tenant's evaluation
    /// (every result's, not only breaching ones).
    evaluation_delay_p99_bound_seconds: Option<f64>,
    memory: MemoryReport,
    pass: bool,
}

/// The largest resident memory of each process seen in the window, at
/// steady state.
#[derive(Debug, Serialize)]
struct MemoryReport {
    settle_seconds: f64,
    window_seconds: f64,
    coordinator_rss_bytes: u64,
    /// Every agent together.
    agents_rss_bytes: u64,
    /// The largest sum of one reading of every process.
    sum_rss_bytes: u64,
    /// At that reading: the anonymous memory (heap, stacks) and the pages
    /// mapped from the binaries, of the coordinator and of the agents.
    coordinator_at_sum: RssParts,
    agents_at_sum: RssParts,
    target_sum_bytes: u64,
    /// CPU (user and system) used over the window, per minute.
    coordinator_cpu_seconds_per_minute: f64,
    agents_cpu_seconds_per_minute: f64,
    target_cpu_seconds_per_minute: f64,
    pass: bool,
}

/// Samples the coordinator's and the agents' `VmRSS` every second for
/// `window`, and the CPU they use over it.
async fn sample_rss(
    kt: &BenchCoordinator,
    agents: &[Child],
    settle: Duration,
    window: Duration,
) -> anyhow::Result<MemoryReport> {
    let procs: Vec<Proc> = agents.iter().map(|a| Proc::Pid(a.id())).collect();
    let read = |proc: Proc| {
        system::rss_bytes_of(proc)
            .zip(system::rss_parts_of(proc))
            .ok_or_else(|| anyhow::anyhow!("cannot read the resident memory of {proc:?}"))
    };
    let ticks = |proc: Proc| {
        system::cpu_ticks(proc)
            .ok_or_else(|| anyhow::anyhow!("cannot read the CPU time of {proc:?}"))
    };
    let agents_ticks = || procs.iter().map(|&p| ticks(p)).sum::<anyhow::Result<u64>>();
    let (mut coordinator, mut agents_rss, mut sum) = (0u64, 0u64, 0u64);
    let mut at_sum = (RssParts::default(), RssParts::default());
    let started = Instant::now();
    let (coordinator_from, agents_from) = (ticks(kt.proc())?, agents_ticks()?);
    let end = started + window;
    loop {
        let (c, c_parts) = read(kt.proc())?;
        let (mut a, mut a_parts) = (0, RssParts::default());
        for &p in &procs {
            let (rss, parts) = read(p)?;
            (a, a_parts) = (a + rss, a_parts + parts);
        }
        coordinator = coordinator.max(c);
        agents_rss = agents_rss.max(a);
        if c + a > sum {
            (sum, at_sum) = (c + a, (c_parts, a_parts));
        }
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let per_minute = |from: u64, to: u64| system::ticks_to_seconds(to - from) / minutes;
    let coordinator_cpu = per_minute(coordinator_from, ticks(kt.proc())?);
    let agents_cpu = per_minute(agents_from, agents_ticks()?);
    Ok(MemoryReport {
        settle_seconds: settle.as_secs_f64(),
        window_seconds: window.as_secs_f64(),
        coordinator_rss_bytes: coordinator,
        agents_rss_bytes: agents_rss,
        sum_rss_bytes: sum,
        coordinator_at_sum: at_sum.0,
        agents_at_sum: at_sum.1,
        target_sum_bytes: TARGET_RSS_BYTES,
        coordinator_cpu_seconds_per_minute: coordinator_cpu,
        agents_cpu_seconds_per_minute: agents_cpu,
        target_cpu_seconds_per_minute: TARGET_CPU_SECONDS_PER_MINUTE,
        pass: sum <= TARGET_RSS_BYTES
            && coordinator_cpu + agents_cpu <= TARGET_CPU_SECONDS_PER_MINUTE,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(host) = args.pod_host {
        let served = knowton_bench::runtime(1, "pods")
            .and_then(|rt| rt.block_on(pods::serve(host, args.agents, args.pods, healthy(&args))));
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("pod host {host}: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = knowton_bench::runtime(1, "alerts").and_then(|rt| rt.block_on(run(&args)));
    knowton_bench::conclude(result, args.json, |r| print_text(&args, r), |r| r.pass)
}

fn print_text(args: &Args, r: &Report) {
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!("knowton-bench-alerts: breach to webhook, end to end");
    println!(
        "  {} pods of {} tenants probed every {:.0} s by {} real agent(s); {} rounds of {} faulted tenants per kind, each at a random moment of the cycle",
        r.pods, r.tenants, r.interval_seconds, r.agents, r.rounds, args.faults_per_kind
    );
    println!("  fault -> webhook:");
    for k in r.kinds.iter().filter(|k| !k.ms.is_empty()) {
        println!(
            "    {:<44} median {:>5.0} ms, worst {:>5.0} ms ({} faults); target median <= {:.0}, worst <= {:.0}: {}",
            k.fault.describe(),
            k.median_ms,
            k.worst_ms,
            k.ms.len(),
            k.target_median_ms,
            k.target_worst_ms,
            verdict(k.pass)
        );
    }
    if r.jitter_ms > 0.0 || r.soak_seconds > 0.0 {
        println!(
            "  healthy pods answer within {:.0} ms (random per request); soak of {:.0} s before the faults",
            r.jitter_ms, r.soak_seconds
        );
    }
    println!(
        "  false alerts (firing for tenants never faulted): {}: {}",
        r.false_alerts,
        verdict(r.false_alerts == 0)
    );
    match r.arrival_to_webhook_p99_bound_seconds {
        Some(bound) => println!(
            "  result arrival -> webhook request (coordinator histogram, {} notifications): p99 <= {:.0} ms; target <= 40 ms: {}",
            r.arrival_to_webhook_count,
            bound * 1000.0,
            verdict(bound <= 0.04)
        ),
        None => println!("  result arrival -> webhook request: no samples"),
    }
    if let Some(bound) = r.arrival_to_commit_p99_bound_seconds {
        println!(
            "    of which arrival -> alert committed with its notifications: p99 <= {:.0} ms",
            bound * 1000.0
        );
    }
    if let Some(bound) = r.evaluation_delay_p99_bound_seconds {
        println!(
            "    every result: arrival -> its tenant's evaluation started: p99 <= {:.1} ms",
            bound * 1000.0
        );
    }
    let m = &r.memory;
    println!(
        "  steady state (largest VmRSS of {:.0} s sampled each second, after {:.0} s settling):",
        m.window_seconds, m.settle_seconds
    );
    println!(
        "    coordinator {}, {} {}, sum {}; target sum <= {}: {}",
        mib(Some(m.coordinator_rss_bytes)),
        if r.agents == 1 { "agent" } else { "agents" },
        mib(Some(m.agents_rss_bytes)),
        mib(Some(m.sum_rss_bytes)),
        mib(Some(m.target_sum_bytes)),
        verdict(m.sum_rss_bytes <= m.target_sum_bytes)
    );
    let parts = |p: RssParts| {
        format!(
            "{} anonymous (heap, stacks), {} from files (binary)",
            mib(Some(p.anon_bytes)),
            mib(Some(p.file_bytes))
        )
    };
    println!(
        "    at the largest sum: coordinator {}; {} {}",
        parts(m.coordinator_at_sum),
        if r.agents == 1 { "agent" } else { "agents" },
        parts(m.agents_at_sum)
    );
    let cpu = m.coordinator_cpu_seconds_per_minute + m.agents_cpu_seconds_per_minute;
    println!(
        "  CPU over the same window: coordinator {:.2}, {} {:.2}, sum {:.2} CPU-s per minute; target sum <= {:.1}: {}",
        m.coordinator_cpu_seconds_per_minute,
        if r.agents == 1 { "agent" } else { "agents" },
        m.agents_cpu_seconds_per_minute,
        cpu,
        m.target_cpu_seconds_per_minute,
        verdict(cpu <= m.target_cpu_seconds_per_minute)
    );
    println!("  reference: {REFERENCE}");
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.tenants >= 2 && args.pods >= args.tenants && args.faults_per_kind >= 1,
        "need at least 2 tenants, a pod per tenant and a fault per kind"
    );
    anyhow::ensure!(
        (1..=args.pods).contains(&args.agents),
        "need at least one agent and a pod for each"
    );
    anyhow::ensure!(
        3 * args.faults_per_kind * args.rounds < args.tenants,
        "3 x --faults-per-kind x --rounds must be under --tenants (each fault on a fresh tenant, some never faulted)"
    );
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/alertmanager", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let launch = Launch::Process(coordinator::sibling_binary("knowton-coordinator")?);
    let kt = BenchCoordinator::start_with_env(&launch, &[("KNOWTON_NOTIFY_WEBHOOK", hook)]).await?;
    eprintln!(
        "coordinator up: http {} (scratch {})",
        kt.http_addr,
        kt.dir().display()
    );
    let result = bench(args, &kt, &arrivals).await;
    kt.stop_after(result, 10).await
}

async fn bench(args: &Args, kt: &BenchCoordinator, arrivals: &Arrivals) -> anyhow::Result<Report> {
    let slugs = coordinator::slugs("alerts", args.tenants);
    kt.provision(&slugs, 4).await?;
    // A pod host per agent, as a node's pods run beside its agent.
    let pods = Pods::start(args.agents, args.pods, healthy(args), kt.dir()).await?;
    let mut yaml = vec![String::new(); args.agents];
    for (i, url) in pods.urls.iter().enumerate() {
        let tenant = &slugs[i % args.tenants];
        yaml[i % args.agents].push_str(&format!(
            "- {{tenant: {tenant}, pod: {tenant}-web-{i:04}, url: '{url}'}}\n"
        ));
    }
    let agent_bin = coordinator::sibling_binary("knowton-agent")?;
    let mut agents = Vec::with_capacity(args.agents);
    for (k, yaml) in yaml.iter().enumerate() {
        let node = format!("{NODE}-{k}");
        knowton_coordinator::certs::agent(&kt.tls_dir, &node)?;
        let targets = kt.dir().join(format!("targets-{k}.yaml"));
        std::fs::write(&targets, yaml)?;
        let log = kt.dir().join(format!("agent-{k}.log"));
        let spawned = AgentLaunch {
            binary: &agent_bin,
            node: &node,
            targets: &targets,
            interval: args.interval,
            coordinators: format!("https://127.0.0.1:{}", kt.grpc_addr.port()),
            log: &log,
        }
        .spawn(kt);
        match spawned {
            Ok(agent) => agents.push(agent),
            Err(err) => {
                stop_agents(&mut agents);
                return Err(err);
            }
        }
    }
    let result = rounds(args, kt, &slugs, &pods, arrivals, &mut agents).await;
    stop_agents(&mut agents);
    result
}

fn stop_agents(agents: &mut [Child]) {
    for agent in agents {
        let _ = agent.kill();
        let _ = agent.wait();
    }
}

async fn scrape(kt: &BenchCoordinator) -> anyhow::Result<String> {
    Ok(reqwest::Client::new()
        .get(format!("http://{}/metrics", kt.http_addr))
        .bearer_auth(kt.metrics_token())
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// Tenants evaluated healthy, from the coordinator's metrics.
fn healthy_tenants(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("knowton_tenant_status{") && l.ends_with("} 0"))
        .count()
}

/// Scrapes the coordinator's metrics every half second until `count` of
/// them reaches `tenants`; fails after `within`, or once an agent exits.
async fn until_every_tenant(
    kt: &BenchCoordinator,
    agents: &mut [Child],
    tenants: usize,
    what: &str,
    count: fn(&str) -> usize,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        for agent in agents.iter_mut() {
            if let Some(status) = agent.try_wait()? {
                bail!("an agent exited: {status}");
            }
        }
        let counted = count(&scrape(kt).await?);
        if counted >= tenants {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {counted} of {tenants} tenants {what} after {within:?}");
        }
        // The poll's period (a benchmark's wait, bounded by the deadline).
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Tenants whose files have a backup, from the coordinator's metrics.
fn backed_up_tenants(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("knowton_backup_last_success_timestamp_seconds{")
                && l.contains("kind=\"storage\"")
        })
        .count()
}

async fn rounds(
    args: &Args,
    kt: &BenchCoordinator,
    slugs: &[String],
    pods: &Pods,
    arrivals: &Arrivals,
    agents: &mut [Child],
) -> anyhow::Result<Report> {
    until_every_tenant(
        kt,
        agents,
        args.tenants,
        "healthy",
        healthy_tenants,
        Duration::from_secs(120),
    )
    .await?;
    eprintln!(
        "all {} tenants healthy; {} rounds of faults",
        args.tenants, args.rounds
    );
    // A new tenant's files are backed up (and that backup verified) at
    // once, as its schedule's occurrence is missed: a one-off catch-up,
    // not the steady state, which comes once every tenant has one.
    until_every_tenant(
        kt,
        agents,
        args.tenants,
        "with a backup of their files",
        backed_up_tenants,
        Duration::from_secs(1800),
    )
    .await?;
    eprintln!("every tenant's first backup of its files taken");
    if let Some(soak) = args.soak {
        eprintln!("soak: {soak:?} with every pod healthy");
        tokio::time::sleep(soak).await;
    }
    eprintln!(
        "settling {:?}, then sampling resident memory for {:?}",
        args.settle, args.rss_window
    );
    tokio::time::sleep(args.settle).await;
    let memory = sample_rss(kt, agents, args.settle, args.rss_window).await?;

    let per_round = 3 * args.faults_per_kind;
    let mut times: Vec<(Fault, f64)> = Vec::new();
    for round in 0..args.rounds {
        let faulted: Vec<(usize, Fault)> = (0..per_round)
            .map(|n| (round * per_round + n, Fault::ALL[n % 3]))
            .collect();
        // Each fault at a random moment of the probe cycle, in time order.
        let interval_ms = u64::try_from(args.interval.as_millis())?;
        let mut order: Vec<(Duration, usize, Fault)> = faulted
            .iter()
            .map(|&(tenant, fault)| {
                let offset = Duration::from_millis(rand::random_range(0..interval_ms));
                (offset, tenant, fault)
            })
            .collect();
        order.sort_by_key(|(offset, _, _)| *offset);
        let round_start = Instant::now();
        let mut started: Vec<(usize, Fault, Instant)> = Vec::new();
        for (offset, tenant, fault) in order {
            tokio::time::sleep_until(round_start + offset).await;
            let at = Instant::now();
            for i in (tenant..args.pods).step_by(args.tenants) {
                pods.send(i, fault.command()).await?;
            }
            started.push((tenant, fault, at));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pending = started.clone();
        while !pending.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "round {round}: no notification for {} tenants within 60 s",
                    pending.len()
                );
            }
            let seen = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
            pending.retain(|(tenant, fault, at)| {
                let hit = seen.iter().find(|a| {
                    a.tenant == slugs[*tenant]
                        && a.check == fault.check()
                        && a.status == "firing"
                        && a.at >= *at
                });
                match hit {
                    Some(a) => {
                        times.push((*fault, (a.at - *at).as_secs_f64() * 1000.0));
                        false
                    }
                    None => true,
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Recover, and wait for every resolution before the next round.
        let recovered_at = Instant::now();
        for (tenant, _) in &faulted {
            for i in (*tenant..args.pods).step_by(args.tenants) {
                pods.send(i, Command::Set(healthy(args))).await?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let seen = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let unresolved = |tenant: usize| {
                // Every alert that fired for it since the fault is resolved.
                let slug = &slugs[tenant];
                let fired: std::collections::HashSet<&str> = seen
                    .iter()
                    .filter(|a| &a.tenant == slug && a.status == "firing")
                    .map(|a| a.check.as_str())
                    .collect();
                fired.iter().any(|check| {
                    !seen.iter().any(|a| {
                        &a.tenant == slug
                            && a.check == *check
                            && a.status == "resolved"
                            && a.at >= recovered_at
                    })
                })
            };
            let left = faulted.iter().filter(|(t, _)| unresolved(*t)).count();
            if left == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "round {round}: {left} of {} faulted tenants not resolved within 90 s",
                    faulted.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "round {} of {}: {} faults notified and resolved",
            round + 1,
            args.rounds,
            faulted.len()
        );
    }

    let faulted_slugs: std::collections::HashSet<&str> = slugs[..args.rounds * per_round]
        .iter()
        .map(String::as_str)
        .collect();
    let false_alerts = arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|a| a.status == "firing" && !faulted_slugs.contains(a.tenant.as_str()))
        .count();
    let metrics = scrape(kt).await?;
    let (bound, count) = histogram_p99(
        &metrics,
        "knowton_alert_notification_latency_seconds",
        Some("webhook"),
    );
    let (commit_bound, _) = histogram_p99(&metrics, "knowton_alert_commit_latency_seconds", None);
    let (evaluation_bound, _) =
        histogram_p99(&metrics, "knowton_health_evaluation_delay_seconds", None);
    let kinds: Vec<KindReport> = Fault::ALL
        .iter()
        .map(|&fault| {
            let ms = times
                .iter()
                .filter(|(f, _)| *f == fault)
                .map(|(_, ms)| *ms)
                .collect();
            KindReport::new(fault, ms)
        })
        .collect();
    // Without rounds (a memory run) there is no latency to judge.
    let latency_pass =
        args.rounds == 0 || (kinds.iter().all(|k| k.pass) && bound.is_some_and(|b| b <= 0.04));
    let pass = latency_pass && false_alerts == 0 && memory.pass;
    Ok(Report {
        pods: args.pods,
        tenants: args.tenants,
        agents: args.agents,
        interval_seconds: args.interval.as_secs_f64(),
        rounds: args.rounds,
        jitter_ms: args.jitter.unwrap_or_default().as_secs_f64() * 1000.0,
        soak_seconds: args.soak.unwrap_or_default().as_secs_f64(),
        kinds,
        false_alerts,
        arrival_to_webhook_p99_bound_seconds: bound,
        arrival_to_webhook_count: count,
        arrival_to_commit_p99_bound_seconds: commit_bound,
        evaluation_delay_p99_bound_seconds: evaluation_bound,
        memory,
        pass,
    })
}

/// How a pod that is not faulted answers.
fn healthy(args: &Args) -> Behaviour {
    match args.jitter {
        Some(most) => Behaviour::Jitter(most),
        None => Behaviour::Healthy,
    }
}

/// The smallest bucket bound holding 99% of a histogram's observations.
fn histogram_p99(metrics: &str, name: &str, channel: Option<&str>) -> (Option<f64>, u64) {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let prefix = format!("{name}_bucket{{");
    for line in metrics.lines().filter(|l| l.starts_with(&prefix)) {
        if channel.is_some_and(|c| !line.contains(&format!("channel=\"{c}\""))) {
            continue;
        }
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        buckets.push((bound, value.parse().unwrap_or(0)));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0, |b| b.1);
    if total == 0 {
        return (None, 0);
    }
    let want = (total as f64 * 0.99).ceil() as u64;
    (
        buckets.iter().find(|(_, n)| *n >= want).map(|(b, _)| *b),
        total,
    )
}
