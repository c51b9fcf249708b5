//! Usage counters of a tenant and their comparison with a plan's limits.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::plan::Plan;

/// What a tenant uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Usage {
    pub users: u64,
    pub storage_bytes: u64,
    pub api_requests: u64,
}

impl Usage {
    /// The counters of a freshly provisioned tenant: its admin user, nothing stored.
    pub fn initial() -> Self {
        Usage {
            users: 1,
            storage_bytes: 0,
            api_requests: 0,
        }
    }

    /// The limits of `plan` that this usage exceeds.
    pub fn violations(&self, plan: Plan) -> Vec<LimitViolation> {
        let limits = plan.limits();
        let mut out = Vec::new();
        if self.users > limits.max_users {
            out.push(LimitViolation {
                limit: "maxUsers".into(),
                current: self.users,
                allowed: limits.max_users,
            });
        }
        if self.storage_bytes > limits.storage_bytes {
            out.push(LimitViolation {
                limit: "storageBytes".into(),
                current: self.storage_bytes,
                allowed: limits.storage_bytes,
            });
        }
        out
    }
}

/// One limit that current usage exceeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitViolation {
    pub limit: String,
    pub current: u64,
    pub allowed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GIB;

    #[test]
    fn violations_name_each_exceeded_limit() {
        let usage = Usage {
            users: 50,
            storage_bytes: 20 * GIB,
            api_requests: 0,
        };
        let names: Vec<_> = usage
            .violations(Plan::Basic)
            .into_iter()
            .map(|v| v.limit)
            .collect();
        assert_eq!(names, ["maxUsers", "storageBytes"]);
        assert!(usage.violations(Plan::Professional).is_empty());
        assert!(Usage::initial().violations(Plan::Basic).is_empty());
    }
}
