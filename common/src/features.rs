//! Feature flags: what a plan includes and how a request may switch them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::plan::Plan;
use crate::tenant::ValidationError;

/// One switchable product feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    Nft,
    Bonds,
    Fractionalization,
    Enterprise,
    CustomDevelopment,
}

impl Feature {
    pub const ALL: [Feature; 5] = [
        Feature::Nft,
        Feature::Bonds,
        Feature::Fractionalization,
        Feature::Enterprise,
        Feature::CustomDevelopment,
    ];

    /// The flag's name in the API (`enableNFT`, ...).
    pub fn flag(self) -> &'static str {
        match self {
            Feature::Nft => "enableNFT",
            Feature::Bonds => "enableBonds",
            Feature::Fractionalization => "enableFractionalization",
            Feature::Enterprise => "enableEnterprise",
            Feature::CustomDevelopment => "enableCustomDevelopment",
        }
    }

    /// The short name the CLI accepts (`nft`, `custom-development`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            Feature::Nft => "nft",
            Feature::Bonds => "bonds",
            Feature::Fractionalization => "fractionalization",
            Feature::Enterprise => "enterprise",
            Feature::CustomDevelopment => "custom-development",
        }
    }

    /// Parses a short name or a flag name.
    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL
            .into_iter()
            .find(|f| f.short_name() == name || f.flag().eq_ignore_ascii_case(name))
    }
}

/// The resolved feature flags of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Features {
    #[serde(rename = "enableNFT")]
    pub nft: bool,
    #[serde(rename = "enableBonds")]
    pub bonds: bool,
    #[serde(rename = "enableFractionalization")]
    pub fractionalization: bool,
    #[serde(rename = "enableEnterprise")]
    pub enterprise: bool,
    #[serde(rename = "enableCustomDevelopment")]
    pub custom_development: bool,
}

impl Features {
    pub fn none() -> Self {
        Features {
            nft: false,
            bonds: false,
            fractionalization: false,
            enterprise: false,
            custom_development: false,
        }
    }

    pub fn all() -> Self {
        Features {
            nft: true,
            bonds: true,
            fractionalization: true,
            enterprise: true,
            custom_development: true,
        }
    }

    pub fn get(&self, feature: Feature) -> bool {
        match feature {
            Feature::Nft => self.nft,
            Feature::Bonds => self.bonds,
            Feature::Fractionalization => self.fractionalization,
            Feature::Enterprise => self.enterprise,
            Feature::CustomDevelopment => self.custom_development,
        }
    }

    pub fn set(&mut self, feature: Feature, on: bool) {
        match feature {
            Feature::Nft => self.nft = on,
            Feature::Bonds => self.bonds = on,
            Feature::Fractionalization => self.fractionalization = on,
            Feature::Enterprise => self.enterprise = on,
            Feature::CustomDevelopment => self.custom_development = on,
        }
    }

    /// Features enabled here that `plan` does not include.
    pub fn beyond(&self, plan: Plan) -> Vec<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|f| self.get(*f) && !plan.includes(*f))
            .collect()
    }
}

/// Per-flag overrides sent with a request; an absent flag keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureOverrides {
    #[serde(rename = "enableNFT", default, skip_serializing_if = "Option::is_none")]
    pub nft: Option<bool>,
    #[serde(
        rename = "enableBonds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bonds: Option<bool>,
    #[serde(
        rename = "enableFractionalization",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fractionalization: Option<bool>,
    #[serde(
        rename = "enableEnterprise",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enterprise: Option<bool>,
    #[serde(
        rename = "enableCustomDevelopment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_development: Option<bool>,
}

impl FeatureOverrides {
    pub fn get(&self, feature: Feature) -> Option<bool> {
        match feature {
            Feature::Nft => self.nft,
            Feature::Bonds => self.bonds,
            Feature::Fractionalization => self.fractionalization,
            Feature::Enterprise => self.enterprise,
            Feature::CustomDevelopment => self.custom_development,
        }
    }

    pub fn set(&mut self, feature: Feature, on: bool) {
        let slot = match feature {
            Feature::Nft => &mut self.nft,
            Feature::Bonds => &mut self.bonds,
            Feature::Fractionalization => &mut self.fractionalization,
            Feature::Enterprise => &mut self.enterprise,
            Feature::CustomDevelopment => &mut self.custom_development,
        };
        *slot = Some(on);
    }

    /// Applies the overrides on top of `base` for a tenant on `plan`.
    /// Enabling a feature the plan does not include is an error naming the flag.
    pub fn apply(&self, base: Features, plan: Plan) -> Result<Features, ValidationError> {
        let mut features = base;
        for feature in Feature::ALL {
            if let Some(on) = self.get(feature) {
                if on && !plan.includes(feature) {
                    return Err(ValidationError::new(
                        format!("features.{}", feature.flag()),
                        format!("the {plan} plan does not include this feature"),
                    ));
                }
                features.set(feature, on);
            }
        }
        Ok(features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_disable_and_keep() {
        let overrides = FeatureOverrides {
            bonds: Some(false),
            ..Default::default()
        };
        let features = overrides
            .apply(Plan::Basic.features(), Plan::Basic)
            .unwrap();
        assert!(features.nft && !features.bonds && features.fractionalization);
    }

    #[test]
    fn enabling_beyond_the_plan_names_the_flag() {
        let overrides = FeatureOverrides {
            custom_development: Some(true),
            ..Default::default()
        };
        let err = overrides
            .apply(Plan::Professional.features(), Plan::Professional)
            .unwrap_err();
        assert_eq!(err.field, "features.enableCustomDevelopment");
        assert!(
            overrides
                .apply(Plan::Enterprise.features(), Plan::Enterprise)
                .is_ok()
        );
    }

    #[test]
    fn flags_serialize_with_the_seed_names() {
        let json = serde_json::to_value(Plan::Basic.features()).unwrap();
        assert_eq!(json["enableNFT"], true);
        assert_eq!(json["enableCustomDevelopment"], false);
        assert!(serde_json::from_str::<FeatureOverrides>(r#"{"enableNft": true}"#).is_err());
    }

    #[test]
    fn features_beyond_a_plan() {
        assert_eq!(
            Features::all().beyond(Plan::Basic),
            vec![Feature::Enterprise, Feature::CustomDevelopment]
        );
        assert_eq!(
            Feature::parse("custom-development"),
            Some(Feature::CustomDevelopment)
        );
        assert_eq!(Feature::parse("enableNFT"), Some(Feature::Nft));
    }
}
