//! Shared parts of the benchmark binaries: `knowton-bench` (provisioning
//! and tenant reads), `knowton-bench-ingest` (agent results into the
//! coordinator) and `knowton-bench-agent` (one agent probing many pods).
//!
//! # Layout
//! - [`system`]: CPU time and memory of processes and the machine, from /proc.
//! - [`coordinator`]: a coordinator with the agent listener, as a child
//!   process or in-process, with its certificates and tenants.
//! - [`harness`]: a coordinator in-process on a scratch database, seeded
//!   first if asked (`knowton-bench`, `knowton-bench-monitoring`).
//! - [`seed`]: tenants written straight into the store.
//! - [`open_loop`]: the open-loop load generator, its HTTP client and how
//!   answers are classified.
//! - [`latency`]: latency percentiles.

pub mod coordinator;
pub mod harness;
pub mod latency;
pub mod open_loop;
pub mod seed;
pub mod system;

/// Formats bytes as MiB with one decimal, or `unknown`.
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("unknown".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / 1_048_576.0)
    })
}
