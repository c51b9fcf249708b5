//! `knowton-bench`: provisioning rate and tenant read latency of the
//! coordinator on SQLite and PostgreSQL, with figures a person can compare.
//!
//! # Layout
//! - [`harness`]: the coordinator in-process, on its own runtime, on a
//!   fresh database; cleaned up afterwards.
//! - [`seed`]: tenants written straight into the store.
//! - [`load`]: provisioning through the API and the read phases.
//! - [`report`]: percentiles, the per-backend report and its printing.

mod harness;
mod load;
mod report;
mod seed;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::runtime::Runtime;

use crate::harness::{BackendKind, Coordinator};
use crate::load::ReadRun;
use crate::report::{
    BackendReport, Counts, Latency, ProvisionReport, ReadReport, SeedReport, Verdict, per_second,
};

/// Benchmarks the coordinator: provisioning through the API, then tenant
/// reads with tenant-key auth against a store of many tenants.
#[derive(Debug, Parser)]
#[command(name = "knowton-bench", version)]
struct Args {
    /// Backends to run, comma separated. Default: sqlite, plus postgres when
    /// a PostgreSQL url is given.
    #[arg(long, env = "KNOWTON_BENCH_BACKENDS", value_delimiter = ',')]
    backends: Vec<BackendKind>,

    /// PostgreSQL server to create a scratch schema in (dropped at the end),
    /// e.g. postgres://postgres@127.0.0.1:5432/test
    #[arg(long, env = "TEST_DATABASE_URL", hide_env_values = true)]
    postgres_url: Option<String>,

    /// Tenants written straight into the store before the read phases.
    #[arg(long, env = "KNOWTON_BENCH_SEED_TENANTS", default_value_t = 10_000)]
    seed_tenants: usize,

    /// Concurrent tasks seeding the store.
    #[arg(long, env = "KNOWTON_BENCH_SEED_CONCURRENCY", default_value_t = 8)]
    seed_concurrency: usize,

    /// Tenants provisioned through POST /api/v1/tenants (argon2id included).
    #[arg(long, env = "KNOWTON_BENCH_PROVISION", default_value_t = 300)]
    provision: usize,

    /// Concurrent provisioning clients.
    #[arg(long, env = "KNOWTON_BENCH_PROVISION_CONCURRENCY", default_value_t = 4)]
    provision_concurrency: usize,

    /// Fixed request rate of the open-loop read phase (requests/s).
    #[arg(long, env = "KNOWTON_BENCH_READ_RATE", default_value_t = 2_000)]
    read_rate: u32,

    /// Measured seconds of each read phase.
    #[arg(long, env = "KNOWTON_BENCH_READ_SECONDS", default_value_t = 10)]
    read_seconds: u64,

    /// Unmeasured seconds before each read phase (connections, caches).
    #[arg(long, env = "KNOWTON_BENCH_READ_WARMUP_SECONDS", default_value_t = 1)]
    read_warmup_seconds: u64,

    /// Clients of the closed-loop, maximum-throughput read phase (0: skip it).
    #[arg(long, env = "KNOWTON_BENCH_READ_CONCURRENCY", default_value_t = 32)]
    read_concurrency: usize,

    /// Worker threads of the coordinator's runtime. Default: one per CPU.
    #[arg(long, env = "KNOWTON_BENCH_SERVER_THREADS")]
    server_threads: Option<usize>,

    /// Worker threads of the load generator's runtime.
    #[arg(long, env = "KNOWTON_BENCH_CLIENT_THREADS", default_value_t = 1)]
    client_threads: usize,

    /// Where the SQLite database is created (in a fresh subdirectory,
    /// removed at the end). Default: the system temporary directory.
    #[arg(long, env = "KNOWTON_BENCH_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// The read p99 to meet at --read-rate, in milliseconds.
    #[arg(long, env = "KNOWTON_BENCH_TARGET_P99_MS", default_value_t = 5.0)]
    target_p99_ms: f64,

