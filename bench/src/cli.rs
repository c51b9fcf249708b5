//! The command line: every flag with an environment variable.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

use knowton_bench::harness::BackendKind;

/// Benchmarks the coordinator: provisioning through the API, then tenant
/// reads with tenant-key auth against a store of many tenants.
#[derive(Debug, Parser)]
#[command(name = "knowton-bench", version)]
pub struct Args {
    /// Backends to run, comma separated. Default: sqlite, plus postgres when
    /// a PostgreSQL url is given.
    #[arg(long, env = "KNOWTON_BENCH_BACKENDS", value_delimiter = ',')]
    pub backends: Vec<BackendKind>,

    /// PostgreSQL server to create a scratch schema in (dropped at the end),
    /// e.g. postgres://postgres@127.0.0.1:5432/test
    #[arg(long, env = "TEST_DATABASE_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,

    /// Tenants written straight into the store before the read phases.
    #[arg(long, env = "KNOWTON_BENCH_SEED_TENANTS", default_value_t = 10_000)]
    pub seed_tenants: usize,

    /// Concurrent tasks seeding the store.
    #[arg(long, env = "KNOWTON_BENCH_SEED_CONCURRENCY", default_value_t = 8)]
    pub seed_concurrency: usize,

    /// Tenants provisioned through POST /api/v1/tenants (argon2id included).
    #[arg(long, env = "KNOWTON_BENCH_PROVISION", default_value_t = 300)]
    pub provision: usize,

    /// Concurrent provisioning clients.
    #[arg(long, env = "KNOWTON_BENCH_PROVISION_CONCURRENCY", default_value_t = 4)]
    pub provision_concurrency: usize,

    /// Fixed request rate of the open-loop read phase (requests/s).
    #[arg(long, env = "KNOWTON_BENCH_READ_RATE", default_value_t = 2_000)]
    pub read_rate: u32,

    /// Measured seconds of each read phase.
    #[arg(long, env = "KNOWTON_BENCH_READ_SECONDS", default_value_t = 10)]
    pub read_seconds: u64,

    /// Unmeasured seconds before each read phase (connections, caches).
    #[arg(long, env = "KNOWTON_BENCH_READ_WARMUP_SECONDS", default_value_t = 1)]
    pub read_warmup_seconds: u64,

    /// Most requests in flight (connections) in the open-loop phase; a
    /// request due while all are busy waits, and the wait counts.
    #[arg(long, env = "KNOWTON_BENCH_READ_CONNECTIONS", default_value_t = 64)]
    pub read_connections: usize,

    /// Clients of the closed-loop, maximum-throughput read phase (0: skip it).
    #[arg(long, env = "KNOWTON_BENCH_READ_CONCURRENCY", default_value_t = 32)]
    pub read_concurrency: usize,

    /// Worker threads of the coordinator's runtime. Default: one per CPU.
    #[arg(long, env = "KNOWTON_BENCH_SERVER_THREADS")]
    pub server_threads: Option<usize>,

    /// Worker threads of the load generator's runtime.
    #[arg(long, env = "KNOWTON_BENCH_CLIENT_THREADS", default_value_t = 1)]
    pub client_threads: usize,

    /// Where the SQLite database is created (in a fresh subdirectory,
    /// removed at the end). Default: the system temporary directory.
    #[arg(long, env = "KNOWTON_BENCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// The read p99 to meet at --read-rate, in milliseconds.
    #[arg(long, env = "KNOWTON_BENCH_TARGET_P99_MS", default_value_t = 5.0)]
    pub target_p99_ms: f64,

    #[arg(long, env = "KNOWTON_BENCH_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

impl Args {
    pub fn backends(&self) -> anyhow::Result<Vec<BackendKind>> {
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
