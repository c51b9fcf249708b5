//! Test support: a coordinator started in process on SQLite or on its own
//! PostgreSQL schema, an HTTP client for it, and direct database access for
//! the assertions that must look at what was stored.
//!
//! PostgreSQL tests run when `TEST_DATABASE_URL` is set (`.ci/run` sets it);
//! each test gets its own schema, so tests run in parallel.

pub mod fake_kube;
pub mod feed;
pub use knowton_coordinator::demo::pods;
pub mod receiver;
pub mod smtp;

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::server::{self, Running};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The bearer token `/metrics` requires on the API port of test coordinators.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789abcdef";
const SECRET_KEY: [u8; 32] = [42; 32];

/// Runs the same test body on every available backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestCoordinator::start($crate::Db::Sqlite).await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::postgres_url().is_some() {
                        super::$name($crate::TestCoordinator::start($crate::Db::Postgres).await).await
                    } else {
                        eprintln!("TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
                    }
                }
            )*
        }
    };
}

/// Like [`on_every_backend!`] for tests that start their coordinator
/// themselves (with settings of their own): each gets the [`Db`] to use.
#[macro_export]
macro_rules! on_every_db {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::postgres_url().is_some() {
                        super::$name($crate::Db::Postgres).await
                    } else {
                        eprintln!("TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
                    }
                }
            )*
        }
    };
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A database of its own for one test: a SQLite file in a temporary
/// directory, or a fresh PostgreSQL schema (dropped on drop).
#[derive(Debug)]
pub struct TestDb {
    pub kind: Db,
    pub url: String,
    pub dir: TempDir,
    schema: Option<String>,
    pool: tokio::sync::OnceCell<Pool>,
}

