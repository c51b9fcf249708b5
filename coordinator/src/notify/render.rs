//! Alert notifications rendered for each channel: an e-mail (text and
//! HTML), an Alertmanager webhook payload (version 4) and a Slack message;
//! and [`plan_alert`], which turns one alert transition into the sealed
//! outbox rows to deliver.

use chrono::{DateTime, SecondsFormat, Utc};
use knowton_common::Plan;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::channels::{Receiver, ResolvedChannels, redact_url_to_host};
use super::welcome::{EmailBody, escape};
use super::{Channel, HttpDelivery, seal_body};
use crate::secrets::SecretBox;
use crate::store::OutboxMessage;

use knowton_common::health::Check;
pub use knowton_common::health::Severity;

/// Whether the alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One transition of one alert: what the alert engine hands to
/// [`plan_alert`] inside the transaction that records the transition.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub alert_id: Uuid,
    /// The alert's transition number (1 when it first fires, then 2 when it
    /// resolves or changes severity, …): with `alert_id`, the idempotency key.
    pub sequence: i64,
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub tenant_name: String,
    pub plan: Plan,
    pub check: Check,
    pub severity: Severity,
    pub status: AlertStatus,
    /// One line, e.g. `storage at 96% of 1 Ti`.
    pub summary: String,
    /// The measured value, e.g. `96%`.
    pub value: String,
    /// The threshold crossed, e.g. `95%`.
    pub threshold: String,
    pub starts_at: DateTime<Utc>,
    /// Set when resolved.
    pub ends_at: Option<DateTime<Utc>>,
}

impl AlertEvent {
    /// `[CRITICAL] acme: storage at 96% of 1 Ti`, or `[RESOLVED] …`.
    pub fn subject(&self) -> String {
        let tag = match self.status {
            AlertStatus::Resolved => "RESOLVED",
            AlertStatus::Firing => match self.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "WARNING",
            },
        };
        format!("[{tag}] {}: {}", self.tenant_slug, self.summary)
    }

    /// The base of this transition's idempotency keys.
    pub fn key(&self) -> String {
        format!("alert:{}:{}", self.alert_id, self.sequence)
    }

    fn labels(&self) -> Value {
        json!({
            "alertname": self.check,
            "tenant": self.tenant_slug,
            "severity": self.severity.as_str(),
            "plan": self.plan.as_str(),
            "service": "knowton",
        })
    }

    fn annotations(&self) -> Value {
        json!({
            "summary": self.summary,
            "description": format!(
                "{} ({}): {} is {}, threshold {}",
                self.tenant_name, self.tenant_slug, self.check, self.value, self.threshold
            ),
            "value": self.value,
            "threshold": self.threshold,
        })
    }

    /// Alertmanager's fingerprint: 16 hex digits identifying the label set.
    fn fingerprint(&self) -> String {
        let labels = self.labels();
        let mut hasher = Sha256::new();
        if let Some(map) = labels.as_object() {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                hasher.update(key.as_bytes());
                hasher.update([0xff]);
                hasher.update(map[key].as_str().unwrap_or_default().as_bytes());
                hasher.update([0xff]);
            }
        }
        knowton_common::hex(&hasher.finalize()[..8])
    }
}

/// Where links in notifications point.
fn health_url(external_url: &str) -> String {
    format!(
        "{}/api/v1/monitoring/health",
        external_url.trim_end_matches('/')
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The e-mail of an alert transition.
pub fn email_body(event: &AlertEvent, external_url: &str, key: &str) -> EmailBody {
    let subject = event.subject();
    let mut rows = vec![
        (
            "Tenant",
            format!(
                "{} ({}, {} plan)",
                event.tenant_name, event.tenant_slug, event.plan
            ),
        ),
        ("Check", event.check.to_string()),
        ("Severity", event.severity.as_str().to_owned()),
        ("Status", event.status.as_str().to_owned()),
        ("Value", event.value.clone()),
        ("Threshold", event.threshold.clone()),
        ("Since", rfc3339(event.starts_at)),
    ];
    if let Some(ends) = event.ends_at {
        rows.push(("Resolved", rfc3339(ends)));
    }
    let link = health_url(external_url);
    let mut text = format!("{subject}\n\n");
    for (name, value) in &rows {
        text.push_str(&format!("{:<10} {value}\n", format!("{name}:")));
    }
    text.push_str(&format!(
        "\nDetails: {link} (X-Tenant-Slug: {})\nIdempotency key: {key}\n",
        event.tenant_slug
    ));
    let colour = colour(event);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body>\n\
         <h2 style=\"border-left: 6px solid {colour}; padding-left: 8px\">{}</h2>\n<table>\n",
        escape(&subject)
    );
    for (name, value) in &rows {
        html.push_str(&format!(
            "<tr><th align=\"left\">{name}</th><td>{}</td></tr>\n",
            escape(value)
        ));
    }
    html.push_str(&format!(
        "</table>\n<p><a href=\"{0}\">{0}</a> (X-Tenant-Slug: {1})</p>\n\
         <p style=\"color: #666\">Idempotency key: {2}</p>\n</body></html>\n",
        escape(&link),
        escape(&event.tenant_slug),
        escape(key)
    ));
    EmailBody { text, html }
}

/// An Alertmanager webhook payload (version 4) for one alert, so that
/// existing receivers work unchanged, with our idempotency key added.
pub fn alertmanager_payload(
    event: &AlertEvent,
    receiver: &str,
    external_url: &str,
    key: &str,
) -> Value {
    let labels = event.labels();
    let group_labels = json!({"alertname": event.check, "tenant": event.tenant_slug});
    let group_key = format!(
        "{{}}:{{alertname={:?}, tenant={:?}}}",
        event.check, event.tenant_slug
    );
    // Alertmanager sends the zero time while an alert fires.
    let ends_at = event
        .ends_at
        .map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339);
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": event.status.as_str(),
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": event.annotations(),
        "externalURL": external_url,
        "alerts": [{
            "status": event.status.as_str(),
            "labels": labels,
            "annotations": event.annotations(),
            "startsAt": rfc3339(event.starts_at),
            "endsAt": ends_at,
            "generatorURL": health_url(external_url),
            "fingerprint": event.fingerprint(),
        }],
        "idempotencyKey": key,
    })
}

