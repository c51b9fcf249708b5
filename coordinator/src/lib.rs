//! The KnowTon coordinator: the tenant registry, tenant provisioning and
//! lifecycle, and the REST API and CLI that operators use.
//!
//! # Layout
//! Bottom to top; a module uses only its own layer and those above it in
//! this list (`tests/architecture.rs` checks it).
//! 1. [`certs`], [`tls`], [`secrets`], [`credentials`]: certificates, TLS
//!    configuration, encryption at rest of secrets and sealed messages, API
//!    keys and password hashes.
//! 2. [`store`]: tenants, keys, outbox, alerts, deployments on SQLite or
//!    PostgreSQL.
//! 3. [`leader`]: which replica leads, by the store's fenced lease;
//!    [`replicas`]: the replicas' heartbeats and the view of all of them;
//!    [`directory`]: the live set of active tenant slugs; [`notify`]:
//!    notification channels, rendering and durable delivery from the outbox
//!    (e-mail, webhooks, Slack); [`ingest`]: the agents' streams, their
//!    latest results and placement; [`tenant_data`]: each tenant's own
//!    database and role, and its files without a cluster; [`backup`]: their
//!    backups in a repository of sealed, write-once chunks and manifests,
//!    restore and verification.
//! 4. [`health`]: tenant health evaluation, alerts, rollups and the engine
//!    publishing each tenant's snapshot.
//! 5. [`deploy`]: each tenant's Kubernetes objects, rollouts, drift and
//!    scaling.
//! 6. [`provision`]: the tenant lifecycle (provision, change, rotate keys,
//!    deprovision, purge), the one owner the API, the CLI and the demo call.
//! 7. [`metrics`]: Prometheus registries and rendering from published
//!    snapshots (the `/metrics` handler is [`api::metrics`]).
//! 8. [`listen`]: the HTTP listeners' connection limit and timeouts;
//!    [`api`]: REST routes, authentication, rate limiting, errors, OpenAPI.
//! 9. [`config`]: `serve` flags and their validation; [`server`]: load,
//!    bind, spawn, drain: the lifecycle of `serve`.
//! 10. [`cli`], [`client`]: the command line and its REST client commands;
//!     [`demo`]: the whole system in one process with simulated tenants;
//!     `sim`: the simulated tenant pods `demo`, the tests and the benchmarks
//!     share (hidden from the docs: not part of the coordinator proper).

pub mod api;
pub mod backup;
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
pub mod leader;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod provision;
pub mod replicas;
pub mod secrets;
pub mod server;
#[doc(hidden)]
pub mod sim;
pub mod store;
pub mod tenant_data;
pub mod tls;
