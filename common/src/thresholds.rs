//! Default alert thresholds: when a measurement is a warning and when it is critical.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A warning and a critical bound; crossing `critical` implies crossing `warning`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub warning: f64,
    pub critical: f64,
}

/// The thresholds a tenant's checks are evaluated against. Percentages are
/// of the plan's limit (users, storage, API rate) or of all requests (errors).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Thresholds {
    pub users_percent: Level,
    pub storage_percent: Level,
    pub api_rate_percent: Level,
    pub error_rate_percent: Level,
    pub response_time_ms: Level,
    /// Hours since the last good backup of the tenant's database.
    #[serde(default = "database_backup_age")]
    pub database_backup_age_hours: Level,
    /// Hours since the last good backup of the tenant's files.
    #[serde(default = "storage_backup_age")]
    pub storage_backup_age_hours: Level,
}

/// A daily backup is late after 26 h and missing after 50 h (two missed).
fn database_backup_age() -> Level {
    Level {
        warning: 26.0,
        critical: 50.0,
    }
}

/// A 6-hourly backup is late after 7 h and missing after 13 h.
fn storage_backup_age() -> Level {
    Level {
        warning: 7.0,
        critical: 13.0,
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            users_percent: Level {
                warning: 90.0,
                critical: 95.0,
            },
            storage_percent: Level {
                warning: 85.0,
                critical: 95.0,
            },
            api_rate_percent: Level {
                warning: 80.0,
                critical: 90.0,
            },
            error_rate_percent: Level {
                warning: 5.0,
                critical: 10.0,
            },
            response_time_ms: Level {
                warning: 1000.0,
                critical: 2000.0,
            },
            database_backup_age_hours: database_backup_age(),
            storage_backup_age_hours: storage_backup_age(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_plan_sheet() {
        let t = Thresholds::default();
        assert_eq!(
            (t.users_percent.warning, t.users_percent.critical),
            (90.0, 95.0)
        );
        assert_eq!(
            (t.storage_percent.warning, t.storage_percent.critical),
            (85.0, 95.0)
        );
        assert_eq!(
            (t.api_rate_percent.warning, t.api_rate_percent.critical),
            (80.0, 90.0)
        );
        assert_eq!(
            (t.error_rate_percent.warning, t.error_rate_percent.critical),
            (5.0, 10.0)
        );
        assert_eq!(
            (t.response_time_ms.warning, t.response_time_ms.critical),
            (1000.0, 2000.0)
        );
    }

    #[test]
    fn thresholds_stored_before_backups_read_with_the_backup_defaults() {
        let before = r#"{"usersPercent":{"warning":1,"critical":2},
            "storagePercent":{"warning":1,"critical":2},
            "apiRatePercent":{"warning":1,"critical":2},
            "errorRatePercent":{"warning":1,"critical":2},
            "responseTimeMs":{"warning":1,"critical":2}}"#;
        let t: Thresholds = serde_json::from_str(before).unwrap();
        assert_eq!(t.users_percent.critical, 2.0);
        assert_eq!(
            (t.database_backup_age_hours, t.storage_backup_age_hours),
            (database_backup_age(), storage_backup_age())
        );
    }
}
