//! Webhook and Slack notifications delivered to real HTTP receivers:
//! Alertmanager v4 payloads, signatures, Slack messages, retries and
//! `Retry-After`, dead letters, independence of channels, restarts and
//! coordinators sharing one database.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use knowton_common::health::{Channel, MessageKind};
use knowton_coordinator::config::ServeConfig;
use knowton_coordinator::server;
use knowton_coordinator::store::{Backend, now};
use knowton_proto::agent::v1::PodResult;
use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::receiver::{Answer, Receiver, ReceiverTls, RetryAfter};
use knowton_tests::smtp::{SmtpTls, TestSmtp};
use knowton_tests::{
    Db, TestCoordinator, eventually, on_every_backend, on_postgres, storage_alert,
};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

on_every_backend!(db:
    webhook_is_alertmanager_v4_and_signed_and_slack_has_text_blocks_and_colour,
    a_receiver_that_fails_for_a_while_gets_the_message_once,
    retry_after_is_honoured_in_seconds_and_as_a_date,
    client_errors_are_dead_letters_at_once,
    undelivered_messages_are_dead_letters_after_the_maximum_age,
    a_failing_slack_does_not_delay_or_duplicate_webhook_or_email,
    messages_survive_a_restart_and_a_crashed_lease_and_go_out_once,
    a_claim_takes_at_most_its_limit_and_skips_leased_rows,
);
on_postgres!(replicas_record_and_deliver_each_alert_once);

const SECRET: &str = "webhook-signing-secret-42";
const WAIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 30;

/// Alertmanager's webhook payload, version 4, and nothing else but our
/// idempotency key: an unknown or missing field fails the test.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AlertmanagerV4 {
    version: String,
    group_key: String,
    truncated_alerts: u64,
    status: String,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    common_labels: BTreeMap<String, String>,
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: String,
    alerts: Vec<AlertV4>,
    idempotency_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AlertV4 {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: chrono::DateTime<chrono::Utc>,
    ends_at: chrono::DateTime<chrono::Utc>,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

fn verify_signature(body: &[u8], header: &str) {
    let hex = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, expected, "X-Knowton-Signature verifies");
}

/// A coordinator whose operator webhook (and Slack, if given) are `hook`/`slack`.
async fn with_operator_channels(
    db: Db,
    hook: Option<&Receiver>,
    slack: Option<&Receiver>,
    change: impl FnOnce(&mut knowton_coordinator::config::ServeArgs),
) -> TestCoordinator {
    let hook = hook.map(|r| r.url("/alertmanager"));
    let slack = slack.map(|r| r.url("/services/T000/B000/slack-token"));
    TestCoordinator::start_and(db, |a| {
        a.notify.notify_webhook = hook;
        a.notify.notify_slack = slack;
        change(a);
    })
    .await
}

async fn row(kt: &TestCoordinator, key: &str, state: &str) -> Value {
    eventually(WAIT, &format!("{key} {state}"), || async {
        kt.notifications(&format!("state={state}"))
            .await
            .into_iter()
            .find(|n| n["idempotencyKey"] == key)
    })
    .await
}

/// The storage alert the engine opens for `created` (see
/// [`TestCoordinator::fill_storage`]), with its first idempotency key on
/// the operator's webhook.
async fn storage_alert_on_operator_webhook(kt: &TestCoordinator, created: &Value) -> String {
    let alert = kt.fill_storage(&mut Feed::new(kt, "node-a"), created).await;
    format!("alert:{}:1:webhook:operator", alert["id"].as_str().unwrap())
}

/// A result of `tenant`'s pod (basic plan) breaching five checks at once:
/// storage, users, error rate, response time and database; with
/// `per_second` at 1.4 requests/s (84% of the plan's), the API rate too.
fn breaching(tenant: &str, per_second: f64) -> PodResult {
    healthy(tenant, "web-0")
        .storage(98 * GIB / 10)
        .users(10.0)
        .traffic(per_second, 0.2)
        .slow(2500)
        .database_down()
}

