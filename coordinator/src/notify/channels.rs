//! Where notifications go: the operator's channels (`serve` flags) and each
//! tenant's own (`PUT /api/v1/tenants/{id}/notifications`), validated,
//! sealed at rest and shown only redacted.

use chrono::{DateTime, Utc};
use knowton_common::ValidationError;
use knowton_common::tenant::normalize_email;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::address::AddressPolicy;

/// Most e-mail recipients a tenant may set.
pub const MAX_EMAILS: usize = 20;
const MAX_URL_LEN: usize = 2048;
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// A webhook receiver: where to POST and the key that signs the body.
/// `Debug` shows neither (URLs may embed tokens).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &redact_url_to_host(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A Slack incoming webhook. Its URL embeds a token: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct SlackTarget {
    pub url: String,
}

impl std::fmt::Debug for SlackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackTarget")
            .field("url", &redact_url_to_host(&self.url))
            .finish()
    }
}

/// Whose channel a message goes to; webhook receivers see it as `receiver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// The operator's global channels (`--notify-*`).
    Operator,
    /// The tenant's own channels.
    Tenant,
}

impl Receiver {
    pub fn as_str(self) -> &'static str {
        match self {
            Receiver::Operator => "operator",
            Receiver::Tenant => "tenant",
        }
    }
}

/// The operator's channels, which receive every tenant's alerts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GlobalChannels {
    pub emails: Vec<String>,
    pub webhook: Option<WebhookTarget>,
    pub slack: Option<SlackTarget>,
}

/// A tenant's own channels, opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantChannels {
    /// `None`: the tenant admin's address.
    pub emails: Option<Vec<String>>,
    pub webhook: Option<WebhookTarget>,
    pub slack: Option<SlackTarget>,
}

/// Every channel one notification goes to, operator's and tenant's, with
/// duplicates (the same address or URL twice) removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedChannels {
    /// The operator's addresses first, then the tenant's.
    pub emails: Vec<String>,
    /// How many of `emails` are the operator's.
    pub operator_emails: usize,
    pub webhooks: Vec<(Receiver, WebhookTarget)>,
    pub slack: Vec<(Receiver, SlackTarget)>,
}

impl ResolvedChannels {
    /// The operator's channels plus the tenant's (`admin_email` when the
    /// tenant has not chosen its addresses).
    pub fn merge(global: &GlobalChannels, tenant: &TenantChannels, admin_email: &str) -> Self {
        let mut out = ResolvedChannels::default();
        let tenant_emails = match &tenant.emails {
            Some(emails) => emails.clone(),
            None if admin_email.is_empty() => Vec::new(),
            None => vec![admin_email.to_owned()],
        };
        for (i, email) in global.emails.iter().chain(&tenant_emails).enumerate() {
            if !out.emails.iter().any(|e| e.eq_ignore_ascii_case(email)) {
                out.emails.push(email.clone());
                if i < global.emails.len() {
                    out.operator_emails += 1;
                }
            }
        }
        let webhooks = [
            (Receiver::Operator, &global.webhook),
            (Receiver::Tenant, &tenant.webhook),
        ];
        for (receiver, target) in webhooks {
            if let Some(t) = target
                && !out.webhooks.iter().any(|(_, w)| w.url == t.url)
            {
                out.webhooks.push((receiver, t.clone()));
            }
        }
        let slack = [
            (Receiver::Operator, &global.slack),
            (Receiver::Tenant, &tenant.slack),
        ];
        for (receiver, target) in slack {
            if let Some(t) = target
                && !out.slack.iter().any(|(_, s)| s.url == t.url)
            {
                out.slack.push((receiver, t.clone()));
            }
        }
        out
    }

    /// Only the operator's channels (when the tenant silenced its own).
    pub fn operator_only(&self) -> Self {
        fn operator<T: Clone>(all: &[(Receiver, T)]) -> Vec<(Receiver, T)> {
            all.iter()
                .filter(|(receiver, _)| *receiver == Receiver::Operator)
                .cloned()
                .collect()
        }
        ResolvedChannels {
            emails: self.emails[..self.operator_emails].to_vec(),
            operator_emails: self.operator_emails,
            webhooks: operator(&self.webhooks),
            slack: operator(&self.slack),
        }
    }
}