/// A connection pool of the test's own, opened on first use (after the
/// coordinator has created the database).
#[derive(Debug)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl TestDb {
    pub async fn new(kind: Db) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        match kind {
            Db::Sqlite => TestDb {
                kind,
                url: format!("sqlite:{}", dir.path().join("knowton.db").display()),
                dir,
                schema: None,
                pool: Default::default(),
            },
            Db::Postgres => {
                let base = postgres_url().expect("TEST_DATABASE_URL");
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&base)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&pool)
                    .await
                    .expect("create test schema");
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    kind,
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    dir,
                    schema: Some(schema),
                    pool: Default::default(),
                }
            }
        }
    }

    async fn pool(&self) -> &Pool {
        self.pool
            .get_or_init(|| async {
                match self.kind {
                    Db::Sqlite => Pool::Sqlite(sqlx::SqlitePool::connect(&self.url).await.unwrap()),
                    Db::Postgres => Pool::Postgres(sqlx::PgPool::connect(&self.url).await.unwrap()),
                }
            })
            .await
    }

    /// Runs `sql` (DDL or DML without results).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.pool().await {
            Pool::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Pool::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }

    /// Rows of `sql`, every column cast to text (NULL as `None`).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        macro_rules! collect {
            ($pool:expr) => {{
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_all($pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| row.try_get::<Option<String>, _>(i).unwrap())
                            .collect()
                    })
                    .collect()
            }};
        }
        match self.pool().await {
            Pool::Sqlite(pool) => collect!(pool),
            Pool::Postgres(pool) => collect!(pool),
        }
    }

    /// The first column of the first row.
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        self.rows(sql)
            .await
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// The application's tables (without the migrations bookkeeping).
    pub async fn tables(&self) -> Vec<String> {
        let sql = match self.kind {
            Db::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                           AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name"
            }
            Db::Postgres => {
                "SELECT table_name::text FROM information_schema.tables \
                             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                             ORDER BY table_name"
            }
        };
        self.rows(sql)
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect()
    }

    pub async fn columns(&self, table: &str) -> Vec<String> {
        let sql = match self.kind {
            Db::Sqlite => format!("SELECT name FROM pragma_table_info('{table}')"),
            Db::Postgres => format!(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
            ),
        };
        self.rows(&sql)
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect()
    }

    /// Every value of every column of every table, as text.
    pub async fn every_value(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for table in self.tables().await {
            for column in self.columns(&table).await {
                let cast = match self.kind {
                    Db::Sqlite => format!("SELECT CAST(\"{column}\" AS TEXT) FROM \"{table}\""),
                    Db::Postgres => format!("SELECT \"{column}\"::text FROM \"{table}\""),
                };
                for row in self.rows(&cast).await {
                    if let Some(value) = row.into_iter().next().flatten() {
                        out.push((table.clone(), column.clone(), value));
                    }
                }
            }
        }
        out
    }

    /// Rows in each table that belong to `tenant_id`.
    pub async fn rows_of_tenant(&self, tenant_id: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for table in self.tables().await {
            let column = if table == "tenants" {
                "id"
            } else {
                "tenant_id"
            };
            if !self.columns(&table).await.iter().any(|c| c == column) {
                continue;
            }
            let n = self
                .scalar(&format!(
                    "SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE {column} = '{tenant_id}'"
                ))
                .await
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            out.push((table, n));
        }
        out
    }

    /// Total rows in every application table except `meta`.
    pub async fn total_rows(&self) -> usize {
        let mut total = 0;
        for table in self.tables().await {
            if table == "meta" {
                continue;
            }
            total += self
                .scalar(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
                .await
                .unwrap_or_default()
                .parse::<usize>()
                .unwrap_or(0);
        }
        total
    }

    /// Makes the next INSERT into `table` fail inside the database.
    pub async fn fail_inserts_into(&self, table: &str) {
        let sql = match self.kind {
            Db::Sqlite => format!(
                "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ),
            Db::Postgres => format!(
                "CREATE FUNCTION fail_{table}() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
                 CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION fail_{table}();"
            ),
        };
        self.execute(&sql).await;
    }

    pub async fn stop_failing_inserts_into(&self, table: &str) {
        let sql = match self.kind {
            Db::Sqlite => format!("DROP TRIGGER fail_{table};"),
            Db::Postgres => {
                format!("DROP TRIGGER fail_{table} ON {table}; DROP FUNCTION fail_{table}();")
            }
        };
        self.execute(&sql).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(schema), Some(base)) = (self.schema.take(), postgres_url()) else {
            return;
        };
        // Best effort, on a thread of its own: Drop cannot be async.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&base).await.ok()?;
                // Never hang a test on a lock a leaked connection still holds.
                let sql = format!("SET lock_timeout = '5s'; DROP SCHEMA {schema} CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A coordinator serving on a loopback port, with its own database.
#[derive(Debug)]
pub struct TestCoordinator {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    running: Option<Running>,
    args: ServeArgs,
}

impl TestCoordinator {
    pub async fn start(kind: Db) -> Self {
        Self::start_and(kind, |_| {}).await
    }

    /// [`Self::start`], with `change` applied to the settings.
    pub async fn start_and(kind: Db, change: impl FnOnce(&mut ServeArgs)) -> Self {
        let db = TestDb::new(kind).await;
        let args = Self::args_for(&db, change);
        Self::start_with(db, args).await
    }

    /// The settings [`Self::start`] uses for `db`, with `change` applied.
    /// Notification retries are fast (50 ms doubling to 500 ms) so that
    /// tests of retries take a moment.
    pub fn args_for(db: &TestDb, change: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut args = ServeArgs::for_dir(db.dir.path());
        args.database_url = db.url.clone();
        args.admin_token = Some(ADMIN_TOKEN.into());
        args.secret_key = Some(base64::engine::general_purpose::STANDARD.encode(SECRET_KEY));
        args.http.metrics_token = Some(METRICS_TOKEN.into());
        args.notify.notify_retry_base_ms = 50;
        args.notify.notify_retry_max_ms = 500;
        args.notify.notify_timeout_seconds = 10;
        change(&mut args);
        args
    }

    /// A coordinator with the agent listener on, certificates in `tls_dir`
    /// (`certs init` layout), re-read every second.
    pub async fn start_with_agents(kind: Db, tls_dir: &std::path::Path) -> Self {
        Self::start_with_agents_and(kind, tls_dir, |_| {}).await
    }

    /// [`Self::start_with_agents`], with `change` applied to the settings.
    pub async fn start_with_agents_and(
        kind: Db,
        tls_dir: &std::path::Path,
        change: impl FnOnce(&mut ServeArgs),
    ) -> Self {
        let db = TestDb::new(kind).await;
        let mut args = ServeArgs::for_dir(db.dir.path());
        args.database_url = db.url.clone();
        args.admin_token = Some(ADMIN_TOKEN.into());
        args.secret_key = Some(base64::engine::general_purpose::STANDARD.encode(SECRET_KEY));
        args.http.metrics_token = Some(METRICS_TOKEN.into());
        args.tls_dir = Some(tls_dir.to_owned());
        args.tls_reload_seconds = 1;
        change(&mut args);
        Self::start_with(db, args).await
    }

    /// The agents' gRPC address.
    pub fn grpc_addr(&self) -> std::net::SocketAddr {
        self.running
            .as_ref()
            .and_then(|r| r.grpc_addr)
            .expect("agent listener on")
    }

    pub async fn start_with(db: TestDb, args: ServeArgs) -> Self {
        log_to_test_output();
        let config = ServeConfig::try_from(args.clone()).expect("valid test configuration");
        let running = server::start(config).await.expect("coordinator starts");
        let mut args = args;
        // A restart comes back on the same addresses.
        args.http_addr = running.http_addr;
        if let Some(grpc) = running.grpc_addr {
            args.grpc_addr = grpc;
        }
        TestCoordinator {
            base: format!("http://{}", running.http_addr),
            http: knowton_coordinator::client::http_client(),
            db,
            running: Some(running),
            args,
        }
    }

    /// Stops the coordinator (draining) and returns what is needed to
    /// start it again on the same database and addresses.
    pub async fn stop_for_restart(mut self) -> (TestDb, ServeArgs) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
        (self.db, self.args)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    /// The metrics listener's address, when `--metrics-addr` is set.
    /// The REST API's bound address, for raw TCP clients.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").http_addr
    }

    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.as_ref().and_then(|r| r.metrics_addr)
    }

    /// The running server's shared state.
    pub fn running_state(&self) -> knowton_coordinator::api::AppState {
        self.running.as_ref().expect("running").state.clone()
    }

    /// The key the test coordinator seals with.
    pub fn secret_box(&self) -> SecretBox {
        SecretBox::from_key(&SECRET_KEY)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /metrics` with the metrics token: the exposition text.
    pub async fn scrape(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("scrape reaches the coordinator");
        assert_eq!(response.status(), StatusCode::OK, "scrape /metrics");
        response.text().await.expect("metrics body")
    }

    /// Sends a request with `token`, JSON `body`, and returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Reply::from(req.send().await.expect("request reaches the coordinator")).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// Provisions a tenant through the API and returns the 201 body.
    pub async fn provision(&self, slug: &str, plan: &str) -> Value {
        let reply = self
            .admin(
                Method::POST,
                "/api/v1/tenants",
                Some(tenant_request(slug, plan)),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "provision {slug}: {}",
            reply.body
        );
        reply.body
    }

    /// `GET /api/v1/monitoring/health` for `slug`, as the admin.
    pub async fn monitoring_health(&self, slug: &str) -> Reply {
        let response = self
            .http
            .get(self.url("/api/v1/monitoring/health"))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Tenant-Slug", slug)
            .send()
            .await
            .expect("request reaches the coordinator");
        Reply::from(response).await
    }

    /// `GET /api/v1/monitoring/notifications?<query>` (up to 200), as the admin.
    pub async fn notifications(&self, query: &str) -> Vec<Value> {
        let reply = self
            .admin(
                Method::GET,
                &format!("/api/v1/monitoring/notifications?limit=200&{query}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Enqueues the notifications of `event` as the alert engine would, and
    /// returns how many rows it wrote.
    pub async fn notify_alert(
        &self,
        event: &knowton_coordinator::notify::render::AlertEvent,
    ) -> usize {
        let state = self.running_state();
        let tenant = state.service.get(event.tenant_id).await.expect("tenant");
        state
            .notify
            .notify_alert(&tenant, event)
            .await
            .expect("notifications enqueued")
    }

    /// Number of tenants the API lists.
    pub async fn tenant_count(&self) -> usize {
        let reply = self
            .admin(Method::GET, "/api/v1/tenants?limit=200", None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["tenants"].as_array().map_or(0, Vec::len)
    }
}

/// A storage alert of the tenant in `provisioned` (a 201 body of
/// `POST /api/v1/tenants`): `[CRITICAL] <slug>: storage at 96% of 1 Ti`,
/// resolved when `resolved`.
pub fn storage_alert(
    provisioned: &Value,
    alert_id: uuid::Uuid,
    sequence: i64,
    resolved: bool,
) -> knowton_coordinator::notify::render::AlertEvent {
    use knowton_coordinator::notify::render::{AlertEvent, AlertStatus, Severity};
    let tenant = &provisioned["tenant"];
    let starts_at = chrono::Utc::now() - chrono::Duration::minutes(5);
    AlertEvent {
        alert_id,
        sequence,
        tenant_id: tenant["id"].as_str().unwrap().parse().unwrap(),
        tenant_slug: tenant["slug"].as_str().unwrap().to_owned(),
        tenant_name: tenant["name"].as_str().unwrap().to_owned(),
        plan: tenant["plan"].as_str().unwrap().parse().unwrap(),
        check: knowton_common::health::Check::Storage,
        severity: Severity::Critical,
        status: if resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        },
        summary: "storage at 96% of 1 Ti".into(),
        value: "96%".into(),
        threshold: "95%".into(),
        starts_at,
        ends_at: resolved.then(chrono::Utc::now),
    }
}

/// A valid provisioning request for `slug`.
pub fn tenant_request(slug: &str, plan: &str) -> Value {
    json!({
        "name": format!("{slug} Corp"),
        "slug": slug,
        "plan": plan,
        "adminEmail": format!("admin@{slug}.example.com"),
        "domain": format!("{slug}.knowton.example.com"),
    })
}

/// A response: status, headers and JSON body (`Null` if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error response and returns its `(code, field)`.
    pub fn error(&self, status: StatusCode) -> (String, String) {
        assert_eq!(self.status, status, "{}", self.body);
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        (
            error["code"].as_str().unwrap_or_default().to_owned(),
            error["field"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// Sends the coordinator's logs (warnings, and info with `RUST_LOG`) to
/// the test's captured output, shown when it fails.
pub fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_showing(timeout, what, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`] for a `check` that says what it saw instead (`Err`): the
/// last of which the panic shows.
pub async fn eventually_showing<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}{}{seen}",
            if seen.is_empty() { "" } else { "; last seen: " }
        );
    }
}

/// Waits until `gone` is no longer probed: `kept` went through three more
/// rounds (probes of `/health`) since `gone` last was.
pub async fn until_no_longer_probed(gone: &pods::SimPod, kept: &pods::SimPod, what: &str) {
    let mut last = (gone.requests("/health"), kept.requests("/health"));
    eventually(Duration::from_secs(20), what, || {
        let now = (gone.requests("/health"), kept.requests("/health"));
        if now.0 != last.0 {
            last = now;
        }
        let quiet_rounds = now.1 - last.1;
        async move { (quiet_rounds >= 3).then_some(()) }
    })
    .await;
}