async fn webhook_is_alertmanager_v4_and_signed_and_slack_has_text_blocks_and_colour(db: Db) {
    // The tenant's receivers: https on this machine, which the coordinator
    // may reach because the operator opened loopback and trusts their CA.
    let tls = ReceiverTls::generate();
    let hook = Receiver::start_tls(&tls).await;
    let slack = Receiver::start_tls(&tls).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = tls.write_ca(dir.path());
    let kt = TestCoordinator::start_and(db, |a| {
        a.notify.notify_allow_cidr = vec!["127.0.0.0/8".into()];
        a.notify.notify_ca_file = Some(ca);
        a.alerting.alert_resolve_after = 1;
    })
    .await;
    let created = kt.provision("acme", "enterprise").await;
    let put = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme/notifications",
            Some(json!({
                "emails": [],
                "webhookUrl": hook.url_via("localhost", "/alertmanager"),
                "webhookSecret": SECRET,
                "slackWebhookUrl": slack.url("/services/T000/B000/slack-token"),
            })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);

    let mut feed = Feed::new(&kt, "node-a");
    let opened = kt.fill_storage(&mut feed, &created).await;
    let alert = opened["id"].as_str().unwrap();
    assert_eq!(kt.alert(alert).await["history"][0]["notifications"], 2);
    let firing = eventually(WAIT, "the webhook", || async { hook.accepted().pop() }).await;
    assert_eq!(firing.path, "/alertmanager");
    assert_eq!(firing.header("content-type"), Some("application/json"));
    verify_signature(&firing.body, firing.header("x-knowton-signature").unwrap());
    let payload: AlertmanagerV4 = serde_json::from_slice(&firing.body).unwrap();
    assert_eq!(payload.version, "4");
    assert_eq!(payload.status, "firing");
    assert_eq!(payload.receiver, "knowton-tenant");
    assert_eq!(payload.truncated_alerts, 0);
    assert!(payload.group_key.contains("tenant=\"acme\""));
    assert_eq!(payload.group_labels["tenant"], "acme");
    assert_eq!(payload.common_labels["severity"], "critical");
    assert_eq!(
        payload.common_annotations["summary"],
        "storage at 96% of 1 TiB"
    );
    assert_eq!(payload.external_url, kt.base);
    let key = format!("alert:{alert}:1:webhook:tenant");
    assert_eq!(payload.idempotency_key, key);
    assert_eq!(firing.header("idempotency-key"), Some(key.as_str()));
    let [one] = &payload.alerts[..] else {
        panic!("one alert: {:?}", payload.alerts)
    };
    assert_eq!(one.status, "firing");
    assert_eq!(one.labels["alertname"], "storage");
    assert_eq!(one.annotations["value"], "96%");
    assert_eq!(
        one.ends_at.timestamp(),
        -62135596800,
        "the zero time while firing"
    );
    assert!(one.starts_at < chrono::Utc::now());
    assert_eq!(one.fingerprint.len(), 16);
    assert!(one.generator_url.ends_with("/api/v1/monitoring/health"));

    let message = eventually(WAIT, "the Slack message", || async {
        slack.accepted().pop()
    })
    .await;
    assert_eq!(message.path, "/services/T000/B000/slack-token");
    assert!(message.header("x-knowton-signature").is_none());
    let body = message.json();
    assert_eq!(body["text"], "[CRITICAL] acme: storage at 96% of 1 TiB");
    assert!(!body["blocks"].as_array().unwrap().is_empty());
    assert_eq!(body["blocks"][0]["type"], "section");
    assert_eq!(
        body["attachments"][0]["color"], "#e01e5a",
        "red while critical"
    );
    let details = body["attachments"][0]["blocks"].to_string();
    assert!(details.contains("96%") && details.contains("95%"));

    // The resolution: green, resolved, with its end time.
    feed.send(vec![healthy("acme", "web-0")]);
    let resolved = eventually(WAIT, "the resolution", || async {
        (hook.accepted().len() == 2).then(|| hook.accepted()[1].clone())
    })
    .await;
    let payload: AlertmanagerV4 = serde_json::from_slice(&resolved.body).unwrap();
    assert_eq!(payload.status, "resolved");
    assert!(payload.alerts[0].ends_at > payload.alerts[0].starts_at);
    assert_eq!(
        payload.idempotency_key,
        format!("alert:{alert}:2:webhook:tenant")
    );
    let green = eventually(WAIT, "the Slack resolution", || async {
        (slack.accepted().len() == 2).then(|| slack.accepted()[1].json())
    })
    .await;
    assert_eq!(green["text"], "[RESOLVED] acme: storage at 0% of 1 TiB");
    assert_eq!(green["attachments"][0]["color"], "#2eb67d");
}

