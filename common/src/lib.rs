//! Domain types shared by the KnowTon agent and coordinator.
//!
//! Nothing in this crate does I/O: it is the single definition of what a
//! plan allows, what a valid tenant looks like and when a measurement is a
//! problem, so the coordinator, the agent and the CLI cannot disagree.
//!
//! # Layout
//! - [`plan`]: the three plans, their limits and their feature sets.
//! - [`health`]: the health and alert vocabulary (checks, severities,
//!   statuses, alert states, transition kinds, deployment triggers,
//!   notification channels and message kinds), each name spelled once.
//! - [`features`]: feature flags and how request overrides combine with a plan.
//! - [`namespace`]: the naming of tenant namespaces and the tenant label.
//! - [`thresholds`]: default warning / critical alert thresholds.
//! - [`tenant`]: tenant status, branding and the validation of every field
//!   an operator can send.
//! - [`usage`]: usage counters and their comparison with a plan's limits.
//! - [`ratelimit`]: the arithmetic of a tenant's request budget (GCRA).
//! - [`units`]: byte sizes as people read them.
//! - [`errors`]: an error and its causes on one line, for logs and messages.
//! - [`volume`]: the framed protocol between the coordinator and a volume
//!   pod reading or writing a tenant's files.

pub mod errors;
pub mod features;
pub mod health;
pub mod namespace;
pub mod plan;
pub mod ratelimit;
pub mod tenant;
pub mod thresholds;
pub mod units;
pub mod usage;
pub mod volume;

pub use errors::error_chain;
pub use features::{Feature, FeatureOverrides, Features};
pub use plan::{Plan, PlanLimits};
pub use tenant::{Branding, TenantStatus, ValidationError};
pub use thresholds::{Level, Thresholds};
pub use usage::{LimitViolation, Usage};

/// `bytes` as lowercase hex digits (digests, keyed hashes, ids).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Bytes in one gibibyte.
pub const GIB: u64 = 1024 * 1024 * 1024;
/// Bytes in one tebibyte.
pub const TIB: u64 = 1024 * GIB;
