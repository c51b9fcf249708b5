//! Notifications: the channels they go to, how they are rendered, and
//! their durable delivery from the outbox.
//!
//! Every notification is first written to the `outbox` table, in the same
//! transaction as the change that causes it (a provisioned tenant's welcome
//! e-mail; an alert transition), one row per channel and recipient, its
//! body sealed. The [`worker`] then delivers each row on its own:
//! concurrently per channel, retried with exponential backoff and jitter,
//! dead-lettered after a permanent error or the maximum age, at least once
//! and with an idempotency key receivers see (so a repeat after a crash can
//! be recognised).
//!
//! # Layout
//! - [`config`]: the `serve` flags of the operator's channels and of delivery.
//! - [`channels`]: operator and tenant channels, their validation and redaction.
//! - [`render`]: alert e-mails, Alertmanager webhook payloads, Slack
//!   messages, and [`render::plan_alert`] which turns an alert transition
//!   into outbox rows.
//! - [`email`]: SMTP delivery. [`http`]: webhook and Slack delivery.
//! - [`worker`]: claims due rows, delivers them, records the outcome.
//! - `counters`: [`NotifyMetrics`], delivery outcomes and latencies by channel.

pub mod address;
pub mod channels;
pub mod config;
mod counters;
pub mod email;
pub mod http;
pub mod render;
pub mod welcome;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use self::address::AddressPolicy;
use self::channels::{
    ChannelsRequest, ChannelsView, GlobalChannels, ResolvedChannels, SlackTarget, TenantChannels,
    WebhookTarget,
};
use self::email::SmtpSettings;
use self::render::AlertEvent;
use crate::secrets::{OpenError, SecretBox};
use crate::store::{OutboxMessage, Store, StoreError, StoredChannels, Tenant, Unique, now};
use knowton_common::ValidationError;
use knowton_common::health::MessageKind;

pub use counters::NotifyMetrics;
pub use knowton_common::health::Channel;

/// What the API shows for pending e-mail while no SMTP server is configured.
pub const NO_SMTP: &str = "no SMTP server configured (--smtp-url)";

/// Wakes the delivery worker when something was enqueued, so a new message
/// goes out at once instead of at the worker's next due time.
#[derive(Debug, Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    /// Call after committing outbox rows. Never lost: a poke while the
    /// worker is busy wakes its next wait.
    pub fn poke(&self) {
        self.0.notify_one();
    }

    pub async fn wait(&self) {
        self.0.notified().await;
    }
}

/// Retries: exponential backoff from `base` doubling up to `max`, with
/// jitter; a message not delivered `max_age` after it was enqueued is
/// dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_age: Duration,
}

/// Validated notification settings of `serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    /// `None`: e-mail stays pending (see [`NO_SMTP`]).
    pub smtp: Option<SmtpSettings>,
    /// The operator's channels: every tenant's alerts.
    pub global: GlobalChannels,
    pub retry: RetryPolicy,
    /// Time limit of one delivery attempt (SMTP session or HTTP request).
    pub timeout: Duration,
    /// The coordinator's URL as receivers should link to it; empty until
    /// `serve` knows the address it bound (`--external-url` sets it).
    pub external_url: String,
    /// Where tenants' webhook and Slack URLs may connect.
    pub tenant_addresses: AddressPolicy,
    /// Trust anchors for webhook and Slack deliveries besides the system's
    /// (`--notify-ca-file`).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            smtp: None,
            global: GlobalChannels::default(),
            retry: RetryPolicy {
                base: Duration::from_secs(5),
                max: Duration::from_secs(600),
                max_age: Duration::from_secs(86_400),
            },
            timeout: Duration::from_secs(30),
            external_url: String::new(),
            tenant_addresses: AddressPolicy::default(),
            extra_roots: Vec::new(),
        }
    }
}

/// The sealed body of a webhook or Slack row: where to POST, the signing
/// key, and the exact bytes to send (so the signature matches them).
#[derive(Clone, Serialize, Deserialize)]
pub struct HttpDelivery {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub body: String,
    /// Whether the URL is the operator's (a `serve` flag), which may reach
    /// any address; a tenant's is held to
    /// [`NotifySettings::tenant_addresses`]. Absent (false) in rows written
    /// before it existed: those are exempt only if the URL is still one of
    /// the operator's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
}

impl std::fmt::Debug for HttpDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpDelivery(..)")
    }
}

/// The result of one delivery attempt, before the retry policy is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver accepted the message.
    Delivered,
    /// Worth trying again; `after`: what the receiver asked for (`Retry-After`).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Will never succeed as it is (a 4xx, a rejected recipient).
    Permanent { error: String },
}

/// Errors of the notification service.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("failed to open the tenant's sealed notification channel {name}")]
    OpenChannel {
        name: &'static str,
        #[source]
        source: OpenError,
    },
    #[error("notification store failed")]
    Store(#[from] StoreError),
}

/// The sealing context of an outbox row's body.
pub fn outbox_context(message: Uuid) -> String {
    format!("outbox/{message}")
}

/// Seals `body` (as JSON) for the outbox row `id`.
pub fn seal_body<T: Serialize>(secrets: &SecretBox, id: Uuid, body: &T) -> String {
    let json = serde_json::to_vec(body).expect("a notification body serialises");
    secrets.seal(&json, &outbox_context(id))
}

/// What a channel's sealed value of `tenant` is bound to (`webhook`,
/// `slack`): it opens for that tenant alone.
pub fn channel_context(tenant: Uuid, name: &str) -> String {
    format!("tenant/{tenant}/notify/{name}")
}

/// Channels, planning and enqueueing: what the API, provisioning and the
/// alert engine use. The [`worker`] delivers.
#[derive(Debug)]
pub struct NotifyService {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    wakeup: Wakeup,
    settings: NotifySettings,
    metrics: NotifyMetrics,
}

