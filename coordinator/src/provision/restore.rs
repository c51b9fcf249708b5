//! Restoring a tenant's configuration from a backup: a change like any
//! other, made here (new versions, deployed, announced), never rows
//! written behind the lifecycle. Plan, features, branding and domain are
//! one version; thresholds (through the health engine, which evaluates
//! the tenant against them at once) and notification channels one each,
//! when they change.

use async_trait::async_trait;
use knowton_common::tenant::normalize_domain;
use knowton_common::{Feature, TenantStatus, ValidationError};
use uuid::Uuid;

use super::TenantLifecycle;
use super::error::{LifecycleError, Result, failed};
use crate::backup::TenantRef;
use crate::backup::config::{ConfigurationTarget, SavedConfiguration};
use crate::deploy::Trigger;
use crate::notify::channel_context;
use crate::store::{ConfigChange, SealedChannels, StoreError, StoredChannels, now};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many times a restore's change is computed again after losing a
/// race with another change.
const ATTEMPTS: usize = 8;

impl TenantLifecycle {
    /// Makes the tenant's plan, features, branding (and `domain`, if
    /// given) those of `saved`, as one new version noting `note`; `None`
    /// when they are already. No usage check: the operator chose the
    /// moment. A race with another change is computed again on the new
    /// state (the restore sets every field).
    async fn reapply(
        &self,
        id: Uuid,
        saved: &SavedConfiguration,
        domain: Option<&str>,
        note: &str,
        actor: &str,
    ) -> Result<Option<i64>> {
        saved.branding.validate()?;
        for feature in Feature::ALL {
            if saved.features.get(feature) && !saved.plan.includes(feature) {
                return Err(ValidationError::new(
                    format!("features.{}", feature.flag()),
                    format!("the {} plan does not include this feature", saved.plan),
                )
                .into());
            }
        }
        let domain = domain.map(|d| normalize_domain("domain", d)).transpose()?;
        for _ in 0..ATTEMPTS {
            let current = self.get(id).await?;
            if current.status == TenantStatus::Deprovisioned {
                return Err(LifecycleError::Deprovisioned(current.slug));
            }
            let domain = domain.clone().unwrap_or_else(|| current.domain.clone());
            let mut changes = Vec::new();
            if saved.plan != current.plan {
                changes.push(format!("plan {} -> {}", current.plan, saved.plan));
            }
            if saved.features != current.features {
                changes.push("features".to_owned());
            }
            if saved.branding != current.branding {
                changes.push("branding".to_owned());
            }
            if domain != current.domain {
                changes.push(format!("domain {} -> {domain}", current.domain));
            }
            if changes.is_empty() {
                return Ok(None);
            }
            let change = ConfigChange {
                base_version: current.config_version,
                plan: saved.plan,
                features: saved.features,
                branding: saved.branding.clone(),
                domain,
                actor: actor.to_owned(),
                summary: format!("{} ({note})", changes.join(", ")),
            };
            match self.store.update_config(id, &change).await {
                Ok(version) => {
                    tracing::info!(tenant = %current.slug, version, change = %change.summary, actor, "tenant configuration restored");
                    self.changed(id, &current.slug).await;
                    self.deployer.after_change(id, Trigger::Updated).await;
                    return Ok(Some(version));
                }
                Err(StoreError::Stale) => continue,
                Err(other) => return Err(failed(LifecycleError::ChangeConfig, id)(other)),
            }
        }
        Err(LifecycleError::VersionConflict { fields: Vec::new() })
    }

    /// Makes `into`'s notification channels `saved` (channels of `from`),
    /// as a new version; `None` when they are already. Their secrets are
    /// opened in memory only to compare them, or to seal them for another
    /// tenant (a sealed channel opens for its own tenant alone).
    async fn restore_channels(
        &self,
        from: Uuid,
        into: Uuid,
        saved: &SealedChannels,
        note: &str,
        actor: &str,
    ) -> std::result::Result<Option<i64>, BoxError> {
        let open = |sealed: &Option<String>, tenant: Uuid, name: &str| {
            sealed
                .as_deref()
                .map(|s| self.secrets.open(s, &channel_context(tenant, name)))
                .transpose()
        };
        let webhook = open(&saved.sealed_webhook, from, "webhook")?;
        let slack = open(&saved.sealed_slack, from, "slack")?;
        if let Some(current) = self.store.notification_channels(into).await?
            && current.emails == saved.emails
            && open(&current.sealed_webhook, into, "webhook")? == webhook
            && open(&current.sealed_slack, into, "slack")? == slack
        {
            return Ok(None);
        }
        let seal = |plain: Option<Vec<u8>>, name: &str| {
            plain.map(|p| self.secrets.seal(&p, &channel_context(into, name)))
        };
        let stored = StoredChannels {
            emails: saved.emails.clone(),
            sealed_webhook: seal(webhook, "webhook"),
            sealed_slack: seal(slack, "slack"),
            display: saved.display.clone(),
            updated_at: now(),
        };
        let version = self
            .store
            .set_notification_channels(
                into,
                &stored,
                actor,
                &format!("notification channels ({note})"),
            )
            .await?;
        Ok(Some(version))
    }
}

#[async_trait]
impl ConfigurationTarget for TenantLifecycle {
    async fn apply_configuration(
        &self,
        from: &TenantRef,
        into: &TenantRef,
        saved: &SavedConfiguration,
        actor: &str,
    ) -> std::result::Result<Vec<i64>, BoxError> {
        let note = format!(
            "restored from version {} of {} at {}",
            saved.version, from.slug, saved.taken_at
        );
        // A domain belongs to one tenant: into another, it keeps its own.
        let domain = (from.id == into.id).then_some(saved.domain.as_str());
        let mut versions = Vec::new();
        versions.extend(self.reapply(into.id, saved, domain, &note, actor).await?);
        let Some(settings) = &saved.settings else {
            // Recorded before configuration backups: nothing more known.
            return Ok(versions);
        };
        let own = self.store.thresholds(into.id).await?;
        if own != settings.thresholds {
            self.engine
                .set_thresholds(into.id, settings.thresholds, actor)
                .await?;
            if let Some(latest) = self.store.latest_config_version(into.id).await? {
                versions.push(latest.version.version);
            }
        }
        if let Some(channels) = &settings.channels {
            versions.extend(
                self.restore_channels(from.id, into.id, channels, &note, actor)
                    .await?,
            );
        }
        Ok(versions)
    }
}
