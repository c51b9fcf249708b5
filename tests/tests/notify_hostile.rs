//! Hostile receivers and hostile URLs, against real HTTP(S) receivers:
//! a receiver that answers with an endless body costs a few KiB and no
//! time; a tenant's URL never reaches loopback, private, link-local or
//! cluster addresses (refused at `PUT` when literal, when connecting
//! after DNS resolution otherwise), unless the operator opened the range;
//! the operator's own channels are exempt.

use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_coordinator::notify::channels::{Receiver as Whose, ResolvedChannels, WebhookTarget};
use knowton_tests::feed::Feed;
use knowton_tests::receiver::{Answer, Receiver, ReceiverTls};
use knowton_tests::{
    Db, TestCoordinator, eventually, eventually_showing, on_every_backend, storage_alert,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

on_every_backend!(db:
    an_endless_error_body_is_cut_off_after_a_few_kib_at_once,
    tenant_urls_to_forbidden_addresses_are_refused_naming_the_field,
    a_name_resolving_to_loopback_is_refused_when_delivering_without_a_connection,
    an_operator_allowed_range_is_reached_over_verified_tls,
    stored_rows_with_plain_or_literal_forbidden_urls_are_refused_when_delivering,
);

const PATH: &str = "/api/v1/tenants/acme/notifications";
const WAIT: Duration = Duration::from_secs(20);

/// Sets acme's channels to this webhook and Slack URL, no e-mail.
async fn set_hooks(kt: &TestCoordinator, webhook: String, slack: String) {
    let body = json!({"emails": [], "webhookUrl": webhook, "slackWebhookUrl": slack});
    let put = kt.admin(Method::PUT, PATH, Some(body)).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
}

/// A coordinator trusting `tls`'s CA for notifications, with `change`.
async fn trusting(
    db: Db,
    tls: &ReceiverTls,
    dir: &tempfile::TempDir,
    change: impl FnOnce(&mut ServeArgs),
) -> TestCoordinator {
    let ca = tls.write_ca(dir.path());
    TestCoordinator::start_and(db, move |a| {
        a.notify.notify_ca_file = Some(ca);
        change(a);
    })
    .await
}

/// The outbox rows of tenant `acme` in `state`.
async fn rows(kt: &TestCoordinator, state: &str) -> Vec<Value> {
    kt.notifications(&format!("state={state}"))
        .await
        .into_iter()
        .filter(|n| n["tenant"] == "acme")
        .collect()
}

/// Finding 3: `response.text()` read a non-2xx body whole, bounded only
/// by the 30 s timeout, with 8 deliveries at once. A receiver that
/// streams without end now costs 4 KiB and the attempt ends at once.
async fn an_endless_error_body_is_cut_off_after_a_few_kib_at_once(db: Db) {
    let hook = Receiver::start().await;
    hook.answer_by_default(Answer::status(500).endless());
    let url = hook.url("/alertmanager");
    let kt = TestCoordinator::start_and(db, move |a| {
        a.notify.notify_webhook = Some(url);
        // One attempt in this test, and a timeout far beyond its bound.
        a.notify.notify_timeout_seconds = 30;
        a.notify.notify_retry_base_ms = 600_000;
        a.notify.notify_retry_max_ms = 600_000;
    })
    .await;
    let created = kt.provision("acme", "basic").await;
    let alert = kt
        .fill_storage(&mut Feed::new(&kt, "node-a"), &created)
        .await;
    let key = format!("alert:{}:1:webhook:operator", alert["id"].as_str().unwrap());

    // Well inside the 30 s timeout: the old code was still reading.
    let row = eventually(
        Duration::from_secs(5),
        "the failed attempt recorded",
        || async {
            kt.notifications("state=pending")
                .await
                .into_iter()
                .find(|n| n["idempotencyKey"] == key && n["attempts"] == 1)
        },
    )
    .await;
    let error = row["lastError"].as_str().unwrap();
    assert!(
        error.starts_with("HTTP 500 Internal Server Error: xxxx"),
        "{error}"
    );
    assert!(
        error.len() < 300,
        "the error is bounded: {} bytes",
        error.len()
    );
    // The coordinator closed the connection after a few KiB: the receiver
    // could hand over no more than what the sockets' buffers hold.
    let (streamed, abandoned) =
        eventually(Duration::from_secs(5), "the body abandoned", || async {
            let (streamed, abandoned) = hook.streamed();
            (abandoned == 1).then_some((streamed, abandoned))
        })
        .await;
    assert_eq!(abandoned, 1);
    assert!(
        streamed < 16 * 1024 * 1024,
        "{streamed} bytes streamed before the connection closed"
    );
    assert_eq!(hook.hits().len(), 1);
}

/// Finding 4, at `PUT`: http, and literal addresses the policy refuses,
/// are a 400 naming the field; nothing changes.
async fn tenant_urls_to_forbidden_addresses_are_refused_naming_the_field(db: Db) {
    let kt = TestCoordinator::start(db).await;
    kt.provision("acme", "basic").await;
    let before = kt.admin(Method::GET, PATH, None).await;
    for (field, url, reason) in [
        ("webhookUrl", "http://127.0.0.1:9000/hook", "https"),
        ("webhookUrl", "http://localhost/hook", "https"),
        ("slackWebhookUrl", "http://hooks.example.com/x", "https"),
        ("webhookUrl", "https://127.0.0.1/hook", "(loopback)"),
        ("webhookUrl", "https://0x7f.1/hook", "address 127.0.0.1"),
        ("webhookUrl", "https://[::1]/hook", "(loopback)"),
        (
            "webhookUrl",
            "https://169.254.169.254/latest/meta-data/",
            "(link-local)",
        ),
        (
            "slackWebhookUrl",
            "https://[::ffff:10.0.0.1]/x",
            "(private network)",
        ),
        (
            "slackWebhookUrl",
            "https://192.168.1.20/x",
            "(private network)",
        ),
        (
            "webhookUrl",
            "https://100.64.0.7/x",
            "(shared address space",
        ),
        ("webhookUrl", "https://[fd00::7]/x", "(unique local"),
        ("webhookUrl", "https://0.0.0.0/x", "(unspecified address)"),
    ] {
        let reply = kt
            .admin(Method::PUT, PATH, Some(json!({ field: url })))
            .await;
        let (code, named) = reply.error(StatusCode::BAD_REQUEST);
        assert_eq!(
            (code.as_str(), named.as_str()),
            ("invalid_field", field),
            "{url}"
        );
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{url}: {message}");
    }
    assert_eq!(kt.admin(Method::GET, PATH, None).await.body, before.body);
}

/// Finding 4, when delivering: a name is checked after resolution (so a
/// name that resolves elsewhere later, DNS rebinding, is caught too).
/// `localhost` passes `PUT`; its delivery is refused permanently, naming
/// the policy, and the receiver never sees a connection. The operator's
/// channel to the same machine is exempt.
async fn a_name_resolving_to_loopback_is_refused_when_delivering_without_a_connection(db: Db) {
    let tls = ReceiverTls::generate();
    let tenant_hook = Receiver::start_tls(&tls).await;
    let tenant_slack = Receiver::start_tls(&tls).await;
    let operator_hook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let operator_url = operator_hook.url("/alertmanager");
    let kt = trusting(db, &tls, &dir, move |a| {
        a.notify.notify_webhook = Some(operator_url);
    })
    .await;
    let created = kt.provision("acme", "basic").await;
    set_hooks(
        &kt,
        tenant_hook.url_via("localhost", "/alertmanager"),
        tenant_slack.url_via("localhost", "/services/T0/B0/x"),
    )
    .await;

    let alert = kt
        .fill_storage(&mut Feed::new(&kt, "node-a"), &created)
        .await;
    let opened = kt.alert(alert["id"].as_str().unwrap()).await;
    assert_eq!(opened["history"][0]["notifications"], 3);
    let failed = eventually_showing(WAIT, "both tenant rows dead-lettered", || async {
        let failed = rows(&kt, "failed").await;
        if failed.len() == 2 {
            Ok(failed)
        } else {
            Err(format!("{:?}", rows(&kt, "pending").await))
        }
    })
    .await;
    for row in &failed {
        let error = row["lastError"].as_str().unwrap();
        assert!(
            error.starts_with("localhost: address ")
                && error.contains(" is not allowed for tenant notifications (loopback)"),
            "{error}"
        );
        assert_eq!(row["attempts"], 1, "permanent: no retry");
    }
    eventually(WAIT, "the operator's webhook", || async {
        operator_hook.accepted().pop()
    })
    .await;
    assert_eq!(
        tenant_hook.connections(),
        0,
        "no connection to the tenant's webhook"
    );
    assert_eq!(
        tenant_slack.connections(),
        0,
        "no connection to the tenant's Slack"
    );
}

/// With `--notify-allow-cidr 127.0.0.0/8` the same deliveries succeed,
/// over TLS verified against `--notify-ca-file`; a literal address in the
/// range passes `PUT` too.
async fn an_operator_allowed_range_is_reached_over_verified_tls(db: Db) {
    let tls = ReceiverTls::generate();
    let hook = Receiver::start_tls(&tls).await;
    let slack = Receiver::start_tls(&tls).await;
    let dir = tempfile::tempdir().unwrap();
    let kt = trusting(db, &tls, &dir, |a| {
        a.notify.notify_allow_cidr = vec!["127.0.0.0/8".into()];
    })
    .await;
    let created = kt.provision("acme", "basic").await;
    set_hooks(
        &kt,
        hook.url_via("localhost", "/alertmanager"),
        slack.url("/services/T0/B0/x"),
    )
    .await;
    assert!(slack.url("/").starts_with("https://127.0.0.1:"));

    kt.fill_storage(&mut Feed::new(&kt, "node-a"), &created)
        .await;
    let delivered = eventually(WAIT, "the webhook", || async { hook.accepted().pop() }).await;
    assert_eq!(delivered.path, "/alertmanager");
    assert_eq!(delivered.json()["receiver"], "knowton-tenant");
    let message = eventually(WAIT, "the Slack message", || async {
        slack.accepted().pop()
    })
    .await;
    assert_eq!(message.path, "/services/T0/B0/x");
    assert!(rows(&kt, "failed").await.is_empty());

    // Without the CA, the same receiver is not trusted: TLS is verified.
    let untrusted = TestCoordinator::start_and(db, |a| {
        a.notify.notify_allow_cidr = vec!["127.0.0.0/8".into()];
    })
    .await;
    let created = untrusted.provision("acme", "basic").await;
    let put = untrusted
        .admin(
            Method::PUT,
            PATH,
            Some(json!({"emails": [], "webhookUrl": hook.url("/untrusted")})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let mut feed = Feed::new(&untrusted, "node-a");
    untrusted.fill_storage(&mut feed, &created).await;
    let row = eventually(WAIT, "a failed TLS attempt", || async {
        rows(&untrusted, "pending")
            .await
            .into_iter()
            .find(|n| n["channel"] == "webhook" && n["lastError"].is_string())
    })
    .await;
    let error = row["lastError"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(hook.hits().iter().all(|h| h.path != "/untrusted"));
}

/// Rows enqueued with a tenant URL the policy now refuses (written before
/// the policy, or with a literal address) fail permanently at delivery,
/// without a connection. The engine cannot write them (`PUT` refuses such
/// URLs), so they are planned and enqueued as the engine does.
async fn stored_rows_with_plain_or_literal_forbidden_urls_are_refused_when_delivering(db: Db) {
    let hook = Receiver::start().await;
    let tls = ReceiverTls::generate();
    let secure = Receiver::start_tls(&tls).await;
    let dir = tempfile::tempdir().unwrap();
    let kt = trusting(db, &tls, &dir, |_| {}).await;
    let created = kt.provision("acme", "basic").await;
    let state = kt.running_state();
    let event = storage_alert(&created, Uuid::now_v7(), 1, false);
    let tenant = state.service.get(event.tenant_id).await.unwrap();
    for url in [hook.url("/plain"), secure.url("/literal")] {
        let channels = ResolvedChannels {
            webhooks: vec![(Whose::Tenant, WebhookTarget { url, secret: None })],
            ..Default::default()
        };
        let mut event = event.clone();
        event.alert_id = Uuid::now_v7();
        let messages = state.notify.plan_alert(&event, &channels);
        state
            .notify
            .store()
            .enqueue(
                Some(tenant.id),
                knowton_common::health::MessageKind::Alert,
                &messages,
            )
            .await
            .unwrap();
    }
    state.notify.wakeup().poke();
    let failed = eventually(WAIT, "both rows dead-lettered", || async {
        let failed = rows(&kt, "failed").await;
        (failed.len() == 2).then_some(failed)
    })
    .await;
    let mut errors: Vec<&str> = failed
        .iter()
        .map(|r| r["lastError"].as_str().unwrap())
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            "address 127.0.0.1 is not allowed for tenant notifications (loopback)",
            "tenant notification URLs must use https",
        ]
    );
    assert_eq!(hook.connections() + secure.connections(), 0);
}
