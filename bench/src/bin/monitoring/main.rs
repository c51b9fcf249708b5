//! `knowton-bench-monitoring`: the coordinator's read side with many
//! evaluated tenants: how long `GET /metrics` takes with every tenant's
//! series in it, and the latency of `GET /api/v1/monitoring/health` at a
//! fixed request rate, while simulated agents keep every tenant's results
//! fresh.
//!
//! # Layout
//! - [`feed`]: healthy results for every tenant's pods, straight into the
//!   ingest registry.
//! - [`load`]: the scrapes, the open-loop health requests, percentiles.
//! - [`report`]: the figures and their printing.

mod feed;
mod load;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use knowton_bench::harness::{self, Coordinator};
use knowton_bench::latency::Latency;
use knowton_bench::open_loop::{self, Outcome};
use knowton_bench::system;
use knowton_coordinator::health::HealthStatus;
use knowton_coordinator::ingest::RejectedResult;
use tokio::time::Instant;

use crate::feed::Feeder;
use crate::load::HealthTarget;
use crate::report::{HealthReport, MetricsReport, Report};

/// Seeds many tenants, feeds their pods' results to the coordinator's
/// health engine, then times `GET /metrics` and the per-tenant health route.
#[derive(Debug, Parser)]
#[command(name = "knowton-bench-monitoring", version)]
struct Args {
    /// Tenants seeded into the store (and evaluated before measuring).
    #[arg(long, env = "KNOWTON_BENCH_TENANTS", default_value_t = 10_000)]
    tenants: usize,

    /// Simulated pods of each tenant, each with a healthy result.
    #[arg(long, env = "KNOWTON_BENCH_PODS_PER_TENANT", default_value_t = 2)]
    pods_per_tenant: usize,

    /// Results per batch: pods of one simulated node.
    #[arg(long, env = "KNOWTON_BENCH_BATCH_RESULTS", default_value_t = 1_000)]
    batch_results: usize,

    /// Every pod's result is sent again this often (the agents' interval),
    /// so results stay fresh while measuring.
    #[arg(long, env = "KNOWTON_BENCH_FEED_INTERVAL_SECONDS", default_value_t = 5)]
    feed_interval_seconds: u64,

    /// Concurrent tasks seeding the store.
    #[arg(long, env = "KNOWTON_BENCH_SEED_CONCURRENCY", default_value_t = 8)]
    seed_concurrency: usize,

    /// Longest wait for every tenant to be evaluated.
    #[arg(
        long,
        env = "KNOWTON_BENCH_EVALUATE_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    evaluate_timeout_seconds: u64,

    /// Measured `GET /metrics` scrapes, one after another (after 3 unmeasured).
    #[arg(long, env = "KNOWTON_BENCH_SCRAPES", default_value_t = 50)]
    scrapes: usize,

    /// Fixed rate of health requests (requests/s).
    #[arg(long, env = "KNOWTON_BENCH_RATE", default_value_t = 2_000)]
    rate: u32,

    /// Measured seconds of health requests.
    #[arg(long, env = "KNOWTON_BENCH_SECONDS", default_value_t = 30)]
    seconds: u64,

    /// Unmeasured seconds of health requests first.
    #[arg(long, env = "KNOWTON_BENCH_WARMUP_SECONDS", default_value_t = 2)]
    warmup_seconds: u64,

    /// Most health requests in flight (connections); a request due while
    /// all are busy waits, and the wait counts.
    #[arg(long, env = "KNOWTON_BENCH_CONNECTIONS", default_value_t = 64)]
    connections: usize,

    /// Worker threads of the coordinator's runtime. Default: one per CPU.
    #[arg(long, env = "KNOWTON_BENCH_SERVER_THREADS")]
    server_threads: Option<usize>,

    /// Worker threads of the load generator's runtime.
    #[arg(long, env = "KNOWTON_BENCH_CLIENT_THREADS", default_value_t = 1)]
    client_threads: usize,

    /// A PostgreSQL server to use instead of SQLite, in a scratch schema
    /// dropped at the end, e.g. postgres://postgres@127.0.0.1:5432/test
    #[arg(long, env = "KNOWTON_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Where the scratch directory (SQLite database) is created. Default:
    /// the system temporary directory.
    #[arg(long, env = "KNOWTON_BENCH_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// The `GET /metrics` p99 to meet, in milliseconds.
    #[arg(long, env = "KNOWTON_BENCH_TARGET_METRICS_MS", default_value_t = 50.0)]
    target_metrics_ms: f64,

