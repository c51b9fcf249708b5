//! A coordinator for the agent benchmarks, with the agent listener on:
//! the release binary as a child process (so its CPU and memory are its
//! own) or in-process, on SQLite; or several replicas of the binary on a
//! scratch PostgreSQL schema; with fresh certificates in a temporary
//! directory; tenants provisioned through its API; its agent counters read
//! back through `GET /api/v1/agents`.
//!
//! # Layout
//! - [`process`]: the child processes, started, killed and started again.

mod process;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use knowton_coordinator::certs::{self, CertificateAuthority};
use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::server::{self, Running};
use rand::RngExt;
use serde::Deserialize;
use tokio::runtime::Runtime;
use tokio::time::Instant;

use crate::postgres::Schema;
use crate::system::Proc;

use self::process::Processes;

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub enum Launch {
    /// `BINARY serve …` as a child process.
    Process(PathBuf),
    /// In this process, on a runtime of its own with this many workers.
    InProcess { threads: usize },
    /// `count` processes of `binary` as replicas of one scratch schema in
    /// the PostgreSQL database at `database_url` (a second coordinator on
    /// one SQLite file refuses to start).
    Replicas {
        binary: PathBuf,
        count: usize,
        database_url: String,
    },
}

impl Launch {
    /// The process when `in_process` is false: `binary`, or else the
    /// `knowton-coordinator` built beside this benchmark.
    pub fn choose(
        in_process: bool,
        threads: usize,
        binary: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        if in_process {
            return Ok(Launch::InProcess { threads });
        }
        let binary = match binary {
            Some(binary) => binary,
            None => sibling_binary("knowton-coordinator")?,
        };
        Ok(Launch::Process(binary))
    }
}

/// `name` in the directory of the running executable (`target/release`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("failed to find this executable's path")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p {name}` or give its path",
            path.display()
        );
    }
    Ok(path)
}

/// How a benchmark starts the real agent binary.
#[derive(Debug)]
pub struct AgentLaunch<'a> {
    pub binary: &'a Path,
    /// `--node-name` (its certificate issued in the coordinator's TLS
    /// directory).
    pub node: &'a str,
    pub targets: &'a Path,
    pub interval: Duration,
    /// The `--coordinator` list.
    pub coordinators: String,
    /// Where its standard output and error go.
    pub log: &'a Path,
}

impl AgentLaunch<'_> {
    /// Starts it with `kt`'s TLS directory, its metrics on a free port and
    /// its log level from `KNOWTON_BENCH_AGENT_LOG` (default `info`).
    pub fn spawn(&self, kt: &BenchCoordinator) -> anyhow::Result<std::process::Child> {
        let log = std::fs::File::create(self.log)?;
        std::process::Command::new(self.binary)
            .args(["--node-name", self.node])
            .arg("--tls-dir")
            .arg(&kt.tls_dir)
            .arg("--targets")
            .arg(self.targets)
            .args(["--interval", &format!("{}ms", self.interval.as_millis())])
            .args(["--coordinator", &self.coordinators])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("KNOWTON_BENCH_AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", self.binary.display()))
    }
}

/// A serving coordinator (or several replicas) with the agent listener,
/// and its scratch directory.
#[derive(Debug)]
pub struct BenchCoordinator {
    /// The first replica's addresses (the only one's, mostly).
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// `certs init` layout: ca.pem, ca-key.pem, server.pem, server-key.pem.
    pub tls_dir: PathBuf,
    pub ca_pem: String,
    admin_token: String,
    http: reqwest::Client,
    running: Runs,
    /// Removed when the coordinator is dropped.
    dir: tempfile::TempDir,
}

#[derive(Debug)]
enum Runs {
    Processes(Processes),
    InProcess {
        runtime: Option<Runtime>,
        running: Option<Box<Running>>,
    },
}

