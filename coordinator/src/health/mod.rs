//! Tenant health: every tenant's checks against its plan and thresholds,
//! evaluated as agents' results arrive, and the alerts they open and close.

pub mod alerts;
pub mod evaluate;

pub use alerts::{AlertPolicy, Severity, Tracker, Transition};
pub use evaluate::{Check, CheckResult, CheckState, Evaluation, Inputs, Status, evaluate};
