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
fn operator_urls_are_https_or_loopback_and_shown_without_paths() {
    for ok in [
        "https://hooks.slack.com/services/T0/B0/x",
        "https://10.0.0.5/hook",
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://[::1]:80/",
    ] {
        assert!(validate_operator_url("u", ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://hooks.example.com/x",
        "ftp://127.0.0.1/x",
        "https://example.com/#frag",
        "not a url",
        "http://10.0.0.1/x",
    ] {
        assert!(validate_operator_url("u", bad).is_err(), "{bad}");
    }
    assert_eq!(
        redact_url("https://u:p@hooks.slack.com/services/T0/B0/token?x=1"),
        "https://hooks.slack.com/…"
    );
    assert_eq!(
        redact_url("https://hooks.example.com?token=s3cret&password=pw"),
        "https://hooks.example.com/…"
    );
    assert_eq!(
        redact_url("http://127.0.0.1:9000/"),
        "http://127.0.0.1:9000/"
    );
    assert_eq!(
        redact_url("https://user:pw@h.example.com/"),
        "https://h.example.com/"
    );
}

#[test]
fn tenant_urls_are_https_to_addresses_the_policy_allows() {
    let policy = address::AddressPolicy::default();
    for ok in [
        "https://hooks.slack.com/services/T0/B0/x",
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
        // Names are checked after resolution, when delivering.
        "https://localhost/hook",
        "https://metadata.google.internal/",
    ] {
        assert!(
            validate_tenant_url("webhookUrl", ok, &policy).is_ok(),
            "{ok}"
        );
    }
    for (bad, message) in [
        (
            "http://hooks.example.com/x",
            "must be an absolute https URL",
        ),
        ("http://127.0.0.1:9000/x", "must be an absolute https URL"),
        ("ftp://8.8.8.8/x", "must be an absolute https URL"),
        ("https://example.com/#frag", "must not have a #fragment"),
        (
            "https://127.0.0.1/x",
            "address 127.0.0.1 is not allowed for tenant notifications (loopback)",
        ),
        (
            "https://169.254.169.254/latest/meta-data/",
            "address 169.254.169.254 is not allowed for tenant notifications (link-local)",
        ),
        (
            "https://[::ffff:10.0.0.1]/x",
            "address ::ffff:10.0.0.1 is not allowed for tenant notifications (private network)",
        ),
        (
            "https://[fd00::1]/x",
            "address fd00::1 is not allowed for tenant notifications (unique local, fc00::/7)",
        ),
        (
            "https://0x7f.1/x",
            "address 127.0.0.1 is not allowed for tenant notifications (loopback)",
        ),
    ] {
        let err = validate_tenant_url("slackWebhookUrl", bad, &policy).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.message.as_str()),
            ("slackWebhookUrl", message),
            "{bad}"
        );
    }
    let open = address::AddressPolicy::new(vec![], vec![], vec!["127.0.0.0/8".parse().unwrap()]);
    assert!(validate_tenant_url("webhookUrl", "https://127.0.0.1:8443/x", &open).is_ok());
    assert!(validate_tenant_url("webhookUrl", "http://127.0.0.1:8443/x", &open).is_err());
}

