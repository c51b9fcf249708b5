//! The notify flags: SMTP URLs, flag validation, message ids and the CA file.

use super::*;

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