/// `PUT /api/v1/tenants/{id}/notifications`: replaces all of the tenant's
/// channels. An absent field is no channel of that kind; absent `emails`
/// means the tenant admin's address, `[]` no e-mail.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelsRequest {
    /// Addresses that receive the tenant's alerts (at most 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub emails: Option<Vec<String>>,
    /// Receiver of Alertmanager-compatible webhook POSTs: https only, to a
    /// public address (never loopback, private, link-local, shared or
    /// cluster addresses, whether literal or resolved when delivering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048)]
    pub webhook_url: Option<String>,
    /// Key of the `X-Knowton-Signature` HMAC-SHA256 of each webhook body
    /// (16 to 256 characters). Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 16, max_length = 256)]
    pub webhook_secret: Option<String>,
    /// Slack incoming-webhook URL (https to a public address, as
    /// `webhookUrl`). Write-only: it embeds a token, so it is shown redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048)]
    pub slack_webhook_url: Option<String>,
}

impl std::fmt::Debug for ChannelsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelsRequest")
            .field("emails", &self.emails)
            .field(
                "webhook_url",
                &self.webhook_url.as_deref().map(redact_url_to_host),
            )
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "slack_webhook_url",
                &self.slack_webhook_url.as_deref().map(redact_url_to_host),
            )
            .finish()
    }
}

impl ChannelsRequest {
    /// Checks every field, the URLs against `policy`; the result is what
    /// will be stored.
    pub fn validate(self, policy: &AddressPolicy) -> Result<TenantChannels, ValidationError> {
        let emails = self.emails.map(validate_emails).transpose()?;
        let webhook = match (self.webhook_url, self.webhook_secret) {
            (Some(url), secret) => {
                let url = validate_tenant_url("webhookUrl", &url, policy)?;
                if let Some(secret) = &secret {
                    validate_secret("webhookSecret", secret)?;
                }
                Some(WebhookTarget { url, secret })
            }
            (None, Some(_)) => {
                return Err(ValidationError::new(
                    "webhookSecret",
                    "is only allowed together with webhookUrl",
                ));
            }
            (None, None) => None,
        };
        let slack = self
            .slack_webhook_url
            .map(|url| {
                validate_tenant_url("slackWebhookUrl", &url, policy).map(|url| SlackTarget { url })
            })
            .transpose()?;
        Ok(TenantChannels {
            emails,
            webhook,
            slack,
        })
    }
}

/// A tenant's channels as the API shows them: no secret, URLs redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsView {
    /// The addresses that receive the tenant's alerts.
    pub emails: Vec<String>,
    /// Whether `emails` is the default (the tenant admin's address).
    pub emails_default: bool,
    /// The webhook receiver, host only (`https://hooks.example.com/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Whether webhook bodies are signed (the secret is never shown).
    pub webhook_secret_set: bool,
    /// The Slack incoming webhook, host only (its path holds a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_webhook_url: Option<String>,
    /// When the channels last changed (at first: when the tenant was provisioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl ChannelsView {
    pub fn of(
        channels: &TenantChannels,
        admin_email: &str,
        updated_at: Option<DateTime<Utc>>,
    ) -> Self {
        let (emails, emails_default) = match &channels.emails {
            Some(emails) => (emails.clone(), false),
            None if admin_email.is_empty() => (Vec::new(), true),
            None => (vec![admin_email.to_owned()], true),
        };
        ChannelsView {
            emails,
            emails_default,
            webhook_url: channels
                .webhook
                .as_ref()
                .map(|w| redact_url_to_host(&w.url)),
            webhook_secret_set: channels
                .webhook
                .as_ref()
                .is_some_and(|w| w.secret.is_some()),
            slack_webhook_url: channels.slack.as_ref().map(|s| redact_url_to_host(&s.url)),
            updated_at,
        }
    }

    /// What the configuration history records: the view without the
    /// admin's address filled in (that follows the admin) or a time.
    pub fn history_display(channels: &TenantChannels) -> serde_json::Value {
        let view = ChannelsView::of(channels, "", None);
        serde_json::json!({
            "emails": channels.emails,
            "webhookUrl": view.webhook_url,
            "webhookSecretSet": view.webhook_secret_set,
            "slackWebhookUrl": view.slack_webhook_url,
        })
    }
}