    #[arg(long, env = "KNOWTON_BENCH_OUTPUT", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

impl Args {
    fn backends(&self) -> anyhow::Result<Vec<BackendKind>> {
        let backends = if self.backends.is_empty() {
            let mut all = vec![BackendKind::Sqlite];
            if self.postgres_url.is_some() {
                all.push(BackendKind::Postgres);
            }
            all
        } else {
            self.backends.clone()
        };
        if backends.contains(&BackendKind::Postgres) && self.postgres_url.is_none() {
            bail!("the postgres backend needs --postgres-url or TEST_DATABASE_URL");
        }
        if self.seed_tenants == 0 {
            bail!("--seed-tenants must be at least 1: the read phases read seeded tenants");
        }
        Ok(backends)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let backends = args.backends()?;
    let server_threads = args
        .server_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let data_root = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()
        .context("failed to build the load generator runtime")?;

    let mut reports = Vec::new();
    for backend in backends {
        eprintln!(
            "[{}] starting the coordinator ({server_threads} server threads, {} client threads)",
            backend.as_str(),
            args.client_threads.max(1)
        );
        report::reset_peak_rss();
        let coordinator = Coordinator::start(
            backend,
            args.postgres_url.as_deref(),
            &data_root,
            server_threads,
        )?;
        if backend == BackendKind::Sqlite {
            eprintln!("[sqlite] database in {}", coordinator.data_dir().display());
        }
        let result = bench_backend(args, backend, &client_rt, &coordinator);
        let finished = coordinator.finish();
        let report = result?;
        finished?;
        if args.output == Output::Text {
            println!("{}", report.to_text());
        }
        reports.push(report);
    }
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

fn bench_backend(
    args: &Args,
    backend: BackendKind,
    client_rt: &Runtime,
    coordinator: &Coordinator,
) -> anyhow::Result<BackendReport> {
    let name = backend.as_str();
    let client = load::http_client()?;

    eprintln!(
        "[{name}] provisioning {} tenants through the API",
        args.provision
    );
    let (samples, took) = client_rt.block_on(load::provision(
        &client,
        &coordinator.base_url,
        &coordinator.admin_token,
        args.provision,
        args.provision_concurrency,
    ));
    let counts = Counts::of(&samples);
    let provision = ProvisionReport {
        concurrency: args.provision_concurrency,
        tenants_per_second: per_second(counts.ok, took),
        counts,
        seconds: took.as_secs_f64(),
        latency: Latency::of(&samples),
    };

    eprintln!(
        "[{name}] seeding {} tenants into the store",
        args.seed_tenants
    );
    let (tenants, took) = client_rt.block_on(seed::seed(
        coordinator.handle(),
        coordinator.store(),
        coordinator.secrets.clone(),
        args.seed_tenants,
        args.seed_concurrency,
    ))?;
    let seed = SeedReport {
        tenants: tenants.len(),
        concurrency: args.seed_concurrency,
        seconds: took.as_secs_f64(),
        tenants_per_second: per_second(tenants.len(), took),
    };
    let tenants_in_store = provision.counts.ok + tenants.len();
    let tenants = Arc::new(tenants);
    let warmup = Duration::from_secs(args.read_warmup_seconds);
    let measured = Duration::from_secs(args.read_seconds);

    eprintln!(
        "[{name}] reading at {} req/s for {} s",
        args.read_rate, args.read_seconds
    );
    let run = load::open_loop(
        client_rt,
        &client,
        &coordinator.base_url,
        &tenants,
        args.read_rate,
        warmup,
        measured,
    );
    let open = read_report("open", Some(args.read_rate), None, &run);
    let verdict = Verdict::judge(&open, args.target_p99_ms, args.read_rate);
    let mut reads = vec![open];

    if args.read_concurrency > 0 {
        eprintln!(
            "[{name}] reading with {} clients for {} s",
            args.read_concurrency, args.read_seconds
        );
        let run = client_rt.block_on(load::closed_loop(
            &client,
            &coordinator.base_url,
            &tenants,
            args.read_concurrency,
            warmup,
            measured,
        ));
        reads.push(read_report(
            "closed",
            None,
            Some(args.read_concurrency),
            &run,
        ));
    }

    Ok(BackendReport {
        backend: name,
        provision,
        seed,
        tenants_in_store,
        reads,
        peak_rss_bytes: report::peak_rss_bytes(),
        verdict,
    })
}

fn read_report(
    mode: &'static str,
    target_rps: Option<u32>,
    concurrency: Option<usize>,
    run: &ReadRun,
) -> ReadReport {
    let counts = Counts::of(&run.samples);
    ReadReport {
        mode,
        target_rps,
        concurrency,
        seconds: run.window.as_secs_f64(),
        achieved_rps: per_second(counts.ok, run.window),
        counts,
        latency: Latency::of(&run.samples),
        max_send_lag_ms: target_rps.map(|_| run.max_send_lag.as_secs_f64() * 1e3),
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

    #[test]
    fn postgres_joins_the_default_backends_when_a_url_is_given() {
        let args = Args::parse_from(["knowton-bench"]);
        if args.postgres_url.is_none() {
            assert_eq!(args.backends().unwrap(), [BackendKind::Sqlite]);
        }
        let args = Args::parse_from(["knowton-bench", "--postgres-url", "postgres://p@h/db"]);
        assert_eq!(
            args.backends().unwrap(),
            [BackendKind::Sqlite, BackendKind::Postgres]
        );
        let args = Args::parse_from(["knowton-bench", "--backends", "postgres"]);
        if args.postgres_url.is_none() {
            assert!(args.backends().is_err());
        }
    }
}
