//! Silences keep quiet and end with the alert, are capped per tenant, and
//! quiet only the silencing tenant's own channels.

use super::*;

on_every_backend!(db:
    silences_keep_quiet_and_end_with_the_alert,
    silences_per_tenant_are_capped,
    a_tenants_silence_quiets_only_its_own_channels,
);

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
