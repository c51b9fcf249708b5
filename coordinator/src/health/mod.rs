//! Tenant health: every tenant's checks against its plan and thresholds,
//! evaluated as agents' results arrive, and the alerts they open and close.
//!
//! - [`evaluate`]: the checks of one tenant (pure).
//! - [`alerts`]: the life of one alert (a pure state machine).
//! - [`engine`]: the task that runs both on arriving results and records
//!   every transition with its notifications.
//! - [`rollup`]: per-minute history.
//! - [`backups`]: the `backup` check, from what the coordinator recorded
//!   of each tenant's backups (pure).

pub mod alerts;
pub mod backups;
pub mod engine;
pub mod evaluate;
pub mod rollup;

pub use alerts::{AlertPolicy, Tracker, Transition};
pub use engine::{Engine, EngineSettings, TenantHealth};
pub use evaluate::{CheckResult, Evaluation, Inputs, evaluate};
pub use knowton_common::health::{Check, CheckState, HealthStatus, Severity};