/// The colour bar: red critical, orange warning, green resolved.
pub fn colour(event: &AlertEvent) -> &'static str {
    match (event.status, event.severity) {
        (AlertStatus::Resolved, _) => "#2eb67d",
        (AlertStatus::Firing, Severity::Critical) => "#e01e5a",
        (AlertStatus::Firing, Severity::Warning) => "#ff9f1c",
    }
}

/// A Slack incoming-webhook message: `text` (all that mobile notifications
/// show), a Block Kit headline, and the details in an attachment carrying
/// the colour bar.
pub fn slack_payload(event: &AlertEvent, external_url: &str, key: &str) -> Value {
    let subject = event.subject();
    let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", slack_escape(value))});
    let mut fields = vec![
        field(
            "Tenant",
            &format!("{} ({})", event.tenant_name, event.tenant_slug),
        ),
        field("Plan", event.plan.as_str()),
        field("Check", event.check.as_str()),
        field("Severity", event.severity.as_str()),
        field("Value", &event.value),
        field("Threshold", &event.threshold),
        field("Since", &rfc3339(event.starts_at)),
    ];
    if let Some(ends) = event.ends_at {
        fields.push(field("Resolved", &rfc3339(ends)));
    }
    json!({
        "text": subject,
        "blocks": [{
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("*{}*", slack_escape(&subject))},
        }],
        "attachments": [{
            "color": colour(event),
            "fallback": subject,
            "blocks": [
                {"type": "section", "fields": fields},
                {"type": "context", "elements": [{
                    "type": "mrkdwn",
                    "text": format!(
                        "<{}|Tenant health> · idempotency key `{}`",
                        health_url(external_url),
                        slack_escape(key)
                    ),
                }]},
            ],
        }],
    })
}

/// The outbox rows for one alert transition: one per channel and
/// recipient, each rendered for its channel, sealed (bodies, and the URLs
/// and secrets of webhooks), with the idempotency key
/// `alert:<alert id>:<sequence>:<channel>:<recipient>`.
///
/// Pure apart from the random ids and nonces: the alert engine calls it
/// inside the transaction that records the transition and writes the rows
/// there (see [`crate::store::Store::enqueue`]), so that a transition and
/// its notifications are committed together or not at all.
pub fn plan_alert(
    event: &AlertEvent,
    channels: &ResolvedChannels,
    secrets: &SecretBox,
    external_url: &str,
) -> Vec<OutboxMessage> {
    let base = event.key();
    let subject = event.subject();
    let mut out = Vec::new();
    for email in &channels.emails {
        let key = format!("{base}:{}:{}", Channel::Email, email.to_ascii_lowercase());
        let body = email_body(event, external_url, &key);
        out.push(message(
            Channel::Email,
            email.clone(),
            &subject,
            key,
            &body,
            secrets,
        ));
    }
    for (receiver, target) in &channels.webhooks {
        let key = format!("{base}:{}:{}", Channel::Webhook, receiver.as_str());
        let name = format!("knowton-{}", receiver.as_str());
        let payload = alertmanager_payload(event, &name, external_url, &key);
        let delivery = HttpDelivery {
            url: target.url.clone(),
            secret: target.secret.clone(),
            body: payload.to_string(),
            operator: *receiver == Receiver::Operator,
        };
        let recipient = redact_url_to_host(&target.url);
        out.push(message(
            Channel::Webhook,
            recipient,
            &subject,
            key,
            &delivery,
            secrets,
        ));
    }
    for (receiver, target) in &channels.slack {
        let key = format!("{base}:{}:{}", Channel::Slack, receiver.as_str());
        let delivery = HttpDelivery {
            url: target.url.clone(),
            secret: None,
            body: slack_payload(event, external_url, &key).to_string(),
            operator: *receiver == Receiver::Operator,
        };
        let recipient = redact_url_to_host(&target.url);
        out.push(message(
            Channel::Slack,
            recipient,
            &subject,
            key,
            &delivery,
            secrets,
        ));
    }
    out
}

fn message<T: Serialize>(
    channel: Channel,
    recipient: String,
    subject: &str,
    idempotency_key: String,
    body: &T,
    secrets: &SecretBox,
) -> OutboxMessage {
    let id = Uuid::now_v7();
    OutboxMessage {
        id,
        channel,
        recipient,
        subject: subject.to_owned(),
        sealed_body: seal_body(secrets, id, body),
        idempotency_key,
        caused_at: None,
    }
}

/// The outbox rows of an operators' e-mail (the daily report): one per
/// address, with the idempotency key `<key>:email:<address>`.
pub fn plan_operator_email(
    key: &str,
    subject: &str,
    body: &EmailBody,
    recipients: &[String],
    secrets: &SecretBox,
) -> Vec<OutboxMessage> {
    recipients
        .iter()
        .map(|email| {
            let key = format!("{key}:{}:{}", Channel::Email, email.to_ascii_lowercase());
            message(Channel::Email, email.clone(), subject, key, body, secrets)
        })
        .collect()
}

/// Slack's mrkdwn needs only these three escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
