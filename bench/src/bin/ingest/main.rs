//! `knowton-bench-ingest`: how many agent results a coordinator accepts per
//! second from many concurrent mutual-TLS agent streams, and what that
//! costs it in CPU and memory.
//!
//! # Layout
//! - [`fleet`]: simulated nodes and their pre-encoded probe rounds.
//! - [`codec`]: the gRPC codec that sends pre-encoded messages.
//! - [`streams`]: one agent stream per node, driven with a window of
//!   unacknowledged batches.

mod codec;
mod fleet;
mod streams;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use knowton_bench::coordinator::{self, BenchCoordinator, Counters, Launch};
use knowton_bench::mib;
use knowton_bench::system::{Meter, Proc, Spent};
use knowton_coordinator::certs::Validity;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Identity;

use crate::streams::Totals;

/// Streams agent result batches into a coordinator as fast as its
/// acknowledgements allow and reports the accepted results per second.
#[derive(Debug, Parser)]
#[command(name = "knowton-bench-ingest", version)]
struct Args {
    /// Concurrent agent streams, each with a node certificate of its own.
    #[arg(long, env = "KNOWTON_BENCH_STREAMS", default_value_t = 100)]
    streams: usize,

    /// Pod results in each batch (one probe round of a node).
    #[arg(long, env = "KNOWTON_BENCH_BATCH_RESULTS", default_value_t = 1_000)]
    batch_results: usize,

    /// Unacknowledged batches each stream keeps in flight.
    #[arg(long, env = "KNOWTON_BENCH_WINDOW", default_value_t = 4)]
    window: usize,

    /// Tenants provisioned through the API, over which the pods are spread.
    #[arg(long, env = "KNOWTON_BENCH_TENANTS", default_value_t = 100)]
    tenants: usize,

    /// Unmeasured seconds of streaming first.
    #[arg(long, env = "KNOWTON_BENCH_WARMUP_SECONDS", default_value_t = 5)]
    warmup_seconds: u64,

    /// Measured seconds.
    #[arg(long, env = "KNOWTON_BENCH_SECONDS", default_value_t = 15)]
    seconds: u64,

    /// Worker threads of the load generator. Default: one per CPU.
    #[arg(long, env = "KNOWTON_BENCH_CLIENT_THREADS")]
    client_threads: Option<usize>,

    /// The coordinator binary. Default: knowton-coordinator beside this one.
    #[arg(long, env = "KNOWTON_BENCH_COORDINATOR_BIN")]
    coordinator_bin: Option<PathBuf>,

    /// Run the coordinator in this process (its CPU and memory then include
    /// the load generator's).
    #[arg(long, env = "KNOWTON_BENCH_IN_PROCESS")]
    in_process: bool,

    /// Worker threads of an in-process coordinator. Default: one per CPU.
    #[arg(long, env = "KNOWTON_BENCH_SERVER_THREADS")]
    server_threads: Option<usize>,

    /// Accepted results per second to reach.
    #[arg(
        long,
        env = "KNOWTON_BENCH_TARGET_RESULTS_PER_SECOND",
        default_value_t = 500_000
    )]
    target_results_per_second: u64,

    /// Print JSON instead of text.
    #[arg(long, env = "KNOWTON_BENCH_JSON")]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let result = knowton_bench::runtime(args.client_threads.unwrap_or(cpus), "load")
        .and_then(|rt| rt.block_on(run(&args, cpus)));
    knowton_bench::conclude(result, args.json, |r| print!("{}", r.to_text()), |_| true)
}

async fn run(args: &Args, cpus: usize) -> anyhow::Result<IngestReport> {
    anyhow::ensure!(
        args.streams > 0 && args.batch_results > 0 && args.tenants > 0,
        "--streams, --batch-results and --tenants must be at least 1"
    );
    let launch = Launch::choose(
        args.in_process,
        args.server_threads.unwrap_or(cpus),
        args.coordinator_bin.clone(),
    )?;
    let kt = BenchCoordinator::start(&launch).await?;
    eprintln!(
        "coordinator up: http {} grpc {} ({}; scratch {})",
        kt.http_addr,
        kt.grpc_addr,
        launch_text(&launch),
        kt.dir().display()
    );
    let result = bench(args, &kt, &launch, cpus).await;
    kt.stop_after(result, 20).await
}

