//! E-mail notifications delivered to a real SMTP server (aiosmtpd): over
//! required STARTTLS with AUTH, over implicit TLS, never in the clear when
//! STARTTLS is required, and kept in the outbox until an SMTP server is
//! configured.

use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_coordinator::notify::email::message_id;
use knowton_tests::feed::Feed;
use knowton_tests::smtp::{ReceivedMail, SmtpTls, TestSmtp};
use knowton_tests::{Db, TestCoordinator, eventually, on_every_backend};

on_every_backend!(db:
    welcome_email_arrives_over_starttls_with_auth,
    alert_email_arrives_over_implicit_tls,
    email_waits_for_an_smtp_server_and_goes_out_once_after_restart,
    required_starttls_never_sends_in_the_clear,
    the_daily_report_is_emailed_to_operators_once_a_day,
);

const FROM: &str = "KnowTon <noreply@knowton.example.com>";

fn use_smtp(args: &mut ServeArgs, smtp: &TestSmtp) {
    args.notify.smtp_url = Some(smtp.url());
    args.notify.smtp_from = Some(FROM.into());
    args.notify.smtp_ca = Some(smtp.ca_file.clone());
}

async fn mail_with_subject(smtp: &TestSmtp, subject: &str) -> ReceivedMail {
    eventually(Duration::from_secs(20), subject, || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.header("Subject") == Some(subject))
    })
    .await
}

/// Waits until the outbox row with `key` is in `state`; returns it.
async fn row_in_state(kt: &TestCoordinator, key: &str, state: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(20),
        &format!("{key} {state}"),
        || async {
            kt.notifications(&format!("state={state}"))
                .await
                .into_iter()
                .find(|n| n["idempotencyKey"] == key)
        },
    )
    .await
}

async fn welcome_email_arrives_over_starttls_with_auth(db: Db) {
    let smtp = TestSmtp::start(SmtpTls::StartTlsRequired, true).await;
    let kt = TestCoordinator::start_and(db, |a| use_smtp(a, &smtp)).await;
    let created = kt.provision("acme", "basic").await;
    let id = created["tenant"]["id"].as_str().unwrap();
    let password = created["admin"]["temporaryPassword"].as_str().unwrap();

    let mail = mail_with_subject(&smtp, "Welcome to acme Corp on KnowTon").await;
    assert!(mail.tls, "sent after STARTTLS");
    assert!(mail.authenticated, "sent after AUTH");
    assert_eq!(mail.mail_from, "noreply@knowton.example.com");
    assert_eq!(mail.rcpt_tos, ["admin@acme.example.com"]);
    assert!(
        mail.header("From")
            .unwrap()
            .contains("noreply@knowton.example.com")
    );
    assert_eq!(mail.header("To"), Some("admin@acme.example.com"));
    assert_eq!(mail.content_type, "multipart/alternative");
    let key = format!("welcome:{id}");
    assert_eq!(mail.header("X-Knowton-Idempotency-Key"), Some(key.as_str()));
    assert_eq!(
        mail.header("Message-ID"),
        Some(message_id(&key, "knowton.example.com").as_str()),
        "the Message-ID is derived from the idempotency key"
    );
    let text = mail.part("text/plain").expect("a text part");
    let html = mail.part("text/html").expect("an HTML part");
    for part in [text, html] {
        assert!(
            part.contains(password),
            "the temporary password is in both parts"
        );
        assert!(part.contains("https://acme.knowton.example.com"));
    }
    assert!(html.contains("<h1>"));

    let row = row_in_state(&kt, &key, "delivered").await;
    assert_eq!(row["channel"], "email");
    assert_eq!(row["kind"], "welcome");
    assert_eq!(row["tenant"], "acme");
    assert_eq!(row["attempts"], 1);
    assert!(row["deliveredAt"].is_string() && row.get("nextAttemptAt").is_none());
    assert!(row.get("body").is_none() && !row.to_string().contains(password));
    assert_eq!(smtp.messages().len(), 1, "delivered once");
}

