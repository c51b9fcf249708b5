//! The health and alert vocabulary shared by the store, engine, notifications, metrics and API.
//!
//! Each set is an enum whose string form is written once, in its
//! declaration below: `as_str`, `FromStr`, `Display` and serde all use it,
//! so a check, a severity or a transition kind cannot be spelled two ways.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A name that is not one of an enum's: what was being parsed and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected one of {expected}")]
pub struct UnknownName {
    /// What was being parsed, e.g. `check`.
    pub what: &'static str,
    pub value: String,
    /// The names it could have been, comma-separated.
    pub expected: String,
}

/// Declares an enum with one string per variant, and derives from that one
/// place `ALL`, `as_str`, `Display`, `FromStr` and serde (the variant's
/// `#[serde(rename)]` is the same string).
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        // By hand: the derive does not see `rename` attributes that come
        // from a macro's arguments, and would document the variants' Rust
        // names instead of the strings on the wire.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    other => Err(UnknownName {
                        what: $what,
                        value: other.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

vocabulary! {
    /// The checks evaluated for every tenant.
    pub enum Check ("check") {
        /// The tenant's pods reach their database (`/api/health`'s `database`).
        Database = "database",
        /// `/api/health` answers on the tenant's pods.
        ApiHealth = "api_health",
        /// Volume usage against the plan's storage.
        Storage = "storage",
        /// `knowton_tenant_users` against the plan's users.
        Users = "users",
        /// Request rate against the plan's API rate limit.
        ApiRate = "api_rate",
        /// Share of responses that are 5xx.
        ErrorRate = "error_rate",
        /// API latency of the slowest pod.
        ResponseTime = "response_time",
        /// The tenant's backups: their age, failed runs, and whether the
        /// latest verification passed (judged by the coordinator, not
        /// from pods; it does not change the tenant's status).
        Backup = "backup",
    }
}

vocabulary! {
    /// Where one check stands, from no data to worst.
    pub enum CheckState ("check state") {
        /// No data to judge by (no pod reported it).
        Unknown = "unknown",
        Ok = "ok",
        Warning = "warning",
        Critical = "critical",
    }
}

impl CheckState {
    /// The state as a gauge value: unknown -1, ok 0, warning 1, critical 2
    /// (the declaration order, as `Ord`).
    pub fn rank(self) -> i8 {
        self as i8 - 1
    }

    /// The severity of an alert this state opens, if it is a breach.
    pub fn severity(self) -> Option<Severity> {
        match self {
            CheckState::Warning => Some(Severity::Warning),
            CheckState::Critical => Some(Severity::Critical),
            CheckState::Ok | CheckState::Unknown => None,
        }
    }
}

vocabulary! {
    /// How bad an open alert is.
    pub enum Severity ("severity") {
        Warning = "warning",
        Critical = "critical",
    }
}

impl Severity {
    /// The check state an alert of this severity was opened in.
    pub fn state(self) -> CheckState {
        match self {
            Severity::Warning => CheckState::Warning,
            Severity::Critical => CheckState::Critical,
        }
    }
}

vocabulary! {
    /// A tenant's overall status, from no data to worst: the order is the
    /// ranking ([`HealthStatus::rank`], `Ord`), used wherever statuses are
    /// compared (the worst of a minute, of a bucket) or shown as a number.
    pub enum HealthStatus ("health status") {
        /// No agent has reported on the tenant.
        Unknown = "unknown",
        Healthy = "healthy",
        Warning = "warning",
        Critical = "critical",
        /// No backend pod answers.
        Down = "down",
    }
}

impl HealthStatus {
    /// The status as a number: unknown -1, healthy 0, warning 1, critical 2,
    /// down 3 (the declaration order, as `Ord`).
    pub fn rank(self) -> i8 {
        self as i8 - 1
    }

    /// Whether a backend pod answers (the status counts as available).
    pub fn is_available(self) -> bool {
        !matches!(self, HealthStatus::Down | HealthStatus::Unknown)
    }

    /// Critical or down: a bad minute in reports.
    pub fn is_bad(self) -> bool {
        matches!(self, HealthStatus::Critical | HealthStatus::Down)
    }
}

