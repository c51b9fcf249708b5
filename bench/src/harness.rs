//! Starts a coordinator in-process, on its own runtime, against a fresh
//! SQLite file or a fresh PostgreSQL schema, and removes both afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::credentials;
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::server::{self, Running};
use knowton_coordinator::store::Store;
use rand::RngExt;
use sqlx::Connection;
use tokio::runtime::{Handle, Runtime};

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

/// A serving coordinator and what is needed to talk to it and clean up.
#[derive(Debug)]
pub struct Coordinator {
    runtime: Runtime,
    running: Option<Running>,
    pub base_url: String,
    pub admin_token: String,
    /// Seals seeded secrets with the key the coordinator uses.
    pub secrets: SecretBox,
    data_dir: PathBuf,
    /// `(server url without search_path, schema)` to drop at the end.
    pg_schema: Option<(String, String)>,
}

impl Coordinator {
    /// Starts a coordinator on a new runtime with `threads` workers.
    pub fn start(
        backend: BackendKind,
        postgres_url: Option<&str>,
        data_root: &Path,
        threads: usize,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("coordinator")
            .enable_all()
            .build()
            .context("failed to build the coordinator runtime")?;
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let data_dir = data_root.join(format!("knowton-bench-{run_id}"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("failed to create {}", data_dir.display()))?;

        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        let admin_token = credentials::random_base62(32);
        let mut args = ServeArgs::for_dir(&data_dir);
        args.secret_key = Some(B64.encode(key));
        args.admin_token = Some(admin_token.clone());

        let mut coordinator = Coordinator {
            runtime,
            running: None,
            base_url: String::new(),
            admin_token,
            secrets: SecretBox::from_key(&key),
            data_dir,
            pg_schema: None,
        };
        match coordinator.launch(backend, postgres_url, args, &run_id) {
            Ok(()) => Ok(coordinator),
            Err(err) => {
                let _ = coordinator.finish();
                Err(err)
            }
        }
    }

    fn launch(
        &mut self,
        backend: BackendKind,
        postgres_url: Option<&str>,
        mut args: ServeArgs,
        run_id: &str,
    ) -> anyhow::Result<()> {
        if backend == BackendKind::Postgres {
            let url = postgres_url.context("postgres needs --postgres-url or TEST_DATABASE_URL")?;
            let schema = format!("knowton_bench_{run_id}");
            self.runtime
                .block_on(execute(url, &format!("CREATE SCHEMA {schema}")))
                .context("failed to create the benchmark schema")?;
            self.pg_schema = Some((url.to_owned(), schema.clone()));
            args.database_url = with_search_path(url, &schema);
        }
        let config = ServeConfig::try_from(args)?;
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

    pub fn store(&self) -> Arc<dyn Store> {
        self.running
            .as_ref()
            .expect("the coordinator runs until finish")
            .state
            .store
            .clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
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
        if let Err(err) = std::fs::remove_dir_all(&self.data_dir) {
            eprintln!(
                "warning: failed to remove {}: {err}",
                self.data_dir.display()
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_is_appended_to_the_query() {
        assert_eq!(
            with_search_path("postgres://p@h/db", "s1"),
            "postgres://p@h/db?options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("postgres://p@h/db?sslmode=disable", "s1"),
            "postgres://p@h/db?sslmode=disable&options=-c%20search_path%3Ds1"
        );
    }
}
