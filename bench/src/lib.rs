//! Shared parts of the benchmark binaries: `knowton-bench` (provisioning
//! and tenant reads), `knowton-bench-ingest` (agent results into the
//! coordinator) and `knowton-bench-agent` (one agent probing many pods).
//!
//! # Layout
//! - [`system`]: CPU time and memory of processes and the machine, from /proc.
//! - [`coordinator`]: a coordinator with the agent listener, as a child
//!   process, as replicas on PostgreSQL, or in-process, with its
//!   certificates and tenants.
//! - [`postgres`]: a scratch PostgreSQL schema, dropped at the end.
//! - [`harness`]: a coordinator in-process on a scratch database, seeded
//!   first if asked (`knowton-bench`, `knowton-bench-monitoring`).
//! - [`seed`]: tenants written straight into the store.
//! - [`open_loop`]: the open-loop load generator, its HTTP client and how
//!   answers are classified.
//! - [`latency`]: latency percentiles.
//! - [`spread`]: the median and range of a few trials or runs.

pub mod coordinator;
pub mod harness;
pub mod latency;
pub mod open_loop;
pub mod postgres;
pub mod seed;
pub mod spread;
pub mod system;

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tokio::runtime::Runtime;

/// A multi-thread runtime of `threads` workers (at least one) named
/// `name` (`load`, `pods`, `coordinator`).
pub fn runtime(threads: usize, name: &str) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("failed to build the {name} runtime"))
}

/// How a benchmark binary ends: its report on stdout (JSON with `json`,
/// else `print_text`) and success, or exit code 2 when it did not `pass`;
/// or its error on stderr and failure.
pub fn conclude<R: Serialize>(
    result: anyhow::Result<R>,
    json: bool,
    print_text: impl FnOnce(&R),
    pass: impl FnOnce(&R) -> bool,
) -> ExitCode {
    match result {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializable")
                );
            } else {
                print_text(&report);
            }
            if pass(&report) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Formats bytes as MiB with one decimal, or `unknown`.
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("unknown".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / 1_048_576.0)
    })
}