#[test]
fn channel_requests_name_the_bad_field() {
    let bad_email = ChannelsRequest {
        emails: Some(vec!["ok@example.com".into(), "nope".into()]),
        ..Default::default()
    };
    let any = address::AddressPolicy::default();
    assert_eq!(bad_email.validate(&any).unwrap_err().field, "emails[1]");
    let lonely_secret = ChannelsRequest {
        webhook_secret: Some("0123456789abcdef".into()),
        ..Default::default()
    };
    assert_eq!(
        lonely_secret.validate(&any).unwrap_err().field,
        "webhookSecret"
    );
    let short_secret = ChannelsRequest {
        webhook_url: Some("https://hooks.example.com/x".into()),
        webhook_secret: Some("short".into()),
        ..Default::default()
    };
    assert_eq!(
        short_secret.validate(&any).unwrap_err().field,
        "webhookSecret"
    );
    let private_slack = ChannelsRequest {
        slack_webhook_url: Some("https://192.168.0.10/services/x".into()),
        ..Default::default()
    };
    assert_eq!(
        private_slack.validate(&any).unwrap_err().field,
        "slackWebhookUrl"
    );
    let good = ChannelsRequest {
        emails: Some(vec!["A@Example.com".into(), "a@example.com".into()]),
        slack_webhook_url: Some("https://hooks.slack.com/services/T0/B0/x".into()),
        ..Default::default()
    }
    .validate(&any)
    .unwrap();
    assert_eq!(
        good.emails.as_deref(),
        Some(&["A@example.com".to_owned()][..])
    );
}

#[test]
fn resolved_channels_merge_operator_and_tenant_without_repeats() {
    let global = GlobalChannels {
        emails: vec!["ops@example.com".into()],
        webhook: Some(WebhookTarget {
            url: "https://hooks.example.com/a".into(),
            secret: None,
        }),
        slack: None,
    };
    let tenant = TenantChannels {
        emails: None,
        webhook: Some(WebhookTarget {
            url: "https://hooks.example.com/a".into(),
            secret: Some("x".repeat(16)),
        }),
        slack: Some(SlackTarget {
            url: "https://hooks.slack.com/t".into(),
        }),
    };
    let merged = ResolvedChannels::merge(&global, &tenant, "OPS@example.com");
    assert_eq!(merged.emails, ["ops@example.com"]);
    assert_eq!(merged.webhooks.len(), 1, "the same URL once");
    assert_eq!(merged.slack[0].0, Receiver::Tenant);
    // The operator's part: its address and webhook, not the tenant's Slack.
    let operator = merged.operator_only();
    assert_eq!(operator.emails, ["ops@example.com"]);
    assert_eq!(operator.webhooks.len(), 1);
    assert!(operator.slack.is_empty());

    let tenant = TenantChannels {
        emails: Some(vec!["admin@acme.com".into()]),
        ..tenant
    };
    let merged = ResolvedChannels::merge(&global, &tenant, "x@acme.com");
    assert_eq!(merged.emails, ["ops@example.com", "admin@acme.com"]);
    assert_eq!(merged.operator_only().emails, ["ops@example.com"]);
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
fn smtp_urls_parse_with_defaults_and_hide_the_password() {
    let s = SmtpSettings::parse(
        "smtp://mailer%40acme:p%40ss@mail.example.com",
        "KnowTon <alerts@example.com>",
        StartTls::Required,
        None,
    )
    .unwrap();
    assert_eq!(
        (s.host.as_str(), s.port, s.implicit_tls),
        ("mail.example.com", 587, false)
    );
    assert_eq!(s.username.as_deref(), Some("mailer@acme"));
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("p@ss") && !shown.contains("p%40ss"),
        "{shown}"
    );
    let tls = SmtpSettings::parse(
        "smtps://mail.example.com",
        "a@example.com",
        StartTls::Required,
        None,
    )
    .unwrap();
    assert_eq!((tls.port, tls.implicit_tls), (465, true));
    let errors = SmtpSettings::parse(
        "imap://u:pw@mail.example.com/x",
        "not an address",
        StartTls::Never,
        None,
    )
    .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|e| !e.contains(":pw@")), "{errors:?}");
}