/// `GET /api/v1/agents`, the parts the benchmarks read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentsReport {
    pub agents: Vec<AgentRow>,
    pub counters: Counters,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    pub node: String,
    pub connected: bool,
    pub last_sequence: u64,
    pub batches_received: u64,
    pub results_received: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub results_accepted: u64,
    pub unknown_tenant_results: u64,
    pub duplicate_batches: u64,
    pub sequence_gaps: u64,
    pub hellos_rejected: u64,
    pub streams_rejected: u64,
    pub handshakes_failed: u64,
}

impl BenchCoordinator {
    /// Creates certificates and starts the coordinator; returns once it
    /// answers `/readyz`. Call from within a tokio runtime.
    pub async fn start(launch: &Launch) -> anyhow::Result<Self> {
        Self::start_with_env(launch, &[]).await
    }

    /// [`Self::start`] with `serve` settings given as environment variables
    /// (each flag has one, e.g. `KNOWTON_NOTIFY_WEBHOOK`); the coordinator
    /// must then be a process of its own (or several).
    pub async fn start_with_env(launch: &Launch, env: &[(&str, String)]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            env.is_empty() || !matches!(launch, Launch::InProcess { .. }),
            "settings through the environment need the coordinator as a process"
        );
        knowton_coordinator::certs::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("knowton-bench-")
            .tempdir()
            .context("failed to create a scratch directory")?;
        let tls_dir = dir.path().join("tls");
        certs::init(&tls_dir, &[], false).context("failed to create the certificates")?;
        let ca_pem = std::fs::read_to_string(tls_dir.join("ca.pem"))
            .context("failed to read the new ca.pem")?;
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        let secret_key = B64.encode(key);
        let admin_token = knowton_coordinator::credentials::random_base62(32);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;

