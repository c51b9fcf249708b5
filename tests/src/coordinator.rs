//! A coordinator started in process on a test database, stopped or
//! restarted by the test, with the settings and secrets tests rely on,
//! and the alerts its engine opens from the results a test reports.

use std::time::Duration;

use base64::Engine;
use knowton_common::plan::Plan;
use knowton_coordinator::config::{ServeArgs, ServeConfig};
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::server::{self, Running};
use reqwest::Method;
use serde_json::Value;

use crate::feed::{Feed, Shape, healthy};
use crate::{Db, TestDb, eventually};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The bearer token `/metrics` requires on the API port of test coordinators.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789abcdef";
const SECRET_KEY: [u8; 32] = [42; 32];

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
        let mut args = Self::base_args(db);
        args.notify.notify_retry_base_ms = 50;
        args.notify.notify_retry_max_ms = 500;
        args.notify.notify_timeout_seconds = 10;
        change(&mut args);
        args
    }

    /// What every test coordinator has: `db`, the admin and metrics tokens
    /// and the sealing key.
    fn base_args(db: &TestDb) -> ServeArgs {
        let mut args = ServeArgs::for_dir(db.dir.path());
        args.database_url = db.url.clone();
        args.admin_token = Some(ADMIN_TOKEN.into());
        args.secret_key = Some(base64::engine::general_purpose::STANDARD.encode(SECRET_KEY));
        args.http.metrics_token = Some(METRICS_TOKEN.into());
        // Tenants' files beside the test's database, whatever the backend.
        args.tenant_data.tenant_storage_dir = Some(db.dir.path().join("tenants"));
        // Backups beside it too (with PostgreSQL there is no default).
        args.backup.backup_url = Some(format!(
            "file://{}",
            db.dir.path().join("backups").display()
        ));
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
        let mut args = Self::base_args(&db);
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

    /// Another replica on this coordinator's database, its API on a port
    /// of its own, with `change` made to the test arguments; and its base
    /// URL.
    pub async fn another_replica(&self, change: impl FnOnce(&mut ServeArgs)) -> (Running, String) {
        let args = Self::args_for(&self.db, |args| {
            args.http_addr = "127.0.0.1:0".parse().unwrap();
            change(args);
        });
        let config = ServeConfig::try_from(args).expect("valid test configuration");
        let running = server::start(config).await.expect("the replica starts");
        let base = format!("http://{}", running.http_addr);
        (running, base)
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

    /// The REST API's bound address, for raw TCP clients.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").http_addr
    }

    /// The metrics listener's address, when `--metrics-addr` is set.
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

    /// Reports the pod of the tenant in `provisioned` (a 201 body of
    /// `POST /api/v1/tenants`) with its volume 96% full, as `feed`'s agent
    /// would, and returns the critical storage alert the engine opens for
    /// it: `storage at 96% of <the plan's storage>`.
    pub async fn fill_storage(&self, feed: &mut Feed, provisioned: &Value) -> Value {
        let tenant = &provisioned["tenant"];
        let slug = tenant["slug"].as_str().expect("a slug");
        let plan: Plan = tenant["plan"].as_str().expect("a plan").parse().unwrap();
        let used = plan.limits().storage_bytes / 100 * 96;
        feed.send(vec![healthy(slug, "web-0").storage(used)]);
        let mut open = self.open_alerts(slug, 1).await;
        open.remove(0)
    }

    /// The open alerts of `tenant` once there are `count`, as
    /// `GET /api/v1/monitoring/alerts?resolved=false` lists them.
    pub async fn open_alerts(&self, tenant: &str, count: usize) -> Vec<Value> {
        let what = format!("{count} open alerts of {tenant}");
        eventually(Duration::from_secs(20), &what, || async {
            let path = "/api/v1/monitoring/alerts?resolved=false&limit=200";
            let reply = self.admin(Method::GET, path, None).await;
            let open: Vec<Value> = reply.body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["tenant"] == tenant)
                .cloned()
                .collect();
            (open.len() == count).then_some(open)
        })
        .await
    }

    /// One alert with its history (`GET /api/v1/monitoring/alerts/{id}`).
    pub async fn alert(&self, id: &str) -> Value {
        let path = format!("/api/v1/monitoring/alerts/{id}");
        let reply = self.admin(Method::GET, &path, None).await;
        assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
        reply.body
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
