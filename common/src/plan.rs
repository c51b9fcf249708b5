//! The plan sheet: what basic, professional and enterprise tenants may use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::features::{Feature, Features};
use crate::{GIB, TIB};

/// A commercial plan. Ordered from smallest to largest, so `a < b` means `a`
/// is a downgrade from `b`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Basic,
    Professional,
    Enterprise,
}

/// The resource limits of one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanLimits {
    pub max_users: u64,
    pub storage_bytes: u64,
    pub max_file_bytes: u64,
    pub api_requests_per_minute: u32,
    pub cpu_millicores: u32,
    pub memory_bytes: u64,
}

impl Plan {
    pub const ALL: [Plan; 3] = [Plan::Basic, Plan::Professional, Plan::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Basic => "basic",
            Plan::Professional => "professional",
            Plan::Enterprise => "enterprise",
        }
    }

    pub fn limits(self) -> PlanLimits {
        match self {
            Plan::Basic => PlanLimits {
                max_users: 10,
                storage_bytes: 10 * GIB,
                max_file_bytes: 2 * GIB,
                api_requests_per_minute: 100,
                cpu_millicores: 2_000,
                memory_bytes: 4 * GIB,
            },
            Plan::Professional => PlanLimits {
                max_users: 100,
                storage_bytes: 100 * GIB,
                max_file_bytes: 5 * GIB,
                api_requests_per_minute: 500,
                cpu_millicores: 8_000,
                memory_bytes: 16 * GIB,
            },
            Plan::Enterprise => PlanLimits {
                max_users: 1_000,
                storage_bytes: TIB,
                max_file_bytes: 10 * GIB,
                api_requests_per_minute: 2_000,
                cpu_millicores: 32_000,
                memory_bytes: 64 * GIB,
            },
        }
    }

    /// The features a plan includes; they are all on by default.
    pub fn features(self) -> Features {
        let mut features = Features::none();
        for feature in Feature::ALL {
            features.set(feature, self.includes(feature));
        }
        features
    }

    /// Whether the plan includes `feature` at all.
    pub fn includes(self, feature: Feature) -> bool {
        match feature {
            Feature::Nft | Feature::Bonds | Feature::Fractionalization => true,
            Feature::Enterprise => self >= Plan::Professional,
            Feature::CustomDevelopment => self == Plan::Enterprise,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A plan name that is not one of the plan sheet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan {0:?}: expected basic, professional or enterprise")]
pub struct UnknownPlan(pub String);

impl FromStr for Plan {
    type Err = UnknownPlan;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "basic" => Ok(Plan::Basic),
            "professional" => Ok(Plan::Professional),
            "enterprise" => Ok(Plan::Enterprise),
            other => Err(UnknownPlan(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sheet_limits() {
        let basic = Plan::Basic.limits();
        assert_eq!(basic.max_users, 10);
        assert_eq!(basic.storage_bytes, 10 * GIB);
        assert_eq!(basic.api_requests_per_minute, 100);
        assert_eq!(Plan::Professional.limits().api_requests_per_minute, 500);
        let enterprise = Plan::Enterprise.limits();
        assert_eq!(enterprise.storage_bytes, 1024 * GIB);
        assert_eq!(enterprise.max_users, 1000);
        assert_eq!(enterprise.cpu_millicores, 32_000);
        assert_eq!(enterprise.memory_bytes, 64 * GIB);
    }

    #[test]
    fn plan_features_grow_with_the_plan() {
        let basic = Plan::Basic.features();
        assert!(basic.nft && basic.bonds && basic.fractionalization);
        assert!(!basic.enterprise && !basic.custom_development);
        let pro = Plan::Professional.features();
        assert!(pro.enterprise && !pro.custom_development);
        assert_eq!(Plan::Enterprise.features(), Features::all());
    }

    #[test]
    fn plans_parse_and_order() {
        assert_eq!("professional".parse::<Plan>().unwrap(), Plan::Professional);
        assert!("Gold".parse::<Plan>().is_err());
        assert!(Plan::Basic < Plan::Professional && Plan::Professional < Plan::Enterprise);
    }
}
