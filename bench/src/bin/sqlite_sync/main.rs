//! What `synchronous = FULL` costs the coordinator's SQLite store on this
//! disk: one-row write transactions (the shape of an alert transition or a
//! usage update) in WAL mode with `NORMAL` and with `FULL`, several runs
//! each, commits per second and latency percentiles.
//!
//! `cargo run --release -p knowton-bench --bin knowton-bench-sqlite-sync -- --commits 2000 --runs 5`

use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// Transactions per run.
    #[arg(long, default_value_t = 2000)]
    commits: usize,
    /// Runs per mode (modes alternate, so drift in the disk hits both).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let modes = [
        ("NORMAL", SqliteSynchronous::Normal),
        ("FULL", SqliteSynchronous::Full),
    ];
    let mut results: Vec<(&str, Vec<Run>)> = modes.iter().map(|(n, _)| (*n, Vec::new())).collect();
    for _ in 0..args.runs {
        for (i, (_, mode)) in modes.iter().enumerate() {
            results[i].1.push(run(*mode, args.commits).await?);
        }
    }
    println!(
        "{} one-row write transactions per run, {} runs per mode (WAL)",
        args.commits, args.runs
    );
    for (name, runs) in &results {
        let rates: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", r.per_second))
            .collect();
        let p50: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.p50_us)).collect();
        let p99: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.p99_us)).collect();
        println!(
            "{name:>6}: commits/s [{}]  p50 µs [{}]  p99 µs [{}]",
            rates.join(", "),
            p50.join(", "),
            p99.join(", ")
        );
    }
    Ok(())
}

#[derive(Debug)]
struct Run {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn run(mode: SqliteSynchronous, commits: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("bench.db").display());
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(mode)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE events (id INTEGER PRIMARY KEY, tenant TEXT, body TEXT, at TEXT)")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE TABLE counters (tenant TEXT PRIMARY KEY, n INTEGER)")
        .execute(&pool)
        .await?;
    let body = "x".repeat(400);
    let mut latencies = Vec::with_capacity(commits);
    let started = Instant::now();
    for i in 0..commits {
        let t = Instant::now();
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO events (tenant, body, at) VALUES ($1, $2, datetime('now'))")
            .bind(format!("tenant-{}", i % 50))
            .bind(&body)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO counters (tenant, n) VALUES ($1, 1) \
             ON CONFLICT (tenant) DO UPDATE SET n = n + 1",
        )
        .bind(format!("tenant-{}", i % 50))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    Ok(Run {
        per_second: commits as f64 / total.as_secs_f64(),
        p50_us: at(0.5),
        p99_us: at(0.99),
    })
}