async fn bench(
    args: &Args,
    kt: &BenchCoordinator,
    launch: &Launch,
    cpus: usize,
) -> anyhow::Result<IngestReport> {
    let slugs = coordinator::slugs("bench", args.tenants);
    let took = kt.provision(&slugs, 4).await?;
    eprintln!(
        "provisioned {} tenants in {:.1} s",
        slugs.len(),
        took.as_secs_f64()
    );

    let authority = kt.authority()?;
    let batch_bytes = fleet::round_body(0, args.batch_results, &slugs).len();
    let slugs: Arc<[String]> = slugs.into();
    let mut opening = JoinSet::new();
    for n in 0..args.streams {
        let node = fleet::node_name(n);
        let issued = authority
            .issue_agent(&node, Validity::days(30))
            .with_context(|| format!("failed to issue a certificate for {node}"))?;
        let identity = Identity::from_pem(&issued.cert_pem, &issued.key_pem);
        let (addr, ca, slugs) = (kt.grpc_addr, kt.ca_pem.clone(), slugs.clone());
        let (pods, window) = (args.batch_results, args.window);
        opening.spawn(async move {
            let body =
                tokio::task::spawn_blocking(move || fleet::round_body(n, pods, &slugs)).await?;
            streams::open(addr, &ca, node, identity, body, pods as u64, window).await
        });
    }
    let mut opened = Vec::with_capacity(args.streams);
    while let Some(stream) = opening.join_next().await {
        opened.push(stream??);
    }
    eprintln!(
        "{} streams open; batches of {} results, {} in flight per stream",
        opened.len(),
        args.batch_results,
        args.window
    );

    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = watch::channel(false);
    let mut drivers = JoinSet::new();
    for stream in opened {
        drivers.spawn(stream.drive(args.window, stop.clone(), totals.clone()));
    }

    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
    let procs = if kt.is_separate_process() {
        vec![kt.proc(), Proc::Own]
    } else {
        vec![Proc::Own]
    };
    let server_before = kt.agents().await?.counters;
    let acked_before = totals.acked_results.load(Ordering::Relaxed);
    let meter = Meter::take(&procs).context("failed to read CPU counters from /proc")?;
    let started = Instant::now();
    eprintln!("warm-up done; measuring for {} s", args.seconds);

    let mut per_second = Vec::new();
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = acked_before;
    for _ in 0..args.seconds {
        tick.tick().await;
        let now = totals.acked_results.load(Ordering::Relaxed);
        per_second.push(now - last);
        last = now;
        if let Some(done) = drivers.try_join_next() {
            let err = done.map_err(anyhow::Error::from).and_then(|r| r).err();
            anyhow::bail!(
                "a stream ended early: {}",
                err.map_or("without an error".to_owned(), |e| format!("{e:#}"))
            );
        }
    }
    let spent = meter.until(&Meter::take(&procs).context("failed to read CPU counters")?);
    let acked = totals.acked_results.load(Ordering::Relaxed) - acked_before;
    let server_after = kt.agents().await?;
    let peak_rss = kt.peak_rss_bytes();
    let own_peak_rss = knowton_bench::system::peak_rss_bytes();

    let _ = stop_tx.send(true);
    let mut stream_errors = Vec::new();
    while let Some(done) = drivers.join_next().await {
        if let Err(err) = done.map_err(anyhow::Error::from).and_then(|r| r) {
            stream_errors.push(format!("{err:#}"));
        }
    }
    let counters = kt.agents().await?.counters;

    let seconds = spent.seconds;
    let accepted = server_after.counters.results_accepted - server_before.results_accepted;
    let rate = acked as f64 / seconds;
    let coordinator_cpu = spent.process_cpu_seconds[0];
    per_second.sort_unstable();
    let report = IngestReport {
        coordinator: launch_text(launch),
        streams: args.streams,
        batch_results: args.batch_results,
        batch_bytes,
        window: args.window,
        tenants: args.tenants,
        warmup_seconds: args.warmup_seconds,
        seconds,
        acked_results: acked,
        results_per_second: rate,
        coordinator_results_accepted: accepted,
        coordinator_results_per_second: accepted as f64 / seconds,
        per_second_min: per_second.first().copied().unwrap_or(0),
        per_second_median: per_second.get(per_second.len() / 2).copied().unwrap_or(0),
        per_second_max: per_second.last().copied().unwrap_or(0),
        coordinator_cores: spent.cores(0),
        generator_cores: kt.is_separate_process().then(|| spent.cores(1)),
        coordinator_cpu_ns_per_result: coordinator_cpu * 1e9 / acked.max(1) as f64,
        cpu: spent,
        coordinator_peak_rss_bytes: peak_rss,
        generator_peak_rss_bytes: kt.is_separate_process().then_some(own_peak_rss).flatten(),
        counters,
        stream_errors,
        target_results_per_second: args.target_results_per_second,
        pass: rate >= args.target_results_per_second as f64,
        cpus,
    };
    Ok(report)
}

