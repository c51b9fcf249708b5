//! What sharing the tenants' rate budgets among replicas costs on
//! PostgreSQL: store queries per request, one lease's round trip, and the
//! time a rate limit check takes with the budgets shared by three
//! replicas against held in memory (as on SQLite), several runs each.
//!
//! Plan by plan, every tenant sends its plan's rate and 10% more, spread
//! over the replicas in turn by concurrent tasks, so that allowed and
//! refused requests both count and requests of one tenant meet on a
//! replica while a lease is in flight. Each run starts from full budgets.
//!
//! `cargo run --release -p knowton-bench --bin knowton-bench-ratelimit -- --database-url postgres://postgres@127.0.0.1:5432/test --runs 3`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use clap::Parser;
use knowton_bench::latency::Latency;
use knowton_bench::postgres::Schema;
use knowton_bench::seed;
use knowton_common::Plan;
use knowton_coordinator::api::ratelimit::{Decision, TenantRateLimiter};
use knowton_coordinator::metrics::HttpMetrics;
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::store::{Backend, Store};
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// The PostgreSQL server (a scratch schema is made and dropped).
    #[arg(long, env = "KNOWTON_BENCH_DATABASE_URL")]
    database_url: String,
    /// Tenants of each plan.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Replicas sharing the budgets.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Tasks sending checks at once.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// Runs per mode (modes alternate).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let schema = Schema::create(&args.database_url, "knowton_bench_rl").await?;
    let result = bench(&args, &schema.url).await;
    schema.drop().await;
    result
}

async fn bench(args: &Args, url: &str) -> anyhow::Result<()> {
    let store = Backend::from_url(url)?
        .open()
        .await
        .context("failed to open the store")?;
    let (seeded, _) = seed::seed(
        &tokio::runtime::Handle::current(),
        store.clone(),
        SecretBox::from_key(&[7; 32]),
        args.tenants * Plan::ALL.len(),
        4,
    )
    .await?;
    let tenants: Vec<(Uuid, Plan)> = seeded
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id, Plan::ALL[i % Plan::ALL.len()]))
        .collect();

    // One lease alone: the statement's round trip.
    let mut round_trips = Vec::new();
    for _ in 0..1_000 {
        let started = Instant::now();
        store.take_tokens(tenants[0].0, 60_000, 1).await?;
        round_trips.push(started.elapsed());
    }
    println!(
        "one lease (one statement), 1000 in a row: {}",
        Latency::of_durations(round_trips.into_iter()).line()
    );
    println!(
        "{} tenants of each plan, each sending its rate + 10% from {} tasks",
        args.tenants, args.tasks
    );

    let own = sqlx::PgPool::connect(url).await?;
    for run in 1..=args.runs {
        for plan in Plan::ALL {
            let of_plan: Vec<(Uuid, Plan)> = tenants
                .iter()
                .copied()
                .filter(|(_, p)| *p == plan)
                .collect();
            for shared in [false, true] {
                sqlx::query("DELETE FROM tenant_rate_limits")
                    .execute(&own)
                    .await?;
                let outcome = checks(args, &store, &of_plan, shared).await;
                let mode = if shared {
                    format!("shared by {}", args.replicas)
                } else {
                    "in memory".to_owned()
                };
                let us = |ms: f64| ms * 1000.0;
                println!(
                    "run {run} {plan:<12} {mode:>11}: {} checks, allowed {:.1}–{:.1}% of the rate, \
                     {} leases = {:.3} store queries a check; check µs p50 {:.0} p99 {:.0} \
                     p99.9 {:.0} max {:.0} mean {:.1}",
                    outcome.checks,
                    outcome.least_share * 100.0,
                    outcome.most_share * 100.0,
                    outcome.leases,
                    outcome.leases as f64 / outcome.checks as f64,
                    us(outcome.latency.p50_ms),
                    us(outcome.latency.p99_ms),
                    us(outcome.latency.p999_ms),
                    us(outcome.latency.max_ms),
                    us(outcome.latency.mean_ms),
                );
            }
        }
    }
    own.close().await;
    store.close().await;
    Ok(())
}

struct Outcome {
    checks: usize,
    /// The least and most any tenant got, as a share of its rate.
    least_share: f64,
    most_share: f64,
    leases: u64,
    latency: Latency,
}

async fn checks(
    args: &Args,
    store: &Arc<dyn Store>,
    tenants: &[(Uuid, Plan)],
    shared: bool,
) -> Outcome {
    let metrics = Arc::new(HttpMetrics::default());
    let replicas: Arc<Vec<TenantRateLimiter>> = Arc::new(if shared {
        (0..args.replicas)
            .map(|_| TenantRateLimiter::shared(store.clone(), metrics.clone()))
            .collect()
    } else {
        vec![TenantRateLimiter::local(metrics.clone())]
    });
    // Tenants' requests interleaved, each to the next replica in turn.
    let most = tenants
        .iter()
        .map(|(_, plan)| budget_and_more(*plan))
        .max()
        .unwrap_or(0);
    let work: Arc<Vec<(usize, usize)>> = Arc::new(
        (0..most)
            .flat_map(|n| {
                tenants
                    .iter()
                    .enumerate()
                    .filter(move |(_, (_, plan))| n < budget_and_more(*plan))
                    .map(move |(t, _)| (t, n))
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let tenants: Arc<Vec<(Uuid, Plan)>> = Arc::new(tenants.to_vec());
    let workers: Vec<_> = (0..args.tasks.max(1))
        .map(|_| {
            let (work, next, tenants, replicas) = (
                work.clone(),
                next.clone(),
                tenants.clone(),
                replicas.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(&(t, n)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (tenant, plan) = tenants[t];
                    let started = Instant::now();
                    let decision = replicas[n % replicas.len()].check(tenant, plan).await;
                    seen.push((
                        t,
                        started.elapsed(),
                        matches!(decision, Decision::Allowed { .. }),
                    ));
                }
                seen
            })
        })
        .collect();
    let mut allowed_by_tenant = vec![0usize; tenants.len()];
    let mut latencies = Vec::with_capacity(work.len());
    for worker in workers {
        for (t, took, allowed) in worker.await.expect("a bench task panicked") {
            latencies.push(took);
            allowed_by_tenant[t] += usize::from(allowed);
        }
    }
    let shares: Vec<f64> = allowed_by_tenant
        .iter()
        .zip(tenants.iter())
        .map(|(allowed, (_, plan))| {
            *allowed as f64 / f64::from(plan.limits().api_requests_per_minute)
        })
        .collect();
    Outcome {
        checks: latencies.len(),
        least_share: shares.iter().copied().fold(f64::INFINITY, f64::min),
        most_share: shares.iter().copied().fold(0.0, f64::max),
        leases: ["granted", "limited", "failed"]
            .iter()
            .map(|o| metrics.rate_limit_leases.with_label_values(&[o]).get())
            .sum(),
        latency: Latency::of_durations(latencies.into_iter()),
    }
}

/// Requests a tenant of `plan` sends: its rate and 10% more.
fn budget_and_more(plan: Plan) -> usize {
    let rate = plan.limits().api_requests_per_minute as usize;
    rate + rate / 10
}
