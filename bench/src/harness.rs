//! The coordinator in-process for the benchmarks that drive it directly: on
//! its own runtime, on a fresh SQLite file or a scratch PostgreSQL schema
//! (seeded first, if asked, since the tenant directory is read from the
//! store at start); both removed afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use knowton_coordinator::api::AppState;
use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::credentials;
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::server::{self, Running};
use knowton_coordinator::store::Store;
use rand::RngExt;
use tokio::runtime::{Handle, Runtime};

use crate::postgres::Schema;
use crate::seed;

/// Which database a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }
}

/// How to start a benchmark's coordinator.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// Prefix of the scratch directory and schema, e.g. `knowton-bench`.
    pub name: &'a str,
    /// Workers of the coordinator's runtime.
    pub threads: usize,
    /// The PostgreSQL server to use (in a scratch schema); SQLite if `None`.
    pub postgres_url: Option<&'a str>,
    /// Where the scratch directory goes; the system's temporary directory
    /// if `None`.
    pub data_root: Option<&'a Path>,
    /// Tenants to write into the store before the coordinator starts.
    pub seed: Option<Seed>,
}

/// Tenants seeded before the start, and how many tasks write them.
#[derive(Debug, Clone, Copy)]
pub struct Seed {
    pub tenants: usize,
    pub concurrency: usize,
}

/// A serving coordinator and what is needed to talk to it and clean up.
#[derive(Debug)]
pub struct Coordinator {
    runtime: Runtime,
    running: Option<Running>,
    pub base_url: String,
    /// The admin token, which is the metrics token too.
    pub admin_token: String,
    /// Seals seeded secrets with the key the coordinator uses.
    pub secrets: SecretBox,
    /// Seconds the seeding before the start took (0 without).
    pub seed_seconds: f64,
    /// Removed at the end.
    dir: Option<tempfile::TempDir>,
    /// Dropped at the end.
    pg_schema: Option<Schema>,
}

impl Coordinator {
    /// Starts a coordinator on a new runtime, as `settings` say.
    pub fn start(settings: Settings<'_>) -> anyhow::Result<Self> {
        let runtime = crate::runtime(settings.threads, "coordinator")?;
        let mut builder = tempfile::Builder::new();
        let prefix = format!("{}-", settings.name);
        builder.prefix(&prefix);
        let dir = match settings.data_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .context("failed to create a scratch directory")?;

        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        let admin_token = credentials::random_base62(32);
        let mut args = ServeArgs::for_dir(dir.path());
        args.secret_key = Some(B64.encode(key));
        args.admin_token = Some(admin_token.clone());
        // The admin token doubles as the metrics token.
        args.http.metrics_token = Some(admin_token.clone());

        let mut coordinator = Coordinator {
            runtime,
            running: None,
            base_url: String::new(),
            admin_token,
            secrets: SecretBox::from_key(&key),
            seed_seconds: 0.0,
            dir: Some(dir),
            pg_schema: None,
        };
        match coordinator.launch(args, &settings) {
            Ok(()) => Ok(coordinator),
            Err(err) => {
                let _ = coordinator.finish();
                Err(err)
            }
        }
    }

    fn launch(&mut self, mut args: ServeArgs, settings: &Settings<'_>) -> anyhow::Result<()> {
        if let Some(url) = settings.postgres_url {
            let schema = self.runtime.block_on(Schema::create(url, settings.name))?;
            args.database_url = schema.url.clone();
            self.pg_schema = Some(schema);
        }
        let config = ServeConfig::try_from(args)?;

        if let Some(Seed {
            tenants,
            concurrency,
        }) = settings.seed
        {
            let handle = self.runtime.handle().clone();
            let backend = config.backend.clone();
            let secrets = self.secrets.clone();
            self.seed_seconds = self.runtime.block_on(async move {
                let store = backend.open().await.context("failed to open the store")?;
                let seeded =
                    seed::seed(&handle, store.clone(), secrets, tenants, concurrency).await;
                store.close().await;
                let (seeded, took) = seeded?;
                anyhow::ensure!(
                    seeded.len() == tenants,
                    "seeded {} tenants of {tenants}",
                    seeded.len()
                );
                anyhow::Ok(took.as_secs_f64())
            })?;
        }

        let running = self
            .runtime
            .block_on(server::start(config))
            .context("failed to start the coordinator")?;
        self.base_url = format!("http://{}", running.http_addr);
        self.running = Some(running);
        Ok(())
    }

    /// The coordinator runtime, for work that uses the store directly.
    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    pub fn state(&self) -> &AppState {
        &self
            .running
            .as_ref()
            .expect("the coordinator runs until finish")
            .state
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.state().store.clone()
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.state().store.backend()
    }

    /// The scratch directory (the SQLite database is in it).
    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("kept until finish").path()
    }

    /// Drains the server, then removes its data directory and schema.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        if let Some(running) = self.running.take()
            && let Err(err) = self.runtime.block_on(running.shutdown())
        {
            result = Err(anyhow::Error::new(err).context("coordinator shutdown failed"));
        }
        if let Some(schema) = self.pg_schema.take() {
            self.runtime.block_on(schema.drop());
        }
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if let Err(err) = dir.close() {
                eprintln!("warning: failed to remove {}: {err}", path.display());
            }
        }
        result
    }
}
