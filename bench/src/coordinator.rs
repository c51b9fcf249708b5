//! A coordinator for the agent benchmarks, with the agent listener on:
//! the release binary as a child process (so its CPU and memory are its
//! own) or in-process, on SQLite and fresh certificates in a temporary
//! directory; tenants provisioned through its API; its agent counters read
//! back through `GET /api/v1/agents`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
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

use crate::system::Proc;

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub enum Launch {
    /// `BINARY serve …` as a child process.
    Process(PathBuf),
    /// In this process, on a runtime of its own with this many workers.
    InProcess { threads: usize },
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

/// A serving coordinator with the agent listener, and its scratch directory.
#[derive(Debug)]
pub struct BenchCoordinator {
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
    Process(Child),
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
    /// must then be a process of its own.
    pub async fn start_with_env(launch: &Launch, env: &[(&str, String)]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            env.is_empty() || matches!(launch, Launch::Process(_)),
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
        let admin_token = knowton_coordinator::credentials::random_base62(32);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;

        let mut args = ServeArgs::for_dir(dir.path());
        args.tls_dir = Some(tls_dir.clone());
        args.http_addr = free_port()?;
        args.grpc_addr = free_port()?;
        let (http_addr, grpc_addr) = (args.http_addr, args.grpc_addr);
        let running = match launch {
            Launch::Process(binary) => Runs::Process(spawn(
                binary,
                &args,
                &B64.encode(key),
                &admin_token,
                dir.path(),
                env,
            )?),
            Launch::InProcess { threads } => {
                args.secret_key = Some(B64.encode(key));
                args.admin_token = Some(admin_token.clone());
                args.http.metrics_token = Some(admin_token.clone());
                let runtime = crate::runtime(*threads, "coordinator")?;
                let config = ServeConfig::try_from(args)?;
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
        coordinator.wait_ready().await?;
        Ok(coordinator)
    }

    /// The coordinator's process, for /proc readings.
    pub fn proc(&self) -> Proc {
        match &self.running {
            Runs::Process(child) => Proc::Pid(child.id()),
            Runs::InProcess { .. } => Proc::Own,
        }
    }

    /// The bearer token of `/metrics` (the admin token, which the bench
    /// also sets as `--metrics-token`).
    pub fn metrics_token(&self) -> &str {
        &self.admin_token
    }

    pub fn is_separate_process(&self) -> bool {
        matches!(self.running, Runs::Process(_))
    }

    /// The scratch directory (database, certificates, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The child's log (stdout and stderr), when it is a process.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("coordinator.log")
    }

    pub fn authority(&self) -> anyhow::Result<CertificateAuthority> {
        CertificateAuthority::load(&self.tls_dir).context("failed to load the benchmark CA")
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/readyz", self.http_addr);
        loop {
            if let Runs::Process(child) = &mut self.running
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the coordinator exited ({status}) before it was ready:\n{}",
                    tail(&self.log_path(), 20)
                );
            }
            if let Ok(reply) = self.http.get(&url).send().await
                && reply.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the coordinator was not ready within 30 s:\n{}",
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

    /// The agents and the ingest counters.
    pub async fn agents(&self) -> anyhow::Result<AgentsReport> {
        let reply = self
            .http
            .get(format!("http://{}/api/v1/agents", self.http_addr))
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
    /// that failed, first shows the last `log_lines` of its log (if it ran
    /// as a process).
    pub async fn stop_after<T>(
        self,
        result: anyhow::Result<T>,
        log_lines: usize,
    ) -> anyhow::Result<T> {
        if result.is_err() && self.is_separate_process() {
            eprintln!(
                "coordinator log (last lines):\n{}",
                tail(&self.log_path(), log_lines)
            );
        }
        self.stop().await?;
        result
    }

    /// Stops the coordinator: SIGTERM and a drain of up to 10 s for the
    /// process, a shutdown for the in-process server.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match &mut self.running {
            Runs::Process(child) => {
                crate::system::terminate(child, Duration::from_secs(10), "the coordinator").await
            }
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
        match &mut self.running {
            Runs::Process(child) => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            Runs::InProcess { runtime, .. } => {
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
            }
        }
    }
}

fn spawn(
    binary: &Path,
    args: &ServeArgs,
    secret_key: &str,
    admin_token: &str,
    dir: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("coordinator.log"))?;
    let tls_dir = args.tls_dir.as_ref().expect("set above");
    std::process::Command::new(binary)
        .arg("serve")
        .args(["--http-addr", &args.http_addr.to_string()])
        .args(["--grpc-addr", &args.grpc_addr.to_string()])
        .args(["--database-url", &args.database_url])
        .arg("--tls-dir")
        .arg(tls_dir)
        // Secrets through the environment, out of `ps`.
        .env("KNOWTON_SECRET_KEY", secret_key)
        .env("KNOWTON_ADMIN_TOKEN", admin_token)
        // The admin token doubles as the metrics token (see `metrics_token`).
        .env("KNOWTON_METRICS_TOKEN", admin_token)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env(
            "RUST_LOG",
            std::env::var("KNOWTON_BENCH_COORDINATOR_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("failed to start {}", binary.display()))
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