async fn a_receiver_that_fails_for_a_while_gets_the_message_once(db: Db) {
    let hook = Receiver::start().await;
    hook.script([503, 503, 500].map(Answer::status));
    let kt = with_operator_channels(db, Some(&hook), None, |_| {}).await;
    let created = kt.provision("acme", "basic").await;
    let key = storage_alert_on_operator_webhook(&kt, &created).await;
    let delivered = row(&kt, &key, "delivered").await;
    assert_eq!(delivered["attempts"], 4);
    assert_eq!(delivered["recipient"], format!("http://{}/…", hook.addr));
    assert!(delivered["lastError"].as_str().unwrap().contains("500"));
    let hits = hook.hits();
    assert_eq!(hits.len(), 4, "three failures, then one delivery");
    assert_eq!(hook.accepted().len(), 1, "accepted once");
    assert!(
        hits.iter()
            .all(|h| h.header("idempotency-key") == Some(key.as_str()))
    );
    for pair in hits.windows(2) {
        assert!(
            pair[1].at > pair[0].at + Duration::from_millis(20),
            "backed off"
        );
    }
}

async fn retry_after_is_honoured_in_seconds_and_as_a_date(db: Db) {
    let hook = Receiver::start().await;
    hook.script([
        Answer::status(429).retry_after(RetryAfter::Seconds(1)),
        Answer::status(503).retry_after(RetryAfter::DateIn(Duration::from_secs(2))),
    ]);
    let kt = with_operator_channels(db, Some(&hook), None, |_| {}).await;
    let created = kt.provision("acme", "basic").await;
    let key = storage_alert_on_operator_webhook(&kt, &created).await;
    row(&kt, &key, "delivered").await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 3);
    for pair in hits.windows(2) {
        let asked = pair[0].retry_at.unwrap();
        assert!(
            pair[1].wall >= asked,
            "retried at {:?}, before the Retry-After {asked:?}",
            pair[1].wall
        );
    }
    assert!(hits[1].at >= hits[0].at + Duration::from_secs(1));
}

async fn client_errors_are_dead_letters_at_once(db: Db) {
    let hook = Receiver::start().await;
    hook.answer_by_default(Answer::status(400));
    let kt = with_operator_channels(db, Some(&hook), None, |_| {}).await;
    let created = kt.provision("acme", "basic").await;
    let key = storage_alert_on_operator_webhook(&kt, &created).await;
    let failed = row(&kt, &key, "failed").await;
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["state"], "failed");
    assert!(failed["failedAt"].is_string() && failed.get("nextAttemptAt").is_none());
    let error = failed["lastError"].as_str().unwrap();
    assert!(
        error.contains("400") && error.contains("scripted 400"),
        "{error}"
    );
    assert_eq!(hook.hits().len(), 1, "a 4xx is not retried");
    assert!(
        !kt.notifications("state=pending")
            .await
            .iter()
            .any(|n| n["idempotencyKey"] == key.as_str())
    );
}

async fn undelivered_messages_are_dead_letters_after_the_maximum_age(db: Db) {
    let hook = Receiver::start().await;
    hook.answer_by_default(Answer::status(503));
    let kt = with_operator_channels(db, Some(&hook), None, |a| {
        a.notify.notify_max_age_seconds = 2;
    })
    .await;
    let created = kt.provision("acme", "basic").await;
    let key = storage_alert_on_operator_webhook(&kt, &created).await;
    let failed = row(&kt, &key, "failed").await;
    let error = failed["lastError"].as_str().unwrap();
    assert!(
        error.contains("not delivered within 2s") && error.contains("503"),
        "{error}"
    );
    let attempts = failed["attempts"].as_i64().unwrap();
    assert!(attempts > 2, "retried until the maximum age: {attempts}");
    assert_eq!(hook.hits().len() as i64, attempts);
    let created_at: chrono::DateTime<chrono::Utc> =
        failed["createdAt"].as_str().unwrap().parse().unwrap();
    let failed_at: chrono::DateTime<chrono::Utc> =
        failed["failedAt"].as_str().unwrap().parse().unwrap();
    assert!(failed_at >= created_at + chrono::Duration::seconds(2));
}

