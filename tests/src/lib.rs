//! Test support: a coordinator started in process on SQLite or on its own
//! PostgreSQL schema, an HTTP client for it, and direct database access for
//! the assertions that must look at what was stored.
//!
//! PostgreSQL tests run when `TEST_DATABASE_URL` is set (`.ci/run` sets it);
//! each test gets its own schema, so tests run in parallel.
//!
//! # Layout
//! - [`agent`]: test agents: a real one in process, a fake agent's stream.
//! - [`backend`]: [`on_every_backend!`], one test on every backend.
//! - [`db`]: [`TestDb`], each test's own database, read directly.
//! - [`coordinator`]: [`TestCoordinator`], started, stopped and restarted.
//! - [`http`]: requests to it and their [`Reply`].
//! - [`process`]: the coordinator binary as a process of its own, and
//!   reads of any coordinator by its base URL.
//! - [`proxy`]: a TCP proxy to cut and restore (a network partition).
//! - [`cluster`]: a high-availability installation: coordinator
//!   processes on one PostgreSQL database, a real agent streaming to all,
//!   a pod per tenant and a webhook receiver.
//! - [`fixtures`]: tenant requests and alert events.
//! - [`eventually`]: polling with a deadline.
//! - [`fake_kube`]: a fake Kubernetes API server.
//! - [`deploy`]: tenant deployments on it, and waits for their phases.
//! - [`feed`]: agent result batches.
//! - [`receiver`]: webhook receivers that record what they are sent.
//! - [`promtool`]: `promtool check metrics` on a scrape.
//! - [`smtp`]: an SMTP server that records the mail it is sent.
//! - [`s3`]: an S3 server (moto's) with a bucket and signed access.
//!
//! Simulated tenant pods are the coordinator's `knowton_coordinator::sim`.

pub mod agent;
pub mod backend;
pub mod cluster;
pub mod coordinator;
pub mod db;
pub mod deploy;
pub mod eventually;
pub mod fake_kube;
pub mod feed;
pub mod fixtures;
pub mod http;
pub mod process;
pub mod promtool;
pub mod proxy;
pub mod receiver;
pub mod s3;
pub mod smtp;

pub use backend::{Db, postgres_url};
pub use coordinator::{ADMIN_TOKEN, METRICS_TOKEN, TestCoordinator, log_to_test_output};
pub use db::{TestDb, as_tenant, tenant_database};
pub use eventually::{eventually, eventually_showing, until_no_longer_probed};
pub use fixtures::{storage_alert, tenant_request};
pub use http::Reply;