impl NotifyService {
    pub fn new(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        wakeup: Wakeup,
        settings: NotifySettings,
    ) -> Self {
        NotifyService {
            store,
            secrets,
            wakeup,
            settings,
            metrics: NotifyMetrics::default(),
        }
    }

    /// Delivery outcomes and delays, for `/metrics`.
    pub fn metrics(&self) -> &NotifyMetrics {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    pub fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// Whether e-mail can be delivered (an SMTP server is configured).
    pub fn email_enabled(&self) -> bool {
        self.settings.smtp.is_some()
    }

    pub(crate) fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// The tenant's own channels, opened, and when they were set.
    pub async fn tenant_channels(
        &self,
        tenant: Uuid,
    ) -> Result<(TenantChannels, Option<chrono::DateTime<chrono::Utc>>), NotifyError> {
        let Some(stored) = self.store.notification_channels(tenant).await? else {
            return Ok((TenantChannels::default(), None));
        };
        let open = |name: &'static str, sealed: &str| -> Result<Vec<u8>, NotifyError> {
            self.secrets
                .open(sealed, &channel_context(tenant, name))
                .map_err(|source| NotifyError::OpenChannel { name, source })
        };
        let webhook = stored
            .sealed_webhook
            .as_deref()
            .map(|sealed| {
                let plain = open("webhook", sealed)?;
                serde_json::from_slice::<WebhookTarget>(&plain).map_err(|_| {
                    NotifyError::OpenChannel {
                        name: "webhook",
                        source: OpenError::Malformed,
                    }
                })
            })
            .transpose()?;
        let slack = stored
            .sealed_slack
            .as_deref()
            .map(|sealed| {
                let plain = open("slack", sealed)?;
                String::from_utf8(plain)
                    .map(|url| SlackTarget { url })
                    .map_err(|_| NotifyError::OpenChannel {
                        name: "slack",
                        source: OpenError::Malformed,
                    })
            })
            .transpose()?;
        Ok((
            TenantChannels {
                emails: stored.emails,
                webhook,
                slack,
            },
            Some(stored.updated_at),
        ))
    }

    /// The tenant's channels as the API shows them.
    pub async fn channels_view(&self, tenant: &Tenant) -> Result<ChannelsView, NotifyError> {
        let (channels, updated_at) = self.tenant_channels(tenant.id).await?;
        Ok(ChannelsView::of(&channels, &tenant.admin_email, updated_at))
    }

    /// Validates and replaces the tenant's channels, sealed, recording a
    /// configuration version when something changed. Nothing changes on
    /// an invalid request.
    pub async fn set_channels(
        &self,
        tenant: &Tenant,
        request: ChannelsRequest,
        actor: &str,
    ) -> Result<ChannelsView, NotifyError> {
        let new = request.validate(&self.settings.tenant_addresses)?;
        let (current, updated_at) = self.tenant_channels(tenant.id).await?;
        if updated_at.is_some() && current == new {
            return Ok(ChannelsView::of(&current, &tenant.admin_email, updated_at));
        }
        let at = now();
        let stored = StoredChannels {
            emails: new.emails.clone(),
            sealed_webhook: new.webhook.as_ref().map(|w| {
                let json = serde_json::to_vec(w).expect("a webhook target serialises");
                self.secrets
                    .seal(&json, &channel_context(tenant.id, "webhook"))
            }),
            sealed_slack: new.slack.as_ref().map(|s| {
                self.secrets
                    .seal(s.url.as_bytes(), &channel_context(tenant.id, "slack"))
            }),
            display: ChannelsView::history_display(&new),
            updated_at: at,
        };
        let summary = channels::change_summary(&current, &new);
        let version = self
            .store
            .set_notification_channels(tenant.id, &stored, actor, &summary)
            .await?;
        tracing::info!(tenant = %tenant.slug, version, actor, change = %summary, "notification channels changed");
        Ok(ChannelsView::of(&new, &tenant.admin_email, Some(at)))
    }

    /// Every channel an alert of `tenant` goes to: the operator's and the tenant's.
    pub async fn resolve_channels(&self, tenant: &Tenant) -> Result<ResolvedChannels, NotifyError> {
        let (own, _) = self.tenant_channels(tenant.id).await?;
        Ok(ResolvedChannels::merge(
            &self.settings.global,
            &own,
            &tenant.admin_email,
        ))
    }

    /// Sends an e-mail to the operators' addresses (`--notify-email`)
    /// through the outbox; returns how many were enqueued (0 without any).
    /// `key` makes it idempotent: the same key is not sent twice.
    pub async fn email_operators(
        &self,
        key: &str,
        subject: &str,
        body: &crate::notify::welcome::EmailBody,
    ) -> Result<usize, NotifyError> {
        let messages = render::plan_operator_email(
            key,
            subject,
            body,
            &self.settings.global.emails,
            &self.secrets,
        );
        if messages.is_empty() {
            return Ok(0);
        }
        match self
            .store
            .enqueue(None, MessageKind::Report, &messages)
            .await
        {
            Ok(()) => {}
            // Already enqueued under this key: nothing more to send.
            Err(StoreError::Conflict(Unique::OutboxIdempotencyKey)) => return Ok(0),
            Err(err) => return Err(err.into()),
        }
        self.wakeup.poke();
        Ok(messages.len())
    }

    /// The outbox rows of one alert transition (see [`render::plan_alert`]).
    pub fn plan_alert(
        &self,
        event: &AlertEvent,
        channels: &ResolvedChannels,
    ) -> Vec<OutboxMessage> {
        render::plan_alert(event, channels, &self.secrets, &self.settings.external_url)
    }
}