vocabulary! {
    /// Where an alert is in its life.
    pub enum AlertState ("alert state") {
        Firing = "firing",
        /// Changing state too often; notified once, quiet until stable.
        Flapping = "flapping",
        Resolved = "resolved",
    }
}

vocabulary! {
    /// What happened to an alert, as its history records it.
    pub enum TransitionKind ("transition kind") {
        Opened = "opened",
        Escalated = "escalated",
        Deescalated = "deescalated",
        /// Back within thresholds long enough, or resolved by hand.
        Resolved = "resolved",
        FlappingStarted = "flapping_started",
        FlappingEnded = "flapping_ended",
        Acknowledged = "acknowledged",
        /// A firing, unacknowledged alert notified again.
        Reminder = "reminder",
    }
}

/// Who made the engine's automatic transitions, in an alert's
/// `resolvedBy` and its history's `actor`.
pub const AUTOMATIC_ACTOR: &str = "auto";

vocabulary! {
    /// What asked for a tenant's deployment. The order is the priority of
    /// queued requests: a full deployment wins over a reconcile.
    pub enum DeploymentTrigger ("deployment trigger") {
        Provisioned = "provisioned",
        Updated = "updated",
        Manual = "manual",
        Deprovisioned = "deprovisioned",
        Scaled = "scaled",
        /// A restore holding the tenant at zero while its data is replaced,
        /// or bringing it back after.
        Restore = "restore",
        /// Periodic or watch-driven: a full deployment only when the desired
        /// objects changed or the last one failed, otherwise drift repair.
        Reconcile = "reconcile",
    }
}

vocabulary! {
    /// A notification channel, as the outbox records it.
    pub enum Channel ("notification channel") {
        Email = "email",
        /// A JSON POST (Alertmanager's webhook format).
        Webhook = "webhook",
        /// A Slack incoming webhook.
        Slack = "slack",
    }
}

vocabulary! {
    /// What caused an outbox message.
    pub enum MessageKind ("message kind") {
        /// A provisioned tenant's welcome e-mail.
        Welcome = "welcome",
        /// An alert transition.
        Alert = "alert",
        /// The operators' daily report.
        Report = "report",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + FromStr<Err = UnknownName> + Serialize,
        T: fmt::Display + for<'de> Deserialize<'de> + utoipa::PartialSchema,
    {
        // The OpenAPI document names the strings on the wire (a derive
        // once documented the Rust names; the contract test caught it).
        let schema = serde_json::to_value(T::schema()).unwrap();
        let on_the_wire: Vec<String> = all.iter().map(|v| v.to_string()).collect();
        assert_eq!(schema["enum"], serde_json::json!(on_the_wire), "{schema}");
        for v in all {
            let text = v.to_string();
            assert_eq!(text.parse::<T>(), Ok(*v));
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{text}\""), "serde uses the same string");
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *v);
        }
    }

    #[test]
    fn every_name_round_trips_through_its_one_string() {
        round_trips(Check::ALL);
        round_trips(CheckState::ALL);
        round_trips(Severity::ALL);
        round_trips(HealthStatus::ALL);
        round_trips(AlertState::ALL);
        round_trips(TransitionKind::ALL);
        round_trips(DeploymentTrigger::ALL);
        round_trips(Channel::ALL);
        round_trips(MessageKind::ALL);
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_what_and_the_choices() {
        let err = "cpu".parse::<Check>().unwrap_err();
        assert_eq!(err.what, "check");
        assert_eq!(err.value, "cpu");
        assert!(err.to_string().contains("api_health"), "{err}");
        assert!("Warning".parse::<Severity>().is_err(), "case matters");
    }

    #[test]
    fn statuses_rank_from_no_data_to_down() {
        let ranks: Vec<i8> = HealthStatus::ALL.iter().map(|s| s.rank()).collect();
        assert_eq!(ranks, [-1, 0, 1, 2, 3]);
        assert!(HealthStatus::ALL.windows(2).all(|w| w[0] < w[1]));
        let states: Vec<i8> = CheckState::ALL.iter().map(|s| s.rank()).collect();
        assert_eq!(states, [-1, 0, 1, 2]);
        assert!(CheckState::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(Severity::Warning < Severity::Critical);
    }
}