    /// The health p99 to meet at --rate, in milliseconds.
    #[arg(
        long,
        env = "KNOWTON_BENCH_TARGET_HEALTH_P99_MS",
        default_value_t = 5.0
    )]
    target_health_p99_ms: f64,

    /// Print JSON instead of text.
    #[arg(long, env = "KNOWTON_BENCH_JSON")]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = run(&args);
    knowton_bench::conclude(result, args.json, |r| print!("{}", r.to_text()), |_| true)
}

fn run(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.tenants > 0
            && args.pods_per_tenant > 0
            && args.scrapes > 0
            && args.seconds > 0
            && args.feed_interval_seconds > 0,
        "--tenants, --pods-per-tenant, --scrapes, --seconds and --feed-interval-seconds must be at least 1"
    );
    if let Some(url) = &args.database_url
        && !url.starts_with("postgres")
    {
        bail!("--database-url must be a postgres:// url (SQLite is the default)");
    }
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let server_threads = args.server_threads.unwrap_or(cpus).max(1);
    let client_rt = knowton_bench::runtime(args.client_threads, "load")?;

    eprintln!(
        "seeding {} tenants, then starting the coordinator ({server_threads} threads)",
        args.tenants
    );
    let kt = Coordinator::start(harness::Settings {
        name: "knowton-bench-monitoring",
        threads: server_threads,
        postgres_url: args.database_url.as_deref(),
        data_root: args.data_dir.as_deref(),
        seed: Some(harness::Seed {
            tenants: args.tenants,
            concurrency: args.seed_concurrency,
        }),
    })?;
    let result = bench(args, &kt, &client_rt, server_threads, cpus);
    let finished = kt.finish();
    let report = result?;
    finished?;
    Ok(report)
}