async fn a_failing_slack_does_not_delay_or_duplicate_webhook_or_email(db: Db) {
    let hook = Receiver::start().await;
    let slack = Receiver::start().await;
    // Slow and failing: each attempt holds its connection for 1.5 s.
    slack.answer_by_default(Answer::status(503).delayed(Duration::from_millis(1500)));
    let smtp = TestSmtp::start(SmtpTls::StartTlsRequired, false).await;
    let kt = with_operator_channels(db, Some(&hook), Some(&slack), |a| {
        a.notify.smtp_url = Some(smtp.url());
        a.notify.smtp_from = Some("alerts@knowton.example.com".into());
        a.notify.smtp_ca = Some(smtp.ca_file.clone());
        a.alerting.alert_resolve_after = 1;
    })
    .await;
    kt.provision("acme", "basic").await;
    // A burst, more than a channel's concurrency: Slack's slots all hang.
    // Five alerts open at once, and resolve at once.
    let mut feed = Feed::new(&kt, "node-a");
    feed.send(vec![breaching("acme", 0.5)]);
    kt.open_alerts("acme", 5).await;
    feed.send(vec![healthy("acme", "web-0")]);
    let delivered = eventually(WAIT, "webhook and e-mail", || async {
        let rows = kt.notifications("state=delivered").await;
        let count = |channel: &str| {
            rows.iter()
                .filter(|n| n["channel"] == channel && n["kind"] == "alert")
                .count()
        };
        (count("webhook") == 10 && count("email") == 10).then_some(rows)
    })
    .await;
    assert!(delivered.iter().all(|n| n["attempts"] == 1));
    let slack_rows: Vec<Value> = kt
        .notifications("state=pending")
        .await
        .into_iter()
        .filter(|n| n["channel"] == "slack")
        .collect();
    assert_eq!(slack_rows.len(), 10, "Slack is still failing meanwhile");
    assert_eq!(hook.accepted().len(), 10, "each webhook once");
    let alert_mails = smtp
        .messages()
        .into_iter()
        .filter(|m| m.header("Subject").is_some_and(|s| s.contains("] acme: ")))
        .count();
    assert_eq!(alert_mails, 10, "each e-mail once");
    let mut keys: Vec<String> = hook
        .accepted()
        .iter()
        .map(|h| h.header("idempotency-key").unwrap().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 10);
}

async fn messages_survive_a_restart_and_a_crashed_lease_and_go_out_once(db: Db) {
    let hook = Receiver::start().await;
    hook.answer_by_default(Answer::status(503));
    let kt = with_operator_channels(db, Some(&hook), None, |_| {}).await;
    let created = kt.provision("acme", "basic").await;
    let first = storage_alert_on_operator_webhook(&kt, &created).await;
    eventually(WAIT, "a failed attempt", || async {
        (!hook.hits().is_empty()).then_some(())
    })
    .await;
    let secrets = kt.secret_box();
    let (db, args) = kt.stop_for_restart().await;

    // While it is down, a second notification is committed and leased by a
    // coordinator that is then killed (kill -9) before delivering it: its
    // engine's write (planned and enqueued as the engine does), as no engine
    // of ours runs now.
    let store = Backend::from_url(&db.url).unwrap().open().await.unwrap();
    let second = Uuid::now_v7();
    let event = storage_alert(&created, second, 1, false);
    let channels = knowton_coordinator::notify::channels::ResolvedChannels {
        webhooks: vec![(
            knowton_coordinator::notify::channels::Receiver::Operator,
            knowton_coordinator::notify::channels::WebhookTarget {
                url: hook.url("/alertmanager"),
                secret: None,
            },
        )],
        ..Default::default()
    };
    let messages =
        knowton_coordinator::notify::render::plan_alert(&event, &channels, &secrets, "http://x");
    store
        .enqueue(Some(event.tenant_id), MessageKind::Alert, &messages)
        .await
        .unwrap();
    // (Claimed as if a second from now, so that the first row, whose next
    // attempt may be a backoff away, is leased too.)
    let lease_end = now() + chrono::Duration::milliseconds(2000);
    let leased = store
        .claim_due(
            Channel::Webhook,
            now() + chrono::Duration::seconds(1),
            lease_end,
            10,
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), 2, "both rows leased by the dead coordinator");
    store.close().await;

    let hits_before = hook.hits().len();
    hook.answer_by_default(Answer::status(200));
    let kt = TestCoordinator::start_with(db, args).await;
    let second = format!("alert:{second}:1:webhook:operator");
    for key in [&first, &second] {
        row(&kt, key, "delivered").await;
    }
    let after: Vec<_> = hook.hits().into_iter().skip(hits_before).collect();
    assert_eq!(after.len(), 2, "each once after the restart");
    let lease_end: std::time::SystemTime = lease_end.into();
    assert!(
        after.iter().all(|h| h.wall >= lease_end),
        "a leased row waits for the lease to run out"
    );
    let mut keys: Vec<&str> = after
        .iter()
        .map(|h| h.header("idempotency-key").unwrap())
        .collect();
    keys.sort();
    let mut expected = [first, second];
    expected.sort();
    assert_eq!(keys, expected);
}