/// What changed between two channel settings, for the history.
pub fn change_summary(old: &TenantChannels, new: &TenantChannels) -> String {
    let mut parts = Vec::new();
    if old.emails != new.emails {
        parts.push("emails");
    }
    if old.webhook != new.webhook {
        parts.push("webhook");
    }
    if old.slack != new.slack {
        parts.push("slack");
    }
    format!("notification channels: {}", parts.join(", "))
}

fn validate_emails(emails: Vec<String>) -> Result<Vec<String>, ValidationError> {
    if emails.len() > MAX_EMAILS {
        return Err(ValidationError::new(
            "emails",
            format!("at most {MAX_EMAILS} addresses"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(emails.len());
    for (i, email) in emails.iter().enumerate() {
        let email = normalize_email(&format!("emails[{i}]"), email)?;
        if !out.iter().any(|e| e.eq_ignore_ascii_case(&email)) {
            out.push(email);
        }
    }
    Ok(out)
}

fn validate_secret(field: &str, secret: &str) -> Result<(), ValidationError> {
    let chars = secret.chars().count();
    if !SECRET_LEN.contains(&chars) || secret.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            format!(
                "must be {} to {} characters without control characters",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
        ));
    }
    Ok(())
}

/// A URL the operator's notifications may be POSTed to (`serve` flags):
/// https, or http to a loopback host (a receiver on the same machine, or a
/// test). No fragment. Any address: the operator chose it.
pub fn validate_operator_url(field: &str, url: &str) -> Result<String, ValidationError> {
    let err = |msg: &str| Err(ValidationError::new(field, msg));
    let (parsed, host) = parse_url(field, url)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return err("must use https (http only to a loopback address)"),
        _ => return err("must be an absolute https URL"),
    }
    if parsed.fragment().is_some() {
        return err("must not have a #fragment");
    }
    Ok(parsed.to_string())
}

/// A URL a tenant's notifications may be POSTed to: https only, no
/// fragment, and a literal address only if `policy` allows it (a name is
/// checked when delivering, after resolution: see
/// [`super::address::PolicyResolver`]).
pub fn validate_tenant_url(
    field: &str,
    url: &str,
    policy: &AddressPolicy,
) -> Result<String, ValidationError> {
    let (parsed, _) = parse_url(field, url)?;
    if parsed.scheme() != "https" {
        return Err(ValidationError::new(field, "must be an absolute https URL"));
    }
    if parsed.fragment().is_some() {
        return Err(ValidationError::new(field, "must not have a #fragment"));
    }
    if let Err(refusal) = policy.check_url(&parsed) {
        return Err(ValidationError::new(field, refusal.to_string()));
    }
    Ok(parsed.to_string())
}

/// `url` parsed, and its host; at most 2048 characters.
fn parse_url(field: &str, url: &str) -> Result<(Url, String), ValidationError> {
    let err = |msg: &str| Err(ValidationError::new(field, msg));
    if url.len() > MAX_URL_LEN {
        return err("must be at most 2048 characters");
    }
    let Ok(parsed) = Url::parse(url) else {
        return err("must be an absolute https URL");
    };
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return err("must be an absolute https URL");
    };
    let host = host.to_owned();
    Ok((parsed, host))
}

/// A notification URL as it may be shown: scheme, host and port only, and
/// `/…` if there was a path or query (a webhook's path and query often
/// are its credential, a Slack URL's path always is). A user or password
/// is never shown. For URLs whose path is not a secret (a database's, an
/// SMTP server's), [`crate::store::redact_url_credentials`] keeps more.
pub fn redact_url_to_host(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if parsed.path() == "/" && parsed.query().is_none() {
                "/"
            } else {
                "/…"
            };
            format!("{}://{host}{port}{rest}", parsed.scheme())
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}