        let mut args = ServeArgs::for_dir(dir.path());
        // Secrets through the environment, out of `ps`; the admin token
        // doubles as the metrics token (see `metrics_token`).
        let mut process_env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), args.database_url.clone()),
            ("KNOWTON_SECRET_KEY".into(), secret_key.clone()),
            ("KNOWTON_ADMIN_TOKEN".into(), admin_token.clone()),
            ("KNOWTON_METRICS_TOKEN".into(), admin_token.clone()),
        ];
        process_env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let running = match launch {
            Launch::Process(binary) => Runs::Processes(Processes::start(
                binary,
                1,
                process_env,
                &tls_dir,
                dir.path(),
            )?),
            Launch::Replicas {
                binary,
                count,
                database_url,
            } => {
                anyhow::ensure!(*count >= 1, "at least one replica");
                let schema = Schema::create(database_url, "knowton_bench").await?;
                process_env[0].1 = schema.url.clone();
                match Processes::start(binary, *count, process_env, &tls_dir, dir.path()) {
                    Ok(mut processes) => {
                        processes.schema = Some(schema);
                        Runs::Processes(processes)
                    }
                    Err(err) => {
                        schema.drop().await;
                        return Err(err);
                    }
                }
            }
            Launch::InProcess { threads } => {
                args.tls_dir = Some(tls_dir.clone());
                args.http_addr = free_port()?;
                args.grpc_addr = free_port()?;
                args.secret_key = Some(secret_key);
                args.admin_token = Some(admin_token.clone());
                args.http.metrics_token = Some(admin_token.clone());
                let runtime = crate::runtime(*threads, "coordinator")?;
                let config = ServeConfig::try_from(args.clone())?;
                let running = runtime
                    .spawn(server::start(config))
                    .await?
                    .context("failed to start the coordinator")?;
                Runs::InProcess {
                    runtime: Some(runtime),
                    running: Some(Box::new(running)),
                }
            }
        };
        let (http_addr, grpc_addr) = match &running {
            Runs::Processes(processes) => {
                let first = &processes.members[0];
                (first.http_addr, first.grpc_addr)
            }
            Runs::InProcess { .. } => (args.http_addr, args.grpc_addr),
        };
        let mut coordinator = BenchCoordinator {
            http_addr,
            grpc_addr,
            tls_dir,
            ca_pem,
            admin_token,
            http,
            running,
            dir,
        };
        if let Err(err) = coordinator.wait_ready().await {
            // The replicas' schema goes too.
            let _ = coordinator.stop().await;
            return Err(err);
        }
        Ok(coordinator)
    }

    /// The coordinator's process (the first replica's), for /proc readings.
    pub fn proc(&self) -> Proc {
        self.procs()[0]
    }

    /// Every coordinator process, for /proc readings (a killed replica
    /// has none).
    pub fn procs(&self) -> Vec<Proc> {
        match &self.running {
            Runs::Processes(processes) => processes
                .members
                .iter()
                .filter_map(|m| m.child.as_ref().map(|c| Proc::Pid(c.id())))
                .collect(),
            Runs::InProcess { .. } => vec![Proc::Own],
        }
    }

    /// How many replicas were started.
    pub fn replicas(&self) -> usize {
        match &self.running {
            Runs::Processes(processes) => processes.members.len(),
            Runs::InProcess { .. } => 1,
        }
    }

    /// Replica `i`'s `--replica-id` (`r0`, `r1`, …), as the cluster view
    /// names the leader (`r1#…`).
    pub fn replica_name(&self, i: usize) -> String {
        format!("r{i}")
    }

    /// `http://ip:port` of replica `i`'s API.
    pub fn api_url(&self, i: usize) -> String {
        format!("http://{}", self.member_addrs(i).0)
    }

    /// The agent listeners of every replica, in order.
    pub fn grpc_addrs(&self) -> Vec<SocketAddr> {
        (0..self.replicas())
            .map(|i| self.member_addrs(i).1)
            .collect()
    }

    fn member_addrs(&self, i: usize) -> (SocketAddr, SocketAddr) {
        match &self.running {
            Runs::Processes(processes) => {
                let member = &processes.members[i];
                (member.http_addr, member.grpc_addr)
            }
            Runs::InProcess { .. } => (self.http_addr, self.grpc_addr),
        }
    }

    /// The operator's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The bearer token of `/metrics` (the admin token, which the bench
    /// also sets as `--metrics-token`).
    pub fn metrics_token(&self) -> &str {
        &self.admin_token
    }

    pub fn is_separate_process(&self) -> bool {
        matches!(self.running, Runs::Processes(_))
    }

    /// The scratch directory (database, certificates, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The (first replica's) log, stdout and stderr, when it is a process.
    pub fn log_path(&self) -> PathBuf {
        match &self.running {
            Runs::Processes(processes) => processes.members[0].log.clone(),
            Runs::InProcess { .. } => self.dir.path().join("coordinator.log"),
        }
    }

    pub fn authority(&self) -> anyhow::Result<CertificateAuthority> {
        CertificateAuthority::load(&self.tls_dir).context("failed to load the benchmark CA")
    }

    /// SIGKILL to replica `i`: no drain, no goodbye to its agents.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        match &mut self.running {
            Runs::Processes(processes) => processes.kill(i),
            Runs::InProcess { .. } => bail!("an in-process coordinator cannot be killed"),
        }
    }

    /// Starts replica `i` again on its ports (after [`Self::kill`]);
    /// returns once it answers `/readyz`.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        match &mut self.running {
            Runs::Processes(processes) => processes.spawn(i)?,
            Runs::InProcess { .. } => bail!("an in-process coordinator cannot be restarted"),
        }
        self.wait_ready_one(i).await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        for i in 0..self.replicas() {
            self.wait_ready_one(i).await?;
        }
        Ok(())
    }

    async fn wait_ready_one(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/readyz", self.api_url(i));
        loop {
            if let Runs::Processes(processes) = &mut self.running {
                let member = &mut processes.members[i];
                if let Some(child) = &mut member.child
                    && let Some(status) = child.try_wait()?
                {
                    bail!(
                        "coordinator {} exited ({status}) before it was ready:\n{}",
                        member.name,
                        tail(&member.log, 20)
                    );
                }
            }
            if let Ok(reply) = self.http.get(&url).send().await
                && reply.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "coordinator {} was not ready within 30 s:\n{}",
                    self.replica_name(i),
                    tail(&self.log_path(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Provisions `slugs` through `POST /api/v1/tenants` with `concurrency`
    /// clients; returns the time it took.
    pub async fn provision(
        &self,
        slugs: &[String],
        concurrency: usize,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let slugs: Arc<[String]> = slugs.into();
        let url: Arc<str> = format!("http://{}/api/v1/tenants", self.http_addr).into();
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (next, slugs, url) = (next.clone(), slugs.clone(), url.clone());
                let (http, token) = (self.http.clone(), self.admin_token.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(slug) = slugs.get(i) else {
                            return anyhow::Ok(());
                        };
                        let body = serde_json::json!({
                            "name": format!("Bench Tenant {i}"),
                            "slug": slug,
                            "plan": knowton_common::Plan::ALL[i % 3],
                            "adminEmail": format!("admin@{slug}.example.com"),
                            "domain": format!("{slug}.bench.knowton.example"),
                        });
                        let reply = http
                            .post(&*url)
                            .bearer_auth(&token)
                            .json(&body)
                            .send()
                            .await?;
                        if reply.status() != reqwest::StatusCode::CREATED {
                            let status = reply.status();
                            bail!(
                                "provisioning {slug} answered {status}: {}",
                                reply.text().await?
                            );
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await??;
        }
        Ok(started.elapsed())
    }

    /// The agents and the ingest counters (of the first replica).
    pub async fn agents(&self) -> anyhow::Result<AgentsReport> {
        self.agents_of(0).await
    }

    /// The agents streaming to replica `i` and its ingest counters.
    pub async fn agents_of(&self, i: usize) -> anyhow::Result<AgentsReport> {
        let reply = self
            .http
            .get(format!("{}/api/v1/agents", self.api_url(i)))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .context("GET /api/v1/agents failed")?;
        if !reply.status().is_success() {
            bail!("GET /api/v1/agents answered {}", reply.status());
        }
        Ok(reply.json().await?)
    }

    /// Peak RSS of the coordinator's process (with the load generator when
    /// in-process).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        crate::system::peak_rss_bytes_of(self.proc())
    }

    /// Stops the coordinator after a benchmark that gave `result`; when
    /// that failed, first shows the last `log_lines` of its log (of each
    /// replica's, if it ran as processes).
    pub async fn stop_after<T>(
        self,
        result: anyhow::Result<T>,
        log_lines: usize,
    ) -> anyhow::Result<T> {
        if result.is_err()
            && let Runs::Processes(processes) = &self.running
        {
            for member in &processes.members {
                eprintln!(
                    "coordinator {} log (last lines):\n{}",
                    member.name,
                    tail(&member.log, log_lines)
                );
            }
        }
        self.stop().await?;
        result
    }

    /// Stops the coordinator: SIGTERM and a drain of up to 10 s for each
    /// process (then the replicas' schema is dropped), a shutdown for the
    /// in-process server.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match &mut self.running {
            Runs::Processes(processes) => processes.stop(Duration::from_secs(10)).await,
            Runs::InProcess { runtime, running } => {
                let runtime = runtime.take().expect("present until stopped");
                let result = match running.take() {
                    Some(running) => runtime.spawn(running.shutdown()).await?,
                    None => Ok(()),
                };
                runtime.shutdown_background();
                result.context("coordinator shutdown failed")
            }
        }
    }
}

impl Drop for BenchCoordinator {
    fn drop(&mut self) {
        // Processes kill their children when dropped.
        if let Runs::InProcess { runtime, .. } = &mut self.running
            && let Some(runtime) = runtime.take()
        {
            runtime.shutdown_background();
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("failed to find a free port")?;
    Ok(listener.local_addr()?)
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Slugs `{prefix}-000`, `{prefix}-001`, …
pub fn slugs(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:03}")).collect()
}