/// Two replicas on one PostgreSQL database, both fed every result (as
/// agents stream to every replica): the leader records each alert once and
/// each message is delivered once; the other evaluates the same results and
/// records nothing.
async fn replicas_record_and_deliver_each_alert_once(db: Db) {
    let hook = Receiver::start().await;
    hook.answer_by_default(Answer::status(200).delayed(Duration::from_millis(30)));
    let kt = with_operator_channels(db, Some(&hook), None, |a| {
        a.alerting.alert_resolve_after = 1;
    })
    .await;
    // Provisioned first, so that the second replica knows both tenants.
    kt.provision("acme", "basic").await;
    kt.provision("beta", "basic").await;
    let mut second_args = TestCoordinator::args_for(&kt.db, |a| {
        a.notify.notify_webhook = Some(hook.url("/alertmanager"));
        a.alerting.alert_resolve_after = 1;
    });
    second_args.http_addr = "127.0.0.1:0".parse().unwrap();
    second_args.admin_token_file = None;
    let second = server::start(ServeConfig::try_from(second_args).unwrap())
        .await
        .expect("a second replica on the same database");
    assert!(!second.state.deployer.is_leader(), "the first one leads");
    // Six open and resolve for each tenant.
    let mut feeds = [
        Feed::new(&kt, "node-a"),
        Feed::on(second.state.clone(), "node-a"),
    ];
    for feed in &mut feeds {
        feed.send(vec![breaching("acme", 1.4), breaching("beta", 1.4)]);
    }
    for tenant in ["acme", "beta"] {
        kt.open_alerts(tenant, 6).await;
    }
    for feed in &mut feeds {
        feed.send(vec![healthy("acme", "web-0"), healthy("beta", "web-0")]);
    }
    eventually(WAIT, "24 deliveries", || async {
        let rows = kt.notifications("state=delivered").await;
        (rows.iter().filter(|n| n["kind"] == "alert").count() == 24).then_some(())
    })
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for hit in hook.hits() {
        *seen
            .entry(hit.header("idempotency-key").unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 24);
    assert!(
        seen.values().all(|n| *n == 1),
        "each message once: {seen:?}"
    );
    let alerts = kt
        .db
        .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM alerts")
        .await
        .unwrap();
    assert_eq!(alerts, "12", "each alert opened once");
    second.shutdown().await.unwrap();
}

async fn a_claim_takes_at_most_its_limit_and_skips_leased_rows(db: Db) {
    let kt = TestCoordinator::start(db).await;
    let created = kt.provision("acme", "basic").await;
    let secrets = kt.secret_box();
    let (db, _) = kt.stop_for_restart().await;
    let store = Backend::from_url(&db.url).unwrap().open().await.unwrap();
    let channels = knowton_coordinator::notify::channels::ResolvedChannels {
        webhooks: vec![(
            knowton_coordinator::notify::channels::Receiver::Operator,
            knowton_coordinator::notify::channels::WebhookTarget {
                url: "https://hooks.example.com/x".into(),
                secret: None,
            },
        )],
        ..Default::default()
    };
    for _ in 0..10 {
        let event = storage_alert(&created, Uuid::now_v7(), 1, false);
        let messages =
            knowton_coordinator::notify::render::plan_alert(&event, &channels, &secrets, "");
        store
            .enqueue(Some(event.tenant_id), MessageKind::Alert, &messages)
            .await
            .unwrap();
    }
    let at = now();
    let lease = at + chrono::Duration::seconds(30);
    let first = store
        .claim_due(Channel::Webhook, at, lease, 3)
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "the limit, even where the plan rescans");
    let second = store
        .claim_due(Channel::Webhook, at, lease, 100)
        .await
        .unwrap();
    assert_eq!(second.len(), 7, "leased rows are skipped");
    assert!(
        store
            .claim_due(Channel::Webhook, at, lease, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let mut ids: Vec<Uuid> = first.iter().chain(&second).map(|m| m.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert_eq!(
        store.next_due(false, at).await.unwrap(),
        Some(lease),
        "next due when the leases run out"
    );
    let later = lease + chrono::Duration::seconds(1);
    assert_eq!(
        store
            .claim_due(Channel::Webhook, later, later, 100)
            .await
            .unwrap()
            .len(),
        10
    );
    assert!(
        store
            .claim_due(Channel::Email, later, later, 100)
            .await
            .unwrap()
            .len()
            == 1,
        "the welcome e-mail"
    );
    store.close().await;
}
