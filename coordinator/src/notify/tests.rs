//! Unit tests of notifications: retry policy and delivery outcomes, rendering and planning.

use std::time::{Duration, SystemTime};

use chrono::TimeZone;
use knowton_common::Plan;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use uuid::Uuid;

use super::channels::*;
use super::config::NotifyArgs;
use super::email::{SmtpSettings, StartTls, message_id};
use super::render::*;
use super::*;
use crate::store::DeliveryOutcome;

fn policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_secs(10),
        max: Duration::from_secs(300),
        max_age: Duration::from_secs(3600),
    }
}

fn event() -> AlertEvent {
    AlertEvent {
        alert_id: Uuid::nil(),
        sequence: 3,
        tenant_id: Uuid::nil(),
        tenant_slug: "acme".into(),
        tenant_name: "Acme <Corp>".into(),
        plan: Plan::Enterprise,
        check: knowton_common::health::Check::Storage,
        severity: Severity::Critical,
        status: AlertStatus::Firing,
        summary: "storage at 96% of 1 Ti".into(),
        value: "96%".into(),
        threshold: "95%".into(),
        starts_at: chrono::Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap(),
        ends_at: None,
    }
}

mod channels;
mod config;
mod properties;

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let p = policy();
    for _ in 0..50 {
        let first = p.backoff(1);
        assert!(first >= Duration::from_secs(5) && first <= Duration::from_secs(10));
        let third = p.backoff(3);
        assert!(third >= Duration::from_secs(20) && third <= Duration::from_secs(40));
        let late = p.backoff(40);
        assert!(late >= Duration::from_secs(150) && late <= Duration::from_secs(300));
    }
}

#[test]
fn outcomes_follow_the_policy() {
    let p = policy();
    let created = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let now = created + chrono::Duration::seconds(60);
    assert_eq!(
        p.outcome(Attempt::Delivered, 0, created, now),
        DeliveryOutcome::Delivered
    );
    let permanent = Attempt::Permanent {
        error: "HTTP 400".into(),
    };
    assert_eq!(
        p.outcome(permanent, 0, created, now),
        DeliveryOutcome::Failed {
            error: "HTTP 400".into()
        }
    );
    let asked = Attempt::Retry {
        error: "HTTP 429".into(),
        after: Some(Duration::from_secs(120)),
    };
    assert_eq!(
        p.outcome(asked, 2, created, now),
        DeliveryOutcome::Retry {
            at: now + chrono::Duration::seconds(120),
            error: "HTTP 429".into()
        },
        "Retry-After is honoured exactly"
    );
    let too_late = Attempt::Retry {
        error: "HTTP 429".into(),
        after: Some(Duration::from_secs(7200)),
    };
    assert!(matches!(
        p.outcome(too_late, 2, created, now),
        DeliveryOutcome::Failed { error } if error.contains("past the maximum age")
    ));
    // A backoff past the deadline is cut to one last attempt at the deadline.
    let near_end = created + chrono::Duration::seconds(3590);
    let retry = Attempt::Retry {
        error: "HTTP 503".into(),
        after: None,
    };
    assert_eq!(
        p.outcome(retry.clone(), 20, created, near_end),
        DeliveryOutcome::Retry {
            at: created + chrono::Duration::seconds(3600),
            error: "HTTP 503".into()
        }
    );
    let after_end = created + chrono::Duration::seconds(3600);
    assert!(matches!(
        p.outcome(retry, 21, created, after_end),
        DeliveryOutcome::Failed { error } if error.contains("22 attempts") && error.contains("HTTP 503")
    ));
}

#[test]
fn retry_after_takes_seconds_or_a_date() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut headers = HeaderMap::new();
    assert_eq!(http::retry_after(&headers, now), None);
    headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    assert_eq!(
        http::retry_after(&headers, now),
        Some(Duration::from_secs(7))
    );
    let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
    headers.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
    assert_eq!(
        http::retry_after(&headers, now),
        Some(Duration::from_secs(90))
    );
    let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
    headers.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
    assert_eq!(http::retry_after(&headers, now), Some(Duration::ZERO));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(http::retry_after(&headers, now), None);
}

