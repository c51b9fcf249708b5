//! The coordinator in-process, on its own runtime, on a fresh SQLite file
//! or a scratch PostgreSQL schema whose tenants are seeded before it starts
//! (the tenant directory is read from the store at start); both removed
//! afterwards.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use knowton_coordinator::api::AppState;
use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::credentials;
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::server::{self, Running};
use rand::RngExt;
use sqlx::Connection;
use tokio::runtime::{Handle, Runtime};

use crate::seed;

/// A serving coordinator and what is needed to talk to it and clean up.
#[derive(Debug)]
pub struct Coordinator {
    runtime: Runtime,
    running: Option<Running>,
    pub base_url: String,
    pub admin_token: String,
    /// Seconds the seeding took.
    pub seed_seconds: f64,
    /// Removed at the end.
    dir: Option<tempfile::TempDir>,
    /// `(server url without search_path, schema)` to drop at the end.
    pg_schema: Option<(String, String)>,
}

impl Coordinator {
    /// Seeds `tenants` into a fresh store, then starts a coordinator on it,
    /// on a new runtime with `threads` workers.
    pub fn start(
        threads: usize,
        postgres_url: Option<&str>,
        data_root: Option<&Path>,
        tenants: usize,
        seed_concurrency: usize,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("coordinator")
            .enable_all()
            .build()
            .context("failed to build the coordinator runtime")?;
        let mut builder = tempfile::Builder::new();
        builder.prefix("knowton-bench-monitoring-");
        let dir = match data_root {
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
            seed_seconds: 0.0,
            dir: Some(dir),
            pg_schema: None,
        };
        let secrets = SecretBox::from_key(&key);
        match coordinator.launch(args, postgres_url, secrets, tenants, seed_concurrency) {
            Ok(()) => Ok(coordinator),
            Err(err) => {
                let _ = coordinator.finish();
                Err(err)
            }
        }
    }

    fn launch(
        &mut self,
        mut args: ServeArgs,
        postgres_url: Option<&str>,
        secrets: SecretBox,
        tenants: usize,
        seed_concurrency: usize,
    ) -> anyhow::Result<()> {
        if let Some(url) = postgres_url {
            let run_id = uuid::Uuid::new_v4().simple().to_string();
            let schema = format!("knowton_bench_monitoring_{}", &run_id[..12]);
            self.runtime
                .block_on(execute(url, &format!("CREATE SCHEMA {schema}")))
                .context("failed to create the benchmark schema")?;
            self.pg_schema = Some((url.to_owned(), schema.clone()));
            args.database_url = with_search_path(url, &schema);
        }
        let config = ServeConfig::try_from(args)?;

        let handle = self.runtime.handle().clone();
        let backend = config.backend.clone();
        let seed_seconds = self.runtime.block_on(async move {
            let store = backend.open().await.context("failed to open the store")?;
            let seeded =
                seed::seed(&handle, store.clone(), secrets, tenants, seed_concurrency).await;
            store.close().await;
            let (seeded, took) = seeded?;
            anyhow::ensure!(
                seeded.len() == tenants,
                "seeded {} tenants of {tenants}",
                seeded.len()
            );
            anyhow::Ok(took.as_secs_f64())
        })?;
        self.seed_seconds = seed_seconds;

        let running = self
            .runtime
            .block_on(server::start(config))
            .context("failed to start the coordinator")?;
        self.base_url = format!("http://{}", running.http_addr);
        self.running = Some(running);
        Ok(())
    }

    /// The coordinator runtime.
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

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.state().store.backend()
    }

    /// Drains the server, then removes its data directory and schema.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        if let Some(running) = self.running.take()
            && let Err(err) = self.runtime.block_on(running.shutdown())
        {
            result = Err(anyhow::Error::new(err).context("coordinator shutdown failed"));
        }
        if let Some((url, schema)) = self.pg_schema.take() {
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            if let Err(err) = self.runtime.block_on(execute(&url, &drop)) {
                eprintln!("warning: failed to drop schema {schema}: {err:#}");
            }
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

async fn execute(url: &str, statement: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("failed to connect to PostgreSQL")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// `url` with the session's search_path set to `schema`.
fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}