async fn alert_email_arrives_over_implicit_tls(db: Db) {
    let smtp = TestSmtp::start(SmtpTls::Implicit, true).await;
    let kt = TestCoordinator::start_and(db, |a| {
        use_smtp(a, &smtp);
        a.notify.notify_email = vec!["ops@knowton.example.com".into()];
    })
    .await;
    let created = kt.provision("acme", "enterprise").await;
    let mut feed = Feed::new(&kt, "node-a");
    let alert = kt.fill_storage(&mut feed, &created).await;
    let id = alert["id"].as_str().unwrap();
    assert_eq!(
        kt.alert(id).await["history"][0]["notifications"],
        2,
        "the admin and the operator"
    );

    let subject = "[CRITICAL] acme: storage at 96% of 1 TiB";
    let mails = eventually(Duration::from_secs(20), "two alert e-mails", || async {
        let mails: Vec<ReceivedMail> = smtp
            .messages()
            .into_iter()
            .filter(|m| m.header("Subject") == Some(subject))
            .collect();
        (mails.len() == 2).then_some(mails)
    })
    .await;
    let mut recipients: Vec<&str> = mails.iter().map(|m| m.rcpt_tos[0].as_str()).collect();
    recipients.sort();
    assert_eq!(
        recipients,
        ["admin@acme.example.com", "ops@knowton.example.com"]
    );
    for mail in &mails {
        assert!(mail.tls && mail.authenticated);
        assert_eq!(mail.content_type, "multipart/alternative");
        let key = format!("alert:{id}:1:email:{}", mail.rcpt_tos[0]);
        assert_eq!(mail.header("X-Knowton-Idempotency-Key"), Some(key.as_str()));
        for part in ["text/plain", "text/html"] {
            let body = mail.part(part).unwrap();
            for needle in [
                "acme Corp",
                "storage",
                "96%",
                "95%",
                "critical",
                key.as_str(),
            ] {
                assert!(body.contains(needle), "{part} lacks {needle:?}");
            }
        }
    }
}

async fn email_waits_for_an_smtp_server_and_goes_out_once_after_restart(db: Db) {
    let kt = TestCoordinator::start(db).await;
    let created = kt.provision("acme", "basic").await;
    let key = format!("welcome:{}", created["tenant"]["id"].as_str().unwrap());
    let row = row_in_state(&kt, &key, "pending").await;
    assert_eq!(row["lastError"], "no SMTP server configured (--smtp-url)");
    assert_eq!(row["attempts"], 0, "not attempted without a server");
    assert!(row["nextAttemptAt"].is_string());

    let (db, mut args) = kt.stop_for_restart().await;
    let smtp = TestSmtp::start(SmtpTls::StartTlsRequired, false).await;
    use_smtp(&mut args, &smtp);
    let kt = TestCoordinator::start_with(db, args).await;
    mail_with_subject(&smtp, "Welcome to acme Corp on KnowTon").await;
    let row = row_in_state(&kt, &key, "delivered").await;
    assert_eq!(row["attempts"], 1);
    assert!(row.get("lastError").is_none());
    assert_eq!(smtp.messages().len(), 1);
}

async fn required_starttls_never_sends_in_the_clear(db: Db) {
    let smtp = TestSmtp::start(SmtpTls::None, false).await;
    let kt = TestCoordinator::start_and(db, |a| use_smtp(a, &smtp)).await;
    let created = kt.provision("acme", "basic").await;
    let key = format!("welcome:{}", created["tenant"]["id"].as_str().unwrap());
    let row = eventually(Duration::from_secs(20), "a failed attempt", || async {
        kt.notifications("state=pending")
            .await
            .into_iter()
            .find(|n| n["idempotencyKey"] == key.as_str() && n["attempts"].as_i64() >= Some(2))
    })
    .await;
    let error = row["lastError"].as_str().unwrap();
    assert!(error.to_ascii_lowercase().contains("tls"), "{error}");
    assert!(smtp.messages().is_empty(), "nothing was sent unencrypted");
}

async fn the_daily_report_is_emailed_to_operators_once_a_day(db: Db) {
    let smtp = TestSmtp::start(SmtpTls::StartTlsRequired, false).await;
    let kt = TestCoordinator::start_and(db, |a| {
        use_smtp(a, &smtp);
        a.notify.notify_email = vec![
            "ops@knowton.example.com".into(),
            "oncall@knowton.example.com".into(),
        ];
    })
    .await;
    kt.provision("acme", "basic").await;
    let sent = kt
        .admin(
            reqwest::Method::POST,
            "/api/v1/monitoring/report/send",
            None,
        )
        .await;
    assert_eq!(sent.status, reqwest::StatusCode::OK, "{}", sent.body);
    assert_eq!(sent.body["emailed"], 2);
    assert_eq!(sent.body["report"]["tenants"][0]["tenant"], "acme");
    let subject = eventually(Duration::from_secs(20), "the report e-mails", || async {
        let mails: Vec<ReceivedMail> = smtp
            .messages()
            .into_iter()
            .filter(|m| {
                m.header("Subject")
                    .is_some_and(|s| s.starts_with("KnowTon tenant health"))
            })
            .collect();
        (mails.len() == 2).then(|| mails[0].header("Subject").unwrap().to_owned())
    })
    .await;
    let mail = mail_with_subject(&smtp, &subject).await;
    assert!(mail.part("text/plain").unwrap().contains("acme"));
    assert!(mail.part("text/html").unwrap().contains("<td>acme</td>"));

    // A second run the same day (a retried cron job) sends nothing more.
    let again = kt
        .admin(
            reqwest::Method::POST,
            "/api/v1/monitoring/report/send",
            None,
        )
        .await;
    assert_eq!(again.status, reqwest::StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["emailed"], 0);
    kt.stop().await;
}
