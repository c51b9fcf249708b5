//! `knowton-bench`: provisioning rate and tenant read latency of the
//! coordinator on SQLite and PostgreSQL, with figures a person can compare.
//!
//! # Layout
//! - [`cli`]: the flags, each with an environment variable.
//! - [`load`]: provisioning through the API and the read phases.
//! - [`report`]: the per-backend report and its printing.
//!
//! The coordinator harness, the seeding, the open-loop generator and the
//! percentiles are the bench library's (`knowton_bench`).

mod cli;
mod load;
mod report;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use knowton_bench::harness::{self, BackendKind, Coordinator};
use knowton_bench::latency::Latency;
use knowton_bench::system;
use tokio::runtime::Runtime;

use crate::cli::{Args, Output};
use crate::load::ReadRun;
use crate::report::{
    BackendReport, Counts, ProvisionReport, ReadReport, SeedReport, Verdict, per_second,
};

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
    let client_rt = knowton_bench::runtime(args.client_threads, "load")?;

    let mut reports = Vec::new();
    for backend in backends {
        eprintln!(
            "[{}] starting the coordinator ({server_threads} server threads, {} client threads)",
            backend.as_str(),
            args.client_threads.max(1)
        );
        system::reset_peak_rss();
        let postgres_url = match backend {
            BackendKind::Sqlite => None,
            BackendKind::Postgres => Some(
                args.postgres_url
                    .as_deref()
                    .context("postgres needs --postgres-url or TEST_DATABASE_URL")?,
            ),
        };
        let coordinator = Coordinator::start(harness::Settings {
            name: "knowton-bench",
            threads: server_threads,
            postgres_url,
            data_root: Some(&data_root),
            seed: None,
        })?;
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
    let client = knowton_bench::open_loop::http_client()?;

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
    progress(name, "provisioned");
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
    let (tenants, took) = client_rt.block_on(knowton_bench::seed::seed(
        coordinator.handle(),
        coordinator.store(),
        coordinator.secrets.clone(),
        args.seed_tenants,
        args.seed_concurrency,
    ))?;
    progress(name, "seeded");
    let seed = SeedReport {
        tenants: tenants.len(),
        concurrency: args.seed_concurrency,
        seconds: took.as_secs_f64(),
        tenants_per_second: per_second(tenants.len(), took),
    };
    let tenants_in_store = provision.counts.ok + tenants.len();
    let target = load::ReadTarget {
        client,
        base_url: coordinator.base_url.as_str().into(),
        tenants: Arc::new(tenants),
    };
    let warmup = Duration::from_secs(args.read_warmup_seconds);
    let measured = Duration::from_secs(args.read_seconds);

    eprintln!(
        "[{name}] reading at {} req/s for {} s",
        args.read_rate, args.read_seconds
    );
    let cpu = system::CpuSnapshot::take();
    let run = load::open_loop(
        client_rt,
        &target,
        args.read_rate,
        args.read_connections,
        warmup,
        measured,
    );
    progress(name, "open-loop reads done");
    let cpu = cpu.and_then(system::CpuSnapshot::usage_since);
    let open = read_report("open", Some(args.read_rate), None, &run, cpu);
    let verdict = Verdict::judge(&open, args.target_p99_ms, args.read_rate);
    let mut reads = vec![open];

    if args.read_concurrency > 0 {
        eprintln!(
            "[{name}] reading with {} clients for {} s",
            args.read_concurrency, args.read_seconds
        );
        let cpu = system::CpuSnapshot::take();
        let run = client_rt.block_on(load::closed_loop(
            &target,
            args.read_concurrency,
            warmup,
            measured,
        ));
        progress(name, "closed-loop reads done");
        let cpu = cpu.and_then(system::CpuSnapshot::usage_since);
        reads.push(read_report(
            "closed",
            None,
            Some(args.read_concurrency),
            &run,
            cpu,
        ));
    }

    Ok(BackendReport {
        backend: name,
        provision,
        seed,
        tenants_in_store,
        reads,
        peak_rss_bytes: system::peak_rss_bytes(),
        verdict,
    })
}

/// Notes a finished phase and the memory used so far on stderr.
fn progress(backend: &str, phase: &str) {
    let mib = |b: Option<u64>| b.map_or(0.0, |b| b as f64 / 1_048_576.0);
    eprintln!(
        "[{backend}] {phase} (RSS {:.1} MiB, peak so far {:.1} MiB)",
        mib(system::rss_bytes()),
        mib(system::peak_rss_bytes())
    );
}

fn read_report(
    mode: &'static str,
    target_rps: Option<u32>,
    concurrency: Option<usize>,
    run: &ReadRun,
    cpu: Option<system::CpuUsage>,
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
        send_lag: target_rps.map(|_| Latency::of_durations(run.send_lags.iter().copied())),
        cpu,
    }
}
