//! `knowton-bench-alerts`: how fast a fault on a tenant's pods becomes a
//! webhook notification, end to end: simulated pods on loopback addresses,
//! the real `knowton-agent` probing them every 5 s over mutual-TLS gRPC,
//! the real `knowton-coordinator` evaluating and notifying, and a webhook
//! receiver here timing each arrival.
//!
//! Each round makes some tenants' pods slow (1.5 s: a response-time
//! warning) and others refuse connections (down), and measures, per
//! tenant, the time from the fault to its firing notification; then the
//! pods recover and the resolutions are awaited. The coordinator's own
//! histogram `knowton_alert_notification_latency_seconds` gives the time
//! from the breaching result's arrival to the webhook request.

use std::net::Ipv4Addr;
use std::process::{Child, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use axum::extract::State;
use clap::Parser;
use knowton_bench::coordinator::{self, AgentLaunch, BenchCoordinator, Launch};
use knowton_coordinator::sim::{Behaviour, SimPod};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

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
    /// The agent's probe interval.
    #[arg(long, default_value = "5s", value_parser = knowton_agent::config::parse_duration)]
    interval: Duration,
    /// Tenants faulted per round (half slow, half down).
    #[arg(long, default_value_t = 10)]
    faults_per_round: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

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

#[derive(Debug, Serialize)]
struct Report {
    pods: usize,
    tenants: usize,
    interval_seconds: f64,
    rounds: usize,
    slow_ms: Vec<f64>,
    down_ms: Vec<f64>,
    median_ms: f64,
    p90_ms: f64,
    worst_ms: f64,
    /// From the coordinator's histogram: the bucket bound under which 99%
    /// of arrival-to-webhook latencies fall.
    arrival_to_webhook_p99_bound_seconds: Option<f64>,
    arrival_to_webhook_count: u64,
    /// The engine's part: arrival to the transition's commit.
    arrival_to_commit_p99_bound_seconds: Option<f64>,
    pass: bool,
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
    let result = knowton_bench::runtime(1, "alerts").and_then(|rt| rt.block_on(run(&args)));
    knowton_bench::conclude(result, args.json, |r| print_text(&args, r), |r| r.pass)
}

fn print_text(args: &Args, r: &Report) {
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!("knowton-bench-alerts: breach to webhook, end to end");
    println!(
        "  {} pods of {} tenants probed every {:.0} s by the real agent; {} rounds of {} faulted tenants",
        r.pods, r.tenants, r.interval_seconds, r.rounds, args.faults_per_round
    );
    println!(
        "  fault -> webhook: median {:.0} ms, p90 {:.0} ms, worst {:.0} ms over {} faults",
        r.median_ms,
        r.p90_ms,
        r.worst_ms,
        r.slow_ms.len() + r.down_ms.len()
    );
    let show = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.0} ms, worst {:.0} ms ({} faults)",
            percentile(&v, 0.5),
            v.last().copied().unwrap_or(f64::NAN),
            v.len()
        )
    };
    println!("    slow pods (1.5 s, warning): {}", show(&r.slow_ms));
    println!("    pods down (refused):        {}", show(&r.down_ms));
    println!(
        "  target median < 3000 ms: {}; worst < 6000 ms: {}",
        verdict(r.median_ms < 3000.0),
        verdict(r.worst_ms < 6000.0)
    );
    match r.arrival_to_webhook_p99_bound_seconds {
        Some(bound) => println!(
            "  result arrival -> webhook request (coordinator histogram, {} notifications): p99 <= {:.0} ms; target < 50 ms: {}",
            r.arrival_to_webhook_count,
            bound * 1000.0,
            verdict(bound <= 0.05)
        ),
        None => println!("  result arrival -> webhook request: no samples"),
    }
    if let Some(bound) = r.arrival_to_commit_p99_bound_seconds {
        println!(
            "    of which arrival -> alert committed with its notifications: p99 <= {:.0} ms",
            bound * 1000.0
        );
    }
    println!("  reference: {REFERENCE}");
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.tenants >= 2 && args.pods >= args.tenants && args.faults_per_round >= 2,
        "need at least 2 tenants, a pod per tenant and 2 faults per round"
    );
    anyhow::ensure!(
        args.faults_per_round * args.rounds <= args.tenants,
        "--faults-per-round x --rounds must not exceed --tenants (each fault on a fresh tenant)"
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
    knowton_coordinator::certs::agent(&kt.tls_dir, NODE)?;
    let mut pods: Vec<(usize, SimPod)> = Vec::with_capacity(args.pods);
    let mut yaml = String::new();
    for i in 0..args.pods {
        let ip = Ipv4Addr::new(
            127,
            0,
            u8::try_from(1 + i / 250)?,
            u8::try_from(1 + i % 250)?,
        );
        let pod = SimPod::start(ip, 0);
        // Well within every plan's users.
        pod.update_metrics(|m| m.users = Some(1.0));
        let tenant = i % args.tenants;
        yaml.push_str(&format!(
            "- {{tenant: {}, pod: {}-web-{i:04}, url: '{}'}}\n",
            slugs[tenant],
            slugs[tenant],
            pod.url()
        ));
        pods.push((tenant, pod));
    }
    let targets = kt.dir().join("targets.yaml");
    std::fs::write(&targets, yaml)?;
    let agent_bin = coordinator::sibling_binary("knowton-agent")?;
    let log = kt.dir().join("agent.log");
    let mut agent = AgentLaunch {
        binary: &agent_bin,
        node: NODE,
        targets: &targets,
        interval: args.interval,
        coordinators: format!("https://127.0.0.1:{}", kt.grpc_addr.port()),
        log: &log,
    }
    .spawn(kt)?;
    let result = rounds(args, kt, &slugs, &pods, arrivals, &mut agent).await;
    let _ = agent.kill();
    let _ = agent.wait();
    result
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

async fn rounds(
    args: &Args,
    kt: &BenchCoordinator,
    slugs: &[String],
    pods: &[(usize, SimPod)],
    arrivals: &Arrivals,
    agent: &mut Child,
) -> anyhow::Result<Report> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited: {status}");
        }
        let healthy = healthy_tenants(&scrape(kt).await?);
        if healthy == args.tenants {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {healthy} of {} tenants healthy after 120 s",
                args.tenants
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "all {} tenants healthy; {} rounds of faults",
        args.tenants, args.rounds
    );

    let (mut slow_ms, mut down_ms) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let faulted: Vec<usize> =
            (round * args.faults_per_round..(round + 1) * args.faults_per_round).collect();
        // Faults start at a random point of the probe cycle.
        let offset = rand::random_range(0..args.interval.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(offset)).await;
        let mut started = Vec::new();
        for (n, tenant) in faulted.iter().enumerate() {
            let behaviour = if n % 2 == 0 {
                Behaviour::Slow(Duration::from_millis(1500))
            } else {
                Behaviour::Refuse
            };
            for (_, pod) in pods.iter().filter(|(t, _)| t == tenant) {
                pod.set(behaviour).await;
            }
            started.push((*tenant, n % 2 == 0, Instant::now()));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pending: Vec<(usize, bool, Instant)> = started.clone();
        while !pending.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "round {round}: no notification for {} tenants within 60 s",
                    pending.len()
                );
            }
            let seen = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
            pending.retain(|(tenant, slow, at)| {
                let check = if *slow { "response_time" } else { "api_health" };
                let hit = seen.iter().find(|a| {
                    a.tenant == slugs[*tenant]
                        && a.check == check
                        && a.status == "firing"
                        && a.at >= *at
                });
                match hit {
                    Some(a) => {
                        let ms = (a.at - *at).as_secs_f64() * 1000.0;
                        if *slow {
                            slow_ms.push(ms)
                        } else {
                            down_ms.push(ms)
                        }
                        false
                    }
                    None => true,
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Recover, and wait for every resolution before the next round.
        let recovered_at = Instant::now();
        for tenant in &faulted {
            for (_, pod) in pods.iter().filter(|(t, _)| t == tenant) {
                pod.set(Behaviour::Healthy).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let seen = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let resolved = faulted
                .iter()
                .filter(|t| {
                    seen.iter().any(|a| {
                        a.tenant == slugs[**t] && a.status == "resolved" && a.at >= recovered_at
                    })
                })
                .count();
            if resolved == faulted.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "round {round}: only {resolved} of {} resolved within 90 s",
                    faulted.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "round {}: {} faults notified and resolved",
            round + 1,
            faulted.len()
        );
    }

    let metrics = scrape(kt).await?;
    let (bound, count) = histogram_p99(
        &metrics,
        "knowton_alert_notification_latency_seconds",
        Some("webhook"),
    );
    let (commit_bound, _) = histogram_p99(&metrics, "knowton_alert_commit_latency_seconds", None);
    let mut all: Vec<f64> = slow_ms.iter().chain(&down_ms).copied().collect();
    all.sort_by(f64::total_cmp);
    let (median, p90, worst) = (
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        all.last().copied().unwrap_or(f64::NAN),
    );
    Ok(Report {
        pods: args.pods,
        tenants: args.tenants,
        interval_seconds: args.interval.as_secs_f64(),
        rounds: args.rounds,
        slow_ms,
        down_ms,
        median_ms: median,
        p90_ms: p90,
        worst_ms: worst,
        arrival_to_webhook_p99_bound_seconds: bound,
        arrival_to_webhook_count: count,
        arrival_to_commit_p99_bound_seconds: commit_bound,
        pass: median < 3000.0 && worst < 6000.0 && bound.is_some_and(|b| b <= 0.05),
    })
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