fn launch_text(launch: &Launch) -> String {
    match launch {
        Launch::Process(binary) => format!("separate process {}", binary.display()),
        Launch::InProcess { threads } => {
            format!("in-process, {threads} threads, sharing the process with the load generator")
        }
        Launch::Replicas { binary, count, .. } => {
            format!("{count} replicas of {} on PostgreSQL", binary.display())
        }
    }
}

/// Everything measured.
#[derive(Debug, Serialize)]
struct IngestReport {
    coordinator: String,
    streams: usize,
    batch_results: usize,
    /// Encoded size of one batch (protobuf, before gRPC framing and TLS).
    batch_bytes: usize,
    window: usize,
    tenants: usize,
    warmup_seconds: u64,
    seconds: f64,
    /// Results acknowledged to the load generator in the window.
    acked_results: u64,
    results_per_second: f64,
    /// `resultsAccepted` of `GET /api/v1/agents`, over the same window.
    coordinator_results_accepted: u64,
    coordinator_results_per_second: f64,
    per_second_min: u64,
    per_second_median: u64,
    per_second_max: u64,
    coordinator_cores: f64,
    generator_cores: Option<f64>,
    coordinator_cpu_ns_per_result: f64,
    cpu: Spent,
    coordinator_peak_rss_bytes: Option<u64>,
    generator_peak_rss_bytes: Option<u64>,
    /// Ingest counters at the end.
    counters: Counters,
    stream_errors: Vec<String>,
    target_results_per_second: u64,
    pass: bool,
    cpus: usize,
}

impl IngestReport {
    fn to_text(&self) -> String {
        let mut out = String::new();
        let c = &self.counters;
        let _ = writeln!(out, "== agent result ingest ==");
        let _ = writeln!(out, "coordinator  {}", self.coordinator);
        let _ = writeln!(
            out,
            "load         {} mutual-TLS streams (one node certificate each), batches of {} results ({:.0} KiB encoded), {} unacknowledged per stream, pods spread over {} tenants",
            self.streams,
            self.batch_results,
            self.batch_bytes as f64 / 1024.0,
            self.window,
            self.tenants
        );
        let _ = writeln!(
            out,
            "window       {:.1} s measured after {} s warm-up",
            self.seconds, self.warmup_seconds
        );
        let _ = writeln!(
            out,
            "accepted     {:.0} results/s from acks ({} results); coordinator counter {:.0} results/s ({})",
            self.results_per_second,
            self.acked_results,
            self.coordinator_results_per_second,
            self.coordinator_results_accepted
        );
        let _ = writeln!(
            out,
            "             per second: min {}  median {}  max {}",
            self.per_second_min, self.per_second_median, self.per_second_max
        );
        // In-process, the coordinator's process is the load generator's too.
        let (who, generator) = match self.generator_cores {
            Some(g) => ("coordinator", format!(", load generator {g:.2}")),
            None => ("coordinator + load generator", String::new()),
        };
        let _ = writeln!(
            out,
            "CPU          {who} {:.2} cores{generator}; machine {:.2} of {} busy; {who} {:.0} ns CPU per result",
            self.coordinator_cores,
            self.cpu.machine_cores,
            self.cpu.cpus,
            self.coordinator_cpu_ns_per_result
        );
        let generator_rss = self.generator_peak_rss_bytes.map_or(String::new(), |b| {
            format!("; load generator {}", mib(Some(b)))
        });
        let _ = writeln!(
            out,
            "peak RSS     {who} {} (VmHWM){generator_rss}",
            mib(self.coordinator_peak_rss_bytes)
        );
        let _ = writeln!(
            out,
            "counters     unknown tenant {}, duplicate batches {}, sequence gaps {}, hellos rejected {}, streams rejected {}, handshakes failed {}",
            c.unknown_tenant_results,
            c.duplicate_batches,
            c.sequence_gaps,
            c.hellos_rejected,
            c.streams_rejected,
            c.handshakes_failed
        );
        if !self.stream_errors.is_empty() {
            let _ = writeln!(
                out,
                "stream errors {}: {}",
                self.stream_errors.len(),
                self.stream_errors[0]
            );
        }
        let _ = writeln!(
            out,
            "target       >= {} results/s on {} CPUs (load generator included): {} ({:.0} results/s)",
            self.target_results_per_second,
            self.cpus,
            if self.pass { "PASS" } else { "FAIL" },
            self.results_per_second
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