#[test]
fn notify_flags_report_every_problem_and_hide_secrets() {
    let args = NotifyArgs {
        smtp_url: Some("smtp://u:hunter2@mail.example.com".into()),
        notify_email: vec!["ops@example.com".into(), "bad".into()],
        notify_webhook: Some("http://hooks.example.com/token-path".into()),
        notify_webhook_secret: Some("webhook-secret-value".into()),
        notify_slack: Some("https://hooks.slack.com/services/slack-token".into()),
        notify_retry_base_ms: 0,
        notify_allow_cidr: vec!["127.0.0.0/8".into(), "everything".into()],
        cluster_pod_cidr: vec!["10.244.0.0/16".into(), "10.244.0.0/99".into()],
        cluster_service_cidr: vec!["10.96.0.0".into()],
        notify_ca_file: Some("/nonexistent/ca.pem".into()),
        ..NotifyArgs::default()
    };
    let mut errors = Vec::new();
    assert!(args.validate(&mut errors).is_none());
    let text = errors.join("\n");
    for expected in [
        "--smtp-from",
        "--notify-email \"bad\"",
        "--notify-webhook",
        "--notify-retry-base-ms",
        "--notify-allow-cidr \"everything\"",
        "--cluster-pod-cidr \"10.244.0.0/99\"",
        "--notify-ca-file /nonexistent/ca.pem",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    assert!(
        !text.contains("token-path") && !text.contains("hunter2"),
        "{text}"
    );
    let shown = format!("{args:?}");
    for secret in [
        "hunter2",
        "token-path",
        "webhook-secret-value",
        "slack-token",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let valid = NotifyArgs {
        smtp_url: Some("smtps://u:hunter2@mail.example.com".into()),
        smtp_from: Some("alerts@example.com".into()),
        notify_webhook: Some("https://hooks.example.com/token-path".into()),
        notify_webhook_secret: Some("webhook-secret-value".into()),
        notify_slack: Some("https://hooks.slack.com/services/slack-token".into()),
        notify_allow_cidr: vec!["127.0.0.0/8".into()],
        cluster_pod_cidr: vec!["34.64.0.0/14".into()],
        cluster_service_cidr: vec!["34.118.224.0/20".into()],
        ..NotifyArgs::default()
    };
    errors.clear();
    let settings = valid.validate(&mut errors).unwrap();
    let refused = |addr: &str| {
        settings
            .tenant_addresses
            .check(addr.parse().unwrap())
            .map_err(|r| r.reason)
    };
    assert_eq!(refused("127.0.0.1"), Ok(()));
    assert_eq!(refused("34.65.0.1"), Err(address::Forbidden::ClusterPods));
    assert_eq!(
        refused("34.118.224.10"),
        Err(address::Forbidden::ClusterServices)
    );
    let shown = format!("{settings:?}");
    for secret in [
        "hunter2",
        "token-path",
        "webhook-secret-value",
        "slack-token",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let defaults = NotifyArgs::default().validate(&mut errors).unwrap();
    assert_eq!(
        defaults,
        NotifySettings {
            external_url: String::new(),
            ..NotifySettings::default()
        }
    );
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

#[test]
fn message_ids_are_stable_per_key() {
    let a = message_id("welcome:1", "example.com");
    assert_eq!(a, message_id("welcome:1", "example.com"));
    assert_ne!(a, message_id("welcome:2", "example.com"));
    assert!(a.starts_with('<') && a.ends_with("@example.com>") && a.len() == 1 + 32 + 13);
}

#[test]
fn the_notify_ca_file_must_hold_usable_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::certs::CertificateAuthority::generate("notify test CA").unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca.cert_pem()).unwrap();
    let mut errors = Vec::new();
    let settings = NotifyArgs {
        notify_ca_file: Some(good),
        ..NotifyArgs::default()
    }
    .validate(&mut errors)
    .unwrap();
    assert_eq!(settings.extra_roots.len(), 1);
    // Building the clients with it does not fail.
    let _ = http::HttpSender::new(&settings);

    for (name, content, expected) in [
        ("empty.pem", "", "holds no PEM certificate"),
        ("junk.pem", "not a certificate", "holds no PEM certificate"),
        (
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "not a usable CA certificate",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let mut errors = Vec::new();
        let args = NotifyArgs {
            notify_ca_file: Some(path),
            ..NotifyArgs::default()
        };
        assert!(args.validate(&mut errors).is_none(), "{name}");
        assert!(
            errors.len() == 1
                && errors[0].starts_with("--notify-ca-file ")
                && errors[0].contains(expected),
            "{name}: {errors:?}"
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Latest instant an HTTP-date can name (31 Dec 9999 23:59:59 UTC).
    const LAST_HTTP_DATE: u64 = 253_402_300_799;

    fn header(value: &str) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).ok()?);
        Some(headers)
    }

    proptest! {
        /// Whatever a receiver sends, parsing never panics and never asks
        /// for more than the cap.
        #[test]
        fn retry_after_never_panics(value in any::<Vec<u8>>(), now in 0..LAST_HTTP_DATE) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let mut headers = HeaderMap::new();
                headers.insert(RETRY_AFTER, value);
                let wait = http::retry_after(&headers, now);
                prop_assert!(wait.is_none_or(|w| w <= http::MAX_RETRY_AFTER));
            }
        }

        /// Text that merely looks like a header value is handled the same.
        #[test]
        fn retry_after_of_printable_text_never_panics(value in "\\PC{0,64}") {
            if let Some(headers) = header(&value) {
                let _ = http::retry_after(&headers, SystemTime::now());
            }
        }

        /// Any number of digits: the number of seconds, capped; numbers
        /// past u64 do not overflow.
        #[test]
        fn delay_seconds_are_capped_not_overflowed(digits in "[0-9]{1,60}") {
            let headers = header(&digits).unwrap();
            let wait = http::retry_after(&headers, SystemTime::now()).unwrap();
            let expected = digits
                .parse::<u128>()
                .ok()
                .filter(|&s| s <= http::MAX_RETRY_AFTER.as_secs() as u128)
                .map_or(http::MAX_RETRY_AFTER, |s| Duration::from_secs(s as u64));
            prop_assert_eq!(wait, expected);
        }

        /// A date before now is now; a date after now is the time until it.
        #[test]
        fn dates_in_the_past_are_zero_and_future_dates_the_wait(
            at in 0..LAST_HTTP_DATE,
            offset in 0u64..10_000_000_000,
        ) {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
            let headers = header(&httpdate::fmt_http_date(at)).unwrap();
            let later = at + Duration::from_secs(offset);
            prop_assert_eq!(http::retry_after(&headers, later), Some(Duration::ZERO));
            if let Some(earlier) = at.checked_sub(Duration::from_secs(offset)) {
                prop_assert_eq!(
                    http::retry_after(&headers, earlier),
                    Some(Duration::from_secs(offset).min(http::MAX_RETRY_AFTER))
                );
            }
        }

        /// Whatever wait a receiver asks for and however many attempts
        /// were made, the retry decision never panics and never schedules
        /// past the maximum age.
        #[test]
        fn outcomes_never_overflow(
            asked in proptest::option::of(any::<u64>()),
            attempts in any::<i64>(),
            max_age in any::<u64>(),
            elapsed in 0i64..1_000_000,
        ) {
            let p = RetryPolicy {
                base: Duration::from_millis(1),
                max: Duration::from_secs(u64::MAX / 2),
                max_age: Duration::from_secs(max_age),
            };
            let created = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let now = created + chrono::Duration::seconds(elapsed);
            let attempt = Attempt::Retry {
                error: "HTTP 503".into(),
                after: asked.map(Duration::from_secs),
            };
            match p.outcome(attempt, attempts, created, now) {
                DeliveryOutcome::Retry { at, .. } => {
                    prop_assert!(at >= now);
                    let deadline = i64::try_from(max_age)
                        .ok()
                        .and_then(chrono::Duration::try_seconds)
                        .and_then(|age| created.checked_add_signed(age));
                    if let Some(deadline) = deadline {
                        prop_assert!(at <= deadline);
                    }
                }
                DeliveryOutcome::Failed { .. } => {}
                DeliveryOutcome::Delivered => prop_assert!(false, "a retry is never delivered"),
            }
        }
    }
}
