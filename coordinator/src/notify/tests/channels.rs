//! Operator and tenant channels: URL policy, request validation, merging.

use super::*;

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
        redact_url_to_host("https://u:p@hooks.slack.com/services/T0/B0/token?x=1"),
        "https://hooks.slack.com/…"
    );
    assert_eq!(
        redact_url_to_host("https://hooks.example.com?token=s3cret&password=pw"),
        "https://hooks.example.com/…"
    );
    assert_eq!(
        redact_url_to_host("http://127.0.0.1:9000/"),
        "http://127.0.0.1:9000/"
    );
    assert_eq!(
        redact_url_to_host("https://user:pw@h.example.com/"),
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
