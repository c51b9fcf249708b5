//! The KnowTon coordinator: the tenant registry, tenant provisioning and
//! lifecycle, and the REST API and CLI that operators use.
//!
//! # Layout
//! - [`server`]: load, bind, spawn, drain: the lifecycle of `serve`.
//! - [`config`]: `serve` flags and their validation.
//! - [`listen`]: the HTTP listeners' connection limit and timeouts.
//! - [`api`]: REST routes, authentication, rate limiting, errors, OpenAPI.
//! - [`provision`]: the tenant lifecycle (provision, change, rotate keys,
//!   deprovision, purge), the one owner the API, the CLI and the demo call.
//! - [`deploy`]: each tenant's Kubernetes objects.
//! - [`directory`]: the live set of active tenant slugs the ingest path checks.
//! - [`health`]: tenant health evaluation, alerts and rollups.
//! - [`metrics`]: Prometheus registries and rendering from published snapshots
//!   (the `/metrics` handler is [`api::metrics`]).
//! - [`notify`]: notification channels, rendering, and durable delivery
//!   from the outbox (e-mail, webhooks, Slack).
//! - [`store`]: the tenant registry on SQLite or PostgreSQL.
//! - [`secrets`]: encryption at rest of deployment secrets and sealed messages.
//! - [`credentials`]: API keys, passwords and their hashes.
//! - [`cli`], [`client`]: the command line and its REST client commands.
//! - [`demo`]: `demo`, the whole system in one process with simulated tenants.
//! - `sim`: simulated tenant pods for `demo`, the tests and the benchmarks
//!   (hidden from the docs: not part of the coordinator proper).

pub mod api;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod deploy;
pub mod directory;
pub mod health;
pub mod ingest;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod provision;
pub mod secrets;
pub mod server;
#[doc(hidden)]
pub mod sim;
pub mod store;
pub mod tls;
