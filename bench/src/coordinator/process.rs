//! Coordinator processes: `knowton-coordinator serve` children, one or
//! several replicas of one database, each with its own ports and log, and
//! started again on the same ports after a kill.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::postgres::Schema;

/// The coordinator processes and what each is started with.
#[derive(Debug)]
pub(super) struct Processes {
    binary: PathBuf,
    /// `serve` settings every replica gets, as environment variables
    /// (secrets included: they stay out of `ps`).
    env: Vec<(String, String)>,
    tls_dir: PathBuf,
    pub members: Vec<Member>,
    /// The replicas' PostgreSQL schema, dropped at the end.
    pub schema: Option<Schema>,
}

/// One coordinator process.
#[derive(Debug)]
pub(super) struct Member {
    /// Its `--replica-id`: `r0`, `r1`, …
    pub name: String,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// `None` while killed.
    pub child: Option<Child>,
    /// stdout and stderr, appended to over restarts.
    pub log: PathBuf,
}

impl Processes {
    /// Starts `count` processes with `env` (DATABASE_URL and the secrets
    /// included), each on free ports, logging into `dir`; does not wait for
    /// them to be ready.
    pub fn start(
        binary: &Path,
        count: usize,
        env: Vec<(String, String)>,
        tls_dir: &Path,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut processes = Processes {
            binary: binary.to_owned(),
            env,
            tls_dir: tls_dir.to_owned(),
            members: Vec::new(),
            schema: None,
        };
        for i in 0..count {
            // One process keeps the log name it always had.
            let log = if count == 1 {
                dir.join("coordinator.log")
            } else {
                dir.join(format!("coordinator-r{i}.log"))
            };
            processes.members.push(Member {
                name: format!("r{i}"),
                http_addr: super::free_port()?,
                grpc_addr: super::free_port()?,
                child: None,
                log,
            });
            processes.spawn(i)?;
        }
        Ok(processes)
    }

    /// Starts member `i`'s process (again, after a kill).
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let member = &self.members[i];
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&member.log)
            .with_context(|| format!("failed to open {}", member.log.display()))?;
        let child = std::process::Command::new(&self.binary)
            .arg("serve")
            .args(["--replica-id", &member.name])
            .args(["--http-addr", &member.http_addr.to_string()])
            .args(["--grpc-addr", &member.grpc_addr.to_string()])
            .arg("--tls-dir")
            .arg(&self.tls_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("KNOWTON_BENCH_COORDINATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", self.binary.display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// SIGKILL to member `i`, and waits for it to be gone.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM to every process, each given `grace` to drain; then the
    /// schema goes.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        let mut result = Ok(());
        for member in &mut self.members {
            if let Some(child) = &mut member.child {
                let what = format!("coordinator {}", member.name);
                let stopped = crate::system::terminate(child, grace, &what).await;
                result = result.and(stopped);
            }
        }
        if let Some(schema) = self.schema.take() {
            schema.drop().await;
        }
        result
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = &mut member.child
                && let Ok(None) = child.try_wait()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
