//! Alerts from results as they arrive: every check in both directions,
//! escalation in place, hysteresis, flapping, manual resolve, acknowledge
//! and reminders, silences and thresholds; each notification observed at a
//! real HTTP receiver, every state read back through the API, on SQLite
//! and PostgreSQL.

use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_proto::agent::v1::PodResult;
use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::receiver::{Hit, Receiver, ReceiverTls};
use knowton_tests::{Db, TestCoordinator, eventually, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_every_backend!(db:
    every_check_opens_and_resolves_in_both_directions,
    a_warning_escalates_in_place_and_one_good_result_does_not_resolve,
    a_flapping_check_notifies_once_and_settles,
    manual_resolve_acknowledge_and_reminders,
    silences_keep_quiet_and_end_with_the_alert,
    silences_per_tenant_are_capped,
    a_tenants_silence_quiets_only_its_own_channels,
    thresholds_are_per_tenant_and_validated,
);

const WAIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 30;

struct Setup {
    kt: TestCoordinator,
    hook: Receiver,
    feed: Feed,
}

async fn setup(db: Db, change: impl FnOnce(&mut ServeArgs)) -> Setup {
    let hook = Receiver::start().await;
    let url = hook.url("/alertmanager");
    let kt = TestCoordinator::start_and(db, move |a| {
        a.notify.notify_webhook = Some(url);
        // Sweeps (re-evaluations without new results) only when a test asks.
        a.alerting.health_sweep_seconds = 60;
        change(a);
    })
    .await;
    kt.provision("acme", "basic").await;
    let feed = Feed::new(&kt, "node-a");
    Setup { kt, hook, feed }
}

impl Setup {
    /// Sends `results` and waits until the tenant was evaluated on them.
    async fn report(&mut self, results: Vec<PodResult>) -> Value {
        self.feed.send(results);
        let time = |v: &Value| v.as_str()?.parse::<chrono::DateTime<chrono::Utc>>().ok();
        // When the coordinator received them, then an evaluation that saw them.
        let received = self.health().await["pods"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| time(&p["receivedAt"]))
            .max()
            .unwrap();
        eventually(WAIT, "an evaluation of the new results", || async {
            let health = self.health().await;
            time(&health["resultsUpTo"])
                .is_some_and(|at| at >= received)
                .then_some(health)
        })
        .await
    }

    async fn health(&self) -> Value {
        let reply = self.kt.monitoring_health("acme").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    async fn alerts(&self, query: &str) -> Vec<Value> {
        let reply = self
            .kt
            .admin(
                Method::GET,
                &format!("/api/v1/monitoring/alerts?{query}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["alerts"].as_array().cloned().unwrap_or_default()
    }

    async fn alert(&self, id: &str) -> Value {
        let reply = self
            .kt
            .admin(
                Method::GET,
                &format!("/api/v1/monitoring/alerts/{id}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// The open alert of `check`, once there is one.
    async fn open_alert(&self, check: &str) -> Value {
        eventually(WAIT, &format!("an open {check} alert"), || async {
            self.alerts("resolved=false")
                .await
                .into_iter()
                .find(|a| a["check"] == check)
        })
        .await
    }

    /// Webhook payloads received for `check`, as (status, severity).
    fn notified(&self, check: &str) -> Vec<(String, String)> {
        self.hook
            .accepted()
            .iter()
            .map(Hit::json)
            .filter(|p| p["alerts"][0]["labels"]["alertname"] == check)
            .map(|p| {
                (
                    p["status"].as_str().unwrap_or_default().to_owned(),
                    p["alerts"][0]["labels"]["severity"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    async fn until_notified(&self, check: &str, count: usize) -> Vec<(String, String)> {
        eventually(
            WAIT,
            &format!("{count} notifications of {check}"),
            || async {
                let got = self.notified(check);
                (got.len() >= count).then_some(got)
            },
        )
        .await
    }
}

fn history_kinds(alert: &Value) -> Vec<String> {
    alert["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pods(result: impl Fn(&str) -> PodResult) -> Vec<PodResult> {
    vec![result("web-0"), result("web-1")]
}

async fn every_check_opens_and_resolves_in_both_directions(db: Db) {
    let mut s = setup(db, |_| {}).await;
    let health = s.report(pods(|p| healthy("acme", p))).await;
    assert_eq!(health["status"], "healthy", "{health}");

    type Breach = fn(PodResult) -> PodResult;
    let cases: [(&str, Breach, &str, &str); 8] = [
        ("storage", |p| p.storage(9 * GIB), "warning", "warning"),
        (
            "storage",
            |p| p.storage(98 * GIB / 10),
            "critical",
            "critical",
        ),
        ("users", |p| p.users(10.0), "critical", "critical"),
        ("api_rate", |p| p.traffic(0.7, 0.0), "warning", "warning"),
        (
            "error_rate",
            |p| p.traffic(0.5, 0.2),
            "critical",
            "critical",
        ),
        ("response_time", |p| p.slow(1500), "warning", "warning"),
        ("database", |p| p.database_down(), "critical", "critical"),
        ("api_health", |p| p.api_failing(), "critical", "critical"),
    ];
    let mut notified_before = std::collections::HashMap::new();
    for (check, breach, severity, status) in cases {
        let before = *notified_before.entry(check).or_insert(0usize);
        let health = s.report(pods(|p| breach(healthy("acme", p)))).await;
        assert_eq!(health["status"], status, "{check}: {health}");
        let alert = s.open_alert(check).await;
        assert_eq!(alert["severity"], severity, "{alert}");
        assert_eq!(alert["tenant"], "acme");
        let firing = s.until_notified(check, before + 1).await;
        assert_eq!(
            firing[before],
            ("firing".to_owned(), severity.to_owned()),
            "{check}"
        );

        // Back within thresholds: resolved after two good evaluations.
        s.report(pods(|p| healthy("acme", p))).await;
        let id = alert["id"].as_str().unwrap().to_owned();
        assert_eq!(
            s.alert(&id).await["state"],
            "firing",
            "one good result is not enough"
        );
        let health = s.report(pods(|p| healthy("acme", p))).await;
        assert_eq!(health["status"], "healthy", "{health}");
        let resolved = s.alert(&id).await;
        assert_eq!(resolved["state"], "resolved", "{resolved}");
        assert_eq!(resolved["resolvedBy"], "auto");
        assert_eq!(history_kinds(&resolved), ["opened", "resolved"]);
        let sent = s.until_notified(check, before + 2).await;
        assert_eq!(sent[before + 1].0, "resolved", "{check}");
        notified_before.insert(check, before + 2);
    }
    assert!(s.alerts("resolved=false").await.is_empty());
    assert_eq!(s.alerts("resolved=true").await.len(), 8);

    // Pods that stop answering: down, and an API alert.
    let health = s.report(pods(|p| healthy("acme", p).down())).await;
    assert_eq!(health["status"], "down", "{health}");
    s.open_alert("api_health").await;
}

async fn a_warning_escalates_in_place_and_one_good_result_does_not_resolve(db: Db) {
    let mut s = setup(db, |_| {}).await;
    s.report(pods(|p| healthy("acme", p).slow(1500))).await;
    let warning = s.open_alert("response_time").await;
    assert_eq!(warning["severity"], "warning");
    s.report(pods(|p| healthy("acme", p).slow(2500))).await;
    let critical = eventually(WAIT, "the escalation", || async {
        let a = s.open_alert("response_time").await;
        (a["severity"] == "critical").then_some(a)
    })
    .await;
    assert_eq!(critical["id"], warning["id"], "escalated in place");
    assert_eq!(critical["value"], "2500 ms", "{critical}");
    assert_eq!(critical["threshold"], "2000 ms", "{critical}");

    // One good result between bad ones: still the same open alert.
    s.report(pods(|p| healthy("acme", p))).await;
    s.report(pods(|p| healthy("acme", p).slow(2500))).await;
    s.report(pods(|p| healthy("acme", p))).await;
    let still = s.open_alert("response_time").await;
    assert_eq!(still["id"], warning["id"]);
    s.report(pods(|p| healthy("acme", p))).await;
    let id = warning["id"].as_str().unwrap();
    let done = s.alert(id).await;
    assert_eq!(done["state"], "resolved");
    assert_eq!(history_kinds(&done), ["opened", "escalated", "resolved"]);
    // Deliveries run concurrently: compare as a set.
    let mut sent = s.until_notified("response_time", 3).await;
    sent.sort();
    assert_eq!(
        sent,
        [
            ("firing".to_owned(), "critical".to_owned()),
            ("firing".to_owned(), "warning".to_owned()),
            ("resolved".to_owned(), "critical".to_owned()),
        ]
    );
    assert_eq!(
        s.alerts("").await.len(),
        1,
        "one alert for the whole episode"
    );
}

async fn a_flapping_check_notifies_once_and_settles(db: Db) {
    let mut s = setup(db, |a| {
        a.alerting.alert_flap_changes = 3;
        a.alerting.alert_flap_window_seconds = 2;
    })
    .await;
    for _ in 0..3 {
        s.report(pods(|p| healthy("acme", p).slow(2500))).await;
        s.report(pods(|p| healthy("acme", p))).await;
    }
    let alert = eventually(WAIT, "a flapping alert", || async {
        s.alerts("")
            .await
            .into_iter()
            .find(|a| a["state"] == "flapping")
    })
    .await;
    let sent = s.until_notified("response_time", 2).await;
    assert_eq!(sent.len(), 2, "opened, then flapping: {sent:?}");
    // More changes while flapping: no more notifications.
    for _ in 0..2 {
        s.report(pods(|p| healthy("acme", p).slow(2500))).await;
        s.report(pods(|p| healthy("acme", p))).await;
    }
    assert_eq!(s.notified("response_time").len(), 2);
    // Stable for the window: the flap ends and, being fine, resolves.
    let id = alert["id"].as_str().unwrap().to_owned();
    // Good results keep arriving, like an agent's every 100 ms, until the
    // window has passed without a change.
    let mut agent_interval = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + WAIT;
    let settled = loop {
        agent_interval.tick().await;
        s.report(pods(|p| healthy("acme", p))).await;
        let a = s.alert(&id).await;
        if a["state"] == "resolved" {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flap never ended: {a}"
        );
    };
    let kinds = history_kinds(&settled);
    assert_eq!(kinds.first().map(String::as_str), Some("opened"));
    assert!(kinds.contains(&"flapping_started".to_owned()), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("flapping_ended"));
    let sent = s.until_notified("response_time", 3).await;
    assert_eq!(sent[2].0, "resolved");
}

async fn manual_resolve_acknowledge_and_reminders(db: Db) {
    let mut s = setup(db, |a| {
        a.alerting.alert_reminder_seconds = 1;
        a.alerting.health_sweep_seconds = 1;
    })
    .await;
    s.report(pods(|p| healthy("acme", p).storage(98 * GIB / 10)))
        .await;
    let alert = s.open_alert("storage").await;
    let id = alert["id"].as_str().unwrap().to_owned();
    // Unacknowledged: reminded (the same alert notified again).
    eventually(WAIT, "a reminder", || async {
        let a = s.alert(&id).await;
        history_kinds(&a)
            .contains(&"reminder".to_owned())
            .then_some(())
    })
    .await;
    assert!(
        s.until_notified("storage", 2)
            .await
            .iter()
            .all(|n| n.0 == "firing")
    );

    let acked =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/acknowledge"),
            Some(json!({"note": "looking into it"})),
        )
        .await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.body);
    assert_eq!(acked.body["state"], "firing", "still open");
    assert_eq!(acked.body["acknowledgedBy"], "admin");
    let reminders = |a: &Value| history_kinds(a).iter().filter(|k| *k == "reminder").count();
    let at_ack = reminders(&acked.body);
    // Several sweeps later, no reminder was added.
    let evaluated = s.health().await["evaluatedAt"].clone();
    for _ in 0..3 {
        let last = s.health().await["evaluatedAt"].clone();
        eventually(WAIT, "a sweep", || async {
            (s.health().await["evaluatedAt"] != last).then_some(())
        })
        .await;
    }
    assert_ne!(s.health().await["evaluatedAt"], evaluated);
    assert_eq!(
        reminders(&s.alert(&id).await),
        at_ack,
        "acknowledged: no reminders"
    );

    let resolved =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/resolve"),
            Some(json!({"note": "volume resized"})),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.body);
    assert_eq!(resolved.body["state"], "resolved");
    assert_eq!(resolved.body["resolvedBy"], "admin");
    assert_eq!(resolved.body["note"], "volume resized");
    let kinds = history_kinds(&resolved.body);
    assert_eq!(kinds.first().map(String::as_str), Some("opened"));
    assert_eq!(kinds.last().map(String::as_str), Some("resolved"));
    assert!(kinds.contains(&"acknowledged".to_owned()));
    let sent = eventually(WAIT, "the resolution", || async {
        let sent = s.notified("storage");
        (sent.last().is_some_and(|n| n.0 == "resolved")).then_some(sent)
    })
    .await;
    assert_eq!(sent.iter().filter(|n| n.0 == "resolved").count(), 1);

    let again =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/resolve"),
            None,
        )
        .await;
    assert_eq!(again.error(StatusCode::CONFLICT).0, "alert_resolved");
    let missing =
        s.kt.admin(
            Method::POST,
            "/api/v1/monitoring/alerts/0190f1a2-0000-7000-8000-000000000000/resolve",
            None,
        )
        .await;
    assert_eq!(missing.error(StatusCode::NOT_FOUND).0, "alert_not_found");
    let bad_note =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/acknowledge"),
            Some(json!({"note": 42})),
        )
        .await;
    assert_eq!(bad_note.error(StatusCode::BAD_REQUEST).1, "note");

    // The breach goes on: a new alert opens.
    s.report(pods(|p| healthy("acme", p).storage(98 * GIB / 10)))
        .await;
    let next = s.open_alert("storage").await;
    assert_ne!(next["id"], alert["id"]);

    // Another tenant's key sees none of acme's alerts.
    let other = s.kt.provision("globex", "basic").await;
    let key = other["apiKeys"]["production"].as_str().unwrap().to_owned();
    let theirs =
        s.kt.call(Method::GET, "/api/v1/monitoring/alerts", Some(&key), None)
            .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert_eq!(theirs.body["alerts"], json!([]));
    let peek =
        s.kt.call(
            Method::GET,
            &format!("/api/v1/monitoring/alerts/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
}

async fn silences_keep_quiet_and_end_with_the_alert(db: Db) {
    let mut s = setup(db, |_| {}).await;
    let ends = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let created =
        s.kt.admin(
            Method::POST,
            "/api/v1/monitoring/silences",
            Some(json!({"tenant": "acme", "check": "storage", "endsAt": ends,
                "endOnResolve": true, "comment": "migration tonight"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    // Storage (silenced) and response time (not) breach together.
    s.report(pods(|p| {
        healthy("acme", p).storage(98 * GIB / 10).slow(2500)
    }))
    .await;
    let storage = s.open_alert("storage").await;
    s.open_alert("response_time").await;
    s.until_notified("response_time", 1).await;
    let health = s.health().await;
    let silenced: Vec<&Value> = health["openAlerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["silenced"] == true)
        .collect();
    assert_eq!(silenced.len(), 1, "{health}");
    assert_eq!(silenced[0]["check"], "storage");
    assert!(s.notified("storage").is_empty(), "silenced");

    s.report(pods(|p| healthy("acme", p))).await;
    s.report(pods(|p| healthy("acme", p))).await;
    let id = storage["id"].as_str().unwrap();
    assert_eq!(s.alert(id).await["state"], "resolved");
    s.until_notified("response_time", 2).await;
    assert!(
        s.notified("storage").is_empty(),
        "the resolution of a silenced alert is not sent unless configured"
    );
    let silences =
        s.kt.admin(Method::GET, "/api/v1/monitoring/silences", None)
            .await;
    assert_eq!(silences.body["silences"], json!([]), "ended with the alert");

    for (body, field) in [
        (
            json!({"tenant": "acme", "check": "disk", "endsAt": ends}),
            "check",
        ),
        (
            json!({"tenant": "acme", "endsAt": "2020-01-01T00:00:00Z"}),
            "endsAt",
        ),
        (json!({"tenant": "acme", "endsAt": "tomorrow"}), "endsAt"),
        (
            json!({"tenant": "acme", "endsAt": ends, "extra": 1}),
            "extra",
        ),
    ] {
        let reply =
            s.kt.admin(
                Method::POST,
                "/api/v1/monitoring/silences",
                Some(body.clone()),
            )
            .await;
        assert_eq!(reply.error(StatusCode::BAD_REQUEST).1, field, "{body}");
    }
    let unknown =
        s.kt.admin(
            Method::POST,
            "/api/v1/monitoring/silences",
            Some(json!({"tenant": "nobody", "endsAt": ends})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

/// Finding 11 of the hardening review: a tenant could create silences
/// without limit, each kept in memory and reloaded every minute.
async fn silences_per_tenant_are_capped(db: Db) {
    let s = setup(db, |_| {}).await;
    let key = s.kt.provision("globex", "basic").await["apiKeys"]["production"]
        .as_str()
        .unwrap()
        .to_owned();
    let ends = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let create = |who: Option<String>, tenant: &'static str| {
        let kt = &s.kt;
        let ends = ends.clone();
        async move {
            let body = json!({"tenant": tenant, "endsAt": ends, "comment": "x"});
            match who {
                Some(key) => {
                    kt.call(
                        Method::POST,
                        "/api/v1/monitoring/silences",
                        Some(&key),
                        Some(body),
                    )
                    .await
                }
                None => {
                    kt.admin(Method::POST, "/api/v1/monitoring/silences", Some(body))
                        .await
                }
            }
        }
    };
    let limit = knowton_coordinator::health::engine::MAX_ACTIVE_SILENCES;
    let mut first = None;
    for _ in 0..limit {
        let reply = create(Some(key.clone()), "globex").await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        first.get_or_insert(reply.body["id"].as_str().unwrap().to_owned());
    }
    for who in [Some(key.clone()), None] {
        let reply = create(who, "globex").await;
        assert_eq!(reply.error(StatusCode::CONFLICT).0, "silence_limit_reached");
    }
    // Another tenant is not affected; ending one makes room again.
    assert_eq!(create(None, "acme").await.status, StatusCode::CREATED);
    let end =
        s.kt.call(
            Method::DELETE,
            &format!("/api/v1/monitoring/silences/{}", first.unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(end.status, StatusCode::NO_CONTENT, "{}", end.body);
    assert_eq!(
        create(Some(key.clone()), "globex").await.status,
        StatusCode::CREATED
    );
    // A long comment is refused, naming the field.
    let reply =
        s.kt.admin(
            Method::POST,
            "/api/v1/monitoring/silences",
            Some(json!({"tenant": "acme", "endsAt": ends, "comment": "x".repeat(2001)})),
        )
        .await;
    assert_eq!(reply.error(StatusCode::BAD_REQUEST).1, "comment");
}

/// Finding 11: a tenant's silence quieted every channel, the operator's
/// included, so a tenant could hide its outage from the operator.
async fn a_tenants_silence_quiets_only_its_own_channels(db: Db) {
    let tls = ReceiverTls::generate();
    let tenant_hook = Receiver::start_tls(&tls).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = tls.write_ca(dir.path());
    let mut s = setup(db, |a| {
        a.notify.notify_allow_cidr = vec!["127.0.0.0/8".into()];
        a.notify.notify_ca_file = Some(ca);
    })
    .await;
    let key =
        s.kt.admin(
            Method::POST,
            "/api/v1/tenants/acme/api-keys/production/rotate",
            None,
        )
        .await
        .body["apiKey"]
            .as_str()
            .unwrap()
            .to_owned();
    let put =
        s.kt.call(
            Method::PUT,
            "/api/v1/tenants/acme/notifications",
            Some(&key),
            Some(json!({"emails": [], "webhookUrl": tenant_hook.url_via("localhost", "/tenant")})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let ends = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let silence =
        s.kt.call(
            Method::POST,
            "/api/v1/monitoring/silences",
            Some(&key),
            Some(json!({"tenant": "acme", "check": "storage", "endsAt": ends})),
        )
        .await;
    assert_eq!(silence.status, StatusCode::CREATED, "{}", silence.body);

    // Storage (silenced by the tenant) and response time (not) breach.
    s.report(pods(|p| {
        healthy("acme", p).storage(98 * GIB / 10).slow(2500)
    }))
    .await;
    let storage = s.open_alert("storage").await;
    // The operator hears of both.
    s.until_notified("storage", 1).await;
    s.until_notified("response_time", 1).await;
    // The tenant's webhook gets response time only.
    let tenant_checks = || {
        tenant_hook
            .accepted()
            .iter()
            .map(Hit::json)
            .map(|p| {
                p["alerts"][0]["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    eventually(WAIT, "the tenant's response time notification", || async {
        tenant_checks()
            .contains(&"response_time".to_owned())
            .then_some(())
    })
    .await;
    // Both rows were written in the same transaction as the transitions,
    // so once the later one arrived, the storage one would have too.
    let prefix = format!("alert:{}:", storage["id"].as_str().unwrap());
    let storage_rows: Vec<String> =
        s.kt.notifications("")
            .await
            .iter()
            .filter_map(|r| r["idempotencyKey"].as_str())
            .filter(|k| k.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
    assert!(
        storage_rows
            .iter()
            .all(|k| k.ends_with(":webhook:operator"))
            && !storage_rows.is_empty(),
        "{storage_rows:?}"
    );
    assert!(!tenant_checks().contains(&"storage".to_owned()));
}

async fn thresholds_are_per_tenant_and_validated(db: Db) {
    let mut s = setup(db, |_| {}).await;
    s.report(pods(|p| healthy("acme", p))).await;
    // 1 GiB of the basic plan's 10 GiB is 10%: a warning at 5%.
    let put =
        s.kt.admin(
            Method::PUT,
            "/api/v1/tenants/acme/thresholds",
            Some(json!({"storagePercent": {"warning": 5.0, "critical": 50.0}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["overridden"], true);
    assert_eq!(put.body["thresholds"]["storagePercent"]["warning"], 5.0);
    assert_eq!(
        put.body["thresholds"]["responseTimeMs"]["warning"], 1000.0,
        "the others keep their values"
    );
    let alert = s.open_alert("storage").await;
    assert_eq!(alert["severity"], "warning");
    assert_eq!(alert["threshold"], "5%");

    for (body, field) in [
        (
            json!({"storagePercent": {"warning": 60.0, "critical": 50.0}}),
            "storagePercent.warning",
        ),
        (
            json!({"storagePercent": {"warning": -1.0, "critical": 50.0}}),
            "storagePercent",
        ),
        (
            json!({"diskPercent": {"warning": 1.0, "critical": 2.0}}),
            "diskPercent",
        ),
        (
            json!({"errorRatePercent": {"warning": 1.0}}),
            "errorRatePercent.critical",
        ),
    ] {
        let reply =
            s.kt.admin(
                Method::PUT,
                "/api/v1/tenants/acme/thresholds",
                Some(body.clone()),
            )
            .await;
        let (_, got) = reply.error(StatusCode::BAD_REQUEST);
        assert!(
            got.starts_with(field) || field.starts_with(&got),
            "{body}: {got}"
        );
    }
    let unchanged =
        s.kt.admin(Method::GET, "/api/v1/tenants/acme/thresholds", None)
            .await;
    assert_eq!(
        unchanged.body["thresholds"]["storagePercent"]["warning"],
        5.0
    );

    let key = s.kt.provision("globex", "basic").await["apiKeys"]["production"]
        .as_str()
        .unwrap()
        .to_owned();
    let forbidden =
        s.kt.call(
            Method::PUT,
            "/api/v1/tenants/globex/thresholds",
            Some(&key),
            Some(json!({"storagePercent": {"warning": 1.0, "critical": 2.0}})),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    let reset =
        s.kt.admin(Method::DELETE, "/api/v1/tenants/acme/thresholds", None)
            .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(reset.body["overridden"], false);
    s.report(pods(|p| healthy("acme", p))).await;
    s.report(pods(|p| healthy("acme", p))).await;
    assert_eq!(
        s.alert(alert["id"].as_str().unwrap()).await["state"],
        "resolved"
    );
}