fn bench(
    args: &Args,
    kt: &Coordinator,
    client_rt: &tokio::runtime::Runtime,
    server_threads: usize,
    cpus: usize,
) -> anyhow::Result<Report> {
    let state = kt.state().clone();
    let engine = state.engine.clone();
    let slugs: Arc<[String]> = state.service.directory().with(|active| {
        let mut slugs: Vec<String> = active.iter().cloned().collect();
        slugs.sort_unstable();
        slugs.into()
    });
    anyhow::ensure!(
        slugs.len() == args.tenants,
        "the tenant directory holds {} tenants, not {}",
        slugs.len(),
        args.tenants
    );
    let started = Instant::now();
    let feeder = Feeder::start(
        kt.handle(),
        state.clone(),
        &slugs,
        args.pods_per_tenant,
        args.batch_results,
        Duration::from_secs(args.feed_interval_seconds),
    );
    eprintln!(
        "seeded in {:.1} s ({}); feeding {} pods' results as {} nodes every {} s",
        kt.seed_seconds,
        kt.backend(),
        slugs.len() * args.pods_per_tenant,
        feeder.nodes,
        args.feed_interval_seconds
    );
    let deadline = started + Duration::from_secs(args.evaluate_timeout_seconds);
    loop {
        let evaluated = engine.tenants().len();
        if evaluated >= slugs.len() {
            break;
        }
        if Instant::now() > deadline {
            let _ = kt.handle().block_on(feeder.stop());
            bail!(
                "only {evaluated} of {} tenants evaluated within {} s",
                slugs.len(),
                args.evaluate_timeout_seconds
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let evaluate_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "all {} tenants evaluated in {evaluate_seconds:.1} s; scraping /metrics {} times",
        slugs.len(),
        args.scrapes
    );

    let client = open_loop::http_client()?;
    let _ = client_rt.block_on(load::scrape(&client, &kt.base_url, &kt.admin_token, 3));
    let scrapes = client_rt.block_on(load::scrape(
        &client,
        &kt.base_url,
        &kt.admin_token,
        args.scrapes,
    ));
    let render = load::render(&state, args.scrapes);
    let scrape_latency = Latency::of_durations(scrapes.latencies.iter().copied());
    let metrics = MetricsReport {
        scrapes: scrapes.latencies.len(),
        failures: scrapes.failures,
        body_bytes: scrapes.body_bytes,
        tenant_series: scrapes.tenant_series,
        largest_families: scrapes.families.clone(),
        latency: scrape_latency.clone(),
        render: Latency::of_durations(render.into_iter()),
        target_ms: args.target_metrics_ms,
        pass: scrapes.failures == 0
            && scrapes.tenant_series == args.tenants
            && scrape_latency.p99_ms < args.target_metrics_ms,
    };

    let target = HealthTarget::new(client, &kt.base_url, &kt.admin_token, slugs.clone());
    let (body_bytes, sample) = client_rt
        .block_on(target.sample(&slugs[0]))
        .context("failed to read a tenant's health")?;
    let sample_status = sample["status"].as_str().unwrap_or("?").to_owned();
    eprintln!(
        "health of {}: {sample_status}, {body_bytes} bytes; {} req/s for {} s after {} s warm-up",
        slugs[0], args.rate, args.seconds, args.warmup_seconds
    );
    let evaluations_before = engine.counters().evaluations.load(Ordering::Relaxed);
    let cpu = system::CpuSnapshot::take();
    let run = load::open_loop(
        client_rt,
        &target,
        args.rate,
        args.connections,
        Duration::from_secs(args.warmup_seconds),
        Duration::from_secs(args.seconds),
    );
    let cpu = cpu.and_then(system::CpuSnapshot::usage_since);
    let evaluations = engine.counters().evaluations.load(Ordering::Relaxed) - evaluations_before;

    let ok = run.count(|o| o == Outcome::Ok);
    let latency = Latency::of(&run.samples);
    let achieved_rps = ok as f64 / run.window.as_secs_f64().max(f64::EPSILON);
    let errors = run.samples.len() - ok;
    let target_p99 = Duration::from_secs_f64(args.target_health_p99_ms / 1e3);
    let mut worst: Vec<(usize, f64)> = run
        .per_second_max
        .iter()
        .enumerate()
        .map(|(second, max)| (second, max.as_secs_f64() * 1e3))
        .collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    worst.truncate(5);
    let health = HealthReport {
        target_rps: args.rate,
        connections: args.connections,
        seconds: run.window.as_secs_f64(),
        requests: run.samples.len(),
        ok,
        // A 429 (not expected of admin requests) counts as another status.
        other_status: run.count(|o| matches!(o, Outcome::Status(_) | Outcome::RateLimited)),
        transport_errors: run.count(|o| o == Outcome::Transport),
        achieved_rps,
        latency: latency.clone(),
        send_lag: Latency::of_durations(run.send_lags.iter().copied()),
        seconds_over_target: run
            .per_second_max
            .iter()
            .filter(|max| **max >= target_p99)
            .count(),
        worst_seconds: worst,
        body_bytes,
        sample_status,
        engine_evaluations_per_second: evaluations as f64 / run.window.as_secs_f64().max(1.0),
        cpu,
        target_p99_ms: args.target_health_p99_ms,
        pass: errors == 0
            && latency.p99_ms < args.target_health_p99_ms
            && achieved_rps >= 0.99 * f64::from(args.rate),
    };

    let feed = kt.handle().block_on(feeder.stop());
    let healthy = engine
        .tenants()
        .iter()
        .filter(|h| h.evaluation.status == HealthStatus::Healthy)
        .count();
    let c = &state.ingest.counters;
    Ok(Report {
        command: command_line(),
        backend: kt.backend(),
        tenants: args.tenants,
        pods_per_tenant: args.pods_per_tenant,
        feed_interval_seconds: args.feed_interval_seconds,
        server_threads,
        client_threads: args.client_threads.max(1),
        cpus,
        seed_seconds: kt.seed_seconds,
        evaluate_seconds,
        healthy_tenants_at_end: healthy,
        feed,
        unknown_tenant_results: c.results_rejected.get(RejectedResult::UnknownTenant),
        alerts_opened: engine.counters().transitions[0].load(Ordering::Relaxed),
        metrics,
        health,
        peak_rss_bytes: system::peak_rss_bytes(),
    })
}

/// This process's command line, quoted where needed.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
            {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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