#[test]
fn signatures_are_hmac_sha256() {
    // RFC 4231, test case 2.
    assert_eq!(
        http::signature("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn subjects_name_severity_tenant_and_summary() {
    let mut e = event();
    assert_eq!(e.subject(), "[CRITICAL] acme: storage at 96% of 1 Ti");
    e.severity = Severity::Warning;
    assert_eq!(e.subject(), "[WARNING] acme: storage at 96% of 1 Ti");
    e.status = AlertStatus::Resolved;
    assert_eq!(e.subject(), "[RESOLVED] acme: storage at 96% of 1 Ti");
}

#[test]
fn payloads_escape_and_carry_the_key() {
    let e = event();
    let mail = email_body(&e, "https://kt.example.com", "k1");
    assert!(mail.text.contains("Acme <Corp>") && mail.html.contains("Acme &lt;Corp&gt;"));
    assert!(!mail.html.contains("<Corp>"));
    let am = alertmanager_payload(&e, "knowton-tenant", "https://kt.example.com", "k1");
    assert_eq!(am["version"], "4");
    assert_eq!(am["idempotencyKey"], "k1");
    assert_eq!(am["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(am["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
    let slack = slack_payload(&e, "https://kt.example.com", "k1");
    assert_eq!(slack["text"], "[CRITICAL] acme: storage at 96% of 1 Ti");
    assert_eq!(slack["attachments"][0]["color"], "#e01e5a");
    assert!(slack.to_string().contains("Acme &lt;Corp&gt;"));
}

#[test]
fn plans_one_sealed_row_per_channel_and_recipient() {
    let secrets = SecretBox::from_key(&[3; 32]);
    let channels = ResolvedChannels {
        emails: vec!["ops@example.com".into(), "admin@acme.com".into()],
        operator_emails: 1,
        webhooks: vec![(
            Receiver::Tenant,
            WebhookTarget {
                url: "https://hooks.example.com/secret-path".into(),
                secret: Some("webhook-secret-0123".into()),
            },
        )],
        slack: vec![(
            Receiver::Operator,
            SlackTarget {
                url: "https://hooks.slack.com/services/T0/B0/slack-token".into(),
            },
        )],
    };
    let rows = plan_alert(&event(), &channels, &secrets, "https://kt.example.com");
    let keys: Vec<&str> = rows.iter().map(|r| r.idempotency_key.as_str()).collect();
    let base = format!("alert:{}:3", Uuid::nil());
    assert_eq!(
        keys,
        [
            format!("{base}:email:ops@example.com"),
            format!("{base}:email:admin@acme.com"),
            format!("{base}:webhook:tenant"),
            format!("{base}:slack:operator"),
        ]
    );
    for row in &rows {
        let visible = format!("{} {} {}", row.recipient, row.subject, row.sealed_body);
        for secret in ["secret-path", "webhook-secret-0123", "slack-token"] {
            assert!(!visible.contains(secret), "{secret} in {visible}");
        }
    }
    let webhook = &rows[2];
    assert_eq!(webhook.recipient, "https://hooks.example.com/…");
    let opened: HttpDelivery = serde_json::from_slice(
        &secrets
            .open(&webhook.sealed_body, &outbox_context(webhook.id))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(opened.secret.as_deref(), Some("webhook-secret-0123"));
    let body: serde_json::Value = serde_json::from_str(&opened.body).unwrap();
    assert_eq!(body["idempotencyKey"], webhook.idempotency_key.as_str());
    assert_eq!(body["receiver"], "knowton-tenant");
}

#[test]
fn the_stores_default_channels_are_the_default_view() {
    let stored: serde_json::Value =
        serde_json::from_str(crate::store::DEFAULT_CHANNELS_DISPLAY).unwrap();
    assert_eq!(
        stored,
        ChannelsView::history_display(&TenantChannels::default())
    );
}
